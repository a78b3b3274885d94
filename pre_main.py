"""Print the number of grid points of an experiment (for sizing a job array).

    python pre_main.py [--experiment NAME] [--config_trainer KEY:VALUE ...] [section.key=value ...]
                                                                              -> prints e.g. 3

Prints the count on stdout and exits 0 (the original returned it as the exit code,
which breaks above 255). The whole grid is validated first, so a job array is never
submitted for a grid that cannot run: an unknown experiment or an invalid config gives
the error on stderr and exit code 2. Overrides (``training.learning_rate=0.01``,
``architecture.width=[64,128]``) are those of main.py, which the job scripts pass on.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", default=[], metavar="section.key=value",
                        help="config overrides as for main.py (e.g. training.learning_rate=0.01)")
    parser.add_argument("--experiment", default="compositeSine")
    parser.add_argument("--config_trainer", nargs="*", default=[], metavar="KEY:VALUE",
                        help="Trainer settings as for main.py (validated with the grid)")
    args = parser.parse_intermixed_args(argv)
    from core_code.util.config_extractions import ConfigError
    from experiments import make_manager
    from main import UsageError, parse_trainer_args, split_overrides

    try:
        split_overrides(args)
        manager = make_manager(args.experiment, parse_trainer_args(args.config_trainer), overrides=args.overrides)
        size = len(manager.validate())
    except (ValueError, ConfigError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
