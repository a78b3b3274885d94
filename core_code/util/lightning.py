"""The Lightning DataModule over a ``CreateData`` object.

``setup()`` draws the splits once (as tensors) and the loaders cut batches from them
(see ``core_code.util.batching``). Works without a Trainer too: ``setup()`` and then
iterate ``train_dataloader()`` to inspect the batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch

from core_code.util.batching import (
    ChunkBatch,
    ChunkLoader,
    EvalLoader,
    TaskBatch,
    make_train_loader,
    task_blocks,
)
from core_code.util.default_config import init_config_training

SPLITS = ("train", "val", "test")


class DataModule(pl.LightningDataModule):
    """Train/val/test loaders over ``data`` following ``batching_strategy``.

    ``eval_chunk_size`` bounds the rows of one validation/test batch (default: the whole
    split in one batch, the fastest for the small models this framework targets).

    ``steps_per_chunk`` (default: the training config's ``steps_per_chunk`` if it has
    one, else 1): optimizer steps per Lightning training step. With
    K > 1 the training loader yields ``ChunkBatch``es of K consecutive batches and
    ``LightningMultitask`` runs the K optimizer steps inside one ``training_step``
    (``'epoch'``: a whole epoch per chunk). The optimizer steps, the losses and
    ``global_step``/``max_steps`` (optimizer steps) are exactly those of K = 1; what
    counts chunks instead of batches: ``batch_idx``, the progress bar,
    ``on_train_batch_start/end`` (one call per chunk, its outputs summarize the
    chunk), an int ``val_check_interval``, ``log_every_n_steps``, and checks made per
    batch (``max_time``, ``every_n_train_steps``). It removes Lightning's per-step loop
    overhead (~0.1-0.3 ms a step), which dominates for small models.
    """

    def __init__(self, data: Any, eval_chunk_size: Optional[int] = None,
                 steps_per_chunk: Union[int, str, None] = None, **config_training: Any):
        super().__init__()
        self.data = data
        self.config_training = init_config_training(**config_training)
        self.eval_chunk_size = eval_chunk_size
        if steps_per_chunk is None:
            steps_per_chunk = self.config_training.get("steps_per_chunk", 1)
        ChunkLoader(None, steps_per_chunk)  # validates the value up front
        self.steps_per_chunk = steps_per_chunk
        self.seed = int(torch.initial_seed() % 2**31)
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        self._train_loader = None

    # ------------------------------------------------------------------ data
    def setup(self, stage: Optional[str] = None) -> None:
        """Draw every split once; later calls reuse them."""
        for split in SPLITS:
            if split not in self.tensors:
                self.tensors[split] = {k: torch.as_tensor(v) for k, v in self.data.create_data(split).items()}

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    # --------------------------------------------------------------- loaders
    def train_dataloader(self):
        if "train" not in self.tensors:
            self.setup("fit")
        rank, world = self._rank()
        cfg = dict(self.config_training)  # a copy: building loaders never changes the settings
        self._train_loader = make_train_loader(self.tensors["train"], cfg, self.seed, rank, world)
        if self.steps_per_chunk != 1:
            self._train_loader = ChunkLoader(self._train_loader, self.steps_per_chunk)
        return self._train_loader

    def _eval_loader(self, split: str) -> EvalLoader:
        if split not in self.tensors:
            self.setup(split)
        rank, world = self._rank()
        n = len(self.tensors[split]["task_activity"])
        return EvalLoader(self.tensors[split], self.eval_chunk_size or max(n, 1), rank=rank, world_size=world)

    def val_dataloader(self) -> EvalLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> EvalLoader:
        return self._eval_loader("test")

    # ------------------------------------------------------------ batch hooks
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Task blocks are found on the CPU, before the batch moves to an accelerator.
        if isinstance(batch, TaskBatch):
            batch.blocks  # noqa: B018 - computed here if the loader did not give them
        elif isinstance(batch, Mapping) and not isinstance(batch, ChunkBatch) and "task_activity" in batch:
            batch = TaskBatch(batch, blocks=task_blocks(batch["task_activity"]))
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, (TaskBatch, ChunkBatch)):
            return batch.to(device)  # the same object when it is on the device already
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def set_epoch(self, epoch: int) -> None:
        """Make the training loader yield epoch ``epoch``'s batches next (resumption)."""
        if self._train_loader is not None and hasattr(self._train_loader, "set_epoch"):
            self._train_loader.set_epoch(epoch)

    # ---------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = int(state_dict["seed"])
