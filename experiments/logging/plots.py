"""Fit figures of a multi-task model: data, true function and prediction per task and output.

``fit_figures(trainer, pl_module, epoch)`` yields one figure per task and per output
dimension the task's criterion looks at. With d_in == 1 it draws the training data, the
true function and the prediction over x (validation inputs); with d_in > 1 predicted
against true values. Data without a true function (``data.has_true_function`` False, e.g.
``data_source: 'files'``) shows the validation rows as points, never as a "true function"
curve. ``save_figure`` writes PNG and PDF.

matplotlib is imported here (and in the analysis layer) only, lazily, and only its
object-oriented ``Figure`` with the Agg canvas, never pyplot: no global backend switch,
no figure registry to leak into, safe without a display.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch

from core_code.util.criteria import criterion_dims

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Sub-folder of a run's folder holding the fit plots.
PLOT_DIR = "plots"
#: File formats written per figure.
FORMATS = ("png", "pdf")
_PREDICT_CHUNK = 65536  # rows per forward when predicting for the plots

Rows = tuple[torch.Tensor, torch.Tensor]


def plot_stem(plot_dir: Path, task: int, dim: int, epoch: int) -> Path:
    """``plot_dir/task<t>_dim<d>_epoch<eeee>`` (the file name without its suffix)."""
    return plot_dir / f"task{task}_dim{dim}_epoch{epoch:04d}"


def save_figure(fig: Figure, stem: Path, dpi: int = 100) -> int:
    """Write ``stem.png`` and ``stem.pdf``; returns how many existing files were replaced."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    replaced = 0
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        replaced += path.exists()
        fig.savefig(path, dpi=dpi)
    return replaced


def fit_figures(trainer: Any, pl_module: Any, epoch: int) -> Iterator[tuple[int, int, Figure]]:
    """``(task, dim, figure)`` for every task and active output dimension of the model.

    Reads the splits from ``trainer.datamodule.tensors`` (needs a non-empty 'val').
    """
    tensors = trainer.datamodule.tensors
    val, train = tensors["val"], tensors.get("train")
    d_in, d_out = val["x"].shape[1], val["y"].shape[1]
    true_function = bool(getattr(getattr(trainer.datamodule, "data", None), "has_true_function", True))
    pred_val = predict(trainer, pl_module, val)
    pred_train = predict(trainer, pl_module, train) if d_in > 1 and train is not None else {}
    for task in sorted(pred_val):
        for dim in criterion_dims(pl_module.criterion(task), d_out):
            yield task, dim, fit_figure(task, dim, epoch, task_rows(train, task), task_rows(val, task),
                                        pred_val[task], pred_train.get(task), true_function=true_function)


def predict(trainer: Any, pl_module: Any, data: dict) -> dict[int, torch.Tensor]:
    """``{task: predictions}`` (CPU float32) of the current model on a whole split.

    In eval mode, without gradients, under the Trainer's precision context, in chunks.
    """
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


def task_rows(data: Optional[dict], task: int) -> Rows:
    """(x, y) of ``task`` in a split (empty when the split or the task is missing)."""
    if data is None:
        return torch.empty(0, 1), torch.empty(0, 1)
    mask = data["task_activity"] == task
    return data["x"][mask].float().cpu(), data["y"][mask].float().cpu()


def fit_figure(task: int, dim: int, epoch: int, train: Rows, val: Rows,
               pred_val: torch.Tensor, pred_train: Optional[torch.Tensor], true_function: bool = True) -> Figure:
    """d_in == 1: data, truth and prediction over x; d_in > 1: predicted vs true.

    ``true_function`` False: the validation targets are data, drawn as points (no curve).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    (x_tr, y_tr), (x_val, y_val) = train, val
    if x_val.shape[1] == 1:
        if len(x_tr):
            ax.scatter(x_tr[:, 0], y_tr[:, dim], s=6, alpha=0.35, color="tab:gray", label="training data")
        order = torch.argsort(x_val[:, 0])
        if true_function:
            ax.plot(x_val[order, 0], y_val[order, dim], "k-", lw=1.5, label="true function")
        else:
            ax.scatter(x_val[:, 0], y_val[:, dim], s=10, color="k", label="validation data")
        ax.plot(x_val[order, 0], pred_val[order, dim], "-", color="tab:red", lw=1.5, label="prediction")
        ax.set_xlabel("x")
        ax.set_ylabel(f"y[{dim}]")
    else:
        if pred_train is not None and len(y_tr):
            ax.scatter(y_tr[:, dim], pred_train[:, dim], s=6, alpha=0.35, color="tab:gray",
                       label="training data (noisy target)" if true_function else "training data")
        ax.scatter(y_val[:, dim], pred_val[:, dim], s=10, alpha=0.8, color="tab:red",
                   label="validation (true function)" if true_function else "validation data")
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
