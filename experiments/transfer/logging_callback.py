"""transfer's LoggingCallback: the shared one without fit plots (epoch losses, CSV, baselines only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from experiments.logging import LoggingCallback as _Shared


class LoggingCallback(_Shared):
    """``experiments.logging.LoggingCallback`` with ``plot=False`` by default."""

    def __init__(self, out_dir: Optional[Union[str, Path]], logging_epoch_interval: int = 50, plot: bool = False):
        super().__init__(out_dir, logging_epoch_interval=logging_epoch_interval, plot=plot)


__all__ = ["LoggingCallback"]
