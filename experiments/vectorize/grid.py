"""``main.py --vectorize``: run the selected points of a grid in ensembles and write every
member out as its own run (folders, summaries, checkpoints, W&B runs, stops)."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.vectorize.ensemble import MemberPlots, MemberResult, heartbeat_callback, train_group
from experiments.vectorize.grouping import describe_groups, group_points


def _is_fresh(run_dir: Any, i: int, cfg: dict) -> bool:
    """May grid point ``i`` (0-based) train in an ensemble: never started, or started by this
    point id, unfinished and without a checkpoint (e.g. stopped in an ensemble's first epoch)."""
    from experiments.run_state import FINISHED, point_id

    if run_dir.checkpoint_candidates(i + 1):
        return False
    summary = run_dir.summary(i + 1)
    recorded = summary.get("id")
    return recorded is None or (recorded == point_id(cfg) and summary.get("status") not in FINISHED)


def _member_logging(manager: Any, cfg: dict, pdir: Path, index: int) -> tuple[Optional[MemberPlots], str]:
    """(figures, LoggingCallback state key) of a point, from the callbacks its single run would get."""
    from experiments.console import describe_point
    from experiments.logging import LoggingCallback

    log_cb = next((cb for cb in manager.make_callbacks(cfg, pdir) if isinstance(cb, LoggingCallback)), None)
    if log_cb is None:
        return None, "LoggingCallback"
    values = getattr(manager, "_values", None) or []
    values = values[index - 1] if len(values) >= index else {}
    suffix = log_cb.title_suffix
    if values and suffix is None:
        suffix = describe_point(values)  # the varying values in every plot title, as the single run
    spec = None
    if log_cb.plot and log_cb.out_dir is not None:
        spec = MemberPlots(log_cb.out_dir, log_cb.logging_epoch_interval, suffix)
    return spec, log_cb.state_key


def _member_wandb(manager: Any, run_dir: Any, index: int, cfg: dict, run_config: dict,
                  rows: Sequence[tuple[int, dict]]) -> Optional[str]:
    """Member ``index``'s W&B run (the single run's project, name, id, group, tags and config),
    with ``rows`` logged, finished; the offline run's folder or None (online, disabled)."""
    from experiments.logging.wandb_session import finish_wandb, log_history
    from experiments.run_control import wandb_offline_dir

    logger = manager.wandb_logger(run_dir, index, cfg, run_config)  # as the single run makes it
    if logger is None:
        return None
    try:
        log_history(logger, rows)
        return wandb_offline_dir(logger)
    finally:
        finish_wandb()


def _wandb_members(manager: Any, run_dir: Any, entries: Sequence[tuple[int, dict, dict, MemberResult]]) -> None:
    """Each member's W&B run; a W&B error is reported and skips that member's run only."""
    for i, cfg, run_config, r in entries:
        where = f"[{run_dir.tag}] config {i + 1}"
        try:
            offline = _member_wandb(manager, run_dir, i + 1, cfg, run_config, r.log_rows)
        except Exception as err:  # noqa: BLE001 - the results on disk stand; only W&B is missing
            print(f"{where}: W&B run not written ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        if offline is not None:
            print(f"{where}: W&B offline run in {offline}; upload it with: wandb sync {offline}")


def _record_stop(manager: Any, run_dir: Any, members: Sequence[int], configs: Sequence[dict],
                 run_configs: Sequence[dict], results: Optional[list[MemberResult]],
                 stop: BaseException) -> Optional[int]:
    """Write out the members of a stopped ensemble (as the single path records a stopped point);
    the signal number, or None for a ``SystemExit`` no signal caused (members 'failed')."""
    import signal

    from experiments.checkpoints import INTERRUPT_CHECKPOINT
    from experiments.logging.metrics import MetricsCSV
    from experiments.run_control import Interrupted, record_status
    from experiments.run_state import point_id, write_json

    signals = getattr(manager, "_signals", None)
    signum = getattr(signals, "received", None) or (stop.signum if isinstance(stop, Interrupted) else None)
    if signum is None and isinstance(stop, KeyboardInterrupt):
        signum = signal.SIGINT
    name = signal.Signals(signum).name if signum is not None else None
    results = results or [None] * len(members)
    done = []
    for i, run_config, r in zip(members, run_configs, results):
        where = f"[{run_dir.tag}] config {i + 1}"
        pdir = run_dir.point_dir(i + 1)
        ckpt = None
        try:
            if r is not None:
                if r.history:
                    MetricsCSV(pdir / "metrics.csv").rewrite(r.history)
                if r.baselines:
                    write_json(pdir / "baselines.json", r.baselines)
                if r.status == "interrupted":
                    ckpt = r.save_checkpoint(pdir / "checkpoints" / INTERRUPT_CHECKPOINT)
        except Exception as err:  # noqa: BLE001 - the status below still says what happened
            print(f"{where}: cannot write its files ({type(err).__name__}: {err})", file=sys.stderr)
        if r is not None and r.status == "diverged":  # finished before the stop, as its single run
            record_status(run_dir, i + 1, "diverged", id=point_id(configs[i]), **r.summary_fields())
        elif name is None:
            record_status(run_dir, i + 1, "failed", error=f"SystemExit({getattr(stop, 'code', None)!r})")
        else:
            record_status(run_dir, i + 1, "interrupted", signal=name, checkpoint=str(ckpt) if ckpt else None,
                          error=f"stopped by {name}" + ("" if ckpt else " (no checkpoint: the ensemble had not "
                                                        "finished an epoch; a rerun starts it afresh)"))
            print(f"{where}: interrupted by {name}" + (f"; checkpoint {ckpt}" if ckpt else ""), file=sys.stderr)
        if r is not None:
            done.append((i, configs[i], run_config, r))
    _wandb_members(manager, run_dir, done)
    return signum if name is not None else None


def _keep(store: list, results: list[MemberResult], stop: BaseException) -> None:
    """``train_group``'s ``on_interrupt``: keep the stopped members' results for ``_record_stop``."""
    store.append(results)


def run_vectorized(manager: Any, run_dir: Any, configs: Sequence[dict], indices: Sequence[int]) -> dict[int, str]:
    """``main.py --vectorize``: run the 0-based ``indices`` of the resolved ``configs`` in groups.

    Returns ``{1-based index: status}``. A point trains in an ensemble only when it is new
    (or was started by an ensemble that stopped before its first epoch ended): finished
    points, points with checkpoints to resume from, points another process holds and
    points that cannot share a group go through ``manager.run_point`` (the ordinary path,
    with its skip, resume, lock and refusal rules). Every member of an ensemble is written
    out as its own run would be: config.json, heartbeats while it trains, metrics.csv,
    baselines.json, its fit figures (plots/, drawn when its LoggingCallback would draw
    them), its W&B run (the single run's project, name, id, group, tags and config, with
    the same rows on the same step axis; offline unless logged in, none when disabled),
    summary.json (``vectorized: true``) and checkpoints/last.ckpt (interrupted.ckpt after
    ``max_time``), which resumes as a single run. A failing ensemble marks each of its
    members failed, with the traceback.

    A signal (SIGTERM, SIGINT; SIGUSR1 outside Slurm) or Ctrl-C stops the grid as in the
    ordinary path: each member of the running ensemble gets ``checkpoints/interrupted.ckpt``
    at the ensemble's last kept epoch boundary (it resumes as a single run), metrics.csv and
    baselines.json so far, its W&B run so far and status 'interrupted' with the signal;
    later points are not started and ``Interrupted`` is raised (exit code 128 + signal).
    """
    import traceback

    from experiments.logging.metrics import MetricsCSV
    from experiments.run_control import Heartbeat, Interrupted
    from experiments.run_state import PointLockedError, jsonable, point_id, write_json, write_text_atomic

    results: dict[int, str] = {}
    fresh = [i for i in indices if _is_fresh(run_dir, i, configs[i])]
    sub = [configs[i] for i in fresh]
    sub_groups = group_points(sub) if sub else []
    groups = [[fresh[j] for j in g] for g in sub_groups]
    if groups:
        print(f"[{run_dir.tag}] vectorized groups:\n" + describe_groups(sub, sub_groups))
    alone = [i for i in indices if i not in fresh] + [g[0] for g in groups if len(g) == 1]
    tc = manager.trainer_config()
    for group in (g for g in groups if len(g) > 1):
        locks, members, beats = [], [], []
        for i in group:
            try:
                locks.append(run_dir.lock(i + 1).acquire())
                members.append(i)
            except PointLockedError:
                alone.append(i)  # the ordinary path refuses it with its message
        try:
            if len(members) < 2:
                alone.extend(members)
                continue
            run_configs = [manager.run_config(configs[i], i + 1, run_dir.tag) for i in members]
            for i, rc in zip(members, run_configs):
                write_json(run_dir.point_dir(i + 1) / "config.json", rc)
                run_dir.write_summary(i + 1, status="running", id=point_id(configs[i]), vectorized=True,
                                      error=None, signal=None, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      started_unix=round(time.time(), 1), max_epochs=tc.get("max_epochs"),
                                      max_steps=tc.get("max_steps", -1))
                beats.append(Heartbeat(run_dir, i + 1))
                beats[-1].start()
            print(f"[{run_dir.tag}] configs {', '.join(str(i + 1) for i in members)}: training as one ensemble")
            stopped: list[list[MemberResult]] = []  # the members' results when a stop ends the ensemble
            try:
                logging = [_member_logging(manager, configs[i], run_dir.point_dir(i + 1), i + 1) for i in members]
                out = train_group(manager, [configs[i] for i in members], tc,
                                  hyper_parameters=[jsonable(rc) for rc in run_configs],
                                  logging_state_key=logging[0][1],
                                  callbacks=[heartbeat_callback(run_dir, [i + 1 for i in members])],
                                  plots=[spec for spec, _ in logging],
                                  on_interrupt=functools.partial(_keep, stopped))
            except Exception:  # noqa: BLE001 - recorded for every member; the grid goes on
                tb = traceback.format_exc()
                for i in members:
                    write_text_atomic(run_dir.point_dir(i + 1) / "error.txt", tb)
                    run_dir.write_summary(i + 1, status="failed", error=tb.strip().splitlines()[-1])
                    results[i + 1] = "failed"
                print(f"[{run_dir.tag}] ensemble of configs {members} FAILED: {tb.strip().splitlines()[-1]}",
                      file=sys.stderr)
                continue
            except BaseException as stop:  # a signal (Interrupted), Ctrl-C, SystemExit
                for beat in beats:
                    beat.stop()
                signum = _record_stop(manager, run_dir, members, configs, run_configs,
                                      stopped[-1] if stopped else None, stop)
                if signum is None:
                    raise
                rest = [j + 1 for j in indices if j + 1 not in results and j not in members]
                if rest:
                    print(f"[{run_dir.tag}] not started: config {', '.join(map(str, rest))} (still pending; "
                          "rerun the TAG or resubmit with --missing)", file=sys.stderr)
                raise Interrupted(signum) from None
            for beat in beats:
                beat.stop()
            for i, rc, r in zip(members, run_configs, out):
                pdir = run_dir.point_dir(i + 1)
                MetricsCSV(pdir / "metrics.csv").rewrite(r.history)
                write_json(pdir / "baselines.json", r.baselines)
                fields = r.summary_fields()
                if r.status == "time_limit":  # as the single path: the stop's checkpoint, named in the summary
                    from experiments.checkpoints import INTERRUPT_CHECKPOINT

                    path = r.save_checkpoint(pdir / "checkpoints" / INTERRUPT_CHECKPOINT)
                    fields["checkpoint"] = str(path) if path else None
                else:
                    r.save_checkpoint(pdir / "checkpoints" / "last.ckpt")
                if r.status == "failed":
                    fields["error"] = r.stop
                _wandb_members(manager, run_dir, [(i, configs[i], rc, r)])
                run_dir.write_summary(i + 1, status=r.status, id=point_id(configs[i]), **fields)
                results[i + 1] = r.status
                print(f"[{run_dir.tag}] config {i + 1}: {r.status} after {r.epochs} epochs ({r.stop}) -> {pdir}")
        finally:
            for beat in beats:
                beat.stop()
            for lock in locks:
                lock.release()
    for i in sorted(set(alone)):
        results[i + 1] = manager.run_point(run_dir, i, configs[i])
    return dict(sorted(results.items()))
