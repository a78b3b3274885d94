"""Optimizer registry and abc learning-rate scaling.

``update_rule`` is a name from UPDATE_RULES or ``'custom'`` with ``update_rule_callback``
(a callable (param_groups, lr) -> torch.optim.Optimizer). A model that exposes
``lr_multipliers(update_rule)`` (abc-parametrized models: width^-c per layer, with the c's
of its preset for that optimizer) gets one parameter group per multiplier with learning
rate lr * multiplier; ``lr_multipliers()`` without an argument is accepted too (models whose
learning rates do not depend on the optimizer). The exponents are resolved here, when the
optimizer is built, so one model object trains correctly under any optimizer, and a
preset undefined for the optimizer is a ConfigError before training.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import torch

from core_code.util.config_extractions import ConfigError

UPDATE_RULES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
}


def _takes_update_rule(method: Callable) -> bool:
    """Does ``lr_multipliers`` accept an argument (the update rule)?"""
    try:
        return bool(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False


def param_groups(modules: Iterable[torch.nn.Module], lr: float, update_rule: Any = "SGD") -> list[dict]:
    """Optimizer parameter groups for ``modules`` with the learning-rate multipliers for ``update_rule``."""
    groups: list[dict] = []
    seen: set[int] = set()
    for module in modules:
        if hasattr(module, "lr_multipliers"):
            method = module.lr_multipliers
            pairs = method(update_rule) if _takes_update_rule(method) else method()
        else:
            pairs = [(list(module.parameters()), 1.0)]
        for params, mult in pairs:
            params = [p for p in params if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, "lr": lr * float(mult)})
    return groups


def make_optimizer(modules: Iterable[torch.nn.Module], update_rule: Any, lr: float, callback: Any = None):
    """One optimizer over ``modules`` built from a task's update_rule and learning_rate.

    Each module's learning-rate exponents are resolved for ``update_rule`` (per task when
    the caller builds one optimizer per task).
    """
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
        raise ConfigError(f"training config key 'learning_rate' must be a number >= 0, got {lr!r}")
    if update_rule != "custom" and update_rule not in UPDATE_RULES:
        raise ConfigError(f"training config key 'update_rule' is {update_rule!r}; known update rules: "
                          f"{', '.join(sorted(UPDATE_RULES) + ['custom'])}")
    groups = param_groups(modules, float(lr), update_rule)
    if update_rule == "custom":
        if not callable(callback):
            raise ConfigError("training config key 'update_rule_callback' must be a callable "
                              "(param_groups, lr) -> Optimizer when update_rule is 'custom'")
        return callback(groups, float(lr))
    return UPDATE_RULES[update_rule](groups, lr=float(lr))
