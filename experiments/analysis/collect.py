"""Results of a grid at a glance: summary table, summary.csv and comparison plots.

``python -m experiments.analysis.collect TAG [--runs_dir runs]`` (or ``main.py --collect TAG``)
reads ``runs/TAG/`` (see ``experiments.run_state`` for the layout) and writes:

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
  better than predicting the mean"). Points not started are listed as pending, so a
  partial grid (running, failed, fetched half-way from a cluster) works.
- the same as an aligned table on stdout;
- seeds are repetitions, not an axis: when a varying column is a ``seed`` (data or
  custom), ``runs/TAG/summary_seeds.csv`` and a second table give, per combination of the
  other varying values, ``n`` (finished points: done, with a finite loss) and the mean and
  the sample standard deviation (ddof 1) over those seeds of every loss column;
- comparison plots next to it (PNG and PDF): ``summary_task<t>_final_vs_<param>.*``, the
  final validation loss of task t (solid; in-domain dashed; the baseline dotted) against
  each varying numeric parameter other than the seed (finished points only; mean over
  seeds with std error bars; log axis where the values span a decade or more), one line
  per combination of the other varying values; and ``summary_task<t>_curves.*``, the
  validation-loss curves (mean over seeds, std band).

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
from typing import Any, Optional, Sequence

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


def collect(runs_dir: Path | str, tag: str) -> list[dict]:
    """One row per grid point of ``runs_dir/tag`` (columns: see the module docstring).

    Raises FileNotFoundError when the TAG has no manifest.json.
    """
    run_dir = RunDir(runs_dir, tag)
    manifest = run_dir.manifest()
    if manifest is None:
        raise FileNotFoundError(f"no grid under {run_dir.root}: {run_dir.manifest_path} is missing or unreadable")
    points = list(manifest.get("points", []))
    params = varying_parameters(points)
    summaries = [run_dir.summary(p["index"]) for p in points]
    histories = [read_metrics(run_dir.point_dir(p["index"]) / CSV_NAME) for p in points]
    metric_keys = {k for h in histories for r in h for k in r}
    finals = [s.get("final") or {} for s in summaries]
    tasks = _tasks_of(points, metric_keys, finals)
    baselines = [point_baselines(run_dir.point_dir(p["index"]), s) for p, s in zip(points, summaries)]
    known = metric_keys | {k for f in finals for k in f} | {k for b in baselines for k in b}
    in_domain = {t for t in tasks if in_domain_metric_name("val", t) in known}
    with_base = {t for t in tasks if baseline_name(t) in known}
    with_base_in = {t for t in tasks if baseline_name(t, in_domain=True) in known}

    rows = []
    for p, summary, history, final, base in zip(points, summaries, histories, finals, baselines):
        cfg = p.get("config", {})
        row: dict[str, Any] = {
            "index": p["index"],
            "id": p.get("id", ""),
            "status": summary.get("status", "pending"),
        }
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
        rows.append(row)
    return rows


def parameter_columns(rows: Sequence[dict]) -> list[str]:
    """The varying-config columns of ``collect``'s rows (between 'status' and 'epochs')."""
    if not rows:
        return []
    keys = list(rows[0])
    return keys[keys.index("status") + 1:keys.index("epochs")]


def seed_columns(rows: Sequence[dict]) -> list[str]:
    """The varying columns that are seeds (``seed``, ``data.seed``, ``custom.seed``): repetitions."""
    return [c for c in parameter_columns(rows) if c.split(".")[-1] == "seed"]


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
        fig.savefig(path, dpi=110)
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
    seeds = seed_columns(rows)
    if not seeds:
        return []
    others = [c for c in parameter_columns(rows) if c not in seeds]
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


def _errorbar(ax: Any, pts: dict[float, list[float]], fmt: str, label: Optional[str], color: Any = None) -> Any:
    """Mean of each x's values with std error bars (where there are 2 or more); the line drawn."""
    xs = sorted(x for x, v in pts.items() if v)
    stats = [_mean_std(pts[x]) for x in xs]
    yerr = [s or 0.0 for _, s in stats]
    line = ax.errorbar(xs, [m for m, _ in stats], yerr=yerr if any(yerr) else None, fmt=fmt, label=label,
                       color=color, capsize=3, markersize=4)
    return line.lines[0].get_color()


def plot_comparisons(rows: Sequence[dict], runs_dir: Path | str, tag: str) -> list[Path]:
    """Comparison plots of ``collect``'s rows in ``runs_dir/tag`` (module docstring); the files written."""
    from matplotlib.figure import Figure

    run_dir = RunDir(runs_dir, tag)
    out_dir = run_dir.root
    seeds = seed_columns(rows)
    params = [p for p in parameter_columns(rows) if p not in seeds]  # never a loss-against-seed plot
    numeric = [p for p in params if all(_is_number(r.get(p)) for r in rows)]
    columns = set(rows[0]) if rows else set()
    n_seeds = max((len(g) for g in _group(rows, params).values()), default=1) if seeds else 1
    over = f" (mean ± std over {', '.join(seeds)}, up to {n_seeds} per point)" if seeds else ""
    written: list[Path] = []
    for t in task_ids(rows):
        col = final_column(t)
        col_in = final_in_domain_column(t) if final_in_domain_column(t) in columns else None
        # final validation loss against each numeric parameter
        for p in numeric:
            others = [q for q in params if q != p]
            done = [r for r in rows if r["status"] == "done" and _is_number(r.get(col))]
            if not done:
                continue
            fig = Figure(figsize=(6.8, 4.8))
            ax = fig.add_subplot()
            groups = _group(done, others)

            def order(key: str, groups: dict = groups, others: list = others) -> tuple:
                r = groups[key][0]
                return tuple((0, r.get(q)) if _is_number(r.get(q)) else (1, _text(r.get(q))) for q in others)

            for key in sorted(groups, key=order):
                members = groups[key]
                label = _label(members[0], others) if others else "validation loss"
                full: dict[float, list[float]] = {}
                inner: dict[float, list[float]] = {}
                for r in members:
                    full.setdefault(float(r[p]), []).append(float(r[col]))
                    if col_in and _is_number(r.get(col_in)):
                        inner.setdefault(float(r[p]), []).append(float(r[col_in]))
                color = _errorbar(ax, full, "o-", label)
                if inner:
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
            if _spans_decade(ys) or (ys and min(ys) > 0 and max(ys) / min(ys) >= 3):
                ax.set_yscale("log")
            missing = sum(1 for r in rows if not (r["status"] == "done" and _is_number(r.get(col))))
            ax.set_xlabel(p)
            ax.set_ylabel(f"final validation loss, task {t}")
            title = f"task {t}: final validation loss vs {p}{over}"
            if missing:
                title += f"\n({missing} of {len(rows)} points not done or without a loss: left out)"
            ax.set_title(title, fontsize=9)
            if others or inner or len(ax.get_legend_handles_labels()[0]) > 1:
                ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
            fig.tight_layout()
            _save(fig, out_dir / f"summary_task{t}_final_vs_{_safe(p)}", written)

        # validation-loss curves: one per combination of the non-seed values (mean, std band)
        metric = metric_name("val", t)
        fig = Figure(figsize=(7.2, 4.8))
        ax = fig.add_subplot()
        positive = True
        drew = False
        for members in _group(rows, params).values():
            per_epoch: dict[int, list[float]] = {}
            for r in members:
                for h in read_metrics(run_dir.point_dir(r["index"]) / CSV_NAME):
                    if metric in h and math.isfinite(h[metric]):
                        per_epoch.setdefault(h["epoch"], []).append(h[metric])
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            stats = [_mean_std(per_epoch[e]) for e in epochs]
            means = [m for m, _ in stats]
            positive = positive and all(m > 0 for m in means)
            r = members[0]
            if seeds:
                label = (_label(r, params) if params else "all points") + f" (n={len(members)})"
            else:
                label = f"config {r['index']}" + (f": {_label(r, params)}" if params else "")
            statuses = sorted({m["status"] for m in members} - {"done"})
            if statuses:
                label += f" [{', '.join(statuses)}]"
            line = ax.plot(epochs, means, "-" if len(epochs) > 1 else "o", label=label)[0]
            if any(sd for _, sd in stats):
                lo_band = [m - (sd or 0.0) for m, sd in stats]
                ax.fill_between(epochs, lo_band, [m + (sd or 0.0) for m, sd in stats],
                                color=line.get_color(), alpha=0.2, linewidth=0)
                positive = positive and all(v > 0 for v in lo_band)
            drew = True
        if drew:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation loss, task {t}")
            ax.set_title(f"task {t}: validation loss of every grid point ({tag}){over}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
            fig.tight_layout()
            _save(fig, out_dir / f"summary_task{t}_curves", written)
    return written


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``TAG [--runs_dir DIR] [--no_plots]``: write summary.csv (+ plots) and print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.collect",
        description="Summarize a grid: runs/TAG/summary.csv, an aligned table and comparison plots.")
    parser.add_argument("tag", help="the grid's TAG (--experimentbatch_name of the run)")
    parser.add_argument("--runs_dir", default="runs", help="folder holding the TAG folders (default: runs)")
    parser.add_argument("--no_plots", action="store_true", help="only the table and summary.csv")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.runs_dir, args.tag)
    except FileNotFoundError as err:
        print(f"collect: {err}", file=sys.stderr)
        return 1
    root = RunDir(args.runs_dir, args.tag).root
    path = write_summary_csv(rows, root / "summary.csv")
    print(format_table(rows))
    print(f"wrote {path}")
    agg = aggregate_seeds(rows)
    if agg:
        seeds_path = write_summary_csv(agg, root / "summary_seeds.csv")
        print()
        print(format_seed_table(agg, rows))
        print(f"wrote {seeds_path}")
    if not args.no_plots:
        files = plot_comparisons(rows, args.runs_dir, args.tag)
        pngs = [f.name for f in files if f.suffix == ".png"]
        print(f"wrote {len(pngs)} comparison plots (PNG and PDF) to {root}" + (f": {', '.join(pngs)}" if pngs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
