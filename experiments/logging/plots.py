"""Fit figures of a multi-task model: data, true function and prediction per task and output.

``snapshot_figures(trainer, pl_module, epoch, title_suffix)`` yields, for one snapshot,
one figure per task and per output dimension the task's criterion looks at
(``task<t>_dim<d>_epoch<eeee>``) and one overview with all of them as panels
(``overview_epoch<eeee>``); ``fit_figures`` yields the per-output figures alone.
``model_snapshot_figures(pl_module, tensors, data, epoch, title_suffix)`` draws the same
without a Trainer, from a model, its splits and its data object (a member of a vectorized
ensemble, ``experiments.vectorize``).
``epoch`` is the number of epochs trained (1-based: the first epoch's snapshot is epoch 1,
the last one's equals summary.json's ``epochs``).

With d_in == 1 a panel shows the training data (grey points), the true function (black)
and the prediction (red), both on a dense grid of ``DENSE_POINTS`` points over the
task's validation and training x-range (the truth evaluated with the data object's
target function, ``f_true`` of the task config, exactly as ``CreateData`` draws its
targets), and shades the task's training input range (``x_min_train..x_max_train`` of
the task config, when present). With d_in > 1 it shows predicted against true values.
Data without a true function (``data.has_true_function`` False, e.g. ``data_source:
'files'``) shows the validation rows as points, never a "true function" curve. Titles
name the task, the output (``compositeSine[3]``: the target function and its output
index; ``output 3`` for file data), the epoch and ``title_suffix`` (the grid point's
varying values, from the LoggingCallback). Legends sit below the axes, never on the data.
``save_figure`` writes PNG and PDF.

matplotlib is imported here (and in the analysis layer) only, lazily, and only its
object-oriented ``Figure`` with the Agg canvas, never pyplot: no global backend switch,
no figure registry to leak into, safe without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Optional

import numpy as np
import torch

from core_code.util.criteria import criterion_dims

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Sub-folder of a run's folder holding the fit plots.
PLOT_DIR = "plots"
#: File formats written per figure.
FORMATS = ("png", "pdf")
#: Points of the dense x grid the true function and the prediction are drawn on (d_in == 1).
DENSE_POINTS = 1000
_PREDICT_CHUNK = 65536  # rows per forward when predicting for the plots
#: Colours and styles shared by every panel (one legend serves a whole overview).
STYLE = {
    "train": dict(s=7, alpha=0.45, color="0.55", linewidths=0, zorder=2),
    "truth": dict(color="black", lw=1.6, zorder=3),
    "pred": dict(color="tab:red", lw=1.6, zorder=4),
    "val": dict(s=10, color="black", zorder=3),
    "span": dict(color="tab:blue", alpha=0.10, lw=0, zorder=0),
}

Rows = tuple[torch.Tensor, torch.Tensor]
#: x (n,), true y (n, d_out) or None, predicted y (n, d_out): one task's dense curves.
Dense = tuple[np.ndarray, Optional[np.ndarray], np.ndarray]


def plot_stem(plot_dir: Path, task: int, dim: int, epoch: int) -> Path:
    """``plot_dir/task<t>_dim<d>_epoch<eeee>`` (the file name without its suffix; ``epoch`` 1-based)."""
    return plot_dir / f"task{task}_dim{dim}_epoch{epoch:04d}"


def overview_stem(plot_dir: Path, epoch: int) -> Path:
    """``plot_dir/overview_epoch<eeee>``: all tasks and outputs of one snapshot."""
    return plot_dir / f"overview_epoch{epoch:04d}"


def save_figure(fig: Figure, stem: Path, dpi: int = 150) -> int:
    """Write ``stem.png`` and ``stem.pdf``; returns how many existing files were replaced."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    replaced = 0
    engine = fig.get_layout_engine()
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        replaced += path.exists()
        fig.savefig(path, dpi=dpi)
        # The layout is solved by the first save; later formats reuse it instead of solving it again.
        fig.set_layout_engine("none")
    fig.set_layout_engine(engine)
    return replaced


# ------------------------------------------------------------- the data side
def target_function(data: Any, task: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The noise-free target function x (n, d_in) -> y of ``task``; None when the data has none.

    From ``data.task_configs[task]['f_true']`` (a ``function_lib`` name, or ``'custom'``
    with ``f_true_callback``), as ``CreateData`` evaluates it; None for data with
    ``has_true_function`` False or without such a config.
    """
    if data is None or not getattr(data, "has_true_function", False):
        return None
    cfg = (getattr(data, "task_configs", None) or {}).get(task)
    if not isinstance(cfg, Mapping):
        return None
    f_true = cfg.get("f_true")
    if f_true == "custom":
        fn = cfg.get("f_true_callback")
        return fn if callable(fn) else None
    if not isinstance(f_true, str):
        return None
    from core_code.util.function_lib import function_library

    try:
        return function_library(f_true)
    except ValueError:
        return None


def output_name(data: Any, task: int, dim: int) -> str:
    """``'compositeSine[3]'`` (the task's f_true and the output index; the bare name for
    a one-output function), else ``'output 3'`` (file data, unknown functions)."""
    cfg = (getattr(data, "task_configs", None) or {}).get(task) if data is not None else None
    f_true = cfg.get("f_true") if isinstance(cfg, Mapping) and getattr(data, "has_true_function", False) else None
    if f_true == "custom":
        f_true = getattr(cfg.get("f_true_callback"), "__name__", "custom")
        f_true = "custom" if f_true == "<lambda>" else f_true
    if not isinstance(f_true, str):
        return f"output {dim}"
    return f_true if int(getattr(data, "d_out", 0) or 0) == 1 else f"{f_true}[{dim}]"


def training_range(data: Any, task: int) -> Optional[tuple[float, float]]:
    """``(x_min_train, x_max_train)`` of ``task``'s first input dim; None when not in its config."""
    cfg = (getattr(data, "task_configs", None) or {}).get(task) if data is not None else None
    if not isinstance(cfg, Mapping) or "x_min_train" not in cfg or "x_max_train" not in cfg:
        return None
    lo, hi = cfg["x_min_train"], cfg["x_max_train"]
    lo, hi = (v[0] if isinstance(v, (list, tuple)) and v else v for v in (lo, hi))
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and lo <= hi else None


def predict(trainer: Any, pl_module: Any, data: dict) -> dict[int, torch.Tensor]:
    """``{task: predictions}`` (CPU float32) of the current model on a whole split.

    In eval mode, without gradients, under the Trainer's precision context, in chunks.
    """
    return predict_model(pl_module, data, forward_context(trainer))


def forward_context(trainer: Any) -> Optional[Callable[[], ContextManager[Any]]]:
    """The Trainer's precision plugin's ``forward_context`` (None without a plugin)."""
    plugin = getattr(trainer.strategy, "precision_plugin", None)
    return plugin.forward_context if plugin is not None else None


def predict_model(pl_module: Any, data: dict,
                  forward_context: Optional[Callable[[], ContextManager[Any]]] = None) -> dict[int, torch.Tensor]:
    """``predict`` without a Trainer: ``forward_context()`` (e.g. a precision plugin's
    ``forward_context``; default none) is entered around the forward passes.

    ``pl_module`` needs ``predict_tasks``, ``parameters`` and ``device`` (a ``LightningMultitask``).
    """
    param = next(pl_module.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    context = forward_context() if forward_context is not None else nullcontext()
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


def dense_grid(*ranges: Optional[tuple[float, float]], n: int = DENSE_POINTS) -> np.ndarray:
    """``n`` equidistant points (float32 values) over the union of the given (lo, hi) ranges."""
    found = [r for r in ranges if r is not None]
    lo, hi = min(r[0] for r in found), max(r[1] for r in found)
    return np.linspace(lo, hi, n).astype(np.float32)


def _range(x: torch.Tensor) -> Optional[tuple[float, float]]:
    return (float(x[:, 0].min()), float(x[:, 0].max())) if len(x) else None


@dataclass
class Panel:
    """Everything one (task, output) panel draws."""

    task: int
    dim: int
    name: str
    train: Rows
    val: Rows
    pred_val: torch.Tensor
    pred_train: Optional[torch.Tensor] = None
    true_function: bool = True
    dense: Optional[Dense] = None
    span: Optional[tuple[float, float]] = None


def panels(trainer: Any, pl_module: Any) -> list[Panel]:
    """One ``Panel`` per task and active output dimension (reads ``trainer.datamodule.tensors``;
    needs a non-empty 'val')."""
    return model_panels(pl_module, trainer.datamodule.tensors, getattr(trainer.datamodule, "data", None),
                        forward_context(trainer))


def model_panels(pl_module: Any, tensors: Mapping[str, dict], data: Any,
                 forward_context: Optional[Callable[[], ContextManager[Any]]] = None) -> list[Panel]:
    """``panels`` without a Trainer: ``tensors`` the run's splits (``{'train', 'val', ...}``,
    as ``DataModule.tensors``; needs a non-empty 'val'), ``data`` its data object (target
    functions, training ranges), ``forward_context`` as in ``predict_model``."""
    val, train = tensors["val"], tensors.get("train")
    d_in, d_out = val["x"].shape[1], val["y"].shape[1]
    true_function = bool(getattr(data, "has_true_function", True))
    pred_val = predict_model(pl_module, val, forward_context)
    pred_train = predict_model(pl_module, train, forward_context) if d_in > 1 and train is not None else {}
    tasks = sorted(pred_val)
    rows = {t: (task_rows(train, t), task_rows(val, t)) for t in tasks}
    spans = {t: training_range(data, t) for t in tasks} if d_in == 1 else {}
    dense: dict[int, Dense] = {}
    if d_in == 1 and tasks:
        grids = {t: dense_grid(_range(rows[t][0][0]), _range(rows[t][1][0]), spans[t]) for t in tasks}
        x_all = torch.from_numpy(np.concatenate([grids[t] for t in tasks])).unsqueeze(1)
        ta = torch.cat([torch.full((len(grids[t]),), t, dtype=torch.int64) for t in tasks])
        pred_dense = predict_model(pl_module, {"x": x_all, "task_activity": ta}, forward_context)
        for t in tasks:
            fn = target_function(data, t)
            y = None
            if fn is not None and true_function:
                y = np.asarray(fn(grids[t].reshape(-1, 1).astype(np.float64)), dtype=np.float64)
                y = y.reshape(-1, 1) if y.ndim == 1 else y
            dense[t] = (grids[t], y, pred_dense[t].numpy())
    out = []
    for t in tasks:
        for dim in criterion_dims(pl_module.criterion(t), d_out):
            out.append(Panel(t, dim, output_name(data, t, dim), rows[t][0], rows[t][1], pred_val[t],
                             pred_train.get(t), true_function, dense.get(t), spans.get(t)))
    return out


# ------------------------------------------------------------------ drawing
def draw_panel(ax: Axes, p: Panel) -> None:
    """Draw one panel into ``ax`` (labels as in the legends; no title, no legend)."""
    (x_tr, y_tr), (x_val, y_val) = p.train, p.val
    dim = p.dim
    if x_val.shape[1] == 1:
        if p.span is not None:
            ax.axvspan(*p.span, label="training input range", **STYLE["span"])
        if len(x_tr):
            ax.scatter(x_tr[:, 0], y_tr[:, dim], label="training data", **STYLE["train"])
        order = torch.argsort(x_val[:, 0])
        if p.true_function:
            if p.dense is not None and p.dense[1] is not None:
                ax.plot(p.dense[0], p.dense[1][:, dim], label="true function", **STYLE["truth"])
            else:
                ax.plot(x_val[order, 0], y_val[order, dim], label="true function", **STYLE["truth"])
        else:
            ax.scatter(x_val[:, 0], y_val[:, dim], label="validation data", **STYLE["val"])
        if p.dense is not None:
            ax.plot(p.dense[0], p.dense[2][:, dim], label="prediction", **STYLE["pred"])
        else:
            ax.plot(x_val[order, 0], p.pred_val[order, dim], label="prediction", **STYLE["pred"])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        if p.dense is not None:
            ax.set_xlim(float(p.dense[0][0]), float(p.dense[0][-1]))
    else:
        if p.pred_train is not None and len(y_tr):
            ax.scatter(y_tr[:, dim], p.pred_train[:, dim],
                       label="training data (noisy target)" if p.true_function else "training data",
                       **STYLE["train"])
        ax.scatter(y_val[:, dim], p.pred_val[:, dim], s=10, alpha=0.8, color="tab:red", zorder=3,
                   label="validation (true function)" if p.true_function else "validation data")
        both = torch.cat([y_val[:, dim], p.pred_val[:, dim]])
        both = both[torch.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity (perfect fit)")
        ax.set_xlabel("true y")
        ax.set_ylabel("predicted y")
    ax.grid(True, alpha=0.25, lw=0.5)


def _legend_below(fig: Figure, axes: list) -> None:
    """One legend for all ``axes`` (labels deduplicated), outside and below them."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize="small", frameon=False)


def panel_title(task: int, name: str) -> str:
    return f"task {task}: {name}"


def fit_figure(task: int, dim: int, epoch: int, train: Rows, val: Rows,
               pred_val: torch.Tensor, pred_train: Optional[torch.Tensor], true_function: bool = True, *,
               name: Optional[str] = None, dense: Optional[Dense] = None,
               span: Optional[tuple[float, float]] = None, title_suffix: Optional[str] = None) -> Figure:
    """One output of one task: d_in == 1: data, truth and prediction over x; d_in > 1: predicted vs true.

    ``true_function`` False: the validation targets are data, drawn as points (no curve).
    ``dense``: the task's dense curves (else truth and prediction at the validation points);
    ``span``: the training input range to shade; ``name``: the output's name (``output <d>``).
    """
    return _single(Panel(task, dim, name or f"output {dim}", train, val, pred_val, pred_train,
                         true_function, dense, span), epoch, title_suffix)


def _title(head: str, epoch: int, title_suffix: Optional[str]) -> str:
    return f"{head}, epoch {epoch}" + (f"\n{title_suffix}" if title_suffix else "")


def _single(p: Panel, epoch: int, title_suffix: Optional[str]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    draw_panel(ax, p)
    ax.set_title(_title(panel_title(p.task, p.name), epoch, title_suffix), fontsize="medium")
    _legend_below(fig, [ax])
    return fig


def overview_figure(panel_list: list[Panel], epoch: int, title_suffix: Optional[str] = None,
                    max_cols: int = 4) -> Figure:
    """All panels of a snapshot in one figure (row-major, at most ``max_cols`` per row), one legend below."""
    from matplotlib.figure import Figure

    n = max(len(panel_list), 1)
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.3 * cols + 0.4, 2.7 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, panel_list):
        draw_panel(ax, p)
        ax.set_title(panel_title(p.task, p.name), fontsize="medium")
    for ax in axes[len(panel_list):]:
        ax.set_visible(False)
    fig.suptitle(f"epoch {epoch}" + (f": {title_suffix}" if title_suffix else ""))
    _legend_below(fig, list(axes[:len(panel_list)]))
    return fig


def fit_figures(trainer: Any, pl_module: Any, epoch: int,
                title_suffix: Optional[str] = None) -> Iterator[tuple[int, int, Figure]]:
    """``(task, dim, figure)`` for every task and active output dimension of the model.

    ``epoch``: epochs trained (1-based). Reads ``trainer.datamodule.tensors`` (needs a non-empty 'val').
    """
    for p in panels(trainer, pl_module):
        yield p.task, p.dim, _single(p, epoch, title_suffix)


def snapshot_figures(trainer: Any, pl_module: Any, epoch: int,
                     title_suffix: Optional[str] = None) -> Iterator[tuple[str, str, Figure]]:
    """``(wandb key, file stem, figure)``: every per-output figure, then the overview.

    Keys ``plots/task_<t>_dim_<d>`` and ``plots/overview``; stems as ``plot_stem`` and
    ``overview_stem`` (relative). Predicts once for all of them.
    """
    yield from _snapshot(panels(trainer, pl_module), epoch, title_suffix)


def model_snapshot_figures(pl_module: Any, tensors: Mapping[str, dict], data: Any, epoch: int,
                           title_suffix: Optional[str] = None,
                           forward_context: Optional[Callable[[], ContextManager[Any]]] = None,
                           ) -> Iterator[tuple[str, str, Figure]]:
    """``snapshot_figures`` of a model and its data without a Trainer (``model_panels``'s arguments).

    E.g. one member of a vectorized ensemble: its ``LightningMultitask``, its splits and its
    data object give the figures, names and titles its single run draws.
    """
    yield from _snapshot(model_panels(pl_module, tensors, data, forward_context), epoch, title_suffix)


def _snapshot(found: list[Panel], epoch: int, title_suffix: Optional[str]) -> Iterator[tuple[str, str, Figure]]:
    for p in found:
        yield f"plots/task_{p.task}_dim_{p.dim}", plot_stem(Path(), p.task, p.dim, epoch).name, \
            _single(p, epoch, title_suffix)
    if found:
        yield "plots/overview", overview_stem(Path(), epoch).name, overview_figure(found, epoch, title_suffix)
