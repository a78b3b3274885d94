"""mtlCompare's LoggingCallback: the shared one of ``experiments.logging``, unchanged.

To log more for this experiment, subclass it here and override ``extra_metrics``.
"""

from __future__ import annotations

from experiments.logging import LoggingCallback

__all__ = ["LoggingCallback"]
