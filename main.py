"""Run an experiment's grid locally, or one grid point as a cluster job-array element.

    python main.py                                   # every point of compositeSine
    python main.py --experiment tinyTest --num_config 2 --experimentbatch_name TAG
    python main.py --config_trainer max_epochs:500 max_time:00:07:30:00
    python main.py --experiment tinyTest training.learning_rate=0.01 architecture.width=[64,128]
    python main.py --list                            # the grid, validated: index and varying values
    python main.py --print_config 2                  # the resolved configuration of point 2 (JSON)
    python main.py --experimentbatch_name TAG --extend trainer.max_epochs=500   # train done points longer
    python main.py --status TAG                      # status, epochs, losses, liveness of runs/TAG
    python main.py --missing TAG                     # 1-based indices not finished: 2,3
    python main.py --collect TAG [TAG ...]           # summary.csv, comparison plots, table

Overrides ``section.key=value`` (sections data, architecture, training, custom, trainer)
change any config key of configs.py; values are Python literals (a list is a grid axis),
else strings. See experiments/overrides.py.

Exit codes:
    0    every grid point run (or skipped) is finished: done or diverged
    1    a grid point failed, was refused (its lock is held by another process, or its
         folder holds another configuration's results), or its status could not be written
    2    bad arguments or configuration (nothing was run; runs/TAG not created)
    3    no failure, but a grid point stopped unfinished (time_limit): rerun the TAG
    130  SIGINT (Ctrl-C), 143 SIGTERM (scancel, a time limit), 138 SIGUSR1 (outside
         Slurm): the running point was checkpointed and recorded 'interrupted'; the
         grid's later points were not started (128 + the signal number)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any, Optional, Sequence


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


# THE TAG rule (the same as bash_files/lib.sh mtl_validate_tag): one folder name of
# letters, digits, '.', '_' and '-', not starting with '.' or '-', at most 100 characters.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
TAG_RULE = "letters, digits, '.', '_' and '-', not starting with '.' or '-', at most 100 characters"

# Statuses of main's results and the exit code each one asks for (the highest wins).
EXIT_FOR_STATUS = {"failed": 1, "locked": 1, "refused": 1, "time_limit": 3}


def validate_tag(tag: str, option: str) -> str:
    """``tag`` if it follows the TAG rule, else UsageError."""
    if not TAG_RE.fullmatch(tag):
        raise UsageError(f"{option} {tag!r} is not a valid TAG: a TAG is one folder name of {TAG_RULE}")
    return tag


def check_wandb(mode: Optional[str]) -> None:
    """UsageError for a bad --wandb value, 'online' without a login, or a bad WANDB_MODE."""
    import os

    from experiments.logging.wandb_session import WANDB_MODES, resolve_wandb_mode

    env = os.environ.get("WANDB_MODE")
    if mode is None and env is not None and env.strip().lower() not in (*WANDB_MODES, "dryrun", "run", ""):
        raise UsageError(f"environment variable WANDB_MODE is {env!r}; allowed: {', '.join(WANDB_MODES)} "
                         "(or dryrun, run), or unset it")
    try:
        resolve_wandb_mode(mode)
    except ValueError as err:
        raise UsageError(f"--wandb: {err}") from None


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, else the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_trainer_args(items: Sequence[str]) -> dict:
    """``key:value`` items -> dict; the value may itself contain ':' (max_time:00:08:00:00)."""
    out = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise UsageError(f"--config_trainer expects key:value items, got {item!r}")
        out[key] = parse_value(value)
    return out


DEFAULT_EXPERIMENT = "compositeSine"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", default=[], metavar="section.key=value",
                   help="override a config key, e.g. training.learning_rate=0.01 architecture.width=[64,128] "
                        "(sections: data, architecture, training, custom, trainer)")
    p.add_argument("--experiment", default=None,
                   help=f"experiment name (default {DEFAULT_EXPERIMENT}; --status/--missing/--collect: the TAG's)")
    p.add_argument("--num_config", default=None, metavar="I|A-B|I,J,...",
                   help="1-based grid points to run: I (a job-array index), a range A-B, or a list 1,4,9 "
                        "(ranges allowed inside: 1-3,7); default: all points")
    p.add_argument("--experimentbatch_name", default=None,
                   help="TAG: results go to runs/TAG/ (default: <experiment>_<date>_<time>)")
    p.add_argument("--config_trainer", nargs="*", default=[], metavar="KEY:VALUE",
                   help="pytorch_lightning.Trainer settings, e.g. max_epochs:10 accelerator:cpu")
    p.add_argument("--wandb", default=None, metavar="{online,offline,disabled}",
                   help="W&B mode (default: online if logged in, else offline)")
    p.add_argument("--runs_dir", default="runs", help="root folder of the results (default runs/)")
    p.add_argument("--vectorize", action="store_true",
                   help="train the selected new points that share tensor shapes together as one ensemble "
                        "(each written out as its own run)")
    p.add_argument("--extend", action="store_true",
                   help="continue finished (done) points from their last checkpoint when only the trainer's "
                        "max_epochs/max_steps grew (e.g. trainer.max_epochs=500)")
    actions = p.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true", help="validate the grid, print it and exit")
    actions.add_argument("--print_config", metavar="N", type=int, default=None,
                         help="print the resolved configuration of grid point N (JSON, as config.json) and exit")
    actions.add_argument("--status", metavar="TAG", help="print the status of runs/TAG and exit")
    actions.add_argument("--missing", metavar="TAG", help="print the 1-based indices of runs/TAG not finished (done or diverged)")
    actions.add_argument("--collect", metavar="TAG", nargs="+",
                         help="write runs/TAG/summary.csv and comparison plots, print the table "
                              "(several TAGs: one table and one set of plots)")
    return p


def make_manager(args: argparse.Namespace, trainer_overrides: dict):
    """The experiment's Manager with its configs (configs.py + --config_trainer + overrides)."""
    from experiments import ExperimentError
    from experiments import make_manager as experiment_manager

    try:
        return experiment_manager(args.experiment or DEFAULT_EXPERIMENT, trainer_overrides,
                                  overrides=args.overrides, runs_dir=args.runs_dir, wandb_mode=args.wandb)
    except ExperimentError as err:  # unknown experiment, broken configs.py
        raise UsageError(str(err)) from None


def split_overrides(args: argparse.Namespace) -> None:
    """Items of --config_trainer written as overrides (``a.b=c``) belong to the overrides
    (``--config_trainer max_epochs:5 training.learning_rate=0.1``)."""
    from experiments.overrides import is_override

    moved = [a for a in args.config_trainer if is_override(a)]
    args.config_trainer = [a for a in args.config_trainer if not is_override(a)]
    args.overrides = [*moved, *args.overrides]


def list_grid(manager) -> str:
    """The grid, validated: one line per point with the values that vary, in columns."""
    from experiments.grid import align, format_value

    manager.validate()  # the same checks as a run: --list never shows a grid main.py refuses
    keys = manager.varying_keys()
    points = manager.grid()
    lines = [f"{len(points)} grid points of {manager.experiment}" +
             (f"; varying: {', '.join(keys)}" if keys else "; nothing varies")]
    rows = []
    for i, point in enumerate(points, start=1):
        merged = {k: v for part in point.values() for k, v in part.items()}
        rows.append([str(i), *(format_value(merged[k]) for k in keys)])
    lines += align(["index", *keys], rows)
    return "\n".join(lines)


def parse_num_config(text: str) -> list[int]:
    """'3' -> [3], '2-5' -> [2, 3, 4, 5], '1,4,9' -> [1, 4, 9], '1-3,7' -> [1, 2, 3, 7] (1-based, in the
    order given, each once); UsageError otherwise."""
    out: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"--num_config {text!r}: give a 1-based grid point I, a range A-B or a list "
                             "I,J,... (e.g. 3, 2-5 or 1,4,9)")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise UsageError(f"--num_config {text!r}: the range A-B needs A <= B")
        out += [i for i in range(first, last + 1) if i not in out]
    return out


def manifest_experiment(args: argparse.Namespace, tag: str) -> None:
    """--status/--missing/--collect TAG without --experiment: the TAG's own experiment (its manifest)."""
    if args.experiment is not None:
        return
    from experiments.run_state import RunDir

    manifest = RunDir(args.runs_dir, tag).manifest()
    if manifest is None:
        raise UsageError(f"no readable manifest under {args.runs_dir}/{tag}: is the TAG right (see "
                         f"{args.runs_dir}/)? Give --experiment to read the points' records without one")
    args.experiment = manifest.get("experiment") or DEFAULT_EXPERIMENT
    args.from_manifest = True


def check_paths(args: argparse.Namespace) -> None:
    """The TAGs and --runs_dir, before anything is read or created (UsageError)."""
    from pathlib import Path

    for option in ("experimentbatch_name", "status", "missing", "collect"):
        value = getattr(args, option)
        for tag in value if isinstance(value, list) else [value]:
            if tag is not None:
                validate_tag(tag, f"--{option}")
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        raise UsageError(f"--runs_dir {args.runs_dir!r} is a file, not a folder: give the folder that holds "
                         "(or will hold) the TAG folders")
    if args.experimentbatch_name and (runs / args.experimentbatch_name).exists() \
            and not (runs / args.experimentbatch_name).is_dir():
        raise UsageError(f"{runs / args.experimentbatch_name} is a file, not a TAG folder: use another TAG")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    args.from_manifest = False
    split_overrides(args)
    try:
        check_paths(args)
        for tag in (args.status, args.missing):  # --collect reads the TAG folder alone
            if tag is not None and not args.overrides:
                manifest_experiment(args, tag)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.collect:
        from experiments.analysis import collect

        return collect.main([*args.collect, "--runs_dir", args.runs_dir])
    from core_code.util.config_extractions import ConfigError
    from core_code.util.memory import keep_freed_memory
    from experiments.console import quiet_console
    from experiments.run_state import GridChangedError, count_statuses
    from experiments.util import Interrupted

    try:
        run_action = not (args.list or args.status or args.missing or args.print_config is not None)
        if run_action or args.wandb is not None:
            check_wandb(args.wandb)
        manager = make_manager(args, parse_trainer_args(args.config_trainer))
        if args.status:
            print(manager.status_table(args.status))
            return 0
        if args.missing:
            # Without --experiment/overrides: the TAG's own grid (its manifest); else checked against this grid.
            print(",".join(str(i) for i in manager.missing(args.missing, check_grid=not args.from_manifest)))
            return 0
        if args.list:
            print(list_grid(manager))
            return 0
        size = manager.grid_size()
        indices = None
        if args.num_config is not None:
            wanted = parse_num_config(args.num_config)
            bad = [i for i in wanted if not 1 <= i <= size]
            if bad:
                raise UsageError(f"--num_config {args.num_config} is out of range: the grid of "
                                 f"{manager.experiment} has {size} points (1..{size})")
            indices = [i - 1 for i in wanted]
        if args.print_config is not None:
            if not 1 <= args.print_config <= size:
                raise UsageError(f"--print_config {args.print_config} is out of range: the grid of "
                                 f"{manager.experiment} has {size} points (1..{size})")
            print(manager.config_json(args.print_config, tag=args.experimentbatch_name))
            return 0
        tag = args.experimentbatch_name or f"{manager.experiment}_{time.strftime('%Y%m%d_%H%M%S')}"
        quiet_console()
        keep_freed_memory()
        results = manager.run(tag, indices, extend=args.extend, vectorize=args.vectorize)
    except (UsageError, ConfigError, GridChangedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"error: {stop}; the running point was checkpointed and recorded 'interrupted'; rerun the TAG "
              f"to resume (exit {stop.exit_code})", file=sys.stderr)
        return stop.exit_code
    except OSError as err:  # e.g. runs/ read-only or full: the manifest cannot be written
        print(f"error: cannot write {err.filename or args.runs_dir}: {err.strerror or err}", file=sys.stderr)
        return 1
    counts = count_statuses(results.values())
    print(f"[{tag}] " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; results in {args.runs_dir}/{tag}/")
    code = max((EXIT_FOR_STATUS.get(s, 0) for s in results.values()), default=0)
    for status in sorted({s for s in results.values() if s in EXIT_FOR_STATUS}):
        points = [i for i, s in results.items() if s == status]
        print(f"[{tag}] {status} grid points: {', '.join(map(str, points))}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
