"""Experiments: one folder each (configs.py, manager.py), registered in EXPERIMENTS.

To add an experiment: create ``experiments/<name>/`` with ``configs.py`` and a
``manager.py`` whose ``Manager`` subclasses ``experiments.util.BasicManager``, then add
one entry below (or call ``register_experiment`` from your own code).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Optional, Sequence


def _loader(name: str) -> Callable[[], tuple[type, ModuleType]]:
    """The loader of ``experiments/<name>/``: imports its manager.py and configs.py when called."""

    def load() -> tuple[type, ModuleType]:
        configs = importlib.import_module(f"experiments.{name}.configs")
        manager = importlib.import_module(f"experiments.{name}.manager")
        return manager.Manager, configs

    return load


# name -> loader returning (Manager class, configs module); imported only when used.
EXPERIMENTS: dict[str, Callable[[], tuple[type, ModuleType]]] = {
    "compositeSine": _loader("compositeSine"),
    "tinyTest": _loader("tinyTest"),
    "transfer": _loader("transfer"),
    "mtlCompare": _loader("mtlCompare"),
}


def register_experiment(name: str, loader: Callable[[], tuple[type, ModuleType]]) -> None:
    """Add an experiment: ``loader()`` returns its (Manager class, configs module)."""
    if name in EXPERIMENTS:
        raise ValueError(f"experiment '{name}' is already registered")
    EXPERIMENTS[name] = loader


class ExperimentError(ValueError):
    """An experiment cannot be loaded: unknown, or its configs.py/manager.py is broken (one line)."""


# The dicts every configs.py must define.
REQUIRED_CONFIGS = ("configs_data", "configs_architecture", "configs_training")


def load_experiment(name: str) -> tuple[type, ModuleType]:
    """(Manager class, configs module) of a registered experiment.

    ExperimentError, in one line with file and line, when the experiment is unknown, its
    files do not import (syntax error, an exception) or configs.py lacks a required dict.
    """
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment '{name}'; known experiments: {', '.join(sorted(EXPERIMENTS))}")
    try:
        manager_cls, configs = EXPERIMENTS[name]()
    except SyntaxError as err:
        raise ExperimentError(f"{err.filename}:{err.lineno}: syntax error in experiment '{name}': {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - whatever the experiment's files raise on import
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        own = [f for f in frames if f"experiments/{name}/" in f.filename.replace("\\", "/")] or frames
        where = f"{own[-1].filename}:{own[-1].lineno}: " if own else ""
        raise ExperimentError(f"{where}experiment '{name}' cannot be loaded: {type(err).__name__}: {err}") from None
    for attr in REQUIRED_CONFIGS:
        value = getattr(configs, attr, None)
        if not isinstance(value, dict):
            what = "is missing" if value is None else f"is a {type(value).__name__}, not a dict"
            raise ExperimentError(f"{getattr(configs, '__file__', name)}: '{attr}' {what}; a configs.py defines "
                                  f"the dicts {', '.join(REQUIRED_CONFIGS)} (optional: configs_custom, "
                                  "configs_trainer)")
    for attr in ("configs_custom", "configs_trainer"):
        value = getattr(configs, attr, {})
        if not isinstance(value, dict):
            raise ExperimentError(f"{getattr(configs, '__file__', name)}: '{attr}' is a {type(value).__name__}, "
                                  "not a dict")
    return manager_cls, configs


def make_manager(name: str, trainer_overrides: Optional[dict] = None, overrides: Sequence[Any] = (),
                 **kwargs: Any):
    """The Manager of experiment ``name`` over its configs.py dicts.

    ``trainer_overrides`` (e.g. from ``--config_trainer``) update the experiment's
    ``configs_trainer``; ``overrides`` (``experiments.overrides.Override``s, or
    ``'section.key=value'`` strings, applied after them) update any config dict; unknown
    keys raise ``OverrideError`` (a ConfigError). ``kwargs`` go to the Manager
    (``runs_dir``, ``wandb_mode``). The manager records the overrides (``manager.overrides``).
    """
    from experiments.overrides import apply_overrides, parse_override, recorded, trainer_items_as_overrides

    manager_cls, configs = load_experiment(name)
    ovs = [*trainer_items_as_overrides(trainer_overrides or {}),
           *(parse_override(o) if isinstance(o, str) else o for o in overrides)]
    base = {"data": configs.configs_data, "architecture": configs.configs_architecture,
            "training": configs.configs_training, "custom": getattr(configs, "configs_custom", {}),
            "trainer": getattr(configs, "configs_trainer", {})}
    from core_code.util.default_config import DATA_DEFAULTS, TRAINING_DEFAULTS

    cfg = apply_overrides(base, ovs, manager_cls.CUSTOM_DEFAULTS,
                          defaults={"data": DATA_DEFAULTS, "training": TRAINING_DEFAULTS,
                                    "custom": manager_cls.CUSTOM_DEFAULTS})
    manager = manager_cls(cfg["data"], cfg["architecture"], cfg["training"], cfg["trainer"], cfg["custom"],
                          **kwargs)
    # Recorded in config.json; --config_trainer items count as trainer.<key> overrides.
    manager.overrides = recorded(ovs)
    return manager
