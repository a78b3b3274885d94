"""The Lightning DataModule over a ``CreateData`` object.

``setup()`` draws the splits once (as tensors) and the loaders cut batches from them
(see ``core_code.util.batching``). Works without a Trainer too: ``setup()`` and then
iterate ``train_dataloader()`` to inspect the batches.
"""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
import torch

from core_code.util.batching import EvalLoader, make_train_loader
from core_code.util.default_config import init_config_training

SPLITS = ("train", "val", "test")


class DataModule(pl.LightningDataModule):
    """Train/val/test loaders over ``data`` following ``batching_strategy``.

    ``eval_chunk_size`` bounds the rows of one validation/test batch (default: the whole
    split in one batch, the fastest for the small models this framework targets).
    """

    def __init__(self, data: Any, eval_chunk_size: Optional[int] = None, **config_training: Any):
        super().__init__()
        self.data = data
        self.config_training = init_config_training(**config_training)
        self.eval_chunk_size = eval_chunk_size
        self.seed = int(torch.initial_seed() % 2**31)
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        self._train_loader = None

    # ------------------------------------------------------------------ data
    def setup(self, stage: Optional[str] = None) -> None:
        """Draw every split once; later calls reuse them."""
        for split in SPLITS:
            if split not in self.tensors:
                self.tensors[split] = {k: torch.as_tensor(v) for k, v in self.data.create_data(split).items()}

    def n_samples(self, split: str) -> dict[int, int]:
        """Samples per task in ``split`` (after setup)."""
        ta = self.tensors[split]["task_activity"]
        return {t: int((ta == t).sum()) for t in self.data.all_tasks}

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

    def set_epoch(self, epoch: int) -> None:
        """Make the training loader yield epoch ``epoch``'s batches next (resumption)."""
        if self._train_loader is not None and hasattr(self._train_loader, "set_epoch"):
            self._train_loader.set_epoch(epoch)

    # ---------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = int(state_dict["seed"])
