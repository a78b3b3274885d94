"""Your own data (data_source 'files' / 'custom'): layout, validation, normalisation,
val_fraction, fingerprints, plots, equality with the 'function' source, and an end-to-end
run through main.py of the README's two-task recipe."""

from __future__ import annotations

import csv
import hashlib
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import core_code.data_files as data_files_mod
from core_code.create_data import CreateData, check_data_object, data_fingerprint, make_data
from core_code.data_files import REPO_ROOT, FileData
from core_code.util.config_extractions import ConfigError
from core_code.util.lightning import DataModule

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers
def write_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> str:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def two_task_files(tmp_path: Path) -> dict:
    """The recipe's example: task 0 y = sin(3x) on [-1, 0], task 1 y = cos(3x) on [0, 1].

    train: one .npz per task; val: one .csv with a task column; test: one .npz with task_activity.
    """
    x0 = np.linspace(-1, 0, 12).reshape(-1, 1)
    x1 = np.linspace(0, 1, 8).reshape(-1, 1)
    tr0 = write_npz(tmp_path / "train_task0.npz", x=x0, y=np.sin(3 * x0))
    tr1 = write_npz(tmp_path / "train_task1.npz", x=x1, y=np.cos(3 * x1))
    xv = np.linspace(-1, 1, 10)
    rows = [[t, float(x), float(np.sin(3 * x) if t == 0 else np.cos(3 * x))]
            for i, x in enumerate(xv) for t in [i % 2]]
    val = write_csv(tmp_path / "val.csv", ["task", "x0", "y0"], rows)
    xt = np.array([[-0.5], [0.5], [-0.25]])
    test = write_npz(tmp_path / "test.npz", x=xt, y=np.array([[0.1], [0.2], [0.3]]),
                     task_activity=np.array([0, 1, 0]))
    return {"data_source": "files",
            "data_files": {"train": {"task_0": tr0, "task_1": tr1}, "val": val, "test": test},
            "data_columns": {"x": ["x0"], "y": ["y0"], "task": "task"},
            "seed": 5}


def one_file(tmp_path: Path, name: str = "d.npz", **arrays) -> dict:
    """A config whose train split is one .npz with ``arrays`` (default: 2 tasks, 3 rows each)."""
    arrays = arrays or {"x": np.arange(6.0).reshape(-1, 1), "y": np.arange(6.0).reshape(-1, 1) * 2,
                        "task_activity": np.array([0, 0, 0, 1, 1, 1])}
    return {"data_source": "files", "data_files": {"train": write_npz(tmp_path / name, **arrays)}}


def error(**config) -> str:
    with pytest.raises(ConfigError) as exc:
        make_data(**config)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ layout
def test_two_task_example_layout(tmp_path):
    data = make_data(**two_task_files(tmp_path))
    assert isinstance(data, FileData)
    assert (data.d_in, data.d_out, data.all_tasks, data.seed) == (1, 1, [0, 1], 5)
    assert data.has_true_function is False and CreateData.has_true_function is True
    assert data.n_samples("train") == {0: 12, 1: 8}
    assert data.n_samples("val") == {0: 5, 1: 5}
    assert data.n_samples("test") == {0: 2, 1: 1}
    check_data_object(data, "file data")  # dtypes, shapes, contiguous blocks, counts
    train = data.create_data("train")
    assert train["task_activity"].tolist() == [0] * 12 + [1] * 8
    assert torch.equal(train["x"][:12, 0], torch.from_numpy(np.linspace(-1, 0, 12).astype(np.float32)))
    val = data.create_data("val")
    # the csv alternates tasks: each task's rows keep their file order
    xv = torch.from_numpy(np.linspace(-1, 1, 10).astype(np.float32))
    assert torch.equal(val["x"][:, 0], torch.cat([xv[0::2], xv[1::2]]))
    test = data.create_data("test")
    assert test["task_activity"].tolist() == [0, 0, 1]
    assert test["x"][:, 0].tolist() == [-0.5, -0.25, 0.5] and test["y"][:, 0].tolist() == pytest.approx([0.1, 0.3, 0.2])
    assert data.task_configs[1]["data_files"]["train"].endswith("train_task1.npz")
    assert "x_min_train" not in data.task_configs[0]  # no training box: no in-domain metric
    train["x"][0] = 99  # copies
    assert data.create_data("train")["x"][0, 0] == -1


def test_missing_splits_are_empty_and_one_task_needs_no_task_ids(tmp_path):
    cfg = one_file(tmp_path, x=np.zeros((4, 3)), y=np.ones(4))  # 1-D y: one column
    data = make_data(**cfg, d_out=1)
    assert (data.d_in, data.d_out, data.all_tasks) == (3, 1, [0])
    assert data.n_samples("val") == {0: 0} and data.n_samples("test") == {0: 0}
    val = data.create_data("val")
    assert val["x"].shape == (0, 3) and val["y"].shape == (0, 1) and val["task_activity"].shape == (0,)


def test_csv_extra_columns_are_not_read_and_task_defaults_to_task(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "task", "a", "b", "out"],
                     [[7, 1, 1.0, 2.0, 3.0], [8, 0, 4.0, 5.0, 6.0]])
    data = make_data(data_source="files", data_files={"train": path}, data_columns={"x": ["b", "a"], "y": "out"})
    tr = data.create_data("train")
    assert tr["x"].tolist() == [[5.0, 4.0], [2.0, 1.0]] and tr["y"].tolist() == [[6.0], [3.0]]
    assert tr["task_activity"].tolist() == [0, 1]


def test_relative_paths_are_from_the_repository_root(tmp_path, monkeypatch):
    assert REPO_ROOT == ROOT
    (tmp_path / "data").mkdir()
    write_npz(tmp_path / "data" / "d.npz", x=np.zeros((2, 1)), y=np.zeros((2, 1)))
    monkeypatch.setattr(data_files_mod, "REPO_ROOT", tmp_path)
    cfg = {"data_source": "files", "data_files": {"train": "data/d.npz"}}
    assert make_data(**cfg).n_samples("train") == {0: 2}
    assert list(data_fingerprint(cfg)) == ["data/d.npz"]


# -------------------------------------------- 'files' == 'function' when equal
def function_config() -> dict:
    return dict(d_in=1, d_out=7, f_true="compositeSine", n_train={"task_0": 24, "task_1": 40},
                x_min_train=-2, x_max_train={"task_0": 0, "task_1": 2}, n_val=16, n_test=8, noise_scale=0.1, seed=3)


def batches(data, seed: int, epochs: int = 2) -> list[dict]:
    torch.manual_seed(seed)
    dm = DataModule(data, batch_size=16, criterion="MSELoss", batching_strategy="data_deterministic")
    dm.setup()
    out = []
    for epoch in range(epochs):
        dm.set_epoch(epoch)
        loader = dm.train_dataloader()
        loader.set_epoch(epoch)
        out += [{k: batch[k].clone() for k in ("x", "y", "task_activity")} for batch in loader]
    return out + [dict(dm.val_dataloader().__iter__().__next__())]


@pytest.mark.parametrize("per_task", [False, True])
def test_files_holding_createdata_output_give_identical_batches(tmp_path, per_task):
    fn = CreateData(**function_config())
    files = {}
    for split in ("train", "val", "test"):
        d = {k: v.numpy() for k, v in fn.create_data(split).items()}
        if per_task:
            files[split] = {f"task_{t}": write_npz(tmp_path / f"{split}{t}.npz", x=d["x"][d["task_activity"] == t],
                                                   y=d["y"][d["task_activity"] == t]) for t in (0, 1)}
        else:
            files[split] = write_npz(tmp_path / f"{split}.npz", **d)
    fd = make_data(data_source="files", data_files=files, d_in=1, d_out=7)
    for split in ("train", "val", "test"):
        a, b = fn.create_data(split), fd.create_data(split)
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
        assert fn.n_samples(split) == fd.n_samples(split)
    ba, bb = batches(fn, 11), batches(fd, 11)
    assert len(ba) == len(bb) > 4
    assert all(torch.equal(p[k], q[k]) for p, q in zip(ba, bb) for k in ("x", "y", "task_activity"))


# ------------------------------------------------------------ normalisation
def test_normalize_xy_round_trip_with_train_statistics(tmp_path):
    cfg = two_task_files(tmp_path)
    raw = make_data(**cfg)
    data = make_data(**cfg, normalize="xy")
    rtr = raw.create_data("train")
    x64, y64 = rtr["x"].double().numpy(), rtr["y"].double().numpy()
    assert data.normalization == {
        "x": {"mean": pytest.approx(x64.mean(0).tolist()), "std": pytest.approx(x64.std(0).tolist())},
        "y": {"mean": pytest.approx(y64.mean(0).tolist()), "std": pytest.approx(y64.std(0).tolist())}}
    json.dumps(data.normalization)  # goes into a run config as it is
    tr = data.create_data("train")
    assert tr["x"].double().mean().item() == pytest.approx(0, abs=1e-6)
    assert tr["y"].double().std(unbiased=False).item() == pytest.approx(1, abs=1e-6)
    for split in ("train", "val", "test"):  # every split with the train statistics; inverse restores it
        r, n = raw.create_data(split), data.create_data(split)
        assert torch.allclose(data.denormalize("x", n["x"]), r["x"], atol=1e-6)
        assert torch.allclose(data.denormalize("y", n["y"]), r["y"], atol=1e-6)
        assert torch.allclose(data.normalize("y", r["y"]), n["y"], atol=1e-6)
        assert torch.equal(n["task_activity"], r["task_activity"])
    assert np.allclose(data.denormalize("y", data.normalize("y", y64)), y64)


def test_normalize_x_only_and_constant_column(tmp_path):
    x = np.stack([np.arange(4.0), np.full(4, 2.0)], axis=1)
    data = make_data(**one_file(tmp_path, x=x, y=np.arange(4.0) * 10), normalize="x")
    assert data.normalization == {"x": {"mean": [1.5, 2.0], "std": [pytest.approx(np.sqrt(1.25)), 1.0]}}
    tr = data.create_data("train")
    assert tr["x"][:, 1].tolist() == [0, 0, 0, 0]  # constant column: centred, std 1
    assert tr["y"][:, 0].tolist() == [0, 10, 20, 30]  # y untouched
    assert torch.equal(data.denormalize("y", tr["y"]), tr["y"])
    assert make_data(**one_file(tmp_path, x=x, y=np.arange(4.0))).normalization is None


# -------------------------------------------------------------- val_fraction
def test_val_fraction_is_seeded_per_task_and_keeps_file_order(tmp_path):
    cfg = two_task_files(tmp_path)
    del cfg["data_files"]["val"]
    cfg.pop("data_columns")
    whole = make_data(**cfg).create_data("train")
    a = make_data(**cfg, val_fraction=0.25)
    assert a.n_samples("val") == {0: 3, 1: 2} and a.n_samples("train") == {0: 9, 1: 6}
    b = make_data(**cfg, val_fraction=0.25)
    assert all(torch.equal(a.create_data(s)[k], b.create_data(s)[k]) for s in ("train", "val") for k in ("x", "y"))
    c = make_data(**{**cfg, "seed": 6}, val_fraction=0.25)
    assert not torch.equal(a.create_data("val")["x"], c.create_data("val")["x"])
    tr, va = a.create_data("train"), a.create_data("val")
    for t in (0, 1):
        parts = torch.cat([tr["x"][tr["task_activity"] == t], va["x"][va["task_activity"] == t]])[:, 0]
        assert sorted(parts.tolist()) == sorted(whole["x"][whole["task_activity"] == t, 0].tolist())
        for d in (tr, va):  # file order (increasing x here) within each task
            xs = d["x"][d["task_activity"] == t, 0]
            assert torch.equal(xs, xs.sort().values)
    check_data_object(a, "carved")


def test_val_fraction_errors(tmp_path):
    cfg = two_task_files(tmp_path)
    assert error(**cfg, val_fraction=0.2) == (
        "data config keys 'val_fraction' and data_files['val'] are both set; give one "
        "(val_fraction carves the validation split out of train)")
    del cfg["data_files"]["val"]
    cfg.pop("data_columns")
    assert error(**cfg, val_fraction=0.05) == (
        "data config key 'val_fraction' 0.05 gives task 1 (8 train rows) 0 validation rows; allowed: at least 1 "
        "validation and 1 training row per task")
    for bad in (0, 1, 1.5, "0.1", True):
        assert error(**cfg, val_fraction=bad) == (
            f"data config key 'val_fraction' must be a number in (0, 1) or None, got {bad!r}")


# --------------------------------------------------------------- validation
def test_missing_file_and_bad_paths(tmp_path):
    missing = str(tmp_path / "nope.npz")
    assert error(data_source="files", data_files={"train": missing}) == (
        f"data config key data_files['train']: file {missing!r} not found: {missing}")
    assert error(data_source="files", data_files={"train": "no/such.npz"}) == (
        f"data config key data_files['train']: file 'no/such.npz' not found: {ROOT / 'no/such.npz'} "
        f"(relative to the repository root {ROOT})")
    cfg = two_task_files(tmp_path)
    cfg["data_files"]["train"]["task_1"] = str(tmp_path / "gone.csv")
    assert error(**cfg) == (f"data config key data_files['train']['task_1']: file {str(tmp_path / 'gone.csv')!r} "
                            f"not found: {tmp_path / 'gone.csv'}")
    assert error(data_source="files", data_files={"train": "d.txt"}) == (
        "data config key data_files['train']: file 'd.txt' has type '.txt'; allowed: .npz, .csv")
    assert error(data_source="files") == (
        "data config key 'data_files' must be a dict {'train': path, 'val': path, 'test': path} ('train' required) "
        "when data_source is 'files', got None")
    assert error(data_source="files", data_files={"train": "a.npz", "valid": "b.npz"}) == (
        "data config key 'data_files' has unknown split(s) ['valid']; allowed: train, val, test")
    assert error(data_source="files", data_files={"train": {"t0": "a.npz"}}) == (
        "data config key data_files['train']: malformed task key 't0'; per-task files are dicts keyed "
        "'task_0', 'task_1', ...")
    assert error(data_source="files", data_files={"train": 3}) == (
        "data config key data_files['train'] must be a file path (str), got 3")


def test_npz_shape_dtype_and_array_errors(tmp_path):
    def npz_error(**arrays):
        cfg = one_file(tmp_path, **arrays)
        return error(**cfg).replace(str(tmp_path / "d.npz"), "P")

    assert npz_error(x=np.zeros((2, 1))) == (
        "data_files['train']: P has arrays ['x']; required x, y, optional task_activity (missing ['y'])")
    assert npz_error(x=np.zeros((2, 1)), y=np.zeros(2), w=np.zeros(2)) == (
        "data_files['train']: P has arrays ['w', 'x', 'y']; required x, y, optional task_activity (unknown ['w'])")
    assert npz_error(x=np.zeros((2, 1, 1)), y=np.zeros(2)) == (
        "data_files['train']: P: array 'x' has shape (2, 1, 1); allowed: (n, k) or (n,)")
    assert npz_error(x=np.zeros((2, 1)), y=np.zeros(2, dtype=bool)) == (
        "data_files['train']: P array 'y' has dtype bool; allowed: real numbers (float or int)")
    assert npz_error(x=np.zeros((2, 1), dtype=complex), y=np.zeros(2)) == (
        "data_files['train']: P array 'x' has dtype complex128; allowed: real numbers (float or int)")
    assert npz_error(x=np.zeros((2, 1)), y=np.zeros(2), task_activity=np.zeros(2)) == (
        "data_files['train']: P array 'task_activity' is float64 (2,); allowed: ints of shape (n,)")
    assert npz_error(x=np.zeros((3, 1)), y=np.zeros(2)) == (
        "data_files['train']: P arrays have different numbers of rows {'x': 3, 'y': 2}")
    (tmp_path / "bad.npz").write_text("not a zip")
    msg = error(data_source="files", data_files={"train": str(tmp_path / "bad.npz")})
    assert msg.startswith(f"data_files['train']: cannot read {tmp_path / 'bad.npz'} as .npz (")


def test_csv_column_and_value_errors(tmp_path):
    cols = {"x": ["a"], "y": ["b"]}

    def csv_error(header, rows, columns=cols):
        path = write_csv(tmp_path / "c.csv", header, rows)
        return error(data_source="files", data_files={"train": path}, data_columns=columns).replace(path, "P")

    assert csv_error(["a", "c"], [[1, 2]]) == (
        "data_files['train']: P has no column(s) ['b'] (data_columns); its columns: ['a', 'c']")
    assert csv_error(["a", "b"], [[1, 2], [3, "x"]]) == "data_files['train']: P line 3 column 'b': 'x' is not a number"
    assert csv_error(["a", "b"], [[1, 2], [3]]) == "data_files['train']: P line 3 has 1 fields but the header has 2"
    assert csv_error(["a", "a", "b"], [[1, 2, 3]]) == "data_files['train']: P header names column(s) ['a'] more than once"
    assert csv_error(["a", "b", "task"], [[1, 2, 0.5]]) == (
        "data_files['train']: P column 'task' holds non-integer task ids at lines [2]")
    (tmp_path / "e.csv").write_text("")
    assert error(data_source="files", data_files={"train": str(tmp_path / "e.csv")}, data_columns=cols) == (
        f"data_files['train']: {tmp_path / 'e.csv'} is empty; a .csv file needs a header line naming its columns")
    path = write_csv(tmp_path / "c.csv", ["a", "b"], [[1, 2]])
    assert error(data_source="files", data_files={"train": path}) == (
        "data config key 'data_columns' is required for .csv data files: {'x': [names], 'y': [names], 'task': name}")
    assert error(data_source="files", data_files={"train": path}, data_columns={"x": ["a"], "y": ["b"], "w": 1}) == (
        "data config key 'data_columns' has unknown key(s) ['w']; allowed: x, y, task")
    assert error(data_source="files", data_files={"train": path}, data_columns={"x": [], "y": ["b"]}) == (
        "data config key 'data_columns' entry 'x' must be a non-empty list of distinct column names, got []")
    assert error(data_source="files", data_files={"train": path}, data_columns={"x": ["a"], "y": ["a"]}) == (
        "data config key 'data_columns' uses column(s) ['a'] more than once")
    npz = one_file(tmp_path)
    assert error(**npz, data_columns=cols) == (
        "data config key 'data_columns' is set but no data file is a .csv; remove it")


def test_nan_and_inf_are_reported_with_rows(tmp_path):
    y = np.arange(12.0).reshape(-1, 1)
    y[[2, 5, 6, 7, 8, 9, 11]] = np.nan
    cfg = one_file(tmp_path, x=np.zeros((12, 1)), y=y)
    assert error(**cfg) == (f"data_files['train']: {tmp_path / 'd.npz'} has NaN/inf (or beyond float32) values in "
                            "'y' at rows [2, 5, 6, 7, 8] and 2 more")
    x = np.zeros((3, 2))
    x[1, 1] = 1e300  # finite in float64, inf in float32
    cfg = one_file(tmp_path, x=x, y=np.zeros(3))
    assert error(**cfg).endswith("has NaN/inf (or beyond float32) values in 'x' at rows [1]")
    path = write_csv(tmp_path / "c.csv", ["a", "b"], [[1, 2], [3, "inf"], ["nan", 1]])
    assert error(data_source="files", data_files={"train": path}, data_columns={"x": ["a"], "y": ["b"]}) == (
        f"data_files['train']: {path} has NaN/inf (or beyond float32) values in 'x' at lines [4]")


def test_task_id_errors(tmp_path):
    gap = one_file(tmp_path, x=np.zeros((3, 1)), y=np.zeros(3), task_activity=np.array([0, 2, 2]))
    assert error(**gap) == "the data files' task ids are [0, 2]; allowed: 0..T-1 without gaps (missing [1])"
    # the config names the tasks (a task-specific seed): ids outside them are refused
    cfg = one_file(tmp_path, x=np.zeros((3, 1)), y=np.zeros(3), task_activity=np.array([0, 1, 2]))
    assert error(**cfg, seed={"task_0": 1, "task_1": 2}) == (
        f"data_files['train']: {tmp_path / 'd.npz'} holds task ids [2] at rows [2]; the data's tasks are [0, 1]")
    files = {**two_task_files(tmp_path), "seed": {"task_0": 1, "task_1": 2, "task_2": 3}}
    assert error(**files) == (
        "data config key data_files['train'] names tasks [0, 1] but the task-specific data config values "
        "name tasks [0, 1, 2]")
    files = two_task_files(tmp_path)
    files["data_files"]["test"] = {"task_0": files["data_files"]["test"]}
    assert error(**files) == "data config key data_files['test'] names tasks [0] but data_files['train'] names tasks [0, 1]"
    wrong = two_task_files(tmp_path)
    wrong["data_files"]["train"]["task_1"] = write_npz(tmp_path / "w.npz", x=np.zeros((2, 1)), y=np.zeros(2),
                                                       task_activity=np.array([1, 0]))
    assert error(**wrong) == (f"data_files['train']['task_1']: {tmp_path / 'w.npz'} is the file of task_1 but holds "
                              "task ids [0] at rows [1]")
    no_ids = two_task_files(tmp_path)
    no_ids["data_files"]["test"] = write_npz(tmp_path / "n.npz", x=np.zeros((2, 1)), y=np.zeros(2))
    assert error(**no_ids) == (f"data_files['test']: {tmp_path / 'n.npz'} has no task ids (array 'task_activity' / "
                               "the task column) but the data has tasks [0, 1]; add them, or give one file per task")


def test_dimension_errors(tmp_path):
    cfg = two_task_files(tmp_path)
    assert error(**cfg, d_in=2) == ("data config key 'd_in' is 2 but the files' 'x' has 1 column(s) "
                                    "(data_files['train']['task_0']); set d_in to 1 or None")
    assert error(**cfg, d_out=0) == "data config key 'd_out' must be a positive int or None (taken from the files), got 0"
    cfg["data_files"]["test"] = write_npz(tmp_path / "t2.npz", x=np.zeros((2, 1)), y=np.zeros((2, 2)),
                                          task_activity=np.array([0, 1]))
    assert error(**cfg) == ("data_files['test']: 'y' has 2 column(s) but data_files['train']['task_0'] has 1; "
                            "every file must give the same d_out")


def test_empty_task_splits(tmp_path):
    cfg = one_file(tmp_path, x=np.zeros((3, 1)), y=np.zeros(3), task_activity=np.array([0, 0, 0]))
    assert error(**cfg, seed={"task_0": 1, "task_1": 1}) == (
        f"data_files['train'] ({tmp_path / 'd.npz'}) has no rows for task(s) [1]; train needs rows for every task "
        "(each task has a criterion)")
    files = two_task_files(tmp_path)
    files["data_files"]["val"] = write_csv(tmp_path / "v.csv", ["task", "x0", "y0"], [[0, 0.1, 0.2]])
    assert error(**files) == (f"data_files['val'] ({tmp_path / 'v.csv'}) has no rows for task(s) [1]; a given val "
                              "split needs rows for every task (leave it out for none)")


def test_function_keys_with_files_and_file_keys_with_function(tmp_path):
    cfg = two_task_files(tmp_path)
    assert error(**cfg, n_train=10, noise_scale=0.0, f_true="sine") == (
        "data config keys 'f_true', 'noise_scale', 'n_train' set but not used with data_source 'files' "
        "(only data_source 'function' reads them): remove them")
    assert make_data(**cfg, n_train=256, x_max_val=1.0).n_samples("train") == {0: 12, 1: 8}  # defaults are fine
    assert error(**cfg, data_source_callback=print) == (
        "data config key 'data_source_callback' set but not used with data_source 'files' (only data_source "
        "'custom' reads it): remove it")
    assert error(**cfg, normalize="z") == "data config key 'normalize' is 'z'; allowed: None, 'x', 'y', 'xy'"
    fn = dict(d_in=1, d_out=1, f_true="sine")
    assert error(**fn, data_files={"train": "a.npz"}, normalize="x") == (
        "data config keys 'data_files', 'normalize' set but not used with data_source 'function' "
        "(only data_source 'files' reads them): remove them")
    with pytest.raises(ConfigError, match="^data config key 'data_source' is 'files' but CreateData is the "
                                          r"'function' source; build the data with core_code\.create_data\.make_data"):
        CreateData(**fn, data_source="files")


# ------------------------------------------------------------ data sources
class TinySource:
    """A custom data object: two tasks, one row each per split."""

    d_in, d_out, all_tasks, seed = 1, 1, [0, 1], 0
    task_configs = {0: {}, 1: {}}

    def __init__(self, config: dict, bad: bool = False):
        self.config, self.bad = config, bad

    def create_data(self, split):
        ta = torch.tensor([1, 0] if self.bad else [0, 1])
        return {"x": torch.zeros(2, 1), "y": torch.ones(2, 1), "task_activity": ta}

    def n_samples(self, split):
        return {0: 1, 1: 1}


def test_custom_source_and_unknown_source():
    seen = []
    data = make_data(data_source="custom", data_source_callback=lambda c: seen.append(c) or TinySource(c), d_in=1)
    assert isinstance(data, TinySource) and seen[0]["d_in"] == 1 and seen[0]["data_source"] == "custom"
    assert error(data_source="custom") == ("data config key 'data_source_callback' must be a callable (data config) "
                                           "-> data object when data_source is 'custom', got None")
    assert error(data_source="custom", data_source_callback=lambda c: TinySource(c, bad=True)) == (
        "the object returned by data config key 'data_source_callback': create_data('train') task_activity must "
        "hold each task of [0, 1] as one contiguous block in task order, got blocks [1, 0]")
    assert error(data_source="custom", data_source_callback=lambda c: object()) == (
        "the object returned by data config key 'data_source_callback' lacks d_in, d_out, all_tasks, task_configs, "
        "seed, create_data, n_samples; a data object needs attributes d_in, d_out, all_tasks, task_configs, seed "
        "and methods create_data, n_samples (as CreateData)")
    assert error(data_source="file") == "data config key 'data_source' is 'file'; allowed: 'function', 'files', 'custom'"
    assert isinstance(make_data(d_in=1, d_out=1, f_true="sine", n_train=4), CreateData)


# ------------------------------------------------------------ fingerprints
def test_data_fingerprint(tmp_path):
    cfg = two_task_files(tmp_path)
    fp = data_fingerprint(cfg)
    paths = [cfg["data_files"]["train"]["task_0"], cfg["data_files"]["train"]["task_1"],
             cfg["data_files"]["val"], cfg["data_files"]["test"]]
    assert list(fp) == paths
    for p in paths:
        blob = Path(p).read_bytes()
        assert fp[p] == {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    write_csv(Path(cfg["data_files"]["val"]), ["task", "x0", "y0"], [[0, 0, 0], [1, 0, 1]])
    changed = data_fingerprint(cfg)
    assert changed[paths[2]] != fp[paths[2]] and changed[paths[0]] == fp[paths[0]]
    assert data_fingerprint({"d_in": 1, "f_true": "sine"}) == {}
    Path(paths[3]).unlink()
    with pytest.raises(ConfigError, match=r"^data config key data_files\['test'\]: file .* not found"):
        data_fingerprint(cfg)


# ------------------------------------------------------------------- plots
@pytest.mark.parametrize("d_in", [1, 2])
@pytest.mark.parametrize("true_function", [True, False])
def test_fit_figure_without_true_function(d_in, true_function):
    from experiments.logging.plots import fit_figure

    x = torch.linspace(-1, 1, 8).reshape(-1, 1).repeat(1, d_in)
    y = x[:, :1] * 2
    fig = fit_figure(0, 0, 3, (x, y), (x, y), y + 0.1, y if d_in > 1 else None, true_function=true_function)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    if d_in == 1:
        expected = ["true function" if true_function else "validation data", "prediction", "training data"]
        assert sorted(labels) == sorted(expected)
    else:
        val = "validation (true function)" if true_function else "validation data"
        train = "training data (noisy target)" if true_function else "training data"
        assert sorted(labels) == sorted([train, val, "identity (perfect fit)"])


# -------------------------------------------------------------- end to end
def test_manager_make_data_dispatches(tmp_path):
    from experiments.util import BasicManager

    cfg = two_task_files(tmp_path)
    m = BasicManager(cfg, {"architecture_key": "abcMLP", "width": 8, "depth": 2}, {})
    assert isinstance(m.make_data(cfg), FileData)


@pytest.mark.slow
def test_recipe_two_tasks_end_to_end_through_main(tmp_path, monkeypatch, capsys):
    import main as main_mod
    from experiments import EXPERIMENTS
    from experiments.util import BasicManager

    cfg = two_task_files(tmp_path)
    configs = types.ModuleType("myDataConfigs")
    configs.configs_data = {**cfg, "normalize": "y"}
    configs.configs_architecture = {"architecture_key": "abcMLP", "width": [8, 16], "depth": 2,
                                    "parametrization": "muP"}
    configs.configs_training = {"batch_size": 8, "learning_rate": 0.01, "regularization_alpha": 0}
    configs.configs_custom = {"seed": 5, "logging_epoch_interval": 1, "checkpoint_every_n_epochs": None}
    configs.configs_trainer = {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False}

    class Manager(BasicManager):
        experiment = "myData"

    monkeypatch.setitem(EXPERIMENTS, "myData", lambda: (Manager, configs))
    runs = tmp_path / "runs"
    base = ["--experiment", "myData", "--runs_dir", str(runs), "--wandb", "disabled"]
    assert main_mod.main([*base, "--experimentbatch_name", "T"]) == 0
    for i in (1, 2):
        point = runs / "T" / f"config{i}"
        assert json.loads((point / "summary.json").read_text())["status"] == "done"
        run_cfg = json.loads((point / "config.json").read_text())
        assert run_cfg["data"]["data_source"] == "files" and run_cfg["architecture"]["d_in"] == 1
        header = (point / "metrics.csv").read_text().splitlines()[0]
        assert "validation/loss_task_0" in header and "validation/loss_task_1" in header
        assert sorted(p.name for p in (point / "plots").glob("task*_epoch0001.png")) == [
            "task0_dim0_epoch0001.png", "task1_dim0_epoch0001.png"]
    assert main_mod.main([*base, "--collect", "T"]) == 0
    assert (runs / "T" / "summary.csv").exists()
    # a bad file is reported before any training, as a one-line grid error, exit code 2
    configs.configs_data = {**cfg, "data_files": {**cfg["data_files"], "val": str(tmp_path / "missing.csv")}}
    capsys.readouterr()
    assert main_mod.main([*base, "--experimentbatch_name", "U"]) == 2
    err = capsys.readouterr().err
    assert f"data config key data_files['val']: file {str(tmp_path / 'missing.csv')!r} not found" in err
    assert not (runs / "U").exists()
