"""main.py / pre_main.py: arguments, exit codes, and end-to-end grid runs on tinyTest."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_mod
import pre_main
from experiments import EXPERIMENTS, load_experiment
from experiments.run_state import RunDir

ROOT = Path(__file__).resolve().parents[1]


def run_main(tmp_path, *args):
    return main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"),
                          "--wandb", "disabled", *args])


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("text,value", [
    ("3", 3), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False), ("None", None),
    ("cpu", "cpu"), ("00:08:00:00", "00:08:00:00"),
])
def test_parse_value(text, value):
    assert main_mod.parse_value(text) == value


def test_parse_trainer_args_value_may_contain_colons():
    assert main_mod.parse_trainer_args(["max_time:00:08:00:00", "max_epochs:5", "accelerator:cpu"]) == {
        "max_time": "00:08:00:00", "max_epochs": 5, "accelerator": "cpu"}


def test_pre_main_prints_grid_size(capsys):
    assert pre_main.main(["--experiment", "tinyTest"]) == 0
    assert capsys.readouterr().out == "3\n"
    assert pre_main.main([]) == 0
    assert capsys.readouterr().out == "1\n"


def test_pre_main_unknown_experiment(capsys):
    assert pre_main.main(["--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    known = ", ".join(sorted(EXPERIMENTS))
    assert err.count("\n") == 1 and f"unknown experiment 'nope'; known experiments: {known}" in err
    assert "tinyTest" in known


def test_pre_main_subprocess_stdout_is_only_the_count():
    out = subprocess.run([sys.executable, "pre_main.py", "--experiment", "tinyTest"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "3\n")


def test_num_config_range_runs_those_points(tmp_path, monkeypatch):
    from experiments.util import BasicManager

    seen = []
    monkeypatch.setattr(BasicManager, "run", lambda self, tag, indices=None, extend=False, vectorize=False: seen.append(indices) or {})
    assert run_main(tmp_path, "--num_config", "2-3", "--experimentbatch_name", "T") == 0
    assert seen == [[1, 2]]


def test_list(capsys, tmp_path):
    assert run_main(tmp_path, "--list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "3 grid points of tinyTest; varying: width", "index  width", "    1      8", "    2     16", "    3     32"]


@pytest.mark.parametrize("args,msg", [
    (["--num_config", "4"], "--num_config 4 is out of range: the grid of tinyTest has 3 points (1..3)"),
    (["--num_config", "0"], "out of range"),
    (["--num_config", "2-4"], "--num_config 2-4 is out of range"),
    (["--num_config", "3-2"], "the range A-B needs A <= B"),
    (["--num_config", "x"], "give a 1-based grid point I, a range A-B or a list I,J,..."),
    (["--config_trainer", "max_epoch:3"], "unknown trainer config key 'max_epoch'. Did you mean 'max_epochs'"),
    (["--config_trainer", "gpus:1"], "'gpus' is no longer supported"),
    (["--config_trainer", "max_epochs"], "--config_trainer expects key:value items"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, args, msg):
    assert run_main(tmp_path, "--experimentbatch_name", "T", *args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "T" / "config1").exists()


def test_unknown_experiment_exit_2(capsys):
    assert main_mod.main(["--experiment", "nope", "--list"]) == 2
    assert f"known experiments: {', '.join(sorted(EXPERIMENTS))}" in capsys.readouterr().err


def test_bad_steps_per_chunk_is_reported_before_training(tmp_path):
    manager_cls, configs = load_experiment("tinyTest")
    m = manager_cls(configs.configs_data, configs.configs_architecture,
                    dict(configs.configs_training, steps_per_chunk=0), configs.configs_trainer,
                    configs.configs_custom, runs_dir=tmp_path, wandb_mode="disabled")
    with pytest.raises(Exception, match="config 1: .*steps_per_chunk"):
        m.run("T")
    assert not (tmp_path / "T").exists()


def test_invalid_grid_reports_every_point_before_training(tmp_path):
    manager_cls, configs = load_experiment("tinyTest")
    arch = dict(configs.configs_architecture, list_a=[[0, 0]], depth=[3, 4])
    m = manager_cls(configs.configs_data, arch, dict(configs.configs_training, batch_size=1),
                    configs.configs_trainer, configs.configs_custom, runs_dir=tmp_path, wandb_mode="disabled")
    with pytest.raises(Exception) as err:
        m.run("T")
    text = str(err.value)
    assert text.startswith("6 of 6 grid points are invalid")
    assert "config 1: " in text and "config 6: " in text
    assert not (tmp_path / "T").exists()


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_end_to_end_one_point_and_rerun_is_skipped(tmp_path, capsys):
    assert run_main(tmp_path, "--num_config", "2", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:2", "accelerator:cpu") == 0
    point = tmp_path / "runs" / "T" / "config2"
    summary = json.loads((point / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 2
    # nothing in main.py's fit observes single steps: 'auto' ran each epoch's steps as one chunk
    assert summary["steps_per_chunk"] == summary["global_step"] // 2 > 1
    assert set(summary["final"]) >= {"train/loss_task_0", "train/loss_task_1",
                                      "validation/loss_task_0", "validation/loss_task_1"}
    config = json.loads((point / "config.json").read_text())
    assert config["architecture"]["width"] == 16 and config["trainer"]["max_epochs"] == 2
    # the resolved configuration: preset expanded, defaults filled, plus provenance
    assert config["architecture"]["list_a"] == [-0.5, 0, 0.5] and config["architecture"]["list_b"] == [0.5, 0.5, 0.5]
    assert config["architecture"]["bias_tune"] == 1.0 and config["data"]["data_generators_val"] == "equi"
    assert config["data"]["x_min_test"] == -1 and config["training"]["shuffle"] is True
    assert config["custom"]["workers"] is True and config["id"] == summary["id"]
    # tinyTest trains muP with Adam: the exponents recorded are Adam's, per layer
    assert config["lr_exponents"] == {"list_c": [0.5, 1, 0.5], "list_c_bias": [0.5, 0.5, 0]}
    prov = config["provenance"]
    assert set(prov) == {"git_commit", "git_dirty", "versions", "command", "host"}
    assert set(prov["versions"]) == {"python", "torch", "pytorch_lightning", "wandb", "numpy"}
    assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)
    import torch

    ckpt = torch.load(point / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert hp["architecture"] == config["architecture"] and hp["provenance"]["host"] == prov["host"]
    rows = list(csv.DictReader((point / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    pngs = sorted(p.name for p in (point / "plots").glob("*.png"))
    assert pngs and all(p.replace(".png", ".pdf") in {q.name for q in (point / "plots").iterdir()} for p in pngs)
    manifest = json.loads((tmp_path / "runs" / "T" / "manifest.json").read_text())
    assert [p["index"] for p in manifest["points"]] == [1, 2, 3]
    assert manifest["points"][1]["id"] == summary["id"]
    mtime = (point / "metrics.csv").stat().st_mtime
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "2", "--experimentbatch_name", "T", "trainer.max_epochs=2") == 0
    assert "config 2: already done, skipped" in capsys.readouterr().out
    assert run_main(tmp_path, "--num_config", "2", "--experimentbatch_name", "T") == 0  # tinyTest: 3 epochs
    assert ("config 2: already done (2 epochs), skipped; the trainer now asks for max_epochs=3: add --extend"
            in capsys.readouterr().out)
    assert (point / "metrics.csv").stat().st_mtime == mtime
    assert run_main(tmp_path, "--missing", "T") == 0
    assert capsys.readouterr().out == "1,3\n"
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.write_summary(2, status="diverged")  # finished too: a rerun would diverge again
    assert run_main(tmp_path, "--missing", "T") == 0
    assert capsys.readouterr().out == "1,3\n"
    assert run_main(tmp_path, "--num_config", "2", "--experimentbatch_name", "T") == 0
    assert "config 2: already diverged, skipped" in capsys.readouterr().out  # never extended
    run_dir.write_summary(2, status="done")
    assert run_main(tmp_path, "--status", "T") == 0
    table = capsys.readouterr().out
    assert "    2  " in table and "done" in table and "pending: 2" in table
    assert run_main(tmp_path, "--collect", "T") == 0
    rows = list(csv.DictReader((tmp_path / "runs" / "T" / "summary.csv").open()))
    assert [(r["index"], r["status"], r["width"]) for r in rows] == [
        ("1", "pending", "8"), ("2", "done", "16"), ("3", "pending", "32")]
    assert float(rows[1]["final_val_loss_task_0"]) > 0


@pytest.mark.slow
def test_changed_grid_with_same_tag_is_refused(tmp_path, capsys, monkeypatch):
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:1") == 0
    _, configs = load_experiment("tinyTest")
    monkeypatch.setitem(configs.configs_architecture, "width", [8, 16, 64])
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T") == 2
    assert "use a new --experimentbatch_name" in capsys.readouterr().err


@pytest.mark.slow
def test_unreadable_checkpoint_restarts_from_scratch(tmp_path, capsys):
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:1") == 0
    run_dir = RunDir(tmp_path / "runs", "T")
    run_dir.write_summary(1, status="running")
    (run_dir.point_dir(1) / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "T",
                    "--config_trainer", "max_epochs:2") == 0
    assert "cannot be read" in capsys.readouterr().out
    summary = run_dir.summary(1)
    assert summary["status"] == "done" and summary["epochs"] == 2 and summary["resumed_from"] is None
    assert (run_dir.point_dir(1) / "checkpoints" / "last.ckpt.unreadable").exists()


@pytest.mark.slow
def test_failing_point_is_recorded_and_others_continue(tmp_path, capsys):
    import pytorch_lightning as pl

    manager_cls, configs = load_experiment("tinyTest")

    class Boom(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            raise RuntimeError("boom at width 16")

    class Failing(manager_cls):
        def make_callbacks(self, cfg, run_dir):
            extra = [Boom()] if cfg["architecture"]["width"] == 16 else []
            return super().make_callbacks(cfg, run_dir) + extra

    m = Failing(configs.configs_data, configs.configs_architecture, configs.configs_training,
                dict(configs.configs_trainer, max_epochs=1), configs.configs_custom,
                runs_dir=tmp_path, wandb_mode="disabled")
    results = m.run("T")
    assert results == {1: "done", 2: "failed", 3: "done"}
    assert "RuntimeError: boom at width 16" in (tmp_path / "T" / "config2" / "error.txt").read_text()
    assert RunDir(tmp_path, "T").status(2) == "failed"


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    """Resuming restores model, optimizer, epoch and RNG: the losses match a straight run."""
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "A",
                    "--config_trainer", "max_epochs:4") == 0
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "B",
                    "--config_trainer", "max_epochs:2") == 0
    run_dir = RunDir(tmp_path / "runs", "B")
    run_dir.write_summary(1, status="running")  # as if the job had been killed
    assert run_main(tmp_path, "--num_config", "1", "--experimentbatch_name", "B",
                    "--config_trainer", "max_epochs:4") == 0
    summary = run_dir.summary(1)  # the epoch counter goes on from the checkpoint
    assert summary["status"] == "done" and summary["epochs"] == 4
    assert summary["resumed_from"].endswith("last.ckpt")
    a = list(csv.DictReader((tmp_path / "runs" / "A" / "config1" / "metrics.csv").open()))
    b = list(csv.DictReader((tmp_path / "runs" / "B" / "config1" / "metrics.csv").open()))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    for ra, rb in zip(a, b):
        for key in ra:
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5), key


@pytest.mark.slow
def test_run_killed_mid_training_resumes_from_its_last_epoch_checkpoint(tmp_path):
    import pytorch_lightning as pl

    manager_cls, configs = load_experiment("tinyTest")

    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise RuntimeError("killed")

    class Killed(manager_cls):
        kill = True

        def make_callbacks(self, cfg, run_dir):
            return super().make_callbacks(cfg, run_dir) + ([Kill()] if self.kill else [])

    args = (configs.configs_data, dict(configs.configs_architecture, width=8), configs.configs_training,
            dict(configs.configs_trainer, max_epochs=4), configs.configs_custom)
    m = Killed(*args, runs_dir=tmp_path, wandb_mode="disabled")
    assert m.run("T") == {1: "failed"}
    ckpt = tmp_path / "T" / "config1" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()  # written after each epoch, not only at the end
    m.kill = False
    assert m.run("T") == {1: "done"}
    summary = RunDir(tmp_path, "T").summary(1)
    assert summary["resumed_from"] == str(ckpt) and summary["epochs"] == 4
    rows = list(csv.DictReader((tmp_path / "T" / "config1" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]


def test_a_changed_default_changes_the_ids_and_a_rerun_is_refused(tmp_path, capsys, monkeypatch):
    """Ids hash the resolved configuration: a default changed in code is a changed grid."""
    from core_code.util import default_config

    manager_cls, configs = load_experiment("tinyTest")

    def ids():
        m = manager_cls(configs.configs_data, configs.configs_architecture, configs.configs_training,
                        configs.configs_trainer, configs.configs_custom, runs_dir=tmp_path / "runs")
        from experiments.run_state import point_id

        return [point_id(c) for c in m.validate()]

    before = ids()
    from experiments.run_state import RunDir as _RunDir

    _RunDir(tmp_path / "runs", "T").ensure_manifest("tinyTest", manager_cls(
        configs.configs_data, configs.configs_architecture, configs.configs_training,
        configs.configs_trainer, configs.configs_custom).validate())
    monkeypatch.setitem(default_config.DATA_DEFAULTS, "x_min_test", -3)  # tinyTest leaves it at the default
    after = ids()
    assert len(set(before)) == 3 and not set(before) & set(after)
    assert run_main(tmp_path, "--experimentbatch_name", "T") == 2
    assert "the grid now differs" in capsys.readouterr().err


def test_missing_refuses_a_changed_grid(tmp_path, capsys, monkeypatch):
    from experiments.run_state import write_json

    write_json(tmp_path / "runs" / "T" / "manifest.json",
               {"experiment": "tinyTest", "points": [{"index": 1, "id": "x", "config": {}}]})
    assert run_main(tmp_path, "--missing", "T") == 2
    assert "use a new --experimentbatch_name" in capsys.readouterr().err
    assert run_main(tmp_path, "--missing", "NEW") == 0
    assert capsys.readouterr().out == "1,2,3\n"


def test_pre_main_validates_the_grid(capsys, monkeypatch):
    _, configs = load_experiment("tinyTest")
    monkeypatch.setitem(configs.configs_training, "batch_size", 1)
    assert pre_main.main(["--experiment", "tinyTest"]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 grid points are invalid" in err and "'batch_size' is 1 but there are 2 tasks" in err


@pytest.mark.slow
def test_end_to_end_two_epochs_with_wandb_offline(tmp_path, monkeypatch):
    """No account, no network: the run is offline, its W&B files land next to runs/."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"), "--num_config", "1",
                          "--experimentbatch_name", "W", "--config_trainer", "max_epochs:2"]) == 0
    summary = json.loads((tmp_path / "runs" / "W" / "config1" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 2
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(f"W-{summary['id']}")
    assert list((tmp_path / "runs" / "W" / "config1" / "plots").glob("*.png"))


@pytest.mark.slow
def test_logging_callback_is_found_by_type_not_position(tmp_path):
    """A make_callbacks override that puts another callback first still records the final losses."""
    import pytorch_lightning as pl

    manager_cls, configs = load_experiment("tinyTest")

    class First(pl.Callback):
        pass

    class Manager(manager_cls):
        def make_callbacks(self, cfg, run_dir):
            return [First(), *super().make_callbacks(cfg, run_dir)]

    m = Manager(configs.configs_data, configs.configs_architecture, configs.configs_training,
                dict(configs.configs_trainer, max_epochs=1), configs.configs_custom, runs_dir=tmp_path,
                wandb_mode="disabled")
    assert m.run("T", [0]) == {1: "done"}
    summary = RunDir(tmp_path, "T").summary(1)
    assert summary["final"]["epoch"] == 0 and "validation/loss_task_1" in summary["final"]
