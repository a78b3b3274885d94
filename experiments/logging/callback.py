"""LoggingCallback: per-task epoch losses, the metrics CSV, fit plots and the divergence stop.

``LoggingCallback(out_dir, logging_epoch_interval=50, title_suffix=None)`` gives, per epoch,
``train/loss_task_<t>`` and ``validation/loss_task_<t>``: the data-weighted mean of the
per-batch task losses (sum of loss * rows over sum of rows, summed over all ranks under
DDP), sent to the progress bar and to every logger (W&B), kept in ``history`` and
appended to ``out_dir/metrics.csv`` (``experiments.logging.metrics``). Every
``logging_epoch_interval`` epochs and at the last epoch it draws the fit figures
(``experiments.logging.plots``; one per task and output plus an overview, named and
titled by epochs trained, 1-based, with ``title_suffix`` in every title) to
``out_dir/plots/*.png|pdf`` and, as a ``wandb.Image``, under ``plots/task_<t>_dim_<d>``
and ``plots/overview``. A non-finite epoch loss stops
training and names the task and epoch (``diverged``).

Next to ``validation/loss_task_<t>`` (all validation rows of task t) it logs
``validation/loss_in_domain_task_<t>`` (and ``test/...``): the same criterion,
``pl_module.criterion(t)``, over the rows whose x lie inside the task's training box
``[x_min_train, x_max_train]`` in every input dim (from ``trainer.datamodule.data
.task_configs[t]``; a data object without them gets no in-domain metric), weighted by
rows and reduced over ranks as the other epoch losses. The rows are found once per fit.

Once per fit (at the start of training) it computes each task's baseline: the
validation loss of the best constant predictor, the mean of the task's training
targets (per output), under the task's criterion: ``baseline/validation_loss_task_<t>``
and ``baseline/validation_loss_in_domain_task_<t>``. They are sent to the loggers once,
kept in ``baselines``, written to ``out_dir/baselines.json`` and included in
``final_metrics()``.

To log another per-epoch metric: subclass and override ``extra_metrics(trainer,
pl_module, split)`` to return ``{'<prefix>/<name>': float}`` (prefix ``train``,
``validation`` or ``test``); it then reaches the progress bar, the loggers, ``history``
and the CSV (a new column rewrites the CSV with the wider header).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch

from core_code.util.batching import batch_blocks, row_selection
from core_code.util.lightning_compat import batches_that_stepped
from experiments.logging import plots, wandb_session
from experiments.logging.metrics import (
    BASELINES_NAME,
    CSV_NAME,
    SPLIT_PREFIX,
    SPLITS,
    MetricsCSV,
    baseline_name,
    in_domain_metric_name,
    metric_name,
)
from experiments.run_state import write_text_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


class _EpochLoss:
    """Per-task sums of loss * rows and of rows over one epoch of one split.

    ``add`` only appends references (no device sync, no kernel launch per step); the
    weighted sums are formed once, in ``compute``.
    """

    def __init__(self) -> None:
        self.losses: dict[int, list[torch.Tensor]] = {}
        self.rows: dict[int, list[int]] = {}

    def reset(self) -> None:
        self.losses, self.rows = {}, {}

    def add(self, outputs: Any, batch: Any) -> bool:
        """Record a step's ``outputs['losses']`` and ``outputs['n']``; False if absent."""
        if not isinstance(outputs, Mapping) or not isinstance(outputs.get("losses"), Mapping):
            return False
        counts = outputs.get("n")
        if counts is None:  # fallback: count the rows (a host sync; the standard module returns 'n')
            ta = batch["task_activity"]
            counts = {t: int((ta == t).sum()) for t in outputs["losses"]}
        for t, loss in outputs["losses"].items():
            n = int(counts[t])
            if n > 0:
                self.losses.setdefault(t, []).append(loss)
                self.rows.setdefault(t, []).append(n)
        return True

    def state(self) -> dict[str, dict]:
        """The sums so far, for a checkpoint: ``{'losses': {task: 1-d CPU tensor}, 'rows': {task: [n]}}``."""
        return {"losses": {t: torch.stack([v.detach().reshape(()) for v in vs]).cpu() for t, vs in self.losses.items()},
                "rows": {t: [int(n) for n in self.rows[t]] for t in self.losses}}

    def load(self, state: Mapping[str, Any], device: Optional[torch.device] = None) -> None:
        """Continue from a ``state()``: the same step values, so ``compute`` gives what the
        uninterrupted epoch gives (bit for bit on the same device)."""
        self.reset()
        for t, values in state.get("losses", {}).items():
            values = torch.as_tensor(values)
            self.losses[int(t)] = list((values if device is None else values.to(device)).unbind())
            self.rows[int(t)] = [int(n) for n in state["rows"][t]]

    def compute(self, tasks: list[int], device: torch.device, strategy: Any = None,
                world_size: int = 1) -> dict[int, float]:
        """``{task: sum(loss * n) / sum(n)}`` over the epoch (over all ranks under DDP).

        ``tasks`` must be the same on every rank when ``world_size > 1`` (the reduction
        is collective); tasks without rows anywhere are left out.
        """
        if world_size == 1 or strategy is None:
            return self._compute_here(sorted(set(tasks) | set(self.losses)))
        tasks = list(tasks)
        if not tasks:
            return {}
        sums, rows = [], []
        for t in tasks:
            if t in self.losses:
                values = torch.stack([v.reshape(()) for v in self.losses[t]]).float()
                weights = torch.tensor(self.rows[t], dtype=torch.float32, device=values.device)
                sums.append(torch.dot(values, weights).to(device))
                rows.append(float(sum(self.rows[t])))
            else:
                sums.append(torch.zeros((), device=device))
                rows.append(0.0)
        total = torch.stack(sums)
        count = torch.tensor(rows, dtype=torch.float32, device=device)
        total = strategy.reduce(total, reduce_op="sum")
        count = strategy.reduce(count, reduce_op="sum")
        values = (total / count.clamp_min(1.0)).tolist()  # the epoch's one host sync
        counts = count.tolist()
        return {t: v for t, v, c in zip(tasks, values, counts) if c > 0}

    def _compute_here(self, tasks: list[int]) -> dict[int, float]:
        """``compute`` in one process: one host sync for all the epoch's step values, the
        row-weighted means summed in float64 on the host (a few small tensor ops less
        than on the device, which a small model's epoch notices)."""
        present = [t for t in tasks if t in self.losses]
        flat = [v.reshape(()) for t in present for v in self.losses[t]]
        values = torch.stack(flat).tolist() if flat else []
        out, i = {}, 0
        for t in present:
            rows = self.rows[t]
            out[t] = sum(v * n for v, n in zip(values[i:i + len(rows)], rows)) / sum(rows)
            i += len(rows)
        return out


Box = tuple[list[float], list[float]]

#: Splits that get an in-domain loss (training rows are in their task's box by definition).
IN_DOMAIN_SPLITS = ("val", "test")


def training_box(data: Any, task: int) -> Optional[Box]:
    """``(lows, highs)`` per input dim of ``task``'s training inputs; None if the data has no such config.

    Read from ``data.task_configs[task]['x_min_train' | 'x_max_train']`` (a number for
    every dim, or a list with one per dim).
    """
    cfg = (getattr(data, "task_configs", None) or {}).get(task)
    if not isinstance(cfg, Mapping) or "x_min_train" not in cfg or "x_max_train" not in cfg:
        return None
    d_in = int(getattr(data, "d_in", 1) or 1)

    def per_dim(value: Any) -> Optional[list[float]]:
        values = list(value) if isinstance(value, (list, tuple)) else [value] * d_in
        try:
            return [float(v) for v in values] if len(values) == d_in else None
        except (TypeError, ValueError):
            return None

    lo, hi = per_dim(cfg["x_min_train"]), per_dim(cfg["x_max_train"])
    return (lo, hi) if lo is not None and hi is not None else None


def in_box(x: torch.Tensor, box: Box) -> torch.Tensor:
    """Boolean mask of the rows of ``x`` (n, d_in) with ``lo <= x <= hi`` in every dim."""
    lo = torch.tensor(box[0], dtype=x.dtype, device=x.device)
    hi = torch.tensor(box[1], dtype=x.dtype, device=x.device)
    return ((x >= lo) & (x <= hi)).all(dim=1)


def baseline_losses(train: Mapping[str, torch.Tensor], val: Mapping[str, torch.Tensor],
                    criterion: Any, boxes: Mapping[int, Box]) -> dict[str, float]:
    """Validation losses of each task's constant predictor, the mean of its training targets.

    ``train``/``val``: split tensors ``{'x', 'y', 'task_activity'}``; ``criterion(t)`` the
    task's criterion. Returns ``baseline_name(t)`` for every task with training and
    validation rows, and ``baseline_name(t, in_domain=True)`` where ``boxes`` has the
    task and some validation rows lie in it.
    """
    out: dict[str, float] = {}
    with torch.no_grad():
        for t in sorted(set(train["task_activity"].tolist()) & set(val["task_activity"].tolist())):
            y_train = train["y"][train["task_activity"] == t].double()
            rows = val["task_activity"] == t
            y_val, x_val = val["y"][rows].double(), val["x"][rows]
            const = y_train.mean(dim=0, keepdim=True).to(y_val.dtype)
            out[baseline_name(t)] = float(criterion(t)(const.expand_as(y_val), y_val))
            if t in boxes:
                inside = in_box(x_val, boxes[t])
                if bool(inside.any()):
                    y_in = y_val[inside]
                    out[baseline_name(t, in_domain=True)] = float(criterion(t)(const.expand_as(y_in), y_in))
    return out


class LoggingCallback(pl.Callback):
    """Per-task epoch losses, metrics CSV, fit plots and divergence stop (module docstring).

    Attributes:
        history: one dict per finished training epoch: ``epoch`` and every metric.
        diverged: None, or ``{'task', 'epoch', 'split'}`` of the first non-finite loss.
        test_metrics: ``test/loss_task_<t>`` of the last ``trainer.test``.
        baselines: ``baseline/validation_loss[_in_domain]_task_<t>`` of this fit.

    ``takes_chunks``: a chunk's outputs (several optimizer steps) are accumulated row-weighted,
    so ``steps_per_chunk: 'auto'`` may chunk steps with this callback present.
    """

    takes_chunks = True

    def __init__(self, out_dir: Optional[PathLike], logging_epoch_interval: int = 50, plot: bool = True,
                 title_suffix: Optional[str] = None):
        super().__init__()
        if isinstance(logging_epoch_interval, bool) or int(logging_epoch_interval) < 1:
            raise ValueError(f"logging_epoch_interval must be an int >= 1, got {logging_epoch_interval!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.logging_epoch_interval = int(logging_epoch_interval)
        self.plot = bool(plot)
        self.title_suffix = title_suffix  # e.g. the grid point's varying values, in every plot title
        self.history: list[dict[str, float]] = []
        self.diverged: Optional[dict[str, Any]] = None
        self.test_metrics: dict[str, float] = {}
        self._acc = {split: _EpochLoss() for split in SPLITS}
        self._in_acc = {split: _EpochLoss() for split in IN_DOMAIN_SPLITS}
        self._boxes: Optional[dict[int, Box]] = None  # task -> training box, found once per fit
        self._in_rows: dict[tuple, tuple] = {}  # (split, loader, batch, task, a, b) -> (rows, count)
        self.baselines: dict[str, float] = {}
        self._val_metrics: dict[str, float] = {}  # this epoch's validation losses
        self._csv = MetricsCSV(self.out_dir / CSV_NAME) if self.out_dir is not None else None
        self._plotted: set[int] = set()
        self._epoch: Optional[int] = None  # the epoch being trained (whose sums self._acc['train'] holds)
        self._epoch_state: Optional[dict] = None  # a checkpoint's unfinished epoch, until on_train_start
        self._world = 1  # processes of the fit (the unfinished epoch is checkpointed with one only)
        self._warned: set[str] = set()

    # ------------------------------------------------------------------- paths
    @property
    def csv_path(self) -> Optional[Path]:
        """``out_dir/metrics.csv`` (None without an out_dir)."""
        return self._csv.path if self._csv is not None else None

    @property
    def plot_dir(self) -> Optional[Path]:
        """``out_dir/plots`` (None without an out_dir)."""
        return self.out_dir / plots.PLOT_DIR if self.out_dir is not None else None

    def final_metrics(self) -> dict[str, float]:
        """The last finished epoch's metrics (with ``epoch``), plus any test losses and the baselines."""
        out = dict(self.history[-1]) if self.history else {}
        out.update(self.test_metrics)
        out.update(self.baselines)
        return out

    # -------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """``history``, ``diverged`` and, when a checkpoint is written inside an epoch,
        ``epoch_state``: that epoch's partial training-loss sums and its validation losses
        if they ran already (a run resumed inside the epoch then writes the epoch's row as
        the uninterrupted run does). One process only: under DDP each rank holds its share
        of the sums and the checkpoint only rank 0's state, so a resumed epoch's training
        loss there covers the batches after the resume."""
        state: dict[str, Any] = {"history": [dict(r) for r in self.history], "diverged": self.diverged}
        if self._epoch is not None and self._world == 1 and (self._acc["train"].losses or self._val_metrics):
            state["epoch_state"] = {"epoch": int(self._epoch), "train": self._acc["train"].state(),
                                    "val_metrics": dict(self._val_metrics)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]
        self.diverged = state_dict.get("diverged")
        self._epoch_state = state_dict.get("epoch_state")  # older checkpoints have none

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._find_boxes(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in on_fit_start: the epoch counter of a resumed run is restored by now.
        self._restore(trainer)
        for acc in (*self._acc.values(), *self._in_acc.values()):
            acc.reset()
        self._epoch, self._world = trainer.current_epoch, int(getattr(trainer, "world_size", 1))
        self._resume_epoch(trainer, pl_module)
        self._log_baselines(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acc["train"].reset()
        self._val_metrics = {}
        self._epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._acc["train"].add(outputs, batch):
            self._warn_once("no-losses", "LoggingCallback: the training step returned no 'losses' dict; "
                                         "per-task losses are not logged")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acc["val"].reset()
        self._in_acc["val"].reset()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._acc["val"].add(outputs, batch)
            self._add_in_domain(trainer, pl_module, "val", outputs, batch, (dataloader_idx, batch_idx))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_metrics = self._finish_split(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.x runs the epoch's validation before this hook: the row has both.
        epoch = trainer.current_epoch
        train = self._finish_split(trainer, pl_module, "train")
        row = {"epoch": epoch, **train, **self._val_metrics}
        self._val_metrics = {}
        if self.history and self.history[-1]["epoch"] >= epoch:  # an epoch redone: replace its row
            self.history = [r for r in self.history if r["epoch"] != epoch]
        self.history.append(row)
        if trainer.is_global_zero and self._csv is not None:
            self._csv.write_row(row, self.history)
        if (epoch + 1) % self.logging_epoch_interval == 0:
            self._plot_epoch(trainer, pl_module, epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = self._epoch if self._epoch is not None else max(trainer.current_epoch - 1, 0)
        if epoch not in self._plotted:
            self._plot_epoch(trainer, pl_module, epoch)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acc["test"].reset()
        self._in_acc["test"].reset()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._acc["test"].add(outputs, batch)
        self._add_in_domain(trainer, pl_module, "test", outputs, batch, (dataloader_idx, batch_idx))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_metrics = self._finish_split(trainer, pl_module, "test", check=False)

    # ------------------------------------------------------------- epoch loss
    def _finish_split(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
                      check: bool = True) -> dict[str, float]:
        """Epoch losses of ``split``: computed once, logged, checked for finiteness."""
        world = trainer.world_size
        losses = self._acc[split].compute(self._tasks(trainer, pl_module), pl_module.device,
                                          trainer.strategy, world)
        self._acc[split].reset()
        metrics = {metric_name(split, t): v for t, v in losses.items()}
        if split in self._in_acc:
            tasks = sorted(self._boxes or {})  # the same on every rank (from the data config)
            in_domain = self._in_acc[split].compute(tasks, pl_module.device, trainer.strategy, world)
            self._in_acc[split].reset()
            metrics.update({in_domain_metric_name(split, t): v for t, v in in_domain.items()})
        metrics.update(self.extra_metrics(trainer, pl_module, split))
        if metrics:
            self._publish(trainer, pl_module, split, metrics, world)
        if check:
            self._check_finite(trainer, split, losses)
        return metrics

    @staticmethod
    def _publish(trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
                 metrics: dict[str, float], world: int) -> None:
        """Send epoch metrics to the progress bar, callback_metrics and every logger.

        Straight to the loggers rather than through ``log_dict``: that costs ~0.5 ms a
        call, a sizeable share of an epoch of a small model (benchmarks/). The values
        are already reduced across ranks. ``trainer.test()`` returns what ``self.log``
        collected, so test metrics keep going through it.
        """
        if split == "test":
            pl_module.log_dict(metrics, prog_bar=True, on_step=False, on_epoch=True, sync_dist=world > 1)
            return
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        trainer.progress_bar_metrics.update(metrics)
        if trainer.loggers and trainer.is_global_zero:
            step = batches_that_stepped(trainer)  # the step axis Lightning's own logging uses
            for lg in trainer.loggers:
                lg.log_metrics({**metrics, "epoch": trainer.current_epoch}, step=step)

    def extra_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> dict[str, float]:
        """More per-epoch metrics of ``split`` ('train', 'val', 'test'); override to add some.

        Called once per epoch and split on every rank, after the epoch losses; return
        floats named ``'<prefix>/<name>'`` with prefix ``SPLIT_PREFIX[split]``. By default:
        for 'train', the module's ``epoch_diagnostics()`` (``diagnostics/...``), if it has one.
        """
        diagnostics = getattr(pl_module, "epoch_diagnostics", None)
        return dict(diagnostics()) if split == "train" and callable(diagnostics) else {}

    # ------------------------------------------------- in-domain and baselines
    def _find_boxes(self, trainer: pl.Trainer) -> None:
        """Each task's training box (once per fit); forget the cached in-domain rows."""
        data = getattr(getattr(trainer, "datamodule", None), "data", None)
        tasks = getattr(data, "all_tasks", None) or []
        boxes = {int(t): box for t in tasks if (box := training_box(data, int(t))) is not None}
        self._boxes = boxes
        self._in_rows = {}

    def _add_in_domain(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str, outputs: Any,
                       batch: Any, key: tuple) -> None:
        """Record the in-domain loss of every task of an evaluation batch (from the step's ``preds``)."""
        if self._boxes is None:
            self._find_boxes(trainer)  # trainer.test() without a fit
        preds = outputs.get("preds") if isinstance(outputs, Mapping) else None
        if not self._boxes or not isinstance(preds, Mapping) or not hasattr(pl_module, "criterion"):
            return
        losses: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        with torch.no_grad():
            for t, (a, b) in batch_blocks(batch).items():
                if t not in self._boxes or t not in preds:
                    continue
                rows_key = (split, *key, t, a, b)
                found = self._in_rows.get(rows_key)
                if found is None:  # first time this batch is seen in this fit
                    found = self._in_rows[rows_key] = row_selection(in_box(batch["x"][a:b], self._boxes[t]))
                rows, n = found
                if n == 0:
                    continue
                losses[t] = pl_module.criterion(t)(preds[t][rows], batch["y"][a:b][rows])
                counts[t] = n
        self._in_acc[split].add({"losses": losses, "n": counts}, batch)

    def _log_baselines(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute each task's baseline (once per fit), log it once and write baselines.json."""
        dm = getattr(trainer, "datamodule", None)
        tensors = getattr(dm, "tensors", None) or {}
        data = getattr(dm, "data", None)
        if not hasattr(pl_module, "criterion"):
            return
        try:
            train = tensors.get("train") or data.create_data("train")
            val = tensors.get("val") or data.create_data("val")
        except AttributeError:
            return
        if self._boxes is None:
            self._find_boxes(trainer)
        self.baselines = baseline_losses(train, val, pl_module.criterion, self._boxes or {})
        if not self.baselines or not trainer.is_global_zero:
            return
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out_dir / BASELINES_NAME, json.dumps(self.baselines, indent=1, sort_keys=True))
        step = batches_that_stepped(trainer)
        for lg in trainer.loggers:
            lg.log_metrics(dict(self.baselines), step=step)

    @staticmethod
    def _tasks(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[int]:
        """The tasks every rank agrees on: the data's, else the module's (else none)."""
        data = getattr(getattr(trainer, "datamodule", None), "data", None)
        tasks = getattr(data, "all_tasks", None) or getattr(pl_module, "tasks", None) or []
        return [int(t) for t in tasks]

    def _check_finite(self, trainer: pl.Trainer, split: str, losses: dict[int, float]) -> None:
        bad = [(t, v) for t, v in losses.items() if not math.isfinite(v)]
        if not bad:
            return
        task, value = bad[0]
        epoch = trainer.current_epoch
        trainer.should_stop = True
        d = self.diverged
        # Validation runs before on_train_epoch_end: a train divergence of the same epoch is the cause.
        if d is None or (split == "train" and d["split"] == "validation" and d["epoch"] == epoch):
            self.diverged = {"task": task, "epoch": epoch, "split": SPLIT_PREFIX[split]}
            if trainer.is_global_zero:
                log.warning("%s loss of task %d became %s at epoch %d; stopping",
                            SPLIT_PREFIX[split], task, value, epoch)

    # ----------------------------------------------------------------- resume
    def _restore(self, trainer: pl.Trainer) -> None:
        """Keep what happened before the (resumed) start epoch; later epochs are redone."""
        start = trainer.current_epoch
        if self._csv is not None:
            self.history = self._csv.resume(start, self.history, write=trainer.is_global_zero)
        else:
            self.history = [r for r in self.history if r["epoch"] < start]
        self._plotted = {e for e in self._plotted if e < start}
        if self.diverged is not None and self.diverged["epoch"] >= start:
            self.diverged = None

    def _resume_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take up the checkpoint's unfinished epoch (``epoch_state``) when this fit continues it.

        A fit resumed inside epoch e starts with e as its current epoch (Lightning calls no
        ``on_train_epoch_start`` for it); one resumed at an epoch boundary starts with the
        next epoch and drops the state.
        """
        state, self._epoch_state = self._epoch_state, None
        if not isinstance(state, Mapping) or state.get("epoch") != trainer.current_epoch or self._world != 1:
            return
        self._acc["train"].load(state.get("train") or {}, pl_module.device)
        self._val_metrics = dict(state.get("val_metrics") or {})

    # ------------------------------------------------------------------ plots
    def _plot_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """Fit figures of ``epoch`` to files and W&B (main process only)."""
        if not self.plot or not trainer.is_global_zero:
            return
        self._plotted.add(epoch)
        tensors = getattr(getattr(trainer, "datamodule", None), "tensors", None) or {}
        if "val" not in tensors or len(tensors["val"]["x"]) == 0:
            self._warn_once("no-val", "LoggingCallback: no validation data (DataModule.tensors['val']); no plots")
            return
        wandb_loggers = wandb_session.wandb_loggers(trainer.loggers)
        if self.plot_dir is None and not wandb_loggers:
            return
        images: dict[str, Any] = {}
        replaced = 0
        # file names and titles count epochs trained (1-based), as summary.json's 'epochs'
        for key, name, fig in plots.snapshot_figures(trainer, pl_module, epoch + 1, self.title_suffix):
            png = None
            if self.plot_dir is not None:
                stem = self.plot_dir / name
                replaced += plots.save_figure(fig, stem)
                png = stem.with_suffix(".png")
            if wandb_loggers:
                images[key] = wandb_session.wandb_image(fig, png)
            fig.clf()
        if replaced:
            log.info("%s: replaced %d plot file(s) of epoch %d from an earlier run", self.plot_dir, replaced, epoch + 1)
        if images:
            step = batches_that_stepped(trainer)
            for lg in wandb_loggers:
                lg.log_metrics({**images, "epoch": epoch}, step=step)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
