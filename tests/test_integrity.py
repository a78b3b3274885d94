"""Run-state integrity (issue 10): what --status, --missing and --collect say can be believed.

Stops (signals, time limits, dead processes, failures while recording a failure), what a
rerun trusts (manifest, ids, checkpoints, locks, metrics.csv, strict JSON), validation
before anything runs, TAGs and paths.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main as main_mod
from experiments import EXPERIMENTS, load_experiment
from experiments.run_state import HOST, STATUSES, RunDir, point_id, write_json
from experiments.util import BasicManager

ROOT = Path(__file__).resolve().parents[1]


def run_main(tmp_path, *args):
    return main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"),
                          "--wandb", "disabled", *args])


def tiny_manager(tmp_path, cls=None, data=None, arch=None, training=None, trainer=None, custom=None):
    manager_cls, configs = load_experiment("tinyTest")
    cls = cls or manager_cls
    return cls(dict(configs.configs_data, **(data or {})), dict(configs.configs_architecture, **(arch or {})),
               dict(configs.configs_training, **(training or {})), dict(configs.configs_trainer, **(trainer or {})),
               dict(configs.configs_custom, **(custom or {})), runs_dir=tmp_path / "runs", wandb_mode="disabled")


def fake_record(run_dir, index, cfg, status="done", **fields):
    """The records a finished point leaves (config.json with its id, summary.json)."""
    pid = point_id(cfg)
    write_json(run_dir.point_dir(index) / "config.json", {**cfg, "id": pid})
    run_dir.write_summary(index, status=status, id=pid, **fields)


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LSB_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# ====================================================================== stops
@pytest.mark.slow
def test_signal_checkpoints_records_interrupted_and_exits_128_plus_signal(tmp_path):
    # SIGTERM, Ctrl-C and SIGUSR1 (off Slurm), one grid each, the three at once
    stops = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGUSR1: 138}
    procs = {}
    try:
        for signum in stops:
            runs = tmp_path / signal.Signals(signum).name / "runs"
            procs[signum] = (runs, subprocess.Popen(
                [sys.executable, "main.py", "--experiment", "tinyTest", "--runs_dir", str(runs), "--wandb",
                 "disabled", "--experimentbatch_name", "S", "--config_trainer", "max_epochs:100000"],
                cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = {}
        for signum, (runs, proc) in procs.items():
            run_dir = RunDir(runs, "S")
            wait_for(lambda d=run_dir: d.recorded_summary(1).get("heartbeat_epoch", -1) >= 1, 120, "two epochs")
            proc.send_signal(signum)
        for signum, (_, proc) in procs.items():
            outs[signum], _ = proc.communicate(timeout=120)
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for signum, (runs, proc) in procs.items():
        name, out, run_dir = signal.Signals(signum).name, outs[signum], RunDir(runs, "S")
        assert proc.returncode == stops[signum], (name, out[-3000:])
        summary = run_dir.recorded_summary(1)
        assert summary["status"] == "interrupted" and summary["signal"] == name
        ckpt = run_dir.point_dir(1) / "checkpoints" / "interrupted.ckpt"
        assert ckpt.is_file() and summary["checkpoint"] == str(ckpt)
        assert summary["host"] == HOST and summary["pid"] == proc.pid and summary["heartbeat"]
        assert "not started: config 2, 3" in out and "Traceback" not in out
        assert not run_dir.point_dir(2).exists()  # the grid stops: nothing else claims anything
        assert main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(runs), "--missing", "S"]) == 0


@pytest.mark.slow
def test_interrupted_point_resumes_from_its_interrupt_checkpoint(tmp_path, capsys):
    import pytorch_lightning as pl

    class Stop(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2 and Stopping.stop:
                os.kill(os.getpid(), signal.SIGTERM)

    manager_cls, _ = load_experiment("tinyTest")

    class Stopping(manager_cls):
        stop = True

        def make_callbacks(self, cfg, run_dir):
            return super().make_callbacks(cfg, run_dir) + [Stop()]

    m = tiny_manager(tmp_path, Stopping, trainer={"max_epochs": 4}, custom={"checkpoint_every_n_epochs": None})
    from experiments.util import Interrupted

    with pytest.raises(Interrupted) as stop:
        m.run("T", [0])
    assert stop.value.exit_code == 143
    run_dir = RunDir(tmp_path / "runs", "T")
    assert run_dir.status(1) == "interrupted"
    ckpts = sorted(p.name for p in (run_dir.point_dir(1) / "checkpoints").iterdir())
    assert ckpts == ["interrupted.ckpt"]  # checkpoint_every_n_epochs None: no periodic ones
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    Stopping.stop = False
    assert m.run("T", [0]) == {1: "done"}
    summary = run_dir.summary(1)
    assert summary["resumed_from"].endswith("interrupted.ckpt") and summary["epochs"] == 4
    rows = list(csv.DictReader((run_dir.point_dir(1) / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]


def test_ctrl_c_inside_fit_waits_for_the_next_batch_a_second_one_does_not(capsys):
    from experiments.run_control import SignalRecorder as _SignalRecorder

    rec = _SignalRecorder()
    rec.graceful = True  # inside Trainer.fit
    rec._handle(signal.SIGINT, None)  # recorded only: the run stops before its next batch
    assert rec.pending_stop() == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        rec._handle(signal.SIGINT, None)  # insisting stops at once
    outside = _SignalRecorder()
    with pytest.raises(KeyboardInterrupt):
        outside._handle(signal.SIGINT, None)
    term = _SignalRecorder()
    term.graceful = True
    term._handle(signal.SIGTERM, None)
    assert term.pending_stop() is None  # Lightning acts on SIGTERM itself
    assert "received SIGINT: checkpointing and stopping" in capsys.readouterr().err


def test_slurm_requeue_signal_is_left_to_lightning(monkeypatch):
    """On Slurm, SIGUSR1 stays free, so Lightning's SLURMEnvironment registers its requeue handler."""
    import pytorch_lightning as pl

    from experiments.run_control import SignalRecorder as _SignalRecorder

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "mtl_job")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    before = signal.getsignal(signal.SIGUSR1)
    rec = _SignalRecorder()
    rec.install()
    try:
        assert signal.getsignal(signal.SIGUSR1) is before
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", devices=1)
        connector = trainer._signal_connector
        connector.register_signal_handlers()
        try:
            handlers = getattr(signal.getsignal(signal.SIGUSR1), "signal_handlers", [])
            assert connector._slurm_sigusr_handler_fn in handlers
            # and our SIGTERM recorder still runs, after Lightning's own handlers
            assert rec._handle in getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", [])
        finally:
            connector.teardown()
    finally:
        rec.restore()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_no_hidden_max_time_default():
    from core_code.util.trainer_config import init_config_trainer

    assert "max_time" not in init_config_trainer()


@pytest.mark.slow
def test_max_time_stop_is_time_limit_not_done_and_a_rerun_resumes(tmp_path, capsys):
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:100000", "max_time:00:00:00:02") == 3
    run_dir = RunDir(tmp_path / "runs", "T")
    summary = run_dir.summary(1)
    assert summary["status"] == "time_limit" and "max_time" in summary["stop"]
    assert (run_dir.point_dir(1) / "checkpoints" / "interrupted.ckpt").is_file()
    reached = summary["epochs"]
    assert reached >= 1
    capsys.readouterr()
    assert run_main(tmp_path, "--missing", "T") == 0
    assert capsys.readouterr().out == "1,2,3\n"
    target = reached + 2
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", f"max_epochs:{target}") == 0
    summary = run_dir.summary(1)
    assert summary["status"] == "done" and summary["epochs"] == target and summary["resumed_from"]
    rows = list(csv.DictReader((run_dir.point_dir(1) / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(target))


def test_max_time_is_per_run_not_restored_from_the_checkpoint():
    from experiments.run_control import RunStateCallbackMixin as _RunStateCallbackMixin

    ckpt = {"callbacks": {"Timer": {"time_elapsed": {"train": 99.0}}, "Other": {"x": 1}}}
    _RunStateCallbackMixin.on_load_checkpoint(None, None, None, ckpt)
    assert ckpt["callbacks"] == {"Other": {"x": 1}}


def test_stop_status_done_only_at_the_configured_end():
    from types import SimpleNamespace

    from experiments.run_control import stop_status as _stop_status

    def trainer(**kw):
        base = dict(max_steps=-1, max_epochs=5, current_epoch=5, global_step=50, callbacks=[])
        return SimpleNamespace(**{**base, **kw})

    assert _stop_status(trainer(), None)[0] == "done"
    assert _stop_status(trainer(max_epochs=-1, max_steps=50), None)[0] == "done"
    assert _stop_status(trainer(current_epoch=3), None)[0] == "failed"
    assert _stop_status(trainer(), {"task": 0, "epoch": 1})[0] == "diverged"
    from pytorch_lightning.callbacks import EarlyStopping, Timer

    early = EarlyStopping(monitor="validation/loss_task_0")
    early.stopped_epoch = 2
    assert _stop_status(trainer(current_epoch=3, callbacks=[early]), None)[0] == "done"
    timer = Timer(duration={"seconds": 1})
    timer._offset = 5.0  # 5 s elapsed
    assert _stop_status(trainer(current_epoch=3, callbacks=[timer]), None)[0] == "time_limit"


# ---------------------------------------------------------------- dead runs
def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_dead_running_point_is_stale_in_status_missing_and_collect(tmp_path, capsys):
    m = tiny_manager(tmp_path)
    configs = m.validate()
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.ensure_manifest("tinyTest", configs)
    now = time.time()
    fake_record(run_dir, 1, configs[0], status="running", host=HOST, pid=dead_pid(), heartbeat_unix=now)
    fake_record(run_dir, 2, configs[1], status="running", host="node042", pid=1, heartbeat_unix=now - 3600)
    fake_record(run_dir, 3, configs[2], status="running", host="node042", pid=1, heartbeat_unix=now - 5)
    assert [run_dir.status(i) for i in (1, 2, 3)] == ["stale", "stale", "running"]
    assert "gone" in run_dir.summary(1)["stale"] and "no heartbeat for 60 min" in run_dir.summary(2)["stale"]
    assert run_dir.recorded_summary(1)["status"] == "running"  # nothing rewritten by reading
    capsys.readouterr()
    assert run_main(tmp_path, "--status", "T") == 0
    table = capsys.readouterr().out
    assert "stale: 2" in table and "running: 1" in table and "is gone" in table
    assert run_main(tmp_path, "--missing", "T") == 0
    assert capsys.readouterr().out == "1,2,3\n"
    from experiments.analysis.collect import collect

    assert [r["status"] for r in collect(tmp_path / "runs", "T")] == ["stale", "stale", "running"]


def test_statuses_are_documented():
    assert set(STATUSES) == {"pending", "running", "stale", "done", "diverged", "failed", "interrupted",
                             "time_limit"}


# --------------------------------------------------- failure while recording
def test_failure_while_recording_a_failure_is_one_line_and_the_grid_goes_on(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_train(self, run_dir, index, cfg):
        calls.append(index)
        if index == 2:
            raise RuntimeError("boom")
        run_dir.write_summary(index, status="done", id=point_id(cfg))
        return "done"

    real_write = RunDir.write_summary

    def full_disk(self, index, **fields):
        if fields.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.point_dir(index) / "summary.json"))
        return real_write(self, index, **fields)

    def no_error_txt(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(BasicManager, "_train_point", fake_train)
    monkeypatch.setattr(RunDir, "write_summary", full_disk)
    monkeypatch.setattr("experiments.util.write_text_atomic", no_error_txt)
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 1
    out, err = capsys.readouterr()
    assert calls == [1, 2, 3] and "Traceback" not in out + err
    lines = [line for line in err.splitlines() if "cannot record status 'failed' of config 2" in line]
    assert len(lines) == 1 and "config2/summary.json" in lines[0] and "No space left on device" in lines[0]
    assert "cannot write" in err and "error.txt" in err
    assert "failed grid points: 2" in err


def test_unwritable_runs_dir_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self.manifest_path))

    monkeypatch.setattr(RunDir, "ensure_manifest", read_only)
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: Read-only file system" in err


# ============================================================ rerun trusts
def test_lost_manifest_is_rebuilt_from_matching_records(tmp_path, capsys):
    m = tiny_manager(tmp_path)
    configs = m.validate()
    run_dir = RunDir(tmp_path / "runs", "T")
    fake_record(run_dir, 1, configs[0])
    capsys.readouterr()
    assert run_main(tmp_path, "--missing", "T") == 0  # today: 1,2,3 (the done point forgotten)
    assert capsys.readouterr().out == "2,3\n"
    assert not run_dir.manifest_path.exists()  # --missing only reads
    run_dir.manifest_path.write_text("{not json")
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T") == 0
    assert "rebuilt from the records of 1 point(s)" in capsys.readouterr().out
    manifest = run_dir.manifest()
    assert [p["id"] for p in manifest["points"]] == [point_id(c) for c in configs] and manifest["rebuilt"]
    assert len(list(run_dir.root.glob("manifest.json.unreadable-*"))) == 1


def test_lost_manifest_with_a_changed_grid_is_refused(tmp_path, capsys, monkeypatch):
    configs = tiny_manager(tmp_path).validate()
    run_dir = RunDir(tmp_path / "runs", "T")
    fake_record(run_dir, 1, configs[0])
    before = (run_dir.point_dir(1) / "summary.json").read_text()
    _, module = load_experiment("tinyTest")
    monkeypatch.setitem(module.configs_architecture, "width", [64, 16, 32])
    for args in (["--num_config", "1", "--experimentbatch_name", "T"], ["--missing", "T"]):
        capsys.readouterr()
        assert run_main(tmp_path, *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "do not match this grid" in err and "config1 holds" in err
    assert not run_dir.manifest_path.exists()
    assert (run_dir.point_dir(1) / "summary.json").read_text() == before


def test_a_point_is_skipped_only_when_its_recorded_id_matches(tmp_path, capsys):
    configs = tiny_manager(tmp_path).validate()
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.ensure_manifest("tinyTest", configs)
    run_dir.write_summary(1, status="done", id="0123456789")  # another configuration's result
    before = (run_dir.point_dir(1) / "summary.json").read_text()
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T") == 1
    err = capsys.readouterr().err
    assert "holds the results of point id 0123456789" in err and "nothing was overwritten" in err
    assert (run_dir.point_dir(1) / "summary.json").read_text() == before
    assert run_main(tmp_path, "--missing", "T") == 0
    assert capsys.readouterr().out == "1,2,3\n"


@pytest.mark.slow
def test_unreadable_newer_hpc_checkpoint_falls_back_to_last_ckpt(tmp_path, capsys):
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:2") == 0
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.write_summary(1, status="running")
    hpc = run_dir.point_dir(1) / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"truncated by a node failure")
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:3") == 0
    assert "hpc_ckpt_1.ckpt cannot be read" in capsys.readouterr().out
    summary = run_dir.summary(1)
    assert summary["status"] == "done" and summary["epochs"] == 3
    assert summary["resumed_from"].endswith("last.ckpt")
    ckdir = run_dir.point_dir(1) / "checkpoints"
    assert not list(ckdir.glob("last-v*.ckpt"))
    assert (ckdir / "last.ckpt").resolve().name == "epoch=2-step=21.ckpt"
    rows = list(csv.DictReader((run_dir.point_dir(1) / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


def test_checkpoint_choice_prefers_progress_and_skips_other_ids(tmp_path):
    import torch

    run_dir = RunDir(tmp_path / "runs", "T")
    ck = run_dir.point_dir(1) / "checkpoints"
    ck.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 20, "epoch": 2, "hyper_parameters": {"id": "a"}}, ck / "e2.ckpt")
    torch.save({"state_dict": {}, "global_step": 30, "epoch": 3, "hyper_parameters": {"id": "b"}}, ck / "other.ckpt")
    torch.save({"state_dict": {}, "global_step": 10, "epoch": 1, "hyper_parameters": {"id": "a"}}, ck / "e1.ckpt")
    os.utime(ck / "e2.ckpt", (1, 1))  # older by mtime, newer by progress
    path, _ = BasicManager._choose_checkpoint(None, run_dir, 1, "a")
    assert path.endswith("e2.ckpt")


def test_concurrent_run_of_a_point_is_refused_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    import fcntl

    calls = []

    def fake_train(self, run_dir, index, cfg):
        calls.append(index)
        run_dir.write_summary(index, status="done", id=point_id(cfg))
        return "done"

    monkeypatch.setattr(BasicManager, "_train_point", fake_train)
    lock = tmp_path / "runs" / "T" / "config1" / ".lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as fh:  # "the other process"
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_main(tmp_path, "--experimentbatch_name", "T") == 1
    err = capsys.readouterr().err
    assert "config 1: refused: another process is running this point" in err and str(lock) in err
    assert calls == [2, 3]
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 0  # the lock died with its holder
    assert calls == [2, 3, 1]


@pytest.mark.slow
def test_corrupt_metrics_csv_is_rebuilt_from_the_checkpoint_history(tmp_path, capsys):
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:2") == 0
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.write_summary(1, status="running")
    metrics = run_dir.point_dir(1) / "metrics.csv"
    original = list(csv.DictReader(metrics.open()))
    metrics.write_bytes(b"\xff\xfe\x00garbage\n\x81\x82")
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:3") == 0
    assert "rebuilt from the checkpoint's history (2 epochs)" in capsys.readouterr().out
    rows = list(csv.DictReader(metrics.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["validation/loss_task_0"] == original[0]["validation/loss_task_0"]
    assert list(run_dir.point_dir(1).glob("metrics.csv.unreadable-*"))


def test_summary_json_is_strict_json(tmp_path):
    run_dir = RunDir(tmp_path, "T")
    run_dir.write_summary(1, status="diverged", final={"train/loss_task_0": float("nan"),
                                                       "validation/loss_task_0": float("inf"), "epoch": 3})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    summary = json.loads((run_dir.point_dir(1) / "summary.json").read_text(), parse_constant=refuse)
    assert summary["final"] == {"train/loss_task_0": None, "validation/loss_task_0": None, "epoch": 3}
    assert summary["non_finite"] == ["final/train/loss_task_0", "final/validation/loss_task_0"]


# ================================================================ validation
BAD_VALUES = [
    ("configs_training", "batching_strategy", "nope", "'batching_strategy' is 'nope'; allowed: "),
    ("configs_custom", "seed", "abc", "'seed' is 'abc'; allowed: an int, or None"),
    ("configs_custom", "logging_epoch_interval", 0, "'logging_epoch_interval' is 0; allowed: an int >= 1"),
    ("configs_training", "regularization_alpha", "x", "'regularization_alpha' is 'x'; allowed: a finite number"),
    ("configs_training", "regularization_alpha", -1, "'regularization_alpha' is -1; allowed: a finite number >= 0"),
    ("configs_training", "regularization_ord", "x", "'regularization_ord' is 'x'; allowed: a number > 0"),
    ("configs_data", "n_train", 0, "'n_train' is 0 for every task"),
    ("configs_custom", "checkpoint_every_n_epochs", 0,
     "'checkpoint_every_n_epochs' is 0; allowed: an int >= 1, or None (no periodic checkpoints)"),
    ("configs_training", "learning_rate", float("inf"), "'learning_rate' is inf; allowed: a finite number >= 0"),
    ("configs_architecture", "width", [8, 8], "'width' in configs_architecture lists the value 8 more than once"),
]


@pytest.mark.parametrize("dict_name,key,value,msg", BAD_VALUES)
def test_bad_config_value_exit_2_before_anything_runs(tmp_path, capsys, monkeypatch, dict_name, key, value, msg):
    _, module = load_experiment("tinyTest")
    monkeypatch.setitem(getattr(module, dict_name), key, value)
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert not (tmp_path / "runs" / "T").exists()


@pytest.mark.parametrize("arg,msg", [
    ("max_epochs:-5", "trainer config key 'max_epochs' is -5; allowed: an int >= -1 (-1: no limit), or None"),
    ("max_epochs:abc", "trainer config key 'max_epochs' is 'abc'; allowed: an int >= -1"),
    ("max_time:forever", "trainer config key 'max_time' is 'forever'; allowed: DD:HH:MM:SS"),
    ("precision:17", "refused by pytorch_lightning.Trainer: "),
    ("accelerator:gpu", "accelerator='gpu'"),
])
def test_bad_trainer_value_exit_2_one_line(tmp_path, capsys, arg, msg):
    if arg == "accelerator:gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is available here")
    assert run_main(tmp_path, "--experimentbatch_name", "T", "--config_trainer", arg) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "T").exists()


def test_wandb_online_without_login_and_bogus_wandb_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    args = ["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"), "--experimentbatch_name", "T"]
    assert main_mod.main([*args, "--wandb", "online"]) == 2
    assert "needs a login" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "bogus")
    assert main_mod.main(args) == 2
    err = capsys.readouterr().err
    assert "WANDB_MODE is 'bogus'; allowed: online, offline, disabled" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text,msg", [
    ("configs_data = {\n  'n_train': 3,,\n}\n", "configs.py:2: syntax error in experiment 'broken'"),
    ("configs_architecture = {}\nconfigs_training = {}\n", "'configs_data' is missing"),
    ("configs_data = {}\nraise KeyError('oops')\n", "configs.py:2: experiment 'broken' cannot be loaded: KeyError"),
])
def test_broken_configs_py_is_one_line_with_file_and_line(tmp_path, capsys, monkeypatch, text, msg):
    import importlib.util

    path = tmp_path / "broken" / "configs.py"
    path.parent.mkdir()
    path.write_text(text)

    def loader():
        spec = importlib.util.spec_from_file_location("broken_configs", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return BasicManager, module

    monkeypatch.setitem(EXPERIMENTS, "broken", loader)
    assert main_mod.main(["--experiment", "broken", "--runs_dir", str(tmp_path / "runs"), "--list"]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    import pre_main

    assert pre_main.main(["--experiment", "broken"]) == 2
    assert msg in capsys.readouterr().err


# =========================================================== TAGs and paths
@pytest.mark.parametrize("tag", ["..", ".hidden", "-x", "a/b", "a b", "x" * 101, "", "über", "../../etc"])
def test_bad_tag_exit_2(tmp_path, capsys, tag):
    for option in ("--experimentbatch_name", "--status", "--missing", "--collect"):
        assert run_main(tmp_path, f"{option}={tag}") == 2
        err = capsys.readouterr().err
        assert "is not a valid TAG: a TAG is one folder name of letters, digits" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("tag", ["a", "_x", "sweep-1.2_b", "x" * 100, "9"])
def test_good_tags(tag):
    assert main_mod.validate_tag(tag, "--x") == tag


def test_tag_rule_is_the_one_of_lib_sh():
    text = (ROOT / "bash_files" / "lib.sh").read_text()
    assert f"MTL_TAG_RE='^{main_mod.TAG_RE.pattern}$'" in text


def test_runs_dir_that_is_a_file_exit_2(tmp_path, capsys):
    f = tmp_path / "runs"
    f.write_text("")
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 2
    err = capsys.readouterr().err
    assert "--runs_dir" in err and "is a file, not a folder" in err and err.count("\n") == 1


def test_a_stop_inside_a_training_step_writes_no_partial_checkpoint(tmp_path, capsys):
    """A second Ctrl-C (KeyboardInterrupt at once) inside a training step: the weights hold part
    of the step's optimizer steps, so no interrupted.ckpt; at a batch boundary there is one."""
    from experiments.run_control import SignalRecorder as _SignalRecorder
    from experiments.run_control import run_state_callback

    class Trainer:  # what on_exception reads
        world_size = 1

        def __init__(self):
            self.saved = []

        def save_checkpoint(self, path):
            self.saved.append(path)

    run_dir = RunDir(tmp_path / "runs", "T")
    import types

    cb = run_state_callback(types.SimpleNamespace(), run_dir, 1, _SignalRecorder())
    trainer = Trainer()
    cb.on_train_batch_start(trainer, None, None, 0)
    cb.on_exception(trainer, None, KeyboardInterrupt())
    assert trainer.saved == [] and "stopped inside a training step: no interrupted.ckpt" in capsys.readouterr().err
    cb.on_train_batch_end(trainer, None, None, None, 0)
    cb.on_exception(trainer, None, KeyboardInterrupt())
    assert [p.name for p in trainer.saved] == ["interrupted.ckpt"]
