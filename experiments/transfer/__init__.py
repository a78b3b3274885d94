"""The transfer experiment: learning rate x width (x seed) for hyper-parameter transfer (see configs.py)."""
