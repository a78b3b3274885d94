"""Metric names and the per-run metrics CSV: the one place both are defined.

Names: ``metric_name('train', 0) == 'train/loss_task_0'``, ``metric_name('val', 1) ==
'validation/loss_task_1'`` (Lightning's split name first, mapped by ``SPLIT_PREFIX``,
then the task); the grid summary's columns ``final_val_loss_task_<t>`` and
``best_val_loss_task_<t>`` come from ``final_column`` / ``best_column``.

Beside them: ``in_domain_metric_name('val', 0) == 'validation/loss_in_domain_task_0'``
(the loss over the rows whose x lie inside the task's training box) and, once per run,
``baseline_name(0) == 'baseline/validation_loss_task_0'`` /
``baseline_name(0, in_domain=True) == 'baseline/validation_loss_in_domain_task_0'``
(the validation loss of the constant predictor "mean of the task's training targets").

The CSV (``CSV_NAME`` in a grid point's folder) has an ``epoch`` column and one column
per metric. ``MetricsCSV`` appends a row per epoch and rewrites the whole file
(atomically) when a new column appears or a resumed run drops the epochs it redoes;
``read_metrics`` reads it back and skips a torn line left by a run killed mid-write.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.run_state import write_text_atomic

log = logging.getLogger(__name__)

#: Lightning's split names, in the order an epoch runs them.
SPLITS = ("train", "val", "test")
#: Lightning's split names -> metric prefixes.
SPLIT_PREFIX = {"train": "train", "val": "validation", "test": "test"}
#: File name of the metrics CSV in a grid point's folder.
CSV_NAME = "metrics.csv"
EPOCH = "epoch"


def metric_name(split: str, task: int) -> str:
    """``'train/loss_task_0'``, ``'validation/loss_task_1'``, ... (split: one of ``SPLITS``)."""
    return f"{SPLIT_PREFIX[split]}/loss_task_{task}"


def metric_task(name: str, split: str) -> Optional[int]:
    """The task of a ``metric_name(split, task)`` name; None for any other name."""
    m = re.fullmatch(rf"{re.escape(SPLIT_PREFIX[split])}/loss_task_(\d+)", name)
    return int(m.group(1)) if m else None


def in_domain_metric_name(split: str, task: int) -> str:
    """``'validation/loss_in_domain_task_0'``, ...: the loss over the task's in-domain rows."""
    return f"{SPLIT_PREFIX[split]}/loss_in_domain_task_{task}"


def in_domain_metric_task(name: str, split: str) -> Optional[int]:
    """The task of an ``in_domain_metric_name(split, task)`` name; None for any other name."""
    m = re.fullmatch(rf"{re.escape(SPLIT_PREFIX[split])}/loss_in_domain_task_(\d+)", name)
    return int(m.group(1)) if m else None


#: Prefix of the once-per-run baseline metrics.
BASELINE_PREFIX = "baseline"
#: File (in a grid point's folder) holding the baselines, written at the start of training.
BASELINES_NAME = "baselines.json"


def baseline_name(task: int, in_domain: bool = False) -> str:
    """``'baseline/validation_loss_task_0'`` or ``'baseline/validation_loss_in_domain_task_0'``."""
    return f"{BASELINE_PREFIX}/validation_loss{'_in_domain' if in_domain else ''}_task_{task}"


def final_column(task: int) -> str:
    """Grid-summary column of a task's last validation loss."""
    return f"final_val_loss_task_{task}"


def best_column(task: int) -> str:
    """Grid-summary column of a task's lowest finite validation loss."""
    return f"best_val_loss_task_{task}"


def final_in_domain_column(task: int) -> str:
    """Grid-summary column of a task's last in-domain validation loss."""
    return f"final_val_loss_in_domain_task_{task}"


def best_in_domain_column(task: int) -> str:
    """Grid-summary column of a task's lowest finite in-domain validation loss."""
    return f"best_val_loss_in_domain_task_{task}"


def baseline_column(task: int, in_domain: bool = False) -> str:
    """Grid-summary column of a task's baseline (mean-predictor) validation loss."""
    return f"baseline_val_loss{'_in_domain' if in_domain else ''}_task_{task}"


def ratio_column(task: int, in_domain: bool = False) -> str:
    """Grid-summary column of final validation loss / baseline (< 1: better than the mean predictor)."""
    return f"final_over_baseline{'_in_domain' if in_domain else ''}_task_{task}"


def final_column_task(column: str) -> Optional[int]:
    """The task of a ``final_column(task)`` name; None for any other column."""
    m = re.fullmatch(r"final_val_loss_task_(\d+)", column)
    return int(m.group(1)) if m else None


def read_metrics(path: Path | str) -> list[dict[str, float]]:
    """Rows of a metrics CSV (``epoch`` int, other columns float); [] if the file is missing.

    Empty cells are left out. A line that does not parse (a torn last line of a run
    killed mid-write) is skipped: its epoch is redone on resume. An unreadable file
    gives [] and a warning.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict[str, float]] = []
    try:
        with path.open(newline="") as fh:
            for raw in csv.DictReader(fh):
                try:
                    row: dict[str, Any] = {EPOCH: int(raw[EPOCH])}
                    row.update({k: float(v) for k, v in raw.items() if k and k != EPOCH and v not in ("", None)})
                except (KeyError, TypeError, ValueError):
                    continue
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        log.warning("cannot read %s (%s: %s); treating it as empty", path, type(err).__name__, err)
        return []
    return rows


class MetricsCSV:
    """The metrics CSV of one run: appended per epoch, rewritten when the columns change.

    Columns: ``epoch``, then every metric name in sorted order.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._keys: Optional[list[str]] = None

    def resume(self, start_epoch: int, history: Sequence[dict], write: bool = True) -> list[dict]:
        """The rows of the epochs before ``start_epoch``: the file's, else ``history``'s.

        Later epochs are redone by the resumed run; with ``write`` (the main process) the
        file is cut to the kept rows.
        """
        rows = read_metrics(self.path) if self.path.exists() else list(history)
        kept = [r for r in rows if r[EPOCH] < start_epoch]
        self._keys = None
        if write:
            if len(rows) > len(kept):
                log.info("%s: dropping %d row(s) of epochs >= %d (they are redone)",
                         self.path, len(rows) - len(kept), start_epoch)
            if kept or self.path.exists():
                self.rewrite(kept)
        return kept

    def write_row(self, row: dict, history: Sequence[dict]) -> None:
        """Append ``row``; the first row or a new column rewrites header + ``history``.

        ``history`` holds every row of the run, ``row`` included.
        """
        if self._keys is None or not set(row) <= set(self._keys) or not self.path.exists():
            self.rewrite(history)
            return
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._keys, restval="").writerow(row)
            fh.flush()

    def rewrite(self, rows: Sequence[dict]) -> None:
        """Header and ``rows``, written atomically (readers never see half a file)."""
        keys = set().union(*(r.keys() for r in rows)) - {EPOCH}
        self._keys = [EPOCH] + sorted(keys)
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=self._keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, buf.getvalue())
