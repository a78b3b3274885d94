"""On-disk state of a grid run: manifest, per-point status, locks, checkpoints to resume from.

Layout under ``runs/<TAG>/``::

    manifest.json            experiment, grid size, index -> id -> config
    config<i>/               one folder per grid point (i is 1-based, as --num_config)
        config.json          the resolved configuration and its 'id'
        summary.json         status, id, epochs, final losses, host/pid/heartbeat
        metrics.csv          per-epoch losses (LoggingCallback)
        plots/               fit plots (PNG and PDF)
        checkpoints/last.ckpt      newest epoch checkpoint (a link)
        checkpoints/interrupted.ckpt   written when a run stops early (signal, time limit)
        error.txt            traceback of a failed run
        .lock                advisory lock held by the process running the point

Statuses (``STATUSES``): ``pending`` (never started), ``running``, ``stale`` (recorded
as running, but its process is gone: heartbeat older than ``STALE_AFTER_S`` or, on this
host, no such pid), ``done`` (reached its configured end), ``diverged``, ``failed``,
``interrupted`` (a signal stopped it; checkpointed), ``time_limit`` (``max_time``
stopped it; checkpointed). Only ``FINISHED`` ones (done, diverged) are kept by a rerun.

A grid point's id is a short hash of its resolved data/architecture/training/custom
config (trainer settings such as devices are not part of it: they say where a point
runs, not what it computes). Resubmitting a TAG with a changed grid is refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional


class GridChangedError(RuntimeError):
    """The TAG's manifest (or, without one, its points' records) describes another grid."""


class PointLockedError(RuntimeError):
    """Another process holds the lock of a grid point (it is running that point)."""


# Statuses of a grid point ('pending' and 'stale' are derived, never written).
STATUSES = ("pending", "running", "stale", "done", "diverged", "failed", "interrupted", "time_limit")
# Finished statuses: a rerun of the TAG skips them and --missing leaves them out (a
# diverged run would diverge again). Every other status is unfinished.
FINISHED = ("done", "diverged")
# A 'running' point whose heartbeat is older than this many seconds, or whose process is
# gone (same host), is 'stale'. Override with the environment variable MTL_STALE_AFTER_S.
STALE_AFTER_S = float(os.environ.get("MTL_STALE_AFTER_S", 15 * 60))
# How often a running point refreshes its heartbeat, in seconds (also after every epoch).
HEARTBEAT_EVERY_S = 60.0
HOST = socket.gethostname()


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


def strict_jsonable(value: Any) -> tuple[Any, list[str]]:
    """``jsonable(value)`` with every non-finite float replaced by None.

    Returns (value, paths of the replaced numbers, e.g. ``['final/validation/loss_task_0']``),
    so the file stays strict JSON (no NaN/Infinity) and says what was not finite.
    """
    replaced: list[str] = []

    def walk(v: Any, path: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            replaced.append(path or "<value>")
            return None
        if isinstance(v, dict):
            return {k: walk(x, f"{path}/{k}" if path else k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return v

    return walk(jsonable(value), ""), replaced


# Config keys that do not change what a point computes, left out of its id: (section, key).
NOT_IN_ID = (("custom", "keep_checkpoints"),)


def point_id(config: dict) -> str:
    """Stable short id of a resolved grid-point config (without the ``NOT_IN_ID`` keys)."""
    config = dict(config)
    for section, key in NOT_IN_ID:
        if isinstance(config.get(section), dict) and key in config[section]:
            config[section] = {k: v for k, v in config[section].items() if k != key}
    blob = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("w", newline="") as fh:
            fh.write(text)
            fh.flush()
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON atomically (see ``write_text_atomic``).

    Non-finite floats become null; their paths are listed under ``'non_finite'`` when
    ``data`` is a dict (so a reader knows a null was NaN/Infinity, not missing).
    """
    value, replaced = strict_jsonable(data)
    if replaced and isinstance(value, dict):
        value["non_finite"] = sorted(set(value.get("non_finite") or []) | set(replaced))
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=False, allow_nan=False) + "\n")


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


def pid_alive(pid: Any) -> bool:
    """True if a process ``pid`` exists on this host (or may exist: no permission to ask)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def stale_reason(summary: Mapping[str, Any], now: Optional[float] = None) -> Optional[str]:
    """Why a summary recorded as 'running' is stale, or None if it may still be running."""
    if summary.get("status") != "running":
        return None
    if summary.get("host") == HOST and summary.get("pid") is not None and not pid_alive(summary["pid"]):
        return f"process {summary['pid']} on {HOST} is gone"
    beat = summary.get("heartbeat_unix")
    if isinstance(beat, (int, float)):
        age = (time.time() if now is None else now) - beat
        if age > STALE_AFTER_S:
            return f"no heartbeat for {age / 60:.0f} min (host {summary.get('host')}, pid {summary.get('pid')})"
    elif summary.get("host") is None:  # recorded by an older version: no heartbeat at all
        return "no heartbeat recorded"
    return None


class PointLock:
    """Advisory ``flock`` on ``config<i>/.lock``, held while a process runs the point.

    The kernel drops it when the process dies, however it dies. On file systems without
    flock support the run goes on unlocked (``supported`` is False).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: Optional[int] = None
        self.supported = True

    def acquire(self) -> "PointLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = ""
                try:
                    holder = os.read(fd, 200).decode(errors="replace").strip()
                finally:
                    os.close(fd)
                raise PointLockedError(f"{self.path} is locked by another process"
                                       + (f" ({holder})" if holder else "")) from None
            os.close(fd)  # ENOLCK, EOPNOTSUPP, ENOSYS: no flock on this file system
            self.supported = False
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"host {HOST} pid {os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "PointLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class RunDir:
    """The folder of one TAG: its manifest and its grid points' folders."""

    def __init__(self, runs_dir: Path | str, tag: str):
        self.root = Path(runs_dir) / tag
        self.tag = tag
        self._lock = threading.Lock()  # summary.json is written by the run and its heartbeat thread
        # False in the other processes of a multi-process (DDP) run: only global rank 0 records.
        self.records = True

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def point_dir(self, index: int) -> Path:
        """Folder of grid point ``index`` (1-based)."""
        return self.root / f"config{index}"

    def manifest(self) -> Optional[dict]:
        manifest = read_json(self.manifest_path)
        return manifest if isinstance(manifest, dict) and isinstance(manifest.get("points"), list) else None

    # ------------------------------------------------------------- manifest
    def recorded_ids(self) -> dict[int, Optional[str]]:
        """``{index: id}`` of every point folder holding results (config.json, else summary.json).

        The id is None when the folder holds results but neither file names an id.
        """
        out: dict[int, Optional[str]] = {}
        if not self.root.is_dir():
            return out
        for d in self.root.glob("config*"):
            suffix = d.name[len("config"):]
            if not d.is_dir() or not suffix.isdigit():
                continue
            has_results = any((d / name).exists() for name in
                              ("config.json", "summary.json", "metrics.csv", "checkpoints", "error.txt"))
            if not has_results:
                continue
            ids = [(read_json(d / name) or {}).get("id") for name in ("config.json", "summary.json")]
            out[int(suffix)] = next((i for i in ids if isinstance(i, str)), None)
        return out

    def ensure_manifest(self, experiment: str, configs: list[dict], write: bool = True) -> dict:
        """The manifest of this grid: written if new, checked against an existing one.

        A missing or unreadable manifest beside existing results is rebuilt only when
        every point's own record (config.json / summary.json 'id') matches this grid;
        otherwise GridChangedError (nothing is replaced). ``write=False`` checks only.
        """
        points = [{"index": i + 1, "id": point_id(c), "config": jsonable(c)} for i, c in enumerate(configs)]
        existing = self.manifest()
        if existing is not None:
            old = [(p.get("index"), p.get("id")) for p in existing.get("points", [])]
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
        recorded = self.recorded_ids()
        corrupt = self.manifest_path.exists()
        if recorded or corrupt:
            why = "is unreadable" if corrupt else "is missing"
            ids = {p["index"]: p["id"] for p in points}
            bad = [f"config{i} holds {rid or 'no id'}" + (f", the grid's point {i} is {ids[i]}" if i in ids
                                                        else f", the grid has {len(points)} points")
                   for i, rid in sorted(recorded.items()) if ids.get(i) != rid]
            if bad:
                raise GridChangedError(
                    f"{self.manifest_path} {why} and the recorded points do not match this grid "
                    f"({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''}); nothing was changed: "
                    "use a new --experimentbatch_name (TAG), or restore manifest.json")
            manifest["rebuilt"] = f"from the records of {len(recorded)} point(s); the manifest {why}"
            if write:
                if corrupt:
                    self.manifest_path.replace(self.manifest_path.with_name(
                        f"manifest.json.unreadable-{time.strftime('%Y%m%d_%H%M%S')}"))
                print(f"[{self.tag}] {self.manifest_path} {why}: rebuilt from the records of "
                      f"{len(recorded)} point(s), which all match this grid")
        if write:
            write_json(self.manifest_path, manifest)
        return manifest

    # -------------------------------------------------------------- status
    def recorded_summary(self, index: int) -> dict:
        """summary.json as written ({} if missing or unreadable)."""
        summary = read_json(self.point_dir(index) / "summary.json")
        return summary if isinstance(summary, dict) else {}

    def summary(self, index: int) -> dict:
        """summary.json as a reader should see it: a dead 'running' point is 'stale'.

        A stale summary keeps ``recorded_status`` ('running') and says why (``stale``).
        """
        summary = self.recorded_summary(index)
        reason = stale_reason(summary)
        if reason:
            summary.update(status="stale", recorded_status="running", stale=reason)
        return summary

    def status(self, index: int) -> str:
        return self.summary(index).get("status", "pending")

    def write_summary(self, index: int, **fields: Any) -> None:
        if not self.records:
            return
        with self._lock:
            summary = self.recorded_summary(index)
            summary.update(fields)
            summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(self.point_dir(index) / "summary.json", summary)

    def heartbeat(self, index: int, **fields: Any) -> None:
        """Record that the point's process is alive (host, pid, time, and any ``fields``)."""
        self.write_summary(index, host=HOST, pid=os.getpid(), heartbeat=time.strftime("%Y-%m-%dT%H:%M:%S"),
                           heartbeat_unix=round(time.time(), 1), **fields)

    def statuses(self, manifest: Optional[dict] = None) -> list[tuple[int, str, str]]:
        """(index, id, status) of every grid point in the manifest.

        A point counts by its own record: a summary naming another id than the manifest's
        is 'pending' for this grid.
        """
        manifest = manifest or self.manifest() or {"points": []}
        out = []
        for p in manifest["points"]:
            summary = self.summary(p["index"])
            status = summary.get("status", "pending")
            if summary.get("id") not in (None, p["id"]):
                status = "pending"
            out.append((p["index"], p["id"], status))
        return out

    def lock(self, index: int) -> PointLock:
        """The point's advisory lock (use as a context manager; PointLockedError if held)."""
        return PointLock(self.point_dir(index) / ".lock")

    # ---------------------------------------------------------- checkpoints
    def checkpoint_candidates(self, index: int) -> list[Path]:
        """Every checkpoint file of a point, last.ckpt first (links resolved, each file once)."""
        d = self.point_dir(index)
        seen, out = set(), []
        files = sorted((d / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", p.name))
        for p in [*files, *sorted(d.glob("hpc_ckpt_*.ckpt"))]:
            try:
                real = p.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if real.is_file() and real not in seen:
                seen.add(real)
                out.append(p)
        return out

    def resume_checkpoint(self, index: int) -> Optional[Path]:
        """The newest checkpoint file of a point by modification time (see ``checkpoint_candidates``)."""
        candidates = self.checkpoint_candidates(index)
        return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
