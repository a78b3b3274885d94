"""DataModule batching and LightningMultitask optimization semantics (exact values)."""

import math

import pytest
import torch

from core_code.lightning_multitask import LightningMultitask
from core_code.util.batching import deterministic_task_batch_sizes
from core_code.util.config_extractions import ConfigError
from core_code.util.criteria import make_criterion
from core_code.util.lightning import DataModule
from tests.helpers import QUIET_TRAINER, FakeData


# ----------------------------------------------------------------------- batching
def test_deterministic_sizes_composite_sine():
    assert deterministic_task_batch_sizes({0: 256, 1: 512}, 64) == {0: 21, 1: 43}
    assert deterministic_task_batch_sizes({0: 10, 1: 1000}, 8) == {0: 1, 1: 7}
    assert deterministic_task_batch_sizes({0: 5, 1: 5, 2: 5}, 3) == {0: 1, 1: 1, 2: 1}


def test_deterministic_batch_smaller_than_tasks_is_error():
    dm = DataModule(FakeData({0: 4, 1: 4, 2: 4}), batch_size=2)
    dm.setup()
    with pytest.raises(ConfigError, match="'batch_size' is 2 but there are 3 tasks"):
        dm.train_dataloader()


def test_deterministic_batches_and_epoch_coverage():
    dm = DataModule(FakeData({0: 256, 1: 512}), batch_size=64, shuffle=True)
    dm.setup()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == max(math.ceil(256 / 21), math.ceil(512 / 43)) == 13
    seen = {0: set(), 1: set()}
    for b in batches:
        ta = b["task_activity"]
        assert ta.tolist() == [0] * 21 + [1] * 43
        assert b["x"].dtype == torch.float32 and b["x"].shape == (64, 1)
        for t in (0, 1):
            seen[t].update(b["x"][ta == t, 0].long().tolist())
    assert seen[0] == set(range(256)) and seen[1] == set(range(256, 768))
    # next epoch: another order, same coverage; reproducible via set_epoch
    again = list(loader)
    assert not torch.equal(again[0]["x"], batches[0]["x"])
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))["x"], batches[0]["x"])


def test_deterministic_no_shuffle_is_in_order():
    dm = DataModule(FakeData({0: 4, 1: 8}), batch_size=3, shuffle=False)
    dm.setup()
    first = next(iter(dm.train_dataloader()))
    assert first["x"][:, 0].tolist() == [0, 4, 5]


def test_stochastic_covers_each_sample_once_and_groups_tasks():
    dm = DataModule(FakeData({0: 50, 1: 30, 2: 20}), batch_size=16, batching_strategy="data_stochastic")
    dm.setup()
    batches = list(dm.train_dataloader())
    assert [len(b["x"]) for b in batches] == [16] * 6 + [4]
    xs = torch.cat([b["x"][:, 0] for b in batches]).long().tolist()
    assert sorted(xs) == list(range(100))
    for b in batches:
        ta = b["task_activity"].tolist()
        assert ta == sorted(ta)


def test_eval_loaders_never_shuffle_nor_change_settings():
    dm = DataModule(FakeData({0: 5, 1: 7}), batch_size=4, shuffle=True)
    dm.setup()
    (val,) = list(dm.val_dataloader())
    assert val["x"][:, 0].tolist() == list(range(12))
    assert dm.config_training["shuffle"] is True
    chunks = list(DataModule(FakeData({0: 5, 1: 7}), eval_chunk_size=5).test_dataloader())
    assert [len(c["x"]) for c in chunks] == [5, 5, 2]


def test_unknown_batching_strategy():
    dm = DataModule(FakeData({0: 4}), batching_strategy="random")
    dm.setup()
    with pytest.raises(ConfigError, match="known strategies: custom, data_deterministic, data_stochastic"):
        dm.train_dataloader()


def test_custom_batching_callback():
    def cb(data, config, seed):
        return [data]  # the whole split as one batch

    dm = DataModule(FakeData({0: 3, 1: 2}), batching_strategy="custom", batching_callback=cb)
    dm.setup()
    (b,) = list(dm.train_dataloader())
    assert len(b["x"]) == 5


# ------------------------------------------------------------------------ criteria
def test_dimred_mse_only_listed_dims():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = torch.zeros(2, 3)
    assert make_criterion(("dimred_MSELoss", [1]))(pred, y).item() == pytest.approx(4 / 2)
    assert make_criterion(("dimred_MSELoss", [0, 2]))(pred, y).item() == pytest.approx((1 + 9) / 4)
    assert make_criterion("MSELoss")(pred, y).item() == pytest.approx(14 / 6)
    with pytest.raises(ConfigError, match="known criteria: MSELoss, dimred_MSELoss, custom"):
        make_criterion("L1")


def test_regularization_value():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    lm = LightningMultitask(model, regularization_alpha=0.5, regularization_ord=2)
    assert lm.regularization(0).item() == pytest.approx(0.5 * 25)
    lm = LightningMultitask(model, regularization_alpha=0.5, regularization_ord=1)
    assert lm.regularization(0).item() == pytest.approx(0.5 * 49)
    assert LightningMultitask(model, regularization_alpha=0).regularization(0) is None


# --------------------------------------------------------------- optimizer updates
def _one_step(lm, data):
    dm = DataModule(data, batch_size=sum(data.n.values()), shuffle=False)
    lm.fit(dm, max_steps=1, **{**QUIET_TRAINER, "limit_val_batches": 0})


def _linear(w):
    m = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
    return m


def _task_grads(w, data):
    """Hand computation: per-task MSE gradient of a bias-free linear model."""
    w = torch.tensor(w, requires_grad=True)
    batch = data.create_data("train")
    grads = {}
    for t in data.all_tasks:
        m = batch["task_activity"] == t
        loss = ((batch["x"][m] @ w.T - batch["y"][m]) ** 2).mean()
        grads[t] = torch.autograd.grad(loss, w)[0]
    return grads


def test_per_task_sgd_applies_every_tasks_gradient():
    data = FakeData({0: 2, 1: 3})
    w0 = [[0.5], [-0.25]]
    model = _linear(w0)
    lm = LightningMultitask(model, update_rule="SGD", learning_rate={"task_0": 0.01, "task_1": 0.003},
                            regularization_alpha=0)
    _one_step(lm, data)
    g = _task_grads(w0, data)
    expected = torch.tensor(w0) - 0.01 * g[0] - 0.003 * g[1]
    torch.testing.assert_close(model.weight.detach(), expected)


def test_single_optimizer_minimises_sum_of_losses():
    data = FakeData({0: 2, 1: 3})
    w0 = [[0.5], [-0.25]]
    model = _linear(w0)
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=0.01, regularization_alpha=0)
    assert len(lm.configure_optimizers()) == 1
    _one_step(lm, data)
    g = _task_grads(w0, data)
    torch.testing.assert_close(model.weight.detach(), torch.tensor(w0) - 0.01 * (g[0] + g[1]))


def test_per_task_adam_matches_hand_computation():
    data = FakeData({0: 2, 1: 3})
    w0 = [[0.5], [-0.25]]
    model = _linear(w0)
    lm = LightningMultitask(model, update_rule={"task_0": "Adam", "task_1": "Adam"},
                            learning_rate={"task_0": 0.1, "task_1": 0.01}, regularization_alpha=0)
    _one_step(lm, data)
    g = _task_grads(w0, data)
    eps = 1e-8
    # Adam's first step with bias correction: lr * g / (|g| + eps)
    expected = torch.tensor(w0) - 0.1 * g[0] / (g[0].abs() + eps) - 0.01 * g[1] / (g[1].abs() + eps)
    torch.testing.assert_close(model.weight.detach(), expected)


def test_per_task_models_each_get_their_own_update():
    data = FakeData({0: 2, 1: 3})
    m0, m1 = _linear([[1.0], [1.0]]), _linear([[2.0], [2.0]])
    lm = LightningMultitask({"task_0": m0, "task_1": m1}, update_rule="SGD",
                            learning_rate={"task_0": 0.1, "task_1": 0.2}, regularization_alpha=0)
    _one_step(lm, data)
    g0 = _task_grads([[1.0], [1.0]], data)[0]
    g1 = _task_grads([[2.0], [2.0]], data)[1]
    torch.testing.assert_close(m0.weight.detach(), torch.tensor([[1.0], [1.0]]) - 0.1 * g0)
    torch.testing.assert_close(m1.weight.detach(), torch.tensor([[2.0], [2.0]]) - 0.2 * g1)


def test_abc_lr_multipliers_scale_param_groups():
    class Scaled(torch.nn.Linear):
        def lr_multipliers(self):
            return [([self.weight], 0.25), ([self.bias], 1.0)]

    lm = LightningMultitask(Scaled(1, 2), update_rule="SGD", learning_rate=0.1)
    (opt,) = lm.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.025), pytest.approx(0.1)]


# ------------------------------------------------------------------ task mismatch
def test_task_mismatch_between_data_and_training_config():
    lm = LightningMultitask(_linear([[1.0], [1.0]]), learning_rate={"task_0": 0.1, "task_2": 0.1})
    with pytest.raises(ConfigError, match=r"the data has tasks \[0, 1\] but the training config's"):
        lm.fit(DataModule(FakeData({0: 2, 1: 2})))


def test_task_mismatch_between_data_and_models():
    lm = LightningMultitask({"task_0": _linear([[1.0], [1.0]])})
    with pytest.raises(ConfigError, match=r"per-task models exist for tasks \[0\]"):
        lm.fit(DataModule(FakeData({0: 2, 1: 2})))


@pytest.mark.parametrize("key,value,msg", [
    ("update_rule", "RMS", "known update rules: Adam, AdamW, SGD, custom"),
    ("criterion", "L1", "known criteria"),
    ("mtl_method", "max", "known: cagrad, custom"),
    ("loss_aggregation", "sum", "replaced by .mtl_method."),
    ("learning_rate", -1, "'learning_rate' must be a number >= 0"),
])
def test_bad_training_values_fail_at_construction(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        LightningMultitask(_linear([[1.0], [1.0]]), **{key: value})


def test_steps_return_per_task_predictions_and_losses():
    data = FakeData({0: 2, 1: 3})
    lm = LightningMultitask(_linear([[1.0], [1.0]]), regularization_alpha=0)
    dm = DataModule(data)
    dm.setup()
    batch = lm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    out = lm.validation_step(batch, 0)
    assert set(out["losses"]) == {0, 1} and out["n"] == {0: 2, 1: 3}
    assert out["preds"][1].shape == (3, 2)
