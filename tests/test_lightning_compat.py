"""Lightning's private attributes that core_code.util.lightning_compat relies on.

If a Lightning upgrade renames or removes one, these tests fail and name it, instead of
the framework silently falling back to a slower or wrongly counted path.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from core_code.util import lightning_compat as compat


class _Probe(pl.LightningModule):
    """Manual optimization, stepping through lightning_compat exactly as training does."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 1)
        self.seen: dict[str, object] = {}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch, batch_idx):
        wrapped = self.optimizers()
        trainer = self.trainer
        self.seen["wrapped"] = wrapped
        self.seen["has"] = {
            "LightningOptimizer._optimizer": hasattr(wrapped, "_optimizer"),
            "LightningOptimizer._on_before_step": hasattr(wrapped, "_on_before_step"),
            "LightningOptimizer._on_after_step": hasattr(wrapped, "_on_after_step"),
            "Strategy._lightning_optimizers": hasattr(trainer.strategy, "_lightning_optimizers"),
            "fit_loop.epoch_loop._batches_that_stepped": hasattr(trainer.fit_loop.epoch_loop,
                                                                  "_batches_that_stepped"),
            "Trainer._checkpoint_connector.dump_checkpoint": callable(
                getattr(getattr(trainer, "_checkpoint_connector", None), "dump_checkpoint", None)),
        }
        self.seen["dump"] = compat.dump_checkpoint(trainer)
        self.seen["key"] = compat.optimizers_key(trainer)
        raw = compat.raw_optimizer(wrapped)
        self.seen["raw"] = raw
        before = trainer.global_step
        raw.zero_grad()
        self.layer(batch).pow(2).mean().backward()
        compat.count_step(wrapped, raw.step)
        self.seen["counted"] = trainer.global_step - before

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=4)


def _fit() -> tuple[_Probe, pl.Trainer]:
    probe = _Probe()
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(probe)
    return probe, trainer


def test_every_private_attribute_still_exists(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    probe, _ = _fit()
    has = dict(probe.seen["has"])
    logger = WandbLogger(project="p", save_dir=str(tmp_path), mode="disabled")  # starts no run
    has["WandbLogger._wandb_init"] = isinstance(getattr(logger, "_wandb_init", None), dict)
    from pytorch_lightning.callbacks import ModelCheckpoint

    steps, epochs = ModelCheckpoint(every_n_train_steps=3), ModelCheckpoint(every_n_epochs=1)
    has["ModelCheckpoint._every_n_train_steps"] = (getattr(steps, "_every_n_train_steps", None) == 3
                                                   and getattr(epochs, "_every_n_train_steps", None) == 0)
    has["ModelCheckpoint._train_time_interval"] = getattr(epochs, "_train_time_interval", "absent") is None
    assert compat.checkpoint_every_n_train_steps(steps) and not compat.checkpoint_every_n_train_steps(epochs)
    missing = [name for name, ok in has.items() if not ok]
    assert not missing, f"Lightning no longer has {missing}: update core_code/util/lightning_compat.py"
    assert {f"{owner}.{attr}" for owner, attr in compat.PRIVATE_ATTRIBUTES} == set(has)
    assert logger._wandb_init.get("anonymous", "absent") is None  # what drop_unset_wandb_init removes
    compat.drop_unset_wandb_init(logger, "anonymous")
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["project"] == "p"


def test_the_adapter_unwraps_counts_and_reads_the_step_axis():
    probe, trainer = _fit()
    assert isinstance(probe.seen["raw"], torch.optim.SGD)
    assert probe.seen["raw"] is not probe.seen["wrapped"]
    assert compat.can_count_steps(probe.seen["wrapped"])
    assert probe.seen["counted"] == 1  # count_step made Lightning count the optimizer step
    dump = probe.seen["dump"]  # the checkpoint dict, in memory, as save_checkpoint writes it
    assert set(dump) >= {"state_dict", "optimizer_states", "loops", "epoch", "global_step"}
    assert dump["state_dict"]["layer.weight"].shape == (1, 2) and dump["global_step"] == 0  # taken before the step
    assert probe.seen["key"] is not None
    assert trainer.global_step == 1 and compat.batches_that_stepped(trainer) == 1


def test_fallbacks_without_lightning_objects():
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert compat.raw_optimizer(sgd) is sgd and not compat.can_count_steps(sgd)
    assert compat.optimizers_key(object()) is None

    class _Trainer:
        global_step = 7

    assert compat.batches_that_stepped(_Trainer()) == 7
