"""The members' stacked batches: EnsembleBatch, EnsembleLoader, VectorizedDataModule."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from core_code.util.batching import DeterministicLoader, distinct_rows, make_train_loader, task_blocks
from core_code.util.config_extractions import ConfigError
from core_code.util.default_config import init_config_training
from core_code.util.lightning import resolve_steps_per_chunk

Blocks = dict[int, tuple[int, int]]


class EnsembleBatch(dict):
    """Stacked rows of K members: ``x`` (K, R, d_in), ``y`` (K, R, d_out), ``task_activity`` (R,).

    ``steps``: ``[(start, stop, blocks)]``, one per optimizer step (as ``ChunkBatch``):
    the rows of each step along dim 1 and its task blocks, the same for every member.
    ``distinct``: None, or ``(rows (U, d_in), inverse (R,))`` when every member's ``x`` is
    ``rows[inverse]`` (``distinct_rows``: an evaluation split whose points all members share
    and some tasks share; the forward runs once per distinct row).
    """

    def __init__(self, *args, steps: Sequence[tuple[int, int, Blocks]] = (),
                 distinct: Optional[tuple[torch.Tensor, torch.Tensor]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = list(steps)
        self.distinct = distinct

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "EnsembleBatch":
        """An EnsembleBatch of ``fn`` applied to every tensor (``distinct`` included), steps kept."""
        distinct = None if self.distinct is None else tuple(fn(v) for v in self.distinct)
        return EnsembleBatch({k: fn(v) for k, v in self.items()}, steps=self.steps, distinct=distinct)

    def to(self, device: Any, non_blocking: bool = True) -> "EnsembleBatch":
        return self.map_tensors(lambda v: v.to(device, non_blocking=non_blocking))


class EnsembleLoader:
    """Training batches of K members, ``steps`` optimizer steps per yielded ``EnsembleBatch``.

    Each member's batches are those of its own loader (``make_train_loader`` over its data
    with its seed); a ``DeterministicLoader``'s epoch is gathered for all members at once.
    Other strategies are zipped step by step; their task blocks must agree.
    """

    def __init__(self, tensors: Sequence[Mapping[str, torch.Tensor]], config: Mapping, seeds: Sequence[int],
                 steps: Union[int, str] = 1):
        self.loaders = [make_train_loader(dict(t), dict(config), int(s)) for t, s in zip(tensors, seeds)]
        self.x = torch.stack([t["x"] for t in tensors])
        self.y = torch.stack([t["y"] for t in tensors])
        self.task_activity = tensors[0]["task_activity"]
        self.steps = steps
        self.epoch = 0
        self.deterministic = all(type(ld) is DeterministicLoader for ld in self.loaders)

    def __len__(self) -> int:
        n = len(self.loaders[0])
        return n if self.steps == 1 else math.ceil(n / self._per_chunk())

    def _per_chunk(self) -> int:
        return max(1, len(self.loaders[0])) if self.steps == "epoch" else int(self.steps)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for ld in self.loaders:
            if hasattr(ld, "set_epoch"):
                ld.set_epoch(epoch)

    def __iter__(self) -> Iterator[EnsembleBatch]:
        epoch = self.epoch
        self.epoch += 1
        for ld in self.loaders:
            if hasattr(ld, "set_epoch"):
                ld.set_epoch(epoch)
        per = self._per_chunk()
        if self.deterministic:
            index = torch.stack([ld.epoch_index(epoch) for ld in self.loaders])  # (K, batches, rows)
            blocks = self.loaders[0].batch_blocks
            rows = index.shape[2]
            members = torch.arange(len(self.loaders)).view(-1, 1, 1)
            for s in range(0, index.shape[1], per):
                part = index[:, s:s + per]
                flat = part.reshape(len(self.loaders), -1)
                n = part.shape[1]
                yield EnsembleBatch({"x": self.x[members[:, :, 0], flat], "y": self.y[members[:, :, 0], flat],
                                     "task_activity": self.task_activity[flat[0]]},
                                    steps=[(i * rows, (i + 1) * rows, blocks) for i in range(n)])
            return
        iters = [iter(ld) for ld in self.loaders]
        group: list[list[dict]] = []
        for batches in zip(*iters):
            group.append(list(batches))
            if len(group) == per:
                yield self._stack(group)
                group = []
        if group:
            yield self._stack(group)

    @staticmethod
    def _stack(group: list[list[dict]]) -> EnsembleBatch:
        steps, a = [], 0
        for batches in group:
            blocks = [getattr(b, "blocks", None) or task_blocks(b["task_activity"]) for b in batches]
            if any(bl != blocks[0] for bl in blocks):
                raise ConfigError("the members' batches differ in task composition at the same step; "
                                  "these points cannot be vectorized (use a shared seed or data_deterministic)")
            n = len(batches[0]["task_activity"])
            steps.append((a, a + n, blocks[0]))
            a += n
        x = torch.stack([torch.cat([bs[k]["x"] for bs in group]) for k in range(len(group[0]))])
        y = torch.stack([torch.cat([bs[k]["y"] for bs in group]) for k in range(len(group[0]))])
        ta = torch.cat([bs[0]["task_activity"] for bs in group])
        return EnsembleBatch({"x": x, "y": y, "task_activity": ta}, steps=steps)


class _EnsembleEvalLoader:
    """One batch: every member's whole split, stacked."""

    def __init__(self, tensors: Sequence[Mapping[str, torch.Tensor]]):
        xs = [t["x"] for t in tensors]
        blocks = task_blocks(tensors[0]["task_activity"])
        self.batch = EnsembleBatch({"x": torch.stack(xs),
                                    "y": torch.stack([t["y"] for t in tensors]),
                                    "task_activity": tensors[0]["task_activity"]},
                                   steps=[(0, len(tensors[0]["task_activity"]), blocks)],
                                   distinct=distinct_rows(xs, blocks))

    def __len__(self) -> int:
        return 1 if len(self.batch["task_activity"]) else 0

    def __iter__(self) -> Iterator[EnsembleBatch]:
        if len(self):
            yield self.batch


class VectorizedDataModule(pl.LightningDataModule):
    """Stacked train/val/test loaders of K members (``datas[k].create_data(split)``, ``seeds[k]``).

    ``seeds[k]`` is the batching seed member k's single run would use (``DataModule.seed``:
    ``torch.initial_seed() % 2**31`` after that point's ``seed_everything``). Every split
    must have the same task rows in every member (same ``task_activity``).
    """

    def __init__(self, datas: Sequence[Any], seeds: Sequence[int], steps_per_chunk: Union[int, str, None] = None,
                 **config_training: Any):
        super().__init__()
        if len(datas) != len(seeds):
            raise ConfigError(f"{len(datas)} member data objects but {len(seeds)} seeds")
        self.datas = list(datas)
        self.data = self.datas[0]  # for callbacks that read tasks/boxes
        self.seeds = [int(s) for s in seeds]
        self.config_training = init_config_training(**config_training)
        self.steps_per_chunk = (self.config_training.get("steps_per_chunk", "auto") if steps_per_chunk is None
                                else steps_per_chunk)
        self.chunk_steps: Union[int, str] = 1  # what the last train_dataloader() used
        self.tensors: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in datas]
        self._train_loader: Optional[EnsembleLoader] = None

    def setup(self, stage: Optional[str] = None) -> None:
        for split in ("train", "val", "test"):
            for k, data in enumerate(self.datas):
                if split not in self.tensors[k]:
                    self.tensors[k][split] = {key: torch.as_tensor(v) for key, v in data.create_data(split).items()}
            ta = [t[split]["task_activity"] for t in self.tensors]
            if any(not torch.equal(a, ta[0]) for a in ta):
                raise ConfigError(f"the members' {split} splits differ in task rows (n_{split} per task); "
                                  "not vectorizable together")

    def split(self, split: str) -> list[dict[str, torch.Tensor]]:
        if not self.tensors[0].get(split):
            self.setup(split)
        return [t[split] for t in self.tensors]

    def train_dataloader(self) -> EnsembleLoader:
        self._train_loader = EnsembleLoader(self.split("train"), self.config_training, self.seeds, 1)
        self.chunk_steps = resolve_steps_per_chunk(self.steps_per_chunk, getattr(self, "trainer", None),
                                                   len(self._train_loader), self.config_training)
        self._train_loader.steps = self.chunk_steps
        return self._train_loader

    def val_dataloader(self) -> _EnsembleEvalLoader:
        return _EnsembleEvalLoader(self.split("val"))

    def test_dataloader(self) -> _EnsembleEvalLoader:
        return _EnsembleEvalLoader(self.split("test"))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, EnsembleBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def set_epoch(self, epoch: int) -> None:
        if self._train_loader is not None:
            self._train_loader.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"seeds": list(self.seeds)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seeds = [int(s) for s in state_dict["seeds"]]


