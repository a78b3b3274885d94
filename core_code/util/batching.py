"""Batch loaders cut from in-memory tensors, and the batching-strategy registry.

Every loader yields dicts in the ``CreateData.create_data`` layout,
``{'x', 'y', 'task_activity'}``, with each task's rows in ONE contiguous block, in task
order. Batches are index slices of preloaded tensors (no per-sample Dataset, no
collate, no worker processes): that is where the original lost most of its time.

Shuffling uses a permutation drawn from a generator seeded with (seed, epoch), so an
epoch's batches are reproducible and a resumed run continues with the same order.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping, Optional

import torch

from core_code.util.config_extractions import ConfigError

Batch = dict[str, torch.Tensor]


def task_blocks(task_activity: torch.Tensor) -> dict[int, tuple[int, int]]:
    """``{task: (start, stop)}`` of each task's contiguous block of rows."""
    if task_activity.numel() == 0:
        return {}
    tasks, counts = torch.unique_consecutive(task_activity.cpu(), return_counts=True)
    if len(set(tasks.tolist())) != len(tasks):
        raise ValueError("rows of a task are not contiguous in the batch (task_activity is not grouped)")
    stops = torch.cumsum(counts, 0).tolist()
    starts = [0] + stops[:-1]
    return {int(t): (a, b) for t, a, b in zip(tasks.tolist(), starts, stops)}


def deterministic_task_batch_sizes(n_per_task: Mapping[int, int], batch_size: int) -> dict[int, int]:
    """Per-task batch sizes proportional to each task's share of the data.

    floor(share * batch_size), at least 1; the largest task takes the remainder so the
    sizes sum to batch_size (compositeSine: 256 and 512 samples, 64 -> 21 + 43).
    Tasks with no data get 0.
    """
    active = {t: n for t, n in n_per_task.items() if n > 0}
    if not active:
        return {t: 0 for t in n_per_task}
    if batch_size < len(active):
        raise ConfigError(
            f"training config key 'batch_size' is {batch_size} but there are {len(active)} tasks "
            "with data: 'data_deterministic' batching needs batch_size >= number of tasks"
        )
    total = sum(active.values())
    sizes = {t: max(1, math.floor(n / total * batch_size)) for t, n in active.items()}
    largest = max(active, key=lambda t: (active[t], -t))
    sizes[largest] += batch_size - sum(sizes.values())
    if sizes[largest] < 1:
        raise ConfigError(f"training config key 'batch_size' ({batch_size}) is too small for {len(active)} tasks")
    return {t: sizes.get(t, 0) for t in n_per_task}


def _permutation(n: int, shuffle: bool, seed: int, epoch: int, stream: int) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % 2**62)
    return torch.randperm(n, generator=gen)


class _EpochLoader:
    """Base of the loaders: epoch counter, seed, and the rank split for DDP."""

    def __init__(self, data: Batch, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.data = data
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose batches the next iteration yields (for resumption)."""
        self.epoch = int(epoch)

    def _shard(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's share of every task's index block (all ranks: same global batch)."""
        if self.world_size == 1:
            return parts
        return [torch.tensor_split(p, self.world_size)[self.rank] for p in parts]

    def _take(self, parts: list[torch.Tensor]) -> Batch:
        idx = torch.cat(self._shard(parts)) if parts else torch.empty(0, dtype=torch.long)
        return {k: v[idx] for k, v in self.data.items()}

    def __iter__(self) -> Iterator[Batch]:
        # A generator: the epoch is read at the first batch, not at iter(). Lightning
        # creates the iterator before on_train_epoch_start, where a resumed run calls set_epoch.
        epoch = self.epoch
        self.epoch += 1
        yield from self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError


class DeterministicLoader(_EpochLoader):
    """Every batch holds each task's rows in proportion to the task's share of the data.

    An epoch has max_t ceil(n_t / b_t) batches, so every sample of every task is seen at
    least once; a task that runs out earlier continues with a fresh permutation of its
    data (wrap-around), so every batch has exactly the per-task sizes b_t.
    """

    def __init__(self, data: Batch, batch_size: int, shuffle: bool, seed: int, **kw):
        super().__init__(data, shuffle, seed, **kw)
        self.blocks = task_blocks(data["task_activity"])
        n = {t: b - a for t, (a, b) in self.blocks.items()}
        self.task_batch_sizes = deterministic_task_batch_sizes(n, batch_size)
        self.num_batches = max(
            (math.ceil(n[t] / s) for t, s in self.task_batch_sizes.items() if s > 0), default=0
        )

    def __len__(self) -> int:
        return self.num_batches

    def _batches(self, epoch: int) -> Iterator[Batch]:
        streams = []
        for t, (start, stop) in self.blocks.items():
            n, size = stop - start, self.task_batch_sizes[t]
            need = self.num_batches * size
            cycles = math.ceil(need / n) if n else 0
            perms = [_permutation(n, self.shuffle, self.seed, epoch * 1_000_003 + c, t) for c in range(cycles)]
            order = torch.cat(perms)[:need] + start if perms else torch.empty(0, dtype=torch.long)
            streams.append((order, size))
        for k in range(self.num_batches):
            yield self._take([order[k * size:(k + 1) * size] for order, size in streams])


class StochasticLoader(_EpochLoader):
    """One shuffled stream over all tasks' data; rows regrouped by task inside a batch."""

    def __init__(self, data: Batch, batch_size: int, shuffle: bool, seed: int, **kw):
        super().__init__(data, shuffle, seed, **kw)
        self.batch_size = int(batch_size)
        self.n = len(data["task_activity"])

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        order = _permutation(self.n, self.shuffle, self.seed, epoch, -1)
        tasks = self.data["task_activity"]
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            idx = idx[torch.argsort(tasks[idx], stable=True)]
            _, counts = torch.unique_consecutive(tasks[idx], return_counts=True)
            yield self._take(list(torch.split(idx, counts.tolist())))


class EvalLoader(_EpochLoader):
    """Validation/test: never shuffled, the split in chunks of at most ``chunk_size`` rows.

    A contiguous slice of task-ordered data keeps each task's rows contiguous.
    """

    def __init__(self, data: Batch, chunk_size: int, **kw):
        super().__init__(data, False, 0, **kw)
        self.chunk_size = max(1, int(chunk_size))
        self.n = len(data["task_activity"])

    def __len__(self) -> int:
        return math.ceil(self.n / self.chunk_size)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        for k in range(len(self)):
            a, b = k * self.chunk_size, min(self.n, (k + 1) * self.chunk_size)
            if self.world_size == 1:
                yield {key: v[a:b] for key, v in self.data.items()}
            else:
                yield self._take([torch.arange(a, b)])


def _deterministic(data: Batch, config: Mapping, seed: int, **kw) -> DeterministicLoader:
    return DeterministicLoader(data, config["batch_size"], config["shuffle"], seed, **kw)


def _stochastic(data: Batch, config: Mapping, seed: int, **kw) -> StochasticLoader:
    return StochasticLoader(data, config["batch_size"], config["shuffle"], seed, **kw)


def _custom(data: Batch, config: Mapping, seed: int, **kw):
    callback: Optional[Callable] = config.get("batching_callback")
    if not callable(callback):
        raise ConfigError(
            "training config key 'batching_callback' must be a callable "
            "(data, config, seed) -> iterable of batches when batching_strategy is 'custom'"
        )
    return callback(data, config, seed)


# name -> factory(data, training_config, seed, rank=, world_size=) -> iterable of batches
BATCHING_STRATEGIES: dict[str, Callable] = {
    "data_deterministic": _deterministic,
    "data_stochastic": _stochastic,
    "custom": _custom,
}


def make_train_loader(data: Batch, config: Mapping, seed: int, rank: int = 0, world_size: int = 1):
    """The training loader of ``config['batching_strategy']`` over ``data``."""
    name = config["batching_strategy"]
    if name not in BATCHING_STRATEGIES:
        raise ConfigError(
            f"training config key 'batching_strategy' is {name!r}; known strategies: "
            f"{', '.join(sorted(BATCHING_STRATEGIES))}"
        )
    return BATCHING_STRATEGIES[name](data, config, seed, rank=rank, world_size=world_size)
