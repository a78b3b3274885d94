"""Target functions and input generators against hand values from FUNCTIONS.md."""

import math

import numpy as np
import pytest

from core_code.util import function_lib as fl
from core_code.util.function_lib import (
    FUNCTIONS,
    GENERATORS,
    function_library,
    function_output_dim,
    generator_library,
    register_function,
)

PI = math.pi


def _levy(z):
    w = 1 + (z - 1) / 4
    return math.sin(PI * w) ** 2 + (w - 1) ** 2 * (1 + math.sin(2 * PI * w) ** 2)


LEVY_M = _levy(-10.0)
JAK1 = math.sin(math.exp(2.7) + 0.1)  # jakobhfun(1)

# name -> [(x0, expected)], hand values from the definitions (default p = [0.4, 1, 2, -3])
HAND_VALUES = {
    "sine": [(0.5, 1.0), (0.0, 0.0), (-0.5, -1.0)],
    "exp": [(0.0, 0.7357 - 1), (1.0, 0.7357 * math.e - 1)],
    "negToPos": [(0.0, -1.0), (0.1, 1.0), (-0.1, -1.0)],
    "posToNeg": [(0.0, -1.0), (-0.1, 1.0), (0.1, -1.0)],
    "squared": [(1.0, 0.5), (0.0, -0.5)],
    "scaledSquared": [(0.0, -1.0), (1.0, 1.0)],
    "cubed": [(2.0, 8.0), (-1.0, -1.0)],
    "oneKink": [(0.4, 1.0), (1.0, -0.8), (-1.0, -1.8)],
    "scaledoneKink": [(-1.0, -1.0), (0.4, 1.0), (1.0, -2 / 7)],
    "abs": [(0.4, 0.5), (-0.6, 1.5)],
    "scaledAbs": [(0.4, -1.0), (-1.0, 1.0)],
    "brutalSine": [(PI / 40, 1.0), (0.0, 0.0)],
    "scaledbrutalSineTrend": [(0.0, 0.0), (1.0, 1.0)],
    "scaledForrester": [
        (1.0, 1.0),
        (-1.0, (4 * math.sin(-4) + 6.02074) / (16 * math.sin(8) + 6.02074) * 2 - 1),
    ],
    "scaledSine": [(1 / 6, -1.0), (0.0, 0.0)],
    "jakobhfun": [(-1.0, 0.0), (1.0, JAK1)],
    "scaledJakobhfun": [(-1.0, 0.948031 / 1.938382 * 2 - 1), (1.0, (JAK1 + 0.948031) / 1.938382 * 2 - 1)],
    "scaledJakobhfunTrend": [(-1.0, (-0.5 - 0.7324646) / 2.46492193 * 2)],
    "brutalSine2": [(0.0, math.sin(10 / -1.2))],
    "scaledbrutalSine2Trend": [(0.0, 0.25 * math.sin(10 / -1.21952)), (1.0, 0.25 * math.sin(10 / -0.21952) - 0.75)],
    "scaledLevy": [(0.1, -1.0), (-1.0, 1.0), (0.0, (0.625 - LEVY_M / 2) * 2 / LEVY_M)],
}


def test_registry_is_complete():
    multi = {"firstExperiment", "compositeSine"}
    assert set(FUNCTIONS) == set(HAND_VALUES) | multi


@pytest.mark.parametrize("name", sorted(HAND_VALUES))
def test_one_output_hand_values(name):
    x0 = np.array([v[0] for v in HAND_VALUES[name]])
    expected = np.array([v[1] for v in HAND_VALUES[name]])
    x = np.stack([x0, np.full_like(x0, 123.0)], axis=1)  # only column 0 is read
    y = function_library(name)(x)
    assert y.shape == (len(x0),)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert function_output_dim(name) == 1


def test_scaledoneKink_spans_exactly_minus_one_to_one():
    for p in ([0.4, 1.0, 2.0, -3.0], [-0.2, 0.5, -1.0, 4.0]):
        y = function_library("scaledoneKink", p)(np.array([[-1.0], [p[0]], [1.0]]))
        assert y.min() == pytest.approx(-1.0, abs=1e-15) and y.max() == pytest.approx(1.0, abs=1e-15)


def test_parameters_are_used():
    x = np.array([[0.4], [1.0]])
    np.testing.assert_allclose(function_library("oneKink", [0.0, 5.0, 1.0, 2.0])(x), [5.8, 7.0])
    np.testing.assert_allclose(function_library("scaledSine", [0, 0, 0, 0.5])(np.array([[1.0]])), [1.0])


def test_firstExperiment():
    x = np.linspace(-1, 1, 9).reshape(-1, 1)
    y = function_library("firstExperiment")(x)
    assert y.shape == (9, 3) and function_output_dim("firstExperiment") == 3
    for k, name in enumerate(["oneKink", "abs", "sine"]):
        np.testing.assert_array_equal(y[:, k], function_library(name)(x))


def test_compositeSine():
    x = np.linspace(-2, 2, 11).reshape(-1, 1)
    y = function_library("compositeSine")(x)
    assert y.shape == (11, 7) and function_output_dim("compositeSine") == 7
    s = np.sin(-3 * PI * x[:, 0])
    p0, p1, p2, p3 = 0.4, 1.0, 2.0, -3.0
    one_kink_s = p2 * (s < p0) * (s - p0) + p1 + p3 * (s > p0) * (s - p0)
    np.testing.assert_allclose(y[:, 0], one_kink_s, rtol=0, atol=1e-15)
    for k, name in enumerate(["oneKink", "abs", "squared", "negToPos", "cubed", "sine", "exp"]):
        np.testing.assert_array_equal(y[:, k], function_library(name)(s.reshape(-1, 1)))
    # at x = 1/6, s = -1
    y6 = function_library("compositeSine")(np.array([[1 / 6]]))[0]
    np.testing.assert_allclose(y6, [-1.8, 1.9, 0.5, -1.0, -1.0, 0.0, 0.7357 / math.e - 1], atol=1e-12)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown target function 'sinus'") as err:
        function_library("sinus")
    for name in ("sine", "compositeSine", "scaledLevy"):
        assert name in str(err.value)


def test_register_function():
    def double(x, p):
        return 2 * x[:, 0]

    try:
        register_function("testDouble", double)
        np.testing.assert_array_equal(function_library("testDouble")(np.array([[1.5]])), [3.0])
        with pytest.raises(ValueError, match="already registered"):
            register_function("testDouble", double)
    finally:
        FUNCTIONS.pop("testDouble", None)
    with pytest.raises(ValueError, match="already registered"):
        register_function("sine", double)
    with pytest.raises(ValueError):
        register_function("custom", double)
    with pytest.raises(TypeError):
        register_function("notCallable", 3)


# ---------------------------------------------------------------- generators
def test_generator_registry():
    assert set(GENERATORS) == {"equi", "uniform", "periodic", "noise"}
    with pytest.raises(ValueError, match="known generators: equi, noise, periodic, uniform"):
        generator_library("gauss")


def test_equi_inclusive_endpoints():
    x = GENERATORS["equi"](5, -2.0, 2.0, np.random.default_rng(0))
    np.testing.assert_array_equal(x, [-2.0, -1.0, 0.0, 1.0, 2.0])
    assert GENERATORS["equi"](0, -1.0, 1.0, None).shape == (0,)


def test_uniform_within_half_open_interval():
    x = GENERATORS["uniform"](2000, -0.5, 3.0, np.random.default_rng(1))
    assert x.shape == (2000,) and x.min() >= -0.5 and x.max() < 3.0
    assert x.min() < -0.4 and x.max() > 2.9  # fills the interval
    np.testing.assert_array_equal(x, GENERATORS["uniform"](2000, -0.5, 3.0, np.random.default_rng(1)))


def test_periodic_formula():
    x = GENERATORS["periodic"](5, 0.0, 1.0, None)  # first 2: t in {-1, 1}; last 3: t in {-1, 0, 1}
    np.testing.assert_allclose(x, [1.0, -1.0, -1.0, 0.0, 1.0], atol=1e-15)
    x_min, x_max, n = -1.0, 2.0, 8
    t = np.linspace(-1, 1, 4)
    expected = np.concatenate([np.sin(1.5 * PI * t), -np.sin(1.5 * PI * t)]) * (x_max - x_min) + x_min
    np.testing.assert_allclose(GENERATORS["periodic"](n, x_min, x_max, None), expected, rtol=0, atol=0)


def test_noise_within_bounds_and_centred():
    x = GENERATORS["noise"](4000, 1.0, 1.5, np.random.default_rng(2))
    assert x.min() >= 1.0 and x.max() <= 1.5
    wide = GENERATORS["noise"](4000, 10.0, 30.0, np.random.default_rng(3))
    assert wide.min() >= 10.0 and wide.max() <= 30.0
    assert abs(wide.mean() - 20.0) < 0.1 and abs(wide.std() - 1.0) < 0.05  # N(mid, 1), rarely wrapped
    np.testing.assert_array_equal(GENERATORS["noise"](3, 2.0, 2.0, np.random.default_rng(0)), [2.0] * 3)


def test_module_exports():
    assert set(fl.__all__) <= set(dir(fl))
