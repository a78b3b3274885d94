"""Synthetic multi-task regression data: inputs from named generators, targets from a
named (or user-supplied) function, per task and per split.

``CreateData(**config_data)`` completes and validates the data configuration up front
(a ConfigError naming the key for anything wrong) but draws nothing; ``create_data(split)``
draws a split on first use and caches it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from core_code.util.config_extractions import ConfigError, check_config, extract_taskconfig
from core_code.util.default_config import init_config_data
from core_code.util.function_lib import (
    FUNCTIONS,
    GENERATORS,
    function_library,
    function_output_dim,
    known_functions,
    output_dim,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_INDEX = {split: i for i, split in enumerate(SPLITS)}
_GLOBAL_KEYS = ("d_in", "d_out")  # one network serves every task: these cannot differ per task


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class CreateData:
    """The data of one experiment: every task's samples of every split.

    Configuration (see ``DATA_DEFAULTS``; any value may be task-specific,
    ``{'task_0': ..., 'task_1': ...}``):

    - ``d_in``, ``d_out``: input/output dimension, positive ints, the same for every task.
    - ``f_true``: a name in ``function_lib.FUNCTIONS`` giving ``d_out`` outputs (a
      one-output function needs ``d_out`` 1), or ``'custom'`` with ``f_true_callback``,
      a callable mapping a float64 array (n, d_in) to (n,) or (n, d_out).
    - ``n_<split>``: samples per task, an int >= 0 (0: the task has no rows in the split).
    - ``x_min_<split>``, ``x_max_<split>``: bounds, a number for every input dim or a
      list with one per dim.
    - ``data_generators_<split>``: a generator name or a list, one per input dim (the
      last one repeated if shorter).
    - ``noise_scale``: >= 0; training targets get ``noise_scale * N(0, 1)`` on every
      output, validation and test targets are noise-free.
    - ``seed``: an int >= 0 or None. With an int, the draws of (split, task) come from
      ``np.random.default_rng([seed, split_index, task])``: fixed, and independent of the
      other splits and tasks. With None, a seed is drawn from numpy's global RNG at
      construction (so ``np.random.seed`` / ``pytorch_lightning.seed_everything``
      govern the data; ``torch.manual_seed`` alone does not); it is kept in
      ``self.seed`` so the data can be reproduced.

    Inputs are rounded to float32 before the targets are computed, so the stored
    ``y`` of validation/test is exactly ``f_true(x)`` of the stored ``x`` (in float32).
    """

    def __init__(self, **config_data: Any) -> None:
        self.config_data: dict = init_config_data(**config_data)
        tasks = check_config(**self.config_data)
        self.all_tasks: list[int] = sorted(tasks) if tasks is not None else [0]
        self.task_configs: dict[int, dict] = {
            t: extract_taskconfig(self.config_data, t) for t in self.all_tasks
        }
        self.d_in: int = self._global_value("d_in")
        self.d_out: int = self._global_value("d_out")
        for task in self.all_tasks:
            self._validate_task(task)
        self.seed: dict[int, int] | int = self._resolve_seeds()
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ public
    def create_data(self, split: str) -> dict[str, torch.Tensor]:
        """The samples of ``split`` ('train', 'val' or 'test'), every task's block in task order.

        Returns torch tensors: ``'x'`` float32 (n, d_in), ``'y'`` float32 (n, d_out),
        ``'task_activity'`` int64 (n,) holding each row's task number. The split is drawn
        on the first call and cached: later calls return copies of the same data.
        """
        self._check_split(split)
        if split not in self._cache:
            self._cache[split] = self._draw_split(split)
        return {k: v.clone() for k, v in self._cache[split].items()}

    def n_samples(self, split: str) -> dict[int, int]:
        """Samples per task in ``split``, from the configuration (nothing is drawn)."""
        self._check_split(split)
        return {t: int(self.task_configs[t][f"n_{split}"]) for t in self.all_tasks}

    def task_seed(self, task: int) -> int:
        """The seed the draws of ``task`` derive from (given or drawn at construction)."""
        return self.seed[task] if isinstance(self.seed, dict) else self.seed

    # -------------------------------------------------------------- validation
    @staticmethod
    def _check_split(split: str) -> None:
        if split not in _SPLIT_INDEX:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")

    def _global_value(self, key: str) -> int:
        """``d_in``/``d_out``: required positive ints, equal for every task."""
        values = {t: cfg[key] for t, cfg in self.task_configs.items()}
        for t, v in values.items():
            where = self._where(key, t)
            if v is None:
                raise ConfigError(f"{where} is required (a positive int)")
            if not _is_int(v) or v <= 0:
                raise ConfigError(f"{where} must be a positive int, got {v!r}")
        distinct = set(values.values())
        if len(distinct) > 1:
            raise ConfigError(
                f"data config key '{key}' must be the same for every task (one network "
                f"serves them all), got {values}"
            )
        return int(distinct.pop())

    def _where(self, key: str, task: int) -> str:
        """'data config key 'k'' plus the task when the value is task-specific."""
        if isinstance(self.config_data.get(key), dict):
            return f"data config key '{key}' (task_{task})"
        return f"data config key '{key}'"

    def _validate_task(self, task: int) -> None:
        cfg = self.task_configs[task]
        w = lambda key: self._where(key, task)  # noqa: E731

        f_true = cfg["f_true"]
        if f_true is None:
            raise ConfigError(f"{w('f_true')} is required: one of {known_functions()}, or 'custom'")
        if f_true == "custom":
            if not callable(cfg["f_true_callback"]):
                raise ConfigError(
                    f"{w('f_true_callback')} must be a callable x -> y when f_true is 'custom', "
                    f"got {cfg['f_true_callback']!r}"
                )
        elif not isinstance(f_true, str) or f_true not in FUNCTIONS:
            raise ConfigError(f"{w('f_true')} is {f_true!r}; known functions: {known_functions()}, or 'custom'")
        else:
            k = function_output_dim(f_true, d_in=self.d_in)
            if k != self.d_out:
                raise ConfigError(
                    f"{w('f_true')}: f_true {f_true!r} gives {k} output{'s' if k != 1 else ''} "
                    f"but d_out is {self.d_out}"
                )

        noise_scale = cfg["noise_scale"]
        if not _is_real(noise_scale) or not np.isfinite(noise_scale) or noise_scale < 0:
            raise ConfigError(f"{w('noise_scale')} must be a finite number >= 0, got {noise_scale!r}")

        seed = cfg["seed"]
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ConfigError(f"{w('seed')} must be an int >= 0 or None, got {seed!r}")

        for split in SPLITS:
            n = cfg[f"n_{split}"]
            if not _is_int(n) or n < 0:
                raise ConfigError(f"{w(f'n_{split}')} must be an int >= 0, got {n!r}")
            lo = self._bounds(cfg, f"x_min_{split}", task)
            hi = self._bounds(cfg, f"x_max_{split}", task)
            bad = [d for d in range(self.d_in) if lo[d] > hi[d]]
            if bad:
                d = bad[0]
                raise ConfigError(
                    f"{w(f'x_min_{split}')} exceeds {w(f'x_max_{split}')} in input dim {d}: "
                    f"{lo[d]} > {hi[d]}"
                )
            self._generators(cfg, f"data_generators_{split}", task)

    def _bounds(self, cfg: dict, key: str, task: int) -> list[float]:
        """A bound as one float per input dim (a number applies to every dim)."""
        value = cfg[key]
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if not all(_is_real(v) and np.isfinite(v) for v in values):
            raise ConfigError(
                f"{self._where(key, task)} must be a finite number or a list of {self.d_in}, got {value!r}"
            )
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(values) != self.d_in:
                raise ConfigError(
                    f"{self._where(key, task)} has {len(values)} entries but d_in is {self.d_in}: "
                    "give one number for every dim, or a list with one per dim"
                )
            return [float(v) for v in values]
        return [float(value)] * self.d_in

    def _generators(self, cfg: dict, key: str, task: int) -> list[str]:
        """The generator name of every input dim (a list shorter than d_in repeats its last)."""
        value = cfg[key]
        names = list(value) if isinstance(value, (list, tuple)) else [value]
        if not names or len(names) > self.d_in:
            raise ConfigError(
                f"{self._where(key, task)} must be a generator name or a list of 1 to {self.d_in} "
                f"names (d_in), got {value!r}"
            )
        for name in names:
            if not isinstance(name, str) or name not in GENERATORS:
                raise ConfigError(
                    f"{self._where(key, task)}: unknown data generator {name!r}; "
                    f"known generators: {', '.join(sorted(GENERATORS))}"
                )
        return names + [names[-1]] * (self.d_in - len(names))

    def _resolve_seeds(self) -> dict[int, int] | int:
        """The configured seed, or one drawn from numpy's global RNG when it is None.

        A task-specific seed gives a dict task -> seed; otherwise one int.
        """
        seed = self.config_data["seed"]
        drawn = None

        def resolve(s: int | None) -> int:
            nonlocal drawn
            if s is not None:
                return int(s)
            if drawn is None:
                drawn = int(np.random.randint(0, 2**31 - 1))
            return drawn

        if isinstance(seed, dict):
            return {t: resolve(self.task_configs[t]["seed"]) for t in self.all_tasks}
        return resolve(seed)

    # ----------------------------------------------------------------- drawing
    def _target_fn(self, cfg: dict) -> Callable[[np.ndarray], np.ndarray]:
        if cfg["f_true"] == "custom":
            return cfg["f_true_callback"]
        return function_library(cfg["f_true"])

    def _draw_task(self, split: str, task: int) -> tuple[np.ndarray, np.ndarray]:
        """x (float32, (n, d_in)) and y (float32, (n, d_out)) of one task in one split."""
        cfg = self.task_configs[task]
        n = int(cfg[f"n_{split}"])
        rng = np.random.default_rng([self.task_seed(task), _SPLIT_INDEX[split], task])
        lo = self._bounds(cfg, f"x_min_{split}", task)
        hi = self._bounds(cfg, f"x_max_{split}", task)
        gens = self._generators(cfg, f"data_generators_{split}", task)

        x = np.empty((n, self.d_in), dtype=np.float64)
        for d in range(self.d_in):
            x[:, d] = GENERATORS[gens[d]](n, lo[d], hi[d], rng)
        x = x.astype(np.float32)
        if n == 0:
            return x, np.empty((0, self.d_out), dtype=np.float32)

        y = np.asarray(self._target_fn(cfg)(x.astype(np.float64)), dtype=np.float64)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.shape != (n, self.d_out):
            key = "f_true_callback" if cfg["f_true"] == "custom" else "f_true"
            raise ConfigError(
                f"{self._where(key, task)}: the target function returned shape {y.shape} for "
                f"{n} samples; expected ({n},) or ({n}, {self.d_out}) (d_out {self.d_out}, "
                f"{output_dim(y)} outputs)"
            )
        if split == "train" and cfg["noise_scale"] > 0:
            y = y + cfg["noise_scale"] * rng.standard_normal(y.shape)
        return x, y.astype(np.float32)

    def _draw_split(self, split: str) -> dict[str, torch.Tensor]:
        xs, ys, acts = [], [], []
        for task in self.all_tasks:
            x, y = self._draw_task(split, task)
            xs.append(x)
            ys.append(y)
            acts.append(np.full(len(x), task, dtype=np.int64))
        return {
            "x": torch.from_numpy(np.concatenate(xs, axis=0)),
            "y": torch.from_numpy(np.concatenate(ys, axis=0)),
            "task_activity": torch.from_numpy(np.concatenate(acts, axis=0)),
        }


__all__ = ["CreateData", "SPLITS"]
