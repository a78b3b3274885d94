"""Synthetic multi-task regression data: inputs from named generators, targets from a
named (or user-supplied) function, per task and per split.

``CreateData(**config_data)`` completes and validates the data configuration up front
(a ConfigError naming the key for anything wrong) but draws nothing; ``create_data(split)``
draws a split on first use and caches it.

``make_data(**config_data)`` is the one entry point for every data source (data config
key ``data_source``): ``'function'`` (CreateData), ``'files'`` (``core_code.data_files.
FileData``: your own .npz/.csv files) or ``'custom'`` (``data_source_callback(config)``).
Every source gives the same interface (``DATA_INTERFACE``). ``data_fingerprint`` gives
the size and sha256 of every data file, for the resolved configuration.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from core_code.util.config_extractions import ConfigError, check_config, extract_taskconfig
from core_code.util.default_config import DATA_DEFAULTS, init_config_data
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

#: Data config keys only the 'function' source reads.
FUNCTION_KEYS: tuple[str, ...] = ("f_true", "f_true_callback", "noise_scale") + tuple(
    f"{k}_{split}" for split in SPLITS for k in ("n", "x_min", "x_max", "data_generators")
)
#: Data config keys only the 'files' source reads.
FILE_KEYS: tuple[str, ...] = ("data_files", "data_columns", "normalize", "val_fraction")
#: What every data source provides (attributes, then methods).
DATA_INTERFACE: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("d_in", "d_out", "all_tasks", "task_configs", "seed"),
    ("create_data", "n_samples"),
)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def non_default_keys(config_data: dict, keys: tuple[str, ...]) -> list[str]:
    """The ``keys`` whose value in ``config_data`` differs from ``DATA_DEFAULTS``."""
    out = []
    for key in keys:
        value, default = config_data.get(key, DATA_DEFAULTS[key]), DATA_DEFAULTS[key]
        try:
            same = type(value) is type(default) and bool(value == default)
        except Exception:  # noqa: BLE001 - a value that cannot be compared is not the default
            same = False
        if not same and not (_is_real(value) and _is_real(default) and value == default):
            out.append(key)
    return out


def check_unused_keys(config_data: dict, keys: tuple[str, ...], source: str, who: str) -> None:
    """ConfigError naming every key of ``keys`` set to a non-default value (``who`` reads them)."""
    bad = non_default_keys(config_data, keys)
    if bad:
        names = ", ".join(f"'{k}'" for k in bad)
        raise ConfigError(
            f"data config key{'s' if len(bad) > 1 else ''} {names} set but not used with data_source "
            f"{source!r} (only {who} reads {'them' if len(bad) > 1 else 'it'}): remove "
            f"{'them' if len(bad) > 1 else 'it'}"
        )


def check_seed(seed: Any, where: str) -> None:
    """A data seed is an int >= 0 or None."""
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ConfigError(f"{where} must be an int >= 0 or None, got {seed!r}")


def resolve_seeds(seed: Any, task_configs: dict[int, dict]) -> dict[int, int] | int:
    """The configured seed, or one drawn from numpy's global RNG where it is None.

    A task-specific ``seed`` gives a dict task -> seed; otherwise one int.
    """
    drawn = None

    def resolve(s: int | None) -> int:
        nonlocal drawn
        if s is not None:
            return int(s)
        if drawn is None:
            drawn = int(np.random.randint(0, 2**31 - 1))
        return drawn

    if isinstance(seed, dict):
        return {t: resolve(cfg["seed"]) for t, cfg in task_configs.items()}
    return resolve(seed)


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

    This is the ``data_source: 'function'`` source; the keys of the other sources
    (``FILE_KEYS``, ``data_source_callback``) must keep their defaults.
    """

    #: Validation targets are the noise-free target function (plots draw it as a curve).
    has_true_function: bool = True

    def __init__(self, **config_data: Any) -> None:
        self.config_data: dict = init_config_data(**config_data)
        source = self.config_data["data_source"]
        if source != "function":
            raise ConfigError(
                f"data config key 'data_source' is {source!r} but CreateData is the 'function' source; "
                "build the data with core_code.create_data.make_data(**config_data)"
            )
        check_unused_keys(self.config_data, FILE_KEYS, "function", "data_source 'files'")
        check_unused_keys(self.config_data, ("data_source_callback",), "function", "data_source 'custom'")
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

        check_seed(cfg["seed"], w("seed"))

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
        return resolve_seeds(self.config_data["seed"], self.task_configs)

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


# ------------------------------------------------------------------ data sources
def _files_source(**config_data: Any) -> Any:
    from core_code.data_files import FileData  # data_files imports this module

    return FileData(**config_data)


#: data_source name -> factory(**config_data) -> data object ('custom' is handled by make_data).
DATA_SOURCES: dict[str, Callable[..., Any]] = {"function": CreateData, "files": _files_source}


def known_sources() -> str:
    """The allowed values of ``data_source``, for messages."""
    return ", ".join(repr(k) for k in [*DATA_SOURCES, "custom"])


def make_data(**config_data: Any) -> Any:
    """The data object of a data config, from its ``data_source`` (the one dispatch point).

    ``'function'``: ``CreateData``; ``'files'``: ``core_code.data_files.FileData``;
    ``'custom'``: ``data_source_callback(completed_config)``, checked with
    ``check_data_object`` (every split is drawn once for the check).
    """
    config = init_config_data(**config_data)
    source = config["data_source"]
    if source == "custom":
        callback = config["data_source_callback"]
        if not callable(callback):
            raise ConfigError(
                "data config key 'data_source_callback' must be a callable (data config) -> data object "
                f"when data_source is 'custom', got {callback!r}"
            )
        data = callback(config)
        check_data_object(data, "the object returned by data config key 'data_source_callback'")
        return data
    if not isinstance(source, str) or source not in DATA_SOURCES:
        raise ConfigError(f"data config key 'data_source' is {source!r}; allowed: {known_sources()}")
    return DATA_SOURCES[source](**config)


def check_data_object(data: Any, where: str) -> None:
    """ConfigError unless ``data`` has the CreateData interface and layout (draws every split).

    Checks ``DATA_INTERFACE``, ``d_in``/``d_out`` positive ints, ``all_tasks`` sorted
    distinct ints >= 0, ``task_configs`` per task, and for every split: keys x/y/task_activity,
    float32 (n, d_in)/(n, d_out), int64 (n,), each task one contiguous block in task
    order, counts equal to ``n_samples(split)``.
    """
    attrs, methods = DATA_INTERFACE
    missing = [a for a in attrs if not hasattr(data, a)] + [m for m in methods if not callable(getattr(data, m, None))]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}; a data object needs attributes "
                          f"{', '.join(attrs)} and methods {', '.join(methods)} (as CreateData)")
    for key in ("d_in", "d_out"):
        v = getattr(data, key)
        if not _is_int(v) or v <= 0:
            raise ConfigError(f"{where}: {key} must be a positive int, got {v!r}")
    tasks = data.all_tasks
    if (not isinstance(tasks, (list, tuple)) or not tasks or not all(_is_int(t) and t >= 0 for t in tasks)
            or list(tasks) != sorted(set(tasks))):
        raise ConfigError(f"{where}: all_tasks must be a non-empty sorted list of distinct ints >= 0, got {tasks!r}")
    if not isinstance(data.task_configs, dict) or sorted(data.task_configs) != list(tasks):
        raise ConfigError(f"{where}: task_configs must be a dict with one entry per task {list(tasks)}")
    for split in SPLITS:
        d = data.create_data(split)
        if not isinstance(d, dict) or set(d) != {"x", "y", "task_activity"}:
            raise ConfigError(f"{where}: create_data({split!r}) must return a dict with keys x, y, task_activity, "
                              f"got {sorted(d) if isinstance(d, dict) else type(d).__name__}")
        x, y, ta = (torch.as_tensor(d[k]) for k in ("x", "y", "task_activity"))
        n = len(ta)
        expected = {"x": (torch.float32, (n, data.d_in)), "y": (torch.float32, (n, data.d_out)),
                    "task_activity": (torch.int64, (n,))}
        for key, t in zip(("x", "y", "task_activity"), (x, y, ta)):
            dtype, shape = expected[key]
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise ConfigError(f"{where}: create_data({split!r})[{key!r}] is {t.dtype} {tuple(t.shape)}; "
                                  f"expected {dtype} {shape}")
        blocks = torch.unique_consecutive(ta).tolist()
        if blocks != sorted(set(blocks)) or not set(blocks) <= set(tasks):
            raise ConfigError(f"{where}: create_data({split!r}) task_activity must hold each task of {list(tasks)} "
                              f"as one contiguous block in task order, got blocks {blocks}")
        counts = {t: int((ta == t).sum()) for t in tasks}
        n_samples = {int(k): int(v) for k, v in dict(data.n_samples(split)).items()}
        if n_samples != counts:
            raise ConfigError(f"{where}: n_samples({split!r}) is {n_samples} but create_data({split!r}) "
                              f"has rows {counts}")


def data_fingerprint(config_data: dict) -> dict[str, dict[str, Any]]:
    """``{path: {'size': bytes, 'sha256': hex}}`` of every data file of a data config.

    Paths as written in ``data_files`` (so a local and a cluster checkout agree); ``{}``
    for the 'function' and 'custom' sources. Raises ConfigError for a missing file.
    """
    config = init_config_data(**config_data)
    if config["data_source"] != "files":
        return {}
    from core_code.data_files import file_fingerprint

    return file_fingerprint(config["data_files"])


__all__ = ["CreateData", "SPLITS", "DATA_SOURCES", "make_data", "data_fingerprint", "check_data_object",
           "FUNCTION_KEYS", "FILE_KEYS"]
