"""How a grid run stops: signals, the heartbeat, the run-state callback, the stop's status.

A signal is recorded and the running point checkpointed (``interrupted.ckpt``) before the
grid stops with ``Interrupted``; a fit that returns is classified by ``stop_status``.
Lightning is imported only when a point trains.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from experiments.checkpoints import INTERRUPT_CHECKPOINT
from experiments.console import os_error
from experiments.run_state import HEARTBEAT_EVERY_S, RunDir

if TYPE_CHECKING:
    from experiments.util import BasicManager


class Interrupted(BaseException):
    """A signal stopped the grid (``signum``); the process should exit with ``exit_code``."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 SIGINT, 143 SIGTERM, 138 SIGUSR1), as a shell reports it."""
        return 128 + self.signum


def process_rank() -> int:
    """The global rank of this process in a multi-process launch (srun, torchrun, Lightning's
    subprocess launcher, MPI); 0 when started alone."""
    import os

    for var in ("RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "LOCAL_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            if var == "SLURM_PROCID" and os.environ.get("SLURM_NTASKS", "1") in ("", "1"):
                continue  # one task: SLURM_PROCID is 0 anyway
            return int(value) + (int(os.environ.get("NODE_RANK", "0") or 0) if var == "LOCAL_RANK" else 0)
    return 0


def _on_slurm() -> bool:
    """True when Lightning's SLURMEnvironment takes this process (it then owns SIGUSR1: requeue)."""
    try:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        return SLURMEnvironment.detect()
    except Exception:  # noqa: BLE001 - no Lightning environment detection: assume Slurm, leave SIGUSR1 alone
        return True


class SignalRecorder:
    """Signal handlers of a grid run: record the signal, stop the running point cleanly.

    Inside ``Trainer.fit`` (``graceful``) the first signal only stops the run at the next
    batch boundary, so the checkpoint holds whole optimizer steps (a chunk of several steps
    is never cut in half): SIGTERM is left to Lightning (SIGTERMException), SIGINT (Ctrl-C)
    and SIGUSR1 are acted on by ``run_state_callback`` before the next batch. A second
    Ctrl-C raises KeyboardInterrupt at once. Outside fit, SIGINT raises KeyboardInterrupt
    and the others ``Interrupted`` at once. SIGUSR1 is handled only outside Slurm (on Slurm,
    Lightning's SLURMEnvironment registers it for checkpoint and requeue, and does so only
    when no other handler is installed). Handlers are installed only in the main thread and
    restored afterwards.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.graceful = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """Install the handlers (main thread only), remembering the ones they replace."""
        if threading.current_thread() is not threading.main_thread():
            return
        signums = [signal.SIGTERM, signal.SIGINT] + ([] if _on_slurm() else [signal.SIGUSR1])
        for s in signums:
            self._old[s] = signal.getsignal(s)
            signal.signal(s, self._handle)

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for s, handler in self._old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._old = {}

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
            print(f"received {signal.Signals(signum).name}: checkpointing and stopping", file=sys.stderr)
        if self.graceful and first:
            return  # the running Trainer stops at its next batch boundary
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise ``Interrupted`` if a signal came (e.g. after the last training batch)."""
        if self.received is not None:
            raise Interrupted(self.received)

    def pending_stop(self) -> Optional[int]:
        """A received signal that Lightning does not act on by itself (not SIGTERM)."""
        return self.received if self.received not in (None, signal.SIGTERM) else None


class Heartbeat:
    """Refreshes the point's heartbeat every ``HEARTBEAT_EVERY_S`` seconds in a daemon thread."""

    def __init__(self, run_dir: RunDir, index: int):
        self.run_dir, self.index = run_dir, index
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Beat once now, then every ``HEARTBEAT_EVERY_S`` seconds until ``stop``."""
        self._beat()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-config{self.index}", daemon=True)
        self._thread.start()

    def _beat(self, **fields: Any) -> None:
        try:
            self.run_dir.heartbeat(self.index, **fields)
        except OSError:
            pass  # a missed heartbeat is no reason to stop training

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            self._beat()

    def stop(self) -> None:
        """End the heartbeat thread (waits up to 10 s for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _pl_callback_base() -> type:
    """``pl.Callback``, imported only when a point trains."""
    import pytorch_lightning as pl

    return pl.Callback


class RunStateCallbackMixin:
    """Heartbeat per epoch, a checkpoint when a run stops early, per-run ``max_time``.

    ``takes_chunks``: its per-batch check (a pending signal) is as good once per chunk.
    """

    takes_chunks = True

    def __init__(self, manager: BasicManager, run_dir: RunDir, index: int, signals: SignalRecorder,
                 lines: bool = False):
        super().__init__()
        self.manager, self.run_dir, self.index, self.signals = manager, run_dir, index, signals
        self.lines = lines  # print one line per epoch (instead of a progress bar)
        self._t0 = time.monotonic()
        self._in_batch = False  # inside a training step (a chunk of optimizer steps)

    def _save(self, trainer: Any, why: str) -> None:
        path = self.run_dir.point_dir(self.index) / "checkpoints" / INTERRUPT_CHECKPOINT
        try:
            trainer.save_checkpoint(path)
            self.manager._last_interrupt_checkpoint = str(path)
        except Exception as err:  # noqa: BLE001 - reported in the status; the stop goes on
            print(f"[{self.run_dir.tag}] config {self.index}: cannot write checkpoint {path} ({why}): "
                  f"{type(err).__name__}: {err}", file=sys.stderr)

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        """Drop the Timer's elapsed time: max_time limits each run (process), not the total."""
        callbacks = checkpoint.get("callbacks")
        if isinstance(callbacks, dict):
            for key in [k for k in callbacks if str(k).startswith("Timer")]:
                callbacks.pop(key)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the epoch's clock (the time on its progress line)."""
        self._t0 = time.monotonic()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Heartbeat with the epoch's validation losses; in 'lines' mode, one progress line."""
        if not trainer.is_global_zero:
            return
        metrics = {}
        for k, v in trainer.callback_metrics.items():
            if k.startswith(("train/loss_task_", "validation/loss_task_")):
                try:
                    metrics[k] = float(v)
                except (TypeError, ValueError):
                    pass
        validation = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("validation/")}
        try:
            self.run_dir.heartbeat(self.index, heartbeat_epoch=trainer.current_epoch,
                                   epochs_done=trainer.current_epoch + 1,
                                   **({"last_validation": validation} if validation else {}))
        except OSError:
            pass
        if self.lines:
            def part(split: str) -> str:
                vals = sorted((int(k.rsplit("_", 1)[-1]), v) for k, v in metrics.items() if k.startswith(split + "/"))
                return f"{split} " + " ".join(f"{v:.4g}" for _, v in vals) if vals else ""

            top = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
            tasks = [str(t) for t in sorted({int(k.rsplit("_", 1)[-1]) for k in metrics})]
            parts = [p for p in (part("train"), part("validation")) if p]
            print(f"[{self.run_dir.tag}] config {self.index} epoch {trainer.current_epoch + 1}/{top}: "
                  + (" | ".join(parts) + f" (task {', '.join(tasks)})" if parts else "no losses")
                  + f" [{time.monotonic() - self._t0:.1f} s]", flush=True)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Stop before this batch for a signal Lightning does not act on (Ctrl-C; SIGUSR1 outside
        Slurm). Before the next batch, not after the last one: a stop after an epoch's last batch
        would skip that epoch's validation and epoch-end hooks (its metrics.csv row)."""
        signum = self.signals.pending_stop()
        if signum is not None:
            raise Interrupted(signum)
        self._in_batch = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._in_batch = False

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Checkpoint a run stopped by a signal, Ctrl-C or sys.exit (so a rerun resumes it).

        Not when it stopped inside a training step (a second Ctrl-C, an exit from a hook):
        the weights would hold part of the step's optimizer steps while the loop counts none,
        and a resume would repeat them; the rerun resumes from the last whole checkpoint.
        """
        if not isinstance(exception, (KeyboardInterrupt, SystemExit, Interrupted)):
            return
        if isinstance(exception, KeyboardInterrupt) and trainer.world_size > 1:
            return  # ranks stop at different points: a collective save could hang
        if self._in_batch:
            print(f"[{self.run_dir.tag}] config {self.index}: stopped inside a training step: no "
                  f"{INTERRUPT_CHECKPOINT} (a rerun resumes from the last whole checkpoint)", file=sys.stderr)
            return
        self._save(trainer, type(exception).__name__)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Checkpoint a run that reached max_time (so a rerun resumes it)."""
        if _timer_expired(trainer):
            self._save(trainer, "time limit")


def run_state_callback(manager: BasicManager, run_dir: RunDir, index: int, signals: SignalRecorder,
                       lines: bool = False) -> Any:
    """The run-state callback (a ``pl.Callback``; Lightning imported only when training)."""
    cls = type("RunStateCallback", (RunStateCallbackMixin, _pl_callback_base()), {})
    return cls(manager, run_dir, index, signals, lines)


def _timer_expired(trainer: Any) -> bool:
    """True when the trainer's Timer callback (``max_time``) has run out."""
    from pytorch_lightning.callbacks import Timer

    for cb in trainer.callbacks:
        if isinstance(cb, Timer):
            remaining = cb.time_remaining()
            if remaining is not None and remaining <= 0:
                return True
    return False


def stop_status(trainer: Any, diverged: Any) -> tuple[str, str]:
    """(status, why) of a fit that returned: diverged, time_limit, done, or failed.

    'done' only when the run reached its configured end: max_epochs, max_steps, or an
    EarlyStopping rule that fired.
    """
    from pytorch_lightning.callbacks import EarlyStopping

    if diverged:
        return "diverged", f"non-finite loss of task {diverged.get('task')} at epoch {diverged.get('epoch')}"
    if _timer_expired(trainer):
        return "time_limit", f"max_time reached at epoch {trainer.current_epoch}, step {trainer.global_step}"
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    if max_steps is not None and max_steps != -1 and trainer.global_step >= max_steps:
        return "done", f"max_steps={max_steps} reached"
    if max_epochs is not None and max_epochs != -1 and trainer.current_epoch >= max_epochs:
        return "done", f"max_epochs={max_epochs} reached"
    for cb in trainer.callbacks:
        if isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0:
            return "done", f"early stopping ({cb.monitor}) at epoch {cb.stopped_epoch}"
    return "failed", (f"training stopped at epoch {trainer.current_epoch}, step {trainer.global_step} before its "
                      f"configured end (max_epochs={max_epochs}, max_steps={max_steps}) by no known rule")


def wandb_offline_dir(logger: Any) -> Optional[str]:
    """The folder of an offline W&B run (what ``wandb sync`` takes), else None."""
    if logger is None:
        return None
    try:
        run = logger.experiment
        if not getattr(getattr(run, "settings", None), "_offline", False) and \
                getattr(getattr(run, "settings", None), "mode", "") not in ("offline", "dryrun"):
            return None
        folder = Path(run.dir).parent  # run.dir is <offline-run-...>/files
        try:
            return str(folder.relative_to(Path.cwd()))
        except ValueError:
            return str(folder)
    except Exception:  # noqa: BLE001 - only a hint on the console
        return None


def record_status(run_dir: RunDir, index: int, status: str, **fields: Any) -> bool:
    """Write the point's status; on an OS error (disk full, read-only) say so in one line."""
    try:
        run_dir.write_summary(index, status=status, **fields)
        return True
    except OSError as err:
        path = err.filename or run_dir.point_dir(index) / "summary.json"
        print(f"error: cannot record status '{status}' of config {index} in {path}: {os_error(err)}",
              file=sys.stderr)
        return False
