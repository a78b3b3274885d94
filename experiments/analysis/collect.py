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
- comparison plots next to it (PNG and PDF, drawn by ``experiments.analysis.comparison_plots``), the TAG(s) in every title, legends outside
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


def cell_text(value: Any) -> str:
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
    cells = [[cell_text(r.get(c)) for c in columns] for r in rows]
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


# ------------------------------------------------------------------ seeds
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None below 2 values) of ``values``."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group_rows(rows: Sequence[dict], names: Sequence[str]) -> dict[str, list[dict]]:
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
    for members in group_rows(rows, others).values():
        agg: dict[str, Any] = {c: members[0].get(c) for c in others}
        done = [r for r in members if r["status"] == "done"]
        agg["points"], agg["n"] = len(members), len(done)
        for c in loss_columns(rows):
            agg[f"{c}_mean"], agg[f"{c}_std"] = mean_std([float(r[c]) for r in done if is_number(r.get(c))])
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
        prefix = "summary" if len(tags) == 1 else "summary_" + "+".join(safe_name(t) for t in tags)
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
        from experiments.analysis.comparison_plots import plot_comparisons

        files = plot_comparisons(rows, args.runs_dir, tags, out_dir=root, prefix=prefix)
        pngs = [f.name for f in files if f.suffix == ".png"]
        print(f"wrote {len(pngs)} comparison plots (PNG and PDF) to {root}" + (f": {', '.join(pngs)}" if pngs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
