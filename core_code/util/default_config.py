"""Default data and training configurations, and the functions that complete them.

Each ``init_config_<component>(**config)`` returns the completed dict: the user's
values, defaults for every missing key, and a ConfigError naming any key the
component does not accept (with the closest valid keys). Defaults follow the original
design's reference defaults.

The other components keep their defaults beside their code: each architecture in its
module (``core_code/model_lib/<name>.py``, ``DEFAULTS``, registered in
``core_code.create_model``), the Trainer in ``core_code/util/trainer_config.py``.

To add a configuration item: add it with its default to the component's dict; it is
then accepted, validated and filled in everywhere.
"""

from __future__ import annotations

from typing import Any

from core_code.util.config_extractions import complete_config

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
    # Where the data comes from (core_code.create_data.make_data): 'function' (the keys
    # above), 'files' (data_files, see core_code/data_files.py) or 'custom' (+ callback).
    "data_source": "function",
    "data_source_callback": None,  # 'custom': callable(config_data) -> object like CreateData
    "data_files": None,  # 'files': {'train': path | {'task_0': path, ...}, 'val': ..., 'test': ...}
    "data_columns": None,  # .csv files: {'x': [names], 'y': [names], 'task': name (default 'task')}
    "normalize": None,  # 'files': None, 'x', 'y' or 'xy' (train-split mean/std)
    "val_fraction": None,  # 'files' without a val file: share of each task's train rows held out
}

# ------------------------------------------------------------------------- training
TRAINING_DEFAULTS: dict[str, Any] = {
    "criterion": "MSELoss",
    "criterion_callback": None,
    "shuffle": True,
    "batch_size": 64,
    "regularization_alpha": 0.1,
    "regularization_ord": 2,
    "update_rule": "Adam",
    "update_rule_callback": None,
    "learning_rate": 1e-4,
    "batching_strategy": "data_deterministic",
    "batching_callback": None,
    # How task losses/gradients become an update: a name or (name, {option: value}); see core_code/mtl.
    "mtl_method": "sum",
    "mtl_method_callback": None,
    # Task-gradient diagnostics every N optimizer steps (None: off, no cost); see core_code/mtl/diagnostics.py.
    "diagnostics_every_n_steps": None,
    # Optimizer steps per Lightning step: 'auto', 1, K, or 'epoch' (see README "Performance").
    "steps_per_chunk": "auto",
}

# Keys the original accepted that have no meaning here, with the reason.
TRAINING_REMOVED_KEYS: dict[str, str] = {
    "num_workers": "batches are cut from in-memory tensors in the main process; there are no loader workers",
    "loss_aggregation": "replaced by 'mtl_method' (the same values 'sum', 'mean', and more methods)",
}


def init_config_data(**config: Any) -> dict:
    """Complete a data configuration (see DATA_DEFAULTS)."""
    return complete_config(config, DATA_DEFAULTS, "data config")


def init_config_training(**config: Any) -> dict:
    """Complete a training configuration (see TRAINING_DEFAULTS)."""
    return complete_config(config, TRAINING_DEFAULTS, "training config", renamed=TRAINING_REMOVED_KEYS)

