"""Each 'Making changes' recipe of the README, done exactly as written there."""

import csv
import json
import sys
import textwrap

import pytest
import torch

import main as main_mod
from core_code.create_data import CreateData
from core_code.create_model import create_model, register_architecture, unregister_architecture
from core_code.lightning_multitask import LightningMultitask
from core_code.util import batching, criteria, default_config, function_lib, optimizers
from core_code.util.lightning import DataModule
from experiments import EXPERIMENTS, load_experiment, register_experiment

TINY_DATA = {"d_in": 1, "d_out": 1, "f_true": "sine", "n_train": 16, "n_val": 8, "n_test": 0}


@pytest.mark.slow
def test_recipe_new_experiment(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "myexp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "configs.py").write_text(textwrap.dedent("""
        # Launch: python main.py --experiment myexp   Expect: one point, done in seconds.
        configs_data = {"d_in": 1, "d_out": 1, "f_true": "sine", "n_train": 16, "n_val": 8, "n_test": 0}
        configs_architecture = {"architecture_key": "abcMLP", "width": [4, 8], "depth": 2, "d_in": 1, "d_out": 1}
        configs_training = {"batch_size": 8, "update_rule": "SGD", "learning_rate": 0.01}
        configs_custom = {"seed": 0, "my_option": 3}
        configs_trainer = {"max_epochs": 1, "enable_progress_bar": False}
    """))
    (pkg / "logging_callback.py").write_text("from experiments.logging import LoggingCallback\n")
    (pkg / "manager.py").write_text(textwrap.dedent("""
        from experiments.util import BasicManager

        class Manager(BasicManager):
            experiment = "myexp"
            CUSTOM_DEFAULTS = {**BasicManager.CUSTOM_DEFAULTS, "my_option": 1}

            def logging_callback_class(self):
                from myexp.logging_callback import LoggingCallback
                return LoggingCallback
    """))
    monkeypatch.syspath_prepend(str(tmp_path))

    def loader():
        from myexp import configs, manager
        return manager.Manager, configs

    monkeypatch.setitem(EXPERIMENTS, "myexp", loader)
    with pytest.raises(ValueError, match="already registered"):
        register_experiment("myexp", loader)
    assert main_mod.main(["--experiment", "myexp", "--runs_dir", str(tmp_path / "runs"), "--wandb", "disabled",
                          "--experimentbatch_name", "T"]) == 0
    cfg = json.loads((tmp_path / "runs" / "T" / "config2" / "config.json").read_text())
    assert cfg["experiment"] == "myexp" and cfg["custom"]["my_option"] == 3
    assert cfg["architecture"]["width"] == 8
    sys.modules.pop("myexp", None)


def test_recipe_config_item(monkeypatch):
    monkeypatch.setitem(default_config.TRAINING_DEFAULTS, "warmup_epochs", 0)
    assert default_config.init_config_training()["warmup_epochs"] == 0
    assert default_config.init_config_training(warmup_epochs=5)["warmup_epochs"] == 5
    with pytest.raises(ValueError, match="Did you mean 'warmup_epochs'"):
        default_config.init_config_training(warmup_epoch=5)


def test_recipe_target_function():
    function_lib.register_function("double", lambda x, p: 2 * x[:, 0])
    try:
        data = CreateData(**dict(TINY_DATA, f_true="double"))
        val = data.create_data("val")
        torch.testing.assert_close(val["y"][:, 0], 2 * val["x"][:, 0])
    finally:
        del function_lib.FUNCTIONS["double"]


class TwoLayer(torch.nn.Module):
    """A user architecture defined outside core_code."""

    def __init__(self, d_in, d_out, hidden=4, **_):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.net(x)


@pytest.mark.slow
def test_recipe_architecture_trains_for_an_epoch(tmp_path):
    register_architecture("TwoLayer", TwoLayer, {"hidden": 4})
    try:
        manager_cls, configs = load_experiment("tinyTest")
        arch = {"architecture_key": "TwoLayer", "hidden": [3, 5], "d_in": 1, "d_out": 7}
        m = manager_cls(configs.configs_data, arch, configs.configs_training,
                        dict(configs.configs_trainer, max_epochs=1), configs.configs_custom,
                        runs_dir=tmp_path, wandb_mode="disabled")
        assert m.run("T") == {1: "done", 2: "done"}
        rows = list(csv.DictReader((tmp_path / "T" / "config2" / "metrics.csv").open()))
        assert len(rows) == 1
        assert isinstance(create_model(**dict(arch, hidden=5)), TwoLayer)
    finally:
        unregister_architecture("TwoLayer")


def test_recipe_criterion_and_optimizer(monkeypatch):
    monkeypatch.setitem(criteria.CRITERIA, "L1Loss", lambda: torch.nn.functional.l1_loss)
    monkeypatch.setitem(optimizers.UPDATE_RULES, "RMSprop", torch.optim.RMSprop)
    model = torch.nn.Linear(1, 1)
    lm = LightningMultitask(model, criterion="L1Loss", update_rule="RMSprop", learning_rate=0.1)
    (opt,) = lm.configure_optimizers()
    assert isinstance(opt, torch.optim.RMSprop)
    pred, y = torch.tensor([[1.0], [3.0]]), torch.zeros(2, 1)
    assert lm.criterion(0)(pred, y).item() == pytest.approx(2.0)


def test_recipe_batching_strategy(monkeypatch):
    def whole_split(data, config, seed, rank=0, world_size=1):
        return [data]

    monkeypatch.setitem(batching.BATCHING_STRATEGIES, "whole", whole_split)
    dm = DataModule(CreateData(**TINY_DATA), batching_strategy="whole")
    dm.setup()
    (batch,) = list(dm.train_dataloader())
    assert batch["x"].shape == (16, 1)


@pytest.mark.slow
def test_recipe_logged_metric(tmp_path):
    from experiments.tinyTest.logging_callback import LoggingCallback

    class WithWeightNorm(LoggingCallback):
        def extra_metrics(self, trainer, pl_module, split):
            if split != "train":
                return {}
            norm = sum(p.detach().pow(2).sum() for p in pl_module.parameters()).sqrt()
            return {"train/weight_norm": float(norm)}

    manager_cls, configs = load_experiment("tinyTest")

    class Manager(manager_cls):
        def logging_callback_class(self):
            return WithWeightNorm

    m = Manager(configs.configs_data, dict(configs.configs_architecture, width=8), configs.configs_training,
                dict(configs.configs_trainer, max_epochs=2), configs.configs_custom,
                runs_dir=tmp_path, wandb_mode="disabled")
    assert m.run("T") == {1: "done"}
    rows = list(csv.DictReader((tmp_path / "T" / "config1" / "metrics.csv").open()))
    assert len(rows) == 2 and all(float(r["train/weight_norm"]) > 0 for r in rows)


def readme_files(section: str) -> dict[str, str]:
    """``{path: code}`` of the README code blocks of ``section`` whose first line names a file."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end > 0 else None]
    files = {}
    for block in body.split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        first = code.splitlines()[0]
        if first.startswith("# experiments/"):
            files[first[2:].strip()] = code
    return files


@pytest.mark.slow
def test_recipe_your_first_experiment(tmp_path, monkeypatch):
    """The README's "Your first experiment", file by file, run through main.py."""
    import experiments

    files = readme_files("Your first experiment")
    assert sorted(files) == ["experiments/myFirst/configs.py", "experiments/myFirst/logging_callback.py",
                             "experiments/myFirst/manager.py"]
    for path, code in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    (tmp_path / "experiments" / "myFirst" / "__init__.py").write_text("")
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(tmp_path / "experiments")])

    monkeypatch.setitem(EXPERIMENTS, "myFirst", experiments._loader("myFirst"))  # as the README says
    try:
        runs = tmp_path / "runs"
        assert main_mod.main(["--experiment", "myFirst", "--runs_dir", str(runs), "--wandb", "disabled",
                              "--experimentbatch_name", "T"]) == 0
        for i in (1, 2):
            summary = json.loads((runs / "T" / f"config{i}" / "summary.json").read_text())
            assert summary["status"] == "done" and summary["epochs"] == 40
            final = summary["final"]
            for t in (0, 1):  # "both tasks well below their baselines", as the comment promises
                ratio = final[f"validation/loss_in_domain_task_{t}"] / final[f"baseline/validation_loss_in_domain_task_{t}"]
                assert ratio < 0.2, (i, t, ratio)
    finally:
        function_lib.FUNCTIONS.pop("sineAndBump", None)
        for mod in [m for m in sys.modules if m.startswith("experiments.myFirst")]:
            sys.modules.pop(mod)
