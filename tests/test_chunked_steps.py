"""Several optimizer steps per Lightning step (``DataModule(steps_per_chunk=K)``) and the
direct backward/step path: the same optimizer steps, weights and step counts as one
Lightning step per batch through ``manual_backward`` and the ``LightningOptimizer``."""

import pickle

import pytest
import pytorch_lightning as pl
import torch

from core_code.lightning_multitask import LightningMultitask
from core_code.util.batching import ChunkBatch, TaskBatch
from core_code.util.config_extractions import ConfigError
from core_code.util.lightning import DataModule
from tests.helpers import QUIET_TRAINER, FakeData, assert_same_weights, tiny_model


class Recorder(pl.Callback):
    def __init__(self):
        self.outputs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append(outputs)


class StepHook(Recorder):
    """Overrides on_before_optimizer_step: forces the LightningOptimizer path."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1


class WeightedLosses(LightningMultitask):
    """A subclass hook: the chunk must call it once per step, with that step's batch."""

    calls = 0

    def task_losses(self, batch, preds, blocks):
        WeightedLosses.calls += 1
        assert len(batch["task_activity"]) == sum(b - a for a, b in blocks.values())
        return {t: v * (1.0 + t) for t, v in super().task_losses(batch, preds, blocks).items()}


def train(steps_per_chunk=1, per_task=False, strategy="data_deterministic", callbacks=(), module=LightningMultitask,
          **trainer_kw):
    pl.seed_everything(0, verbose=False)
    model = tiny_model()
    lr = {"task_0": 0.001, "task_1": 0.002} if per_task else 0.001
    lm = module(model, update_rule="SGD", learning_rate=lr, regularization_alpha=0.01)
    dm = DataModule(FakeData({0: 16, 1: 40}), batch_size=12, batching_strategy=strategy,
                    steps_per_chunk=steps_per_chunk)
    trainer = lm.fit(dm, callbacks=list(callbacks), **{"max_epochs": 2, **QUIET_TRAINER, **trainer_kw})
    return model, trainer


@pytest.mark.parametrize("strategy", ["data_deterministic", "data_stochastic"])
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("k", [3, "epoch"])
def test_chunks_train_exactly_like_single_steps(strategy, per_task, k):
    ref, ref_trainer = train(1, per_task, strategy)
    model, trainer = train(k, per_task, strategy)
    assert_same_weights(ref, model)
    assert trainer.global_step == ref_trainer.global_step > 0


def test_chunks_call_overridden_loss_hooks_once_per_step():
    WeightedLosses.calls = 0
    ref, _ = train(1, module=WeightedLosses)
    per_step_calls, WeightedLosses.calls = WeightedLosses.calls, 0
    model, _ = train("epoch", module=WeightedLosses)
    assert WeightedLosses.calls == per_step_calls == 2 * (6 + 1)  # 2 epochs x (6 batches + 1 validation batch)
    assert_same_weights(ref, model)


@pytest.mark.parametrize("per_task,max_steps,expected", [(False, 5, 5), (True, 5, 6)])
def test_max_steps_stops_inside_a_chunk(per_task, max_steps, expected):
    ref, ref_trainer = train(1, per_task, max_steps=max_steps)
    model, trainer = train("epoch", per_task, max_steps=max_steps)
    assert ref_trainer.global_step == trainer.global_step == expected  # every optimizer counts
    assert_same_weights(ref, model)


def test_chunk_outputs_summarize_their_batches():
    single, chunked = Recorder(), Recorder()
    train(1, callbacks=[single])
    train(4, callbacks=[chunked])
    # batch sizes 3 + 9 (shares 16 : 40); max(ceil(16/3), ceil(40/9)) = 6 batches an epoch
    assert len(single.outputs) == 12 and len(chunked.outputs) == 4
    assert [o["steps"] for o in chunked.outputs] == [4, 2, 4, 2]
    assert chunked.outputs[0]["n"] == {0: 12, 1: 36}
    assert chunked.outputs[0]["preds"][1].shape == (36, 2)
    for t in (0, 1):
        expected = torch.stack([o["losses"][t] for o in single.outputs[:4]]).mean()
        torch.testing.assert_close(chunked.outputs[0]["losses"][t], expected)
        expected = torch.stack([o["losses"][t] for o in single.outputs[4:6]]).mean()
        torch.testing.assert_close(chunked.outputs[1]["losses"][t], expected)


@pytest.mark.parametrize("per_task", [False, True])
def test_optimizer_step_hooks_still_run_once_per_step(per_task):
    fast, _ = train(1, per_task)
    hook = StepHook()
    model, trainer = train("epoch", per_task, callbacks=[hook])
    assert hook.calls == trainer.global_step > 0
    assert_same_weights(fast, model)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "all"])
def test_bad_steps_per_chunk(value):
    with pytest.raises(ConfigError, match="steps_per_chunk"):
        DataModule(FakeData({0: 4, 1: 4}), steps_per_chunk=value)


def test_batches_know_their_blocks_and_stay_put_on_their_device():
    dm = DataModule(FakeData({0: 16, 1: 40}), batch_size=12, steps_per_chunk=2)
    dm.setup()
    chunk = next(iter(dm.train_dataloader()))
    assert isinstance(chunk, ChunkBatch) and len(chunk.steps) == 2
    assert chunk.to("cpu") is chunk
    steps = list(chunk.step_batches())
    assert steps[0].blocks == {0: (0, 3), 1: (3, 12)}
    assert torch.equal(steps[1]["task_activity"], torch.tensor([0] * 3 + [1] * 9))
    batch = pickle.loads(pickle.dumps(steps[0]))
    assert isinstance(batch, TaskBatch) and batch.blocks == {0: (0, 3), 1: (3, 12)}
    assert batch.to(torch.device("cpu")) is batch
    plain = TaskBatch({"task_activity": torch.tensor([1, 1, 2])})
    assert plain.blocks == {1: (0, 2), 2: (2, 3)}


# ------------------------------------------------------------------ 'auto' (the default)
class ChunkAwareRecorder(Recorder):
    takes_chunks = True


class OwnStep(LightningMultitask):
    """A subclass with its own training_step: it must get one batch per step."""

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, TaskBatch), type(batch)
        return super().training_step(batch, batch_idx)


class OneBatch:
    """A custom batching strategy's loader: the whole split as one batch per epoch."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return 1

    def __iter__(self):
        yield dict(self.data)


def fit_auto(n=None, callbacks=(), module=LightningMultitask, strategy="data_deterministic", batch_size=12,
             **trainer_kw):
    pl.seed_everything(0, verbose=False)
    model = tiny_model()
    extra = {"batching_callback": lambda data, config, seed: OneBatch(data)} if strategy == "custom" else {}
    lm = module(model, update_rule="SGD", learning_rate=0.001)
    dm = DataModule(FakeData(n or {0: 16, 1: 40}), batch_size=batch_size, batching_strategy=strategy, **extra)
    assert dm.steps_per_chunk == "auto"  # the training config's default
    trainer = lm.fit(dm, callbacks=list(callbacks), **{"max_epochs": 2, **QUIET_TRAINER, **trainer_kw})
    return model, trainer, dm


def test_auto_chunks_the_epoch_and_trains_exactly_like_single_steps():
    ref, ref_trainer = train(1)
    rec = ChunkAwareRecorder()
    pl.seed_everything(0, verbose=False)
    model = tiny_model()
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=0.001, regularization_alpha=0.01)
    dm = DataModule(FakeData({0: 16, 1: 40}), batch_size=12)
    trainer = lm.fit(dm, callbacks=[rec], **{"max_epochs": 2, **QUIET_TRAINER})
    assert dm.chunk_steps == 6  # the epoch's 6 batches (< AUTO_CHUNK_STEPS)
    assert [o["steps"] for o in rec.outputs] == [6, 6]
    assert trainer.global_step == ref_trainer.global_step == 12
    assert_same_weights(ref, model)


def test_auto_caps_a_chunk_at_auto_chunk_steps():
    from core_code.util.lightning import AUTO_CHUNK_STEPS

    rec = ChunkAwareRecorder()
    _, trainer, dm = fit_auto({0: 40, 1: 100}, callbacks=[rec], batch_size=2, max_epochs=1)
    assert AUTO_CHUNK_STEPS == 32 and dm.chunk_steps == 32
    # batches of 1 + 1 rows: max(40, 100) = 100 batches an epoch
    assert [o["steps"] for o in rec.outputs] == [32, 32, 32, 4]
    assert trainer.global_step == 100


@pytest.mark.parametrize("why,kw", [
    ("Recorder.on_train_batch_end", dict(callbacks=[Recorder()])),
    ("StepHook.on_before_optimizer_step", dict(callbacks=[StepHook()])),
    ("OwnStep.training_step", dict(module=OwnStep)),
    ("val_check_interval=2", dict(val_check_interval=2)),
    ("val_check_interval=0.5", dict(val_check_interval=0.5)),
    ("limit_train_batches=3", dict(limit_train_batches=3)),
    ("ModelCheckpoint.on_train_batch_end", dict(checkpoint_steps=True)),
])
def test_auto_keeps_single_steps_when_something_observes_them(tmp_path, why, kw):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from core_code.util.lightning import per_step_observers

    if kw.pop("checkpoint_steps", False):
        kw = dict(callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2)], enable_checkpointing=True)
    model, trainer, dm = fit_auto(**kw)
    assert dm.chunk_steps == 1
    assert any(w.startswith(why) for w in per_step_observers(trainer)), per_step_observers(trainer)


@pytest.mark.parametrize("kw", [dict(enable_progress_bar=True), dict(max_time={"minutes": 5}),
                                dict(checkpoint_epochs=True)])
def test_auto_chunks_with_progress_bar_timer_and_epoch_checkpoints(tmp_path, kw):
    from pytorch_lightning.callbacks import ModelCheckpoint

    if kw.pop("checkpoint_epochs", False):
        kw = dict(callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1)], enable_checkpointing=True)
    _, trainer, dm = fit_auto(**kw)
    assert dm.chunk_steps == 6 and trainer.global_step == 12


def test_auto_is_single_steps_without_a_trainer_and_for_custom_batching():
    dm = DataModule(FakeData({0: 16, 1: 40}), batch_size=12)
    dm.setup()
    assert isinstance(next(iter(dm.train_dataloader())), TaskBatch) and dm.chunk_steps == 1
    _, trainer, dm = fit_auto(strategy="custom")
    assert dm.chunk_steps == 1 and trainer.global_step == 2
