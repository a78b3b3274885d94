"""Which training configs may share an ensemble, and their per-member loss aggregation."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    is_task_specific,
)
from core_code.util.default_config import init_config_training
from core_code.vectorized.optim import rule_defaults

#: training config keys that may differ between the members of one ensemble.
MEMBER_KEYS = ("learning_rate", "regularization_alpha")
#: plain task-loss aggregations, per member: ``{task: (K,)} -> (K,)``.
_AGGREGATIONS = {"sum": lambda losses: torch.stack(list(losses.values())).sum(0),
                 "mean": lambda losses: torch.stack(list(losses.values())).mean(0)}


def _aggregation_name(cfg: Mapping) -> Any:
    """The config's task-loss combination: ``mtl_method`` (or the older ``loss_aggregation``)."""
    value = cfg.get("mtl_method", cfg.get("loss_aggregation", "sum"))
    if isinstance(value, (list, tuple)) and len(value) == 2 and not value[1]:
        value = value[0]  # (name, {}) without options
    return value


def _aggregator(cfg: Mapping):
    """The per-member aggregation of the plain methods 'sum' and 'mean' (ConfigError otherwise)."""
    name = _aggregation_name(cfg)
    if not isinstance(name, str) or name not in _AGGREGATIONS:
        raise ConfigError(f"mtl_method {name!r} cannot be vectorized (only {', '.join(_AGGREGATIONS)})")
    if cfg.get("diagnostics_every_n_steps") is not None:
        raise ConfigError("diagnostics_every_n_steps is set: task-gradient diagnostics are not vectorized")
    return _AGGREGATIONS[name]


def _key_value(value: Any) -> Any:
    return repr(value)


def per_task_optimizers(cfg: Mapping) -> bool:
    """Does a training config train with one optimizer per task (as ``LightningMultitask``)?"""
    return any(is_task_specific(cfg[k]) for k in ("update_rule", "learning_rate"))


def check_members(configs_training: Sequence[Mapping]) -> list[dict]:
    """Complete the members' training configs; ConfigError unless they can share one ensemble.

    They must agree on every key but ``MEMBER_KEYS`` and on whether they use per-task
    optimizers, and use a vectorizable update rule and task-loss aggregation.
    """
    cfgs = [init_config_training(**dict(c)) for c in configs_training]
    if not cfgs:
        raise ConfigError("an ensemble needs at least one member")
    first = cfgs[0]
    for k, c in enumerate(cfgs[1:], 1):
        for key in first:
            if key in MEMBER_KEYS:
                continue
            if _key_value(c[key]) != _key_value(first[key]):
                raise ConfigError(f"ensemble member {k}: training key '{key}' is {c[key]!r}, member 0 has "
                                  f"{first[key]!r}; only {', '.join(MEMBER_KEYS)} may differ")
    if len({per_task_optimizers(c) for c in cfgs}) > 1:
        raise ConfigError("some members have per-task optimizers (task-specific update_rule or learning_rate) "
                          "and others not; not vectorizable together")
    for c in cfgs:
        check_config(**c)
        _aggregator(c)
        rules = c["update_rule"].values() if is_task_specific(c["update_rule"]) else [c["update_rule"]]
        for r in rules:
            rule_defaults(r)
    return cfgs


