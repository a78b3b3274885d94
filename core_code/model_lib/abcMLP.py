"""abcMLP: a multilayer perceptron in an abc-parametrization (Yang & Hu 2021).

``depth`` linear layers d_in -> width -> ... -> width -> d_out (depth 1: a single linear
map d_in -> d_out). With n = ``width`` for every layer (first and last too), layer l has
weights ~ N(0, n^(-2 b_l)), forward multiplier n^(-a_l) and learning rate eta * n^(-c)
(applied by the training layer through ``lr_multipliers``). ``parametrization``
('muP' | 'NTK' | 'SP') fills list_a / list_b / c; explicit values override it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core_code.model_lib.layers import (
    AbcLinear,
    check_activations,
    make_activation,
    require_exponents,
    require_float,
    require_int,
    trainable_parameters,
)
from core_code.model_lib.parametrizations import PARAMETRIZATIONS, abc_preset
from core_code.util.config_extractions import ConfigError, complete_config

# Every key abcMLP accepts, with its default. With the default muP and depth 6:
# list_a [-0.5, 0, 0, 0, 0, 0.5], list_b [0.5] * 6, c 0.
DEFAULTS: dict[str, Any] = {
    "architecture_key": "abcMLP",
    "d_in": None,
    "d_out": None,
    "width": 1024,
    "depth": 6,
    # 'muP' | 'NTK' | 'SP' fills list_a/list_b/c for any depth; explicit values override.
    "parametrization": "muP",
    "list_a": None,
    "list_b": None,
    "c": None,
    "bias_tune": 1.0,
    "hidden_layer_activation": "ReLU",
    "hidden_layer_activation_callback": None,
}


def init_config_abcMLP(**config: Any) -> dict:
    """Complete an abcMLP configuration: defaults filled, the parametrization expanded.

    list_a/list_b/c left at None are filled from ``parametrization`` for the configured
    depth; explicit values override the preset.
    """
    out = complete_config(config, DEFAULTS, "architecture config (abcMLP)")
    missing = [k for k in ("list_a", "list_b", "c") if out[k] is None]
    if missing:
        if out["parametrization"] is None:
            raise ConfigError(
                f"architecture config (abcMLP): {', '.join(missing)} not given and "
                "'parametrization' is None; set 'parametrization' to one of "
                f"{', '.join(sorted(PARAMETRIZATIONS))} or give the values explicitly"
            )
        try:
            preset = abc_preset(out["parametrization"], out["depth"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in missing:
            out[key] = preset[key]
    return out


class abcMLP(nn.Module):
    """abc-parametrized MLP; ``layers`` holds the linear layers, ``activations`` the ones between them."""

    def __init__(self, **config_architecture: Any):
        super().__init__()
        cfg = init_config_abcMLP(**config_architecture)
        d_in = require_int(cfg, "d_in")
        d_out = require_int(cfg, "d_out")
        depth = require_int(cfg, "depth")
        width = require_int(cfg, "width")
        what = f"abcMLP with depth {depth}"
        cfg["list_a"] = list_a = require_exponents(cfg, "list_a", depth, what)
        cfg["list_b"] = list_b = require_exponents(cfg, "list_b", depth, what)
        self.c: float = require_float(cfg, "c")
        bias_tune = require_float(cfg, "bias_tune")
        check_activations(cfg, "hidden_layer_activation")
        self.config_architecture: dict = cfg
        self.width: int = width
        self.depth: int = depth

        dims = [d_in] + [width] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(
            AbcLinear(dims[i], dims[i + 1], list_a[i], list_b[i], n=width, bias_tune=bias_tune)
            for i in range(depth)
        )
        self.activations = nn.ModuleList(
            make_activation(cfg["hidden_layer_activation"], cfg["hidden_layer_activation_callback"])
            for _ in range(depth - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, activation in zip(self.layers, self.activations):
            x = activation(layer(x))
        return self.layers[-1](x)

    def reset_parameters(self) -> None:
        """Re-draw every layer's initialization."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def lr_multipliers(self) -> list[tuple[list[nn.Parameter], float]]:
        """``[(params, width^(-c))]`` covering every trainable parameter once."""
        return [(trainable_parameters(self), float(self.width) ** (-self.c))]

    def linear_layers(self) -> list[nn.Module]:
        """The linear layers in forward order (the same modules as ``layers``)."""
        return list(self.layers)


__all__ = ["abcMLP", "DEFAULTS", "init_config_abcMLP"]
