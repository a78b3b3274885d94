# compositeSine: two tasks share one abcMLP (NTK parametrization, width 2048, depth 6).
#   task_0 learns output 0, oneKink(sin(-3 pi x)), from x in [-2, 0];
#   task_1 learns outputs 1..6 (abs, squared, negToPos, cubed, sine, exp of sin(-3 pi x))
#   from x in [-2, 2]; validation on 2048 equidistant points of [-2, 2].
#
# Launch:   .venv/bin/python main.py --experiment compositeSine --config_trainer max_epochs:2
#           (longer: --config_trainer max_epochs:500; one grid point: --num_config 1)
# Expect:   both tasks' losses fall. Measured on 2 CPU cores: 2 epochs take ~25 s
#           (validation/loss_task_1 3.3 -> 2.9); 30 epochs take ~4 min and bring
#           validation/loss_task_1 to 0.44 while task_0 is still a smooth trend
#           (validation/loss_task_0 ~ 0.68): NTK with SGD at lr 0.005 learns the fast
#           oscillation of task_0 only over hundreds of epochs (a cluster job). The fit
#           plots are in runs/<TAG>/config1/plots/. Task 0 is validated on [-2, 2] but
#           trained on [-2, 0]: on (0, 2] its prediction is unconstrained by design.
#
# Values that are lists are grid axes; wrap a list-valued parameter (list_a) in another
# list. Task-specific values are dicts keyed 'task_0', 'task_1'.

config_function = {
    "d_in": 1,  # one d_in for all tasks: one network serves both
    "d_out": 7,
    "f_true": "compositeSine",
}

configs_architecture = {
    "architecture_key": "abcMLP",
    "width": 2048,
    "depth": 6,
    "list_a": [[0, 0.5, 0.5, 0.5, 0.5, 0.5]],  # NTK
    "list_b": [[0, 0, 0, 0, 0, 0]],
    "c": 0,
    "hidden_layer_activation": "ReLU",
    "d_in": config_function["d_in"],  # shared with configs_data: one grid axis
    "d_out": config_function["d_out"],
}

configs_data = {
    "n_train": {"task_0": 256, "task_1": 512},
    "noise_scale": 0.2,
    "x_min_train": -2,
    "x_max_train": {"task_0": 0, "task_1": 2},
    "n_val": 2048,
    "x_min_val": -2,
    "x_max_val": 2,
    "n_test": 0,
    "x_min_test": -2,
    "x_max_test": 2,
    **config_function,
}

configs_training = {
    "batch_size": 64,
    "batching_strategy": "data_deterministic",
    "criterion": {"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [1, 2, 3, 4, 5, 6])},
    "update_rule": "SGD",
    "learning_rate": 0.005,
    "regularization_alpha": 0,
    "regularization_ord": 2,
    "shuffle": True,
}

configs_custom = {
    "seed": 77,
    "workers": True,
    "logging_epoch_interval": 50,
    "checkpoint_every_n_epochs": 10,
}

# Trainer defaults of this experiment; `main.py --config_trainer key:value` overrides them.
configs_trainer = {
    "max_epochs": 2,
}
