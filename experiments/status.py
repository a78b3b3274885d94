"""The --status table: one line per grid point of a TAG, read from its records on disk.

Reads runs/TAG/ only (the manifest and each point's summary.json); imports no torch.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments import grid
from experiments.run_state import FINISHED, RunDir, count_statuses
from experiments.validation import GridError


def status_table(runs_dir: Path, experimentbatch_name: str) -> str:
    """Aligned table of the TAG's grid points: status, epoch x / max, the last validation loss
    per task, elapsed time, whether a running point is alive, and why a point is unfinished."""
    run_dir = RunDir(runs_dir, experimentbatch_name)
    manifest = run_dir.manifest()
    if manifest is None:
        raise GridError(f"no readable manifest under {run_dir.root}: {run_dir.manifest_path} is missing or "
                        "unreadable (a rerun of the TAG rebuilds it from the points' records when they match "
                        "the grid)")
    rows = run_dir.statuses(manifest)
    values = _manifest_values(manifest)
    keys = list(values[0]) if values else []
    table = []
    for n, (index, pid, status) in enumerate(rows):
        summary = run_dir.summary(index)
        if summary.get("id") not in (None, pid):
            summary = {}
        table.append([str(index), pid, status, *(grid.format_value(v) for v in (values[n].values() if n < len(values) else [])),
                      _epochs(summary), _losses(summary), _elapsed(summary, status), _note(summary, status)])
    lines = [f"{experimentbatch_name}: {len(rows)} grid points of {manifest.get('experiment')}"]
    lines += grid.align(["index", "id", "status", *keys, "epoch", "validation loss", "elapsed", "note"], table)
    counts = count_statuses(s for _, _, s in rows)
    lines.append("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return "\n".join(lines)


def _manifest_values(manifest: dict) -> list[dict]:
    """Per manifest point, ``{key: value}`` of the config keys whose values differ between points."""
    flat = []
    for p in manifest.get("points", []):
        cfg = p.get("config") or {}
        row = {}
        for section in ("data", "architecture", "training", "custom"):
            for k, v in (cfg.get(section) or {}).items():
                row.setdefault(k, v)
        flat.append(row)
    if len(flat) < 2:
        return [{} for _ in flat]
    import json

    keys = [k for k in flat[0] if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in flat}) > 1]
    return [{k: r.get(k) for k in keys} for r in flat]


def _epochs(summary: dict) -> str:
    """'x/max': epochs done of the configured maximum."""
    done = summary.get("epochs_done") if summary.get("status") in ("running", "stale") else None
    if done is None:
        done = summary.get("epochs", summary.get("epochs_done"))
    top = summary.get("max_epochs")
    if done is None:
        return "-"
    return f"{done}/{top}" if top not in (None, -1) else str(done)


def _losses(summary: dict) -> str:
    """The last validation loss of every task, 'task_0 0.123, task_1 0.456'."""
    last = summary.get("last_validation") or {}
    if summary.get("status") in FINISHED or not last:
        final = summary.get("final") or {}
        last = {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("validation/loss_task_")} or last
    items = sorted(((k, v) for k, v in last.items() if k.startswith("loss_task_")),
                   key=lambda kv: int(kv[0].rsplit("_", 1)[-1]))
    return ", ".join(f"{k[len('loss_'):]} {v:.4g}" if isinstance(v, (int, float)) else f"{k[len('loss_'):]} {v}"
                     for k, v in items) or "-"


def _elapsed(summary: dict, status: str) -> str:
    """Time since the point's (latest) start: up to now while running, up to its last record otherwise."""
    start = summary.get("started_unix")
    if not isinstance(start, (int, float)):
        return "-"
    if status == "running":
        end = time.time()
    else:
        end = summary.get("heartbeat_unix") if status == "stale" else None
        if end is None:
            try:
                end = time.mktime(time.strptime(summary.get("updated", ""), "%Y-%m-%dT%H:%M:%S"))
            except (TypeError, ValueError):
                return "-"
    sec = max(0, int(end - start))
    return f"{sec // 3600}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


def _note(summary: dict, status: str) -> str:
    """Why a point is unfinished, whether a running one is alive, or how a done one was extended."""
    if status == "stale":
        return f"DEAD: {summary.get('stale', '')}"
    if status == "running":
        return (f"alive: host {summary.get('host')}, pid {summary.get('pid')}, "
                f"heartbeat {summary.get('heartbeat')}")
    if status in ("failed", "interrupted", "time_limit"):
        return str(summary.get("error") or summary.get("stop") or "")
    if any(h.get("event") == "extended" for h in summary.get("history") or [] if isinstance(h, dict)):
        return "extended " + ", ".join(f"{h.get('from_epochs')}->{h.get('to_epochs')}"
                                       for h in summary["history"] if h.get("event") == "extended")
    return ""
