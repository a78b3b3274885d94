"""The configuration reference (docs/configuration.md), generated from the defaults dicts.

    python -m experiments.config_reference > docs/configuration.md

Every key any component accepts is listed with its default (read from the code) and a
meaning (below). ``tests/test_docs.py`` fails when a key has no meaning here or when
docs/configuration.md is not what this module generates, so the reference cannot fall
behind the code.
"""

from __future__ import annotations

import sys
from typing import Any

# key -> meaning, per section. Architecture keys are shared by the architectures that accept them.
MEANINGS: dict[str, dict[str, str]] = {
    "data": {
        "d_in": "input dimension (the same for every task; one network serves them all)",
        "d_out": "output dimension (the same for every task)",
        "f_true": "target function: a name of docs/functions.md, or 'custom' with f_true_callback",
        "f_true_callback": "with f_true 'custom': a callable mapping x (n, d_in) to (n,) or (n, d_out)",
        "seed": "int: fixed draws per split and task; None: the global RNG, set by custom seed",
        "n_train": "training samples per task (0: the task has no training rows)",
        "x_min_train": "lower bound of the training inputs (a number, or one per input dim)",
        "x_max_train": "upper bound of the training inputs",
        "noise_scale": "standard deviation of the Gaussian noise on training targets",
        "n_val": "validation samples per task (targets noise-free)",
        "x_min_val": "lower bound of the validation inputs",
        "x_max_val": "upper bound of the validation inputs",
        "n_test": "test samples per task (0: no test run)",
        "x_min_test": "lower bound of the test inputs",
        "x_max_test": "upper bound of the test inputs",
        "data_generators_train": "input generator(s) of the training split: equi, uniform, periodic, noise",
        "data_generators_val": "input generator(s) of the validation split",
        "data_generators_test": "input generator(s) of the test split",
        "data_source": "'function' (a target function), 'files' (your data, see README), 'custom' + callback",
        "data_source_callback": "with data_source 'custom': config -> an object with CreateData's interface",
        "data_files": "with 'files': {'train': path, 'val': path, 'test': path}; a path may be {'task_0': ...}",
        "data_columns": "with .csv files: {'x': [columns], 'y': [columns], 'task': column}",
        "normalize": "with 'files': None, 'x', 'y' or 'xy': standardize with the training mean/std",
        "val_fraction": "with 'files' and no val file: share of each task's training rows held out",
    },
    "architecture": {
        "architecture_key": "abcMLP, Stack, abcStack, or a registered architecture",
        "d_in": "input dimension (default: the data's)",
        "d_out": "output dimension (default: the data's)",
        "width": "abcMLP: hidden width n of every layer",
        "depth": "abcMLP: number of linear layers; Stack/abcStack: number of blocks",
        "parametrization": "muP, NTK or SP: fills the exponent lists (docs/parametrizations.md)",
        "list_a": "forward multiplier exponents, one per layer (n^-a)",
        "list_b": "initialization exponents, one per layer (std n^-b)",
        "c": "one learning-rate exponent for every layer (lr n^-c); None: from the preset and optimizer",
        "list_c": "learning-rate exponents, one per layer; None: from the preset and optimizer",
        "list_a_bias": "bias multiplier exponents per layer; None: from the preset",
        "list_b_bias": "bias initialization exponents per layer; None: from the preset",
        "list_c_bias": "bias learning-rate exponents per layer; None: from the preset and optimizer",
        "bias_tune": "scale of the biases (effective bias at init: N(0, 1) * bias_tune in abc models)",
        "hidden_layer_activation": "ReLU, Identity, Tanh, GELU, Sigmoid, or 'custom' with the callback",
        "hidden_layer_activation_callback": "with 'custom': a callable, nn.Module class or instance",
        "bottleneck_width": "Stack/abcStack: width between blocks",
        "variable_width": "Stack/abcStack: hidden width inside a block (n for abcStack)",
        "skip_conn": "Stack: concatenate the block input to the hidden activation",
        "linear_skip_conn": "Stack: concatenate a linear map of the block input too",
        "linear_skip_conn_width": "Stack: width of that linear map",
        "hidden_bottleneck_activation": "Stack/abcStack: activation between blocks",
        "hidden_bottleneck_activation_callback": "with 'custom': a callable, nn.Module class or instance",
    },
    "training": {
        "criterion": "MSELoss, ('dimred_MSELoss', dims), or 'custom' with criterion_callback",
        "criterion_callback": "with 'custom': (pred, y) -> scalar loss",
        "shuffle": "shuffle the training batches every epoch",
        "batch_size": "rows per batch (over all tasks)",
        "regularization_alpha": "alpha of alpha * sum ||p||_ord^2 added to each task's loss (>= 0)",
        "regularization_ord": "the norm order of the regularization",
        "update_rule": "SGD, Adam, AdamW, or 'custom' with update_rule_callback",
        "update_rule_callback": "with 'custom': (param_groups, lr) -> torch.optim.Optimizer",
        "learning_rate": "base learning rate (scaled per layer by n^-c in abc models)",
        "batching_strategy": "data_deterministic, data_stochastic, or 'custom' with batching_callback",
        "batching_callback": "with 'custom': (data, config, seed, rank, world_size) -> iterable of batches",
        "mtl_method": "how task losses/gradients become the update: sum, mean, fixed, uw, dwa, rlw, gradnorm, "
                      "pcgrad, mgda, cagrad, imtl_g, custom; options as (name, {option: value})",
        "mtl_method_callback": "with 'custom': the method (see core_code/mtl)",
        "diagnostics_every_n_steps": "None (off) or N: task-gradient norms and cosines every N steps",
        "steps_per_chunk": "optimizer steps per Lightning step: 'auto' (up to 32 when nothing observes single steps), 1, K or 'epoch' (README, Performance)",
    },
    "custom": {
        "seed": "seed_everything seed of the run (model init, batching, data with data seed None)",
        "workers": "seed_everything's workers flag",
        "logging_epoch_interval": "fit plots every this many epochs (and at the end)",
        "checkpoint_every_n_epochs": "write last.ckpt every this many epochs; None: off",
        "keep_checkpoints": "after a point is done: 'all', 'last' or 'none' checkpoints kept",
    },
    "trainer": {
        "accelerator": "cpu, gpu, auto, ... (any pytorch_lightning.Trainer argument is accepted)",
        "strategy": "auto, ddp, ...",
        "devices": "auto, N, or a list of device ids",
        "deterministic": "torch deterministic algorithms",
        "precision": "32, '16-mixed', 'bf16-mixed', ...",
        "enable_progress_bar": "the progress bar (cluster jobs print one line per epoch instead)",
        "max_epochs": "epochs per run (a run that reaches it is 'done')",
    },
}


def sections() -> list[tuple[str, str, dict[str, Any]]]:
    """(section, title, {key: default}) of every component, in the order of the reference."""
    from core_code.create_model import ARCHITECTURE_DEFAULTS
    from core_code.util.default_config import DATA_DEFAULTS, TRAINING_DEFAULTS
    from core_code.util.trainer_config import TRAINER_DEFAULTS
    from experiments.util import BasicManager

    out = [("data", "Data (`configs_data`)", DATA_DEFAULTS)]
    for name, defaults in ARCHITECTURE_DEFAULTS.items():
        out.append(("architecture", f"Architecture `{name}` (`configs_architecture`)", defaults))
    out += [("training", "Training (`configs_training`)", TRAINING_DEFAULTS),
            ("custom", "Custom (`configs_custom`, the Manager's `CUSTOM_DEFAULTS`)", BasicManager.CUSTOM_DEFAULTS),
            ("trainer", "Trainer (`configs_trainer`, `--config_trainer`; defaults set by the framework)",
             TRAINER_DEFAULTS)]
    return out


def missing_meanings() -> list[str]:
    """``section.key`` of every accepted key without a meaning in MEANINGS."""
    return [f"{section}.{key}" for section, _, defaults in sections() for key in defaults
            if key not in MEANINGS[section]]


def stale_meanings() -> list[str]:
    """``section.key`` of every meaning whose key no component accepts any more."""
    keys = {(section, key) for section, _, defaults in sections() for key in defaults}
    return [f"{s}.{k}" for s, meanings in MEANINGS.items() for k in meanings if (s, k) not in keys]


def _cell(value: Any) -> str:
    return f"`{value!r}`".replace("|", "\\|")


def render() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m experiments.config_reference > docs/configuration.md` from the",
        "defaults in the code; `tests/test_docs.py` checks that it is current. Any value may be",
        "task-specific (`{'task_0': ..., 'task_1': ...}`) and any value may be a grid axis (a",
        "list; wrap a list-valued parameter in another list). Unknown keys are refused.",
        "",
    ]
    for section, title, defaults in sections():
        lines += [f"## {title}", "", "| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{key}` | {_cell(value)} | {MEANINGS[section].get(key, '')} |"
                  for key, value in defaults.items()]
        lines.append("")
    lines += ["The Trainer accepts every other `pytorch_lightning.Trainer` argument too (e.g. `max_steps`,",
              "`max_time`, `limit_train_batches`, `num_nodes`); keys Lightning 2.x removed are refused with",
              "what replaced them.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
