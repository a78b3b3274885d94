"""Helpers shared by the tests (a plain module: no tests here, import it freely).

- ``FakeData``: a minimal stand-in for ``CreateData`` whose inputs encode the row index.
- ``QUIET_TRAINER``: Trainer settings for fast, silent test runs (no logger, checkpoints,
  progress bar, model summary or sanity validation; one CPU device).
- ``tiny_model()``: the small shared MLP (1 -> 8 -> 2, Tanh) the training tests use.
- ``RowRecorder``: a callback recording, per training batch, the row ids of each task.
- ``StepRowRecorder``: the same per optimizer step, also inside ``ChunkBatch``es.
- ``assert_same_weights(a, b)``: two modules' parameters are bit-identical.

Shared pytest fixtures live in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

QUIET_TRAINER = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1)


class FakeData:
    """Minimal stand-in for CreateData: one block of rows per task, in task order.

    Row ``i`` of a split (counting over all tasks) has ``x = i * x_scale`` in every input
    dimension and ``y = task`` in every output dimension, so a batch's rows can be
    identified from ``x`` alone (``row_ids``). With a power-of-two ``x_scale`` (e.g.
    ``2**-5``) the encoding is exact in float32 and the inputs stay small.
    ``n_per_task``: ``{task: rows}`` of the train split; ``n_val`` (default the same)
    of the validation and test splits.
    """

    def __init__(self, n_per_task, d_in=1, d_out=2, n_val=None, x_scale=1.0):
        self.all_tasks = sorted(n_per_task)
        self.n = n_per_task
        self.n_val = n_val or n_per_task
        self.d_in, self.d_out = d_in, d_out
        self.x_scale = x_scale

    def create_data(self, split):
        n = self.n if split == "train" else self.n_val
        total = sum(n.values())
        x = (torch.arange(total, dtype=torch.float32) * self.x_scale).unsqueeze(1).repeat(1, self.d_in)
        y = torch.cat([torch.full((k, self.d_out), float(t)) for t, k in n.items()])
        ta = torch.cat([torch.full((k,), t, dtype=torch.int64) for t, k in n.items()])
        return {"x": x, "y": y, "task_activity": ta}

    def row_ids(self, x: torch.Tensor) -> list[int]:
        """The split row index of every row of a batch's ``x``."""
        return torch.round(x[:, 0].detach().cpu().double() / self.x_scale).long().tolist()


def tiny_model() -> torch.nn.Module:
    """Linear(1, 8) -> Tanh -> Linear(8, 2), initialised from the global torch RNG."""
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


class RowRecorder(pl.Callback):
    """Records the rows of every training batch: ``steps[k] = {task: [row ids]}``.

    Row ids come from ``data.row_ids`` (a ``FakeData``). Only plain batches (one
    optimizer step each, ``steps_per_chunk=1``) are supported.
    """

    def __init__(self, data: FakeData):
        self.data = data
        self.steps: list[dict[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rows = self.data.row_ids(batch["x"])
        tasks = batch["task_activity"].tolist()
        per_task: dict[int, list[int]] = {}
        for r, t in zip(rows, tasks):
            per_task.setdefault(int(t), []).append(r)
        self.steps.append(per_task)


class StepRowRecorder(RowRecorder):
    """``RowRecorder`` per optimizer step: a ``ChunkBatch`` adds one entry per step it holds.

    Assumes every step of a chunk is trained (no ``max_steps`` cut inside a chunk).
    """

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from core_code.util.batching import ChunkBatch

        for step in (batch.step_batches() if isinstance(batch, ChunkBatch) else [batch]):
            super().on_train_batch_start(trainer, pl_module, step, batch_idx)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter of ``a`` equals the one of ``b`` bit for bit (named on failure)."""
    pa, pb = list(a.named_parameters()), list(b.parameters())
    assert len(pa) == len(pb)
    for (name, x), y in zip(pa, pb):
        assert torch.equal(x, y), name
