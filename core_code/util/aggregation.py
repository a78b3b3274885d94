"""How task losses combine into the quantity one shared optimizer minimises.

The one replaceable place for multi-task loss weighting: a later method (uncertainty
weighting, GradNorm, PCGrad, MGDA, ...) registers here. An aggregator maps
``{task: loss}`` to a scalar; it may hold parameters/state (an ``nn.Module``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from core_code.util.config_extractions import ConfigError

Aggregator = Callable[[Mapping[int, torch.Tensor]], torch.Tensor]


def sum_losses(losses: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """The plain sum of the task losses (the original's objective)."""
    return torch.stack(list(losses.values())).sum()


def mean_losses(losses: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """The mean of the task losses."""
    return torch.stack(list(losses.values())).mean()


LOSS_AGGREGATIONS: dict[str, Aggregator] = {"sum": sum_losses, "mean": mean_losses}


def make_aggregator(name: str) -> Aggregator:
    """The aggregator registered under ``name`` (training config key ``loss_aggregation``)."""
    if name not in LOSS_AGGREGATIONS:
        raise ConfigError(f"training config key 'loss_aggregation' is {name!r}; known: "
                          f"{', '.join(sorted(LOSS_AGGREGATIONS))}")
    return LOSS_AGGREGATIONS[name]
