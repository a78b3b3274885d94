"""The plain aggregates of the task losses (the default path's objective).

Multi-task methods (weightings, gradient surgery, MGDA, ...) live in ``core_code.mtl``
and are chosen by the training config key ``mtl_method``.
"""

from __future__ import annotations

from typing import Mapping

import torch


def sum_losses(losses: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """The plain sum of the task losses (the original's objective; ``mtl_method: 'sum'``)."""
    values = list(losses.values())
    if len(values) == 2:  # one add: bit for bit the stack's sum, two small ops fewer a step
        return values[0] + values[1]
    return torch.stack(values).sum()


def mean_losses(losses: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """The mean of the task losses."""
    return torch.stack(list(losses.values())).mean()
