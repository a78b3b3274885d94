"""abcMLP: a multilayer perceptron in an abc-parametrization (Yang & Hu 2021).

``depth`` linear layers d_in -> width -> ... -> width -> d_out (depth 1: a single linear
map d_in -> d_out). With n = ``width`` for every layer (first and last too), layer l has
weights ~ N(0, n^(-2 b_l)), forward multiplier n^(-a_l) and learning rate eta * n^(-c_l);
its bias has its own (a, b, c) (list_a_bias, list_b_bias, list_c_bias). ``parametrization``
('muP' | 'NTK' | 'SP') fills the a's and b's here and the c's where the optimizer is built
(``lr_multipliers(update_rule)``, see ``parametrizations``); explicit values override it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core_code.model_lib.layers import (
    AbcLinear,
    abc_lr_multipliers,
    check_activations,
    make_activation,
    require_float,
    require_int,
)
from core_code.model_lib.parametrizations import complete_abc_exponents, lr_exponents_for
from core_code.util.config_extractions import complete_config

# Every key abcMLP accepts, with its default. With the default muP and depth 6:
# list_a [-0.5, 0, 0, 0, 0, 0.5], list_b [0.5] * 6, biases (-0.5, 0.5) except the last (0, 0);
# learning-rate exponents c per optimizer (SGD 0; Adam 0.5, 1, 1, 1, 1, 0.5, biases 0.5 / 0).
DEFAULTS: dict[str, Any] = {
    "architecture_key": "abcMLP",
    "d_in": None,
    "d_out": None,
    "width": 1024,
    "depth": 6,
    # 'muP' | 'NTK' | 'SP' fills the exponents left at None, for any depth and optimizer.
    "parametrization": "muP",
    "list_a": None,
    "list_b": None,
    "c": None,  # one learning-rate exponent for every layer (or 'list_c', not both)
    "list_c": None,  # per layer; None: the preset's for the optimizer in use
    "list_a_bias": None,  # None: a layer with `width` outputs takes the first layer's, the last 0
    "list_b_bias": None,
    "list_c_bias": None,
    "bias_tune": 1.0,
    "hidden_layer_activation": "ReLU",
    "hidden_layer_activation_callback": None,
}


def init_config_abcMLP(**config: Any) -> dict:
    """Complete an abcMLP configuration: defaults filled, the a's and b's expanded.

    list_a / list_b (and the bias lists) left at None are filled from ``parametrization``
    for the configured depth; explicit values override the preset. The learning-rate
    exponents stay as given (they depend on the optimizer).
    """
    out = complete_config(config, DEFAULTS, "architecture config (abcMLP)")
    return complete_abc_exponents(out, "abcMLP")


class abcMLP(nn.Module):
    """abc-parametrized MLP; ``layers`` holds the linear layers, ``activations`` the ones between them."""

    def __init__(self, **config_architecture: Any):
        super().__init__()
        cfg = init_config_abcMLP(**config_architecture)
        d_in = require_int(cfg, "d_in")
        d_out = require_int(cfg, "d_out")
        depth = require_int(cfg, "depth")
        width = require_int(cfg, "width")
        list_a, list_b = cfg["list_a"], cfg["list_b"]
        list_a_bias, list_b_bias = cfg["list_a_bias"], cfg["list_b_bias"]
        bias_tune = require_float(cfg, "bias_tune")
        check_activations(cfg, "hidden_layer_activation")
        self.config_architecture: dict = cfg
        self.width: int = width
        self.depth: int = depth

        dims = [d_in] + [width] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(
            AbcLinear(dims[i], dims[i + 1], list_a[i], list_b[i], n=width, bias_tune=bias_tune,
                      a_bias=list_a_bias[i], b_bias=list_b_bias[i])
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

    def lr_exponents(self, update_rule: Any) -> dict[str, list[float]]:
        """``{'list_c', 'list_c_bias'}`` for ``update_rule`` (ConfigError where the preset is undefined)."""
        return lr_exponents_for(self.config_architecture, update_rule)

    def lr_multipliers(self, update_rule: Any) -> list[tuple[list[nn.Parameter], float]]:
        """``[(params, width^(-c))]`` covering every trainable parameter once, c per layer and optimizer."""
        ex = self.lr_exponents(update_rule)
        return abc_lr_multipliers(self, list(self.layers), ex["list_c"], ex["list_c_bias"], self.width)

    def linear_layers(self) -> list[nn.Module]:
        """The linear layers in forward order (the same modules as ``layers``)."""
        return list(self.layers)


__all__ = ["abcMLP", "DEFAULTS", "init_config_abcMLP"]
