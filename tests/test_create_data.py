"""CreateData: layout, bounds, noise, reproducibility, laziness and validation."""

import numpy as np
import pytest
import torch

from core_code.create_data import CreateData
from core_code.util.config_extractions import ConfigError
from core_code.util.function_lib import function_library


def composite_config(**over):
    """The compositeSine experiment's data config (FUNCTIONS.md), smaller validation set."""
    cfg = dict(
        d_in=1,
        d_out=7,
        f_true="compositeSine",
        n_train={"task_0": 256, "task_1": 512},
        noise_scale=0.2,
        x_min_train=-2,
        x_max_train={"task_0": 0, "task_1": 2},
        n_val=64,
        x_min_val=-2,
        x_max_val=2,
        n_test=0,
        seed=77,
    )
    cfg.update(over)
    return cfg


def small_config(**over):
    cfg = dict(d_in=2, d_out=1, f_true="sine", n_train=50, n_val=20, n_test=10, seed=1)
    cfg.update(over)
    return cfg


# ------------------------------------------------------------------ layout
def test_composite_shapes_dtypes_and_task_layout():
    data = CreateData(**composite_config())
    assert data.all_tasks == [0, 1] and data.d_in == 1 and data.d_out == 7
    assert data.n_samples("train") == {0: 256, 1: 512}
    assert data.n_samples("test") == {0: 0, 1: 0}
    train = data.create_data("train")
    assert set(train) == {"x", "y", "task_activity"}
    assert train["x"].shape == (768, 1) and train["x"].dtype == torch.float32
    assert train["y"].shape == (768, 7) and train["y"].dtype == torch.float32
    assert train["task_activity"].shape == (768,) and train["task_activity"].dtype == torch.int64
    ta = train["task_activity"]
    assert (ta[:256] == 0).all() and (ta[256:] == 1).all()
    # per-task bounds: task_0 on [-2, 0], task_1 on [-2, 2]; equi hits the endpoints
    x = train["x"][:, 0]
    assert x[:256].min() == -2 and x[:256].max() == 0
    assert x[256:].min() == -2 and x[256:].max() == 2
    test = data.create_data("test")
    assert test["x"].shape == (0, 1) and test["y"].shape == (0, 7) and test["task_activity"].shape == (0,)


def test_no_task_specific_value_means_one_task():
    data = CreateData(**small_config())
    assert data.all_tasks == [0]
    val = data.create_data("val")
    assert val["x"].shape == (20, 2) and val["y"].shape == (20, 1)
    assert (val["task_activity"] == 0).all()


def test_task_with_zero_samples_contributes_nothing():
    data = CreateData(**small_config(n_train={"task_0": 5, "task_1": 0, "task_2": 3}))
    train = data.create_data("train")
    assert train["task_activity"].tolist() == [0] * 5 + [2] * 3
    assert data.n_samples("train") == {0: 5, 1: 0, 2: 3}


def test_bounds_per_dim_and_generators_per_dim():
    data = CreateData(
        **small_config(
            n_train=400,
            x_min_train=[-1.0, 10.0],
            x_max_train=[-0.5, 12.0],
            data_generators_train=["uniform", "noise"],
            n_val=7,
            x_min_val=[0, 3],
            x_max_val=[1, 4],
            data_generators_val=["uniform"],  # repeated for dim 1
        )
    )
    x = data.create_data("train")["x"].numpy()
    assert x[:, 0].min() >= -1.0 and x[:, 0].max() <= -0.5
    assert x[:, 1].min() >= 10.0 and x[:, 1].max() <= 12.0
    xv = data.create_data("val")["x"].numpy()
    assert (xv[:, 0] >= 0).all() and (xv[:, 0] <= 1).all() and (xv[:, 1] >= 3).all() and (xv[:, 1] <= 4).all()
    assert len(np.unique(xv[:, 1])) == 7  # uniform, not a constant or equi copy of dim 0
    assert not np.allclose(xv[:, 1] - 3, xv[:, 0])


def test_equi_default_grid():
    data = CreateData(**small_config(d_in=1, n_val=5, x_min_val=-1, x_max_val=1))
    np.testing.assert_array_equal(data.create_data("val")["x"][:, 0].numpy(), [-1, -0.5, 0, 0.5, 1])


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize("split", ["val", "test"])
def test_val_test_noise_free(split):
    data = CreateData(**composite_config(n_test=32, data_generators_val="uniform", noise_scale=5.0))
    d = data.create_data(split)
    expected = function_library("compositeSine")(d["x"].numpy().astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(d["y"].numpy(), expected)


def test_train_noise_scale():
    data = CreateData(**small_config(d_in=1, n_train=4000, noise_scale=0.3))
    d = data.create_data("train")
    clean = function_library("sine")(d["x"].numpy().astype(np.float64))
    resid = d["y"].numpy()[:, 0] - clean
    assert abs(resid.std() - 0.3) < 0.02 and abs(resid.mean()) < 0.02
    zero = CreateData(**small_config(d_in=1, noise_scale=0)).create_data("train")
    np.testing.assert_array_equal(
        zero["y"].numpy()[:, 0], function_library("sine")(zero["x"].numpy().astype(np.float64)).astype(np.float32)
    )


def test_task_specific_noise_scale():
    data = CreateData(**small_config(d_in=1, n_train=3000, noise_scale={"task_0": 0.0, "task_1": 1.0}))
    d = data.create_data("train")
    resid = d["y"].numpy()[:, 0] - function_library("sine")(d["x"].numpy().astype(np.float64))
    assert np.abs(resid[:3000]).max() < 1e-6 and abs(resid[3000:].std() - 1.0) < 0.05


def test_custom_callback_and_multi_output():
    data = CreateData(
        **small_config(f_true="custom", f_true_callback=lambda x: x[:, 0] * x[:, 1], noise_scale=0)
    )
    d = data.create_data("val")
    x = d["x"].numpy().astype(np.float64)
    np.testing.assert_array_equal(d["y"].numpy()[:, 0], (x[:, 0] * x[:, 1]).astype(np.float32))

    two = CreateData(
        **small_config(d_out=2, f_true="custom", f_true_callback=lambda x: np.stack([x[:, 0], -x[:, 1]], 1))
    )
    assert two.create_data("test")["y"].shape == (10, 2)


def test_custom_callback_wrong_shape_names_key():
    data = CreateData(**small_config(f_true="custom", f_true_callback=lambda x: x))  # (n, 2), d_out 1
    with pytest.raises(ConfigError, match="f_true_callback"):
        data.create_data("val")


# -------------------------------------------------------------- reproducibility
def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in ("x", "y", "task_activity"))


def test_seeded_reproducible_and_independent_of_call_order():
    cfg = composite_config(data_generators_train="uniform", data_generators_val="noise")
    a, b = CreateData(**cfg), CreateData(**cfg)
    a_val = a.create_data("val")  # a draws val first, b draws train first
    b_train = b.create_data("train")
    assert _same(a.create_data("train"), b_train) and _same(a_val, b.create_data("val"))
    other = CreateData(**composite_config(data_generators_train="uniform", seed=78))
    assert not torch.equal(other.create_data("train")["y"], b_train["y"])


def test_repeated_calls_identical_and_isolated_from_mutation():
    data = CreateData(**small_config(seed=None, data_generators_train="uniform"))
    first = data.create_data("train")
    first["x"].add_(100.0)  # a caller mutating its copy does not change the cache
    second, third = data.create_data("train"), data.create_data("train")
    assert _same(second, third) and second["x"].max() <= 1


def test_unseeded_follows_numpy_global_rng():
    cfg = small_config(seed=None, data_generators_train="uniform")
    np.random.seed(123)
    a = CreateData(**cfg)
    np.random.seed(123)
    torch.manual_seed(999)  # documented: torch's seed does not govern the data
    b = CreateData(**cfg)
    np.random.seed(124)
    c = CreateData(**cfg)
    assert a.seed == b.seed != c.seed
    assert _same(a.create_data("train"), b.create_data("train"))
    assert not torch.equal(a.create_data("train")["x"], c.create_data("train")["x"])
    # the drawn seed reproduces the data
    assert _same(CreateData(**dict(cfg, seed=a.seed)).create_data("train"), a.create_data("train"))


def test_construction_is_lazy():
    def boom(x):
        raise RuntimeError("called")

    data = CreateData(**small_config(f_true="custom", f_true_callback=boom))
    assert data.n_samples("val") == {0: 20}
    with pytest.raises(RuntimeError, match="called"):
        data.create_data("val")


def test_unknown_split():
    with pytest.raises(ValueError, match="known splits: train, val, test"):
        CreateData(**small_config()).create_data("validation")


# --------------------------------------------------------------- validation
BAD = [
    (dict(d_in=None), "'d_in' is required"),
    (dict(d_in=0), "'d_in' must be a positive int"),
    (dict(d_in=1.5), "'d_in' must be a positive int"),
    (dict(d_in=True), "'d_in' must be a positive int"),
    (dict(d_in={"task_0": 1, "task_1": 2}), "'d_in' must be the same for every task"),
    (dict(d_out=None), "'d_out' is required"),
    (dict(f_true=None), "'f_true' is required"),
    (dict(f_true="sinus"), "'f_true' is 'sinus'; known functions: .*compositeSine.*sine"),
    (dict(f_true="compositeSine", d_out=3), "f_true 'compositeSine' gives 7 outputs but d_out is 3"),
    (dict(d_out=2), "f_true 'sine' gives 1 output but d_out is 2"),
    (dict(f_true={"task_0": "sine", "task_1": "firstExperiment"}), r"'f_true' \(task_1\).*gives 3 outputs"),
    (dict(f_true="custom"), "'f_true_callback' must be a callable"),
    (dict(f_true="custom", f_true_callback=3), "'f_true_callback' must be a callable"),
    (dict(n_train=-1), "'n_train' must be an int >= 0"),
    (dict(n_val=2.0), "'n_val' must be an int >= 0"),
    (dict(n_test={"task_0": 1, "task_1": -2}), r"'n_test' \(task_1\) must be an int >= 0"),
    (dict(x_min_train=1, x_max_train=0), "'x_min_train' exceeds data config key 'x_max_train' in input dim 0"),
    (dict(x_min_val=[0, 2], x_max_val=[1, 1]), "'x_min_val' exceeds .*'x_max_val' in input dim 1"),
    (dict(x_min_test=[0, 0, 0]), "'x_min_test' has 3 entries but d_in is 2"),
    (dict(x_max_train="1"), "'x_max_train' must be a finite number"),
    (dict(x_max_train=float("nan")), "'x_max_train' must be a finite number"),
    (dict(data_generators_val="gauss"), "'data_generators_val': unknown data generator 'gauss'; known generators: equi"),
    (dict(data_generators_train=["equi", "bad"]), "unknown data generator 'bad'"),
    (dict(data_generators_test=["equi"] * 3), "'data_generators_test' must be a generator name or a list of 1 to 2"),
    (dict(data_generators_test=[]), "'data_generators_test' must be"),
    (dict(noise_scale=-0.1), "'noise_scale' must be a finite number >= 0"),
    (dict(seed=-1), "'seed' must be an int >= 0 or None"),
    (dict(seed=1.5), "'seed' must be an int >= 0 or None"),
    (dict(n_trian=3), "unknown data config key 'n_trian'.*n_train"),
    (dict(n_train={"task_0": 1}, n_val={"task_1": 1}), "'n_val' names tasks"),
]


@pytest.mark.parametrize("over,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_config_raises_config_error(over, message):
    with pytest.raises(ConfigError, match=message):
        CreateData(**small_config(**over))


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)
