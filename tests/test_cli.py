"""The command line of the daily loop: overrides, --list/--print_config, --extend, --status,
--num_config lists, the task/output check, keep_checkpoints and what the console shows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_mod
import pre_main
from core_code.util.config_extractions import ConfigError
from experiments import load_experiment, make_manager
from experiments.overrides import apply_overrides, parse_literal, parse_override
from experiments.run_state import RunDir, point_id

ROOT = Path(__file__).resolve().parents[1]


def run_main(tmp_path, *args):
    return main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"),
                          "--wandb", "disabled", *args])


# ------------------------------------------------------------------ overrides
@pytest.mark.parametrize("text,value", [
    ("0.01", 0.01), ("3", 3), ("[64,128]", [64, 128]), ("[[0,0.5]]", [[0, 0.5]]), ("None", None),
    ("true", True), ("{'task_0': 0.1, 'task_1': 0.01}", {"task_0": 0.1, "task_1": 0.01}),
    ("sine", "sine"), ("('dimred_MSELoss', [0])", ("dimred_MSELoss", [0])), ("00:08:00:00", "00:08:00:00"),
])
def test_values_parse_as_python_literals_else_strings(text, value):
    assert parse_literal(text) == value


def test_overrides_change_the_grid_like_configs_py():
    m = make_manager("tinyTest", overrides=["training.learning_rate=0.02", "architecture.width=[64,128]",
                                            "custom.seed=[0,1,2]", "trainer.max_epochs=7"])
    assert m.grid_size() == 6 and m.varying_keys() == ["width", "seed"]
    assert m.configs_training["learning_rate"] == 0.02 and m.trainer_config()["max_epochs"] == 7
    assert m.overrides == {"training.learning_rate": 0.02, "architecture.width": [64, 128],
                           "custom.seed": [0, 1, 2], "trainer.max_epochs": 7}


def test_a_key_of_several_dicts_is_set_in_each_and_per_task_values_work():
    m = make_manager("tinyTest", overrides=["data.d_out=8", "training.learning_rate.task_1=0.5"])
    assert m.configs_data["d_out"] == m.configs_architecture["d_out"] == 8
    assert m.configs_training["learning_rate"] == {"task_0": 0.01, "task_1": 0.5}
    m = make_manager("tinyTest", overrides=["training.learning_rate={'task_0': 0.1, 'task_1': 0.01}"])
    assert m.configs_training["learning_rate"] == {"task_0": 0.1, "task_1": 0.01}


def test_config_trainer_is_one_spelling_of_trainer_overrides(tmp_path, monkeypatch):
    from experiments.util import BasicManager

    seen = []
    monkeypatch.setattr(BasicManager, "run", lambda self, tag, indices=None, extend=False, vectorize=False:
                        seen.append((self.trainer_config()["max_epochs"], self.configs_training["batch_size"]))
                        or {})
    assert run_main(tmp_path, "--experimentbatch_name", "T", "--config_trainer", "max_epochs:5",
                    "training.batch_size=8") == 0
    assert seen == [(5, 8)]


@pytest.mark.parametrize("item,msg", [
    ("training.learningrate=0.01", "unknown training config key 'learningrate'. Did you mean 'learning_rate'"),
    ("trainig.learning_rate=0.01", "unknown config section 'trainig'. Did you mean 'training'"),
    ("trainer.max_epoch=3", "unknown trainer config key 'max_epoch'. Did you mean 'max_epochs'"),
    ("custom.sed=1", "unknown custom config key 'sed'. Did you mean 'seed'"),
    ("training.learning_rate.task_7=0.1", "task_7 is not one of them"),
])
def test_unknown_override_keys_exit_2_before_anything_runs(tmp_path, capsys, item, msg):
    assert run_main(tmp_path, "--experimentbatch_name", "T", item) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "T").exists()


def test_pre_main_takes_the_same_overrides(capsys):
    assert pre_main.main(["--experiment", "tinyTest", "architecture.width=[8,16]", "custom.seed=[1,2]",
                          "--config_trainer", "max_epochs:2"]) == 0
    assert capsys.readouterr().out == "4\n"
    assert pre_main.main(["--experiment", "tinyTest", "training.learningrate=1"]) == 2
    assert "Did you mean 'learning_rate'" in capsys.readouterr().err


def test_apply_overrides_refuses_per_task_value_of_a_grid_axis():
    with pytest.raises(ConfigError, match="is a grid axis"):
        apply_overrides({"training": {"learning_rate": [0.1, 0.2]}, "data": {"n_train": {"task_0": 1}}},
                        [parse_override("training.learning_rate.task_0=0.3")], {})


# ------------------------------------------------------------ --list, --print_config
def test_list_is_validated_and_aligned(tmp_path, capsys):
    assert run_main(tmp_path, "--list", "architecture.width=[8,128]", "custom.seed=[0,1]") == 0
    assert capsys.readouterr().out.splitlines() == [
        "4 grid points of tinyTest; varying: width, seed",
        "index  width  seed",
        "    1      8     0",
        "    2      8     1",
        "    3    128     0",
        "    4    128     1"]
    assert run_main(tmp_path, "--list", "training.batch_size=0") == 2  # main.py would refuse it: so does --list
    assert "batch_size" in capsys.readouterr().err


def test_print_config_is_config_json_without_provenance(tmp_path, capsys):
    assert run_main(tmp_path, "--print_config", "2", "training.learning_rate=0.02") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["index"] == 2 and cfg["architecture"]["width"] == 16 and "provenance" not in cfg
    assert cfg["overrides"] == {"training.learning_rate": 0.02} and cfg["training"]["learning_rate"] == 0.02
    m = make_manager("tinyTest", overrides=["training.learning_rate=0.02"])
    assert cfg["id"] == point_id(m.validate()[1])
    assert run_main(tmp_path, "--print_config", "4") == 2


# ------------------------------------------------------------------ --num_config
@pytest.mark.parametrize("text,value", [("3", [3]), ("2-5", [2, 3, 4, 5]), ("1,4,9", [1, 4, 9]),
                                        ("1-3,7", [1, 2, 3, 7]), (" 1 - 2 ", [1, 2])])
def test_num_config_points_ranges_and_lists(text, value):
    assert main_mod.parse_num_config(text) == value


def test_num_config_list_runs_those_points(tmp_path, monkeypatch):
    from experiments.util import BasicManager

    seen = []
    monkeypatch.setattr(BasicManager, "run", lambda self, tag, indices=None, extend=False, vectorize=False: seen.append(indices) or {})
    assert run_main(tmp_path, "--num_config", "1,3", "--experimentbatch_name", "T") == 0
    assert seen == [[0, 2]]
    assert run_main(tmp_path, "--num_config", "1,4", "--experimentbatch_name", "T") == 2


# ---------------------------------------------------------- tasks and outputs
def _tasks_manager(tmp_path, **training):
    manager_cls, configs = load_experiment("tinyTest")
    data = dict(configs.configs_data, f_true={"task_0": "sine", "task_1": "oneKink"}, d_out=1)
    arch = dict(configs.configs_architecture, d_out=1, width=8)
    return manager_cls(data, arch, dict(configs.configs_training, criterion="MSELoss", **training),
                       configs.configs_trainer, configs.configs_custom, runs_dir=tmp_path, wandb_mode="disabled")


def test_different_targets_on_the_same_outputs_of_one_network_are_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        _tasks_manager(tmp_path).validate()
    text = str(err.value)
    assert "tasks 0 and 1 have different targets" in text and "same outputs [0]" in text and "\n  " in text
    assert "d_out" in text and "dimred_MSELoss" in text and "a model each" in text


def test_per_task_models_or_separate_outputs_are_fine(tmp_path):
    m = _tasks_manager(tmp_path)
    m.configs_architecture["width"] = {"task_0": 8, "task_1": 16}  # one model per task
    assert len(m.validate()) == 1
    m = _tasks_manager(tmp_path)
    m.configs_data["f_true"] = "sine"  # the same target: one prediction may fit both
    assert len(m.validate()) == 1


# ------------------------------------------------------------------ end to end
def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MTL_", "SLURM_"))}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), HOME=str(tmp_path), MTL_PROGRESS="lines",
               WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"))
    return env


def _main_subprocess(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--experiment", "tinyTest", "--runs_dir",
                           str(tmp_path / "runs"), *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


QUIET = ["litlogger", "LeafSpec", "log_every_n_steps", "The `srun` command is available", "anonymous setting",
         "Total params", "| Name"]


@pytest.mark.slow
def test_console_of_a_run_extend_status_and_keep_checkpoints(tmp_path, capsys):
    tag = ["--experimentbatch_name", "T", "--num_config", "1", "custom.logging_epoch_interval=100",
           "custom.keep_checkpoints='last'", "trainer.max_epochs=2"]
    out = _main_subprocess(tmp_path, *tag)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console
    for text in QUIET:
        assert text not in console, (text, console)
    sync = [line for line in console.splitlines() if "wandb sync " in line]
    assert len(sync) == 1 and (tmp_path / sync[0].split("wandb sync ", 1)[1]).is_dir(), console  # cwd-relative
    assert "[T] config 1 (width=8): starting; run folder" in console
    assert "[T] config 1 epoch 2/2: train " in console and "| validation " in console
    cfg = json.loads((tmp_path / "runs/T/config1/config.json").read_text())
    assert cfg["overrides"]["custom.keep_checkpoints"] == "last" and "provenance" in cfg
    ckpts = sorted(p.name for p in (tmp_path / "runs/T/config1/checkpoints").iterdir())
    assert len([c for c in ckpts if c != "last.ckpt"]) == 1, ckpts  # 'last': the newest only

    # a larger max_epochs: skipped with a hint, then --extend continues from the checkpoint
    longer = [*tag[:-1], "trainer.max_epochs=3"]
    out = _main_subprocess(tmp_path, *longer)
    assert out.returncode == 0 and "add --extend" in out.stdout, out.stdout + out.stderr
    out = _main_subprocess(tmp_path, *longer, "--extend")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "epoch 3/3" in out.stdout and "epoch 1/3" not in out.stdout
    summary = json.loads((tmp_path / "runs/T/config1/summary.json").read_text())
    assert summary["epochs"] == 3 and summary["status"] == "done"
    assert [(h["event"], h["from_epochs"], h["to_epochs"]) for h in summary["history"]] == [("extended", 2, 3)]

    # --status and --missing read the experiment from the TAG (no --experiment); in this
    # process (the runs above were separate processes)
    capsys.readouterr()
    assert main_mod.main(["--status", "T", "--runs_dir", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["index", "id", "status", "width", "epoch", "validation", "loss", "elapsed",
                                "note"], lines
    assert lines[2].split()[2:6] == ["done", "8", "3/3", "task_0"] and "extended 2->3" in lines[2]
    assert main_mod.main(["--missing", "T", "--runs_dir", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out == "2,3\n"


def test_status_shows_epochs_losses_elapsed_and_liveness(tmp_path, capsys):
    import time

    m = make_manager("tinyTest", runs_dir=tmp_path / "runs")
    configs = m.validate()
    run_dir = RunDir(tmp_path / "runs", "S")
    run_dir.ensure_manifest("tinyTest", configs)
    now = time.time()
    run_dir.write_summary(1, status="running", id=point_id(configs[0]), started_unix=now - 65, max_epochs=3,
                          epochs_done=2, last_validation={"loss_task_0": 0.5, "loss_task_1": 0.25},
                          host="elsewhere", pid=1, heartbeat="t", heartbeat_unix=now)
    run_dir.write_summary(2, status="running", id=point_id(configs[1]), started_unix=now - 10, max_epochs=3,
                          host="elsewhere", pid=1, heartbeat="t", heartbeat_unix=now - 10 ** 6)
    assert main_mod.main(["--status", "S", "--runs_dir", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:9] == ["1", point_id(configs[0]), "running", "8", "2/3", "task_0", "0.5,", "task_1",
                                    "0.25"]
    assert "0:01:0" in lines[2] and "alive: host elsewhere" in lines[2]
    assert "stale" in lines[3] and "DEAD: no heartbeat" in lines[3]
    assert main_mod.main(["--missing", "S", "--runs_dir", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out == "1,2,3\n"
    assert main_mod.main(["--status", "nope", "--runs_dir", str(tmp_path / "runs")]) == 2


def test_keep_checkpoints_value_is_checked_and_not_part_of_the_id(tmp_path, capsys):
    assert run_main(tmp_path, "--list", "custom.keep_checkpoints=some") == 2
    assert "'keep_checkpoints' is 'some'; allowed: 'all'" in capsys.readouterr().err
    a = make_manager("tinyTest").validate()[0]
    b = make_manager("tinyTest", overrides=["custom.keep_checkpoints=none"]).validate()[0]
    assert point_id(a) == point_id(b)


def test_console_filters_are_specific():
    import logging
    import warnings

    from experiments.console import quiet_console

    quiet_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_console()  # re-installs the specific filters after simplefilter
        warnings.warn("The `srun` command is available on your system but is not used. HINT: ...", stacklevel=1)
        warnings.warn("something else", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    lg = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    record = logging.LogRecord(lg.name, logging.INFO, "", 0, "💡 Tip: For seamless cloud logging, ...", (), None)
    assert not lg.filter(record)
    record = logging.LogRecord(lg.name, logging.INFO, "", 0, "GPU available: False", (), None)
    assert lg.filter(record)


def test_a_tag_rerun_with_other_overrides_is_a_changed_grid(tmp_path):
    from experiments.run_state import GridChangedError

    run_dir = RunDir(tmp_path, "T")
    run_dir.ensure_manifest("tinyTest", make_manager("tinyTest", overrides=["training.learning_rate=0.02"]).validate())
    same = make_manager("tinyTest", overrides=["training.learning_rate=0.02", "trainer.max_epochs=9"]).validate()
    run_dir.ensure_manifest("tinyTest", same)  # trainer settings are not part of the ids
    with pytest.raises(GridChangedError, match="the grid now differs"):
        run_dir.ensure_manifest("tinyTest", make_manager("tinyTest", overrides=["training.learning_rate=0.03"])
                                .validate())
