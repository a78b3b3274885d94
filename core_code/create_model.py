"""Build models from an architecture configuration, and the architecture registry.

``ARCHITECTURES`` maps ``architecture_key`` to a model class; each class takes
``**config_architecture`` and completes it with its defaults. ``register_architecture``
adds an architecture from outside core_code (class and defaults), so its keys become
valid config keys. ``create_model`` (alias ``CreateModel``) looks the key up in the
registry (no importing of user-given module names) and returns the module, or one
module per task when any architecture value is task-specific.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import nn

from core_code.model_lib.abcMLP import abcMLP
from core_code.model_lib.abcStack import abcStack
from core_code.model_lib.Stack import Stack
from core_code.util import default_config
from core_code.util.config_extractions import ConfigError, check_config, extract_taskconfig, task_key

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "abcMLP": abcMLP,
    "Stack": Stack,
    "abcStack": abcStack,
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
    if name in ARCHITECTURES or name in default_config.ARCHITECTURE_DEFAULTS:
        raise ConfigError(f"architecture {name!r} is already registered")
    if not (isinstance(model_cls, type) and issubclass(model_cls, nn.Module)):
        raise ConfigError(f"architecture {name!r}: model_cls must be an nn.Module subclass, got {model_cls!r}")
    merged = {"architecture_key": None, "d_in": None, "d_out": None, **dict(defaults)}
    ARCHITECTURES[name] = model_cls
    default_config.ARCHITECTURE_DEFAULTS[name] = merged


def unregister_architecture(name: str) -> None:
    """Remove an architecture added by ``register_architecture`` (built-ins stay)."""
    if name in _BUILTIN:
        raise ConfigError(f"architecture {name!r} is built in and cannot be unregistered")
    if name not in ARCHITECTURES:
        raise ConfigError(f"architecture {name!r} is not registered")
    del ARCHITECTURES[name]
    default_config.ARCHITECTURE_DEFAULTS.pop(name, None)


def _build_one(config: dict) -> nn.Module:
    key = config.get("architecture_key")
    if not isinstance(key, str) or key not in ARCHITECTURES:
        raise ConfigError(
            f"architecture config key 'architecture_key' is {key!r}; "
            f"known architectures: {', '.join(sorted(ARCHITECTURES))}"
        )
    # Refuses unknown keys, drops keys of other architectures, fills defaults.
    completed = default_config.init_config_architecture(**config)
    return ARCHITECTURES[key](**completed)


def create_model(**config_architecture: Any) -> Union[nn.Module, dict[str, nn.Module]]:
    """The model for ``config_architecture``, or ``{'task_0': model, ...}`` if it is task-specific."""
    tasks = check_config(**config_architecture)
    if tasks is None:
        return _build_one(dict(config_architecture))
    return {task_key(t): _build_one(extract_taskconfig(config_architecture, t)) for t in sorted(tasks)}


CreateModel = create_model

__all__ = ["ARCHITECTURES", "register_architecture", "unregister_architecture", "create_model", "CreateModel"]
