"""On-disk state of a grid run: manifest, per-point status, checkpoints to resume from.

Layout under ``runs/<TAG>/``::

    manifest.json            experiment, grid size, index -> id -> config
    config<i>/               one folder per grid point (i is 1-based, as --num_config)
        config.json          the resolved configuration
        summary.json         status (running|done|failed|diverged), epochs, final losses
        metrics.csv          per-epoch losses (LoggingCallback)
        plots/               fit plots (PNG and PDF)
        checkpoints/last.ckpt
        error.txt            traceback of a failed run

A grid point's id is a short hash of its resolved data/architecture/training/custom
config (trainer settings such as devices are not part of it: they say where a point
runs, not what it computes). Resubmitting a TAG with a changed grid is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional


class GridChangedError(RuntimeError):
    """The TAG's manifest describes another grid than the one being run."""


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of a config value: tuples/sets/arrays -> lists, callables by name.

    Deterministic (sets are sorted), since grid-point ids hash its output.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch scalars and arrays
        return jsonable(value.tolist())
    if callable(value):
        return f"<callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}>"
    return repr(value)


def point_id(config: dict) -> str:
    """Stable short id of a resolved grid-point config."""
    blob = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="") as fh:
            fh.write(text)
            fh.flush()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    """``{status: count}``, sorted by status name (for one-line summaries)."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def read_json(path: Path) -> Optional[Any]:
    """Parsed JSON at ``path``, or None when missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    """The folder of one TAG: its manifest and its grid points' folders."""

    def __init__(self, runs_dir: Path | str, tag: str):
        self.root = Path(runs_dir) / tag
        self.tag = tag

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def point_dir(self, index: int) -> Path:
        """Folder of grid point ``index`` (1-based)."""
        return self.root / f"config{index}"

    def manifest(self) -> Optional[dict]:
        return read_json(self.manifest_path)

    def ensure_manifest(self, experiment: str, configs: list[dict]) -> dict:
        """Write the manifest, or check that an existing one describes the same grid."""
        points = [{"index": i + 1, "id": point_id(c), "config": jsonable(c)} for i, c in enumerate(configs)]
        existing = self.manifest()
        if existing is not None:
            old = [(p["index"], p["id"]) for p in existing.get("points", [])]
            new = [(p["index"], p["id"]) for p in points]
            if existing.get("experiment") != experiment or old != new:
                changed = sum(1 for a, b in zip(old, new) if a != b) + abs(len(old) - len(new))
                raise GridChangedError(
                    f"runs/{self.tag} already holds a grid of {len(old)} points of experiment "
                    f"'{existing.get('experiment')}', and the grid now differs ({len(new)} points of "
                    f"'{experiment}', {changed} changed); finished results are kept: use a new "
                    "--experimentbatch_name (TAG) for the changed grid"
                )
            return existing
        manifest = {"experiment": experiment, "tag": self.tag, "grid_size": len(points),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "points": points}
        write_json(self.manifest_path, manifest)
        return manifest

    def summary(self, index: int) -> dict:
        return read_json(self.point_dir(index) / "summary.json") or {}

    def status(self, index: int) -> str:
        return self.summary(index).get("status", "pending")

    def write_summary(self, index: int, **fields: Any) -> None:
        summary = self.summary(index)
        summary.update(fields)
        summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.point_dir(index) / "summary.json", summary)

    def statuses(self) -> list[tuple[int, str, str]]:
        """(index, id, status) of every grid point in the manifest."""
        manifest = self.manifest() or {"points": []}
        return [(p["index"], p["id"], self.status(p["index"])) for p in manifest["points"]]

    def resume_checkpoint(self, index: int) -> Optional[Path]:
        """The newest checkpoint of a point: last.ckpt or one saved on a preemption signal."""
        d = self.point_dir(index)
        candidates = [p for p in [d / "checkpoints" / "last.ckpt", *d.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
        return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
