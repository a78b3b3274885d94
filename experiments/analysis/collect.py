"""Results of a grid at a glance: summary table, summary.csv and comparison plots.

``python -m experiments.analysis.collect TAG [TAG ...] [--runs_dir runs] [--out DIR]`` (or
``main.py --collect TAG [TAG ...]``) reads ``runs/TAG/`` (see ``experiments.run_state`` for
the layout) and writes:

- ``runs/TAG/summary.csv``: one row per grid point of the manifest: ``index``, ``id``,
  ``status`` (pending|running|done|failed|diverged), the config values that vary across
  the grid (data/architecture/training/custom keys with more than one distinct value,
  named by their bare key, or ``section.key`` where two sections disagree), ``epochs``
  (epochs done), then ``final_val_loss_task_<t>`` and ``best_val_loss_task_<t>`` for every
  task (the last and the lowest ``validation/loss_task_<t>`` of ``metrics.csv``; empty
  where a point has no metrics yet; names from ``experiments.logging.metrics``). Where the
  runs logged them, also ``final_/best_val_loss_in_domain_task_<t>`` (the validation loss
  over the rows inside task t's training box), ``baseline_val_loss[_in_domain]_task_<t>``
  (the loss of the mean-of-training-targets predictor, from the point's
  ``baselines.json``, else summary.json's ``baselines`` or ``final``) and
  ``final_over_baseline[_in_domain]_task_<t>`` (final loss / baseline: 1 means "no
  better than predicting the mean") and ``test_loss[_in_domain]_task_<t>`` (summary.json's
  final ``test/loss[_in_domain]_task_<t>``, where a run was tested). Points not started are listed as pending, so a
  partial grid (running, failed, fetched half-way from a cluster) works.
- the same as an aligned table on stdout;
- seeds are repetitions, not an axis: when a varying column is a ``seed`` (data or
  custom), ``runs/TAG/summary_seeds.csv`` and a second table give, per combination of the
  other varying values, ``n`` (finished points: done, with a finite loss) and the mean and
  the sample standard deviation (ddof 1) over those seeds of every loss column;
- comparison plots next to it (PNG and PDF), the TAG(s) in every title, legends outside
  the axes, one colour per line (tab10 up to 10 lines, viridis over the sorted lines
  beyond): ``summary_task<t>_final_vs_<param>.*``, the final validation loss of task t
  (solid; in-domain dashed; the baseline dotted) against each varying numeric parameter
  other than the seed (finished points only; mean over seeds with std error bars; log
  axis where the values span a decade or more, ticks at the grid values), one line per
  combination of the other varying values; ``summary_task<t>_curves.*``, the training
  (left) and validation (right) loss curves against epochs trained (mean over seeds, std
  band); and, where metrics.csv holds ``diagnostics/cos_task_<s>_task_<t>`` or
  ``diagnostics/grad_norm_task_<t>``, ``summary_diagnostics.*``: those against epoch.
- several TAGs: one table over all their points (first column ``tag``; the varying
  values taken over all of them; the tag groups like a varying value), written as
  ``runs/TAG1/summary_<TAG1>+<TAG2>[_seeds].csv`` and ``summary_<TAG1>+<TAG2>_*`` plots,
  or with ``--out DIR`` as ``DIR/summary[_seeds].csv`` and ``DIR/summary_*``.

Only csv, json and matplotlib (imported lazily, object-oriented API, no pyplot).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from experiments.logging.metrics import (
    BASELINE_PREFIX,
    BASELINES_NAME,
    CSV_NAME,
    baseline_column,
    baseline_name,
    best_column,
    best_in_domain_column,
    final_column,
    final_column_task,
    final_in_domain_column,
    in_domain_metric_name,
    metric_name,
    metric_task,
    ratio_column,
    read_metrics,
)
from experiments.run_state import RunDir, count_statuses, read_json, write_text_atomic

SECTIONS = ("data", "architecture", "training", "custom")
HEAD_COLUMNS = ("index", "id", "status")
_TASK_KEY = re.compile(r"^task_(\d+)$")


# ------------------------------------------------------------------------ reading
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def varying_parameters(points: Sequence[dict]) -> dict[str, tuple[str, str]]:
    """The config values that differ between grid points: column name -> (section, key).

    Keys are taken in order of first appearance (sections data, architecture, training,
    custom). A key found in several sections is one column if its values agree there
    (grid axes tie them), else one ``section.key`` column per section.
    """
    seen: dict[str, list[str]] = {}  # key -> sections holding it
    for p in points:
        cfg = p.get("config", {})
        for section in SECTIONS:
            for key in cfg.get(section, {}) or {}:
                if section not in seen.setdefault(key, []):
                    seen[key].append(section)
    out: dict[str, tuple[str, str]] = {}
    for key, sections in seen.items():
        def values(section: str, key: str = key) -> list[str]:
            return [_canonical((p.get("config", {}).get(section) or {}).get(key)) for p in points]

        per_section = {s: values(s) for s in sections}
        agree = all(v == per_section[sections[0]] for v in per_section.values())
        if agree:
            if len(set(per_section[sections[0]])) > 1:
                out[key] = (sections[0], key)
        else:
            for s in sections:
                if len(set(per_section[s])) > 1:
                    out[f"{s}.{key}"] = (s, key)
    return out


def _tasks_of(points: Sequence[dict], metric_keys: set[str], finals: Sequence[dict]) -> list[int]:
    """Tasks seen in task-specific config values or in any point's validation metrics."""
    tasks: set[int] = set()
    for p in points:
        for section in SECTIONS:
            for value in ((p.get("config", {}).get(section)) or {}).values():
                if isinstance(value, dict):
                    tasks.update(int(m.group(1)) for k in value if (m := _TASK_KEY.match(str(k))))
    keys = set(metric_keys)
    for final in finals:
        keys.update(final)
    tasks.update(t for key in keys if (t := metric_task(key, "val")) is not None)
    return sorted(tasks) or [0]


def point_baselines(point_dir: Path, summary: dict) -> dict[str, float]:
    """A point's ``baseline/...`` values: its baselines.json, else summary.json's ``baselines`` or ``final``."""
    for source in (read_json(point_dir / BASELINES_NAME), summary.get("baselines"), summary.get("final")):
        if isinstance(source, dict):
            found = {k: float(v) for k, v in source.items()
                     if str(k).startswith(f"{BASELINE_PREFIX}/") and isinstance(v, (int, float))}
            if found:
                return found
    return {}


def _final_and_best(history: Sequence[dict], metric: str, final: dict) -> tuple[Optional[float], Optional[float]]:
    """The last and the lowest finite value of ``metric`` (summary's ``final`` when no history)."""
    values = [r[metric] for r in sorted(history, key=lambda r: r["epoch"]) if metric in r]
    last = values[-1] if values else final.get(metric)
    finite = [v for v in values if math.isfinite(v)]
    if not finite and isinstance(last, (int, float)) and math.isfinite(last):
        finite = [last]
    return last, (min(finite) if finite else None)


def _ratio(value: Any, base: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base > 0:
        return float(value) / float(base)
    return None


def test_column(task: int, in_domain: bool = False) -> str:
    """Grid-summary column of a task's final test loss (``test/loss[_in_domain]_task_<t>`` of summary.json's final)."""
    return f"test_loss{'_in_domain' if in_domain else ''}_task_{task}"


def collect(runs_dir: Path | str, tag: str) -> list[dict]:
    """One row per grid point of ``runs_dir/tag`` (columns: see the module docstring).

    Raises FileNotFoundError when the TAG has no manifest.json.
    """
    return collect_many(runs_dir, [tag])


def collect_many(runs_dir: Path | str, tags: Sequence[str]) -> list[dict]:
    """``collect`` over several TAGs at once: one table, the varying values taken over all of them.

    With more than one TAG every row starts with a ``tag`` column. Raises
    FileNotFoundError naming the first TAG without a manifest.json.
    """
    entries: list[tuple[RunDir, dict]] = []
    for tag in tags:
        run_dir = RunDir(runs_dir, tag)
        manifest = run_dir.manifest()
        if manifest is None:
            raise FileNotFoundError(f"no grid under {run_dir.root}: {run_dir.manifest_path} is missing or unreadable")
        entries += [(run_dir, p) for p in manifest.get("points", [])]
    points = [p for _, p in entries]
    params = varying_parameters(points)
    summaries = [run_dir.summary(p["index"]) for run_dir, p in entries]
    histories = [read_metrics(run_dir.point_dir(p["index"]) / CSV_NAME) for run_dir, p in entries]
    metric_keys = {k for h in histories for r in h for k in r}
    finals = [s.get("final") or {} for s in summaries]
    tasks = _tasks_of(points, metric_keys, finals)
    baselines = [point_baselines(run_dir.point_dir(p["index"]), s) for (run_dir, p), s in zip(entries, summaries)]
    known = metric_keys | {k for f in finals for k in f} | {k for b in baselines for k in b}
    in_domain = {t for t in tasks if in_domain_metric_name("val", t) in known}
    with_base = {t for t in tasks if baseline_name(t) in known}
    with_base_in = {t for t in tasks if baseline_name(t, in_domain=True) in known}
    final_keys = {k for f in finals for k in f}
    with_test = {t for t in tasks if metric_name("test", t) in final_keys}
    with_test_in = {t for t in tasks if in_domain_metric_name("test", t) in final_keys}

    rows = []
    for (run_dir, p), summary, history, final, base in zip(entries, summaries, histories, finals, baselines):
        cfg = p.get("config", {})
        row: dict[str, Any] = {"tag": run_dir.tag} if len(tags) > 1 else {}
        row.update({"index": p["index"], "id": p.get("id", ""), "status": summary.get("status", "pending")})
        for name, (section, key) in params.items():
            row[name] = (cfg.get(section) or {}).get(key)
        if history:
            row["epochs"] = max(r["epoch"] for r in history) + 1
        else:
            row["epochs"] = summary.get("epochs")
        for t in tasks:
            row[final_column(t)], row[best_column(t)] = _final_and_best(history, metric_name("val", t), final)
            if t in in_domain:
                row[final_in_domain_column(t)], row[best_in_domain_column(t)] = _final_and_best(
                    history, in_domain_metric_name("val", t), final)
            if t in with_base:
                row[baseline_column(t)] = base.get(baseline_name(t))
            if t in with_base_in:
                row[baseline_column(t, True)] = base.get(baseline_name(t, in_domain=True))
            if t in with_base:
                row[ratio_column(t)] = _ratio(row[final_column(t)], row[baseline_column(t)])
            if t in in_domain and t in with_base_in:
                row[ratio_column(t, True)] = _ratio(row[final_in_domain_column(t)], row[baseline_column(t, True)])
            if t in with_test:
                row[test_column(t)] = _number(final.get(metric_name("test", t)))
            if t in with_test_in:
                row[test_column(t, True)] = _number(final.get(in_domain_metric_name("test", t)))
        rows.append(row)
    return rows


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parameter_columns(rows: Sequence[dict]) -> list[str]:
    """The varying-config columns of ``collect``'s rows (between 'status' and 'epochs')."""
    if not rows:
        return []
    keys = list(rows[0])
    return keys[keys.index("status") + 1:keys.index("epochs")]


def seed_columns(rows: Sequence[dict]) -> list[str]:
    """The varying columns that are seeds (``seed``, ``data.seed``, ``custom.seed``): repetitions."""
    return [c for c in parameter_columns(rows) if c.split(".")[-1] == "seed"]


def group_columns(rows: Sequence[dict]) -> list[str]:
    """What tells grid points apart other than the seed: ``tag`` (several TAGs) and the non-seed varying columns."""
    if not rows:
        return []
    seeds = seed_columns(rows)
    return (["tag"] if "tag" in rows[0] else []) + [c for c in parameter_columns(rows) if c not in seeds]


def loss_columns(rows: Sequence[dict]) -> list[str]:
    """The per-task loss columns of ``collect``'s rows (everything after 'epochs')."""
    if not rows:
        return []
    keys = list(rows[0])
    return keys[keys.index("epochs") + 1:]


def task_ids(rows: Sequence[dict]) -> list[int]:
    """The tasks with loss columns in ``collect``'s rows."""
    if not rows:
        return []
    return [t for k in rows[0] if (t := final_column_task(k)) is not None]


# ------------------------------------------------------------------------ writing
def _cell(value: Any) -> str:
    """A value as CSV text: '' for missing, JSON for lists/dicts, repr precision for floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return _canonical(value)
    return str(value)


def write_summary_csv(rows: Sequence[dict], path: Path | str) -> Path:
    """``rows`` as CSV (header: the rows' keys, in order), written atomically."""
    path = Path(path)
    columns = list(rows[0]) if rows else list(HEAD_COLUMNS) + ["epochs"]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    write_text_atomic(path, buf.getvalue())
    return path


def _text(value: Any) -> str:
    """A value as table text: '-' for missing, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return _canonical(value)
    return str(value)


def format_table(rows: Sequence[dict], status_line: bool = True) -> str:
    """An aligned text table of ``rows`` (numbers right-aligned), and a status count line."""
    if not rows:
        return "(no grid points)"
    columns = list(rows[0])
    cells = [[_text(r.get(c)) for c in columns] for r in rows]
    numeric = [all(r.get(c) is None or (isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool))
                   for r in rows) for c in columns]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    if not status_line:
        return "\n".join(out)
    counts = count_statuses(r["status"] for r in rows)
    out.append(f"{len(rows)} points: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(out)


# -------------------------------------------------------------------------- plots
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _spans_decade(values: Sequence[float]) -> bool:
    """True when every value is positive and max/min >= 10 (a log axis reads better)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _label(row: dict, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={_text(row.get(n))}" for n in names)


def _save(fig, stem: Path, written: list[Path]) -> None:
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150)
        written.append(path)


def _mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None below 2 values) of ``values``."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _group(rows: Sequence[dict], names: Sequence[str]) -> dict[str, list[dict]]:
    """``rows`` grouped by their values of ``names`` (first-appearance order)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_canonical([r.get(n) for n in names]), []).append(r)
    return groups


def aggregate_seeds(rows: Sequence[dict]) -> list[dict]:
    """Seeds as repetitions: one row per combination of the non-seed varying values.

    Columns: those values, ``points`` (grid points of the combination), ``n`` (finished
    ones: status done), then ``<loss column>_mean`` and ``<loss column>_std`` for every
    loss column of ``rows``: mean and sample standard deviation (ddof 1) over the done
    points' finite values. [] when no varying column is a seed.
    """
    if not seed_columns(rows):
        return []
    others = group_columns(rows)
    out = []
    for members in _group(rows, others).values():
        agg: dict[str, Any] = {c: members[0].get(c) for c in others}
        done = [r for r in members if r["status"] == "done"]
        agg["points"], agg["n"] = len(members), len(done)
        for c in loss_columns(rows):
            agg[f"{c}_mean"], agg[f"{c}_std"] = _mean_std([float(r[c]) for r in done if _is_number(r.get(c))])
        out.append(agg)
    return out


def format_seed_table(agg: Sequence[dict], rows: Sequence[dict]) -> str:
    """``aggregate_seeds``' rows as an aligned table with ``mean ± std`` cells."""
    if not agg:
        return ""
    losses = loss_columns(rows)
    head = [k for k in agg[0] if not any(k in (f"{c}_mean", f"{c}_std") for c in losses)]
    lines = []
    for a in agg:
        line: dict[str, Any] = {k: a[k] for k in head}
        for c in losses:
            mean, std = a[f"{c}_mean"], a[f"{c}_std"]
            line[c] = None if mean is None else f"{mean:.4g}" + ("" if std is None else f" ± {std:.2g}")
        lines.append(line)
    seeds = ", ".join(seed_columns(rows))
    return (f"over seeds ({seeds}): mean ± sample std (ddof 1) over the n done points\n"
            + format_table(lines, status_line=False))


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
            elif _is_number(v):
                out.append((0, float(v), ""))
            else:
                out.append((1, 0.0, _text(v)))
        return tuple(out)
    return key


def sorted_groups(rows: Sequence[dict], names: Sequence[str]) -> list[list[dict]]:
    """``rows`` grouped by their values of ``names``, groups sorted by those values (``_sort_key``)."""
    key = _sort_key(rows, names)
    return sorted(_group(rows, names).values(), key=lambda members: key(members[0]))


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
    stats = [_mean_std(pts[x]) for x in xs]
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
    stats = [_mean_std(per_epoch[e]) for e in epochs]
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
    numeric = [p for p in params if all(_is_number(r.get(p)) for r in rows)]
    columns = set(rows[0]) if rows else set()
    n_seeds = max((len(g) for g in _group(rows, groups_by).values()), default=1) if seeds else 1
    over = f" (mean ± std over {', '.join(seeds)}, up to {n_seeds} per point)" if seeds else ""
    histories = {id(r): read_metrics(RunDir(runs_dir, r.get("tag", tags[0])).point_dir(r["index"]) / CSV_NAME)
                 for r in rows}
    for t in task_ids(rows):
        col = final_column(t)
        col_in = final_in_domain_column(t) if final_in_domain_column(t) in columns else None
        # final validation loss against each numeric parameter
        for p in numeric:
            others = [q for q in groups_by if q != p]
            done = [r for r in rows if r["status"] == "done" and _is_number(r.get(col))]
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
                    if col_in and _is_number(r.get(col_in)):
                        inner.setdefault(float(r[p]), []).append(float(r[col_in]))
                _errorbar(ax, full, "o-", label, color)
                if inner:
                    inner_any = True
                    _errorbar(ax, inner, "s--", f"{label} (in-domain)" if others else "in-domain", color)
            ys = [float(r[col]) for r in done] + [float(r[col_in]) for r in done if col_in and _is_number(r.get(col_in))]
            for bcol, style, name in ((baseline_column(t), ":", "baseline (mean predictor)"),
                                      (baseline_column(t, True), "-.", "baseline, in-domain")):
                base = [float(r[bcol]) for r in done if _is_number(r.get(bcol))]
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
            missing = sum(1 for r in rows if not (r["status"] == "done" and _is_number(r.get(col))))
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
            yield f"{prefix}_task{t}_final_vs_{_safe(p)}", fig

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


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``TAG [TAG ...] [--runs_dir DIR] [--out DIR] [--no_plots]``: write the summary CSV (+ plots), print the table.

    One TAG: ``runs/TAG/summary.csv`` and ``summary_*`` plots (or in ``--out``). Several
    TAGs: one table with a ``tag`` column, written as ``summary_<TAG1>+<TAG2>...`` files
    into the first TAG's folder, or as ``summary*`` files into ``--out DIR``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.collect",
        description="Summarize one grid, or compare several: summary CSV, an aligned table and comparison plots.")
    parser.add_argument("tags", nargs="+", metavar="TAG",
                        help="the grid's TAG (--experimentbatch_name of the run); several TAGs: one comparison")
    parser.add_argument("--runs_dir", default="runs", help="folder holding the TAG folders (default: runs)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write the CSV files and plots here (default: the first TAG's folder)")
    parser.add_argument("--no_plots", action="store_true", help="only the table and the CSV files")
    args = parser.parse_args(argv)
    tags = list(dict.fromkeys(args.tags))  # a TAG named twice counts once
    try:
        rows = collect_many(args.runs_dir, tags)
    except FileNotFoundError as err:
        print(f"collect: {err}", file=sys.stderr)
        return 1
    if args.out is not None:
        root, prefix = Path(args.out), "summary"
    else:
        root = RunDir(args.runs_dir, tags[0]).root
        prefix = "summary" if len(tags) == 1 else "summary_" + "+".join(_safe(t) for t in tags)
    root.mkdir(parents=True, exist_ok=True)
    path = write_summary_csv(rows, root / f"{prefix}.csv")
    print(format_table(rows))
    print(f"wrote {path}")
    agg = aggregate_seeds(rows)
    if agg:
        seeds_path = write_summary_csv(agg, root / f"{prefix}_seeds.csv")
        print()
        print(format_seed_table(agg, rows))
        print(f"wrote {seeds_path}")
    if not args.no_plots:
        files = plot_comparisons(rows, args.runs_dir, tags, out_dir=root, prefix=prefix)
        pngs = [f.name for f in files if f.suffix == ".png"]
        print(f"wrote {len(pngs)} comparison plots (PNG and PDF) to {root}" + (f": {', '.join(pngs)}" if pngs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
