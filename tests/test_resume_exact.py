"""Exact mid-epoch resume: a run stopped inside an epoch and resumed from its checkpoint
trains the same batches, reaches the same weights and writes the same metrics.csv rows as
the run that was never stopped.

Two stops are checked: a checkpoint written in ``on_train_batch_end`` (where Lightning's
``ModelCheckpoint(every_n_train_steps)`` and our SIGUSR1 stop act: the batch is trained but
not yet counted as completed) and SIGTERM (Lightning finishes the batch, raises
``SIGTERMException`` and the checkpoint is written in ``on_exception``, as
``RunStateCallback`` does). The fast tests drive ``LightningMultitask`` + ``DataModule``
directly; the slow ones stop a tinyTest grid point with a real SIGTERM and rerun it.
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from core_code.lightning_multitask import LightningMultitask
from core_code.util.batching import ChunkLoader, make_train_loader
from core_code.util.lightning import DataModule
from experiments.logging import LoggingCallback
from tests.helpers import QUIET_TRAINER, FakeData, tiny_model

#: rel tolerance of weights and metrics (float32 noise; measured: 0, the runs are bit-identical)
REL = 1e-6
#: 120 + 280 rows, batch 8: 60 batches an epoch (deterministic, 2 + 6 rows each) or 50
#: (stochastic); 'auto' chunks them 32 at a time: two chunks an epoch.
N_PER_TASK = {0: 120, 1: 280}
BATCH_SIZE = 8
EPOCHS = 3
STOP_EPOCH = 1


class _Stop(Exception):
    """Ends the interrupted fit (after its checkpoint is written)."""


class StopAt(pl.Callback):
    """Checkpoint ``path`` at Lightning step ``batch_idx`` (a batch or a chunk) of ``epoch`` and stop.

    ``how='batch_end'``: written in that step's ``on_train_batch_end``, then ``_Stop``
    (Lightning counts the step as done: it trained). ``how='sigterm'``: SIGTERM to this
    process there; Lightning finishes the step, raises ``SIGTERMException`` and
    ``on_exception`` writes the checkpoint. ``how='next_batch_start'``: written in the
    NEXT step's ``on_train_batch_start`` (that batch is fetched, not trained: the restored
    loop must fetch it again), then ``_Stop``.
    ``how='validation_end'``: written in ``on_validation_end`` of ``epoch`` (where
    ``ModelCheckpoint`` saves by default: the epoch's steps and validation done, its
    ``on_train_epoch_end`` not yet), then ``_Stop``.
    ``takes_chunks``: acting once per chunk is what is tested, so chunks stay on.
    """

    takes_chunks = True

    def __init__(self, epoch: int, batch_idx: int, how: str, path: Path):
        self.epoch, self.batch_idx, self.how, self.path = epoch, batch_idx, how, path
        self.fired = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.fired and self.how == "next_batch_start":
            trainer.save_checkpoint(self.path)
            raise _Stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch != self.epoch or batch_idx != self.batch_idx:
            return
        self.fired = True
        if self.how == "batch_end":
            trainer.save_checkpoint(self.path)
            raise _Stop
        if self.how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_end(self, trainer, pl_module):
        if self.how == "validation_end" and trainer.current_epoch == self.epoch:
            self.fired = True
            trainer.save_checkpoint(self.path)
            raise _Stop

    def on_exception(self, trainer, pl_module, exception):
        if self.how == "sigterm" and isinstance(exception, SystemExit):
            trainer.save_checkpoint(self.path)


def _fit(out_dir: Path, strategy: str, steps, per_task: bool, stop=None, ckpt_path=None, training=None):
    pl.seed_everything(0, verbose=False)
    model = tiny_model()
    lr = {"task_0": 0.01, "task_1": 0.02} if per_task else 0.01
    module = LightningMultitask(model, update_rule="Adam", learning_rate=lr, regularization_alpha=0,
                                **(training or {}))
    data = DataModule(FakeData(N_PER_TASK, x_scale=2 ** -8), batch_size=BATCH_SIZE, batching_strategy=strategy,
                      steps_per_chunk=steps)
    log_cb = LoggingCallback(out_dir, plot=False)
    callbacks = [log_cb] + ([stop] if stop is not None else [])
    trainer = module.fit(data, callbacks=callbacks, ckpt_path=ckpt_path, max_epochs=EPOCHS, **QUIET_TRAINER)
    return model, trainer, data


def _rel_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """max |a - b| / max |b| over all parameters."""
    diff = max(float((x - y).detach().abs().max()) for x, y in zip(a.parameters(), b.parameters()))
    scale = max(float(y.detach().abs().max()) for y in b.parameters())
    return diff / scale


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]


def _assert_same_rows(rows: list[dict], ref: list[dict]) -> float:
    """Same epochs, same columns, every value within REL; returns the largest rel difference."""
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref]
    worst = 0.0
    for r, q in zip(rows, ref):
        assert set(r) == set(q), (sorted(r), sorted(q))
        for k, v in q.items():
            rel = abs(r[k] - v) / max(abs(v), 1e-30)
            worst = max(worst, rel)
            assert rel <= REL, f"epoch {int(q['epoch'])} {k}: {r[k]!r} vs uninterrupted {v!r}"
    return worst


_REFERENCE: dict = {}


def _reference(tmp_path_factory, strategy: str, steps, per_task: bool, training=None):
    """The uninterrupted run of the same settings (one per settings, shared by the stops)."""
    key = (strategy, steps, per_task, repr(training))
    if key not in _REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        model, trainer, _ = _fit(out, strategy, steps, per_task, training=training)
        _REFERENCE[key] = (model, trainer.global_step, _rows(out / "metrics.csv"))
    return _REFERENCE[key]


def _stop_and_resume(tmp_path, strategy, steps, per_task, stop_idx, how, training=None):
    """Stop at (STOP_EPOCH, stop_idx), check the checkpoint is from inside the run, resume to the end."""
    ckpt = tmp_path / "interrupted.ckpt"
    stop = StopAt(STOP_EPOCH, stop_idx, how, ckpt)
    with pytest.raises((_Stop, SystemExit)):
        _fit(tmp_path, strategy, steps, per_task, stop=stop, training=training)
    assert stop.fired and ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert STOP_EPOCH <= state["epoch"] <= STOP_EPOCH + 1 and 0 < state["global_step"]
    return _fit(tmp_path, strategy, steps, per_task, ckpt_path=str(ckpt), training=training)


#: (strategy, steps_per_chunk, per-task optimizers, Lightning step of epoch 1 to stop at)
SETTINGS = [
    ("data_deterministic", 1, False, 7),
    ("data_deterministic", 7, True, 3),
    ("data_deterministic", "auto", False, 0),
    ("data_stochastic", 1, True, 11),
    ("data_stochastic", 4, False, 5),
    ("data_stochastic", "auto", True, 0),
]


@pytest.mark.parametrize("how", ["batch_end", "sigterm", "next_batch_start"])
@pytest.mark.parametrize("strategy,steps,per_task,stop_idx", SETTINGS)
def test_mid_epoch_resume_trains_like_the_uninterrupted_run(tmp_path, tmp_path_factory, strategy, steps,
                                                            per_task, stop_idx, how):
    ref_model, ref_steps, ref_rows = _reference(tmp_path_factory, strategy, steps, per_task)
    model, trainer, data = _stop_and_resume(tmp_path, strategy, steps, per_task, stop_idx, how)
    if steps == "auto":
        assert data.chunk_steps == 32  # the checkpoint's batch counter counted chunks
    assert trainer.global_step == ref_steps
    assert _rel_weight_diff(model, ref_model) <= REL
    _assert_same_rows(_rows(tmp_path / "metrics.csv"), ref_rows)


@pytest.mark.parametrize("how", ["batch_end", "sigterm", "next_batch_start", "validation_end"])
@pytest.mark.parametrize("strategy,steps,per_task,last_idx", [
    ("data_deterministic", 1, False, 59),
    ("data_stochastic", "auto", True, 1),
])
def test_a_stop_at_the_last_step_of_an_epoch_resumes_exactly(tmp_path, tmp_path_factory, strategy, steps, per_task,
                                                             last_idx, how):
    """Same weights for every stop; same rows except after a checkpoint from the last step's
    ``on_train_batch_end``: Lightning then resumes with the next epoch and calls neither that
    epoch's validation nor its ``on_train_epoch_end``, so its row is never written. (After
    ``on_validation_end`` the resumed fit writes the row from the checkpoint's epoch state.)"""
    ref_model, ref_steps, ref_rows = _reference(tmp_path_factory, strategy, steps, per_task)
    model, trainer, _ = _stop_and_resume(tmp_path, strategy, steps, per_task, last_idx, how)
    assert trainer.global_step == ref_steps
    assert _rel_weight_diff(model, ref_model) <= REL
    rows = _rows(tmp_path / "metrics.csv")
    if how == "batch_end":  # Lightning's restart skips the epoch end of STOP_EPOCH
        assert [r["epoch"] for r in rows] == [e for e in range(EPOCHS) if e != STOP_EPOCH]
        ref_rows = [r for r in ref_rows if r["epoch"] != STOP_EPOCH]
    _assert_same_rows(rows, ref_rows)


@pytest.mark.parametrize("training", [{"mtl_method": ("dwa", {"temperature": 2.0})},
                                      {"mtl_method": "pcgrad", "diagnostics_every_n_steps": 2}],
                         ids=["dwa", "diagnostics"])
@pytest.mark.parametrize("strategy,steps,how,stop_idx", [
    ("data_deterministic", 1, "batch_end", 7),
    ("data_stochastic", 4, "sigterm", 5),
    ("data_deterministic", "auto", "validation_end", 0),
    ("data_deterministic", 1, "batch_end", 59),
])
def test_epoch_state_of_mtl_methods_and_diagnostics_resumes(tmp_path, tmp_path_factory, training, strategy, steps,
                                                             how, stop_idx):
    """What a method or the diagnostics gather over an epoch travels in the checkpoint: DWA's
    running task losses (its weights for the next epochs) and the ``diagnostics/*`` records
    (that epoch's row). Also for a checkpoint taken before that epoch's end ran
    (ModelCheckpoint's default place, ``on_validation_end``) or at its last step (Lightning
    then never calls that epoch's end: the next epoch's first step closes or drops it)."""
    ref_model, ref_steps, ref_rows = _reference(tmp_path_factory, strategy, steps, False, training)
    model, trainer, _ = _stop_and_resume(tmp_path, strategy, steps, False, stop_idx, how, training)
    assert trainer.global_step == ref_steps
    assert _rel_weight_diff(model, ref_model) <= REL
    method = trainer.lightning_module.mtl_method
    if method.name == "dwa":
        assert not bool(method.history.isnan().any()) and method.history.shape == (2, 2)  # epochs 1, 2 closed
    else:
        assert any(k.startswith("diagnostics/cos_task_0_task_1") for k in ref_rows[-1])
    rows = _rows(tmp_path / "metrics.csv")
    if stop_idx == 59:  # Lightning's restart skips the epoch end of STOP_EPOCH: no row
        ref_rows = [r for r in ref_rows if r["epoch"] != STOP_EPOCH]
    _assert_same_rows(rows, ref_rows)


@pytest.mark.parametrize("strategy", ["data_deterministic", "data_stochastic"])
@pytest.mark.parametrize("steps", [1, 3])
def test_a_resumed_loader_continues_its_epoch(strategy, steps):
    """``resume_from``: the next iteration is epoch e from Lightning step d on; then epochs go on."""
    data = FakeData({0: 10, 1: 23}).create_data("train")
    cfg = {"batching_strategy": strategy, "batch_size": 4, "shuffle": True}

    def loader():
        inner = make_train_loader(data, cfg, seed=5)
        return inner if steps == 1 else ChunkLoader(inner, steps)

    full = loader()
    epochs = [[b["x"] for b in full] for _ in range(3)]
    resumed = loader()
    resumed.resume_from(lambda: (1, 2))
    assert [torch.equal(a, b) for a, b in zip([b["x"] for b in resumed], epochs[1][2:])] == [True] * (
        len(epochs[1]) - 2)
    assert all(torch.equal(a, b) for a, b in zip([b["x"] for b in resumed], epochs[2]))
    assert len(resumed) == len(full)  # the length of an epoch, as Lightning counts it


def test_logging_callback_keeps_the_interrupted_epochs_partial_sums(tmp_path):
    """The unfinished epoch's train-loss sums (and validation losses) travel in the checkpoint
    state and are taken up by a fit that continues that epoch; older states still load."""
    from types import SimpleNamespace

    cb = LoggingCallback(tmp_path, plot=False)
    cb._epoch = 1
    cb._acc["train"].add({"losses": {0: torch.tensor(2.0), 1: torch.tensor(4.0)}, "n": {0: 3, 1: 1}}, None)
    cb._acc["train"].add({"losses": {0: torch.tensor(1.0)}, "n": {0: 1}}, None)
    state = cb.state_dict()
    assert state["epoch_state"]["epoch"] == 1
    module = SimpleNamespace(device=torch.device("cpu"))
    fresh = LoggingCallback(tmp_path, plot=False)
    fresh.load_state_dict(state)
    fresh._resume_epoch(SimpleNamespace(current_epoch=1), module)  # resumed inside epoch 1
    assert fresh._acc["train"].compute([0, 1], torch.device("cpu")) == {0: 1.75, 1: 4.0}
    later = LoggingCallback(tmp_path, plot=False)
    later.load_state_dict(state)
    later._resume_epoch(SimpleNamespace(current_epoch=2), module)  # an epoch-boundary resume: not this epoch
    assert later._acc["train"].compute([0], torch.device("cpu")) == {}
    old = LoggingCallback(tmp_path, plot=False)
    old.load_state_dict({"history": [{"epoch": 0, "train/loss_task_0": 1.0}], "diverged": None})  # no epoch_state
    old._resume_epoch(SimpleNamespace(current_epoch=1), module)
    assert old.history == [{"epoch": 0, "train/loss_task_0": 1.0}]
    assert old._acc["train"].compute([0], torch.device("cpu")) == {}
    cb._acc["train"].reset()
    assert "epoch_state" not in cb.state_dict()  # at an epoch boundary: nothing unfinished


# =========================================================== a grid point, end to end
def _tiny_manager(runs: Path, cls, training=None, trainer=None, custom=None):
    from experiments import load_experiment

    _, configs = load_experiment("tinyTest")
    return cls(dict(configs.configs_data), dict(configs.configs_architecture),
               dict(configs.configs_training, **(training or {})), dict(configs.configs_trainer, **(trainer or {})),
               dict(configs.configs_custom, **(custom or {})), runs_dir=runs, wandb_mode="disabled")


class SigtermAt(pl.Callback):
    """SIGTERM to this process at Lightning step ``batch_idx`` of ``epoch`` (while ``armed``)."""

    takes_chunks = True
    armed = True

    def __init__(self, epoch: int, batch_idx: int):
        self.epoch, self.batch_idx = epoch, batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if SigtermAt.armed and trainer.current_epoch == self.epoch and batch_idx == self.batch_idx:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
# End to end through the manager once (SIGTERM at a chunk boundary, stochastic batches, per-task
# learning rates); 1-step and 'auto' chunks are covered at the Trainer level above and, for
# 'auto' through the manager, by the Ctrl-C test below (CI time).
@pytest.mark.parametrize("training,stop_idx,chunk_steps", [
    ({"batching_strategy": "data_stochastic", "steps_per_chunk": 2,
      "learning_rate": {"task_0": 0.01, "task_1": 0.02}}, 1, 2),
])
def test_a_grid_point_stopped_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path, training, stop_idx,
                                                                         chunk_steps):
    from experiments import load_experiment
    from experiments.run_state import RunDir
    from experiments.util import Interrupted

    manager_cls, _ = load_experiment("tinyTest")

    class Stopping(manager_cls):
        def make_callbacks(self, cfg, run_dir):
            return super().make_callbacks(cfg, run_dir) + [SigtermAt(2, stop_idx)]

    settings = dict(training=training, trainer={"max_epochs": 4}, custom={"checkpoint_every_n_epochs": None})
    assert _tiny_manager(tmp_path / "ref", manager_cls, **settings).run("T", [0]) == {1: "done"}
    ref_dir = RunDir(tmp_path / "ref", "T")

    SigtermAt.armed = True
    m = _tiny_manager(tmp_path / "runs", Stopping, **settings)
    try:
        with pytest.raises(Interrupted):
            m.run("T", [0])
        run_dir = RunDir(tmp_path / "runs", "T")
        interrupted = torch.load(run_dir.point_dir(1) / "checkpoints" / "interrupted.ckpt", map_location="cpu",
                                 weights_only=False)
        done = interrupted["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
        assert interrupted["epoch"] == 2 and done == stop_idx + 1  # Lightning steps (chunks) of epoch 2 done
        SigtermAt.armed = False
        assert m.run("T", [0]) == {1: "done"}
    finally:
        SigtermAt.armed = True
    assert run_dir.summary(1)["resumed_from"].endswith("interrupted.ckpt")
    assert run_dir.summary(1)["steps_per_chunk"] == chunk_steps == ref_dir.summary(1)["steps_per_chunk"]

    final = torch.load(run_dir.point_dir(1) / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)
    ref = torch.load(ref_dir.point_dir(1) / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == ref["global_step"]
    assert final["state_dict"].keys() == ref["state_dict"].keys()
    diff = max(float((final["state_dict"][k] - v).abs().max()) for k, v in ref["state_dict"].items())
    scale = max(float(v.abs().max()) for v in ref["state_dict"].values())
    assert diff / scale <= REL
    rows, ref_rows = _rows(run_dir.point_dir(1) / "metrics.csv"), _rows(ref_dir.point_dir(1) / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    _assert_same_rows(rows, ref_rows)


@pytest.mark.slow
def test_ctrl_c_inside_a_chunk_stops_at_its_end_and_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C during the 11th optimizer step of epoch 2 (inside a 32-step chunk): the chunk is
    finished, the run stops before the next one (checkpoint at step 2 * 64 + 32, exit 130), and
    the rerun ends at the uninterrupted run's weights."""
    from core_code.lightning_multitask import LightningMultitask
    from experiments import load_experiment
    from experiments.run_state import RunDir
    from experiments.util import Interrupted

    manager_cls, _ = load_experiment("tinyTest")
    settings = dict(training={"batching_strategy": "data_deterministic", "batch_size": 2},  # 64 steps an epoch
                    trainer={"max_epochs": 4}, custom={"checkpoint_every_n_epochs": None})
    assert _tiny_manager(tmp_path / "ref", manager_cls, **settings).run("T", [0]) == {1: "done"}
    ref_dir = RunDir(tmp_path / "ref", "T")

    real, steps, armed = LightningMultitask._optimize, [0], [True]

    def optimize(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        steps[0] += 1
        if armed[0] and steps[0] == 2 * 64 + 11:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(LightningMultitask, "_optimize", optimize)
    m = _tiny_manager(tmp_path / "runs", manager_cls, **settings)
    with pytest.raises(Interrupted) as stop:
        m.run("T", [0])
    assert stop.value.exit_code == 130
    run_dir = RunDir(tmp_path / "runs", "T")
    assert run_dir.summary(1)["status"] == "interrupted" and run_dir.summary(1)["signal"] == "SIGINT"
    ckpt = torch.load(run_dir.point_dir(1) / "checkpoints" / "interrupted.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 2 * 64 + 32 and steps[0] == 2 * 64 + 32  # the whole chunk, then the stop
    armed[0] = False
    assert m.run("T", [0]) == {1: "done"}
    final = torch.load(run_dir.point_dir(1) / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)
    ref = torch.load(ref_dir.point_dir(1) / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == ref["global_step"] == 4 * 64
    diff = max(float((final["state_dict"][k] - v).abs().max()) for k, v in ref["state_dict"].items())
    scale = max(float(v.abs().max()) for v in ref["state_dict"].values())
    assert diff / scale <= REL
    _assert_same_rows(_rows(run_dir.point_dir(1) / "metrics.csv"), _rows(ref_dir.point_dir(1) / "metrics.csv"))
