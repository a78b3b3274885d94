# tinyTest: the compositeSine problem at toy size: three grid points (widths 8, 16, 32)
# that each train in a few seconds on a CPU. Used by the test suite and the cluster
# end-to-end test, and a quick smoke test of an installation:
#   .venv/bin/python main.py --experiment tinyTest --wandb disabled
# Expect: 3 points done in under a minute, plots (last epoch) in runs/<TAG>/config<i>/plots/.

config_function = {"d_in": 1, "d_out": 7, "f_true": "compositeSine"}

configs_architecture = {
    "architecture_key": "abcMLP",
    "width": [8, 16, 32],
    "depth": 3,
    "parametrization": "muP",
    "d_in": config_function["d_in"],  # shared with configs_data: one grid axis
    "d_out": config_function["d_out"],
}

configs_data = {
    "n_train": {"task_0": 32, "task_1": 64},
    "x_min_train": -2,
    "x_max_train": {"task_0": 0, "task_1": 2},
    "n_val": 64,
    "x_min_val": -2,
    "x_max_val": 2,
    "n_test": 16,
    "noise_scale": 0.05,
    **config_function,
}

configs_training = {
    "batch_size": 16,
    "criterion": {"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [1, 2, 3, 4, 5, 6])},
    "update_rule": "Adam",
    "learning_rate": 0.01,
    "regularization_alpha": 0,
}

configs_custom = {"seed": 1, "logging_epoch_interval": 3, "checkpoint_every_n_epochs": 1}

configs_trainer = {"max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False}
