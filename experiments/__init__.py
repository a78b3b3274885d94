"""Experiments: one folder each (configs.py, manager.py), registered in EXPERIMENTS.

To add an experiment: create ``experiments/<name>/`` with ``configs.py`` and a
``manager.py`` whose ``Manager`` subclasses ``experiments.util.BasicManager``, then add
one entry below (or call ``register_experiment`` from your own code).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Optional


def _compositeSine() -> tuple[type, ModuleType]:
    from experiments.compositeSine import configs, manager

    return manager.Manager, configs


def _tinyTest() -> tuple[type, ModuleType]:
    from experiments.tinyTest import configs, manager

    return manager.Manager, configs


def _transfer() -> tuple[type, ModuleType]:
    from experiments.transfer import configs, manager

    return manager.Manager, configs


# name -> loader returning (Manager class, configs module); imported only when used.
EXPERIMENTS: dict[str, Callable[[], tuple[type, ModuleType]]] = {
    "compositeSine": _compositeSine,
    "tinyTest": _tinyTest,
    "transfer": _transfer,
    "mtlCompare": lambda: __import__("experiments.mtlCompare", fromlist=["load"]).load(),
}


def register_experiment(name: str, loader: Callable[[], tuple[type, ModuleType]]) -> None:
    """Add an experiment: ``loader()`` returns its (Manager class, configs module)."""
    if name in EXPERIMENTS:
        raise ValueError(f"experiment '{name}' is already registered")
    EXPERIMENTS[name] = loader


def load_experiment(name: str) -> tuple[type, ModuleType]:
    """(Manager class, configs module) of a registered experiment."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment '{name}'; known experiments: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]()


def make_manager(name: str, trainer_overrides: Optional[dict] = None, **kwargs: Any):
    """The Manager of experiment ``name`` over its configs.py dicts.

    ``trainer_overrides`` (e.g. from ``--config_trainer``) update the experiment's
    ``configs_trainer``; ``kwargs`` go to the Manager (``runs_dir``, ``wandb_mode``).
    """
    manager_cls, configs = load_experiment(name)
    trainer = {**getattr(configs, "configs_trainer", {}), **(trainer_overrides or {})}
    return manager_cls(configs.configs_data, configs.configs_architecture, configs.configs_training,
                       trainer, getattr(configs, "configs_custom", {}), **kwargs)
