"""experiments.logging: LoggingCallback (epoch losses, CSV, plots, divergence), metrics CSV, W&B helpers."""

import csv
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from core_code.lightning_multitask import LightningMultitask
from core_code.util.lightning import DataModule
from experiments.logging import (
    LoggingCallback,
    finish_wandb,
    make_wandb_logger,
    resolve_wandb_mode,
)
from experiments.run_state import jsonable

QUIET = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False)


class SineData:
    """Stand-in for CreateData: task t's targets are (t+1) * sin(sum x) and cos(sum x)."""

    def __init__(self, n_train, n_val=None, d_in=1, d_out=2):
        self.n = {"train": n_train, "val": n_val or n_train, "test": {t: 0 for t in n_train}}
        self.all_tasks = sorted(n_train)
        self.d_in, self.d_out = d_in, d_out

    def create_data(self, split):
        xs, ys, ts = [], [], []
        for t in self.all_tasks:
            k = self.n[split][t]
            x = torch.linspace(-1, 1, k).unsqueeze(1).repeat(1, self.d_in) * torch.linspace(1, 0.5, self.d_in)
            s = x.sum(1, keepdim=True)
            y = torch.cat([(t + 1) * torch.sin(3 * s), torch.cos(3 * s)], 1)[:, : self.d_out]
            xs.append(x), ys.append(y), ts.append(torch.full((k,), t, dtype=torch.int64))
        return {"x": torch.cat(xs), "y": torch.cat(ys), "task_activity": torch.cat(ts)}


def _linear(d_in=1, d_out=2):
    torch.manual_seed(0)
    return torch.nn.Linear(d_in, d_out)


def _csv_rows(path):
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        return next(reader), list(reader)


# ------------------------------------------------------------------ epoch losses
def test_epoch_loss_is_data_weighted_and_logged(tmp_path):
    # data_stochastic, no shuffle, batch 6 over {0: 5, 1: 7}: batches hold (5, 1) and (0, 6) rows;
    # validation in chunks of 4: (4, 0), (1, 3), (0, 4). lr 0 keeps the model fixed, so the
    # data-weighted epoch loss is the MSE over all of a task's rows.
    data = SineData({0: 5, 1: 7})
    model = _linear()
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=0.0, regularization_alpha=0,
                            batching_strategy="data_stochastic", batch_size=6, shuffle=False)
    dm = DataModule(data, eval_chunk_size=4, batching_strategy="data_stochastic", batch_size=6, shuffle=False)
    cb = LoggingCallback(tmp_path, plot=False)
    trainer = lm.fit(dm, callbacks=[cb], max_epochs=2, **QUIET)

    expected = {}
    with torch.no_grad():
        for split, prefix in (("train", "train"), ("val", "validation")):
            d = data.create_data(split)
            for t in (0, 1):
                m = d["task_activity"] == t
                expected[f"{prefix}/loss_task_{t}"] = torch.nn.functional.mse_loss(model(d["x"][m]), d["y"][m]).item()
        # the plain mean of task 1's two training-batch losses differs: the weighting matters
        d = data.create_data("train")
        naive = np.mean([torch.nn.functional.mse_loss(model(d["x"][a:b]), d["y"][a:b]).item()
                         for a, b in ((5, 6), (6, 12))])
    assert abs(naive - expected["train/loss_task_1"]) > 1e-2

    assert [r["epoch"] for r in cb.history] == [0, 1]
    for row in cb.history:
        assert set(row) == {"epoch", *expected}
        for k, v in expected.items():
            assert row[k] == pytest.approx(v, rel=1e-5)
    for k, v in expected.items():
        assert trainer.progress_bar_metrics[k] == pytest.approx(v, rel=1e-5)
        assert trainer.callback_metrics[k].item() == pytest.approx(v, rel=1e-5)
    assert cb.final_metrics() == {**cb.history[-1], **cb.baselines} and cb.diverged is None
    assert sorted(cb.baselines) == ["baseline/validation_loss_task_0", "baseline/validation_loss_task_1"]

    header, rows = _csv_rows(tmp_path / "metrics.csv")
    assert header == ["epoch", "train/loss_task_0", "train/loss_task_1",
                      "validation/loss_task_0", "validation/loss_task_1"]
    assert [r[0] for r in rows] == ["0", "1"]
    assert float(rows[1][4]) == pytest.approx(expected["validation/loss_task_1"], rel=1e-6)


def test_extra_metrics_reach_history_csv_and_progress_bar(tmp_path):
    class WithNorm(LoggingCallback):
        def extra_metrics(self, trainer, pl_module, split):
            return {"train/weight_norm": pl_module.model.weight.norm().item()} if split == "train" else {}

    lm = LightningMultitask(_linear(), learning_rate=0.01, batch_size=4)
    cb = WithNorm(tmp_path, plot=False)
    trainer = lm.fit(DataModule(SineData({0: 4, 1: 4}), batch_size=4), callbacks=[cb], max_epochs=1, **QUIET)
    norm = lm.model.weight.norm().item()
    assert cb.history[0]["train/weight_norm"] == pytest.approx(norm)
    assert trainer.progress_bar_metrics["train/weight_norm"] == pytest.approx(norm)
    assert _csv_rows(tmp_path / "metrics.csv")[0][3] == "train/weight_norm"


def test_resume_keeps_earlier_csv_rows_and_redoes_later_ones(tmp_path):
    def run(ckpt=None):
        lm = LightningMultitask(_linear(), learning_rate=0.01, batch_size=4)
        dm = DataModule(SineData({0: 4, 1: 8}), batch_size=4)
        cb = LoggingCallback(tmp_path, plot=False)
        ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1,
                                  save_on_train_epoch_end=True)
        lm.fit(dm, callbacks=[cb, ckpt_cb], ckpt_path=ckpt, max_epochs=5, **{**QUIET, "enable_checkpointing": True})
        return cb

    run()
    path = tmp_path / "metrics.csv"
    header, rows = _csv_rows(path)
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    # Mark the CSV: row 1 must survive as written, rows 3 and 4 must be redone.
    rows[1][1] = "123.0"
    rows[3][1] = rows[4][1] = "999.0"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)

    cb = run(ckpt=str(tmp_path / "ckpt" / "epoch=2.ckpt"))  # saved after epoch 2: resumes at epoch 3
    header2, rows2 = _csv_rows(path)
    assert header2 == header
    assert [r[0] for r in rows2] == ["0", "1", "2", "3", "4"]
    assert rows2[:3] == rows[:3] and rows2[1][1] == "123.0"
    assert "999.0" not in {rows2[3][1], rows2[4][1]}
    assert [r["epoch"] for r in cb.history] == [0, 1, 2, 3, 4] and cb.history[1]["train/loss_task_0"] == 123.0


def test_resume_at_epoch_3_drops_rows_from_epoch_3(tmp_path):
    class Trainer:  # the parts of pl.Trainer the resume hook reads
        current_epoch, is_global_zero = 3, True

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train/loss_task_0\n" + "".join(f"{e},{e / 10}\n" for e in range(5)))
    cb = LoggingCallback(tmp_path)
    cb.on_train_start(Trainer(), None)
    assert path.read_text() == "epoch,train/loss_task_0\n0,0.0\n1,0.1\n2,0.2\n"
    assert [r["epoch"] for r in cb.history] == [0, 1, 2]


# ------------------------------------------------------------------------ plots
@pytest.mark.parametrize("d_in", [1, 2])
def test_plots_per_task_and_active_dim_at_interval_and_last_epoch(tmp_path, d_in):
    lm = LightningMultitask(_linear(d_in), learning_rate=0.01, batch_size=8,
                            criterion={"task_0": "MSELoss", "task_1": ("dimred_MSELoss", [1])})
    dm = DataModule(SineData({0: 8, 1: 16}, d_in=d_in), batch_size=8)
    cb = LoggingCallback(tmp_path, logging_epoch_interval=2)
    lm.fit(dm, callbacks=[cb], max_epochs=3, **QUIET)
    # named by epochs trained (1-based): after epoch 2 (the interval) and 3 (the last)
    expected = {f"{kind}_epoch{e:04d}.{ext}" for e in (2, 3)
                for kind in ("task0_dim0", "task0_dim1", "task1_dim1", "overview") for ext in ("png", "pdf")}
    files = {p.name for p in (tmp_path / "plots").iterdir()}
    assert files == expected
    assert all((tmp_path / "plots" / f).stat().st_size > 1000 for f in files)


# ------------------------------------------------------------------- divergence
class NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 2)

    def forward(self, x):
        return self.lin(x) * float("nan")


def test_non_finite_loss_stops_and_names_task_and_epoch(tmp_path, caplog):
    models = {"task_0": _linear(), "task_1": NaNModel()}
    lm = LightningMultitask(models, learning_rate=0.01, batch_size=4)
    dm = DataModule(SineData({0: 4, 1: 4}), batch_size=4)
    cb = LoggingCallback(None)
    with caplog.at_level(logging.WARNING, logger="experiments.logging.callback"):
        trainer = lm.fit(dm, callbacks=[cb], max_epochs=5, default_root_dir=str(tmp_path), **QUIET)
    assert cb.diverged == {"task": 1, "epoch": 0, "split": "train"}
    assert trainer.current_epoch == 1 and len(cb.history) == 1
    assert math.isfinite(cb.history[0]["train/loss_task_0"]) and math.isnan(cb.history[0]["train/loss_task_1"])
    assert "loss of task 1 became nan at epoch 0; stopping" in caplog.text
    assert list(tmp_path.iterdir()) == []  # out_dir None: no files


# -------------------------------------------------------------------------- W&B
def test_wandb_modes(wandb_env, tmp_path, monkeypatch):
    assert resolve_wandb_mode(None) == "offline"
    assert make_wandb_logger("p", "n", "id", "g", [], {}, tmp_path, mode="disabled") is None
    with pytest.raises(ValueError, match="allowed: online, offline, disabled"):
        make_wandb_logger("p", "n", "id", "g", [], {}, tmp_path, mode="dryrun")
    with pytest.raises(ValueError, match="needs a login"):
        resolve_wandb_mode("online")
    # auto without a key: offline (the logger is built, no W&B run is started yet)
    logger = make_wandb_logger("p", "n", "id", "g", ["a"], {"f": len, "t": (1, 2)}, tmp_path, mode=None)
    assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["id"] == "id"
    assert logger._wandb_init["resume"] == "allow"
    netrc = wandb_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode(None) == "online"
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"
    finish_wandb()  # no run: a no-op


def test_jsonable_config():
    cfg = {"a": (1, 2), "f": len, "n": np.float32(0.5), "arr": np.arange(2), 3: None}
    out = jsonable(cfg)
    json.dumps(out)
    assert out["a"] == [1, 2] and out["n"] == 0.5 and out["arr"] == [0, 1] and out["3"] is None
    assert "len" in out["f"]


def test_wandb_offline_run_gets_metrics_and_plots(wandb_env, tmp_path):
    import wandb

    logger = make_wandb_logger("logging_test", "tag_config1", "tag-abc", "abcMLP", ["t"],
                               {"training": {"criterion": ("dimred_MSELoss", [0])}}, tmp_path / "runs", "offline")
    logged = []
    real = logger.log_metrics
    logger.log_metrics = lambda metrics, step=None: (logged.append(dict(metrics)), real(metrics, step))
    try:
        lm = LightningMultitask(_linear(), learning_rate=0.01, batch_size=4)
        dm = DataModule(SineData({0: 4, 1: 4}), batch_size=4)
        cb = LoggingCallback(tmp_path / "out", logging_epoch_interval=1)
        lm.fit(dm, callbacks=[cb], max_epochs=2, **{**QUIET, "logger": logger})
        assert wandb.run is not None and wandb.run.settings.mode == "offline"
    finally:
        finish_wandb()
    assert wandb.run is None
    keys = set().union(*logged)
    assert {"train/loss_task_0", "validation/loss_task_1", "epoch"} <= keys
    images = [m for m in logged if "plots/task_0_dim_0" in m]
    assert len(images) == 2 and isinstance(images[0]["plots/task_1_dim_1"], wandb.Image)
    assert isinstance(images[0]["plots/overview"], wandb.Image)
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert os.environ["WANDB_SILENT"] == "true"


# ------------------------------------------------------------- metrics CSV, API
def test_read_metrics_skips_a_torn_last_line(tmp_path):
    from experiments.logging import read_metrics

    path = tmp_path / "metrics.csv"
    # epoch 2's row was cut mid-write: its epoch is not an int; an empty cell is left out
    path.write_text("epoch,train/loss_task_0,validation/loss_task_0\n0,0.5,0.25\n1,0.4,\n2.")
    assert read_metrics(path) == [
        {"epoch": 0, "train/loss_task_0": 0.5, "validation/loss_task_0": 0.25},
        {"epoch": 1, "train/loss_task_0": 0.4},
    ]
    path.write_text("epoch,train/loss_task_0\n0,0.5\n1,nu")  # cut inside 'nan'
    assert read_metrics(path) == [{"epoch": 0, "train/loss_task_0": 0.5}]
    assert read_metrics(tmp_path / "missing.csv") == []


def test_metrics_csv_appends_and_rewrites_on_a_new_column(tmp_path):
    from experiments.logging.metrics import MetricsCSV

    out = MetricsCSV(tmp_path / "m.csv")
    history = [{"epoch": 0, "train/loss_task_0": 1.0}]
    out.write_row(history[0], history)
    history.append({"epoch": 1, "train/loss_task_0": 0.5})
    out.write_row(history[-1], history)
    assert (tmp_path / "m.csv").read_text() == "epoch,train/loss_task_0\n0,1.0\n1,0.5\n"
    history.append({"epoch": 2, "train/loss_task_0": 0.25, "extra/a": 3.0})
    out.write_row(history[-1], history)
    assert (tmp_path / "m.csv").read_text() == "epoch,extra/a,train/loss_task_0\n0,,1.0\n1,,0.5\n2,3.0,0.25\n"
    assert out.resume(2, []) == history[:2]
    assert (tmp_path / "m.csv").read_text() == "epoch,train/loss_task_0\n0,1.0\n1,0.5\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "m.csv"]  # no temp file left behind


def test_metric_names():
    from experiments.logging import metrics

    assert metrics.SPLITS == ("train", "val", "test") and tuple(metrics.SPLIT_PREFIX) == metrics.SPLITS
    assert [metrics.metric_name(s, 2) for s in metrics.SPLITS] == [
        "train/loss_task_2", "validation/loss_task_2", "test/loss_task_2"]
    assert metrics.metric_task("validation/loss_task_12", "val") == 12
    assert metrics.metric_task("train/loss_task_1", "val") is None
    assert metrics.metric_task("validation/loss_task_1x", "val") is None
    assert (metrics.final_column(3), metrics.best_column(3)) == ("final_val_loss_task_3", "best_val_loss_task_3")
    assert metrics.final_column_task("final_val_loss_task_3") == 3
    assert metrics.final_column_task("best_val_loss_task_3") is None
    assert metrics.in_domain_metric_name("val", 1) == "validation/loss_in_domain_task_1"
    assert metrics.in_domain_metric_task("validation/loss_in_domain_task_4", "val") == 4
    assert metrics.in_domain_metric_task("validation/loss_task_4", "val") is None
    assert (metrics.baseline_name(2), metrics.baseline_name(2, in_domain=True)) == (
        "baseline/validation_loss_task_2", "baseline/validation_loss_in_domain_task_2")
    assert (metrics.final_in_domain_column(1), metrics.best_in_domain_column(1)) == (
        "final_val_loss_in_domain_task_1", "best_val_loss_in_domain_task_1")
    assert (metrics.baseline_column(0), metrics.baseline_column(0, True)) == (
        "baseline_val_loss_task_0", "baseline_val_loss_in_domain_task_0")
    assert (metrics.ratio_column(0), metrics.ratio_column(0, True)) == (
        "final_over_baseline_task_0", "final_over_baseline_in_domain_task_0")


def test_package_exports_and_experiment_callbacks():
    import experiments.logging as lg
    from experiments.compositeSine.logging_callback import LoggingCallback as CompositeSineCallback
    from experiments.logging import callback, metrics, wandb_session
    from experiments.tinyTest.logging_callback import LoggingCallback as TinyTestCallback

    assert lg.__all__ == sorted(["LoggingCallback", "make_wandb_logger", "finish_wandb", "resolve_wandb_mode",
                                 "WANDB_MODES", "metric_name", "read_metrics", "SPLITS"])
    assert sorted(lg._EXPORTS) == lg.__all__ and set(lg.__all__) <= set(dir(lg))
    assert lg.LoggingCallback is callback.LoggingCallback is LoggingCallback
    assert CompositeSineCallback is TinyTestCallback is LoggingCallback
    assert lg.WANDB_MODES == ("online", "offline", "disabled") and lg.WANDB_MODES is wandb_session.WANDB_MODES
    assert (lg.make_wandb_logger, lg.finish_wandb, lg.resolve_wandb_mode) == (
        wandb_session.make_wandb_logger, wandb_session.finish_wandb, wandb_session.resolve_wandb_mode)
    assert (lg.metric_name, lg.read_metrics, lg.SPLITS) == (metrics.metric_name, metrics.read_metrics, metrics.SPLITS)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lg.nope  # noqa: B018


def test_wandb_modes_import_without_lightning_wandb_or_matplotlib():
    code = ("import sys; from experiments.logging import WANDB_MODES, resolve_wandb_mode; "
            "print(sorted(m for m in ('pytorch_lightning', 'wandb', 'matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------ in-domain loss and baselines
class BoxedSineData(SineData):
    """SineData with CreateData's ``task_configs``: task 0 trains on [-1, 0], task 1 on [-1, 1]."""

    def __init__(self, n_train, n_val=None, boxes=None):
        super().__init__(n_train, n_val)
        boxes = boxes or {0: (-1, 0), 1: (-1, 1)}
        self.task_configs = {t: {"x_min_train": lo, "x_max_train": hi} for t, (lo, hi) in boxes.items()}


def test_in_domain_loss_and_baselines_are_exact(tmp_path):
    # lr 0: the model stays fixed, so every epoch's loss is the criterion over the rows.
    # Validation in chunks of 3 over 9 + 9 rows: task 0's in-domain rows x <= 0 span two chunks.
    data = BoxedSineData({0: 6, 1: 8}, n_val={0: 9, 1: 9})
    model = _linear()
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=0.0, regularization_alpha=0, batch_size=4)
    dm = DataModule(data, eval_chunk_size=3, batch_size=4)
    cb = LoggingCallback(tmp_path, plot=False)
    lm.fit(dm, callbacks=[cb], max_epochs=2, **QUIET)

    mse = torch.nn.functional.mse_loss
    train, val = data.create_data("train"), data.create_data("val")
    expected = {}
    with torch.no_grad():
        for t in (0, 1):
            m = val["task_activity"] == t
            inside = m & (val["x"][:, 0] <= (0 if t == 0 else 1))
            expected[f"validation/loss_in_domain_task_{t}"] = mse(model(val["x"][inside]), val["y"][inside]).item()
            mean = train["y"][train["task_activity"] == t].double().mean(0, keepdim=True)
            for name, rows in ((f"baseline/validation_loss_task_{t}", m),
                               (f"baseline/validation_loss_in_domain_task_{t}", inside)):
                y = val["y"][rows].double()
                expected[name] = mse(mean.expand_as(y), y).item()
    assert int((val["x"][val["task_activity"] == 0, 0] <= 0).sum()) == 5  # x = -1, -0.75, ..., 0
    for row in cb.history:
        for t in (0, 1):
            name = f"validation/loss_in_domain_task_{t}"
            assert row[name] == pytest.approx(expected[name], rel=1e-6)
    # task 1's box holds all its rows: the in-domain loss is the full loss
    assert cb.history[-1]["validation/loss_in_domain_task_1"] == pytest.approx(
        cb.history[-1]["validation/loss_task_1"], rel=1e-6)
    baselines = {k: v for k, v in expected.items() if k.startswith("baseline/")}
    assert cb.baselines == pytest.approx(baselines, rel=1e-9)
    assert json.loads((tmp_path / "baselines.json").read_text()) == pytest.approx(baselines, rel=1e-9)
    assert {k: cb.final_metrics()[k] for k in baselines} == pytest.approx(baselines, rel=1e-9)
    header, _ = _csv_rows(tmp_path / "metrics.csv")
    assert header == ["epoch", "train/loss_task_0", "train/loss_task_1", "validation/loss_in_domain_task_0",
                      "validation/loss_in_domain_task_1", "validation/loss_task_0", "validation/loss_task_1"]
    # the in-domain rows are found once per fit: one cached entry per (batch, task)
    # (6 chunks of 3 rows, each inside one task's block), reused by the second epoch
    assert len(cb._in_rows) == 6
    # (rows, count): contiguous rows as a slice (a view), none as an empty index
    assert [cb._in_rows[("val", 0, k, 0, 0, 3)][1] for k in range(3)] == [3, 2, 0]
    assert [cb._in_rows[("val", 0, k, 0, 0, 3)][0] for k in range(2)] == [slice(0, 3), slice(0, 2)]


def test_no_training_box_no_in_domain_metric_but_baselines(tmp_path):
    lm = LightningMultitask(_linear(), learning_rate=0.0, batch_size=4)
    cb = LoggingCallback(tmp_path, plot=False)
    lm.fit(DataModule(SineData({0: 4, 1: 4}), batch_size=4), callbacks=[cb], max_epochs=1, **QUIET)
    assert not any("in_domain" in k for k in cb.history[0])
    assert sorted(cb.baselines) == ["baseline/validation_loss_task_0", "baseline/validation_loss_task_1"]


def test_training_box_per_dim_lists_and_scalars():
    from experiments.logging.callback import in_box, training_box

    class D:
        d_in = 2
        task_configs = {0: {"x_min_train": -1, "x_max_train": [0, 2]}, 1: {"x_min_train": 0}}

    assert training_box(D, 0) == ([-1.0, -1.0], [0.0, 2.0])
    assert training_box(D, 1) is None and training_box(D, 2) is None and training_box(object(), 0) is None
    x = torch.tensor([[-1.0, 2.0], [0.0, 2.5], [-0.5, -1.0], [0.1, 0.0]])
    assert in_box(x, training_box(D, 0)).tolist() == [True, False, True, False]


def test_in_domain_test_split(tmp_path):
    data = BoxedSineData({0: 4, 1: 4}, boxes={0: (-1, -0.5), 1: (0.5, 1)})
    data.n["test"] = {0: 5, 1: 5}
    model = _linear()
    lm = LightningMultitask(model, learning_rate=0.0, batch_size=4)
    dm = DataModule(data, batch_size=4)
    cb = LoggingCallback(tmp_path, plot=False)
    trainer = lm.fit(dm, callbacks=[cb], max_epochs=1, **QUIET)
    trainer.test(lm, datamodule=dm, verbose=False)
    test = data.create_data("test")
    with torch.no_grad():
        rows = (test["task_activity"] == 1) & (test["x"][:, 0] >= 0.5)  # x = 0.5, 1
        expected = torch.nn.functional.mse_loss(model(test["x"][rows]), test["y"][rows]).item()
    assert int(rows.sum()) == 2
    assert cb.test_metrics["test/loss_in_domain_task_1"] == pytest.approx(expected, rel=1e-6)


def test_epoch_loss_is_the_row_weighted_mean_of_the_steps():
    from experiments.logging.callback import _EpochLoss

    acc = _EpochLoss()
    for v, n in ((1.0, 1), (2.0, 3), (4.0, 4)):
        acc.add({"losses": {0: torch.tensor(v), 1: torch.tensor(10 * v)}, "n": {0: n, 1: 0 if v == 2.0 else 2}}, None)
    # task 0: (1*1 + 2*3 + 4*4) / 8; task 1: rows only in the 1st and 3rd step, (10 + 40) * 2 / 4;
    # task 2 never had rows: left out
    assert acc.compute([0, 1, 2], torch.device("cpu")) == {0: 23 / 8, 1: 25.0}
    assert _EpochLoss().compute([0, 1], torch.device("cpu")) == {}


def test_in_domain_rows_are_a_slice_when_contiguous_else_an_index():
    from core_code.util.batching import row_selection

    rows, n = row_selection(torch.tensor([False, True, True, False]))
    assert (rows, n) == (slice(1, 3), 2)
    rows, n = row_selection(torch.tensor([True, False, True]))
    assert n == 2 and rows.tolist() == [0, 2]
    x = torch.arange(3.0)
    assert x[rows].tolist() == [0.0, 2.0]
    rows, n = row_selection(torch.zeros(3, dtype=torch.bool))
    assert n == 0 and rows.numel() == 0
