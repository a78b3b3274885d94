"""Stack: a chain of two-layer blocks with a narrow bottleneck between them.

Each of the ``depth`` blocks maps in -> out, where (in, out) is (d_in, bottleneck_width)
for the first block, (bottleneck_width, bottleneck_width) for middle blocks and
(bottleneck_width, d_out) for the last (depth 1: d_in -> d_out); between blocks sits
``hidden_bottleneck_activation``. As in the original design a block computes

    linear_2(concat(activation(linear_1(x)), x [if skip_conn], linear_skip(x) [if linear_skip_conn]))

with linear_1: in -> variable_width and linear_skip: in -> linear_skip_conn_width (no
activation), so linear_2 has variable_width (+ in with skip_conn) (+ linear_skip_conn_width)
inputs and ``out`` outputs. ``skip_conn`` therefore acts at every depth, depth 1 included.
Every linear is PyTorch's ``nn.Linear`` with its default init (weight and bias uniform in
+-1/sqrt(fan_in)), as in the original; ``bias_tune`` scales the biases in the forward pass.
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
    """One Stack block: linear_2(concat(act(linear_1(x)), x if skip_conn, linear_skip(x) if linear skip))."""

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
        self.skip_conn = bool(skip_conn)
        self.linear_1 = BiasTunedLinear(in_features, variable_width, bias_tune)
        self.activation = activation
        self.linear_skip = (BiasTunedLinear(in_features, linear_skip_conn_width, bias_tune)
                            if linear_skip_conn_width is not None else None)
        concat_width = (variable_width + (in_features if self.skip_conn else 0)
                        + (linear_skip_conn_width if linear_skip_conn_width is not None else 0))
        self.linear_2 = BiasTunedLinear(concat_width, out_features, bias_tune)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.linear_1(x))
        if not self.skip_conn and self.linear_skip is None:
            return self.linear_2(h)
        parts = [h]
        if self.skip_conn:
            parts.append(x)
        if self.linear_skip is not None:
            parts.append(self.linear_skip(x))
        return self.linear_2(torch.cat(parts, dim=-1))

    def reset_parameters(self) -> None:
        """Re-draw the block's linear layers (PyTorch default init)."""
        for module in (self.linear_1, self.linear_skip, self.linear_2):
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

    def lr_multipliers(self, update_rule: Any = None) -> list[tuple[list[nn.Parameter], float]]:
        """``[(all trainable params, 1.0)]``: Stack uses one learning rate for every optimizer."""
        return [(trainable_parameters(self), 1.0)]

    def linear_layers(self) -> list[nn.Module]:
        """Every linear layer in forward order, block by block (linear_1, linear_skip if any, linear_2)."""
        return [m for block in self.layers for m in (block.linear_1, block.linear_skip, block.linear_2)
                if m is not None]


__all__ = ["Stack", "StackBlock", "DEFAULTS", "init_config_Stack"]
