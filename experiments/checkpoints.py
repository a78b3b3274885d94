"""A grid point's checkpoints: which one a run resumes from, the final one, what is kept.

Plain functions of a ``RunDir`` and a 1-based point index; torch is imported only inside them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from experiments.console import os_error

if TYPE_CHECKING:
    from experiments.run_state import RunDir

# Name of the checkpoint written when a run stops before its end (signal, time limit).
INTERRUPT_CHECKPOINT = "interrupted.ckpt"
# Written when a point ends 'done' and its newest checkpoint is older (so --extend can continue it).
FINAL_CHECKPOINT = "final.ckpt"
# custom config 'keep_checkpoints': what is kept of a point's checkpoints once it is done.
KEEP_CHECKPOINTS = ("all", "last", "none")


def save_final_checkpoint(run_dir: RunDir, index: int, trainer: Any) -> None:
    """Write ``final.ckpt`` when no checkpoint holds the final step (so --extend can go on)."""
    step = trainer.global_step
    names = [p.resolve().name for p in run_dir.checkpoint_candidates(index)]
    if any(f"step={step}." in n or f"step={step}-" in n for n in names):
        return
    path = run_dir.point_dir(index) / "checkpoints" / FINAL_CHECKPOINT
    try:
        trainer.save_checkpoint(path, weights_only=False)
    except Exception as err:  # noqa: BLE001 - the point is done; only --extend needs it
        print(f"[{run_dir.tag}] config {index}: cannot write {path} ({type(err).__name__}: {err}); "
              "--extend will restart from the newest other checkpoint", file=sys.stderr)


def prune_checkpoints(run_dir: RunDir, index: int, keep: str) -> None:
    """Apply keep_checkpoints to a done point: 'all' keeps everything, 'last' the newest, 'none' none."""
    if keep == "all" or not run_dir.records:
        return
    files = run_dir.checkpoint_candidates(index)
    newest = None
    if keep == "last" and files:
        import torch

        def progress(p: Path) -> tuple:
            try:
                ck = torch.load(p, map_location="cpu", weights_only=False, mmap=True)
                return ck.get("global_step", -1), ck.get("epoch", -1), p.stat().st_mtime
            except Exception:  # noqa: BLE001 - an unreadable file is never the one kept
                return -2, -2, 0.0

        newest = max(files, key=progress).resolve()
    d = run_dir.point_dir(index)
    for p in [*(d / "checkpoints").glob("*.ckpt"), *d.glob("hpc_ckpt_*.ckpt")]:
        try:
            if newest is not None and p.resolve() == newest:
                continue
            p.unlink()
        except OSError as err:
            print(f"[{run_dir.tag}] config {index}: cannot delete {p}: {os_error(err)}", file=sys.stderr)


def choose_checkpoint(run_dir: RunDir, index: int, pid: str) -> tuple[Optional[str], list]:
    """The checkpoint to resume from: the one with the most progress that can be read.

    Every checkpoint file of the point is checked (mapped, not read). An unreadable one
    is renamed ``*.unreadable`` and the next one is tried; one that belongs to another
    point id is left alone. Returns (path or None, the LoggingCallback history it holds).
    """
    import torch

    usable = []
    for path in run_dir.checkpoint_candidates(index):
        try:
            # mmap: checks the file without reading the tensors (Lightning loads it next)
            ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            if not isinstance(ck, dict) or "state_dict" not in ck:
                raise ValueError("not a Lightning checkpoint")
        except Exception as err:  # noqa: BLE001 - any unreadable file: try the next one
            aside = path.with_name(path.name + ".unreadable")
            print(f"[{run_dir.tag}] config {index}: checkpoint {path} cannot be read ({type(err).__name__}: "
                  f"{err}); moved to {aside.name}, trying older checkpoints")
            try:  # a link (last.ckpt): keep the unreadable file itself under the link's name
                path.resolve(strict=True).rename(aside)
                if path.is_symlink():
                    path.unlink()
            except OSError:
                pass
            continue
        ck_id = (ck.get("hyper_parameters") or {}).get("id")
        if ck_id is not None and ck_id != pid:
            print(f"[{run_dir.tag}] config {index}: checkpoint {path} belongs to point id {ck_id}, not {pid}; "
                  "not used")
            continue
        history = next((s["history"] for s in (ck.get("callbacks") or {}).values()
                        if isinstance(s, dict) and isinstance(s.get("history"), list)), [])
        usable.append(((ck.get("global_step", -1), ck.get("epoch", -1), path.stat().st_mtime), path, history))
        del ck
    if not usable:
        if run_dir.checkpoint_candidates(index) or any(run_dir.point_dir(index).glob("**/*.unreadable")):
            print(f"[{run_dir.tag}] config {index}: no readable checkpoint; restarting this point from scratch")
        return None, []
    _, path, history = max(usable, key=lambda u: u[0])
    return str(path), history


def check_metrics_csv(pdir: Path, history: list) -> None:
    """Before a resume: a metrics.csv that is unreadable or lacks epochs the checkpoint has is
    moved aside, so the LoggingCallback rebuilds it from the checkpoint's history."""
    import csv

    path = pdir / "metrics.csv"
    if not path.exists() or not history:
        return
    problem = None
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            epochs = {int(float(r["epoch"])) for r in csv.DictReader(fh)}
        lost = sorted({int(r["epoch"]) for r in history if "epoch" in r} - epochs)
        if lost:
            problem = f"it lacks epochs {lost[:5]}{'...' if len(lost) > 5 else ''}"
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem:
        aside = path.with_name(f"metrics.csv.unreadable-{time.strftime('%Y%m%d_%H%M%S')}")
        path.replace(aside)
        print(f"{path} cannot be used ({problem}); moved to {aside.name} and rebuilt from the "
              f"checkpoint's history ({len(history)} epochs)")
