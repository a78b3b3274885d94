"""Logging of a multi-task run: per-task epoch losses, metrics CSV, fit plots, W&B.

``LoggingCallback(out_dir, logging_epoch_interval=50)`` gives, per epoch,
``train/loss_task_<t>`` and ``validation/loss_task_<t>``: the data-weighted mean of the
per-batch task losses (sum of loss * rows over sum of rows), sent to the progress bar
and to every logger (W&B), kept in ``history`` and appended to ``out_dir/metrics.csv``.
Every ``logging_epoch_interval`` epochs and at the last epoch it plots, per task and per
output dimension the task's criterion looks at, the training data, the true function
and the model's prediction on the validation inputs (``out_dir/plots/*.png|pdf``, and a
``wandb.Image`` under ``plots/task_<t>_dim_<d>``). A non-finite epoch loss stops
training and names the task and epoch (``diverged``).

``make_wandb_logger(...)`` builds the run's ``WandbLogger`` (offline without a W&B
login; never prompts) and ``finish_wandb()`` closes the run (call it in a ``finally``).

W&B and matplotlib are imported here only, and lazily (both are slow to import).
Plots use matplotlib's object-oriented ``Figure`` with the Agg canvas and never pyplot:
no global backend switch, no figure registry to leak into, safe without a display.

To log another per-epoch metric: subclass and override ``extra_metrics(trainer,
pl_module, split)`` to return ``{'<prefix>/<name>': float}`` (prefix ``train``,
``validation`` or ``test``); it then reaches the progress bar, the loggers, ``history``
and the CSV (a new column rewrites the CSV with the wider header).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import netrc
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from core_code.util.criteria import criterion_dims
from experiments.run_state import jsonable

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# Lightning's split names -> metric prefixes (split first, then task).
SPLIT_PREFIX = {"train": "train", "val": "validation", "test": "test"}
CSV_NAME = "metrics.csv"
PLOT_DIR = "plots"
_PREDICT_CHUNK = 65536  # rows per forward when predicting for the plots


def metric_name(split: str, task: int) -> str:
    """``'train/loss_task_0'``, ``'validation/loss_task_1'``, ... (split: a SPLIT_PREFIX key)."""
    return f"{SPLIT_PREFIX[split]}/loss_task_{task}"


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
        self._acc = {split: _EpochLoss() for split in SPLIT_PREFIX}
        self._val_metrics: dict[str, float] = {}  # this epoch's validation losses
        self._csv_keys: Optional[list[str]] = None
        self._plotted: set[int] = set()
        self._epoch: Optional[int] = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------- paths
    @property
    def csv_path(self) -> Optional[Path]:
        return self.out_dir / CSV_NAME if self.out_dir is not None else None

    @property
    def plot_dir(self) -> Optional[Path]:
        return self.out_dir / PLOT_DIR if self.out_dir is not None else None

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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._acc["train"].add(outputs, batch):
            self._warn_once("no-losses", "LoggingCallback: the training step returned no 'losses' dict; "
                                         "per-task losses are not logged")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acc["val"].reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
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
        if trainer.is_global_zero:
            self._write_row(row)
        if (epoch + 1) % self.logging_epoch_interval == 0:
            self._plot_epoch(trainer, pl_module, epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = self._epoch if self._epoch is not None else max(trainer.current_epoch - 1, 0)
        if epoch not in self._plotted:
            self._plot_epoch(trainer, pl_module, epoch)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acc["test"].reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
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
            # the step axis Lightning's own logging uses (batches that stepped)
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
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

    # -------------------------------------------------------------------- CSV
    def _restore(self, trainer: pl.Trainer) -> None:
        """Keep what happened before the (resumed) start epoch; later epochs are redone."""
        start = trainer.current_epoch
        rows = self.history
        path = self.csv_path
        if path is not None and path.exists():
            rows = _read_csv(path)
        kept = [r for r in rows if r["epoch"] < start]
        self.history = kept
        self._plotted = {e for e in self._plotted if e < start}
        if self.diverged is not None and self.diverged["epoch"] >= start:
            self.diverged = None
        self._csv_keys = None
        if path is None or not trainer.is_global_zero:
            return
        if len(rows) > len(kept):
            log.info("%s: dropping %d row(s) of epochs >= %d (they are redone)", path, len(rows) - len(kept), start)
        if kept or path.exists():
            self._rewrite_csv()

    def _write_row(self, row: dict[str, float]) -> None:
        path = self.csv_path
        if path is None:
            return
        if self._csv_keys is None or not set(row) <= set(self._csv_keys) or not path.exists():
            self._rewrite_csv()  # first row, or a new column: header + every row
            return
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._csv_keys, restval="").writerow(row)
            fh.flush()

    def _rewrite_csv(self) -> None:
        path = self.csv_path
        assert path is not None
        keys = set().union(*(r.keys() for r in self.history)) - {"epoch"}
        self._csv_keys = ["epoch"] + sorted(keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._csv_keys, restval="")
            writer.writeheader()
            writer.writerows(self.history)
            fh.flush()
        os.replace(tmp, path)

    # ------------------------------------------------------------------ plots
    def _plot_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """One figure per task and active output dimension (main process only)."""
        if not self.plot or not trainer.is_global_zero:
            return
        self._plotted.add(epoch)
        tensors = getattr(getattr(trainer, "datamodule", None), "tensors", None) or {}
        if "val" not in tensors or len(tensors["val"]["x"]) == 0:
            self._warn_once("no-val", "LoggingCallback: no validation data (DataModule.tensors['val']); no plots")
            return
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if self.plot_dir is None and not wandb_loggers:
            return
        val, train = tensors["val"], tensors.get("train")
        d_in, d_out = val["x"].shape[1], val["y"].shape[1]
        pred_val = self._predict(trainer, pl_module, val)
        pred_train = self._predict(trainer, pl_module, train) if d_in > 1 and train is not None else {}
        images: dict[str, Any] = {}
        replaced = 0
        for task in sorted(pred_val):
            for dim in criterion_dims(pl_module.criterion(task), d_out):
                fig = _fit_figure(task, dim, epoch, _task_rows(train, task), _task_rows(val, task),
                                  pred_val[task], pred_train.get(task))
                png = None
                if self.plot_dir is not None:
                    self.plot_dir.mkdir(parents=True, exist_ok=True)
                    stem = self.plot_dir / f"task{task}_dim{dim}_epoch{epoch:04d}"
                    for ext in ("png", "pdf"):
                        path = stem.with_suffix(f".{ext}")
                        replaced += path.exists()
                        fig.savefig(path, dpi=100)
                    png = stem.with_suffix(".png")
                if wandb_loggers:
                    images[f"plots/task_{task}_dim_{dim}"] = _wandb_image(fig, png)
                fig.clf()
        if replaced:
            log.info("%s: replaced %d plot file(s) of epoch %d from an earlier run", self.plot_dir, replaced, epoch)
        if images:
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
            for lg in wandb_loggers:
                lg.log_metrics({**images, "epoch": epoch}, step=step)

    @staticmethod
    def _predict(trainer: pl.Trainer, pl_module: pl.LightningModule, data: dict) -> dict[int, torch.Tensor]:
        """``{task: predictions}`` (CPU float32) of the current model on a whole split."""
        param = next(pl_module.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        plugin = getattr(trainer.strategy, "precision_plugin", None)
        context = plugin.forward_context() if plugin is not None else nullcontext()
        was_training = pl_module.training
        pl_module.eval()
        parts: dict[int, list[torch.Tensor]] = {}
        try:
            with torch.no_grad(), context:
                n = len(data["x"])
                for a in range(0, n, _PREDICT_CHUNK):
                    batch = {"x": data["x"][a:a + _PREDICT_CHUNK].to(pl_module.device, dtype),
                             "task_activity": data["task_activity"][a:a + _PREDICT_CHUNK]}
                    preds, _ = pl_module.predict_tasks(batch)
                    for t, p in preds.items():
                        parts.setdefault(int(t), []).append(p.float().cpu())
        finally:
            pl_module.train(was_training)
        return {t: torch.cat(p) for t, p in parts.items()}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


# ---------------------------------------------------------------- plot helpers
def _task_rows(data: Optional[dict], task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of ``task`` in a split (empty when the split or the task is missing)."""
    if data is None:
        return torch.empty(0, 1), torch.empty(0, 1)
    mask = data["task_activity"] == task
    return data["x"][mask].float().cpu(), data["y"][mask].float().cpu()


def _fit_figure(task: int, dim: int, epoch: int, train: tuple, val: tuple,
                pred_val: torch.Tensor, pred_train: Optional[torch.Tensor]):
    """d_in == 1: data, truth and prediction over x; d_in > 1: predicted vs true."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    (x_tr, y_tr), (x_val, y_val) = train, val
    if x_val.shape[1] == 1:
        if len(x_tr):
            ax.scatter(x_tr[:, 0], y_tr[:, dim], s=6, alpha=0.35, color="tab:gray", label="training data")
        order = torch.argsort(x_val[:, 0])
        ax.plot(x_val[order, 0], y_val[order, dim], "k-", lw=1.5, label="true function")
        ax.plot(x_val[order, 0], pred_val[order, dim], "-", color="tab:red", lw=1.5, label="prediction")
        ax.set_xlabel("x")
        ax.set_ylabel(f"y[{dim}]")
    else:
        if pred_train is not None and len(y_tr):
            ax.scatter(y_tr[:, dim], pred_train[:, dim], s=6, alpha=0.35, color="tab:gray",
                       label="training data (noisy target)")
        ax.scatter(y_val[:, dim], pred_val[:, dim], s=10, alpha=0.8, color="tab:red",
                   label="validation (true function)")
        both = torch.cat([y_val[:, dim], pred_val[:, dim]])
        both = both[torch.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity (perfect fit)")
        ax.set_xlabel(f"true y[{dim}]")
        ax.set_ylabel(f"predicted y[{dim}]")
    ax.set_title(f"task {task}, output {dim}, epoch {epoch}")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def _wandb_image(fig, png: Optional[Path]):
    import wandb

    if png is not None:
        return wandb.Image(str(png))
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return wandb.Image(Image.open(buf))


def _read_csv(path: Path) -> list[dict[str, float]]:
    rows = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            try:
                row: dict[str, Any] = {"epoch": int(raw["epoch"])}
                row.update({k: float(v) for k, v in raw.items() if k != "epoch" and k and v not in ("", None)})
            except (KeyError, TypeError, ValueError):
                continue  # a torn line (killed mid-write): that epoch is redone anyway
            rows.append(row)
    return rows


# ------------------------------------------------------------------------ W&B
WANDB_MODES = ("online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """True if a W&B API key is at hand (WANDB_API_KEY or ~/.netrc); no network."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: Optional[str]) -> str:
    """'online', 'offline' or 'disabled'; None: online when logged in, else offline.

    With None, a valid WANDB_MODE in the environment is respected. 'online' without a
    login is an error (W&B would otherwise prompt for a key).
    """
    if mode is None:
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        env = {"dryrun": "offline", "run": "online"}.get(env, env)
        mode = env if env in WANDB_MODES else ("online" if wandb_logged_in() else "offline")
        if mode == "online" and not wandb_logged_in():
            mode = "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode is {mode!r}; allowed: {', '.join(WANDB_MODES)} or None (auto: online "
                         "when logged in, else offline)")
    if mode == "online" and not wandb_logged_in():
        raise ValueError("W&B mode 'online' needs a login (`wandb login` or WANDB_API_KEY); "
                         "use mode 'offline' (sync later with `wandb sync`) or 'disabled'")
    return mode


def make_wandb_logger(project: str, name: str, run_id: str, group: str, tags: list[str], config: dict,
                      save_dir: PathLike, mode: Optional[str] = None) -> Optional[WandbLogger]:
    """The run's WandbLogger (``resolve_wandb_mode``); None when mode is 'disabled'.

    ``id=run_id, resume='allow'``: a rerun continues the same W&B run. Never prompts;
    offline runs are written under ``save_dir/wandb`` and make no network call.
    """
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    if getattr(wandb, "run", None) is not None:
        # Lightning would silently log into the open run: close it first.
        log.warning("a W&B run (%s) is still open; finishing it before starting %s", wandb.run.id, run_id)
        finish_wandb()
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        name=name,
        id=run_id,
        save_dir=str(save_dir),
        group=group,
        tags=[str(t) for t in tags],
        config=jsonable(config),
        mode=mode,
        resume="allow",
        settings=wandb.Settings(silent=True, show_info=False, show_warnings=False),
    )


def finish_wandb(exit_code: Optional[int] = None) -> None:
    """``wandb.finish()`` if wandb was imported and a run is open; never raises."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as err:  # noqa: BLE001 - called in a finally: must not mask the real error
        log.warning("wandb.finish() failed: %s: %s", type(err).__name__, err)
