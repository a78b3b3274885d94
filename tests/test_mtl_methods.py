"""Multi-task methods (``mtl_method``) and diagnostics, each against a hand computation.

Most tests take one SGD step by hand (``training_step`` without a trainer) on a tiny
shared Linear(2, 2) whose two or three tasks all reach every parameter (MSE over both
outputs), and compare the update with the paper's formula applied to the task gradients
that ``torch.autograd.grad`` gives on a copy of the model.
"""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch

from core_code.lightning_multitask import LightningMultitask
from core_code.mtl.methods import IMTLG, CAGrad, PCGrad
from core_code.mtl.solvers import cagrad_weights, min_norm_weights
from core_code.util.config_extractions import ConfigError
from core_code.util.lightning import DataModule
from tests.helpers import QUIET_TRAINER, FakeData, assert_same_weights, tiny_model

LR = 0.1
# tasks 0 (rows 0-1) and 1 (rows 2-3) conflict at the weights of ``linear()``: cosine -0.86
X = torch.tensor([[1.0, 2.0], [0.5, -1.0], [1.0, 2.0], [-0.5, -1.0], [0.0, 1.5], [1.5, -0.5]])
Y = torch.tensor([[2.0, -1.0], [1.0, 2.0], [-2.0, 0.5], [-1.5, -2.0], [3.0, -2.0], [0.5, 0.5]])


def batch(tasks=(0, 0, 1, 1)) -> dict:
    n = len(tasks)
    return {"x": X[:n].clone(), "y": Y[:n].clone(), "task_activity": torch.tensor(tasks)}


def linear() -> torch.nn.Module:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, -0.2], [0.3, 0.05]]))
        model.bias.copy_(torch.tensor([0.1, -0.1]))
    return model


def module(method, model=None, **cfg) -> LightningMultitask:
    cfg = {"update_rule": "SGD", "learning_rate": LR, "regularization_alpha": 0, "mtl_method": method, **cfg}
    return LightningMultitask(model if model is not None else linear(), **cfg)


def task_grads(model: torch.nn.Module, b: dict) -> dict[int, torch.Tensor]:
    """Each task's flat gradient of its MSE at ``model``'s current weights."""
    out = {}
    ta = b["task_activity"]
    for t in sorted(set(ta.tolist())):
        rows = ta == t
        loss = torch.nn.functional.mse_loss(model(b["x"][rows]), b["y"][rows])
        out[t] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    return out


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def step(lm: LightningMultitask, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat weights before, after) one hand-called training step."""
    before = flat(lm.model).clone()
    lm.training_step(b, 0)
    return before, flat(lm.model)


# ------------------------------------------------------------------ PCGrad
def test_pcgrad_projects_only_conflicting_pairs():
    # g0.g1 < 0 (projected), g0.g2 = 0 and g1.g2 > 0 (left alone): order-independent answer
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]])
    out = PCGrad().directions(G, torch.ones(3), [0, 1, 2])
    assert torch.allclose(out, torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.0, 1.0]]))
    assert torch.allclose(out.sum(0), torch.tensor([0.5, 2.5]))
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # no conflict: unchanged, bit for bit
    assert torch.equal(PCGrad().directions(G, torch.ones(2), [0, 1]), G)


def test_pcgrad_update_is_the_projected_sum():
    lm = module("pcgrad")
    g = task_grads(copy.deepcopy(lm.model), batch())
    dot = g[0] @ g[1]
    assert dot < 0  # the case conflicts
    g0 = g[0] - dot / (g[1] @ g[1]) * g[1]
    g1 = g[1] - dot / (g[0] @ g[0]) * g[0]
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - LR * (g0 + g1), rtol=1e-6, atol=1e-7)


# -------------------------------------------------------------------- MGDA
def test_mgda_two_tasks_is_the_closed_form_min_norm_point():
    lm = module("mgda")
    g = task_grads(copy.deepcopy(lm.model), batch())
    alpha = float(((g[1] - g[0]) @ g[1]) / ((g[0] - g[1]) @ (g[0] - g[1])))
    assert 0 < alpha < 1
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - LR * (alpha * g[0] + (1 - alpha) * g[1]), rtol=1e-6, atol=1e-7)
    assert lm.mtl_method.last_weights.tolist() == pytest.approx([alpha, 1 - alpha])


def test_mgda_frank_wolfe_matches_the_min_norm_point_for_three_tasks():
    # g = e1, e2, e3: the min-norm point of their hull is (1/3, 1/3, 1/3)
    assert min_norm_weights([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]) == pytest.approx([1 / 3] * 3, abs=1e-6)
    # a dominated direction: g2 = g0 + g1 never helps; min-norm of (1,0),(0,1) -> (1/2, 1/2, 0).
    # Frank-Wolfe (the paper's solver, 250 steps) converges like 1/k: ~2e-3 here.
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert min_norm_weights((G @ G.T).tolist()) == pytest.approx([0.5, 0.5, 0.0], abs=5e-3)


# ------------------------------------------------------------------- CAGrad
def test_cagrad_symmetric_case_known_answer():
    # orthogonal equal gradients: w = (1/2, 1/2) by symmetry, g_w = g0, d = (1 + c) g0
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = CAGrad(c=0.5).directions(G, torch.ones(2), [0, 1])
    assert torch.allclose(d, torch.tensor([0.75, 0.75]))
    assert torch.allclose(CAGrad(c=0.0).directions(G, torch.ones(2), [0, 1]), G.mean(0))  # c = 0: the mean


def test_cagrad_matches_the_formula_by_brute_force_and_in_a_step():
    lm = module(("cagrad", {"c": 0.4}))
    g = task_grads(copy.deepcopy(lm.model), batch())
    g0 = (g[0] + g[1]) / 2
    s = 0.4 * g0.norm().item()
    best = None
    for k in range(20001):  # F(w) = g_w.g0 + sqrt(phi) ||g_w|| on a grid of w_0
        a = k / 20000
        gw = a * g[0] + (1 - a) * g[1]
        f = (gw @ g0).item() + s * gw.norm().item()
        if best is None or f < best[0]:
            best = (f, a)
    a = best[1]
    gw = a * g[0] + (1 - a) * g[1]
    d = g0 + s / gw.norm() * gw
    w, _ = cagrad_weights((torch.stack([g[0], g[1]]).double() @ torch.stack([g[0], g[1]]).double().T).tolist(), 0.4)
    assert w[0] == pytest.approx(a, abs=1e-4)
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - LR * d, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- IMTL-G
def test_imtl_g_known_answer_and_equal_projections():
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    m = IMTLG()
    d = m.directions(G, torch.ones(2), [0, 1])
    assert m.last_weights.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert torch.allclose(d, torch.tensor([2 / 3, 2 / 3]))
    torch.manual_seed(0)
    G = torch.randn(3, 5, dtype=torch.float64)
    d = IMTLG().directions(G, torch.ones(3), [0, 1, 2])
    proj = [(d @ g / g.norm()).item() for g in G]
    assert proj == pytest.approx([proj[0]] * 3, rel=1e-9)


def test_imtl_g_step_uses_the_closed_form():
    lm = module("imtl_g")
    g = task_grads(copy.deepcopy(lm.model), batch())
    u0, u1 = g[0] / g[0].norm(), g[1] / g[1].norm()
    a1 = float((g[0] @ (u0 - u1)) / ((g[0] - g[1]) @ (u0 - u1)))
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - LR * ((1 - a1) * g[0] + a1 * g[1]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------ uncertainty weighting
def test_uncertainty_weighting_log_variances_get_their_gradients():
    # task-specific criterion values fix the tasks, so the log-variances join the optimizer
    lm = module("uw", criterion={"task_0": "MSELoss", "task_1": "MSELoss"})
    model = copy.deepcopy(lm.model)
    b = batch()
    g = task_grads(model, b)
    losses = [torch.nn.functional.mse_loss(model(b["x"][b["task_activity"] == t]), b["y"][b["task_activity"] == t])
              for t in (0, 1)]
    before, after = step(lm, b)
    # s_t = 0: weights 1/2; d/ds (0.5 e^-s L + 0.5 s) = 0.5 - 0.5 L
    torch.testing.assert_close(after, before - LR * 0.5 * (g[0] + g[1]), rtol=1e-6, atol=1e-7)
    for t in (0, 1):
        s = lm.mtl_method.log_vars[f"task_{t}"].value.item()
        assert s == pytest.approx(-LR * (0.5 - 0.5 * losses[t].item()), rel=1e-6)
    assert len(lm.configure_optimizers()[0].param_groups[-1]["params"]) >= 1


def test_uncertainty_weighting_through_fit_builds_its_parameters_from_the_data():
    torch.manual_seed(0)
    lm = LightningMultitask(tiny_model(), mtl_method="uw", update_rule="SGD", learning_rate=0.1)
    lm.fit(DataModule(FakeData({0: 4, 1: 4})), max_epochs=2, **QUIET_TRAINER)
    values = [lm.mtl_method.log_vars[f"task_{t}"].value.item() for t in (0, 1)]
    assert all(v != 0.0 for v in values)


# ---------------------------------------------------------------------- DWA
def test_dwa_weights_follow_the_rule_over_epochs():
    lm = module(("dwa", {"temperature": 2.0}), criterion={"task_0": "MSELoss", "task_1": "MSELoss"})
    b = batch()
    losses = []
    for epoch in range(3):
        model = copy.deepcopy(lm.model)
        ta = b["task_activity"]
        losses.append([torch.nn.functional.mse_loss(model(b["x"][ta == t]), b["y"][ta == t]).item() for t in (0, 1)])
        g = task_grads(model, b)
        if epoch < 2:
            w = [1.0, 1.0]
        else:
            r = [losses[1][t] / losses[0][t] for t in (0, 1)]
            e = [math.exp(v / 2.0) for v in r]
            w = [2 * v / sum(e) for v in e]
        before, after = step(lm, b)
        assert lm.mtl_method.last_weights.tolist() == pytest.approx(w, rel=1e-6)
        torch.testing.assert_close(after, before - LR * (w[0] * g[0] + w[1] * g[1]), rtol=1e-6, atol=1e-7)
        lm.on_train_epoch_end()
    assert w != [1.0, 1.0]


def test_dwa_checkpoints_its_running_epoch_and_loads_older_checkpoints(monkeypatch):
    """The running epoch's sums and its epoch go into state_dict; a later epoch's first step
    closes them; a checkpoint without them (older) loads strictly and starts from none; under
    DDP the checkpoint's sums (rank 0's) are dropped."""
    from core_code.mtl import make_mtl_method, methods

    def dwa():
        m = make_mtl_method(("dwa", {"temperature": 2.0}), None)
        m.setup([0, 1])
        return m

    run = dwa()
    run.before_step(3)
    run.weights(torch.tensor([2.0, 4.0]), [0, 1])
    run.weights(torch.tensor([4.0, 6.0]), [0, 1])
    state = run.state_dict()
    assert set(state) == {"history", "epoch_sum", "epoch_count", "_extra_state"}
    resumed = dwa()
    resumed.load_state_dict(state)
    assert resumed.epoch_sum.tolist() == [6.0, 10.0] and resumed.epoch_count.tolist() == [2.0, 2.0]
    resumed.before_step(3)  # the same epoch goes on
    assert resumed.epoch_count.tolist() == [2.0, 2.0] and resumed.history.isnan().all()
    resumed.before_step(4)  # epoch 3 never ended: closed first
    assert resumed.history[1].tolist() == [3.0, 5.0] and resumed.epoch_count.tolist() == [0.0, 0.0]
    older = dwa()
    older.load_state_dict({"history": state["history"]})  # strict, no error
    assert older.epoch_count.tolist() == [0.0, 0.0] and older._sums_epoch is None
    monkeypatch.setattr(methods, "_dist_world", lambda: 2)
    ddp = dwa()
    ddp.load_state_dict(state)
    assert ddp.epoch_count.tolist() == [0.0, 0.0] and ddp._sums_epoch is None


# ----------------------------------------------------------------- GradNorm
def test_gradnorm_weights_follow_the_rule_over_two_epochs():
    alpha, wlr = 1.5, 0.3
    lm = module(("gradnorm", {"alpha": alpha, "lr": wlr}), criterion={"task_0": "MSELoss", "task_1": "MSELoss"})
    b = batch()
    w = [1.0, 1.0]
    init = None
    for _ in range(2):  # one step per epoch
        model = copy.deepcopy(lm.model)
        ta = b["task_activity"]
        L = [torch.nn.functional.mse_loss(model(b["x"][ta == t]), b["y"][ta == t]).item() for t in (0, 1)]
        init = init or L
        g = task_grads(model, b)
        n = [g[t].norm().item() for t in (0, 1)]
        gw = [w[t] * n[t] for t in (0, 1)]
        ratio = [L[t] / init[t] for t in (0, 1)]
        r = [v / (sum(ratio) / 2) for v in ratio]
        target = [sum(gw) / 2 * v ** alpha for v in r]
        before, after = step(lm, b)
        torch.testing.assert_close(after, before - LR * (w[0] * g[0] + w[1] * g[1]), rtol=1e-6, atol=1e-7)
        new = [w[t] - wlr * math.copysign(1.0, gw[t] - target[t]) * n[t] for t in (0, 1)]
        w = [2 * v / sum(new) for v in new]
        assert lm.mtl_method.task_weights.tolist() == pytest.approx(w, rel=1e-6)
        lm.on_train_epoch_end()
    assert w != [1.0, 1.0]


# ------------------------------------------------------------------- others
def test_fixed_mean_and_rlw_weight_the_shared_gradient():
    b = batch()
    lm = module(("fixed", {"task_weights": {"task_0": 0.25, "task_1": 2.0}}),
                criterion={"task_0": "MSELoss", "task_1": "MSELoss"})
    g = task_grads(copy.deepcopy(lm.model), b)
    before, after = step(lm, b)
    torch.testing.assert_close(after, before - LR * (0.25 * g[0] + 2.0 * g[1]), rtol=1e-6, atol=1e-7)
    lm = module("mean")
    before, after = step(lm, b)
    torch.testing.assert_close(after, before - LR * 0.5 * (g[0] + g[1]), rtol=1e-6, atol=1e-7)
    lm = module("rlw")
    torch.manual_seed(7)
    z = torch.softmax(torch.randn(2, dtype=torch.float64), 0).float()
    torch.manual_seed(7)
    before, after = step(lm, b)
    torch.testing.assert_close(after, before - LR * (z[0] * g[0] + z[1] * g[1]), rtol=1e-6, atol=1e-7)


def test_task_specific_parameters_get_plain_task_gradients():
    torch.manual_seed(1)
    trunk = torch.nn.Linear(2, 3)
    models = {"task_0": torch.nn.Sequential(trunk, torch.nn.Tanh(), torch.nn.Linear(3, 2)),
              "task_1": torch.nn.Sequential(trunk, torch.nn.Tanh(), torch.nn.Linear(3, 2))}
    b = batch()
    for method in ("mean", "pcgrad"):
        lm = module(method, copy.deepcopy(models))  # one deepcopy: the trunk stays shared
        ref = copy.deepcopy(lm.models)
        ta = b["task_activity"]
        losses = {t: torch.nn.functional.mse_loss(ref[f"task_{t}"](b["x"][ta == t]), b["y"][ta == t]) for t in (0, 1)}
        trunk_p = list(ref["task_0"][0].parameters())
        gt = {t: torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], trunk_p, retain_graph=True)])
              for t in (0, 1)}
        heads = {t: torch.autograd.grad(losses[t], list(ref[f"task_{t}"][2].parameters()), retain_graph=True)
                 for t in (0, 1)}
        lm.training_step(b, 0)
        if method == "mean":
            d = 0.5 * (gt[0] + gt[1])
        else:
            dot = gt[0] @ gt[1]
            d = gt[0] + gt[1]
            if dot < 0:
                d = d - dot / (gt[1] @ gt[1]) * gt[1] - dot / (gt[0] @ gt[0]) * gt[0]
        new_trunk = torch.cat([p.detach().reshape(-1) for p in lm.models["task_0"][0].parameters()])
        old_trunk = torch.cat([p.detach().reshape(-1) for p in trunk_p])
        torch.testing.assert_close(new_trunk, old_trunk - LR * d, rtol=1e-6, atol=1e-7)
        for t in (0, 1):
            for p_new, p_old, g in zip(lm.models[f"task_{t}"][2].parameters(), ref[f"task_{t}"][2].parameters(),
                                       heads[t]):
                torch.testing.assert_close(p_new.detach(), p_old.detach() - LR * g, rtol=1e-6, atol=1e-7)


# --------------------------------------------------- per-task optimizers
def test_per_task_optimizers_with_pcgrad_feed_each_task_its_projected_gradient():
    lrs = {"task_0": 0.1, "task_1": 0.05}
    lm = module("pcgrad", learning_rate=lrs)
    g = task_grads(copy.deepcopy(lm.model), batch())
    dot = g[0] @ g[1]
    assert dot < 0
    g0 = g[0] - dot / (g[1] @ g[1]) * g[1]
    g1 = g[1] - dot / (g[0] @ g[0]) * g[0]
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - 0.1 * g0 - 0.05 * g1, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["mgda", "cagrad", "imtl_g"])
def test_joint_direction_methods_refuse_per_task_optimizers(method):
    with pytest.raises(ConfigError, match=f"'mtl_method' is '{method}', which makes ONE joint update direction"):
        module(method, learning_rate={"task_0": 0.1, "task_1": 0.05})


# -------------------------------------------------------------- config
@pytest.mark.parametrize("cfg,msg", [
    ({"mtl_method": "nash"}, "'mtl_method' is 'nash'; known: cagrad, custom, dwa"),
    ({"mtl_method": ("cagrad", {"cc": 1})}, "unknown option.*'cc' for 'cagrad'; allowed: c"),
    ({"mtl_method": ("mgda", {"normalization": "max"})}, "'normalization' of 'mgda' is 'max'; allowed: none, l2"),
    ({"mtl_method": ("fixed", {"task_weights": {"task_0": 0}})}, "task_weights"),
    ({"mtl_method": "custom"}, "'mtl_method_callback' must be a callable"),
    ({"mtl_method": {"task_0": "sum", "task_1": "mean"}}, "'mtl_method' .* cannot be task-specific"),
    ({"diagnostics_every_n_steps": 0}, "'diagnostics_every_n_steps' is 0; allowed: None"),
    ({"loss_aggregation": "mean"}, "'loss_aggregation' is no longer supported: replaced by 'mtl_method'"),
])
def test_bad_mtl_config_is_one_line_error(cfg, msg):
    with pytest.raises(ConfigError, match=msg) as err:
        LightningMultitask(linear(), **cfg)
    assert "\n" not in str(err.value)


def test_custom_method_callback_gives_the_update():
    lm = module("custom", mtl_method_callback=lambda G, obj: G.max(dim=0).values)
    g = task_grads(copy.deepcopy(lm.model), batch())
    before, after = step(lm, batch())
    torch.testing.assert_close(after, before - LR * torch.maximum(g[0], g[1]), rtol=1e-6, atol=1e-7)


# -------------------------------------------------------------- diagnostics
def _fit(seed=0, **cfg):
    pl.seed_everything(seed, verbose=False)
    torch.manual_seed(seed)
    lm = LightningMultitask(tiny_model(), update_rule="SGD", learning_rate=0.1, **cfg)
    init = copy.deepcopy(lm.model)
    lm.fit(DataModule(FakeData({0: 4, 1: 6}, x_scale=0.25)), max_epochs=2, **QUIET_TRAINER)
    return lm, init


def test_diagnostics_off_is_the_plain_path_and_on_changes_no_weight():
    off, _ = _fit()
    assert off._fast and off.epoch_diagnostics() == {}
    on, _ = _fit(diagnostics_every_n_steps=1)
    assert not on._fast and on.epoch_diagnostics()
    assert_same_weights(off.model, on.model)
    off, _ = _fit(mtl_method="pcgrad")
    on, _ = _fit(mtl_method="pcgrad", diagnostics_every_n_steps=2)
    assert_same_weights(off.model, on.model)


def test_diagnostics_match_autograd_per_task():
    torch.manual_seed(0)
    lm = module("mgda", model=tiny_model(), diagnostics_every_n_steps=1)
    b = {"x": X[:5, :1].clone(), "y": Y[:5].clone(), "task_activity": torch.tensor([0, 0, 1, 1, 1])}
    g = task_grads(copy.deepcopy(lm.model), b)
    lm.training_step(b, 0)
    d = lm.epoch_diagnostics()
    for t in (0, 1):
        assert d[f"diagnostics/grad_norm_task_{t}"] == pytest.approx(g[t].norm().item(), rel=1e-6)
        # layer '0': Linear(1, 8) weight (8) and bias (8) come first in the flat gradient
        assert d[f"diagnostics/grad_norm_task_{t}_layer_0"] == pytest.approx(g[t][:16].norm().item(), rel=1e-6)
        assert d[f"diagnostics/grad_norm_task_{t}_layer_2"] == pytest.approx(g[t][16:].norm().item(), rel=1e-6)
    cos = (g[0] @ g[1] / (g[0].norm() * g[1].norm())).item()
    assert d["diagnostics/cos_task_0_task_1"] == pytest.approx(cos, rel=1e-5)
    w = lm.mtl_method.last_weights.tolist()
    assert [d["diagnostics/weight_task_0"], d["diagnostics/weight_task_1"]] == pytest.approx(w)


def test_diagnostics_reach_the_metrics_csv(tmp_path):
    from experiments.logging import LoggingCallback
    from experiments.logging.metrics import read_metrics

    pl.seed_everything(0, verbose=False)
    lm = LightningMultitask(tiny_model(), update_rule="SGD", learning_rate=0.1, mtl_method="pcgrad",
                            diagnostics_every_n_steps=1)
    cb = LoggingCallback(tmp_path, plot=False)
    lm.fit(DataModule(FakeData({0: 4, 1: 6})), callbacks=[cb], max_epochs=2, **QUIET_TRAINER)
    assert "diagnostics/cos_task_0_task_1" in cb.history[-1]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert "diagnostics/grad_norm_task_1" in rows[-1]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_sum_of_task_losses_is_the_stack_sum_bit_for_bit(k):
    from core_code.util.aggregation import sum_losses

    gen = torch.Generator().manual_seed(k)
    values = [torch.rand((), generator=gen, requires_grad=True) * 10 ** i for i in range(k)]
    total = sum_losses(dict(enumerate(values)))
    assert total.item() == torch.stack(values).sum().item()  # the same float32 rounding
    total.backward()
