"""Loss criteria registry: per-task criteria built from the training config.

A criterion value is a name (``'MSELoss'``), a tuple ``(name, argument)`` such as
``('dimred_MSELoss', [1, 2])`` (MSE over those output dimensions only), or
``'custom'`` together with ``criterion_callback`` (a callable (pred, y) -> scalar).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from core_code.util.config_extractions import ConfigError

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse_loss() -> Criterion:
    """Mean squared error over all output dimensions."""
    return torch.nn.functional.mse_loss


def dimred_mse_loss(dims: Sequence[int]) -> Criterion:
    """Mean squared error over the listed output dimensions only."""
    dims = [int(d) for d in dims]
    if not dims:
        raise ConfigError("training config key 'criterion': 'dimred_MSELoss' needs a non-empty list of dims")
    index = torch.tensor(dims)
    contiguous = dims == list(range(dims[0], dims[0] + len(dims)))
    lo, hi = dims[0], dims[0] + len(dims)

    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if contiguous:
            return torch.nn.functional.mse_loss(pred[:, lo:hi], y[:, lo:hi])
        idx = index.to(pred.device)
        return torch.nn.functional.mse_loss(pred.index_select(1, idx), y.index_select(1, idx))

    loss.dims = dims  # type: ignore[attr-defined]
    return loss


# name -> factory(*args) -> criterion
CRITERIA: dict[str, Callable[..., Criterion]] = {
    "MSELoss": mse_loss,
    "dimred_MSELoss": dimred_mse_loss,
}


def make_criterion(value: Any, callback: Any = None) -> Criterion:
    """Build one task's criterion from its config value (see module docstring)."""
    if value == "custom":
        if not callable(callback):
            raise ConfigError("training config key 'criterion_callback' must be a callable (pred, y) -> loss "
                              "when criterion is 'custom'")
        return callback
    name, args = (value[0], tuple(value[1:])) if isinstance(value, (tuple, list)) else (value, ())
    if name not in CRITERIA:
        raise ConfigError(f"training config key 'criterion' is {value!r}; known criteria: "
                          f"{', '.join(sorted(CRITERIA) + ['custom'])}")
    try:
        return CRITERIA[name](*args)
    except TypeError as err:
        raise ConfigError(f"training config key 'criterion' {value!r}: {err}") from None


def criterion_dims(criterion: Criterion, d_out: int) -> list[int]:
    """The output dimensions a criterion looks at (all, unless it says otherwise)."""
    return list(getattr(criterion, "dims", range(d_out)))
