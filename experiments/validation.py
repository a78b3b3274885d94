"""Checks of resolved grid-point configs before anything runs; GridError names every problem.

Each check raises a ConfigError with one line: the key, its value and what is allowed.
Lightning is imported only by ``check_trainer_config`` (when a grid is validated).
"""

from __future__ import annotations

import math
from typing import Any

from core_code.util.config_extractions import ConfigError, check_config, extract_taskconfig, task_key
from experiments.checkpoints import KEEP_CHECKPOINTS


class GridError(ConfigError):
    """One or more grid points are invalid; the message lists every problem."""


def _bad(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where} key '{key}' is {value!r}; allowed: {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _per_task(value: Any) -> list:
    """The values of a possibly task-specific config entry."""
    from core_code.util.config_extractions import is_task_specific

    return list(value.values()) if is_task_specific(value) else [value]


def check_values(cfg: dict) -> None:
    """Types and ranges of the training and custom values a run depends on (ConfigError)."""
    from core_code.util.batching import BATCHING_STRATEGIES

    tr, cu = cfg["training"], cfg["custom"]
    for v in _per_task(tr["batching_strategy"]):
        if v not in BATCHING_STRATEGIES:
            raise _bad("training config", "batching_strategy", v, ", ".join(sorted(BATCHING_STRATEGIES)))
    for v in _per_task(tr["learning_rate"]):
        if not (_is_real(v) and math.isfinite(v) and v >= 0):
            raise _bad("training config", "learning_rate", v, "a finite number >= 0")
    for v in _per_task(tr["regularization_alpha"]):
        if not (_is_real(v) and math.isfinite(v) and v >= 0):
            raise _bad("training config", "regularization_alpha", v, "a finite number >= 0 (0: off)")
    for v in _per_task(tr["regularization_ord"]):
        if not (_is_real(v) and v > 0):
            raise _bad("training config", "regularization_ord", v, "a number > 0 (the norm order, e.g. 2; inf allowed)")
    seed = cu["seed"]
    if not (seed is None or _is_int(seed)):
        raise _bad("custom config", "seed", seed, "an int, or None (not seeded)")
    if not (_is_int(cu["logging_epoch_interval"]) and cu["logging_epoch_interval"] >= 1):
        raise _bad("custom config", "logging_epoch_interval", cu["logging_epoch_interval"], "an int >= 1")
    every = cu["checkpoint_every_n_epochs"]
    if not (every is None or (_is_int(every) and every >= 1)):
        raise _bad("custom config", "checkpoint_every_n_epochs", every,
                   "an int >= 1, or None (no periodic checkpoints)")
    if cu.get("keep_checkpoints", "all") not in KEEP_CHECKPOINTS:
        raise _bad("custom config", "keep_checkpoints", cu.get("keep_checkpoints"),
                   "'all' (every checkpoint), 'last' (the newest only, once done) or 'none' (none once done)")
    if not isinstance(cu["workers"], bool):
        raise _bad("custom config", "workers", cu["workers"], "True or False")


_TRAINER_INT_KEYS = {  # key -> (smallest value, None allowed)
    "max_epochs": (-1, True), "min_epochs": (0, True), "max_steps": (-1, False), "min_steps": (0, True),
    "check_val_every_n_epoch": (1, True), "log_every_n_steps": (1, True), "num_nodes": (1, False),
    "accumulate_grad_batches": (1, False), "num_sanity_val_steps": (-1, True),
}


def check_trainer_config(trainer_cfg: dict) -> None:
    """ConfigError (one line: key, value, what is allowed) unless the Trainer settings work.

    Checks the common numeric keys and ``max_time`` itself, then builds a ``pl.Trainer``
    once (logger=False, no callbacks), which checks the rest (accelerator, devices,
    precision, strategy, ...) without training or writing anything.
    """
    import re

    for key, (low, none_ok) in _TRAINER_INT_KEYS.items():
        if key in trainer_cfg:
            v = trainer_cfg[key]
            if not ((v is None and none_ok) or (_is_int(v) and v >= low)):
                extra = " (-1: no limit)" if low == -1 else ""
                raise _bad("trainer config", key, v, f"an int >= {low}{extra}" + (", or None" if none_ok else ""))
    mt = trainer_cfg.get("max_time")
    if mt is not None and not (isinstance(mt, dict) or (isinstance(mt, str) and re.fullmatch(
            r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", mt.strip())) or type(mt).__name__ == "timedelta"):
        raise _bad("trainer config", "max_time", mt, "DD:HH:MM:SS (e.g. 00:08:00:00), a dict of timedelta "
                   "arguments, or None (no limit)")
    import logging
    import warnings

    import pytorch_lightning as pl

    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.Trainer(**{**trainer_cfg, "logger": False, "callbacks": [], "enable_checkpointing": False})
    except Exception as err:  # noqa: BLE001 - Lightning raises several types; all mean: cannot run
        text = " ".join(str(err).split()) or type(err).__name__
        from core_code.util.trainer_config import TRAINER_DEFAULTS

        given = {k: v for k, v in trainer_cfg.items() if k not in TRAINER_DEFAULTS or TRAINER_DEFAULTS[k] != v}
        shown = ", ".join(f"{k}={v!r}" for k, v in (given or trainer_cfg).items())
        raise ConfigError(f"trainer config ({shown}) is refused by pytorch_lightning.Trainer: {text}") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_tasks_outputs(data_cfg: dict, dims: dict[int, list[int]], d_out: int) -> None:
    """ConfigError unless tasks with different targets read different outputs of a shared network.

    ``dims``: task -> the output dims its criterion reads. Two tasks whose (f_true,
    f_true_callback) differ but whose criteria read a common output would both be fitted
    by that one prediction (both plots would show the same curve).
    """
    if "f_true" not in data_cfg:  # file data: targets are whatever the file holds
        return
    targets = {}
    for t in dims:
        tc = extract_taskconfig({"f": data_cfg.get("f_true"), "cb": data_cfg.get("f_true_callback")}, t)
        targets[t] = (tc["f"], tc["cb"])
    tasks = sorted(dims)
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            common = sorted(set(dims[a]) & set(dims[b]))
            if targets[a] != targets[b] and common:
                def name(t: int) -> str:
                    f, cb = targets[t]
                    return repr(f) + (f" ({getattr(cb, '__name__', cb)})" if f == "custom" else "")

                raise ConfigError(
                    f"tasks {a} and {b} have different targets (data config 'f_true': {name(a)} vs {name(b)}) but "
                    f"their criteria read the same outputs {common} of one shared network (d_out {d_out}), so "
                    "one prediction would fit both. Each task's criterion reads the outputs it names "
                    "(('dimred_MSELoss', dims); MSELoss: all d_out); give the tasks a model each (an "
                    "architecture value that differs between tasks, e.g. width {'task_0': 64, 'task_1': 128}; "
                    "equal per-task values make one shared network), or one f_true with several outputs "
                    "(d_out > 1, e.g. 'compositeSine') whose outputs the criteria split between the tasks")


def resolved_lr_exponents(arch: dict, update_rule: Any) -> dict:
    """The learning-rate exponents (``list_c``, ``list_c_bias``) the optimizer(s) will use.

    Per task (``{'task_0': ..., ...}``) when the architecture or the update rule is
    task-specific, since each task's optimizer resolves its own; ``{}`` for architectures
    without abc exponents. A preset not defined for the optimizer raises a ConfigError.
    """
    from core_code.model_lib.parametrizations import lr_exponents_for

    tasks = (check_config(**arch) or set()) | (check_config(update_rule=update_rule) or set())
    if not tasks:
        return lr_exponents_for(arch, update_rule)
    return {task_key(t): lr_exponents_for(extract_taskconfig(arch, t),
                                          extract_taskconfig({"u": update_rule}, t)["u"])
            for t in sorted(tasks)}
