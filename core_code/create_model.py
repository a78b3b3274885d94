"""Build models from an architecture configuration, and the architecture registry.

``ARCHITECTURES`` maps ``architecture_key`` to a model class; each class takes
``**config_architecture`` and completes it with its defaults. ``register_architecture``
adds an architecture from outside core_code (class and defaults), so its keys become
valid config keys. ``create_model`` (the original's ``CreateModel``) looks the key up in the
registry (no importing of user-given module names) and returns the module, or one
module per task when any architecture value is task-specific.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

from torch import nn

from core_code.model_lib import Stack as stack_module
from core_code.model_lib import abcMLP as abcmlp_module
from core_code.model_lib import abcStack as abcstack_module
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    complete_config,
    extract_taskconfig,
    is_task_specific,
    task_key,
)

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "abcMLP": abcmlp_module.abcMLP,
    "Stack": stack_module.Stack,
    "abcStack": abcstack_module.abcStack,
}
# architecture_key -> every key it accepts with its default (defined beside each class).
ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "abcMLP": abcmlp_module.DEFAULTS,
    "Stack": stack_module.DEFAULTS,
    "abcStack": abcstack_module.DEFAULTS,
}
# architecture_key -> the function completing its config (defaults, presets); registered ones: defaults only.
_COMPLETERS: dict[str, Callable[..., dict]] = {
    "abcMLP": abcmlp_module.init_config_abcMLP,
    "Stack": stack_module.init_config_Stack,
    "abcStack": abcstack_module.init_config_abcStack,
}
_BUILTIN = frozenset(ARCHITECTURES)


def register_architecture(name: str, model_cls: type[nn.Module], defaults: Mapping[str, Any]) -> None:
    """Add architecture ``name``: ``model_cls(**config_architecture)`` with ``defaults``.

    ``defaults`` lists every config key the architecture accepts with its default;
    'architecture_key', 'd_in' and 'd_out' are added if missing. The keys become valid
    architecture config keys everywhere. Raises ConfigError if ``name`` is taken.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"architecture name must be a non-empty string, got {name!r}")
    if name in ARCHITECTURES:
        raise ConfigError(f"architecture {name!r} is already registered")
    if not (isinstance(model_cls, type) and issubclass(model_cls, nn.Module)):
        raise ConfigError(f"architecture {name!r}: model_cls must be an nn.Module subclass, got {model_cls!r}")
    merged = {"architecture_key": name, "d_in": None, "d_out": None, **dict(defaults)}
    ARCHITECTURES[name] = model_cls
    ARCHITECTURE_DEFAULTS[name] = merged


def unregister_architecture(name: str) -> None:
    """Remove an architecture added by ``register_architecture`` (built-ins stay)."""
    if name in _BUILTIN:
        raise ConfigError(f"architecture {name!r} is built in and cannot be unregistered")
    if name not in ARCHITECTURES:
        raise ConfigError(f"architecture {name!r} is not registered")
    del ARCHITECTURES[name]
    ARCHITECTURE_DEFAULTS.pop(name, None)


def architecture_keys() -> set[str]:
    """Every key some registered architecture accepts (one grid may switch architectures)."""
    return set().union(*ARCHITECTURE_DEFAULTS.values())


def init_config_architecture(architecture_key: Any = None, **config: Any) -> dict:
    """Complete a plain (not task-specific) architecture configuration for ``architecture_key``.

    Keys of other registered architectures are accepted and dropped, since one grid may
    switch architectures; keys no architecture knows are refused. Presets (abcMLP's
    ``parametrization``) are expanded.
    """
    if not isinstance(architecture_key, str) or architecture_key not in ARCHITECTURES:
        raise ConfigError(
            f"architecture config key 'architecture_key' is {architecture_key!r}; "
            f"known architectures: {', '.join(sorted(ARCHITECTURES))}"
        )
    defaults = ARCHITECTURE_DEFAULTS[architecture_key]
    where = f"architecture config ({architecture_key})"
    complete_config(config, defaults, where, accepted=architecture_keys())  # refuses unknown keys
    own = {k: v for k, v in config.items() if k in defaults and k != "architecture_key"}
    completer = _COMPLETERS.get(architecture_key)
    out = completer(**own) if completer else complete_config(own, defaults, where)
    out["architecture_key"] = architecture_key
    return out


def resolve_architecture(**config_architecture: Any) -> dict:
    """The complete architecture config: defaults filled and presets expanded, per task if needed.

    A task-specific config is resolved task by task; a key whose resolved values agree
    for every task is stored once, the others as ``{'task_0': ..., ...}``.
    """
    tasks = check_config(**config_architecture)
    if tasks is None:
        return init_config_architecture(**config_architecture)
    per_task = {task_key(t): init_config_architecture(**extract_taskconfig(config_architecture, t))
                for t in sorted(tasks)}
    keys = list(dict.fromkeys(k for cfg in per_task.values() for k in cfg))
    out = {}
    for key in keys:
        values = {t: cfg.get(key) for t, cfg in per_task.items()}
        first = next(iter(values.values()))
        same = all(v == first and not is_task_specific(v) for v in values.values())
        out[key] = first if same else values
    return out


def _build_one(config: dict) -> nn.Module:
    completed = init_config_architecture(**config)
    return ARCHITECTURES[completed["architecture_key"]](**completed)


def create_model(**config_architecture: Any) -> Union[nn.Module, dict[str, nn.Module]]:
    """The model for ``config_architecture``, or ``{'task_0': model, ...}`` if it is task-specific."""
    tasks = check_config(**config_architecture)
    if tasks is None:
        return _build_one(dict(config_architecture))
    return {task_key(t): _build_one(extract_taskconfig(config_architecture, t)) for t in sorted(tasks)}


CreateModel = create_model  # the original design's name

__all__ = ["CreateModel", "ARCHITECTURES", "ARCHITECTURE_DEFAULTS", "register_architecture", "unregister_architecture",
           "architecture_keys", "init_config_architecture", "resolve_architecture", "create_model"]
