"""abcStack: the Stack architecture (without skip connections) in an abc-parametrization.

Blocks as in Stack (in -> variable_width -> out, bottleneck activation between blocks).
Each block has two abc exponent triples: list_a / list_b / list_c (and the bias lists)
have length 2 * depth, entry 2i for block i's first linear and 2i + 1 for its second.
n = variable_width for both linears of every block. Every block is a two-layer network
in -> n -> out, so ``parametrization`` gives linear_1 the preset's first-layer exponents
and linear_2 its last-layer ones (muP: a -1/2, 1/2; b 1/2, 1/2; c per optimizer). Biases:
linear_1 (n outputs) takes its block's linear_1 exponents, linear_2 (bottleneck_width or
d_out outputs, O(1) as n grows) gets (0, 0, 0).
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
from core_code.model_lib.Stack import BlockNetwork, _block_dims, bottleneck_activations
from core_code.util.config_extractions import complete_config

# Every key abcStack accepts, with its default.
DEFAULTS: dict[str, Any] = {
    "architecture_key": "abcStack",
    "d_in": None,
    "d_out": None,
    "bottleneck_width": 64,
    "variable_width": 128,
    "depth": 1,
    # 'muP' | 'NTK' | 'SP': per block (first, last) layer of the preset; explicit lists win.
    # depth 1 muP: list_a [-0.5, 0.5], list_b [0.5, 0.5] (two entries per stack block).
    "parametrization": "muP",
    "list_a": None,
    "list_b": None,
    "c": None,
    "list_c": None,
    "list_a_bias": None,
    "list_b_bias": None,
    "list_c_bias": None,
    "bias_tune": 1.0,
    "hidden_bottleneck_activation": "Identity",
    "hidden_bottleneck_activation_callback": None,
    "hidden_layer_activation": "ReLU",
    "hidden_layer_activation_callback": None,
}


def init_config_abcStack(**config: Any) -> dict:
    """Complete an abcStack configuration (see DEFAULTS): defaults filled, the a's and b's expanded."""
    out = complete_config(config, DEFAULTS, "architecture config (abcStack)")
    return complete_abc_exponents(out, "abcStack")


class AbcStackBlock(nn.Module):
    """One abcStack block: AbcLinear -> activation -> AbcLinear, both with n = variable_width."""

    def __init__(
        self,
        in_features: int,
        variable_width: int,
        out_features: int,
        a: tuple[float, float],
        b: tuple[float, float],
        activation: nn.Module,
        bias_tune: float = 1.0,
        a_bias: tuple[float, float] = (0.0, 0.0),
        b_bias: tuple[float, float] = (0.0, 0.0),
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear_1 = AbcLinear(in_features, variable_width, a[0], b[0], n=variable_width, bias_tune=bias_tune,
                                  a_bias=a_bias[0], b_bias=b_bias[0])
        self.activation = activation
        self.linear_2 = AbcLinear(variable_width, out_features, a[1], b[1], n=variable_width, bias_tune=bias_tune,
                                  a_bias=a_bias[1], b_bias=b_bias[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x)))

    def reset_parameters(self) -> None:
        """Re-draw both linears."""
        self.linear_1.reset_parameters()
        self.linear_2.reset_parameters()


class abcStack(BlockNetwork):
    """abc-parametrized Stack; ``layers`` holds the blocks, ``activations`` the bottleneck activations."""

    def __init__(self, **config_architecture: Any):
        super().__init__()
        cfg = init_config_abcStack(**config_architecture)
        d_in = require_int(cfg, "d_in")
        d_out = require_int(cfg, "d_out")
        depth = require_int(cfg, "depth")
        variable_width = require_int(cfg, "variable_width")
        bottleneck_width = require_int(cfg, "bottleneck_width") if depth > 1 else cfg["bottleneck_width"]
        list_a, list_b = cfg["list_a"], cfg["list_b"]
        list_a_bias, list_b_bias = cfg["list_a_bias"], cfg["list_b_bias"]
        bias_tune = require_float(cfg, "bias_tune")
        check_activations(cfg, "hidden_layer_activation", "hidden_bottleneck_activation")
        self.config_architecture: dict = cfg
        self.width: int = variable_width
        self.depth: int = depth

        self.layers = nn.ModuleList(
            AbcStackBlock(
                i,
                variable_width,
                o,
                (list_a[2 * k], list_a[2 * k + 1]),
                (list_b[2 * k], list_b[2 * k + 1]),
                make_activation(cfg["hidden_layer_activation"], cfg["hidden_layer_activation_callback"]),
                bias_tune=bias_tune,
                a_bias=(list_a_bias[2 * k], list_a_bias[2 * k + 1]),
                b_bias=(list_b_bias[2 * k], list_b_bias[2 * k + 1]),
            )
            for k, (i, o) in enumerate(_block_dims(d_in, bottleneck_width, d_out, depth))
        )
        self.activations = bottleneck_activations(cfg, depth)

    def lr_exponents(self, update_rule: Any) -> dict[str, list[float]]:
        """``{'list_c', 'list_c_bias'}`` (2 * depth each) for ``update_rule``."""
        return lr_exponents_for(self.config_architecture, update_rule)

    def lr_multipliers(self, update_rule: Any) -> list[tuple[list[nn.Parameter], float]]:
        """``[(params, variable_width^(-c))]`` covering every trainable parameter once, c per linear."""
        ex = self.lr_exponents(update_rule)
        return abc_lr_multipliers(self, self.linear_layers(), ex["list_c"], ex["list_c_bias"], self.width)

    def linear_layers(self) -> list[nn.Module]:
        """The linear layers in forward order (two per block)."""
        return [m for block in self.layers for m in (block.linear_1, block.linear_2)]


__all__ = ["abcStack", "AbcStackBlock", "DEFAULTS", "init_config_abcStack"]
