"""Trainer settings (the Lightning layer): defaults and strict key checking.

Every ``pytorch_lightning.Trainer`` argument is accepted (read from its signature);
keys Lightning 2.x removed get a message saying what replaced them.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytorch_lightning as pl

from core_code.util.config_extractions import complete_config

TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "strategy": "auto",
    "devices": "auto",
    "deterministic": False,
    "precision": 32,
    "enable_progress_bar": True,
    "max_epochs": 2,
    # No max_time default: a time limit must be asked for (a run it stops is 'time_limit', not 'done').
}

# Keys of Lightning 1.x that 2.x removed, with what replaced them.
TRAINER_REMOVED_KEYS: dict[str, str] = {
    "gpus": "use accelerator='gpu' and devices=N",
    "auto_select_gpus": "use devices='auto' (or an explicit list of GPU ids)",
    "auto_lr_find": "use lightning.pytorch.tuner.Tuner(trainer).lr_find(model)",
    "auto_scale_batch_size": "use lightning.pytorch.tuner.Tuner(trainer).scale_batch_size(model)",
    "tpu_cores": "use accelerator='tpu' and devices=N",
    "ipus": "use accelerator='ipu' and devices=N",
    "num_processes": "use accelerator='cpu' and devices=N",
    "amp_backend": "use precision='16-mixed' (native AMP is the only backend)",
    "resume_from_checkpoint": "pass ckpt_path to Trainer.fit",
    "replace_sampler_ddp": "renamed use_distributed_sampler",
    "track_grad_norm": "log grad norms in a callback (lightning.pytorch.utilities.grad_norm)",
    "move_metrics_to_cpu": "removed in Lightning 2.0",
    "multiple_trainloader_mode": "use lightning.pytorch.utilities.CombinedLoader",
}


@functools.lru_cache(maxsize=1)
def trainer_keys() -> frozenset[str]:
    """Every argument of ``pytorch_lightning.Trainer`` (read from its signature)."""
    params = inspect.signature(pl.Trainer.__init__).parameters
    return frozenset(k for k in params if k != "self")


def init_config_trainer(**config: Any) -> dict:
    """Complete a Trainer configuration: every ``pl.Trainer`` argument is accepted."""
    accepted = trainer_keys() - set(TRAINER_DEFAULTS)
    out = complete_config(
        config, TRAINER_DEFAULTS, "trainer config", accepted=accepted, renamed=TRAINER_REMOVED_KEYS
    )
    out.update({k: v for k, v in config.items() if k in accepted})
    return out


__all__ = ["TRAINER_DEFAULTS", "TRAINER_REMOVED_KEYS", "trainer_keys", "init_config_trainer"]
