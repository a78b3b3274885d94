"""Multi-task learning methods (training config key ``mtl_method``) and task-gradient diagnostics.

``mtl_method`` is a name, or ``(name, {option: value})`` for a method with options:

==========  ========================================  ===================================
name        method                                    options (default)
==========  ========================================  ===================================
sum         sum of the task losses (default)          -
mean        mean of the task losses                   -
fixed       fixed weights                             task_weights {'task_0': w, ...}
uw          uncertainty weighting, Kendall 2018       -
dwa         dynamic weight average, Liu 2019          temperature (2.0)
rlw         random loss weighting, Lin 2021           -
gradnorm    GradNorm, Chen 2018                       alpha (1.5), lr (0.025)
pcgrad      PCGrad, Yu 2020                           -
mgda        MGDA min-norm, Sener & Koltun 2018        normalization ('none'|'l2'|'loss'|'loss+')
cagrad      CAGrad, Liu 2021                          c (0.4)
imtl_g      IMTL-G, Liu 2021                          -
custom      ``mtl_method_callback(G, obj) -> (P,)``   -
==========  ========================================  ===================================

A new method: subclass ``core_code.mtl.methods.MTLMethod`` and ``register_mtl_method``.
"""

from __future__ import annotations

from typing import Any, Optional

from core_code.mtl.methods import (
    IMTLG,
    MGDA,
    CAGrad,
    Custom,
    DynamicWeightAverage,
    Fixed,
    GradNorm,
    Mean,
    MTLMethod,
    PCGrad,
    RandomLossWeighting,
    Sum,
    UncertaintyWeighting,
)
from core_code.util.config_extractions import ConfigError

MTL_METHODS: dict[str, type[MTLMethod]] = {cls.name: cls for cls in (
    Sum, Mean, Fixed, UncertaintyWeighting, DynamicWeightAverage, RandomLossWeighting, GradNorm, PCGrad, MGDA,
    CAGrad, IMTLG, Custom)}


def register_mtl_method(cls: type[MTLMethod]) -> None:
    """Make ``cls`` (an ``MTLMethod`` subclass with a new ``name``) selectable by ``mtl_method``."""
    if cls.name in MTL_METHODS:
        raise ValueError(f"mtl_method {cls.name!r} is already registered")
    MTL_METHODS[cls.name] = cls


def parse_mtl_method(spec: Any) -> tuple[str, dict]:
    """``'name'`` or ``(name, {options})`` -> (name, options); ConfigError otherwise."""
    known = ", ".join(sorted(MTL_METHODS))
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        name, options = spec[0], dict(spec[1])
    else:
        raise ConfigError(f"training config key 'mtl_method' is {spec!r}; give a name ({known}) or "
                          "(name, {option: value})")
    if name not in MTL_METHODS:
        raise ConfigError(f"training config key 'mtl_method' is {name!r}; known: {known}")
    allowed = MTL_METHODS[name].options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"training config key 'mtl_method': unknown option(s) {', '.join(map(repr, unknown))} "
                          f"for {name!r}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return name, options


def make_mtl_method(spec: Any, callback: Optional[Any] = None) -> MTLMethod:
    """The method object of training config ``mtl_method`` (and ``mtl_method_callback``)."""
    name, options = parse_mtl_method(spec)
    if name == "custom":
        if not callable(callback):
            raise ConfigError("training config key 'mtl_method_callback' must be a callable (G, obj) -> (P,) "
                              f"when mtl_method is 'custom', got {callback!r}")
        return Custom(callback, **options)
    return MTL_METHODS[name](**options)


__all__ = ["MTL_METHODS", "MTLMethod", "make_mtl_method", "parse_mtl_method", "register_mtl_method"]
