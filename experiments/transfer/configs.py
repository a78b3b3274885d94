# transfer: hyper-parameter transfer across width (Tensor Programs V, Yang et al. 2022).
#   One task learns sin(pi x) on [-2, 2] with an abcMLP (depth 3); the grid sweeps
#   learning_rate x width x seed. With muP the best learning rate should stay put as the
#   width grows; with SP it drifts (for Adam roughly as width^-1).
#
# Launch and analyse (any parametrization / optimizer, no file edits):
#   .venv/bin/python -m experiments.analysis.transfer --run --parametrization muP --update_rule Adam --tag T
#   .venv/bin/python -m experiments.analysis.transfer T      # re-analyse runs/T (plot + best-lr table)
# It is an ordinary grid: main.py --experiment transfer --list / --num_config i / --status,
# bash_files/run_remote.sh with EXPERIMENT=transfer, resumable like any grid.
# Seeds are repetitions: collect and the transfer analysis average over them.

configs_architecture = {
    "architecture_key": "abcMLP",
    "width": [32, 64, 128, 256],
    "depth": 3,
    "parametrization": "muP",
    "hidden_layer_activation": "ReLU",
}

configs_data = {
    "d_in": 1,
    "d_out": 1,
    "f_true": "sine",
    "n_train": 256,
    "x_min_train": -2,
    "x_max_train": 2,
    "noise_scale": 0.0,
    "n_val": 256,
    "x_min_val": -2,
    "x_max_val": 2,
    "n_test": 0,
    "seed": [0, 1],  # tied to configs_custom's seed: one axis, aggregated as repetitions
}

configs_training = {
    "batch_size": 32,
    "update_rule": "Adam",
    # powers of 2 (a factor 4 apart); the muP-Adam per-layer exponents make its base lr large
    "learning_rate": [2.0 ** k for k in range(-12, 5, 2)],
    "regularization_alpha": 0,
    "steps_per_chunk": "epoch",  # the Lightning loop overhead dominates at these sizes
}

configs_custom = {
    "seed": [0, 1],
    "logging_epoch_interval": 1000,  # no fit plots (the transfer plot is what matters)
    "checkpoint_every_n_epochs": 1000,
}

configs_trainer = {"max_epochs": 10, "enable_progress_bar": False, "enable_model_summary": False}
