"""What the console shows: quiet filters for noise, the progress mode, point descriptions.

Imports only the standard library (``main.py --status`` and ``--help`` stay fast).
"""

from __future__ import annotations

import sys
from typing import Any

# Messages of Lightning, torch and W&B that say nothing about the run (warnings: message regex).
_QUIET_WARNINGS = (
    r"The `srun` command is available on your system but is not used",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"Checkpoint directory .* exists and is not empty",  # a resume or --extend of a point: expected
)
# Lightning's info logs dropped by a filter on its loggers (message prefix).
_QUIET_LOGS = ("💡 Tip: For seamless cloud logging",)
_QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                  "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropMessages:
    """logging filter: drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def filter(self, record: Any) -> bool:
        """False for a record to drop (its message starts with one of the prefixes)."""
        try:
            return not str(record.getMessage()).startswith(self.prefixes)
        except Exception:  # noqa: BLE001 - a malformed record is shown, not dropped
            return True


def quiet_console() -> None:
    """Drop the specific console messages that say nothing about a run (idempotent).

    Lightning's litlogger tip, its `srun` hint, the short-epoch ``log_every_n_steps``
    notice and torch's ``LeafSpec`` deprecation; every other warning is shown as before.
    (W&B's "anonymous setting" warning is avoided where the logger is made; the model
    summary is off unless ``enable_model_summary=True``.)
    """
    import logging
    import warnings

    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _QUIET_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in lg.filters):
            lg.addFilter(_DropMessages(_QUIET_LOGS))


def progress_mode(trainer_cfg: dict) -> str:
    """'bar' (Lightning's progress bar) or 'lines' (one line per epoch, for logs).

    ``MTL_PROGRESS=lines`` (the cluster job templates) or ``=bar`` decides; otherwise
    'lines' when stdout is not a terminal or the progress bar is switched off.
    """
    import os

    env = os.environ.get("MTL_PROGRESS", "").strip().lower()
    if env in ("lines", "bar"):
        return env
    if not trainer_cfg.get("enable_progress_bar", True):
        return "lines"
    try:
        return "bar" if sys.stdout.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def describe_point(values: dict) -> str:
    """``'width=8, seed=1'``: a grid point's varying values (plot titles, console lines)."""
    return ", ".join(f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in values.items())


def os_error(err: OSError) -> str:
    """``'No space left on device [errno 28]'``: an OSError in one line, for a console message."""
    return f"{err.strerror or err}" + (f" [errno {err.errno}]" if err.errno else "")
