"""Named abc-parametrizations as per-layer exponent lists, for weights and biases, per optimizer.

Convention (n = the hidden width, the same n for every layer): a parameter with exponents
(a, b, c) is stored raw, initialised N(0, n^(-2b)), used as n^(-a) * raw in the forward
pass and trained with learning rate eta * n^(-c). Weights (first, hidden, last layer):

| preset | optimizer         | a             | b             | c             |
|--------|-------------------|---------------|---------------|---------------|
| muP    | SGD               | -1/2, 0, 1/2  | 1/2 all       | 0, 0, 0       |
| muP    | Adam, AdamW       | -1/2, 0, 1/2  | 1/2 all       | 1/2, 1, 1/2   |
| NTK    | SGD               | 0, 1/2, 1/2   | 0 all         | 0, 0, 0       |
| SP     | SGD, Adam, AdamW  | 0, 0, 0       | 0, 1/2, 1/2   | 0, 0, 0       |

(a, b) do not depend on the optimizer; c does, so it is resolved where the optimizer is
built (``lr_exponents``). Biases: the bias of every layer with n outputs takes the first
layer's (a, b, c); the last layer's bias (O(1) outputs) is (0, 0, 0). A depth-1 network
has only a first layer (a, b from the first column), whose bias is a last-layer bias.
abcStack: every block is a two-layer network in -> n -> out, so block k's two linears take
the (first, last) columns and linear_1's bias the first column; linear_2's bias is (0, 0, 0).

Pure Python (no torch), so configs can be resolved and recorded cheaply.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Union

from core_code.util.config_extractions import ConfigError

Triple = tuple[float, float, float]

# name -> ((a_first, a_hidden, a_last), (b_first, b_hidden, b_last)): the forward pass.
PARAMETRIZATIONS: dict[str, tuple[Triple, Triple]] = {
    "muP": ((-0.5, 0.0, 0.5), (0.5, 0.5, 0.5)),
    "NTK": ((0.0, 0.5, 0.5), (0.0, 0.0, 0.0)),
    "SP": ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
}

# name -> update_rule -> (c_first, c_hidden, c_last): the learning rates, per optimizer.
LR_PRESETS: dict[str, dict[str, Triple]] = {
    "muP": {"SGD": (0.0, 0.0, 0.0), "Adam": (0.5, 1.0, 0.5), "AdamW": (0.5, 1.0, 0.5)},
    "NTK": {"SGD": (0.0, 0.0, 0.0)},
    "SP": {"SGD": (0.0, 0.0, 0.0), "Adam": (0.0, 0.0, 0.0), "AdamW": (0.0, 0.0, 0.0)},
}

#: Architectures with abc exponents, and how many linear layers ``depth`` means for them.
ABC_ARCHITECTURES = ("abcMLP", "abcStack")

Exponents = Union[float, Sequence[float], None]


def _per_layer(first: float, hidden: float, last: float, depth: int) -> list[float]:
    if depth == 1:
        return [first]
    return [first] + [hidden] * (depth - 2) + [last]


def _check_depth(depth: Any) -> int:
    if not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"architecture config key 'depth' must be an int >= 1, got {depth!r}")
    return int(depth)


def _check_name(name: Any) -> str:
    if name not in PARAMETRIZATIONS:
        raise ConfigError(
            f"architecture config key 'parametrization' is {name!r}; "
            f"known parametrizations: {', '.join(sorted(PARAMETRIZATIONS))}"
        )
    return name


def n_linears(depth: int, architecture_key: str = "abcMLP") -> int:
    """Number of abc linear layers: ``depth`` for abcMLP, two per block for abcStack."""
    if architecture_key not in ABC_ARCHITECTURES:
        raise ConfigError(f"architecture config key 'architecture_key' is {architecture_key!r}; "
                          f"abc exponents exist for {', '.join(ABC_ARCHITECTURES)}")
    return _check_depth(depth) * (2 if architecture_key == "abcStack" else 1)


def _layout(triple: Triple, depth: int, architecture_key: str) -> list[float]:
    """A (first, hidden, last) triple laid out over the linears of the architecture."""
    if architecture_key == "abcStack":
        return [triple[0], triple[2]] * depth
    return _per_layer(*triple, depth)


def _has_n_outputs(depth: int, architecture_key: str) -> list[bool]:
    """Per linear: does it have n outputs (True) or O(1) outputs (the last layer, linear_2)?"""
    if architecture_key == "abcStack":
        return [True, False] * depth
    return [True] * (depth - 1) + [False]


def abc_preset(name: str, depth: int, architecture_key: str = "abcMLP") -> dict[str, list[float]]:
    """``{'list_a', 'list_b'}`` (the forward pass) of the named parametrization.

    The learning-rate exponents depend on the optimizer: see ``lr_exponents``.
    """
    a, b = PARAMETRIZATIONS[_check_name(name)]
    depth = _check_depth(depth)
    n_linears(depth, architecture_key)
    return {"list_a": _layout(a, depth, architecture_key), "list_b": _layout(b, depth, architecture_key)}


def bias_exponents(layer_exponents: Sequence[float], depth: int, architecture_key: str = "abcMLP") -> list[float]:
    """The default bias exponents: a linear with n outputs takes the first layer's, the others 0.

    ``layer_exponents`` are the weights' (a, b or c) per linear; for abcStack each block's
    linear_1 (n outputs) takes its own block's first entry.
    """
    mask = _has_n_outputs(depth, architecture_key)
    step = 2 if architecture_key == "abcStack" else len(mask)
    return [float(layer_exponents[(i // step) * step]) if has_n else 0.0 for i, has_n in enumerate(mask)]


def check_exponents(value: Exponents, key: str, length: int, what: str) -> list[float]:
    """``value`` as ``length`` floats (a single number is broadcast), else a ConfigError naming ``key``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)] * length
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"architecture config key '{key}' must be a list of {length} numbers ({what}), "
                          f"got {value!r}")
    if len(value) != length:
        raise ConfigError(f"architecture config key '{key}' has length {len(value)} but {what} needs length {length}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in value):
        raise ConfigError(f"architecture config key '{key}' must contain numbers only, got {value!r}")
    return [float(v) for v in value]


def preset_lr_exponents(name: Any, update_rule: Any) -> Triple:
    """(c_first, c_hidden, c_last) of a preset for an optimizer, else a ConfigError saying for which it exists."""
    name = _check_name(name)
    table = LR_PRESETS[name]
    if not isinstance(update_rule, str) or update_rule not in table:
        hint = " (NTK describes SGD training only)" if name == "NTK" else ""
        raise ConfigError(
            f"architecture config key 'parametrization' is {name!r}, whose learning-rate exponents are defined "
            f"for update_rule {', '.join(table)} only, not {update_rule!r}{hint}; "
            "give 'list_c' (and 'list_c_bias') explicitly for other optimizers"
        )
    return table[update_rule]


def lr_exponents(
    parametrization: Optional[str],
    update_rule: Any,
    depth: int,
    list_c: Exponents = None,
    list_c_bias: Exponents = None,
    architecture_key: str = "abcMLP",
) -> dict[str, list[float]]:
    """The per-linear learning-rate exponents ``{'list_c': [...], 'list_c_bias': [...]}``.

    ``list_c`` (a number means every layer) wins over the preset; otherwise the preset's
    row for ``update_rule`` ('SGD', 'Adam', 'AdamW'), or a ConfigError naming the
    optimizers it is defined for. ``list_c_bias`` wins over the bias rule (the first
    layer's c for linears with n outputs, 0 for the last). ``depth``: linear layers for
    abcMLP, blocks for abcStack (two linears each).
    """
    n = n_linears(depth, architecture_key)
    what = _what(depth, architecture_key)
    if list_c is not None:
        c = check_exponents(list_c, "list_c", n, what)
    else:
        if parametrization is None:
            raise ConfigError("architecture config key 'list_c' is None and 'parametrization' is None; set "
                              f"'parametrization' to one of {', '.join(sorted(PARAMETRIZATIONS))} or give 'list_c'")
        c = _layout(preset_lr_exponents(parametrization, update_rule), depth, architecture_key)
    if list_c_bias is not None:
        c_bias = check_exponents(list_c_bias, "list_c_bias", n, what)
    else:
        c_bias = bias_exponents(c, depth, architecture_key)
    return {"list_c": c, "list_c_bias": c_bias}


def _what(depth: int, architecture_key: str) -> str:
    if architecture_key == "abcStack":
        return f"abcStack with depth {depth} (two entries per block, 2 * depth)"
    return f"{architecture_key} with depth {depth}"


def complete_abc_exponents(config: dict, architecture_key: str = "abcMLP") -> dict:
    """Fill and check the exponents of an abc config (a new dict; pure Python).

    list_a / list_b left at None come from ``parametrization``; list_a_bias / list_b_bias
    left at None from the bias rule applied to list_a / list_b. Given lists are checked for
    length. ``c`` / ``list_c`` / ``list_c_bias`` stay as given (checked): the learning-rate
    exponents depend on the optimizer and are resolved where it is built (``lr_exponents``).
    """
    out = dict(config)
    depth = _check_depth(out.get("depth"))
    n = n_linears(depth, architecture_key)
    what = _what(depth, architecture_key)
    name = out.get("parametrization")
    if name is not None:
        _check_name(name)
    for key in ("list_a", "list_b"):
        if out.get(key) is None:
            if name is None:
                raise ConfigError(f"architecture config key '{key}' is None and 'parametrization' is None; set "
                                  f"'parametrization' to one of {', '.join(sorted(PARAMETRIZATIONS))} or give '{key}'")
            out[key] = abc_preset(name, depth, architecture_key)[key]
        else:
            out[key] = check_exponents(out[key], key, n, what)
    for key in ("list_a", "list_b"):
        bias_key = f"{key}_bias"
        if out.get(bias_key) is None:
            out[bias_key] = bias_exponents(out[key], depth, architecture_key)
        else:
            out[bias_key] = check_exponents(out[bias_key], bias_key, n, what)
    explicit_c = resolve_list_c(out)
    c = out.get("c")
    if c is not None and (isinstance(c, bool) or not isinstance(c, numbers.Real)):
        raise ConfigError(f"architecture config key 'c' must be a number (the same for every layer; per layer: "
                          f"'list_c'), got {c!r}")
    if explicit_c is not None:
        check_exponents(explicit_c, "list_c" if out.get("list_c") is not None else "c", n, what)
    if out.get("list_c_bias") is not None:
        out["list_c_bias"] = check_exponents(out["list_c_bias"], "list_c_bias", n, what)
    return out


def lr_exponents_for(config_architecture: dict, update_rule: Any) -> dict[str, list[float]]:
    """``lr_exponents`` of a resolved (not task-specific) architecture config; ``{}`` for non-abc architectures."""
    key = config_architecture.get("architecture_key")
    if key not in ABC_ARCHITECTURES:
        return {}
    return lr_exponents(config_architecture.get("parametrization"), update_rule, config_architecture.get("depth"),
                        list_c=resolve_list_c(config_architecture), list_c_bias=config_architecture.get("list_c_bias"),
                        architecture_key=key)


def resolve_list_c(config: dict) -> Exponents:
    """The explicit learning-rate exponents of a config: ``list_c``, or the scalar ``c`` (both: a ConfigError)."""
    list_c, c = config.get("list_c"), config.get("c")
    if list_c is not None and c is not None:
        raise ConfigError(f"architecture config keys 'c' ({c!r}) and 'list_c' ({list_c!r}) are both set; "
                          "give one ('c' means the same exponent for every layer)")
    return list_c if list_c is not None else c


__all__ = ["PARAMETRIZATIONS", "LR_PRESETS", "abc_preset", "bias_exponents", "lr_exponents", "lr_exponents_for",
           "preset_lr_exponents", "resolve_list_c", "check_exponents", "n_linears", "complete_abc_exponents"]
