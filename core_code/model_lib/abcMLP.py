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
from core_code.util.default_config import init_config_abcMLP


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


NNModel = abcMLP  # name used by the original framework

__all__ = ["abcMLP", "NNModel"]
