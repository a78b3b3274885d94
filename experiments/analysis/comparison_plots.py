"""Comparison plots of a grid (``main.py --collect``): final loss against each varying
parameter, loss curves, task-gradient diagnostics; the rows come from
``experiments.analysis.collect``. matplotlib is imported lazily (object-oriented API, no pyplot).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from experiments.analysis.collect import (
    cell_text,
    group_columns,
    group_rows,
    is_number,
    mean_std,
    safe_name,
    seed_columns,
    task_ids,
)
from experiments.logging.metrics import (
    CSV_NAME,
    baseline_column,
    final_column,
    final_in_domain_column,
    metric_name,
    read_metrics,
)
from experiments.run_state import RunDir


def _spans_decade(values: Sequence[float]) -> bool:
    """True when every value is positive and max/min >= 10 (a log axis reads better)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


def _label(row: dict, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={cell_text(row.get(n))}" for n in names)


def _save(fig, stem: Path, written: list[Path]) -> None:
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150)
        written.append(path)


#: Up to this many lines in a plot take the qualitative tab10 colours; more take viridis
#: sampled evenly over the sorted lines (no colour repeats, neighbours in value look alike).
QUALITATIVE_MAX = 10
#: At most this many labelled ticks on a parameter axis (every k-th grid value beyond that).
MAX_TICKS = 12
_COS = re.compile(r"^diagnostics/cos_task_(\d+)_task_(\d+)$")
_GRAD_NORM = re.compile(r"^diagnostics/grad_norm_task_(\d+)$")
_LINESTYLES = ("-", "--", ":", "-.")


def line_colors(n: int) -> list:
    """``n`` distinct colours: tab10 for up to ``QUALITATIVE_MAX``, else viridis over [0, 0.92]."""
    from matplotlib import colormaps

    if n <= QUALITATIVE_MAX:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(0.92 * i / (n - 1)) for i in range(n)]


def _tick_text(value: float) -> str:
    return f"{value:g}"


def grid_ticks(axis: Any, values: Sequence[float]) -> list[float]:
    """Major ticks of ``axis`` (an x or y Axis) at the grid values (every k-th beyond ``MAX_TICKS``),
    labelled plainly ('0.001', '64'), no minor ticks; returns the tick values. Call after set_*scale."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ticks = sorted(set(values))
    if len(ticks) > MAX_TICKS:
        ticks = ticks[::math.ceil(len(ticks) / MAX_TICKS)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter([_tick_text(v) for v in ticks]))
    axis.set_minor_locator(NullLocator())
    return ticks


def plain_log_labels(ax: Any) -> None:
    """Plain labels ('0.3', '2', '10', not '3x10^-1') on a log y axis; minor ones only where few decades show."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_formatter(fmt)
    ratio = hi / lo if lo > 0 else math.inf
    if ratio < 30:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 4, 5, 6, 8) if ratio < 3 else (2, 3, 5)))
        ax.yaxis.set_minor_formatter(fmt)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _sort_key(rows: Sequence[dict], names: Sequence[str]) -> Any:
    """Order of groups: numbers by value, then text; the tag by its order on the command line."""
    tag_order = {}
    for r in rows:
        tag_order.setdefault(r.get("tag"), len(tag_order))

    def key(r: dict) -> tuple:
        out = []
        for n in names:
            v = r.get(n)
            if n == "tag":
                out.append((0, tag_order[v], ""))
            elif is_number(v):
                out.append((0, float(v), ""))
            else:
                out.append((1, 0.0, cell_text(v)))
        return tuple(out)
    return key


def sorted_groups(rows: Sequence[dict], names: Sequence[str]) -> list[list[dict]]:
    """``rows`` grouped by their values of ``names``, groups sorted by those values (``_sort_key``)."""
    key = _sort_key(rows, names)
    return sorted(group_rows(rows, names).values(), key=lambda members: key(members[0]))


def _legend_below(fig: Any, handles: Sequence[Any], labels: Sequence[str]) -> None:
    """One legend outside the axes: below them for up to 12 entries, else at the right (the figure grows to fit)."""
    if not handles:
        return
    n = len(handles)
    if n <= 12:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(n, 3), fontsize=7, frameon=False)
        return
    ncol = math.ceil(n / 24)
    per_col = math.ceil(n / ncol)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + ncol * (0.6 + 0.052 * max(map(len, labels))), max(height, 0.15 * per_col + 1.4))
    # lower: the figure is taller than the legend, so the suptitle above stays clear
    fig.legend(handles, labels, loc="outside right lower", ncol=ncol, fontsize=6.5, frameon=False)


def _errorbar(ax: Any, pts: dict[float, list[float]], fmt: str, label: Optional[str], color: Any = None) -> Any:
    """Mean of each x's values with std error bars (where there are 2 or more); the line drawn."""
    xs = sorted(x for x, v in pts.items() if v)
    stats = [mean_std(pts[x]) for x in xs]
    yerr = [s or 0.0 for _, s in stats]
    line = ax.errorbar(xs, [m for m, _ in stats], yerr=yerr if any(yerr) else None, fmt=fmt, label=label,
                       color=color, capsize=3, markersize=4)
    return line.lines[0].get_color()


def _mean_curve(histories: Sequence[Sequence[dict]], metric: str) -> tuple[list[int], list[float], list[Optional[float]]]:
    """Epochs (1-based: epochs trained), mean and sample std over ``histories`` of ``metric`` (finite values)."""
    per_epoch: dict[int, list[float]] = {}
    for history in histories:
        for h in history:
            if metric in h and math.isfinite(h[metric]):
                per_epoch.setdefault(h["epoch"] + 1, []).append(h[metric])
    epochs = sorted(per_epoch)
    stats = [mean_std(per_epoch[e]) for e in epochs]
    return epochs, [m for m, _ in stats], [sd for _, sd in stats]


def plot_comparisons(rows: Sequence[dict], runs_dir: Path | str, tag: str | Sequence[str],
                     out_dir: Optional[Path | str] = None, prefix: str = "summary") -> list[Path]:
    """Comparison plots of ``collect``'s rows (module docstring); the files written.

    ``tag``: the TAG (or the TAGs, in order) the rows come from: named in every title;
    rows with a ``tag`` column are read from their own TAG's folder. Files
    ``<prefix>_task<t>_final_vs_<param>``, ``<prefix>_task<t>_curves`` and
    ``<prefix>_diagnostics`` (PNG and PDF) go to ``out_dir`` (default ``runs_dir/<first TAG>``).
    """
    tags = [tag] if isinstance(tag, str) else list(tag)
    out = Path(out_dir) if out_dir is not None else RunDir(runs_dir, tags[0]).root
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, fig in comparison_figures(rows, runs_dir, tags, prefix):
        _save(fig, out / name, written)
    return written


def comparison_figures(rows: Sequence[dict], runs_dir: Path | str, tag: str | Sequence[str],
                       prefix: str = "summary") -> Iterator[tuple[str, Any]]:
    """``(file stem, Figure)`` of every comparison plot of ``plot_comparisons``, unsaved."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    tags = [tag] if isinstance(tag, str) else list(tag)
    tags_label = " + ".join(tags)
    seeds = seed_columns(rows)
    groups_by = group_columns(rows)  # tag (several TAGs) and the non-seed varying values
    params = [p for p in groups_by if p != "tag"]  # never a loss-against-seed plot
    numeric = [p for p in params if all(is_number(r.get(p)) for r in rows)]
    columns = set(rows[0]) if rows else set()
    n_seeds = max((len(g) for g in group_rows(rows, groups_by).values()), default=1) if seeds else 1
    over = f" (mean ± std over {', '.join(seeds)}, up to {n_seeds} per point)" if seeds else ""
    histories = {id(r): read_metrics(RunDir(runs_dir, r.get("tag", tags[0])).point_dir(r["index"]) / CSV_NAME)
                 for r in rows}
    for t in task_ids(rows):
        col = final_column(t)
        col_in = final_in_domain_column(t) if final_in_domain_column(t) in columns else None
        # final validation loss against each numeric parameter
        for p in numeric:
            others = [q for q in groups_by if q != p]
            done = [r for r in rows if r["status"] == "done" and is_number(r.get(col))]
            if not done:
                continue
            fig = Figure(figsize=(6.8, 5.0), layout="constrained")
            ax = fig.add_subplot()
            groups = sorted_groups(done, others)
            inner_any = False
            for members, color in zip(groups, line_colors(len(groups))):
                label = _label(members[0], others) if others else "validation loss"
                full: dict[float, list[float]] = {}
                inner: dict[float, list[float]] = {}
                for r in members:
                    full.setdefault(float(r[p]), []).append(float(r[col]))
                    if col_in and is_number(r.get(col_in)):
                        inner.setdefault(float(r[p]), []).append(float(r[col_in]))
                _errorbar(ax, full, "o-", label, color)
                if inner:
                    inner_any = True
                    _errorbar(ax, inner, "s--", f"{label} (in-domain)" if others else "in-domain", color)
            ys = [float(r[col]) for r in done] + [float(r[col_in]) for r in done if col_in and is_number(r.get(col_in))]
            for bcol, style, name in ((baseline_column(t), ":", "baseline (mean predictor)"),
                                      (baseline_column(t, True), "-.", "baseline, in-domain")):
                base = [float(r[bcol]) for r in done if is_number(r.get(bcol))]
                if base:
                    ax.axhline(sum(base) / len(base), color="gray", linestyle=style, linewidth=1, label=name)
                    ys.append(sum(base) / len(base))
            xs = [float(r[p]) for r in rows]
            lo, hi = min(xs), max(xs)
            if _spans_decade(xs):
                ax.set_xscale("log")
                ax.set_xlim(lo / 1.3, hi * 1.3)
            elif hi > lo:  # the whole grid's range, so that a partial grid shows as such
                ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
            grid_ticks(ax.xaxis, xs)
            if _spans_decade(ys) or (ys and min(ys) > 0 and max(ys) / min(ys) >= 3):
                ax.set_yscale("log")
                plain_log_labels(ax)
            missing = sum(1 for r in rows if not (r["status"] == "done" and is_number(r.get(col))))
            ax.set_xlabel(p)
            ax.set_ylabel(f"final validation loss, task {t}")
            title = f"{tags_label}: task {t}, final validation loss vs {p}{over}"
            if missing:
                title += f"\n({missing} of {len(rows)} points not done or without a loss: left out)"
            ax.set_title(title, fontsize=9)
            handles, labels = ax.get_legend_handles_labels()
            if others or inner_any or len(handles) > 1:
                _legend_below(fig, handles, labels)
            ax.grid(True, which="major", alpha=0.3)
            yield f"{prefix}_task{t}_final_vs_{safe_name(p)}", fig

        # training and validation loss curves: one colour per combination of the non-seed values
        groups = [g for g in sorted_groups(rows, groups_by)
                  if any(metric_name(s, t) in h for r in g for h in histories[id(r)] for s in ("train", "val"))]
        if not groups:
            continue
        fig = Figure(figsize=(9.6, 4.8), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        positive = True
        handles, labels = [], []
        for members, color in zip(groups, line_colors(len(groups))):
            r = members[0]
            if seeds:
                label = (_label(r, groups_by) if groups_by else "all points") + f" (n={len(members)})"
            else:
                where = f"{r['tag']}/" if "tag" in r else ""
                shown = [c for c in groups_by if c != "tag"]
                label = f"{where}config {r['index']}" + (f": {_label(r, shown)}" if shown else "")
            statuses = sorted({m["status"] for m in members} - {"done"})
            if statuses:
                label += f" [{', '.join(statuses)}]"
            for ax, split in zip(axes, ("train", "val")):
                epochs, means, sds = _mean_curve([histories[id(m)] for m in members], metric_name(split, t))
                if not epochs:
                    continue
                positive = positive and all(m > 0 for m in means)
                ax.plot(epochs, means, "-" if len(epochs) > 1 else "o", color=color, lw=1.3)
                if any(sds):
                    lo_band = [m - (sd or 0.0) for m, sd in zip(means, sds)]
                    ax.fill_between(epochs, lo_band, [m + (sd or 0.0) for m, sd in zip(means, sds)],
                                    color=color, alpha=0.2, linewidth=0)
                    positive = positive and all(v > 0 for v in lo_band)
            handles.append(Line2D([], [], color=color, lw=1.5))
            labels.append(label)
        for ax, split in zip(axes, ("training", "validation")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(f"{split} loss", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(f"loss, task {t}")
        if positive:
            plain_log_labels(axes[0])  # y is shared
        fig.suptitle(f"{tags_label}: task {t}, loss curves of every grid point{over}", fontsize=10)
        _legend_below(fig, handles, labels)
        yield f"{prefix}_task{t}_curves", fig

    fig = _diagnostics_figure(rows, histories, groups_by, seeds, over, tags_label)
    if fig is not None:
        yield f"{prefix}_diagnostics", fig


def diagnostic_columns(histories: Sequence[Sequence[dict]]) -> tuple[list[str], list[str]]:
    """The ``diagnostics/cos_task_<s>_task_<t>`` and ``diagnostics/grad_norm_task_<t>`` columns found, sorted."""
    keys = {k for h in histories for r in h for k in r}

    def by_tasks(pattern: re.Pattern) -> list[str]:
        found = [(tuple(int(g) for g in m.groups()), k) for k in keys if (m := pattern.match(k))]
        return [k for _, k in sorted(found)]
    return by_tasks(_COS), by_tasks(_GRAD_NORM)


def _diagnostics_figure(rows: Sequence[dict], histories: dict[int, list[dict]], groups_by: list[str],
                        seeds: list[str], over: str, tags_label: str) -> Any:
    """Gradient cosines per task pair and norms per task against epoch (None without such columns)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    cos, norms = diagnostic_columns(list(histories.values()))
    panels = [(c, kind) for c, kind in ((cos, "cos"), (norms, "norm")) if c]
    if not panels:
        return None
    groups = sorted_groups(rows, groups_by)
    fig = Figure(figsize=(4.8 * len(panels) + 0.4, 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    handles, labels = [], []
    for members, color in zip(groups, line_colors(len(groups))):
        drew = False
        for ax, (metrics, _) in zip(axes, panels):
            for metric, style in zip(metrics, _LINESTYLES * len(metrics)):
                epochs, means, sds = _mean_curve([histories[id(m)] for m in members], metric)
                if epochs:
                    ax.plot(epochs, means, style, color=color, lw=1.3)
                    if any(sds):
                        ax.fill_between(epochs, [m - (sd or 0.0) for m, sd in zip(means, sds)],
                                        [m + (sd or 0.0) for m, sd in zip(means, sds)],
                                        color=color, alpha=0.15, linewidth=0)
                    drew = True
        if drew:
            r = members[0]
            label = _label(r, groups_by) if groups_by else "all points"
            handles.append(Line2D([], [], color=color, lw=1.5))
            labels.append(label + (f" (n={len(members)})" if seeds else ""))
    for ax, (metrics, kind) in zip(axes, panels):
        names = [("cosine, tasks " + " and ".join(_COS.match(m).groups())) if kind == "cos"
                 else f"norm, task {_GRAD_NORM.match(m).group(1)}" for m in metrics]
        for name, style in zip(names, _LINESTYLES * len(names)):
            handles.append(Line2D([], [], color="black", linestyle=style, lw=1.2))
            labels.append(name)
        if kind == "cos":
            ax.axhline(0.0, color="gray", lw=0.8)
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel("cosine of the task gradients")
            ax.set_title("gradient cosine per task pair", fontsize=9)
        else:
            if all(v > 0 for h in histories.values() for r in h for m in metrics if (v := r.get(m)) is not None):
                ax.set_yscale("log")
                plain_log_labels(ax)
            ax.set_ylabel("gradient norm")
            ax.set_title("gradient norm per task", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{tags_label}: multi-task gradient diagnostics, epoch means{over}", fontsize=10)
    _legend_below(fig, handles, labels)
    return fig


