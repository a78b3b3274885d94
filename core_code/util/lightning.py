"""The Lightning DataModule over a ``CreateData`` object.

``setup()`` draws the splits once (as tensors) and the loaders cut batches from them
(see ``core_code.util.batching``). Works without a Trainer too: ``setup()`` and then
iterate ``train_dataloader()`` to inspect the batches.

A fit resumed from a checkpoint written inside an epoch continues that epoch exactly:
its training loader yields the epoch's batches (chunks) from the first one the restored
loop has not counted as done (``resume_position``), so the resumed run trains the same
optimizer steps as one that was never stopped.
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
    chunk_loader,
    make_train_loader,
    task_blocks,
)
from core_code.util.default_config import init_config_training
from core_code.util.lightning_compat import checkpoint_every_n_train_steps

SPLITS = ("train", "val", "test")
#: ``steps_per_chunk: 'auto'``: at most this many optimizer steps per Lightning step (a
#: signal, ``max_time`` and a ``KeyboardInterrupt`` are acted on between chunks).
AUTO_CHUNK_STEPS = 32
#: Lightning hooks called once per training batch: an observer of these sees chunks.
PER_STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                  "on_before_optimizer_step", "on_before_zero_grad")


def keep_batch_attributes(trainer: Any) -> None:
    """Make the Trainer's input conversion keep our batches' attributes.

    Precisions that convert inputs ('64-true', '16-true', 'bf16-true', ...) pass each batch
    through Lightning's ``apply_to_collection``, which rebuilds a dict subclass from its
    items alone: a ``ChunkBatch`` or ``EnsembleBatch`` lost its steps (an epoch without a
    training step, an evaluation without a loss, and the run still finished 'done'), a
    ``TaskBatch`` its blocks and DDP rows. Batches with ``map_tensors`` are converted tensor
    by tensor instead; everything else as before. Idempotent; precisions that convert
    nothing are left alone.
    """
    from pytorch_lightning.plugins.precision import Precision

    plugin = getattr(trainer, "precision_plugin", None)
    convert = getattr(plugin, "convert_input", None)
    if convert is None or getattr(convert, "keeps_batch_attributes", False):
        return
    if getattr(type(plugin), "convert_input", None) is Precision.convert_input:
        return  # the identity

    def convert_input(data: Any) -> Any:
        return data.map_tensors(convert) if hasattr(data, "map_tensors") else convert(data)

    convert_input.keeps_batch_attributes = True  # type: ignore[attr-defined]
    plugin.convert_input = convert_input


def _takes_chunks(obj: Any) -> bool:
    """True when the class that defines ``obj``'s ``training_step`` declares ``takes_chunks = True``."""
    for cls in type(obj).__mro__:
        if "training_step" in cls.__dict__:
            return bool(cls.__dict__.get("takes_chunks", False))
    return False


def per_step_observers(trainer: Any, module: Any = None) -> list[str]:
    """What in this fit needs one Lightning step per optimizer step (empty: chunks are safe).

    ``module`` (default ``trainer.lightning_module``) must run chunks (its
    ``training_step``'s class says ``takes_chunks = True``) and override no per-step hook.
    A callback overriding a per-step hook counts unless it says ``takes_chunks = True``
    or is one of Lightning's progress bar (it then counts chunks), ``Timer`` (checks
    ``max_time`` per chunk) or a ``ModelCheckpoint`` without ``every_n_train_steps`` or
    ``train_time_interval``. Mid-epoch validation (``val_check_interval`` other than
    1.0) and ``limit_train_batches`` other than 1.0 count batches, so they count too.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, Timer
    from pytorch_lightning.utilities.model_helpers import is_overridden

    module = trainer.lightning_module if module is None else module
    found = []
    if not _takes_chunks(module):
        found.append(f"{type(module).__name__}.training_step (takes one batch)")
    found += [f"{type(module).__name__}.{h}" for h in PER_STEP_HOOKS if is_overridden(h, module, pl.LightningModule)]
    for cb in trainer.callbacks:
        if getattr(cb, "takes_chunks", False) or isinstance(cb, (ProgressBar, Timer)):
            continue
        if isinstance(cb, ModelCheckpoint) and not checkpoint_every_n_train_steps(cb):
            continue
        found += [f"{type(cb).__name__}.{h}" for h in PER_STEP_HOOKS if is_overridden(h, cb, pl.Callback)]
    vci = trainer.val_check_interval
    if isinstance(vci, int) and not isinstance(vci, bool) or (isinstance(vci, float) and vci != 1.0):
        found.append(f"val_check_interval={vci!r}")
    ltb = trainer.limit_train_batches
    if ltb is not None and not (isinstance(ltb, float) and ltb == 1.0):
        found.append(f"limit_train_batches={ltb!r}")
    return found


def resume_position(trainer: Any) -> tuple[int, int]:
    """``(epoch, done)``: the epoch the fit loop trains now and the Lightning steps (batches, or
    chunks) of it its batch counter counts as done: where the next batch must come from.

    Read when a resumed fit asks for its first batch: by then Lightning has turned the
    restored counters into the batch index it continues with (``batch_progress.current.ready``;
    a checkpoint written in ``on_train_batch_end`` counts that batch as done, one written
    after Lightning's SIGTERM stop has counted it already). The loaders have a length, so
    Lightning does not prefetch them: the first batch is requested inside the epoch loop.
    """
    return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


def _restarting(trainer: Any) -> bool:
    """True while a Trainer restores a checkpoint's loop state (its first epoch after ``ckpt_path``)."""
    return bool(getattr(getattr(trainer, "fit_loop", None), "restarting", False))


def resolve_steps_per_chunk(value: Union[int, str], trainer: Any, n_batches: int, config_training: Mapping,
                            module: Any = None) -> Union[int, str]:
    """``steps_per_chunk`` for this fit: ``'auto'`` becomes min(n_batches, AUTO_CHUNK_STEPS), or 1
    when something observes single steps (``per_step_observers``), without a Trainer, or with
    the 'custom' batching strategy (its batches are handed over as they are)."""
    if value != "auto":
        return value
    if trainer is None or config_training.get("batching_strategy") == "custom":
        return 1
    if per_step_observers(trainer, module):
        return 1
    return max(1, min(int(n_batches), AUTO_CHUNK_STEPS))


class DataModule(pl.LightningDataModule):
    """Train/val/test loaders over ``data`` following ``batching_strategy``.

    ``eval_chunk_size`` bounds the rows of one validation/test batch (default: the whole
    split in one batch, the fastest for the small models this framework targets).

    ``steps_per_chunk`` (default: the training config's ``steps_per_chunk``, default
    ``'auto'``): optimizer steps per Lightning training step. With K > 1 the training
    loader yields ``ChunkBatch``es of K consecutive batches and ``LightningMultitask`` runs
    the K optimizer steps inside one ``training_step`` (``'epoch'``: a whole epoch per
    chunk). The optimizer steps, the losses and ``global_step``/``max_steps`` (optimizer
    steps) are exactly those of K = 1; what counts chunks instead of batches: ``batch_idx``,
    the progress bar, ``on_train_batch_start/end`` (one call per chunk, its outputs
    summarize the chunk), and checks made per batch (``max_time``, a signal). It removes
    Lightning's per-step loop overhead (~0.1-0.3 ms a step), which dominates for small
    models. ``'auto'`` (resolved when the Trainer asks for the loader, see
    ``resolve_steps_per_chunk``; ``chunk_steps`` says what it became) chunks up to
    ``AUTO_CHUNK_STEPS`` steps unless something observes single steps
    (``per_step_observers``): then 1.

    Resumed inside an epoch (``Trainer.fit(ckpt_path=...)`` with a checkpoint from the
    middle of an epoch), the training loader continues that epoch where the checkpoint's
    batch counter says (``resume_position``; it counts chunks when K > 1): the same
    batches and optimizer steps as an uninterrupted run. Loaders of the 'custom'
    strategy restart the epoch (Lightning warns that they are not resumable).
    """

    def __init__(self, data: Any, eval_chunk_size: Optional[int] = None,
                 steps_per_chunk: Union[int, str, None] = None, **config_training: Any):
        super().__init__()
        self.data = data
        self.config_training = init_config_training(**config_training)
        self.eval_chunk_size = eval_chunk_size
        if steps_per_chunk is None:
            steps_per_chunk = self.config_training.get("steps_per_chunk", "auto")
        if steps_per_chunk != "auto":
            ChunkLoader(None, steps_per_chunk)  # validates the value up front
        self.steps_per_chunk = steps_per_chunk
        self.chunk_steps: Union[int, str] = 1  # what the last train_dataloader() used (see resolve_steps_per_chunk)
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
        trainer = getattr(self, "trainer", None)
        n = len(self._train_loader) if hasattr(self._train_loader, "__len__") else 1
        resumable = hasattr(self._train_loader, "resume_from")
        self.chunk_steps = resolve_steps_per_chunk(self.steps_per_chunk, trainer, n, cfg)
        if self.chunk_steps != 1:
            self._train_loader = chunk_loader(self._train_loader, self.chunk_steps)
        if trainer is not None and resumable and _restarting(trainer):
            # Where the resumed epoch goes on is known only once Lightning's loop has reset its
            # counters: asked at the first batch (a restart at an epoch boundary gets (epoch, 0)).
            self._train_loader.resume_from(lambda: resume_position(trainer))
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
