"""Benchmarks (not unit tests): ``python benchmarks/bench_training.py --help``."""
