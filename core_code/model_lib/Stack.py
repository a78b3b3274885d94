"""Stack: a chain of two-layer blocks with a narrow bottleneck between them.

Each of the ``depth`` blocks maps in -> variable_width -> out through
linear -> hidden_layer_activation -> linear, where (in, out) is (d_in, bottleneck_width)
for the first block, (bottleneck_width, bottleneck_width) for middle blocks and
(bottleneck_width, d_out) for the last (depth 1: d_in -> d_out). Between blocks sits
``hidden_bottleneck_activation``. Options: ``skip_conn`` adds the block input to the
block output wherever in == out (always for middle blocks); ``linear_skip_conn`` adds
a linear path in -> linear_skip_conn_width -> out to every block. Standard PyTorch weight
init; biases ~ N(0, 1) scaled by ``bias_tune``, as in the original.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from core_code.model_lib.layers import (
    BiasTunedLinear,
    check_activations,
    make_activation,
    require_float,
    require_int,
    trainable_parameters,
)
from core_code.util.config_extractions import ConfigError, complete_config

# Every key Stack accepts, with its default.
DEFAULTS: dict[str, Any] = {
    "architecture_key": "Stack",
    "d_in": None,
    "d_out": None,
    "bottleneck_width": 64,
    "variable_width": 128,
    "depth": 1,
    "skip_conn": False,
    "linear_skip_conn": False,
    "linear_skip_conn_width": 32,
    "bias_tune": 1.0,
    "hidden_bottleneck_activation": "Identity",
    "hidden_bottleneck_activation_callback": None,
    "hidden_layer_activation": "ReLU",
    "hidden_layer_activation_callback": None,
}


def init_config_Stack(**config: Any) -> dict:
    """Complete a Stack configuration (see DEFAULTS)."""
    return complete_config(config, DEFAULTS, "architecture config (Stack)")


class StackBlock(nn.Module):
    """One Stack block: linear_1 -> activation -> linear_2 (+ optional skips)."""

    def __init__(
        self,
        in_features: int,
        variable_width: int,
        out_features: int,
        activation: nn.Module,
        bias_tune: float = 1.0,
        skip_conn: bool = False,
        linear_skip_conn_width: Optional[int] = None,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear_1 = BiasTunedLinear(in_features, variable_width, bias_tune)
        self.activation = activation
        self.linear_2 = BiasTunedLinear(variable_width, out_features, bias_tune)
        # Identity skip only where shapes allow it.
        self.skip_conn = bool(skip_conn) and in_features == out_features
        if linear_skip_conn_width is not None:
            self.linear_skip_in = BiasTunedLinear(in_features, linear_skip_conn_width, bias_tune)
            self.linear_skip_out = BiasTunedLinear(linear_skip_conn_width, out_features, bias_tune)
        else:
            self.linear_skip_in = None
            self.linear_skip_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_2(self.activation(self.linear_1(x)))
        if self.linear_skip_in is not None:
            y = y + self.linear_skip_out(self.linear_skip_in(x))
        if self.skip_conn:
            y = y + x
        return y

    def reset_parameters(self) -> None:
        """Re-draw the block's linear layers."""
        for module in (self.linear_1, self.linear_2, self.linear_skip_in, self.linear_skip_out):
            if module is not None:
                module.reset_parameters()


def _block_dims(d_in: int, bottleneck_width: int, d_out: int, depth: int) -> list[tuple[int, int]]:
    """(in, out) of every block."""
    dims = [d_in] + [bottleneck_width] * (depth - 1) + [d_out]
    return [(dims[i], dims[i + 1]) for i in range(depth)]


def bottleneck_activations(cfg: dict, depth: int) -> nn.ModuleList:
    """The ``depth - 1`` bottleneck activations between blocks."""
    return nn.ModuleList(
        make_activation(cfg["hidden_bottleneck_activation"], cfg["hidden_bottleneck_activation_callback"],
                        key="hidden_bottleneck_activation")
        for _ in range(depth - 1)
    )


class BlockNetwork(nn.Module):
    """Blocks in ``layers`` with ``activations`` between them (shared by Stack and abcStack)."""

    layers: nn.ModuleList
    activations: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, activation in zip(self.layers, self.activations):
            x = activation(block(x))
        return self.layers[-1](x)

    def reset_parameters(self) -> None:
        """Re-draw every block's initialization."""
        for block in self.layers:
            block.reset_parameters()


def _require_bool(cfg: dict, key: str) -> bool:
    value = cfg.get(key)
    if not isinstance(value, bool):
        raise ConfigError(f"architecture config key '{key}' must be True or False, got {value!r}")
    return value


class Stack(BlockNetwork):
    """Stack of two-layer blocks; ``layers`` holds the blocks, ``activations`` the bottleneck activations."""

    def __init__(self, **config_architecture: Any):
        super().__init__()
        cfg = init_config_Stack(**config_architecture)
        d_in = require_int(cfg, "d_in")
        d_out = require_int(cfg, "d_out")
        depth = require_int(cfg, "depth")
        variable_width = require_int(cfg, "variable_width")
        bottleneck_width = require_int(cfg, "bottleneck_width") if depth > 1 else cfg["bottleneck_width"]
        skip_conn = _require_bool(cfg, "skip_conn")
        linear_skip = _require_bool(cfg, "linear_skip_conn")
        skip_width = require_int(cfg, "linear_skip_conn_width") if linear_skip else None
        bias_tune = require_float(cfg, "bias_tune")
        check_activations(cfg, "hidden_layer_activation", "hidden_bottleneck_activation")
        self.config_architecture: dict = cfg
        self.width: int = variable_width
        self.depth: int = depth

        self.layers = nn.ModuleList(
            StackBlock(
                i,
                variable_width,
                o,
                make_activation(cfg["hidden_layer_activation"], cfg["hidden_layer_activation_callback"]),
                bias_tune=bias_tune,
                skip_conn=skip_conn,
                linear_skip_conn_width=skip_width,
            )
            for i, o in _block_dims(d_in, bottleneck_width, d_out, depth)
        )
        self.activations = bottleneck_activations(cfg, depth)

    def lr_multipliers(self) -> list[tuple[list[nn.Parameter], float]]:
        """``[(all trainable params, 1.0)]``: Stack uses one learning rate (uniform interface)."""
        return [(trainable_parameters(self), 1.0)]

    def linear_layers(self) -> list[nn.Module]:
        """Every linear layer, block by block (linear_1, linear_2, then the linear skip path)."""
        return [m for m in self.modules() if isinstance(m, BiasTunedLinear)]


__all__ = ["Stack", "StackBlock", "DEFAULTS", "init_config_Stack"]
