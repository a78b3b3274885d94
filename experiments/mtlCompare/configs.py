# mtlCompare: sum vs PCGrad vs MGDA vs uncertainty weighting on a small compositeSine
# (two tasks share one abcMLP, muP, width 64, depth 3, Adam), 3 seeds each: a 12-point grid.
#   task_0 learns output 0 from x in [-2, 0]; task_1 outputs 1..6 from x in [-2, 2].
# Every 4 optimizer steps the task-gradient diagnostics (norms per task and layer, cosine
# of the two task gradients, the method's task weights) are recorded; their epoch means
# are the diagnostics/... columns of metrics.csv and in W&B.
#
# Launch:   .venv/bin/python main.py --experiment mtlCompare --wandb disabled
#           .venv/bin/python main.py --collect <TAG>      (seeds aggregated: mean ± std per method)
# Expect:   12 points of ~10-20 s each on 2 CPU cores.

config_function = {"d_in": 1, "d_out": 7, "f_true": "compositeSine"}

configs_architecture = {
    "architecture_key": "abcMLP",
    "width": 64,
    "depth": 3,
    "parametrization": "muP",
    "hidden_layer_activation": "ReLU",
    "d_in": config_function["d_in"],  # shared with configs_data: one grid axis
    "d_out": config_function["d_out"],
}

configs_data = {
    "n_train": {"task_0": 128, "task_1": 256},
    "noise_scale": 0.2,
    "x_min_train": -2,
    "x_max_train": {"task_0": 0, "task_1": 2},
    "n_val": 256,
    "x_min_val": -2,
    "x_max_val": 2,
    "n_test": 0,
    **config_function,
}

configs_training = {
    "batch_size": 64,
    "criterion": {"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [1, 2, 3, 4, 5, 6])},
    "update_rule": "Adam",
    "learning_rate": 0.01,
    "regularization_alpha": 0,
    "mtl_method": ["sum", "pcgrad", "mgda", "uw"],
    "diagnostics_every_n_steps": 4,
}

configs_custom = {"seed": [1, 2, 3], "logging_epoch_interval": 20, "checkpoint_every_n_epochs": 10}

configs_trainer = {"max_epochs": 20, "enable_progress_bar": False, "enable_model_summary": False}
