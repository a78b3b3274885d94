"""Default configurations of every component, and the functions that complete them.

Each ``init_config_<component>(**config)`` returns the completed dict: the user's
values, defaults for every missing key, and a ConfigError naming any key the
component does not accept (with the closest valid keys). Defaults follow
``shared/spec/FUNCTIONS.md`` ("Reference defaults").

To add a configuration item: add it with its default to the component's dict below
(and to ARCHITECTURE_DEFAULTS for an architecture); it is then accepted, validated
and filled in everywhere.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from core_code.model_lib.parametrizations import PARAMETRIZATIONS, abc_preset
from core_code.util.config_extractions import ConfigError, complete_config

# ----------------------------------------------------------------------------- data
DATA_DEFAULTS: dict[str, Any] = {
    "d_in": None,
    "d_out": None,
    "f_true": None,
    "f_true_callback": None,
    "seed": None,  # None: draws from the global RNG (so seed_everything governs them)
    "n_train": 256,
    "x_min_train": -1,
    "x_max_train": 1,
    "noise_scale": 0.1,
    "n_val": 128,
    "x_min_val": -1,
    "x_max_val": 1,
    "n_test": 128,
    "x_min_test": -1,
    "x_max_test": 1,
    "data_generators_train": "equi",
    "data_generators_val": "equi",
    "data_generators_test": "equi",
}

# ------------------------------------------------------------------------- training
TRAINING_DEFAULTS: dict[str, Any] = {
    "criterion": "MSELoss",
    "criterion_callback": None,
    "shuffle": True,
    "batch_size": 64,
    "num_workers": 1,
    "regularization_alpha": 0.1,
    "regularization_ord": 2,
    "update_rule": "Adam",
    "update_rule_callback": None,
    "learning_rate": 1e-4,
    "batching_strategy": "data_deterministic",
    "batching_callback": None,
    "loss_aggregation": "sum",
    # Optimizer steps per Lightning step: 1, K, or 'epoch' (see README "Performance").
    "steps_per_chunk": 1,
}

# -------------------------------------------------------------------------- trainer
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "strategy": "auto",
    "devices": "auto",
    "deterministic": False,
    "precision": 32,
    "enable_progress_bar": True,
    "max_epochs": 2,
    "max_time": "00:08:00:00",
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

# ---------------------------------------------------------------------- architectures
_COMMON_ARCH = {"architecture_key": None, "d_in": None, "d_out": None}

ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "abcMLP": {
        **_COMMON_ARCH,
        "width": 1024,
        "depth": 6,
        # 'muP' | 'NTK' | 'SP' fills list_a/list_b/c for any depth; explicit values override.
        # With the default muP and depth 6: list_a [-0.5, 0, 0, 0, 0, 0.5], list_b [0.5]*6, c 0.
        "parametrization": "muP",
        "list_a": None,
        "list_b": None,
        "c": None,
        "bias_tune": 1.0,
        "hidden_layer_activation": "ReLU",
        "hidden_layer_activation_callback": None,
    },
    "Stack": {
        **_COMMON_ARCH,
        "bottleneck_width": 64,
        "variable_width": 128,
        "depth": 1,
        "skip_conn": False,
        "linear_skip_conn": False,
        "linear_skip_conn_width": 32,
        "bias_tune": 1.0,
        "hidden_bottleneck_activation": "Identity",
        "hidden_bottleneck_activation_callback": None,
        "hidden_layer_activation": "ReLU",
        "hidden_layer_activation_callback": None,
    },
    "abcStack": {
        **_COMMON_ARCH,
        "bottleneck_width": 64,
        "variable_width": 128,
        "depth": 1,
        "list_a": [-0.5, 0.5],  # two entries per stack block
        "list_b": [0.5, 0.5],
        "c": 0,
        "bias_tune": 1.0,
        "hidden_bottleneck_activation": "Identity",
        "hidden_bottleneck_activation_callback": None,
        "hidden_layer_activation": "ReLU",
        "hidden_layer_activation_callback": None,
    },
}


def architecture_keys() -> set[str]:
    """Every key some registered architecture accepts (one grid may switch architectures)."""
    return set().union(*ARCHITECTURE_DEFAULTS.values())


def init_config_data(**config: Any) -> dict:
    """Complete a data configuration (see DATA_DEFAULTS)."""
    return complete_config(config, DATA_DEFAULTS, "data config")


def init_config_training(**config: Any) -> dict:
    """Complete a training configuration (see TRAINING_DEFAULTS)."""
    return complete_config(config, TRAINING_DEFAULTS, "training config")


@functools.lru_cache(maxsize=1)
def trainer_keys() -> frozenset[str]:
    """Every argument of ``pytorch_lightning.Trainer`` (read from its signature)."""
    import pytorch_lightning as pl

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


def init_config_architecture(architecture_key: str | None = None, **config: Any) -> dict:
    """Complete an architecture configuration for ``architecture_key``.

    Keys of other registered architectures are accepted (and dropped), since one grid
    may switch architectures; keys no architecture knows are refused.
    """
    if architecture_key not in ARCHITECTURE_DEFAULTS:
        raise ConfigError(
            f"architecture config key 'architecture_key' is {architecture_key!r}; "
            f"known architectures: {', '.join(sorted(ARCHITECTURE_DEFAULTS))}"
        )
    defaults = ARCHITECTURE_DEFAULTS[architecture_key]
    out = complete_config(
        config, defaults, f"architecture config ({architecture_key})", accepted=architecture_keys()
    )
    out["architecture_key"] = architecture_key
    return out


def init_config_abcMLP(**config: Any) -> dict:
    """Complete an abcMLP configuration (see ARCHITECTURE_DEFAULTS['abcMLP']).

    list_a/list_b/c left at None are filled from ``parametrization`` for the
    configured depth; explicit values override the preset.
    """
    config.pop("architecture_key", None)
    out = init_config_architecture("abcMLP", **config)
    missing = [k for k in ("list_a", "list_b", "c") if out[k] is None]
    if missing:
        if out["parametrization"] is None:
            raise ConfigError(
                f"architecture config (abcMLP): {', '.join(missing)} not given and "
                "'parametrization' is None; set 'parametrization' to one of "
                f"{', '.join(sorted(PARAMETRIZATIONS))} or give the values explicitly"
            )
        try:
            preset = abc_preset(out["parametrization"], out["depth"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in missing:
            out[key] = preset[key]
    return out


def init_config_Stack(**config: Any) -> dict:
    """Complete a Stack configuration (see ARCHITECTURE_DEFAULTS['Stack'])."""
    config.pop("architecture_key", None)
    return init_config_architecture("Stack", **config)


def init_config_abcStack(**config: Any) -> dict:
    """Complete an abcStack configuration (see ARCHITECTURE_DEFAULTS['abcStack'])."""
    config.pop("architecture_key", None)
    return init_config_architecture("abcStack", **config)


__all__ = [
    "ConfigError",
    "DATA_DEFAULTS",
    "TRAINING_DEFAULTS",
    "TRAINER_DEFAULTS",
    "ARCHITECTURE_DEFAULTS",
    "init_config_data",
    "init_config_training",
    "init_config_trainer",
    "init_config_architecture",
    "init_config_abcMLP",
    "init_config_Stack",
    "init_config_abcStack",
]
