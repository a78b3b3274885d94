"""Grid expansion: counts, order, shared keys, list-valued parameters."""

import pytest

from core_code.util.config_extractions import ConfigError
from experiments.grid import grid_config_lists, grid_size, varying_keys


def test_scalars_give_one_point():
    data, arch = grid_config_lists({"a": 1, "b": "x"}, {"c": None})
    assert data == [{"a": 1, "b": "x"}] and arch == [{"c": None}]


def test_order_first_axis_slowest_last_fastest():
    d1, d2 = grid_config_lists({"a": [1, 2], "b": 0}, {"c": ["x", "y", "z"]})
    assert len(d1) == len(d2) == 6 == grid_size({"a": [1, 2], "b": 0}, {"c": ["x", "y", "z"]})
    assert [(p["a"], q["c"]) for p, q in zip(d1, d2)] == [
        (1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert all(p["b"] == 0 for p in d1)


def test_shared_key_is_one_axis():
    data, arch = grid_config_lists({"d_in": [1, 2], "n": [5, 6]}, {"d_in": [1, 2], "w": 3})
    assert len(data) == 4
    assert all(p["d_in"] == q["d_in"] for p, q in zip(data, arch))
    assert [p["d_in"] for p in data] == [1, 1, 2, 2]


def test_shared_key_with_different_values_is_an_error():
    with pytest.raises(ConfigError, match="config key 'd_in' is in config dict 0 and config dict 1 with different"):
        grid_config_lists({"d_in": 1}, {"d_in": 2})
    with pytest.raises(ConfigError, match="'seed' is in configs_data and configs_custom with different values"):
        grid_config_lists({"seed": 1}, {"seed": 2}, names=["configs_data", "configs_custom"])


def test_list_valued_parameter_wrapped_in_list():
    (arch,) = grid_config_lists({"list_a": [[0, 0.5, 0.5]], "width": [8, 16]})
    assert [p["list_a"] for p in arch] == [[0, 0.5, 0.5], [0, 0.5, 0.5]]
    (arch,) = grid_config_lists({"list_a": [[0, 0.5], [1, 1]]})
    assert [p["list_a"] for p in arch] == [[0, 0.5], [1, 1]]


def test_task_specific_values_are_single_points_or_axes():
    (train,) = grid_config_lists({"lr": [{"task_0": 0.1, "task_1": 0.2}, 0.3], "bs": 64})
    assert [p["lr"] for p in train] == [{"task_0": 0.1, "task_1": 0.2}, 0.3]


def test_nested_three_dicts_count():
    dicts = ({"a": [1, 2, 3]}, {"b": [1, 2]}, {"c": [1, 2], "a": [1, 2, 3]})
    lists = grid_config_lists(*dicts)
    assert [len(x) for x in lists] == [12, 12, 12]
    assert varying_keys(*dicts) == ["a", "b", "c"]
    assert len({(x["a"], y["b"], z["c"]) for x, y, z in zip(*lists)}) == 12


def test_empty_list_is_an_error():
    with pytest.raises(ConfigError, match="'w' is an empty list"):
        grid_config_lists({"w": []})


@pytest.mark.parametrize("values,dup", [([8, 8], 8), ([[0, 1], [0, 1]], [0, 1]), ([None, 1, None], None)])
def test_duplicate_axis_values_are_refused(values, dup):
    with pytest.raises(ConfigError, match=f"lists the value {dup!r} more than once".replace("[", r"\[")):
        grid_config_lists({"a": values})


def test_equal_but_differently_typed_values_are_distinct():
    assert len(grid_config_lists({"a": [1, 1.5, True]})[0]) == 3
