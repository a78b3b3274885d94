"""Batch loaders cut from in-memory tensors, and the batching-strategy registry.

Every loader yields dicts in the ``CreateData.create_data`` layout,
``{'x', 'y', 'task_activity'}``, with each task's rows in ONE contiguous block, in task
order. Batches are index slices of preloaded tensors (no per-sample Dataset, no
collate, no worker processes): that is where the original lost most of its time.

Shuffling uses a permutation drawn from a generator seeded with (seed, epoch), so an
epoch's batches are reproducible and a resumed run continues with the same order.
``resume_from(position)`` makes the next iteration continue an interrupted epoch: it
yields that epoch's batches from the first one not yet trained (``DataModule`` asks the
resumed Trainer's loop which one that is).

The built-in loaders yield ``TaskBatch`` dicts: plain dicts of the three tensors that
also carry their task blocks (``batch.blocks``), so the training step never searches
for them. ``ChunkLoader`` groups K consecutive batches into one ``ChunkBatch`` (see
``DataModule(steps_per_chunk=K)``): one Lightning step then runs K optimizer steps.

DDP (``world_size > 1``): every rank cuts the same GLOBAL batch and keeps its share of
each task's rows (``tensor_split``: shares may differ by one row, or be empty). The
shares then carry ``global_rows``, ``{task: rows of the global batch}`` of every task in
the global batch, so the training step can weight its per-task mean by
``rows_on_rank * world_size / global_rows`` (the ranks' gradient average is then the
gradient of the global per-task mean) and count tasks this rank has no rows of. With
one process ``global_rows`` is None: the batch is the global batch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

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


def distinct_rows(xs: Sequence[torch.Tensor], blocks: Mapping[int, tuple[int, int]]
                  ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(rows, inverse)`` with ``xs[k] == rows[inverse]`` for every k, when a task block repeats.

    ``xs``: the ``x`` of one batch, or of several members' batches (then they must all be
    equal); ``blocks``: its task blocks (contiguous, covering every row). A block equal to
    an earlier one (tasks evaluated on the same points) reuses its rows, so a forward of
    ``rows`` gives every row's output. None when no block repeats or the ``xs`` differ.
    """
    x0 = xs[0]
    if not all(torch.equal(x, x0) for x in xs[1:]):
        return None
    kept: list[tuple[int, int, int]] = []  # (start, stop, offset in rows) of the distinct blocks
    inverse = []
    for a, b in sorted(blocks.values()):
        same = next((off for ka, kb, off in kept if kb - ka == b - a and torch.equal(x0[ka:kb], x0[a:b])), None)
        if same is None:
            same = sum(kb - ka for ka, kb, _ in kept)
            kept.append((a, b, same))
        inverse.append(torch.arange(same, same + b - a, device=x0.device))
    if len(kept) == len(blocks):
        return None
    return torch.cat([x0[a:b] for a, b, _ in kept]), torch.cat(inverse)


class TaskBatch(dict):
    """A batch dict ``{'x', 'y', 'task_activity'}`` that knows its task blocks.

    ``blocks`` is ``{task: (start, stop)}`` of ``task_activity`` (computed on first use
    when not given). A plain dict with the same keys works everywhere a TaskBatch does;
    the loaders yield TaskBatches so that nobody has to search for the blocks per step.
    The blocks describe the tensors given at construction: replace ``task_activity``
    and you get a stale ``blocks`` (build a new TaskBatch instead).

    ``global_rows``: None when the batch is a whole global batch (one process); a DDP
    rank's share of a global batch has ``{task: rows of the global batch}`` of every
    task of the global batch, including tasks this share has no rows of.

    ``distinct``: None, or ``distinct_rows`` of an evaluation batch whose tasks share
    their points (the model then runs once per distinct row).
    """

    def __init__(self, *args, blocks: Optional[dict[int, tuple[int, int]]] = None,
                 global_rows: Optional[dict[int, int]] = None,
                 distinct: Optional[tuple[torch.Tensor, torch.Tensor]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._blocks = blocks
        self.global_rows = global_rows
        self.distinct = distinct

    @property
    def blocks(self) -> dict[int, tuple[int, int]]:
        if self._blocks is None:
            self._blocks = task_blocks(self["task_activity"])
        return self._blocks

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TaskBatch":
        """A TaskBatch of ``fn`` applied to every tensor (``distinct`` included), blocks and rows kept."""
        distinct = None if self.distinct is None else tuple(fn(v) for v in self.distinct)
        return TaskBatch(_map(self, fn), blocks=self._blocks, global_rows=self.global_rows, distinct=distinct)

    def to(self, device, non_blocking: bool = True) -> "TaskBatch":
        """This batch on ``device`` (itself when every tensor is there already)."""
        moved = _move(self, device, non_blocking)
        if moved is None:
            return self
        distinct = None if self.distinct is None else tuple(v.to(device, non_blocking=non_blocking)
                                                            for v in self.distinct)
        return TaskBatch(moved, blocks=self._blocks, global_rows=self.global_rows, distinct=distinct)


class ChunkBatch(dict):
    """K consecutive training batches as one: their rows concatenated in step order.

    ``x``, ``y``, ``task_activity`` hold every step's rows one after the other;
    ``steps`` is ``[(start, stop, blocks), ...]``: the rows of each step and that step's
    task blocks (relative to ``start``). ``step_batches()`` yields the K TaskBatches
    (views, no copies). A task's rows are contiguous inside each step, not across the chunk.
    ``global_rows``: None (one process), or each step's ``TaskBatch.global_rows``.
    """

    def __init__(self, *args, steps: Optional[list] = None, global_rows: Optional[list] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[int, int, dict[int, tuple[int, int]]]] = list(steps or [])
        self.global_rows: Optional[list[Optional[dict[int, int]]]] = global_rows

    def step_global_rows(self, i: int) -> Optional[dict[int, int]]:
        """Step ``i``'s ``global_rows`` (None with one process)."""
        return None if self.global_rows is None else self.global_rows[i]

    def step_batches(self) -> Iterator[TaskBatch]:
        for i, (a, b, blocks) in enumerate(self.steps):
            yield TaskBatch({k: v[a:b] for k, v in self.items()}, blocks=blocks,
                            global_rows=self.step_global_rows(i))

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ChunkBatch":
        """A ChunkBatch of ``fn`` applied to every tensor, steps and rows kept."""
        return ChunkBatch(_map(self, fn), steps=self.steps, global_rows=self.global_rows)

    def to(self, device, non_blocking: bool = True) -> "ChunkBatch":
        """This chunk on ``device`` (itself when every tensor is there already)."""
        moved = _move(self, device, non_blocking)
        return self if moved is None else ChunkBatch(moved, steps=self.steps, global_rows=self.global_rows)


def _map(batch: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """The batch's items, ``fn`` applied to the tensors."""
    return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _move(batch: dict, device, non_blocking: bool) -> Optional[dict]:
    """The batch's tensors on ``device``; None when all of them are there already."""
    device = torch.device(device)
    if all(not isinstance(v, torch.Tensor) or _on(v, device) for v in batch.values()):
        return None
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device == device or (device.index is None and t.device.type == device.type)


def row_selection(mask: torch.Tensor) -> tuple[Union[slice, torch.Tensor], int]:
    """``(rows, count)`` of the True rows of a 1-d ``mask``: a slice when they are contiguous
    (indexing with it is a view, no copy: equidistant evaluation points give one block),
    else their indices."""
    index = mask.nonzero().squeeze(1)
    n = index.numel()
    if n and int(index[-1]) - int(index[0]) + 1 == n:
        return slice(int(index[0]), int(index[-1]) + 1), n
    return index, n


def batch_blocks(batch: dict) -> dict[int, tuple[int, int]]:
    """The task blocks of a batch: its ``blocks`` if it knows them, else searched."""
    blocks = getattr(batch, "blocks", None)
    return task_blocks(batch["task_activity"]) if blocks is None else blocks


def _blocks_of(sizes: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """``{task: (start, stop)}`` of consecutive blocks of the given (task, rows); empty ones left out."""
    out, a = {}, 0
    for t, n in sizes:
        if n > 0:
            out[int(t)] = (a, a + n)
            a += n
    return out


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
        self._resume: Optional[Callable[[], tuple[int, int]]] = None

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose batches the next iteration yields (for resumption)."""
        self.epoch = int(epoch)

    def resume_from(self, position: Callable[[], tuple[int, int]]) -> None:
        """Make the next iteration continue an interrupted epoch.

        ``position()`` returns ``(epoch, done)``; it is called when that iteration starts
        (at its first ``next``, not at ``iter``), and the iteration then yields batches
        ``done, done + 1, ...`` of epoch ``epoch``. One iteration only: the next one is
        epoch ``epoch + 1`` from its first batch. ``len()`` stays the length of a whole epoch.
        """
        self._resume = position

    def _start(self) -> tuple[int, int]:
        """(epoch, batches to skip) of the iteration starting now; the epoch counter moves on."""
        skip = 0
        if self._resume is not None:
            position, self._resume = self._resume, None
            epoch, skip = position()
            self.epoch = int(epoch)
        epoch = self.epoch
        self.epoch += 1
        return epoch, max(0, int(skip))

    def _shard(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's share of every task's index block (all ranks: same global batch)."""
        if self.world_size == 1:
            return parts
        return [torch.tensor_split(p, self.world_size)[self.rank] for p in parts]

    def _gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.index_select(0, idx) for k, v in self.data.items()}

    def _take(self, parts: list[torch.Tensor], tasks: Optional[list[int]] = None) -> TaskBatch:
        """The rows ``parts`` (one index block per task, in task order) as a TaskBatch.

        Under DDP this rank's share of them, with ``global_rows`` when ``tasks`` is given.
        """
        global_rows = None
        if self.world_size > 1 and tasks is not None:
            global_rows = {int(t): len(p) for t, p in zip(tasks, parts) if len(p)}
        parts = self._shard(parts)
        idx = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        blocks = _blocks_of(list(zip(tasks, (len(p) for p in parts)))) if tasks is not None else None
        return TaskBatch(self._gather(idx), blocks=blocks, global_rows=global_rows)

    def __iter__(self) -> Iterator[TaskBatch]:
        # A generator: the epoch (and a resume position) is read at the first batch, not at
        # iter(). Lightning creates the iterator before on_train_epoch_start, where a resumed
        # run calls set_epoch, and before its loop knows how many batches a resumed epoch has done.
        epoch, skip = self._start()
        yield from self._batches(epoch, skip)

    def _batches(self, epoch: int, skip: int = 0) -> Iterator[TaskBatch]:  # pragma: no cover - abstract
        """Epoch ``epoch``'s batches from batch ``skip`` on."""
        raise NotImplementedError


class _LightningResumable:
    """Lightning's resumable-loader protocol (``state_dict`` / ``load_state_dict``) for a training loader.

    With it Lightning does not warn that a checkpoint from inside an epoch cannot be
    resumed exactly. The loader keeps no position of its own in the checkpoint: a count of
    batches yielded can be one ahead of the batches trained (a stop inside a step, or a
    prefetching loop). ``DataModule`` takes the position from the restored loop instead
    (``resume_from``), which counts exactly the batches Lightning continues after.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to load (see the class docstring)."""


class DeterministicLoader(_LightningResumable, _EpochLoader):
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
        # This rank's columns of each task's block of a batch, and the blocks they form:
        # the same for every batch.
        self._columns: list[tuple[int, int]] = []
        for size in self.task_batch_sizes.values():
            cols = torch.tensor_split(torch.arange(size), self.world_size)[self.rank] if size else torch.arange(0)
            self._columns.append((int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 0))
        self.batch_blocks = _blocks_of([(t, hi - lo) for t, (lo, hi) in zip(self.task_batch_sizes, self._columns)])
        # Every batch is a share of a global batch of task_batch_sizes rows (DDP only).
        self.global_rows = ({t: s for t, s in self.task_batch_sizes.items() if s > 0}
                            if self.world_size > 1 else None)

    def __len__(self) -> int:
        return self.num_batches

    def epoch_index(self, epoch: int) -> torch.Tensor:
        """``(num_batches, rows)``: row k holds the data indices of batch k (this rank's share)."""
        cols = []
        for (t, (start, stop)), (lo, hi) in zip(self.blocks.items(), self._columns):
            n, size = stop - start, self.task_batch_sizes[t]
            if hi <= lo:
                continue
            need = self.num_batches * size
            cycles = math.ceil(need / n)
            perms = [_permutation(n, self.shuffle, self.seed, epoch * 1_000_003 + c, t) for c in range(cycles)]
            order = torch.cat(perms)[:need] + start
            cols.append(order.view(self.num_batches, size)[:, lo:hi])
        if not cols:
            return torch.empty(self.num_batches, 0, dtype=torch.long)
        return torch.cat(cols, 1)

    def _batches(self, epoch: int, skip: int = 0) -> Iterator[TaskBatch]:
        index = self.epoch_index(epoch)
        for k in range(skip, self.num_batches):
            yield TaskBatch(self._gather(index[k]), blocks=self.batch_blocks, global_rows=self.global_rows)

    def chunks(self, steps: int) -> Iterator["ChunkBatch"]:
        """The next epoch's batches, ``steps`` at a time, each chunk gathered at once.

        A resumed epoch (``resume_from``) starts at its first batch not done: pass a
        multiple of ``steps`` (``ChunkLoader`` does) to keep the chunks of the whole epoch.
        """
        epoch, skip = self._start()
        index = self.epoch_index(epoch)
        rows = index.shape[1]
        for k in range(skip, self.num_batches, steps):
            part = index[k:k + steps]
            chunk_steps = [(i * rows, (i + 1) * rows, self.batch_blocks) for i in range(len(part))]
            global_rows = None if self.global_rows is None else [self.global_rows] * len(part)
            yield ChunkBatch(self._gather(part.reshape(-1)), steps=chunk_steps, global_rows=global_rows)


class StochasticLoader(_LightningResumable, _EpochLoader):
    """One shuffled stream over all tasks' data; rows regrouped by task inside a batch."""

    def __init__(self, data: Batch, batch_size: int, shuffle: bool, seed: int, **kw):
        super().__init__(data, shuffle, seed, **kw)
        self.batch_size = int(batch_size)
        self.n = len(data["task_activity"])

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _batches(self, epoch: int, skip: int = 0) -> Iterator[TaskBatch]:
        order = _permutation(self.n, self.shuffle, self.seed, epoch, -1)
        tasks = self.data["task_activity"]
        for k in range(skip, len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            idx = idx[torch.argsort(tasks[idx], stable=True)]
            present, counts = torch.unique_consecutive(tasks[idx], return_counts=True)
            yield self._take(list(torch.split(idx, counts.tolist())), present.tolist())


class EvalLoader(_EpochLoader):
    """Validation/test: never shuffled, the split in chunks of at most ``chunk_size`` rows.

    A contiguous slice of task-ordered data keeps each task's rows contiguous.
    """

    def __init__(self, data: Batch, chunk_size: int, **kw):
        super().__init__(data, False, 0, **kw)
        self.chunk_size = max(1, int(chunk_size))
        self.n = len(data["task_activity"])
        self.blocks = task_blocks(data["task_activity"])
        self._distinct: dict[int, Optional[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return math.ceil(self.n / self.chunk_size)

    def _slice_blocks(self, a: int, b: int) -> dict[int, tuple[int, int]]:
        return _blocks_of([(t, min(hi, b) - max(lo, a)) for t, (lo, hi) in self.blocks.items()])

    def _batches(self, epoch: int, skip: int = 0) -> Iterator[TaskBatch]:
        for k in range(skip, len(self)):
            a, b = k * self.chunk_size, min(self.n, (k + 1) * self.chunk_size)
            if self.world_size == 1:
                blocks = self._slice_blocks(a, b)
                if k not in self._distinct:  # the split is fixed: found once per chunk
                    self._distinct[k] = distinct_rows([self.data["x"][a:b]], blocks)
                yield TaskBatch({key: v[a:b] for key, v in self.data.items()}, blocks=blocks,
                                distinct=self._distinct[k])
            else:
                yield self._take([torch.arange(a, b)])


class ChunkLoader:
    """The batches of ``loader``, ``steps`` consecutive ones at a time, as ChunkBatches.

    ``steps='epoch'``: a whole epoch per chunk. Loaders with a ``chunks(steps)``
    method (DeterministicLoader) gather each chunk at once; others' batches are
    concatenated. ``set_epoch`` and the epoch counter are the wrapped loader's, and so is
    ``resume_from``, whose position counts chunks here (``done`` chunks = ``done * steps``
    batches of the wrapped loader).
    """

    def __init__(self, loader, steps: Union[int, str]):
        if steps == "epoch":
            steps = None
        elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps_per_chunk must be 'auto', an int >= 1 or 'epoch' (a whole epoch per chunk), "
                              f"got {steps!r}")
        self.loader = loader
        self.steps = steps

    def _steps(self) -> int:
        return max(1, len(self.loader)) if self.steps is None else self.steps

    def __len__(self) -> int:
        return math.ceil(len(self.loader) / self._steps())

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def resume_from(self, position: Callable[[], tuple[int, int]]) -> None:
        """``resume_from`` of the wrapped loader, ``position()``'s ``done`` counted in chunks."""
        if not hasattr(self.loader, "resume_from"):
            raise TypeError(f"{type(self.loader).__name__} cannot resume inside an epoch (no resume_from)")

        def batches() -> tuple[int, int]:
            epoch, done = position()
            return epoch, int(done) * self._steps()

        self.loader.resume_from(batches)

    def __iter__(self) -> Iterator[ChunkBatch]:
        steps = self._steps()
        if hasattr(self.loader, "chunks"):
            yield from self.loader.chunks(steps)
            return
        group: list[dict] = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == steps:
                yield _concat(group)
                group = []
        if group:
            yield _concat(group)


class _ResumableChunkLoader(_LightningResumable, ChunkLoader):
    """A ``ChunkLoader`` over a loader that can continue an interrupted epoch (``resume_from``)."""


def chunk_loader(loader, steps: Union[int, str]) -> ChunkLoader:
    """``ChunkLoader(loader, steps)``; one Lightning counts as resumable when ``loader`` is."""
    cls = _ResumableChunkLoader if isinstance(loader, _LightningResumable) else ChunkLoader
    return cls(loader, steps)


def _concat(batches: list[dict]) -> ChunkBatch:
    steps, a = [], 0
    for batch in batches:
        n = len(batch["task_activity"])
        steps.append((a, a + n, batch_blocks(batch)))
        a += n
    keys = list(batches[0])
    global_rows = [getattr(b, "global_rows", None) for b in batches]
    if all(g is None for g in global_rows):
        global_rows = None
    return ChunkBatch({k: torch.cat([b[k] for b in batches]) for k in keys}, steps=steps, global_rows=global_rows)


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
