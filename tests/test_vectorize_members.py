"""Members of a vectorized ensemble (``--vectorize``) written out as their own runs would be.

Contract (``experiments/vectorize/``):

- fit figures: every member gets the files its single run draws (``plots/task<t>_dim<d>_epoch<e>``
  and ``overview_epoch<e>``, PNG and PDF, at the same epochs, with the point's varying values
  in the titles); measured: the PNGs are byte-identical to the single run's;
- W&B: every member gets the single run's W&B run (project, group, tags, config; name and id
  from the TAG and point id) with the same history rows (keys, ``epoch``, step axis
  ``trainer/global_step``), values within relative 1e-5 (measured <= 2e-7), and the
  ``wandb sync`` hint; offline without a login (read back from the offline run's
  ``.wandb`` file, no network);
- a signal or Ctrl-C that stops an ensemble leaves each member ``checkpoints/interrupted.ckpt``
  at the last finished epoch, metrics.csv and baselines.json so far and status
  'interrupted' with the signal; the grid stops with ``Interrupted`` (128 + signal); a
  rerun resumes each member as a single run, which ends with the weights of an
  uninterrupted single run (max |w - w_ref| <= 1e-5 * max |w_ref| per tensor);
- ``max_time`` leaves each member a resumable ``interrupted.ckpt`` (status 'time_limit').

Tiny tinyTest points (width 8, one output, 80 training rows, 6 batches an epoch), CPU.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from experiments import load_experiment
from experiments.run_control import Interrupted
from experiments.run_state import RunDir

W_RTOL = 1e-5
L_RTOL = 1e-5
BATCHES = 6  # per epoch: task sizes 32 and 48 at batch 16 -> 6 + 10 rows, ceil(32 / 6) = 6 batches

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def tiny(tmp_path: Path, wandb_mode: str = "disabled", seeds=(0, 1), trainer=None, custom=None, cls=None,
         steps_per_chunk=1, training=None):
    """A tinyTest manager over ``seeds`` (the grid's only axis): sine data, one output, width 8.

    ``steps_per_chunk`` 1 by default: a stop can come after any batch of an epoch.
    """
    manager_cls, c = load_experiment("tinyTest")
    return (cls or manager_cls)(
        dict(c.configs_data, d_out=1, f_true="sine", n_train={"task_0": 32, "task_1": 48}, n_val=32, n_test=16),
        dict(c.configs_architecture, d_out=1, width=8),
        dict(c.configs_training, criterion="MSELoss", steps_per_chunk=steps_per_chunk, **(training or {})),
        dict(c.configs_trainer, **(trainer or {})),
        dict(c.configs_custom, seed=list(seeds), **(custom or {})),
        runs_dir=tmp_path / "runs", wandb_mode=wandb_mode)


def run(manager, tag: str, indices=(0, 1), vectorize: bool = False) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return manager.run(tag, list(indices), vectorize=vectorize)


def summary(tmp_path: Path, tag: str, index: int) -> dict:
    return json.loads((tmp_path / "runs" / tag / f"config{index}" / "summary.json").read_text())


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def worst_weight_error(mine: dict, ref: dict) -> float:
    """max over tensors of max |mine - ref| / max |ref| (asserted <= W_RTOL per tensor)."""
    assert set(mine) == set(ref)
    worst = 0.0
    for name, w in ref.items():
        err = float((mine[name] - w).abs().max() / w.abs().max().clamp_min(1e-12))
        assert err <= W_RTOL, (name, err)
        worst = max(worst, err)
    return worst


class StopAt(pl.Callback):
    """Sends ``signum`` to this process after batch ``batch`` (0-based) of epoch ``epoch``, once."""

    takes_chunks = True  # acts on any batch boundary (steps_per_chunk is 1 here anyway)

    def __init__(self, signum: int, epoch: int, batch: int):
        self.signum, self.epoch, self.batch = signum, epoch, batch
        self.fired = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not self.fired:
            self.fired = True
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def every_epoch(monkeypatch):
    """Ensembles keep their state at every epoch end (by default only while that costs at most
    ``SNAPSHOT_SHARE`` of the training time: these epochs last ~10 copies of the state)."""
    import experiments.vectorize.ensemble as ensemble

    monkeypatch.setattr(ensemble, "SNAPSHOT_SHARE", 1.0)


@pytest.fixture
def stop_ensemble(monkeypatch, every_epoch):
    """``stop_ensemble(signum, epoch, batch)``: ensembles get a ``StopAt`` callback (it fires once)."""
    import experiments.vectorize.grid as vectorize  # where run_vectorized looks train_group up

    real = vectorize.train_group

    def arm(signum: int, epoch: int, batch: int) -> None:
        stop = StopAt(signum, epoch, batch)

        def train_group(*args, callbacks=(), **kwargs):
            return real(*args, callbacks=[*callbacks, stop], **kwargs)

        monkeypatch.setattr(vectorize, "train_group", train_group)

    yield arm
    monkeypatch.setattr(vectorize, "train_group", real)


# ------------------------------------------------------------------- W&B files
def wandb_records(run_folder: Path):
    """The records of an offline run's ``.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = next(run_folder.glob("*.wandb")).read_bytes()
    assert raw[:4] == b":W&B"
    pos, block, part = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(part)
            yield record


def wandb_run(run_folder: Path) -> tuple[dict, list[dict]]:
    """(run record fields, history rows without W&B's own ``_`` keys; images as their ``_type``)."""
    run, rows = {}, []
    for r in wandb_records(run_folder):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = {"id": r.run.run_id, "project": r.run.project, "name": r.run.display_name,
                   "group": r.run.run_group, "tags": list(r.run.tags),
                   "config": sorted(i.key for i in r.run.config.update if not i.key.startswith("_"))}
        elif kind == "history":
            row = {}
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                if key.startswith("_"):
                    continue
                if key.startswith("plots/"):  # an image: plots/<name>/<field>
                    if key.endswith("/_type"):
                        row[key.rsplit("/", 1)[0]] = json.loads(item.value_json)
                    continue
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return run, rows


def offline_run(tmp_path: Path, run_id: str) -> Path:
    found = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(found) == 1, (run_id, sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*")))
    return found[0]


# ------------------------------------------------------------- figures and W&B
@pytest.mark.slow
def test_members_get_the_single_runs_figures_and_wandb_runs(tmp_path, wandb_env, capsys, monkeypatch):
    from experiments.logging import plots

    titles = []
    real_title = plots._title
    monkeypatch.setattr(plots, "_title", lambda head, epoch, suffix: titles.append(suffix) or
                        real_title(head, epoch, suffix))
    # steps_per_chunk 'auto' (the default): ensemble and single runs chunk alike (one step an epoch here)
    setting = dict(trainer={"max_epochs": 2}, custom={"logging_epoch_interval": 1}, steps_per_chunk="auto")
    m = tiny(tmp_path, "offline", **setting)
    assert run(m, "V", vectorize=True) == {1: "done", 2: "done"}
    out = capsys.readouterr().out
    assert "training as one ensemble" in out
    assert sorted(set(titles)) == ["seed=0", "seed=1"]  # the varying values in the members' titles
    assert run(tiny(tmp_path, "offline", **setting), "S") == {1: "done", 2: "done"}
    from PIL import Image

    expected = {f"{stem}_epoch{e:04d}.{ext}" for stem in ("task0_dim0", "task1_dim0", "overview")
                for e in (1, 2) for ext in ("png", "pdf")}
    for i in (1, 2):
        v, s = tmp_path / "runs" / "V" / f"config{i}", tmp_path / "runs" / "S" / f"config{i}"
        assert {p.name for p in (v / "plots").iterdir()} == {p.name for p in (s / "plots").iterdir()} == expected
        for png in (s / "plots").glob("*.png"):
            mine = np.asarray(Image.open(v / "plots" / png.name).convert("RGB"))
            ref = np.asarray(Image.open(png).convert("RGB"))
            assert mine.shape == ref.shape
            assert float((mine != ref).any(axis=2).mean()) <= 1e-3, png.name  # measured: 0 (the same bytes)
        sv, ss = summary(tmp_path, "V", i), summary(tmp_path, "S", i)
        assert sv["vectorized"] is True and sv["id"] == ss["id"]
        assert sv["steps_per_chunk"] == ss["steps_per_chunk"] == BATCHES  # one chunk an epoch
        assert sv["host"] == ss["host"] and sv["heartbeat"] and sv["epochs_done"] == 2  # heartbeats, as a single run
        # W&B: the same run (but for the TAG in name and id) and the same rows
        (run_v, rows_v), (run_s, rows_s) = (wandb_run(offline_run(tmp_path, f"{tag}-{ss['id']}")) for tag in "VS")
        assert run_v["name"] == f"V_config{i}" and run_s["name"] == f"S_config{i}"
        assert {k: v for k, v in run_v.items() if k not in ("id", "name", "tags")} == \
            {k: v for k, v in run_s.items() if k not in ("id", "name", "tags")}
        assert run_v["project"] == "logging_tinyTest" and run_v["group"] == "abcMLP"
        assert run_v["tags"] == ["tinyTest", "V", "abcMLP"] and run_s["tags"] == ["tinyTest", "S", "abcMLP"]
        # baselines; per epoch validation, training, figures; test (epoch = epochs trained)
        # (one Lightning step an epoch: validation runs before the epoch's step is counted)
        assert [(r.get("epoch"), r["trainer/global_step"]) for r in rows_s] == \
            [(None, 0), (0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (1, 2), (2, 2)]
        assert len(rows_v) == len(rows_s)
        for mine, ref in zip(rows_v, rows_s):
            assert set(mine) == set(ref)
            for key, value in ref.items():
                if isinstance(value, float):
                    assert math.isclose(mine[key], value, rel_tol=L_RTOL), (i, key, mine[key], value)
                else:
                    assert mine[key] == value, (i, key)
        folder = offline_run(tmp_path, "V-" + ss["id"])
        assert f"[V] config {i}: W&B offline run in {folder}; upload it with: wandb sync {folder}" in out


def test_a_diverged_member_stops_its_figures_the_others_get_theirs(tmp_path):
    """SGD at learning rate 1e6 diverges in the first epoch: that member is recorded 'diverged'
    (as its single run), keeps no checkpoint and draws no figures (its single run would draw a
    non-finite model); the other member is done, with its last epoch's figures."""
    m = tiny(tmp_path, seeds=(0,), trainer={"max_epochs": 2}, training={"update_rule": "SGD",
                                                                         "learning_rate": [0.05, 1e6]})
    assert run(m, "V", vectorize=True) == {1: "done", 2: "diverged"}
    ok, bad = (tmp_path / "runs" / "V" / f"config{i}" for i in (1, 2))
    assert sorted(p.name for p in (ok / "plots").glob("*.png")) == \
        ["overview_epoch0002.png", "task0_dim0_epoch0002.png", "task1_dim0_epoch0002.png"]
    assert not (bad / "plots").exists() and not (bad / "checkpoints").exists()
    s = summary(tmp_path, "V", 2)
    assert s["diverged"]["epoch"] == 0 and s["epochs"] == 1 and "non-finite loss" in s["stop"]
    assert [r["epoch"] for r in csv_rows(bad / "metrics.csv")] == ["0"]
    assert (ok / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------------- stops
@pytest.mark.slow
def test_signal_stops_the_ensemble_members_resume_to_the_single_runs_weights(tmp_path, stop_ensemble, capsys):
    """SIGTERM in the third epoch (after its third batch): checkpoints at the end of the second."""
    m = tiny(tmp_path, trainer={"max_epochs": 4})
    stop_ensemble(signal.SIGTERM, epoch=2, batch=2)
    with pytest.raises(Interrupted) as stop:
        run(m, "V", vectorize=True)
    assert stop.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    err = capsys.readouterr().err
    run_dir = RunDir(tmp_path / "runs", "V")
    for i in (1, 2):
        pdir = run_dir.point_dir(i)
        s = summary(tmp_path, "V", i)
        ckpt = pdir / "checkpoints" / "interrupted.ckpt"
        assert s["status"] == "interrupted" and s["signal"] == "SIGTERM" and s["error"] == "stopped by SIGTERM"
        assert s["checkpoint"] == str(ckpt) and s["vectorized"] is True
        assert sorted(p.name for p in (pdir / "checkpoints").iterdir()) == ["interrupted.ckpt"]
        assert f"config {i}: interrupted by SIGTERM; checkpoint {ckpt}" in err
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert (ck["epoch"], ck["global_step"]) == (1, 2 * BATCHES)  # the end of the second epoch
        assert ck["hyper_parameters"]["id"] == s["id"] and ck["DataModule"]["seed"] >= 0
        assert [h["epoch"] for h in ck["callbacks"]["LoggingCallback"]["history"]] == [0, 1]
        assert [r["epoch"] for r in csv_rows(pdir / "metrics.csv")] == ["0", "1"]
        assert (pdir / "baselines.json").is_file() and not (pdir / "plots").exists()  # tinyTest plots at epoch 3
    assert not (tmp_path / "wandb").exists()  # W&B disabled: no run at all
    # the rerun resumes each member through the ordinary path, as a single run
    assert run(tiny(tmp_path, trainer={"max_epochs": 4}), "V", vectorize=True) == {1: "done", 2: "done"}
    assert run(tiny(tmp_path, trainer={"max_epochs": 4}), "S") == {1: "done", 2: "done"}
    worst = 0.0
    for i in (1, 2):
        s = summary(tmp_path, "V", i)
        assert s["resumed_from"].endswith("interrupted.ckpt") and s["epochs"] == 4 and s["global_step"] == 4 * BATCHES
        v, ref = run_dir.point_dir(i), RunDir(tmp_path / "runs", "S").point_dir(i)
        worst = max(worst, worst_weight_error(weights(v / "checkpoints" / "last.ckpt"),
                                              weights(ref / "checkpoints" / "last.ckpt")))
        rows, ref_rows = csv_rows(v / "metrics.csv"), csv_rows(ref / "metrics.csv")
        assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"] and set(rows[0]) == set(ref_rows[0])
        for mine, r in zip(rows, ref_rows):
            for key in r:
                assert math.isclose(float(mine[key]), float(r[key]), rel_tol=L_RTOL, abs_tol=1e-7), (i, key)
        for key, value in summary(tmp_path, "S", i)["final"].items():
            assert math.isclose(s["final"][key], value, rel_tol=L_RTOL, abs_tol=1e-7), (i, key)
        assert sorted(p.name for p in (v / "plots").glob("*.png")) == \
            sorted(p.name for p in (ref / "plots").glob("*.png"))
    print(f"worst relative weight error after an interrupted ensemble: {worst:.2e}")


@pytest.mark.slow
@pytest.mark.parametrize("signum,code,epoch", [(signal.SIGINT, 130, 1), (signal.SIGUSR1, 138, 0)])
def test_ctrl_c_and_sigusr1_stop_the_ensemble(tmp_path, stop_ensemble, capsys, signum, code, epoch):
    """SIGINT (Ctrl-C) in the second epoch: checkpoints after the first; SIGUSR1 in the first:
    no checkpoint, and the rerun trains the points in an ensemble again."""
    name = signal.Signals(signum).name
    m = tiny(tmp_path, seeds=(0, 1, 2), trainer={"max_epochs": 2})
    stop_ensemble(signum, epoch=epoch, batch=1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as stop:
        run(m, "V", [0, 1], vectorize=True)
    assert stop.value.exit_code == code and signal.getsignal(signal.SIGINT) is before
    err = capsys.readouterr().err
    assert "not started" not in err  # nothing was left of this grid's selection
    for i in (1, 2):
        s = summary(tmp_path, "V", i)
        assert s["status"] == "interrupted" and s["signal"] == name
        ckpt = tmp_path / "runs" / "V" / f"config{i}" / "checkpoints" / "interrupted.ckpt"
        if epoch == 0:
            assert s["checkpoint"] is None and "no checkpoint" in s["error"] and not ckpt.exists()
            assert not (tmp_path / "runs" / "V" / f"config{i}" / "metrics.csv").exists()
        else:
            assert s["checkpoint"] == str(ckpt)
            assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == BATCHES
    assert not (tmp_path / "runs" / "V" / "config3").exists()
    # the rerun: with a checkpoint, one by one through the ordinary path; without, as an ensemble again
    assert run(tiny(tmp_path, seeds=(0, 1, 2), trainer={"max_epochs": 2}), "V", [0, 1], vectorize=True) == \
        {1: "done", 2: "done"}
    out = capsys.readouterr().out
    assert ("training as one ensemble" in out) == (epoch == 0)
    assert all(summary(tmp_path, "V", i)["epochs"] == 2 for i in (1, 2))


@pytest.mark.slow
def test_time_limit_leaves_each_member_a_resumable_checkpoint(tmp_path, capsys):
    no_plots = {"logging_epoch_interval": 100000}  # only the last epoch's figures
    m = tiny(tmp_path, trainer={"max_epochs": 100000, "max_time": "00:00:00:01"}, custom=no_plots)
    assert run(m, "V", vectorize=True) == {1: "time_limit", 2: "time_limit"}
    reached = []
    for i in (1, 2):
        s = summary(tmp_path, "V", i)
        ckpt = tmp_path / "runs" / "V" / f"config{i}" / "checkpoints" / "interrupted.ckpt"
        assert s["status"] == "time_limit" and "max_time" in s["stop"] and s["checkpoint"] == str(ckpt)
        assert ckpt.is_file() and s["epochs"] >= 1
        reached.append(s["epochs"])
    assert reached[0] == reached[1]
    target = reached[0] + 2
    assert run(tiny(tmp_path, trainer={"max_epochs": target}, custom=no_plots), "V", vectorize=True) == \
        {1: "done", 2: "done"}
    for i in (1, 2):
        s = summary(tmp_path, "V", i)
        assert s["resumed_from"].endswith("interrupted.ckpt") and s["epochs"] == target
        rows = csv_rows(tmp_path / "runs" / "V" / f"config{i}" / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(target))


# ------------------------------------------------------- train_group, in-process
class Raise(pl.Callback):
    """Raises ``Interrupted(SIGTERM)`` (what a signal raises) after batch ``batch`` of epoch ``epoch``."""

    takes_chunks = True

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Interrupted(signal.SIGTERM)


def test_train_group_hands_out_epoch_boundary_checkpoints_that_resume_exactly(tmp_path, every_epoch):
    """Adam members stopped mid-epoch: each resumes from the last epoch end to the straight run's weights."""
    from core_code.create_data import CreateData
    from core_code.create_model import create_model, resolve_architecture
    from core_code.lightning_multitask import LightningMultitask
    from core_code.util.default_config import init_config_data, init_config_training
    from core_code.util.lightning import DataModule
    from experiments.logging import LoggingCallback
    from experiments.vectorize import train_group
    from tests.helpers import QUIET_TRAINER

    class Builder:
        def make_data(self, config_data):
            return CreateData(**config_data)

        def make_model(self, config_architecture, data):
            return create_model(**config_architecture)

    def point(seed, lr):
        data = init_config_data(d_in=1, d_out=1, f_true="sine", n_train={"task_0": 40, "task_1": 24}, n_val=32,
                                n_test=16, x_max_train={"task_0": 0, "task_1": 1})
        arch = resolve_architecture(architecture_key="abcMLP", d_in=1, d_out=1, width=16, depth=3,
                                    parametrization="muP")
        training = init_config_training(batch_size=16, update_rule="Adam", learning_rate=lr, steps_per_chunk=1)
        return {"data": data, "architecture": arch, "training": training, "custom": {"seed": seed, "workers": True}}

    def single(cfg, epochs, ckpt_path=None):
        pl.seed_everything(cfg["custom"]["seed"], workers=True, verbose=False)
        data = CreateData(**cfg["data"])
        lm = LightningMultitask(create_model(**cfg["architecture"]), **cfg["training"])
        cb = LoggingCallback(None, plot=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(**{**QUIET_TRAINER, "max_epochs": epochs, "callbacks": [cb]})
            trainer.fit(lm, datamodule=DataModule(data, **cfg["training"]), ckpt_path=ckpt_path)
        return lm, cb, trainer

    cfgs = [point(21, 0.01), point(22, 0.003)]
    got = []
    with warnings.catch_warnings(), pytest.raises(Interrupted):
        warnings.simplefilter("ignore")
        train_group(Builder(), cfgs, {**QUIET_TRAINER, "max_epochs": 4}, hyper_parameters=[{"id": "a"}, {"id": "b"}],
                    callbacks=[Raise(epoch=2, batch=1)], on_interrupt=lambda results, stop: got.append((results, stop)))
    (results, stop), = got
    assert isinstance(stop, Interrupted) and [r.status for r in results] == ["interrupted", "interrupted"]
    for r, cfg in zip(results, cfgs):
        assert r.epochs == 2 and r.global_step == 2 * 4 and [h["epoch"] for h in r.history] == [0, 1]
        assert r.checkpoint["epoch"] == 1 and r.checkpoint["hyper_parameters"]["id"] in ("a", "b")
        assert [step for step, _ in r.log_rows] == [0, 3, 4, 7, 8]  # baselines; per epoch validation, training
        path = r.save_checkpoint(tmp_path / f"{r.index}.ckpt")
        resumed, cb, trainer = single(cfg, 4, ckpt_path=str(path))
        straight, ref_cb, _ = single(cfg, 4)
        assert trainer.global_step == 4 * 4 and [h["epoch"] for h in cb.history] == [0, 1, 2, 3]
        worst_weight_error(resumed.state_dict(), straight.state_dict())
        for mine, ref in zip(cb.history, ref_cb.history):
            for key, value in ref.items():
                assert math.isclose(mine[key], value, rel_tol=L_RTOL, abs_tol=1e-7), key
