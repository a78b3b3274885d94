"""Print the number of grid points of an experiment (for sizing a job array).

    python pre_main.py [--experiment NAME]      -> prints e.g. 3

Prints the count on stdout and exits 0 (the original returned it as the exit code,
which breaks above 255). The whole grid is validated first, so a job array is never
submitted for a grid that cannot run: an unknown experiment or an invalid config gives
the error on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="compositeSine")
    args = parser.parse_args(argv)
    from core_code.util.config_extractions import ConfigError
    from experiments import make_manager

    try:
        size = len(make_manager(args.experiment).validate())
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
