"""Named target functions (``f_true``) and input generators.

Definitions follow ``shared/spec/FUNCTIONS.md``. Every target function has the
signature ``fn(x, p) -> y``: ``x`` is a float array of shape ``(n, d_in)`` of which only
the first column is read, ``p`` the parameter vector (default ``DEFAULT_P``), and ``y``
has shape ``(n,)`` for a one-output function or ``(n, k)`` for a k-output function.

``FUNCTIONS`` and ``GENERATORS`` are the registries; ``function_library`` looks a
function up by name (an unknown name raises a ValueError listing the known ones) and
``register_function`` adds a user's function without editing this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_P: tuple[float, ...] = (0.4, 1.0, 2.0, -3.0)

TargetFn = Callable[[np.ndarray, Sequence[float]], np.ndarray]
GeneratorFn = Callable[[int, float, float, np.random.Generator], np.ndarray]


def _x0(x: np.ndarray) -> np.ndarray:
    """The first input coordinate of ``x`` (shape (n, d_in)) as a float array (n,)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"target functions take x of shape (n, d_in); got shape {x.shape}")
    return x[:, 0]


def _col(v: np.ndarray) -> np.ndarray:
    """A vector (n,) as an input array (n, 1), to compose target functions."""
    return np.asarray(v, dtype=float).reshape(-1, 1)


# ------------------------------------------------------------------ one output
def sine(x, p=DEFAULT_P):
    return np.sin(np.pi * _x0(x))


def exp_(x, p=DEFAULT_P):
    return 0.7357 * np.exp(_x0(x)) - 1.0


def negToPos(x, p=DEFAULT_P):
    return np.where(_x0(x) > 0, 1.0, -1.0)


def posToNeg(x, p=DEFAULT_P):
    return np.where(_x0(x) < 0, 1.0, -1.0)


def squared(x, p=DEFAULT_P):
    return _x0(x) ** 2 - 0.5


def scaledSquared(x, p=DEFAULT_P):
    return 2.0 * (_x0(x) ** 2 - 0.5)


def cubed(x, p=DEFAULT_P):
    return _x0(x) ** 3


def oneKink(x, p=DEFAULT_P):
    """Piecewise linear, slope p2 left of the kink at p0, slope p3 right of it, value p1 there."""
    x0 = _x0(x)
    d = x0 - p[0]
    return p[2] * (x0 < p[0]) * d + p[1] + p[3] * (x0 > p[0]) * d


def scaledoneKink(x, p=DEFAULT_P):
    """oneKink rescaled so that its values at x0 in {-1, p0, 1} span exactly [-1, 1]."""
    ext = oneKink(_col([-1.0, p[0], 1.0]), p)
    lo, hi = float(np.min(ext)), float(np.max(ext))
    return (oneKink(x, p) - (lo + hi) / 2) * 2 / (hi - lo)


def abs_(x, p=DEFAULT_P):
    return np.abs(_x0(x) - 0.4) + 0.5


def scaledAbs(x, p=DEFAULT_P):
    return np.abs(_x0(x) - 0.4) * 2 / 1.4 - 1.0


def brutalSine(x, p=DEFAULT_P):
    return np.sin(20.0 * _x0(x))


def scaledbrutalSineTrend(x, p=DEFAULT_P):
    x0 = _x0(x)
    return np.sin(-5.5 * np.pi * x0) / 5 + 0.8 * x0


def scaledForrester(x, p=DEFAULT_P):
    t = (_x0(x) + 1) / 2
    return (((6 * t - 2) ** 2 * np.sin(12 * t - 4)) + 6.02074) / (16 * np.sin(8) + 6.02074) * 2 - 1


def scaledSine(x, p=DEFAULT_P):
    return np.sin(np.pi * p[3] * _x0(x))


def jakobhfun(x, p=DEFAULT_P):
    x0 = _x0(x)
    return np.sin(np.exp(2.7 * x0) + 0.1) * ((x0 + 1) / 2) ** 0.9


def scaledJakobhfun(x, p=DEFAULT_P):
    return (jakobhfun(x, p) + 0.948031) / (0.990351 + 0.948031) * 2 - 1


def scaledJakobhfunTrend(x, p=DEFAULT_P):
    x0 = _x0(x)
    return (0.5 * jakobhfun(x, p) + 0.5 * x0 + 0.25 * (x0 + 1) ** 2 - 0.7324646) / 2.46492193 * 2


def brutalSine2(x, p=DEFAULT_P):
    return np.sin(10 / (_x0(x) - 1.2))


def scaledbrutalSine2Trend(x, p=DEFAULT_P):
    x0 = _x0(x)
    return 0.25 * np.sin(10 / (x0 - 1.21952)) - 0.25 * x0 - 0.5 * x0**3


def _levy(z: np.ndarray) -> np.ndarray:
    w = 1 + (z - 1) / 4
    return np.sin(np.pi * w) ** 2 + (w - 1) ** 2 * (1 + np.sin(2 * np.pi * w) ** 2)


def scaledLevy(x, p=DEFAULT_P):
    """The Levy function on [-10, 10] (x0 scaled by 10), mapped by its value M at -10."""
    m = float(_levy(np.float64(-10.0)))
    return (_levy(10 * _x0(x)) - m / 2) * 2 / m


# ---------------------------------------------------------------- multi output
def firstExperiment(x, p=DEFAULT_P):
    """3 outputs: [oneKink, abs, sine] of x0."""
    return np.stack([oneKink(x, p), abs_(x, p), sine(x, p)], axis=1)


def compositeSine(x, p=DEFAULT_P):
    """7 outputs, each applied to s = scaledSine(x0) (= sin(-3 pi x0) for the default p).

    The same ``p`` is used by scaledSine and the outer functions (oneKink).
    """
    s = _col(scaledSine(x, p))
    outer = (oneKink, abs_, squared, negToPos, cubed, sine, exp_)
    return np.stack([f(s, p) for f in outer], axis=1)


_ONE_OUTPUT = (
    sine, exp_, negToPos, posToNeg, squared, scaledSquared, cubed, oneKink, scaledoneKink,
    abs_, scaledAbs, brutalSine, scaledbrutalSineTrend, scaledForrester, scaledSine,
    jakobhfun, scaledJakobhfun, scaledJakobhfunTrend, brutalSine2, scaledbrutalSine2Trend,
    scaledLevy,
)
_MULTI_OUTPUT = (firstExperiment, compositeSine)

# name -> fn(x, p); the Python names abs_/exp_ avoid shadowing builtins.
FUNCTIONS: dict[str, TargetFn] = {f.__name__.rstrip("_"): f for f in _ONE_OUTPUT + _MULTI_OUTPUT}


def known_functions() -> str:
    """The registered function names, comma separated (for error messages)."""
    return ", ".join(sorted(FUNCTIONS))


def function_library(name: str, p: Sequence[float] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The target function ``name`` with parameters ``p`` bound: a callable x -> y.

    ``p`` defaults to ``DEFAULT_P`` = [0.4, 1.0, 2.0, -3.0]. Raises ValueError listing
    the known names for an unknown ``name``.
    """
    if not isinstance(name, str) or name not in FUNCTIONS:
        raise ValueError(f"unknown target function {name!r}; known functions: {known_functions()}")
    fn = FUNCTIONS[name]
    params = tuple(DEFAULT_P if p is None else p)

    def bound(x: np.ndarray) -> np.ndarray:
        return fn(x, params)

    bound.__name__ = name
    bound.__doc__ = fn.__doc__
    return bound


def output_dim(y: np.ndarray) -> int:
    """Number of outputs of a function value: 1 for shape (n,), k for shape (n, k)."""
    y = np.asarray(y)
    return 1 if y.ndim == 1 else int(y.shape[1])


def function_output_dim(name: str, p: Sequence[float] | None = None, d_in: int = 1) -> int:
    """Number of outputs of the target function ``name`` (evaluated on two points of
    dimension ``d_in``)."""
    x = np.tile(np.array([[0.0], [0.5]]), (1, d_in))
    return output_dim(function_library(name, p)(x))


def register_function(name: str, fn: TargetFn) -> None:
    """Add ``fn(x, p) -> y`` to ``FUNCTIONS`` as ``name`` (usable as ``f_true``).

    Raises ValueError if ``name`` is taken (or is 'custom', reserved for callbacks),
    TypeError if ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"function name must be a non-empty string, got {name!r}")
    if name in FUNCTIONS or name == "custom":
        raise ValueError(f"target function {name!r} is already registered (or reserved)")
    if not callable(fn):
        raise TypeError(f"register_function({name!r}, ...): fn must be callable, got {type(fn).__name__}")
    FUNCTIONS[name] = fn


# ------------------------------------------------------------------ generators
def equi(n: int, x_min: float, x_max: float, rng: np.random.Generator) -> np.ndarray:
    """n equidistant points from x_min to x_max, both included (no randomness)."""
    return np.linspace(x_min, x_max, n)


def uniform(n: int, x_min: float, x_max: float, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. uniform samples on [x_min, x_max)."""
    return rng.uniform(x_min, x_max, size=n)


def periodic(n: int, x_min: float, x_max: float, rng: np.random.Generator) -> np.ndarray:
    """sin(1.5 pi t) * (x_max - x_min) + x_min for t equidistant on [-1, 1] (first n//2
    points), then the same with the sine's sign flipped (remaining points).

    As specified, the values lie in [x_min - (x_max - x_min), x_max], not in
    [x_min, x_max] (no randomness).
    """
    n1 = n // 2
    width = x_max - x_min
    first = np.sin(1.5 * np.pi * np.linspace(-1, 1, n1)) * width + x_min
    second = -np.sin(1.5 * np.pi * np.linspace(-1, 1, n - n1)) * width + x_min
    return np.concatenate([first, second])


def noise(n: int, x_min: float, x_max: float, rng: np.random.Generator) -> np.ndarray:
    """Standard normal samples wrapped modulo w = x_max - x_min into [-w/2, w/2), shifted
    by the midpoint (x_max + x_min) / 2: a Gaussian around the midpoint, wrapped into
    [x_min, x_max).

    (The original took the residue in [0, w), which put every sample in
    [mid, mid + w), half of it outside the bounds.)
    """
    z = rng.standard_normal(n)
    mid, width = (x_max + x_min) / 2, x_max - x_min
    if width == 0:
        return np.full(n, float(mid))
    return np.mod(z + width / 2, width) - width / 2 + mid


GENERATORS: dict[str, GeneratorFn] = {g.__name__: g for g in (equi, uniform, periodic, noise)}


def generator_library(name: str) -> GeneratorFn:
    """The input generator ``name``; ValueError listing the known ones if unknown."""
    if not isinstance(name, str) or name not in GENERATORS:
        raise ValueError(f"unknown data generator {name!r}; known generators: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]


__all__ = [
    "DEFAULT_P",
    "FUNCTIONS",
    "GENERATORS",
    "function_library",
    "function_output_dim",
    "output_dim",
    "register_function",
    "known_functions",
    "generator_library",
]
