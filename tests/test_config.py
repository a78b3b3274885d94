"""Configuration system: defaults, task-specific values, unknown keys."""

import pytest

from core_code.create_model import init_config_architecture, resolve_architecture
from core_code.model_lib.abcMLP import init_config_abcMLP
from core_code.model_lib.abcStack import init_config_abcStack
from core_code.model_lib.Stack import init_config_Stack
from core_code.util.config_extractions import ConfigError, check_config, extract_taskconfig
from core_code.util.default_config import init_config_data, init_config_training
from core_code.util.trainer_config import init_config_trainer


def test_data_defaults_match_reference():
    cfg = init_config_data()
    assert (cfg["n_train"], cfg["n_val"], cfg["n_test"]) == (256, 128, 128)
    for split in ("train", "val", "test"):
        assert cfg[f"x_min_{split}"] == -1 and cfg[f"x_max_{split}"] == 1
        assert cfg[f"data_generators_{split}"] == "equi"
    assert cfg["noise_scale"] == 0.1


def test_training_defaults_match_reference():
    cfg = init_config_training()
    expected = {
        "shuffle": True, "batch_size": 64, "criterion": "MSELoss",
        "regularization_alpha": 0.1, "regularization_ord": 2, "update_rule": "Adam",
        "learning_rate": 1e-4, "batching_strategy": "data_deterministic",
    }
    assert {k: cfg[k] for k in expected} == expected


def test_num_workers_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="'num_workers' is no longer supported: batches are cut from in-memory"):
        init_config_training(num_workers=4)


def test_architecture_defaults_match_reference():
    mlp = init_config_abcMLP()
    assert (mlp["width"], mlp["depth"]) == (1024, 6)
    assert mlp["list_a"] == [-0.5, 0, 0, 0, 0, 0.5]
    assert mlp["list_b"] == [0.5] * 6
    # learning-rate exponents depend on the optimizer: left None here, resolved by make_optimizer
    assert mlp["c"] is None and mlp["list_c"] is None and mlp["list_c_bias"] is None
    assert mlp["list_a_bias"] == [-0.5] * 5 + [0] and mlp["list_b_bias"] == [0.5] * 5 + [0]
    assert mlp["hidden_layer_activation"] == "ReLU"
    stack = init_config_Stack()
    assert {k: stack[k] for k in ("bottleneck_width", "variable_width", "depth", "skip_conn",
                                   "linear_skip_conn", "linear_skip_conn_width",
                                   "hidden_bottleneck_activation", "hidden_layer_activation")} == {
        "bottleneck_width": 64, "variable_width": 128, "depth": 1, "skip_conn": False,
        "linear_skip_conn": False, "linear_skip_conn_width": 32,
        "hidden_bottleneck_activation": "Identity", "hidden_layer_activation": "ReLU"}
    abcstack = init_config_abcStack()
    assert abcstack["list_a"] == [-0.5, 0.5] and abcstack["list_b"] == [0.5, 0.5]
    assert (abcstack["bottleneck_width"], abcstack["variable_width"], abcstack["depth"]) == (64, 128, 1)


def test_trainer_defaults_and_passthrough():
    cfg = init_config_trainer()
    assert cfg == {"accelerator": "auto", "strategy": "auto", "devices": "auto", "deterministic": False,
                   "precision": 32, "enable_progress_bar": True, "max_epochs": 2}
    assert "max_time" not in cfg  # no hidden time limit: a run stopped by one is 'time_limit', not 'done'
    cfg = init_config_trainer(max_epochs=5, limit_train_batches=3, num_nodes=2)
    assert cfg["max_epochs"] == 5 and cfg["limit_train_batches"] == 3 and cfg["num_nodes"] == 2


@pytest.mark.parametrize("key", ["gpus", "auto_select_gpus", "auto_lr_find"])
def test_trainer_removed_key_says_what_replaced_it(key):
    with pytest.raises(ConfigError, match=f"'{key}' is no longer supported: use "):
        init_config_trainer(**{key: 1})


@pytest.mark.parametrize("init,bad,hint", [
    (init_config_data, "n_trian", "n_train"),
    (init_config_training, "learningrate", "learning_rate"),
    (init_config_trainer, "max_epoch", "max_epochs"),
    (init_config_abcMLP, "widht", "width"),
])
def test_unknown_key_names_key_and_closest(init, bad, hint):
    with pytest.raises(ConfigError) as err:
        init(**{bad: 1})
    assert f"'{bad}'" in str(err.value) and f"Did you mean '{hint}'" in str(err.value)


def test_architecture_accepts_keys_of_other_architectures_and_drops_them():
    cfg = init_config_architecture("abcMLP", width=8, depth=2, bottleneck_width=3, skip_conn=True)
    assert "bottleneck_width" not in cfg and "skip_conn" not in cfg and cfg["width"] == 8
    # the class's own completion takes only its own keys
    with pytest.raises(ConfigError, match="unknown architecture config \\(abcMLP\\) key 'skip_conn'"):
        init_config_abcMLP(skip_conn=True)


def test_resolve_architecture_expands_the_preset_and_merges_equal_task_values():
    cfg = resolve_architecture(architecture_key="abcMLP", d_in=1, d_out=2, depth={"task_0": 2, "task_1": 3},
                               width=8, parametrization="NTK")
    assert cfg["width"] == 8 and cfg["c"] is None and cfg["parametrization"] == "NTK"
    assert cfg["depth"] == {"task_0": 2, "task_1": 3}
    assert cfg["list_a"] == {"task_0": [0, 0.5], "task_1": [0, 0.5, 0.5]}
    assert cfg["list_b"] == [0, 0] or cfg["list_b"] == {"task_0": [0, 0], "task_1": [0, 0, 0]}
    plain = resolve_architecture(architecture_key="abcMLP", depth=3, parametrization="muP")
    assert plain["list_a"] == [-0.5, 0, 0.5] and plain["bias_tune"] == 1.0


def test_unknown_architecture_lists_known():
    with pytest.raises(ConfigError, match="known architectures: Stack, abcMLP, abcStack"):
        init_config_architecture("MLPX")


@pytest.mark.parametrize("name,a,b", [
    ("muP", [-0.5, 0, 0.5], [0.5, 0.5, 0.5]),
    ("NTK", [0, 0.5, 0.5], [0, 0, 0]),
    ("SP", [0, 0, 0], [0, 0.5, 0.5]),
])
def test_parametrization_preset_and_override(name, a, b):
    cfg = init_config_abcMLP(depth=3, parametrization=name)
    assert (cfg["list_a"], cfg["list_b"], cfg["c"], cfg["list_c"]) == (a, b, None, None)
    assert (cfg["list_a_bias"], cfg["list_b_bias"]) == ([a[0], a[0], 0], [b[0], b[0], 0])
    cfg = init_config_abcMLP(depth=3, parametrization=name, list_a=[1, 2, 3])
    assert cfg["list_a"] == [1, 2, 3] and cfg["list_b"] == b and cfg["list_a_bias"] == [1, 1, 0]


def test_lr_exponents_pure_function_per_optimizer():
    """lr_exponents(parametrization, update_rule, depth, list_c, list_c_bias, architecture_key): no torch."""
    from core_code.model_lib.parametrizations import lr_exponents, lr_exponents_for

    assert lr_exponents("muP", "Adam", 4) == {"list_c": [0.5, 1, 1, 0.5], "list_c_bias": [0.5, 0.5, 0.5, 0]}
    assert lr_exponents("muP", "SGD", 4) == {"list_c": [0] * 4, "list_c_bias": [0] * 4}
    assert lr_exponents("muP", "AdamW", 1) == {"list_c": [0.5], "list_c_bias": [0]}
    assert lr_exponents("NTK", "Adam", 3, list_c=0) == {"list_c": [0] * 3, "list_c_bias": [0] * 3}
    assert lr_exponents("muP", "Adam", 2, architecture_key="abcStack") == {
        "list_c": [0.5, 0.5] * 2, "list_c_bias": [0.5, 0] * 2}
    with pytest.raises(ConfigError, match="'NTK'.*defined for update_rule SGD only, not 'Adam'"):
        lr_exponents("NTK", "Adam", 3)
    cfg = init_config_abcMLP(depth=3, c=0.25)
    assert lr_exponents_for(cfg, "custom") == {"list_c": [0.25] * 3, "list_c_bias": [0.25, 0.25, 0]}
    assert lr_exponents_for(init_config_Stack(), "Adam") == {}


def test_unknown_parametrization():
    with pytest.raises(ConfigError, match="known parametrizations: NTK, SP, muP"):
        init_config_abcMLP(parametrization="mup")


# --------------------------------------------------------------- task-specific values
def test_check_config_none_when_nothing_task_specific():
    assert check_config(a=1, b=[1, 2], c="x") is None


def test_check_config_returns_task_set():
    assert check_config(a={"task_0": 1, "task_1": 2}, b=3, c={"task_1": 0, "task_0": 5}) == {0, 1}


@pytest.mark.parametrize("bad", ["task0", "task_01", "Task_1", "task_-1", "task_x", "task_1_2", 1])
def test_check_config_malformed_key_names_config_key(bad):
    with pytest.raises(ValueError, match="config key 'lr': malformed task key"):
        check_config(lr={"task_0": 1, bad: 2})


def test_check_config_task_set_mismatch_names_both_keys():
    with pytest.raises(ValueError, match="'b' names tasks \\[0, 2\\] but 'a' names tasks \\[0, 1\\]"):
        check_config(a={"task_0": 1, "task_1": 2}, b={"task_0": 1, "task_2": 2})


def test_check_config_empty_dict():
    with pytest.raises(ValueError, match="config key 'a': an empty dict"):
        check_config(a={})


def test_extract_taskconfig():
    cfg = {"a": {"task_0": 1, "task_1": 2}, "b": 3, "c": [1, 2]}
    assert extract_taskconfig(cfg, 0) == {"a": 1, "b": 3, "c": [1, 2]}
    assert extract_taskconfig(cfg, 1) == {"a": 2, "b": 3, "c": [1, 2]}
    with pytest.raises(ValueError, match="'a' has no value for 'task_2'"):
        extract_taskconfig(cfg, 2)
