"""mtlCompare: sum vs PCGrad vs MGDA vs uncertainty weighting on a small compositeSine (see configs.py)."""

from __future__ import annotations

from types import ModuleType


def load() -> tuple[type, ModuleType]:
    """(Manager class, configs module), for ``experiments.EXPERIMENTS``."""
    from experiments.mtlCompare import configs, manager

    return manager.Manager, configs
