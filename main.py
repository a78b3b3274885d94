"""Run an experiment's grid locally, or one grid point as a cluster job-array element.

    python main.py                                   # every point of compositeSine
    python main.py --experiment tinyTest --num_config 2 --experimentbatch_name TAG
    python main.py --config_trainer max_epochs:500 max_time:00:08:00:00
    python main.py --list                            # the grid: index and varying values
    python main.py --status TAG                      # status of every point of runs/TAG
    python main.py --missing TAG                     # 1-based indices not finished: 2,3
    python main.py --collect TAG                     # summary.csv, comparison plots, table

Exit codes: 0 success, 1 a grid point failed, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, Sequence


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="compositeSine", help="experiment name (default compositeSine)")
    p.add_argument("--num_config", type=int, default=None,
                   help="1-based grid point to run (a job-array index); default: all points")
    p.add_argument("--experimentbatch_name", default=None,
                   help="TAG: results go to runs/TAG/ (default: <experiment>_<date>_<time>)")
    p.add_argument("--config_trainer", nargs="*", default=[], metavar="KEY:VALUE",
                   help="pytorch_lightning.Trainer settings, e.g. max_epochs:10 accelerator:cpu")
    p.add_argument("--wandb", default=None, metavar="{online,offline,disabled}",
                   help="W&B mode (default: online if logged in, else offline)")
    p.add_argument("--runs_dir", default="runs", help="root folder of the results (default runs/)")
    actions = p.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true", help="print the grid and exit")
    actions.add_argument("--status", metavar="TAG", help="print the status of runs/TAG and exit")
    actions.add_argument("--missing", metavar="TAG", help="print the 1-based indices of runs/TAG not finished (done or diverged)")
    actions.add_argument("--collect", metavar="TAG",
                         help="write runs/TAG/summary.csv and comparison plots, print the table")
    return p


def make_manager(args: argparse.Namespace, trainer_overrides: dict):
    """The experiment's Manager with its configs (trainer defaults + command line)."""
    from experiments import make_manager as experiment_manager

    try:
        return experiment_manager(args.experiment, trainer_overrides, runs_dir=args.runs_dir,
                                  wandb_mode=args.wandb)
    except ValueError as err:  # unknown experiment
        raise UsageError(str(err)) from None


def list_grid(manager) -> str:
    """Index and the varying values of every grid point."""
    keys = manager.varying_keys()
    lines = [f"{manager.grid_size()} grid points of {manager.experiment}" +
             (f"; varying: {', '.join(keys)}" if keys else "")]
    for i, point in enumerate(manager.grid(), start=1):
        merged = {k: v for part in point.values() for k, v in part.items()}
        lines.append(f"{i:>4}  " + "  ".join(f"{k}={merged[k]!r}" for k in keys))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.collect:
        from experiments.analysis import collect

        return collect.main([args.collect, "--runs_dir", args.runs_dir])
    from core_code.util.config_extractions import ConfigError
    from experiments.run_state import GridChangedError, count_statuses

    try:
        if args.wandb is not None:
            from experiments.logging.wandb_session import resolve_wandb_mode

            try:
                resolve_wandb_mode(args.wandb)
            except ValueError as err:
                raise UsageError(f"--wandb: {err}") from None
        manager = make_manager(args, parse_trainer_args(args.config_trainer))
        if args.list:
            print(list_grid(manager))
            return 0
        if args.status:
            print(manager.status_table(args.status))
            return 0
        if args.missing:
            print(",".join(str(i) for i in manager.missing(args.missing)))
            return 0
        size = manager.grid_size()
        indices = None
        if args.num_config is not None:
            if not 1 <= args.num_config <= size:
                raise UsageError(f"--num_config {args.num_config} is out of range: the grid of "
                                 f"{args.experiment} has {size} points (1..{size})")
            indices = [args.num_config - 1]
        tag = args.experimentbatch_name or f"{args.experiment}_{time.strftime('%Y%m%d_%H%M%S')}"
        results = manager.run(tag, indices)
    except (UsageError, ConfigError, GridChangedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [i for i, s in results.items() if s == "failed"]
    counts = count_statuses(results.values())
    print(f"[{tag}] " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; results in {args.runs_dir}/{tag}/")
    if failed:
        print(f"[{tag}] failed grid points: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
