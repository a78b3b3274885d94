"""The logging layer every experiment shares, one module per concern.

- ``metrics``: metric names (``SPLITS``, ``metric_name``), the metrics CSV and ``read_metrics``;
- ``callback``: ``LoggingCallback`` (epoch losses, CSV, plots, divergence stop);
- ``plots``: the fit figures (matplotlib, imported lazily);
- ``wandb_session``: W&B mode, logger and closing the run (wandb, imported lazily).

The names below are resolved on first use (PEP 562), so ``from experiments.logging
import WANDB_MODES`` does not import Lightning: main.py's argument parser stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.logging.callback import LoggingCallback
    from experiments.logging.metrics import SPLITS, metric_name, read_metrics
    from experiments.logging.wandb_session import (
        WANDB_MODES,
        finish_wandb,
        make_wandb_logger,
        resolve_wandb_mode,
    )

# public name -> the module defining it
_EXPORTS = {
    "LoggingCallback": "callback",
    "SPLITS": "metrics",
    "metric_name": "metrics",
    "read_metrics": "metrics",
    "WANDB_MODES": "wandb_session",
    "finish_wandb": "wandb_session",
    "make_wandb_logger": "wandb_session",
    "resolve_wandb_mode": "wandb_session",
}

__all__ = [
    "LoggingCallback",
    "SPLITS",
    "WANDB_MODES",
    "finish_wandb",
    "make_wandb_logger",
    "metric_name",
    "read_metrics",
    "resolve_wandb_mode",
]


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
