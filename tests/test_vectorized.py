"""Vectorized grid points: K members trained as one ensemble equal K single runs.

Contract: per-epoch losses (train, validation, in-domain) and final weights of every
member equal the ordinary one-point path (``LightningMultitask`` + ``DataModule`` +
``LoggingCallback``, seeded as ``BasicManager`` seeds a point) within

- weights: max |w_vec - w_single| <= 1e-5 * max |w_single| per tensor (measured ~1e-7);
- epoch losses: relative 1e-5 (measured ~1e-7).

Tiny models (width 16, depth 3), a few epochs, CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Optional

import pytest
import pytorch_lightning as pl
import torch

from core_code.create_data import CreateData
from core_code.create_model import create_model, resolve_architecture
from core_code.lightning_multitask import LightningMultitask
from core_code.util.config_extractions import ConfigError
from core_code.util.default_config import init_config_data, init_config_training
from core_code.util.lightning import DataModule
from core_code.vectorized import MEMBERWISE_MIN_ROWS, StackedModel, VectorizedDataModule, VectorizedMultitask
from experiments.logging import LoggingCallback
from experiments.vectorize import describe_groups, group_points, train_group
from tests.helpers import QUIET_TRAINER

W_RTOL = 1e-5
L_RTOL = 1e-5
EPOCHS = 3

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class Builder:
    """The manager hooks train_group needs (BasicManager's defaults)."""

    def make_data(self, config_data: dict):
        return CreateData(**config_data)

    def make_model(self, config_architecture: dict, data):
        return create_model(**config_architecture)


def point(seed: int = 1, width: int = 16, data_seed=None, arch=None, **training) -> dict:
    """A resolved grid point: two tasks of sine data, an abcMLP, the given training values."""
    data = init_config_data(d_in=1, d_out=1, f_true="sine", n_train={"task_0": 40, "task_1": 24}, n_val=32,
                            n_test=16, x_max_train={"task_0": 0, "task_1": 1}, seed=data_seed)
    a = dict(architecture_key="abcMLP", d_in=1, d_out=1, width=width, depth=3, parametrization="muP")
    a.update(arch or {})
    tr = dict(batch_size=16, update_rule="SGD", learning_rate=0.05, regularization_alpha=0.0)
    tr.update(training)
    return {"data": data, "architecture": resolve_architecture(**a), "training": init_config_training(**tr),
            "custom": {"seed": seed, "workers": True}}


def single_run(cfg: dict, epochs: int = EPOCHS, ckpt_path=None, model_hook=None, trainer: Optional[dict] = None):
    """The one-point path of BasicManager._train_point, quiet: (module, LoggingCallback, trainer)."""
    pl.seed_everything(cfg["custom"]["seed"], workers=cfg["custom"]["workers"], verbose=False)
    b = Builder()
    data = b.make_data(cfg["data"])
    model = b.make_model(cfg["architecture"], data)
    dm = DataModule(data, **cfg["training"])
    lm = LightningMultitask(model, **cfg["training"])
    cb = LoggingCallback(None, plot=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(**{**QUIET_TRAINER, "max_epochs": epochs, "callbacks": [cb], **(trainer or {})})
        trainer.fit(lm, datamodule=dm, ckpt_path=ckpt_path)
    return lm, cb, trainer


def vectorized(cfgs: list[dict], epochs: int = EPOCHS, trainer: Optional[dict] = None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_group(Builder(), cfgs, {**QUIET_TRAINER, "max_epochs": epochs, **(trainer or {})}, **kw)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def assert_member_equals_single(result, cfg: dict, epochs: int = EPOCHS, trainer: Optional[dict] = None) -> float:
    """Weights, per-epoch metrics and status of a member equal its single run; the worst weight error."""
    lm, cb, _ = single_run(cfg, epochs, trainer=trainer)
    worst = 0.0
    single = lm.state_dict()
    assert set(single) == set(result.state_dict)
    for name, w in single.items():
        err = rel_err(result.state_dict[name], w)
        worst = max(worst, err)
        assert err <= W_RTOL, (name, err)
    assert len(result.history) == len(cb.history)
    for mine, ref in zip(result.history, cb.history):
        assert set(mine) == set(ref), (sorted(mine), sorted(ref))
        for key, v in ref.items():
            assert math.isclose(mine[key], v, rel_tol=L_RTOL, abs_tol=1e-7), (key, mine[key], v)
    for key, v in cb.final_metrics().items():
        if key.startswith("baseline/"):
            assert math.isclose(result.final[key], v, rel_tol=L_RTOL), key
    assert result.diverged is None and cb.diverged is None
    assert result.status == "done"
    return worst


# ------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("impl,chunk", [("auto", "auto"), ("bmm", 1)])
def test_sgd_members_equal_single_runs(impl, chunk):
    cfgs = [point(seed=1, learning_rate=0.05, steps_per_chunk=chunk),
            point(seed=2, learning_rate=0.01, arch={"list_a": [-0.5, 0.25, 0.5], "bias_tune": 0.5},
                  steps_per_chunk=chunk),
            point(seed=3, learning_rate=0.02, data_seed=5, regularization_alpha=0.01, arch={"parametrization": "SP"},
                  steps_per_chunk=chunk)]
    results = vectorized(cfgs, impl=impl)
    for r, cfg in zip(results, cfgs):
        assert_member_equals_single(r, cfg)


def test_adam_members_equal_single_runs():
    # muP under Adam: per-layer learning-rate exponents (0.5, 1, 0.5) from param_groups.
    cfgs = [point(seed=4, update_rule="Adam", learning_rate=0.01),
            point(seed=5, update_rule="Adam", learning_rate=0.003, regularization_alpha=0.001,
                  arch={"list_b": [0.5, 0.5, 1.0]}),
            point(seed=6, update_rule="Adam", learning_rate=0.02, data_seed=3)]
    results = vectorized(cfgs)
    for r, cfg in zip(results, cfgs):
        assert_member_equals_single(r, cfg)
    # the optimizer state comes back in the single run's layout (Adam moments per parameter)
    lm, _, _ = single_run(cfgs[0])
    ref = lm.optimizers().optimizer.state_dict()
    mine = results[0].optimizer_states[0]
    assert mine["param_groups"] == ref["param_groups"]
    for i, st in ref["state"].items():
        assert float(mine["state"][i]["step"]) == float(st["step"])
        assert rel_err(mine["state"][i]["exp_avg_sq"], st["exp_avg_sq"]) <= 1e-4


def test_adamw_chunked_and_stochastic_batches_equal_single_runs():
    cfgs = [point(seed=7, update_rule="AdamW", learning_rate=0.01, steps_per_chunk="epoch"),
            point(seed=8, update_rule="AdamW", learning_rate=0.005, steps_per_chunk="epoch")]
    for r, cfg in zip(vectorized(cfgs), cfgs):
        assert_member_equals_single(r, cfg)
    # data_stochastic: the batch composition follows the seed, so members share it (lr differs)
    cfgs = [point(seed=9, batching_strategy="data_stochastic", learning_rate=lr) for lr in (0.05, 0.01)]
    assert group_points(cfgs) == [[0, 1]]
    for r, cfg in zip(vectorized(cfgs), cfgs):
        assert_member_equals_single(r, cfg)


def test_per_task_optimizers_equal_single_runs():
    cfgs = [point(seed=10, update_rule={"task_0": "SGD", "task_1": "Adam"},
                  learning_rate={"task_0": 0.05, "task_1": 0.01}),
            point(seed=11, update_rule={"task_0": "SGD", "task_1": "Adam"},
                  learning_rate={"task_0": 0.02, "task_1": 0.003}, regularization_alpha={"task_0": 0.0, "task_1": 0.01})]
    results = vectorized(cfgs)
    for r, cfg in zip(results, cfgs):
        assert_member_equals_single(r, cfg)
        assert len(r.optimizer_states) == 2


def test_nan_member_is_frozen_and_reported_others_match():
    cfgs = [point(seed=12, learning_rate=0.05), point(seed=13, learning_rate=1e6), point(seed=14, learning_rate=0.02)]
    results = vectorized(cfgs, epochs=4)
    _, cb, trainer = single_run(cfgs[1], epochs=4)
    bad = results[1]
    assert bad.status == "diverged" and cb.diverged is not None
    assert (bad.diverged["task"], bad.diverged["epoch"], bad.diverged["split"]) == \
        (cb.diverged["task"], cb.diverged["epoch"], cb.diverged["split"])
    assert bad.diverged["step"] is not None and bad.checkpoint is None
    assert bad.epochs == trainer.current_epoch and bad.global_step == trainer.global_step
    assert len(bad.history) == len(cb.history)
    for i in (0, 2):
        assert_member_equals_single(results[i], cfgs[i], epochs=4)


def test_frozen_member_stops_changing():
    torch.manual_seed(0)
    cfg = point(seed=1)["training"]
    models = [create_model(**point()["architecture"]) for _ in range(2)]
    module = VectorizedMultitask(models, [cfg, {**cfg, "learning_rate": 1e9}])
    datas = [CreateData(**point()["data"]) for _ in range(2)]
    dm = VectorizedDataModule(datas, [1, 2], **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(**{**QUIET_TRAINER, "max_epochs": 1}).fit(module, datamodule=dm)
        before = module.member_state_dict(1)
        pl.Trainer(**{**QUIET_TRAINER, "max_epochs": 3}).fit(module, datamodule=dm)
    assert not bool(module.active[1]) and bool(module.active[0])
    after = module.member_state_dict(1)
    assert all(torch.equal(before[n].nan_to_num(), after[n].nan_to_num()) for n in before)


def test_member_checkpoint_resumes_as_single_run(tmp_path):
    cfg = point(seed=15, update_rule="Adam", learning_rate=0.01)
    other = point(seed=16, update_rule="Adam", learning_rate=0.002)
    results = vectorized([cfg, other], epochs=2, hyper_parameters=[{"id": "a"}, {"id": "b"}])
    path = results[0].save_checkpoint(tmp_path / "last.ckpt")
    resumed, cb, trainer = single_run(cfg, epochs=4, ckpt_path=str(path))
    straight, cb_ref, _ = single_run(cfg, epochs=4)
    assert trainer.global_step == 4 * 4  # 4 epochs of ceil(40/10)=4 batches (10 + 6 rows)
    for name, w in straight.state_dict().items():
        assert rel_err(resumed.state_dict()[name], w) <= W_RTOL, name
    assert [r["epoch"] for r in cb.history] == [0, 1, 2, 3]
    for mine, ref in zip(cb.history, cb_ref.history):
        for key, v in ref.items():
            assert math.isclose(mine[key], v, rel_tol=L_RTOL, abs_tol=1e-7), key


def test_forward_impls_match_the_members():
    torch.manual_seed(0)
    arch = point()["architecture"]
    models = [create_model(**arch) for _ in range(3)]
    x = torch.randn(3, 5, 1)
    bmm = StackedModel(models, impl="bmm")
    vm = StackedModel(models, impl="vmap")
    singles = torch.stack([m(x[k]) for k, m in enumerate(models)])
    assert torch.allclose(bmm(x), singles, rtol=1e-6, atol=1e-7)
    assert torch.allclose(vm(x), singles, rtol=1e-6, atol=1e-7)
    # CPU evaluation of many rows goes member by member through all layers (same values)
    big = torch.randn(3, MEMBERWISE_MIN_ROWS + 1, 1)
    calls = []
    auto = StackedModel(models)
    auto._forward_members = lambda x, f=auto._forward_members: calls.append(x.shape) or f(x)
    with torch.no_grad():
        singles = torch.stack([m(big[k]) for k, m in enumerate(models)])
        assert torch.allclose(auto(big), singles, rtol=1e-6, atol=1e-7) and len(calls) == 1
        auto(big[:, :MEMBERWISE_MIN_ROWS])  # few rows: batched
    auto(big)  # with grad (training): batched
    assert len(calls) == 1
    seqs = [torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)) for _ in range(2)]
    st = StackedModel(seqs)
    assert st.impl == "vmap"
    assert torch.allclose(st(x[:2]), torch.stack([m(x[k]) for k, m in enumerate(seqs)]), rtol=1e-6, atol=1e-7)
    # members differing in non-parameter attributes cannot share a vmap
    other = copy.deepcopy(models[1])
    other.layers[0].multiplier = 3.0
    other.layers[0].a = 9.0
    with pytest.raises(ConfigError, match="differ from member 0"):
        StackedModel([models[0], other], impl="vmap")


@pytest.mark.parametrize("d_in,d_out", [(1, 1), (1, 7), (3, 4), (2, 20)])
def test_every_layer_form_matches_the_members_forward_and_gradients(d_in, d_out):
    """One-input layers (a broadcast product), narrow outputs (computed transposed), per-member
    forward and bias multipliers (members with other abc exponents and bias_tune), no-bias
    layers: the batched forward, the member-by-member evaluation and ``forward_shared`` give
    each member's own outputs, and the batched forward its gradients."""
    torch.manual_seed(0)
    archs = [dict(d_in=d_in, d_out=d_out), dict(d_in=d_in, d_out=d_out, parametrization="NTK", bias_tune=0.3),
             dict(d_in=d_in, d_out=d_out, bias_tune=2.0)]
    models = [create_model(**point(arch=a)["architecture"]) for a in archs]
    models[2].layers[1].bias = None  # a layer without bias, in one member...
    for m in models[:2]:
        m.layers[1].bias = None  # ...and, for equal shapes, in every member
    x = torch.randn(3, 6, d_in)
    singles = torch.stack([m(x[k]) for k, m in enumerate(models)])
    st = StackedModel(models)
    assert torch.allclose(st(x), singles, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(st(x).square().sum(), [p for _, p in st.named_stacked()])
    for k, m in enumerate(models):
        ref = torch.autograd.grad(m(x[k]).square().sum(), list(m.parameters()))
        for (name, _), g, r in zip(st.named_stacked(), grads, ref):
            # float32 sums over rows: an element near 0 keeps the rounding of its largest terms
            # (seen: 1.4808e-2 vs 1.4806e-2 beside elements of 8), so atol scales with the gradient
            atol = 1e-6 * max(1.0, float(r.abs().max()))
            assert torch.allclose(st.to_member(name, g[k]), r, rtol=1e-5, atol=atol), (k, name)
    assert_written_out_gradients_equal_autograd(st, x)
    rows = torch.randn(MEMBERWISE_MIN_ROWS + 1, d_in)
    with torch.no_grad():
        ref = torch.stack([m(rows) for m in models])
        assert torch.allclose(st(rows.expand(3, *rows.shape)), ref, rtol=1e-5, atol=1e-6)  # member by member
        assert torch.allclose(st.forward_shared(rows), ref, rtol=1e-5, atol=1e-6)
        assert torch.allclose(st.forward_shared(rows[:4]), ref[:, :4], rtol=1e-5, atol=1e-6)  # batched
    narrow = [i for i in range(st.depth) if st._narrow(i)]
    assert narrow == ([st.depth - 1] if 1 < d_out < 16 else [])
    assert st.member_state_dict(1)[f"layers.{st.depth - 1}.weight"].shape == (d_out, 16)


def assert_written_out_gradients_equal_autograd(st: StackedModel, x: torch.Tensor) -> None:
    """``forward_keep`` gives ``forward``'s output and ``backward`` autograd's gradients for any dL/d(output)."""
    assert st.direct_grads
    out, tape = st.forward_keep(x)
    ref_out = st(x)
    assert out.grad_fn is None and torch.allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    grad_out = torch.randn_like(out)
    ref = torch.autograd.grad(ref_out, [p for _, p in st.named_stacked()], grad_out)
    mine = st.backward(tape, grad_out)
    for (name, p), g, r in zip(st.named_stacked(), mine, ref):
        assert g.shape == p.shape and g.is_contiguous(), name
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6 * max(1.0, float(r.abs().max()))), name


@pytest.mark.parametrize("depth,d_out", [(1, 1), (1, 5), (2, 3)])
def test_written_out_gradients_of_shallow_members(depth, d_out):
    """One layer (the input layer is the output layer: a broadcast product, narrow or not) and two
    layers (one ReLU), members in different parametrizations (per-member multipliers)."""
    torch.manual_seed(1)
    archs = [dict(depth=depth, d_out=d_out), dict(depth=depth, d_out=d_out, parametrization="NTK", bias_tune=0.3)]
    st = StackedModel([create_model(**point(arch=a)["architecture"]) for a in archs])
    assert_written_out_gradients_equal_autograd(st, torch.randn(2, 9, 1))
    tanh = StackedModel([create_model(**point(arch={"hidden_layer_activation": "Tanh"})["architecture"])])
    assert not tanh.direct_grads  # only ReLUs are written out


def seven_outputs(seed: int, **training) -> dict:
    """``point`` with the compositeSine data of seven outputs; task 0 compares column 0, task 1 columns 2..4."""
    cfg = point(seed=seed, arch={"d_out": 7, **training.pop("arch", {})},
                criterion={"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [2, 3, 4])}, **training)
    cfg["data"] = init_config_data(**{**cfg["data"], "f_true": "compositeSine", "d_out": 7})
    return cfg


@pytest.mark.parametrize("mtl_method,rule", [("sum", "SGD"), ("mean", "SGD"), ("mean", "Adam")])
def test_written_out_gradients_train_as_single_runs_and_as_autograd(monkeypatch, mtl_method, rule):
    """Where they apply (ReLU abcMLPs, one optimizer, sum or mean of MSE losses over contiguous
    columns, squared 2-norm regularization) the ensemble trains with ``StackedModel.backward``:
    each member as its single run, and as the ensemble's autograd path (to float32 rounding)."""
    calls = []
    backward = StackedModel.backward
    monkeypatch.setattr(StackedModel, "backward", lambda self, *a: calls.append(1) or backward(self, *a))
    cfgs = [seven_outputs(1, learning_rate=0.05, mtl_method=mtl_method, update_rule=rule),
            seven_outputs(2, learning_rate=0.01, mtl_method=mtl_method, update_rule=rule,
                          arch={"list_a": [-0.5, 0.25, 0.5], "bias_tune": 0.5}),
            seven_outputs(3, learning_rate=0.02, mtl_method=mtl_method, update_rule=rule, data_seed=5,
                          regularization_alpha=0.01, arch={"parametrization": "SP"})]
    direct = vectorized(cfgs)
    assert len(calls) == EPOCHS * 4  # every step: 4 batches an epoch (40 / 10 rows of task 0)
    for r, cfg in zip(direct, cfgs):
        assert_member_equals_single(r, cfg)
    monkeypatch.setattr(VectorizedMultitask, "use_direct_grads", False)
    autograd = vectorized(cfgs)
    assert len(calls) == EPOCHS * 4
    for mine, ref in zip(direct, autograd):
        for name, w in ref.state_dict.items():
            assert rel_err(mine.state_dict[name], w) <= W_RTOL, name
        for row, ref_row in zip(mine.history, ref.history):
            assert all(math.isclose(row[k], v, rel_tol=L_RTOL) for k, v in ref_row.items())


def test_written_out_gradients_only_where_they_apply():
    """Anything the written-out gradients do not cover trains through autograd: a regularization
    other than the squared 2-norm, a criterion other than an MSE over contiguous columns,
    per-task optimizers, activations other than ReLU."""
    torch.manual_seed(0)
    blocks = {0: (0, 4), 1: (4, 8)}

    def columns(*trainings, arch=None):
        models = [create_model(**point(arch=arch)["architecture"]) for _ in trainings]
        return VectorizedMultitask(models, [point(**t)["training"] for t in trainings])._direct_columns(blocks)

    assert columns({}, {"learning_rate": 0.01}) == {0: (0, None), 1: (0, None)}
    assert columns({"mtl_method": "mean"}) == {0: (0, None), 1: (0, None)}
    dimred = {"task_0": ("dimred_MSELoss", [1]), "task_1": ("dimred_MSELoss", [0, 1])}
    assert columns({"criterion": dimred}, arch={"d_out": 3}) == {0: (1, 2), 1: (0, 2)}
    assert columns({}, {"regularization_alpha": 0.01}) == {0: (0, None), 1: (0, None)}  # ||p||^2: written out
    assert columns({"regularization_ord": 1}, {"regularization_alpha": 0.01, "regularization_ord": 1}) is None
    gaps = {"task_0": ("dimred_MSELoss", [1]), "task_1": ("dimred_MSELoss", [0, 2])}
    assert columns({"criterion": gaps}, arch={"d_out": 3}) is None
    assert columns({"criterion": "custom", "criterion_callback": lambda p, y: (p - y).abs().mean()}) is None
    assert columns({"learning_rate": {"task_0": 0.01, "task_1": 0.02}}) is None
    assert columns({}, arch={"hidden_layer_activation": "Tanh"}) is None


def test_precisions_that_convert_inputs_train_every_step(monkeypatch):
    """'64-true' converts every batch (Lightning rebuilds a dict batch from its items): chunked
    single runs and ensembles kept no steps and finished 'done' untrained. Now both train every
    step, in float64, and agree; under 'bf16-mixed' (autocast) the ensemble takes autograd."""
    double = {"precision": "64-true"}
    cfgs = [point(seed=1, learning_rate=0.05), point(seed=2, learning_rate=0.01, regularization_alpha=0.01)]
    lm, cb, trainer = single_run(cfgs[0], trainer=double)  # steps_per_chunk 'auto': chunks
    assert trainer.global_step == EPOCHS * 4 and lm.model.layers[0].weight.dtype == torch.float64
    assert all("train/loss_task_0" in row and "validation/loss_task_1" in row for row in cb.history)
    results = vectorized(cfgs, trainer=double)
    for r, cfg in zip(results, cfgs):
        assert r.global_step == EPOCHS * 4 and r.state_dict["model.layers.0.weight"].dtype == torch.float64
        assert assert_member_equals_single(r, cfg, trainer=double) <= 1e-12  # float64 learning rates too
    calls = []
    backward = StackedModel.backward
    monkeypatch.setattr(StackedModel, "backward", lambda self, *a: calls.append(1) or backward(self, *a))
    mixed = vectorized(cfgs, trainer={"precision": "bf16-mixed"})
    assert not calls and all(r.status == "done" and r.global_step == EPOCHS * 4 for r in mixed)
    assert all(math.isfinite(row["train/loss_task_0"]) for r in mixed for row in r.history)


def test_points_that_tasks_share_are_evaluated_once(monkeypatch):
    import core_code.util.batching as batching
    from core_code.model_lib.abcMLP import abcMLP

    x = torch.linspace(-1, 1, 5).unsqueeze(1)
    xs = torch.cat([x, x, x[:3]])  # task 0 and task 1 on the same 5 points, task 2 on 3 of them
    blocks = {0: (0, 5), 1: (5, 10), 2: (10, 13)}
    rows, inverse = batching.distinct_rows([xs, xs.clone()], blocks)
    assert rows.shape == (8, 1) and torch.equal(rows[inverse], xs)  # 13 rows, 8 computed
    assert batching.distinct_rows([xs, xs + 1], blocks) is None  # members with other points
    assert batching.distinct_rows([xs[:10] * torch.arange(10.0).unsqueeze(1)], {0: (0, 5), 1: (5, 10)}) is None
    # single runs and ensembles evaluate the distinct points once (validation: 32 of 64 rows,
    # test: 16 of 32); their losses are those of every row
    seen = []
    forward = abcMLP.forward
    monkeypatch.setattr(abcMLP, "forward", lambda self, x: (seen.append(len(x)) if not torch.is_grad_enabled()
                                                             else None) or forward(self, x))
    shared = []
    forward_shared = StackedModel.forward_shared
    monkeypatch.setattr(StackedModel, "forward_shared", lambda self, x: shared.append(tuple(x.shape))
                        or forward_shared(self, x))
    cfgs = [point(seed=s) for s in (1, 2)]
    results = train_group(Builder(), cfgs, {**QUIET_TRAINER, "max_epochs": 1})
    assert shared == [(32, 1), (16, 1)]
    _, cb, _ = single_run(cfgs[0], epochs=1)
    assert seen == [32]  # one validation (the sanity check is off)
    monkeypatch.setattr(batching, "distinct_rows", lambda xs, blocks: None)
    _, every_row, _ = single_run(cfgs[0], epochs=1)
    assert seen == [32, 64]
    # in-domain rows: half of task 0's points, all of task 1's (each a slice of the block)
    for key in ("validation/loss_task_0", "validation/loss_task_1", "validation/loss_in_domain_task_0",
                "validation/loss_in_domain_task_1"):
        assert math.isclose(cb.history[-1][key], every_row.history[-1][key], rel_tol=1e-6), key
        assert math.isclose(results[0].history[-1][key], every_row.history[-1][key], rel_tol=L_RTOL), key


class _StepObserver(pl.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(len(batch.steps))


@pytest.mark.parametrize("observer", [False, True])
def test_ensemble_auto_chunks_unless_a_callback_observes_single_steps(observer):
    cfgs = [point(seed=1), point(seed=2)]
    b = Builder()
    datas = [b.make_data(c["data"]) for c in cfgs]
    module = VectorizedMultitask([b.make_model(c["architecture"], d) for c, d in zip(cfgs, datas)],
                                 [c["training"] for c in cfgs])
    dm = VectorizedDataModule(datas, [1, 2], **cfgs[0]["training"])
    cb = _StepObserver() if observer else ChunkAware()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(**{**QUIET_TRAINER, "max_epochs": 2, "callbacks": [cb]})
        trainer.fit(module, datamodule=dm)
    per_epoch = trainer.global_step // 2
    assert dm.steps_per_chunk == "auto" and per_epoch > 1
    assert dm.chunk_steps == (1 if observer else per_epoch)
    assert cb.steps == ([1] * 2 * per_epoch if observer else [per_epoch, per_epoch])


class ChunkAware(_StepObserver):
    takes_chunks = True


def test_members_must_agree_on_shapes_and_composition():
    cfg = point()["training"]
    models = [create_model(**point()["architecture"]), create_model(**point()["architecture"])]
    with pytest.raises(ConfigError, match="batch_size"):
        VectorizedMultitask(models, [cfg, {**cfg, "batch_size": 8}])
    with pytest.raises(ConfigError, match="parameter shapes"):
        VectorizedMultitask([models[0], create_model(**point(width=8)["architecture"])], [cfg, cfg])


# ------------------------------------------------------------------- grouping
def test_group_points_on_a_mixed_grid():
    cfgs = [point(seed=s, width=w, learning_rate=lr) for w in (16, 32) for lr in (0.1, 0.01) for s in (1, 2)]
    cfgs.append(point(seed=1, width=16, batch_size=8))
    cfgs.append(point(seed=1, width=16, arch={"list_a": [-0.5, 0.1, 0.5], "bias_tune": 2.0}, regularization_alpha=0.1))
    cfgs.append(point(seed=1, update_rule="custom", update_rule_callback=lambda g, lr: torch.optim.SGD(g, lr=lr)))
    cfgs.append(point(seed=1, data_seed=7, arch={"parametrization": "SP"}))
    cfgs.append(point(seed=1, batching_strategy="data_stochastic"))
    cfgs.append(point(seed=2, batching_strategy="data_stochastic"))
    groups = group_points(cfgs)
    assert groups == [[0, 1, 2, 3, 9, 11], [4, 5, 6, 7], [8], [10], [12], [13]]
    text = describe_groups(cfgs, groups)
    assert "6 x abcMLP width 16 depth 3, batch 16: configs 1, 2, 3, 4, 10, 12" in text
    assert "alone: update_rule 'custom'" in text


@pytest.mark.slow
def test_main_vectorize_writes_each_member_as_its_own_run(tmp_path, capsys):
    """--vectorize: 2 seeds of tinyTest as one ensemble; each point's folder as if it had run alone."""
    import csv
    import json

    import main as main_mod

    def run(tag, *extra):
        return main_mod.main(["--experiment", "tinyTest", "--runs_dir", str(tmp_path), "--wandb", "disabled",
                              "--experimentbatch_name", tag, "architecture.width=16", "custom.seed=[0,1]",
                              "trainer.max_epochs=2", *extra])

    assert run("V", "--vectorize") == 0
    out = capsys.readouterr().out
    assert "vectorized groups" in out and "training as one ensemble" in out
    assert run("S") == 0
    for i in (1, 2):
        v, s = tmp_path / "V" / f"config{i}", tmp_path / "S" / f"config{i}"
        sv, ss = (json.loads((d / "summary.json").read_text()) for d in (v, s))
        assert sv["status"] == ss["status"] == "done" and sv["vectorized"] is True and sv["id"] == ss["id"]
        assert sv["epochs"] == ss["epochs"] == 2
        rv, rs = (list(csv.DictReader((d / "metrics.csv").open())) for d in (v, s))
        assert len(rv) == len(rs) == 2
        for a, b in zip(rv, rs):
            for key in ("train/loss_task_0", "train/loss_task_1", "validation/loss_task_0", "validation/loss_task_1"):
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), (i, key)
        assert (v / "checkpoints" / "last.ckpt").exists() and (v / "baselines.json").exists()
        assert json.loads((v / "config.json").read_text())["id"] == sv["id"]
    capsys.readouterr()
    assert run("V", "--vectorize") == 0  # a rerun skips the finished members
    assert capsys.readouterr().out.count("already done, skipped") == 2
