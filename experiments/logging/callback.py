"""LoggingCallback: per-task epoch losses, the metrics CSV, fit plots and the divergence stop.

``LoggingCallback(out_dir, logging_epoch_interval=50)`` gives, per epoch,
``train/loss_task_<t>`` and ``validation/loss_task_<t>``: the data-weighted mean of the
per-batch task losses (sum of loss * rows over sum of rows, summed over all ranks under
DDP), sent to the progress bar and to every logger (W&B), kept in ``history`` and
appended to ``out_dir/metrics.csv`` (``experiments.logging.metrics``). Every
``logging_epoch_interval`` epochs and at the last epoch it draws the fit figures
(``experiments.logging.plots``) to ``out_dir/plots/*.png|pdf`` and, as a
``wandb.Image``, under ``plots/task_<t>_dim_<d>``. A non-finite epoch loss stops
training and names the task and epoch (``diverged``).

To log another per-epoch metric: subclass and override ``extra_metrics(trainer,
pl_module, split)`` to return ``{'<prefix>/<name>': float}`` (prefix ``train``,
``validation`` or ``test``); it then reaches the progress bar, the loggers, ``history``
and the CSV (a new column rewrites the CSV with the wider header).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch

from core_code.util.lightning_compat import batches_that_stepped
from experiments.logging import plots, wandb_session
from experiments.logging.metrics import CSV_NAME, SPLIT_PREFIX, SPLITS, MetricsCSV, metric_name

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

    def compute(self, tasks: list[int], device: torch.device, strategy: Any = None,
                world_size: int = 1) -> dict[int, float]:
        """``{task: sum(loss * n) / sum(n)}`` over the epoch (over all ranks under DDP).

        ``tasks`` must be the same on every rank when ``world_size > 1`` (the reduction
        is collective); tasks without rows anywhere are left out.
        """
        tasks = sorted(set(tasks) | set(self.losses)) if world_size == 1 else list(tasks)
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
        if world_size > 1 and strategy is not None:
            total = strategy.reduce(total, reduce_op="sum")
            count = strategy.reduce(count, reduce_op="sum")
        values = (total / count.clamp_min(1.0)).tolist()  # the epoch's one host sync
        counts = count.tolist()
        return {t: v for t, v, c in zip(tasks, values, counts) if c > 0}


class LoggingCallback(pl.Callback):
    """Per-task epoch losses, metrics CSV, fit plots and divergence stop (module docstring).

    Attributes:
        history: one dict per finished training epoch: ``epoch`` and every metric.
        diverged: None, or ``{'task', 'epoch', 'split'}`` of the first non-finite loss.
        test_metrics: ``test/loss_task_<t>`` of the last ``trainer.test``.
    """

    def __init__(self, out_dir: Optional[PathLike], logging_epoch_interval: int = 50, plot: bool = True):
        super().__init__()
        if isinstance(logging_epoch_interval, bool) or int(logging_epoch_interval) < 1:
            raise ValueError(f"logging_epoch_interval must be an int >= 1, got {logging_epoch_interval!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.logging_epoch_interval = int(logging_epoch_interval)
        self.plot = bool(plot)
        self.history: list[dict[str, float]] = []
        self.diverged: Optional[dict[str, Any]] = None
        self.test_metrics: dict[str, float] = {}
        self._acc = {split: _EpochLoss() for split in SPLITS}
        self._val_metrics: dict[str, float] = {}  # this epoch's validation losses
        self._csv = MetricsCSV(self.out_dir / CSV_NAME) if self.out_dir is not None else None
        self._plotted: set[int] = set()
        self._epoch: Optional[int] = None
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
        """The last finished epoch's metrics (with ``epoch``), plus any test losses."""
        out = dict(self.history[-1]) if self.history else {}
        out.update(self.test_metrics)
        return out

    # -------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history], "diverged": self.diverged}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]
        self.diverged = state_dict.get("diverged")

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in on_fit_start: the epoch counter of a resumed run is restored by now.
        self._restore(trainer)
        for acc in self._acc.values():
            acc.reset()

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

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._acc["val"].add(outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_metrics = self._finish_split(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.x runs the epoch's validation before this hook: the row has both.
        epoch = trainer.current_epoch
        train = self._finish_split(trainer, pl_module, "train")
        row = {"epoch": epoch, **train, **self._val_metrics}
        self.history = [r for r in self.history if r["epoch"] != epoch] + [row]
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

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._acc["test"].add(outputs, batch)

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
        floats named ``'<prefix>/<name>'`` with prefix ``SPLIT_PREFIX[split]``.
        """
        return {}

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
        for task, dim, fig in plots.fit_figures(trainer, pl_module, epoch):
            png = None
            if self.plot_dir is not None:
                stem = plots.plot_stem(self.plot_dir, task, dim, epoch)
                replaced += plots.save_figure(fig, stem)
                png = stem.with_suffix(".png")
            if wandb_loggers:
                images[f"plots/task_{task}_dim_{dim}"] = wandb_session.wandb_image(fig, png)
            fig.clf()
        if replaced:
            log.info("%s: replaced %d plot file(s) of epoch %d from an earlier run", self.plot_dir, replaced, epoch)
        if images:
            step = batches_that_stepped(trainer)
            for lg in wandb_loggers:
                lg.log_metrics({**images, "epoch": epoch}, step=step)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
