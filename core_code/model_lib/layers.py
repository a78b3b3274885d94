"""Layer modules and activations shared by the architectures.

Every layer is its own ``nn.Module`` so that forward hooks see its input and output.
Weights are stored as ``(out_features, in_features)`` (the ``F.linear`` layout).
The modules here import torch only.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from core_code.util.config_extractions import ConfigError

# ------------------------------------------------------------------------ activations
#: Activation names accepted by ``hidden_layer_activation`` / ``hidden_bottleneck_activation``
#: (besides 'custom', which takes the matching ``*_callback``).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU,
    "Identity": nn.Identity,
    "Tanh": nn.Tanh,
    "GELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
}

ActivationCallback = Union[Callable[[torch.Tensor], torch.Tensor], nn.Module, type]


class Lambda(nn.Module):
    """Wraps a plain callable (e.g. ``torch.sin``) as a module so hooks can see it."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def make_activation(
    name: Any, callback: Optional[ActivationCallback] = None, key: str = "hidden_layer_activation"
) -> nn.Module:
    """A fresh activation module for ``name`` (a key of ACTIVATIONS, or 'custom').

    For 'custom', ``callback`` may be an ``nn.Module`` subclass (instantiated without
    arguments), an ``nn.Module`` instance (deep-copied, so every position and every
    task's model gets its own copy) or a plain callable (wrapped in ``Lambda``).
    ``key`` is the config key being resolved; errors name it (and ``<key>_callback``).
    """
    cb_key = f"{key}_callback"
    if name == "custom":
        if callback is None:
            raise ConfigError(
                f"architecture config key '{key}' is 'custom' but '{cb_key}' is None; "
                "give a callable or an nn.Module class/instance"
            )
        if isinstance(callback, type):
            if not issubclass(callback, nn.Module):
                raise ConfigError(f"architecture config key '{cb_key}': class {callback!r} is not an nn.Module")
            return callback()
        if isinstance(callback, nn.Module):
            return copy.deepcopy(callback)
        if callable(callback):
            return Lambda(callback)
        raise ConfigError(f"architecture config key '{cb_key}' must be callable, got {callback!r}")
    if callback is not None:
        raise ConfigError(
            f"architecture config key '{cb_key}' is set but '{key}' is {name!r}; "
            f"set '{key}' to 'custom' to use the callback"
        )
    if isinstance(name, str) and name in ACTIVATIONS:
        return ACTIVATIONS[name]()
    raise ConfigError(
        f"architecture config key '{key}' is {name!r}; known activations: "
        f"{', '.join(sorted(ACTIVATIONS))}, custom"
    )


def check_activations(config: dict, *keys: str) -> None:
    """Validate activation keys (and their callbacks) even where depth leaves them unused."""
    for key in keys:
        make_activation(config.get(key), config.get(f"{key}_callback"), key=key)


# ----------------------------------------------------------------------------- layers
class AbcLinear(nn.Module):
    """One abc-parametrized linear layer (Yang & Hu 2021), biases included.

    ``y = n^(-a) * x @ W^T + bias_tune * n^(-a_bias) * bias`` with ``W ~ N(0, n^(-2b))`` and
    ``bias ~ N(0, n^(-2 b_bias))``. ``n`` is the network's width (not necessarily the
    fan-in), so the same n scales every layer as the parametrization prescribes. With
    ``b_bias = -a_bias`` (every preset) the effective bias at init is N(0, 1) * bias_tune.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        a: float,
        b: float,
        n: int,
        bias_tune: float = 1.0,
        bias: bool = True,
        a_bias: float = 0.0,
        b_bias: float = 0.0,
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.a = float(a)
        self.b = float(b)
        self.a_bias = float(a_bias)
        self.b_bias = float(b_bias)
        self.n = int(n)
        self.bias_tune = float(bias_tune)
        # Python floats: no tensor op to compute them in the forward pass.
        self.multiplier: float = float(self.n) ** (-self.a)
        self.init_std: float = float(self.n) ** (-self.b)
        self.bias_multiplier: float = self.bias_tune * float(self.n) ** (-self.a_bias)
        self.bias_init_std: float = float(self.n) ** (-self.b_bias)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``W ~ N(0, n^(-2b))`` and ``bias ~ N(0, n^(-2 b_bias))`` in place."""
        with torch.no_grad():
            nn.init.normal_(self.weight, mean=0.0, std=self.init_std)
            if self.bias is not None:
                nn.init.normal_(self.bias, mean=0.0, std=self.bias_init_std)

    def effective_bias(self) -> Optional[torch.Tensor]:
        """The bias term added to the output: ``bias_tune * n^(-a_bias) * bias`` (None without bias)."""
        return None if self.bias is None else self.bias_multiplier * self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None and x.dim() == 2:
            # One fused kernel: bias_multiplier * bias + multiplier * (x @ W^T).
            return torch.addmm(self.bias, x, self.weight.t(), beta=self.bias_multiplier, alpha=self.multiplier)
        out = F.linear(x, self.weight)
        if self.multiplier != 1.0:
            out = out * self.multiplier
        if self.bias is not None:
            out = out + self.bias_multiplier * self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, a={self.a}, "
            f"b={self.b}, a_bias={self.a_bias}, b_bias={self.b_bias}, n={self.n}, "
            f"bias_tune={self.bias_tune}, bias={self.bias is not None}"
        )


class BiasTunedLinear(nn.Linear):
    """``nn.Linear`` with PyTorch's default init (weight and bias uniform in +-1/sqrt(fan_in)),
    the bias scaled by ``bias_tune`` in the forward pass.

    Used by the Stack architecture (standard parametrization, as in the original).
    """

    def __init__(self, in_features: int, out_features: int, bias_tune: float = 1.0, bias: bool = True):
        super().__init__(int(in_features), int(out_features), bias=bias)
        self.bias_tune = float(bias_tune)

    def effective_bias(self) -> Optional[torch.Tensor]:
        """The bias term added to the output: ``bias_tune * bias`` (None without bias)."""
        return None if self.bias is None else self.bias_tune * self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None and x.dim() == 2:
            return torch.addmm(self.bias, x, self.weight.t(), beta=self.bias_tune)
        bias = None if self.bias is None else self.bias_tune * self.bias
        return F.linear(x, self.weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bias_tune={self.bias_tune}"


# ------------------------------------------------------------------- config checking
def require_int(config: dict, key: str, minimum: int = 1, where: str = "architecture config") -> int:
    """``config[key]`` as an int >= minimum, else a ConfigError naming the key."""
    value = config.get(key)
    if value is None:
        raise ConfigError(f"{where} key '{key}' is missing (None); give an int >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{where} key '{key}' must be an int >= {minimum}, got {value!r}")
    return int(value)


def require_float(config: dict, key: str, where: str = "architecture config") -> float:
    """``config[key]`` as a float (a real number), else a ConfigError naming the key."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where} key '{key}' must be a number, got {value!r}")
    return float(value)


def require_exponents(config: dict, key: str, length: int, what: str, where: str = "architecture config") -> list[float]:
    """``config[key]`` as a list of ``length`` floats (a single number is broadcast).

    ``what`` says where the required length comes from (for the error message).
    """
    value = config.get(key)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)] * length
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} key '{key}' must be a list of {length} numbers ({what}), got {value!r}")
    if len(value) != length:
        raise ConfigError(
            f"{where} key '{key}' has length {len(value)} but {what} needs length {length}"
        )
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"{where} key '{key}' must contain numbers only, got {value!r}")
        out.append(float(v))
    return out


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` with ``requires_grad`` (each once, in registration order)."""
    return [p for p in module.parameters() if p.requires_grad]


def abc_lr_multipliers(
    module: nn.Module, linears: list[AbcLinear], list_c: list[float], list_c_bias: list[float], n: int
) -> list[tuple[list[nn.Parameter], float]]:
    """``[(params, n^(-c))]``: each linear's weight with its c, its bias with its c_bias.

    Parameters with the same multiplier share a group (in order of first appearance);
    trainable parameters outside ``linears`` (e.g. of a custom activation) get 1.0.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()

    def add(p: Optional[nn.Parameter], mult: float) -> None:
        if p is not None and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups.setdefault(mult, []).append(p)

    for layer, c, c_bias in zip(linears, list_c, list_c_bias):
        add(layer.weight, float(n) ** (-c))
        add(layer.bias, float(n) ** (-c_bias))
    for p in trainable_parameters(module):
        add(p, 1.0)
    return [(params, mult) for mult, params in groups.items()]


__all__ = [
    "abc_lr_multipliers",
    "ACTIVATIONS",
    "AbcLinear",
    "BiasTunedLinear",
    "Lambda",
    "make_activation",
    "check_activations",
    "require_int",
    "require_float",
    "require_exponents",
    "trainable_parameters",
]
