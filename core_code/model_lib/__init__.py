"""Model architectures (torch only).

``ARCHITECTURES``, ``register_architecture`` and the layer helpers are loaded lazily
(PEP 562), so importing the pure-Python ``parametrizations`` module (as the config
system does) neither imports torch nor creates an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ARCHITECTURES": "core_code.create_model",
    "register_architecture": "core_code.create_model",
    "unregister_architecture": "core_code.create_model",
    "ACTIVATIONS": "core_code.model_lib.layers",
    "AbcLinear": "core_code.model_lib.layers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
