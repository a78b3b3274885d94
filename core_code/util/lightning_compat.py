"""Every use of a private Lightning attribute, gathered in one place.

The framework needs six things Lightning 2.x does not expose publicly:

- ``LightningOptimizer._optimizer``: the wrapped ``torch.optim.Optimizer``, stepped
  directly on the fast path (see ``core_code.lightning_multitask._StepMachinery``);
- ``LightningOptimizer._on_before_step`` / ``_on_after_step``: the callbacks Lightning's
  manual-optimization loop uses to count an optimizer step (``global_step``,
  ``max_steps``) and to run the profiler around it;
- ``Strategy._lightning_optimizers``: the wrapper list, whose identity tells when a
  Trainer rebuilt its optimizers (so the cached step machinery is stale);
- ``fit_loop.epoch_loop._batches_that_stepped``: the step axis Lightning's own logging
  uses, so metrics logged directly to the loggers line up with ``self.log``'s;
- ``WandbLogger._wandb_init``: the keyword arguments the logger passes to ``wandb.init``,
  from which an unset ``anonymous`` is dropped (W&B warns about it on every run);
- ``ModelCheckpoint._every_n_train_steps`` / ``_train_time_interval``: whether a checkpoint
  callback acts per training step (then ``steps_per_chunk: 'auto'`` keeps one step per
  Lightning step);
- ``Trainer._checkpoint_connector.dump_checkpoint``: the checkpoint dict in memory (an
  ensemble keeps its epoch-end state this way without writing a file each epoch).

``tests/test_lightning_compat.py`` runs a real Trainer and fails loudly, naming the
attribute, if a Lightning upgrade removes or changes any of them. Every function here
falls back to a safe public behaviour when the attribute is missing.
"""

from __future__ import annotations

from typing import Any, Optional

# (object description, attribute) pairs the framework relies on; the compat test checks each.
PRIVATE_ATTRIBUTES = (
    ("LightningOptimizer", "_optimizer"),
    ("LightningOptimizer", "_on_before_step"),
    ("LightningOptimizer", "_on_after_step"),
    ("Strategy", "_lightning_optimizers"),
    ("fit_loop.epoch_loop", "_batches_that_stepped"),
    ("WandbLogger", "_wandb_init"),
    ("ModelCheckpoint", "_every_n_train_steps"),
    ("ModelCheckpoint", "_train_time_interval"),
    ("Trainer", "_checkpoint_connector.dump_checkpoint"),
)


def checkpoint_every_n_train_steps(callback: Any) -> bool:
    """True when a ``ModelCheckpoint`` saves every N training steps or every time interval
    (also when it no longer says: then it may, and chunked steps would change it)."""
    if not all(hasattr(callback, a) for a in ("_every_n_train_steps", "_train_time_interval")):
        return True
    return bool(callback._every_n_train_steps) or callback._train_time_interval is not None


def dump_checkpoint(trainer: Any) -> Optional[dict]:
    """The dict ``trainer.save_checkpoint`` would write (full state), in memory; None when
    Lightning no longer offers it (then write a file and load it)."""
    dump = getattr(getattr(trainer, "_checkpoint_connector", None), "dump_checkpoint", None)
    return None if dump is None else dump(weights_only=False)


def raw_optimizer(wrapped: Any) -> Any:
    """The ``torch.optim.Optimizer`` inside a ``LightningOptimizer`` (itself if unwrapped)."""
    return getattr(wrapped, "_optimizer", wrapped)


def can_count_steps(wrapped: Any) -> bool:
    """True if ``count_step`` can wrap a direct ``optimizer.step()`` for this wrapper."""
    return all(hasattr(wrapped, a) for a in ("_on_before_step", "_on_after_step", "_optimizer"))


def count_step(wrapped: Any, step: Any) -> None:
    """Run ``step()`` between Lightning's step-progress callbacks (``global_step`` counts it)."""
    wrapped._on_before_step()
    step()
    wrapped._on_after_step()


def optimizers_key(trainer: Any) -> Optional[Any]:
    """An object whose identity changes when the Trainer rebuilds its optimizer wrappers."""
    return getattr(getattr(trainer, "strategy", None), "_lightning_optimizers", None)


def batches_that_stepped(trainer: Any) -> int:
    """The step axis of Lightning's own logging (falls back to ``global_step``)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


def drop_unset_wandb_init(logger: Any, *keys: str) -> None:
    """Remove ``keys`` left at None from the arguments a WandbLogger passes to ``wandb.init``."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict):
        for key in keys:
            if key in init and init[key] is None:
                del init[key]
