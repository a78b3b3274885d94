"""Results of a grid at a glance: summary table, summary.csv and comparison plots.

``python -m experiments.analysis.collect TAG [--runs_dir runs]`` (or ``main.py --collect TAG``)
reads ``runs/TAG/`` (see ``experiments.run_state`` for the layout) and writes:

- ``runs/TAG/summary.csv``: one row per grid point of the manifest: ``index``, ``id``,
  ``status`` (pending|running|done|failed|diverged), the config values that vary across
  the grid (data/architecture/training/custom keys with more than one distinct value,
  named by their bare key, or ``section.key`` where two sections disagree), ``epochs``
  (epochs done), then ``final_val_loss_task_<t>`` and ``best_val_loss_task_<t>`` for every
  task (the last and the lowest ``validation/loss_task_<t>`` of ``metrics.csv``; empty
  where a point has no metrics yet; names from ``experiments.logging.metrics``). Points not started are listed as pending, so a
  partial grid (running, failed, fetched half-way from a cluster) works.
- the same as an aligned table on stdout;
- comparison plots next to it (PNG and PDF): ``summary_task<t>_final_vs_<param>.*``, the
  final validation loss of task t against each varying numeric parameter (finished
  points only; log axis where the values span a decade or more), one line per
  combination of the other varying values; and ``summary_task<t>_curves.*``, the validation-loss curves of all points.

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
    CSV_NAME,
    best_column,
    final_column,
    final_column_task,
    metric_name,
    metric_task,
    read_metrics,
)
from experiments.run_state import RunDir, count_statuses, write_text_atomic

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

    rows = []
    for p, summary, history, final in zip(points, summaries, histories, finals):
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
            metric = metric_name("val", t)
            values = [r[metric] for r in sorted(history, key=lambda r: r["epoch"]) if metric in r]
            last = values[-1] if values else final.get(metric)
            finite = [v for v in values if math.isfinite(v)]
            if not finite and isinstance(last, (int, float)) and math.isfinite(last):
                finite = [last]
            row[final_column(t)] = last
            row[best_column(t)] = min(finite) if finite else None
        rows.append(row)
    return rows


def parameter_columns(rows: Sequence[dict]) -> list[str]:
    """The varying-config columns of ``collect``'s rows (between 'status' and 'epochs')."""
    if not rows:
        return []
    keys = list(rows[0])
    return keys[keys.index("status") + 1:keys.index("epochs")]


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


def format_table(rows: Sequence[dict]) -> str:
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


def plot_comparisons(rows: Sequence[dict], runs_dir: Path | str, tag: str) -> list[Path]:
    """Comparison plots of ``collect``'s rows in ``runs_dir/tag`` (module docstring); the files written."""
    from matplotlib.figure import Figure

    run_dir = RunDir(runs_dir, tag)
    out_dir = run_dir.root
    params = parameter_columns(rows)
    numeric = [p for p in params if all(_is_number(r.get(p)) for r in rows)]
    written: list[Path] = []
    for t in task_ids(rows):
        col = final_column(t)
        # final validation loss against each numeric parameter
        for p in numeric:
            others = [q for q in params if q != p]
            groups: dict[str, list[tuple[float, float]]] = {}
            order: dict[str, tuple] = {}
            for r in rows:
                key = _label(r, others) if others else ""
                order.setdefault(key, tuple((0, r.get(q)) if _is_number(r.get(q)) else (1, _text(r.get(q)))
                                            for q in others))
                y = r.get(col)
                groups.setdefault(key, [])
                if r["status"] == "done" and _is_number(y):
                    groups[key].append((float(r[p]), float(y)))
            if not any(groups.values()):
                continue
            fig = Figure(figsize=(6.4, 4.6))
            ax = fig.add_subplot()
            for key in sorted(groups, key=lambda k: order[k]):
                pts = sorted(groups[key])
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", label=key or None)
            xs = [float(r[p]) for r in rows]
            ys = [y for g in groups.values() for _, y in g]
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
            title = f"task {t}: final validation loss vs {p}"
            if missing:
                title += f"\n({missing} of {len(rows)} points not done or without a loss: left out)"
            ax.set_title(title, fontsize=10)
            if others:
                ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            fig.tight_layout()
            _save(fig, out_dir / f"summary_task{t}_final_vs_{_safe(p)}", written)

        # validation-loss curves of every point
        metric = metric_name("val", t)
        fig = Figure(figsize=(7.2, 4.8))
        ax = fig.add_subplot()
        positive = True
        drew = False
        for r in rows:
            history = read_metrics(run_dir.point_dir(r["index"]) / CSV_NAME)
            pts = [(h["epoch"], h[metric]) for h in sorted(history, key=lambda h: h["epoch"])
                   if metric in h and math.isfinite(h[metric])]
            if not pts:
                continue
            positive = positive and all(y > 0 for _, y in pts)
            label = f"config {r['index']}" + (f": {_label(r, params)}" if params else "")
            if r["status"] != "done":
                label += f" [{r['status']}]"
            ax.plot([e for e, _ in pts], [y for _, y in pts], "-" if len(pts) > 1 else "o", label=label)
            drew = True
        if drew:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation loss, task {t}")
            ax.set_title(f"task {t}: validation loss of every grid point ({tag})", fontsize=10)
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
    if not args.no_plots:
        files = plot_comparisons(rows, args.runs_dir, args.tag)
        pngs = [f.name for f in files if f.suffix == ".png"]
        print(f"wrote {len(pngs)} comparison plots (PNG and PDF) to {root}" + (f": {', '.join(pngs)}" if pngs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
