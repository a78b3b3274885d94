"""Models: registry, abc-parametrization (init, multipliers, presets, lr), hooks, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core_code.create_model import (
    ARCHITECTURE_DEFAULTS,
    ARCHITECTURES,
    CreateModel,
    architecture_keys,
    register_architecture,
    unregister_architecture,
)
from core_code.model_lib.abcMLP import abcMLP
from core_code.model_lib.abcStack import abcStack
from core_code.model_lib.layers import ACTIVATIONS, AbcLinear
from core_code.model_lib.Stack import Stack
from core_code.util.config_extractions import ConfigError

SMALL = {
    "abcMLP": {"width": 16, "depth": 3},
    "Stack": {"variable_width": 16, "bottleneck_width": 8, "depth": 3},
    "abcStack": {"variable_width": 16, "bottleneck_width": 8, "depth": 1},
}

# FUNCTIONS.md table, written out independently of parametrizations.py:
# name -> (a first, hidden, last), (b first, hidden, last)
TABLE = {
    "muP": ((-0.5, 0.0, 0.5), (0.5, 0.5, 0.5)),
    "NTK": ((0.0, 0.5, 0.5), (0.0, 0.0, 0.0)),
    "SP": ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _params_ids(params):
    return [id(p) for p in params]


# ------------------------------------------------------------------ registry / shapes
def test_registry_holds_the_three_architectures():
    assert set(ARCHITECTURES) == {"abcMLP", "Stack", "abcStack"}
    assert ARCHITECTURES["abcMLP"] is abcMLP
    assert ARCHITECTURES["Stack"] is Stack
    assert ARCHITECTURES["abcStack"] is abcStack


@pytest.mark.parametrize("key", sorted(SMALL))
def test_every_architecture_builds_with_defaults_and_forward_shape(key):
    model = CreateModel(architecture_key=key, d_in=3, d_out=2, **SMALL[key])
    assert isinstance(model, nn.Module)
    assert model.config_architecture["d_in"] == 3
    out = model(torch.randn(7, 3))
    assert out.shape == (7, 2)
    # Full defaults (only d_in/d_out given) build as well.
    model = ARCHITECTURES[key](d_in=1, d_out=1)
    assert model(torch.randn(4, 1)).shape == (4, 1)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_abcMLP_layer_shapes(depth):
    model = CreateModel(architecture_key="abcMLP", d_in=3, d_out=2, width=8, depth=depth)
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    dims = [3] + [8] * (depth - 1) + [2]
    assert shapes == [(dims[i + 1], dims[i]) for i in range(depth)]
    assert model.width == 8
    assert model(torch.randn(5, 3)).shape == (5, 2)
    # Batched 3-d input goes through the F.linear path and agrees with the 2-d path.
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(model(x), model(x.reshape(10, 3)).reshape(2, 5, 2))


def test_stack_block_dims_and_skips():
    """Original design: linear_2(concat(act(linear_1(x)), x, linear_skip(x))) in every block."""
    model = CreateModel(
        architecture_key="Stack", d_in=3, d_out=2, variable_width=16, bottleneck_width=8, depth=3,
        skip_conn=True, linear_skip_conn=True, linear_skip_conn_width=4,
    )
    dims = [(b.linear_1.in_features, b.linear_1.out_features, b.linear_2.in_features, b.linear_2.out_features)
            for b in model.layers]
    # linear_2 inputs: variable_width 16 + block input (3 or 8) + linear skip 4
    assert dims == [(3, 16, 16 + 3 + 4, 8), (8, 16, 16 + 8 + 4, 8), (8, 16, 16 + 8 + 4, 2)]
    assert [b.skip_conn for b in model.layers] == [True, True, True]
    assert all((b.linear_skip.in_features, b.linear_skip.out_features) == (b.in_features, 4) for b in model.layers)
    assert model(torch.randn(5, 3)).shape == (5, 2)
    block = model.layers[0]
    x = torch.randn(5, 3)
    concat = torch.cat([block.activation(block.linear_1(x)), x, block.linear_skip(x)], dim=1)
    torch.testing.assert_close(block(x), block.linear_2(concat))
    assert model.linear_layers() == [m for b in model.layers for m in (b.linear_1, b.linear_skip, b.linear_2)]


@pytest.mark.parametrize("skip_conn,linear_skip,in_2", [(False, False, 16), (True, False, 19), (False, True, 20),
                                                        (True, True, 23)])
def test_stack_skip_conn_acts_at_depth_one(skip_conn, linear_skip, in_2):
    """Depth 1 (d_in 3 -> d_out 2): skip_conn concatenates x, so linear_2 has 16 + 3 inputs (+ 4 linear skip)."""
    one = CreateModel(architecture_key="Stack", d_in=3, d_out=2, variable_width=16, skip_conn=skip_conn,
                      linear_skip_conn=linear_skip, linear_skip_conn_width=4)
    (block,) = one.layers
    assert (block.linear_1.in_features, block.linear_2.in_features, block.linear_2.out_features) == (3, in_2, 2)
    assert (block.linear_skip is not None) == linear_skip
    x = torch.randn(5, 3)
    parts = [block.activation(block.linear_1(x))] + ([x] if skip_conn else []) + (
        [block.linear_skip(x)] if linear_skip else [])
    torch.testing.assert_close(one(x), block.linear_2(torch.cat(parts, dim=1)))


def test_stack_bias_init_is_pytorch_default_uniform_times_bias_tune():
    """nn.Linear default: bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), sd 1/sqrt(3 fan_in); bias_tune in forward."""
    model = Stack(d_in=4, d_out=3, variable_width=20000, bottleneck_width=8, depth=2, bias_tune=0.5)
    lin1, lin2 = model.layers[0].linear_1, model.layers[0].linear_2
    assert lin1.bias.abs().max().item() <= 0.5 and lin1.bias.abs().max().item() > 0.49  # bound 1/sqrt(4)
    assert lin1.bias.std().item() == pytest.approx(1 / (3 * 4) ** 0.5, rel=0.03)  # 20000 draws: sd error 0.5%
    assert lin2.bias.abs().max().item() <= 20000 ** -0.5
    assert lin1.weight.abs().max().item() <= 0.5
    x = torch.randn(3, 4)
    torch.testing.assert_close(lin1(x), x @ lin1.weight.T + 0.5 * lin1.bias)
    torch.testing.assert_close(lin1.effective_bias(), 0.5 * lin1.bias)


def test_abcStack_exponents_per_block_and_n_is_variable_width():
    list_a = [-0.5, 0.5, 0.0, 0.25, 0.0, 1.0]
    list_b = [0.5, 0.5, 0.0, 1.0, 0.25, 0.5]
    model = CreateModel(
        architecture_key="abcStack", d_in=3, d_out=2, variable_width=16, bottleneck_width=8, depth=3,
        list_a=list_a, list_b=list_b, c=0.5,
    )
    lins = model.linear_layers()
    assert [lin.a for lin in lins] == list_a
    assert [lin.b for lin in lins] == list_b
    assert all(lin.n == 16 for lin in lins)
    assert [(lin.in_features, lin.out_features) for lin in lins] == [
        (3, 16), (16, 8), (8, 16), (16, 8), (8, 16), (16, 2)
    ]
    assert model(torch.randn(5, 3)).shape == (5, 2)
    # biases: linear_1 (n outputs) takes its block's linear_1 exponents, linear_2 (O(1) outputs) 0
    assert [lin.a_bias for lin in lins] == [-0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [lin.b_bias for lin in lins] == [0.5, 0.0, 0.0, 0.0, 0.25, 0.0]
    groups = model.lr_multipliers("Adam")  # explicit c wins over the preset under every optimizer
    assert [mult for _, mult in groups] == [16 ** -0.5, 1.0]  # weights and linear_1 biases; linear_2 biases
    assert sorted(i for params, _ in groups for i in _params_ids(params)) == sorted(_params_ids(model.parameters()))
    assert _params_ids(groups[1][0]) == _params_ids([lin.bias for lin in lins[1::2]])


@pytest.mark.parametrize("update_rule,c", [("SGD", [0.0, 0.0]), ("Adam", [0.5, 0.5])])
def test_abcStack_muP_preset_per_block_is_first_and_last_layer(update_rule, c):
    """abcStack muP: each block in -> n -> out takes the (first, last) columns; biases first / 0."""
    model = abcStack(d_in=3, d_out=2, variable_width=16, bottleneck_width=8, depth=2)
    lins = model.linear_layers()
    assert [lin.a for lin in lins] == [-0.5, 0.5] * 2 and [lin.b for lin in lins] == [0.5] * 4
    assert [(lin.a_bias, lin.b_bias) for lin in lins] == [(-0.5, 0.5), (0.0, 0.0)] * 2
    assert model.lr_exponents(update_rule) == {"list_c": c * 2, "list_c_bias": [c[0], 0.0] * 2}
    with pytest.raises(ConfigError, match=r"'parametrization' is 'NTK'.*update_rule SGD only, not 'Adam'"):
        abcStack(d_in=3, d_out=2, variable_width=16, parametrization="NTK").lr_multipliers("Adam")


def test_task_specific_config_returns_one_model_per_task():
    models = CreateModel(architecture_key="abcMLP", d_in=1, d_out=2, depth=2, width={"task_0": 8, "task_1": 32})
    assert set(models) == {"task_0", "task_1"}
    assert models["task_0"].width == 8 and models["task_1"].width == 32
    assert models["task_1"].layers[0].weight.shape == (32, 1)
    assert models["task_0"] is not models["task_1"]
    # The architecture itself may differ per task.
    models = CreateModel(
        architecture_key={"task_0": "abcMLP", "task_1": "Stack"}, d_in=1, d_out=1,
        width=8, depth=2, variable_width=8, bottleneck_width=4,
    )
    assert isinstance(models["task_0"], abcMLP) and isinstance(models["task_1"], Stack)


def test_other_architectures_keys_are_accepted_and_dropped():
    model = CreateModel(architecture_key="abcMLP", d_in=1, d_out=1, width=8, depth=2, variable_width=99)
    assert "variable_width" not in model.config_architecture


# ---------------------------------------------------------------- abc initialization
@pytest.mark.parametrize("b", [0.0, 0.25, 0.5, 1.0])
def test_abc_init_std_is_n_to_minus_b(b):
    n = 1024
    layer = AbcLinear(n, n, a=0.0, b=b, n=n)
    assert abs(layer.weight.std().item() / n ** -b - 1) < 0.03
    assert abs(layer.weight.mean().item()) < 3 * n ** -b / n
    assert abs(layer.bias.std().item() - 1) < 0.2  # bias ~ N(0, 1), only n samples


def test_abcMLP_init_uses_width_not_fan_in_for_every_layer():
    width, d_in = 1024, 64
    model = abcMLP(d_in=d_in, d_out=64, width=width, depth=3, list_b=[0.5, 1.0, 0.25], list_a=[0, 0, 0])
    for layer, b in zip(model.layers, [0.5, 1.0, 0.25]):
        assert layer.n == width
        assert abs(layer.weight.std().item() / width ** -b - 1) < 0.03


def test_abc_forward_multiplier_is_exact():
    n = 16
    layer = AbcLinear(3, 2, a=0.5, b=0.0, n=n, bias_tune=0.5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]))
        layer.bias.copy_(torch.tensor([2.0, -6.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]])
    expected = n ** -0.5 * (x @ layer.weight.T) + layer.bias * 0.5
    assert torch.equal(layer(x), expected)
    assert torch.equal(layer(x.unsqueeze(0)), expected.unsqueeze(0))  # non-2d path
    assert layer.multiplier == 0.25 and isinstance(layer.multiplier, float)
    # a = -1/2 (muP first layer) multiplies by sqrt(n)
    assert AbcLinear(3, 2, a=-0.5, b=0.5, n=n).multiplier == 4.0


def test_abcMLP_forward_composes_layers_and_activations():
    model = abcMLP(d_in=2, d_out=1, width=4, depth=3, hidden_layer_activation="Tanh")
    x = torch.randn(6, 2)
    h = x
    for i, layer in enumerate(model.layers):
        h = layer.multiplier * h @ layer.weight.T + layer.n ** -layer.a_bias * layer.bias
        if i < 2:
            h = torch.tanh(h)
    torch.testing.assert_close(model(x), h)


# --------------------------------------------------------------------------- presets
# name -> update_rule -> learning-rate exponents c (first, hidden, last), the table of docs/parametrizations.md
C_TABLE = {
    "muP": {"SGD": (0.0, 0.0, 0.0), "Adam": (0.5, 1.0, 0.5), "AdamW": (0.5, 1.0, 0.5)},
    "NTK": {"SGD": (0.0, 0.0, 0.0)},
    "SP": {"SGD": (0.0, 0.0, 0.0), "Adam": (0.0, 0.0, 0.0), "AdamW": (0.0, 0.0, 0.0)},
}


def _layers(first, hidden, last, depth):
    return [first] if depth == 1 else [first] + [hidden] * (depth - 2) + [last]


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("depth", range(1, 7))
def test_presets_match_the_table_weights_and_biases(name, depth):
    model = abcMLP(d_in=2, d_out=1, width=4, depth=depth, parametrization=name)
    (a_f, a_h, a_l), (b_f, b_h, b_l) = TABLE[name]
    assert [layer.a for layer in model.layers] == _layers(a_f, a_h, a_l, depth)
    assert [layer.b for layer in model.layers] == _layers(b_f, b_h, b_l, depth)
    # biases: layers with `width` outputs take the first layer's (a, b); the last layer's is (0, 0)
    assert [layer.a_bias for layer in model.layers] == [a_f] * (depth - 1) + [0.0]
    assert [layer.b_bias for layer in model.layers] == [b_f] * (depth - 1) + [0.0]
    assert len(model.layers) == depth
    for rule, (c_f, c_h, c_l) in C_TABLE[name].items():
        assert model.lr_exponents(rule) == {"list_c": _layers(c_f, c_h, c_l, depth),
                                            "list_c_bias": [c_f] * (depth - 1) + [0.0]}


def test_mup_adam_multipliers_per_layer_and_bias():
    """muP + Adam, width 64, depth 3: weights 64^-(1/2, 1, 1/2), hidden biases 64^-1/2, output bias 1."""
    model = abcMLP(d_in=2, d_out=3, width=64, depth=3)
    groups = model.lr_multipliers("Adam")
    by_param = {id(p): m for params, m in groups for p in params}
    l0, l1, l2 = model.layers
    assert [by_param[id(p)] for p in (l0.weight, l1.weight, l2.weight)] == [0.125, 1 / 64, 0.125]
    assert [by_param[id(p)] for p in (l0.bias, l1.bias, l2.bias)] == [0.125, 0.125, 1.0]
    assert [m for _, m in groups] == [0.125, 1 / 64, 1.0]  # equal multipliers share one group
    assert [m for _, m in model.lr_multipliers("SGD")] == [1.0]


@pytest.mark.parametrize("name,rule,allowed", [("NTK", "Adam", "SGD"), ("NTK", "AdamW", "SGD"),
                                               ("muP", "custom", "SGD, Adam, AdamW"),
                                               ("SP", "RMSprop", "SGD, Adam, AdamW")])
def test_preset_undefined_for_the_optimizer_is_a_config_error(name, rule, allowed):
    model = abcMLP(d_in=1, d_out=1, width=8, depth=3, parametrization=name)
    with pytest.raises(ConfigError, match=rf"'parametrization' is '{name}'.*update_rule {allowed} only, "
                                          rf"not '{rule}'.*'list_c'"):
        model.lr_multipliers(rule)
    # explicit learning-rate exponents work with any optimizer
    explicit = abcMLP(d_in=1, d_out=1, width=8, depth=3, parametrization=name, list_c=[0, 0.5, 1])
    assert explicit.lr_exponents(rule) == {"list_c": [0.0, 0.5, 1.0], "list_c_bias": [0.0, 0.0, 0.0]}


def test_default_abcMLP_is_muP_depth_6():
    model = abcMLP(d_in=1, d_out=1, width=8)
    assert [layer.a for layer in model.layers] == [-0.5, 0, 0, 0, 0, 0.5]
    assert [layer.b for layer in model.layers] == [0.5] * 6
    assert model.lr_exponents("Adam")["list_c"] == [0.5, 1, 1, 1, 1, 0.5]


def test_explicit_lists_override_preset():
    model = abcMLP(d_in=1, d_out=1, width=8, depth=3, parametrization="NTK", list_a=[1.0, 2.0, 3.0], c=0.5)
    assert [layer.a for layer in model.layers] == [1.0, 2.0, 3.0]
    assert [layer.b for layer in model.layers] == [0.0, 0.0, 0.0]  # list_b still from NTK
    assert [layer.a_bias for layer in model.layers] == [1.0, 1.0, 0.0]  # the first layer's a
    assert model.lr_exponents("Adam") == {"list_c": [0.5] * 3, "list_c_bias": [0.5, 0.5, 0.0]}
    biased = abcMLP(d_in=1, d_out=1, width=8, depth=3, list_a_bias=[0, 0, 1], list_b_bias=0.25,
                    list_c=[1, 2, 3], list_c_bias=[4, 5, 6])
    assert [(lay.a_bias, lay.b_bias) for lay in biased.layers] == [(0.0, 0.25), (0.0, 0.25), (1.0, 0.25)]
    assert biased.lr_exponents("SGD") == {"list_c": [1.0, 2.0, 3.0], "list_c_bias": [4.0, 5.0, 6.0]}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_effective_bias_at_init_is_standard_normal_times_bias_tune(name):
    """b_bias = -a_bias in every preset: bias_tune * n^(-a_bias) * N(0, n^(-2 b_bias)) = N(0, bias_tune^2)."""
    model = abcMLP(d_in=1, d_out=4000, width=4000, depth=2, parametrization=name, bias_tune=0.5)
    for layer in model.layers:
        assert layer.effective_bias().std().item() == pytest.approx(0.5, rel=0.06)  # 4000 draws: sd error 1.1%
    x = torch.randn(3, 1)
    first = model.layers[0]
    torch.testing.assert_close(first(x), first.multiplier * x @ first.weight.T + first.effective_bias())
    assert first.bias_multiplier == pytest.approx(0.5 * 4000 ** -first.a_bias)


# ----------------------------------------------------------------------- lr, reset, hooks
@pytest.mark.parametrize("c", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("rule", ["SGD", "Adam", "custom"])
def test_lr_multipliers_cover_every_param_once(c, rule):
    model = abcMLP(d_in=2, d_out=3, width=64, depth=4, c=c)
    groups = model.lr_multipliers(rule)
    ids = [i for params, _ in groups for i in _params_ids(params)]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(_params_ids(model.parameters()))
    # a scalar c is every weight's and every n-output bias's exponent; the output bias stays at 0
    assert [mult for _, mult in groups] == ([1.0] if c == 0 else [64.0 ** -c, 1.0])
    stack = Stack(d_in=2, d_out=3, variable_width=8, bottleneck_width=4, depth=2)
    [(params, mult)] = stack.lr_multipliers(rule)
    assert mult == 1.0 and sorted(_params_ids(params)) == sorted(_params_ids(stack.parameters()))


@pytest.mark.parametrize("key", sorted(SMALL))
def test_reset_parameters_redraws(key):
    model = CreateModel(architecture_key=key, d_in=3, d_out=2, **SMALL[key])
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    after = list(model.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    layer = AbcLinear(4, 4, a=0, b=0.5, n=4)
    w = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(w, layer.weight)


def test_forward_hooks_see_each_layer():
    model = abcMLP(d_in=3, d_out=2, width=8, depth=4)
    seen = []
    handles = [
        layer.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape, out.shape)))
        for layer in model.layers
    ]
    model(torch.randn(5, 3))
    for h in handles:
        h.remove()
    assert [s[0] for s in seen] == list(model.layers)
    assert [s[1:] for s in seen] == [((5, 3), (5, 8)), ((5, 8), (5, 8)), ((5, 8), (5, 8)), ((5, 8), (5, 2))]
    # The activation's output is the next layer's input.
    acts = []
    model.activations[0].register_forward_hook(lambda m, i, o: acts.append(o))
    ins = []
    model.layers[1].register_forward_hook(lambda m, i, o: ins.append(i[0]))
    model(torch.randn(5, 3))
    assert torch.equal(acts[0], ins[0])


# ----------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_named_activations(name):
    model = abcMLP(d_in=1, d_out=1, width=4, depth=2, hidden_layer_activation=name)
    assert isinstance(model.activations[0], ACTIVATIONS[name])


@pytest.mark.parametrize("callback", [torch.sin, nn.Softplus, nn.Softplus()])
def test_custom_activation_callback(callback):
    model = abcMLP(
        d_in=1, d_out=1, width=4, depth=3, hidden_layer_activation="custom",
        hidden_layer_activation_callback=callback,
    )
    assert model.activations[0] is not model.activations[1]
    x = torch.randn(3, 1)
    h = model.layers[0](x)
    expected_act = torch.sin(h) if callback is torch.sin else nn.functional.softplus(h)
    torch.testing.assert_close(model.activations[0](h), expected_act)
    assert model(x).shape == (3, 1)


def test_bottleneck_activation_between_blocks():
    model = Stack(
        d_in=1, d_out=1, variable_width=4, bottleneck_width=3, depth=3, hidden_bottleneck_activation="Sigmoid"
    )
    assert len(model.activations) == 2 and all(isinstance(a, nn.Sigmoid) for a in model.activations)
    x = torch.randn(2, 1)
    h = torch.sigmoid(model.layers[1](torch.sigmoid(model.layers[0](x))))
    torch.testing.assert_close(model(x), model.layers[2](h))


# ---------------------------------------------------------------------------- errors
BAD = [
    ({"architecture_key": "MLPX"}, r"'architecture_key'.*known architectures: Stack, abcMLP, abcStack"),
    ({"architecture_key": None}, r"'architecture_key'.*known architectures"),
    ({"architecture_key": "abcMLP", "d_in": None}, r"'d_in'"),
    ({"architecture_key": "abcMLP", "d_out": None}, r"'d_out'"),
    ({"architecture_key": "abcMLP", "depth": 0}, r"'depth'"),
    ({"architecture_key": "abcMLP", "depth": 0, "list_a": [], "list_b": [], "c": 0}, r"'depth'"),
    ({"architecture_key": "abcMLP", "width": 0}, r"'width'"),
    ({"architecture_key": "abcMLP", "width": 2.5}, r"'width'"),
    ({"architecture_key": "abcMLP", "depth": 3, "list_a": [0, 0]}, r"'list_a' has length 2.*length 3"),
    ({"architecture_key": "abcMLP", "depth": 3, "list_b": [0] * 4}, r"'list_b' has length 4.*length 3"),
    ({"architecture_key": "abcMLP", "list_a": "muP"}, r"'list_a'"),
    ({"architecture_key": "abcMLP", "parametrization": "XYZ"}, r"'parametrization'.*NTK, SP, muP"),
    ({"architecture_key": "abcMLP", "hidden_layer_activation": "Swish"},
     r"'hidden_layer_activation'.*known activations: GELU, Identity, ReLU, Sigmoid, Tanh, custom"),
    ({"architecture_key": "abcMLP", "hidden_layer_activation": "custom"}, r"'hidden_layer_activation_callback'"),
    ({"architecture_key": "abcMLP", "depth": 1, "hidden_layer_activation": "custom"},
     r"'hidden_layer_activation_callback'"),
    ({"architecture_key": "abcMLP", "hidden_layer_activation_callback": torch.sin},
     r"'hidden_layer_activation_callback'.*'custom'"),
    ({"architecture_key": "abcMLP", "hidden_layer_activation": "custom", "hidden_layer_activation_callback": 3},
     r"'hidden_layer_activation_callback'"),
    ({"architecture_key": "abcMLP", "widht": 8}, r"'widht'.*Did you mean 'width'"),
    ({"architecture_key": "abcMLP", "c": "x"}, r"'c' must be a number"),
    ({"architecture_key": "abcMLP", "c": 0, "list_c": [0] * 6}, r"'c' \(0\) and 'list_c' \(\[0, 0, 0, 0, 0, 0\]\)"),
    ({"architecture_key": "abcMLP", "depth": 3, "list_c": [0, 1]}, r"'list_c' has length 2.*length 3"),
    ({"architecture_key": "abcMLP", "depth": 3, "list_c_bias": [0]}, r"'list_c_bias' has length 1.*length 3"),
    ({"architecture_key": "abcMLP", "depth": 3, "list_a_bias": "x"}, r"'list_a_bias' must be a list of 3"),
    ({"architecture_key": "abcMLP", "depth": 2, "list_b_bias": [0, True]}, r"'list_b_bias' must contain numbers"),
    ({"architecture_key": "abcMLP", "parametrization": None}, r"'list_a' is None and 'parametrization' is None"),
    ({"architecture_key": "Stack", "variable_width": 0}, r"'variable_width'"),
    ({"architecture_key": "Stack", "depth": 2, "bottleneck_width": None}, r"'bottleneck_width'"),
    ({"architecture_key": "Stack", "skip_conn": "yes"}, r"'skip_conn'"),
    ({"architecture_key": "Stack", "linear_skip_conn": True, "linear_skip_conn_width": 0},
     r"'linear_skip_conn_width'"),
    ({"architecture_key": "Stack", "hidden_bottleneck_activation": "Nope"}, r"'hidden_bottleneck_activation'"),
    ({"architecture_key": "Stack", "hidden_bottleneck_activation": "custom"},
     r"'hidden_bottleneck_activation_callback'"),
    ({"architecture_key": "abcStack", "depth": 2, "list_a": [-0.5, 0.5]}, r"'list_a' has length 2.*2 \* depth.*length 4"),
    ({"architecture_key": "abcStack", "list_b": [0.5]}, r"'list_b' has length 1.*length 2"),
    ({"architecture_key": "abcStack", "hidden_layer_activation": "Nope"}, r"'hidden_layer_activation'"),
    ({"architecture_key": "abcMLP", "width": {"task_0": 4, "task_one": 8}}, r"'width'.*malformed task key"),
]


@pytest.mark.parametrize("config,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises_config_error_naming_the_key(config, match):
    full = {"d_in": 1, "d_out": 1, **config}
    if full.get("architecture_key") == "abcMLP":
        full.setdefault("width", 4)
    with pytest.raises(ConfigError, match=match):
        CreateModel(**full)


# ----------------------------------------------------------------- user architectures
class Tiny(nn.Module):
    """A user's architecture: a single linear map with a scale."""

    def __init__(self, **config_architecture):
        super().__init__()
        self.config_architecture = config_architecture
        self.scale = config_architecture["tiny_scale"]
        self.lin = nn.Linear(config_architecture["d_in"], config_architecture["d_out"])

    def forward(self, x):
        return self.scale * self.lin(x)


@pytest.fixture
def tiny():
    register_architecture("Tiny", Tiny, {"tiny_scale": 2.0})
    yield
    unregister_architecture("Tiny")


def test_register_architecture_from_outside(tiny):
    assert ARCHITECTURES["Tiny"] is Tiny
    assert "tiny_scale" in architecture_keys()
    model = CreateModel(architecture_key="Tiny", d_in=3, d_out=2)
    assert isinstance(model, Tiny) and model.scale == 2.0
    assert model(torch.randn(4, 3)).shape == (4, 2)
    assert CreateModel(architecture_key="Tiny", d_in=3, d_out=2, tiny_scale=5.0).scale == 5.0
    # Its keys are valid in other architectures' configs (one grid may switch) ...
    CreateModel(architecture_key="abcMLP", d_in=1, d_out=1, width=4, depth=2, tiny_scale=1.0)
    # ... and unknown keys are still refused.
    with pytest.raises(ConfigError, match="tiny_scal"):
        CreateModel(architecture_key="Tiny", d_in=3, d_out=2, tiny_scal=1.0)
    with pytest.raises(ConfigError, match="known architectures: Stack, Tiny, abcMLP, abcStack"):
        CreateModel(architecture_key="Tin", d_in=3, d_out=2)


def test_register_existing_name_raises(tiny):
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture("Tiny", Tiny, {})
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture("abcMLP", Tiny, {})
    with pytest.raises(ConfigError, match="nn.Module"):
        register_architecture("NotAModule", object, {})


def test_unregister_restores_the_registry():
    register_architecture("Tiny2", Tiny, {"tiny_scale": 1.0})
    unregister_architecture("Tiny2")
    assert "Tiny2" not in ARCHITECTURES and "Tiny2" not in ARCHITECTURE_DEFAULTS
    assert "tiny_scale" not in architecture_keys()
    with pytest.raises(ConfigError, match="built in"):
        unregister_architecture("abcMLP")
