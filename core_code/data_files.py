"""Your own data from .npz/.csv files, in the create_data layout (``data_source: 'files'``).

``FileData(**config_data)`` reads and checks every file at construction (a one-line
ConfigError naming the file and the problem, before any training) and then serves the
splits from memory with the interface of ``core_code.create_data.CreateData``.

Data config keys (see ``DATA_DEFAULTS``):

- ``data_files``: ``{'train': entry, 'val': entry, 'test': entry}``; 'train' is required,
  'val'/'test' may be left out (or None): that split then has no rows. An entry is one
  file holding every task (a task column / ``task_activity`` array; optional when the data
  has one task) or ``{'task_0': path, 'task_1': path, ...}``, one file per task,
  concatenated in task order. Paths are relative to the repository root, or absolute.
- ``.npz``: arrays ``x`` (n, d_in) and ``y`` (n, d_out) of real numbers (1-D means one
  column), optional ``task_activity`` (n,) of ints; no other arrays.
- ``.csv``: a header line, then one row per sample; ``data_columns = {'x': [names],
  'y': [names], 'task': name}`` ('task' defaults to 'task'; other columns are not read).
- ``d_in``, ``d_out``: None takes them from the files; a value must match them.
- ``normalize``: None, 'x', 'y' or 'xy': standardise with the mean/std (per column, over
  every task's training rows, population std; a constant column keeps std 1) of the
  train split; recorded in ``FileData.normalization``.
- ``val_fraction``: with no 'val' file, a number in (0, 1): each task's validation rows
  are round(fraction * its train rows) of them, chosen with ``seed`` (the rest stay in
  train, in file order).
- ``seed``: int >= 0 or None (drawn from numpy's global RNG), as for CreateData; only
  ``val_fraction`` uses it.

Rows of one task keep their file order; the tasks are sorted (each task one block).
Train needs rows for every task; a 'val'/'test' split that is given needs rows for every
task too (leave the split out for none). The 'function' source's keys
(``create_data.FUNCTION_KEYS``) must keep their defaults.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from core_code.create_data import (
    FUNCTION_KEYS,
    SPLITS,
    _is_int,
    _is_real,
    check_seed,
    check_unused_keys,
    resolve_seeds,
)
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    extract_taskconfig,
    parse_task_key,
    task_key,
)
from core_code.util.default_config import init_config_data

#: Paths in ``data_files`` are relative to this folder (the repository root).
REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: File types read, by suffix.
FORMATS: tuple[str, ...] = (".npz", ".csv")
#: Allowed values of ``normalize``.
NORMALIZE: tuple[Optional[str], ...] = (None, "x", "y", "xy")
NPZ_ARRAYS: tuple[str, ...] = ("x", "y", "task_activity")
COLUMN_KEYS: tuple[str, ...] = ("x", "y", "task")
_SHOW = 5  # rows named in an error message
# Keys whose dict value is structure, not a task-specific value.
_STRUCTURED = ("data_files", "data_columns")

PathLike = Union[str, os.PathLike]


def resolve_path(path: PathLike) -> Path:
    """An absolute path: ``path`` itself, or relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _where(split: str, task: Optional[int]) -> str:
    return f"data_files[{split!r}]" + (f"[{task_key(task)!r}]" if task is not None else "")


def file_entries(data_files: Any) -> list[tuple[str, Optional[int], PathLike]]:
    """``(split, task or None, path)`` of every file of ``data_files``, checking its structure."""
    if not isinstance(data_files, dict) or "train" not in data_files or data_files["train"] is None:
        raise ConfigError(
            "data config key 'data_files' must be a dict {'train': path, 'val': path, 'test': path} "
            f"('train' required) when data_source is 'files', got {data_files!r}"
        )
    unknown = [k for k in data_files if k not in SPLITS]
    if unknown:
        raise ConfigError(f"data config key 'data_files' has unknown split(s) {unknown}; allowed: {', '.join(SPLITS)}")
    out: list[tuple[str, Optional[int], PathLike]] = []
    for split in SPLITS:
        entry = data_files.get(split)
        if entry is None:
            continue
        if isinstance(entry, dict):
            if not entry:
                raise ConfigError(f"data config key {_where(split, None)} is an empty dict; give a path, "
                                  "or {'task_0': path, ...}")
            for key, path in entry.items():
                task = parse_task_key(key)
                if task is None:
                    raise ConfigError(f"data config key {_where(split, None)}: malformed task key {key!r}; "
                                      "per-task files are dicts keyed 'task_0', 'task_1', ...")
                out.append((split, task, _check_path_value(path, _where(split, task))))
            continue
        out.append((split, None, _check_path_value(entry, _where(split, None))))
    return out


def _check_path_value(path: Any, where: str) -> PathLike:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"data config key {where} must be a file path (str), got {path!r}")
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"data config key {where}: file {str(path)!r} has type {suffix or '(none)'!r}; "
                          f"allowed: {', '.join(FORMATS)}")
    return path


def _existing(path: PathLike, where: str) -> Path:
    full = resolve_path(path)
    if not full.is_file():
        rel = "" if Path(path).is_absolute() else f" (relative to the repository root {REPO_ROOT})"
        raise ConfigError(f"data config key {where}: file {str(path)!r} not found: {full}{rel}")
    return full


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(data_files: Any) -> dict[str, dict[str, Any]]:
    """``{path as written: {'size': bytes, 'sha256': hex}}`` of every file of ``data_files``."""
    out: dict[str, dict[str, Any]] = {}
    for split, task, path in file_entries(data_files):
        full = _existing(path, _where(split, task))
        out[str(path)] = {"size": full.stat().st_size, "sha256": sha256_file(full)}
    return out


# ------------------------------------------------------------------ reading
class _Table:
    """The rows of one file: x, y (float32), task ids (int64 or None) and row labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray, task: Optional[np.ndarray], label: str,
                 lines: Optional[np.ndarray], where: str):
        self.x, self.y, self.task, self.label, self.lines, self.where = x, y, task, label, lines, where

    def rows(self, idx: np.ndarray) -> str:
        """``"rows [0, 3]"`` (0-based, .npz) or ``"lines [2, 5]"`` (file lines, .csv), first few."""
        idx = np.asarray(idx)
        shown = (self.lines[idx] if self.lines is not None else idx)[:_SHOW].tolist()
        more = f" and {len(idx) - _SHOW} more" if len(idx) > _SHOW else ""
        return f"{'lines' if self.lines is not None else 'rows'} {shown}{more}"


def _as_2d(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.ndim == 1:
        return a.reshape(-1, 1)
    if a.ndim != 2:
        raise ConfigError(f"{where}: array {name!r} has shape {a.shape}; allowed: (n, k) or (n,)")
    return a


def read_npz(path: Path, where: str) -> _Table:
    """Arrays x, y (real) and optional task_activity (int) of an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any unreadable file: one line naming it
        raise ConfigError(f"{where}: cannot read {path} as .npz ({type(err).__name__}: {err})") from None
    unknown = sorted(set(arrays) - set(NPZ_ARRAYS))
    missing = [k for k in ("x", "y") if k not in arrays]
    if unknown or missing:
        raise ConfigError(f"{where}: {path} has arrays {sorted(arrays)}; required x, y, optional task_activity"
                          + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else ""))
    x, y = (_as_2d(arrays[k], k, f"{where}: {path}") for k in ("x", "y"))
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "fiu":
            raise ConfigError(f"{where}: {path} array {name!r} has dtype {a.dtype}; allowed: real numbers "
                              "(float or int)")
    task = arrays.get("task_activity")
    if task is not None and (task.ndim != 1 or task.dtype.kind not in "iu"):
        raise ConfigError(f"{where}: {path} array 'task_activity' is {task.dtype} {task.shape}; "
                          "allowed: ints of shape (n,)")
    lengths = {"x": len(x), "y": len(y), **({"task_activity": len(task)} if task is not None else {})}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{where}: {path} arrays have different numbers of rows {lengths}")
    return _Table(x, y, None if task is None else task.astype(np.int64), str(path), None, where)


def _columns(data_columns: Any) -> dict[str, Any]:
    if not isinstance(data_columns, dict):
        raise ConfigError("data config key 'data_columns' must be {'x': [names], 'y': [names], 'task': name} "
                          f"for .csv files, got {data_columns!r}")
    unknown = [k for k in data_columns if k not in COLUMN_KEYS]
    if unknown:
        raise ConfigError(f"data config key 'data_columns' has unknown key(s) {unknown}; allowed: "
                          f"{', '.join(COLUMN_KEYS)}")
    cols = {"task": "task", **data_columns}
    for key in ("x", "y"):
        names = cols.get(key)
        if isinstance(names, str):
            names = [names]
        if (not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names)
                or len(set(names)) != len(names)):
            raise ConfigError(f"data config key 'data_columns' entry {key!r} must be a non-empty list of distinct "
                              f"column names, got {cols.get(key)!r}")
        cols[key] = list(names)
    if not isinstance(cols["task"], str):
        raise ConfigError(f"data config key 'data_columns' entry 'task' must be a column name, got {cols['task']!r}")
    clash = set(cols["x"]) & set(cols["y"]) | ({cols["task"]} & set(cols["x"] + cols["y"]))
    if clash:
        raise ConfigError(f"data config key 'data_columns' uses column(s) {sorted(clash)} more than once")
    return cols


def _parse_column(values: list[str], name: str, lines: np.ndarray, path: Path, where: str) -> np.ndarray:
    try:
        return np.array(values, dtype=str).astype(np.float64)
    except ValueError:
        for i, v in enumerate(values):
            try:
                float(v)
            except ValueError:
                raise ConfigError(f"{where}: {path} line {int(lines[i])} column {name!r}: {v!r} is not a number") from None
        raise


def read_csv(path: Path, data_columns: Any, where: str) -> _Table:
    """The x, y (and task, if present) columns of a .csv file with a header line."""
    cols = _columns(data_columns)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"{where}: cannot read {path} as .csv ({type(err).__name__}: {err})") from None
    if not header:
        raise ConfigError(f"{where}: {path} is empty; a .csv file needs a header line naming its columns")
    header = [h.strip() for h in header]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ConfigError(f"{where}: {path} header names column(s) {dup} more than once")
    missing = [c for c in cols["x"] + cols["y"] if c not in header]
    if missing:
        raise ConfigError(f"{where}: {path} has no column(s) {missing} (data_columns); its columns: {header}")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    line_arr = np.asarray(lines, dtype=np.int64)
    if bad is not None:
        raise ConfigError(f"{where}: {path} line {lines[bad]} has {len(rows[bad])} fields but the header has "
                          f"{len(header)}")

    def column(name: str) -> np.ndarray:
        j = header.index(name)
        return _parse_column([r[j].strip() for r in rows], name, line_arr, path, where)

    x = np.stack([column(c) for c in cols["x"]], axis=1) if rows else np.empty((0, len(cols["x"])))
    y = np.stack([column(c) for c in cols["y"]], axis=1) if rows else np.empty((0, len(cols["y"])))
    task = None
    if cols["task"] in header:
        t = column(cols["task"]) if rows else np.empty(0)
        wrong = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
        if len(wrong):
            table = _Table(x, y, None, str(path), line_arr, where)
            raise ConfigError(f"{where}: {path} column {cols['task']!r} holds non-integer task ids at "
                              f"{table.rows(wrong)}")
        task = t.astype(np.int64)
    return _Table(x, y, task, str(path), line_arr, where)


def read_table(path: PathLike, data_columns: Any, where: str) -> _Table:
    """One file as a ``_Table``, with its values checked to be finite (also as float32)."""
    full = _existing(path, where)
    table = read_npz(full, where) if full.suffix.lower() == ".npz" else read_csv(full, data_columns, where)
    for name in ("x", "y"):
        a = getattr(table, name)
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            a32 = a.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1) | ~np.isfinite(a32).all(axis=1))
        if len(bad):
            raise ConfigError(f"{where}: {full} has NaN/inf (or beyond float32) values in {name!r} at "
                              f"{table.rows(bad)}")
        setattr(table, name, a32)
    return table


# ------------------------------------------------------------------ the source
class FileData:
    """The data of ``data_source: 'files'``: every split read and checked up front (module docstring).

    Attributes as CreateData (``d_in``, ``d_out``, ``all_tasks``, ``task_configs``,
    ``seed``) plus ``normalization`` (``{'x'|'y': {'mean': [...], 'std': [...]}}`` or
    None) and ``has_true_function = False``.
    """

    has_true_function: bool = False

    def __init__(self, **config_data: Any) -> None:
        self.config_data: dict = init_config_data(**config_data)
        cfg = self.config_data
        if cfg["data_source"] != "files":
            raise ConfigError(f"data config key 'data_source' is {cfg['data_source']!r} but FileData is the "
                              "'files' source; build the data with core_code.create_data.make_data(**config_data)")
        check_unused_keys(cfg, FUNCTION_KEYS, "files", "data_source 'function'")
        check_unused_keys(cfg, ("data_source_callback",), "files", "data_source 'custom'")
        entries = file_entries(cfg["data_files"])
        self._check_options(entries)
        config_tasks = self._config_tasks(entries)
        tables = {(split, task): read_table(path, cfg["data_columns"], _where(split, task))
                  for split, task, path in entries}
        self.d_in: int = self._dim("d_in", "x", tables)
        self.d_out: int = self._dim("d_out", "y", tables)
        self.all_tasks: list[int] = self._tasks(config_tasks, tables)
        plain = {k: v for k, v in cfg.items() if k not in _STRUCTURED and k not in FUNCTION_KEYS}
        self.task_configs: dict[int, dict] = {}
        for t in self.all_tasks:
            task_cfg = extract_taskconfig(plain, t)
            task_cfg.update(d_in=self.d_in, d_out=self.d_out, data_files={
                split: str(cfg["data_files"][split][task_key(t)]) if isinstance(cfg["data_files"][split], dict)
                else str(cfg["data_files"][split])
                for split in SPLITS if cfg["data_files"].get(split) is not None})
            check_seed(task_cfg["seed"], "data config key 'seed'" + (f" ({task_key(t)})"
                                                                     if isinstance(cfg["seed"], dict) else ""))
            self.task_configs[t] = task_cfg
        self.seed: dict[int, int] | int = resolve_seeds(cfg["seed"], self.task_configs)
        splits = {split: self._assemble(split, tables) for split in SPLITS}
        if cfg["val_fraction"] is not None:
            splits["train"], splits["val"] = self._carve_val(splits["train"])
        self.normalization: Optional[dict[str, dict[str, list[float]]]] = None
        if cfg["normalize"] is not None:
            self.normalization = self._fit_normalization(splits["train"])
            splits = {s: self._apply(d) for s, d in splits.items()}
        self._splits: dict[str, dict[str, torch.Tensor]] = {
            s: {"x": torch.from_numpy(np.ascontiguousarray(d[0], dtype=np.float32)),
                "y": torch.from_numpy(np.ascontiguousarray(d[1], dtype=np.float32)),
                "task_activity": torch.from_numpy(np.ascontiguousarray(d[2], dtype=np.int64))}
            for s, d in splits.items()}

    # ------------------------------------------------------------------ public
    def create_data(self, split: str) -> dict[str, torch.Tensor]:
        """``{'x' float32 (n, d_in), 'y' float32 (n, d_out), 'task_activity' int64 (n,)}``, copies."""
        self._check_split(split)
        return {k: v.clone() for k, v in self._splits[split].items()}

    def n_samples(self, split: str) -> dict[int, int]:
        """Rows per task in ``split``."""
        self._check_split(split)
        ta = self._splits[split]["task_activity"]
        return {t: int((ta == t).sum()) for t in self.all_tasks}

    def task_seed(self, task: int) -> int:
        """The seed of ``task`` (given or drawn at construction)."""
        return self.seed[task] if isinstance(self.seed, dict) else self.seed

    def normalize(self, name: str, values: Any) -> Any:
        """``(values - mean) / std`` with the train statistics of ``name`` ('x' or 'y'); unchanged if not normalised."""
        mean, std = self._stats(name, values)
        return values if mean is None else (values - mean) / std

    def denormalize(self, name: str, values: Any) -> Any:
        """The inverse of ``normalize``: back to the units of the files (e.g. predictions of y)."""
        mean, std = self._stats(name, values)
        return values if mean is None else values * std + mean

    # -------------------------------------------------------------- internals
    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")

    def _check_options(self, entries: list) -> None:
        cfg = self.config_data
        if cfg["normalize"] not in NORMALIZE:
            raise ConfigError(f"data config key 'normalize' is {cfg['normalize']!r}; allowed: "
                              f"{', '.join(repr(v) for v in NORMALIZE)}")
        frac = cfg["val_fraction"]
        if frac is not None:
            if not _is_real(frac) or not 0 < frac < 1:
                raise ConfigError(f"data config key 'val_fraction' must be a number in (0, 1) or None, got {frac!r}")
            if cfg["data_files"].get("val") is not None:
                raise ConfigError("data config keys 'val_fraction' and data_files['val'] are both set; give one "
                                  "(val_fraction carves the validation split out of train)")
        has_csv = any(Path(p).suffix.lower() == ".csv" for _, _, p in entries)
        if cfg["data_columns"] is not None and not has_csv:
            raise ConfigError("data config key 'data_columns' is set but no data file is a .csv; remove it")
        if has_csv and cfg["data_columns"] is None:
            raise ConfigError("data config key 'data_columns' is required for .csv data files: "
                              "{'x': [names], 'y': [names], 'task': name}")
        if has_csv:
            _columns(cfg["data_columns"])
        for key in ("d_in", "d_out"):
            v = cfg[key]
            if v is not None and (not _is_int(v) or v <= 0):
                raise ConfigError(f"data config key '{key}' must be a positive int or None (taken from the files), "
                                  f"got {v!r}")

    def _config_tasks(self, entries: list) -> Optional[set[int]]:
        """Tasks named by task-specific config values and per-task files (all must agree)."""
        tasks = check_config(**{k: v for k, v in self.config_data.items() if k not in _STRUCTURED})
        first = "the task-specific data config values"
        for split in SPLITS:
            named = {t for s, t, _ in entries if s == split and t is not None}
            if not named:
                continue
            if tasks is None:
                tasks, first = named, f"data_files[{split!r}]"
            elif named != tasks:
                raise ConfigError(f"data config key data_files[{split!r}] names tasks {sorted(named)} but {first} "
                                  f"name{'s' if first.startswith('data_files') else ''} tasks {sorted(tasks)}")
        return tasks

    def _dim(self, key: str, array: str, tables: dict) -> int:
        """d_in/d_out: equal in every file, and equal to the config value when one is given."""
        dims = {t.where: getattr(t, array).shape[1] for t in tables.values()}
        first_where, first = next(iter(dims.items()))
        for where, dim in dims.items():
            if dim != first:
                raise ConfigError(f"{where}: {array!r} has {dim} column(s) but {first_where} has {first}; "
                                  f"every file must give the same {key}")
        given = self.config_data[key]
        if given is not None and given != first:
            raise ConfigError(f"data config key '{key}' is {given} but the files' {array!r} has {first} column(s) "
                              f"({first_where}); set {key} to {first} or None")
        return int(first)

    def _tasks(self, config_tasks: Optional[set[int]], tables: dict) -> list[int]:
        """The task set (config, else the files' ids, else [0]) and every table's task ids set."""
        found = sorted({int(v) for (_, task), t in tables.items() if task is None and t.task is not None
                        for v in np.unique(t.task)})
        if config_tasks is not None:
            tasks = sorted(config_tasks)
        elif found:
            tasks = found
            if tasks != list(range(len(tasks))):
                raise ConfigError(f"the data files' task ids are {tasks}; allowed: 0..T-1 without gaps "
                                  f"(missing {sorted(set(range(max(tasks) + 1)) - set(tasks))})")
        else:
            tasks = [0]
        for (_, task), t in tables.items():
            if task is not None:  # a per-task file: its rows are that task's
                if t.task is not None:
                    wrong = np.flatnonzero(t.task != task)
                    if len(wrong):
                        raise ConfigError(f"{t.where}: {t.label} is the file of {task_key(task)} but holds task ids "
                                          f"{sorted(set(t.task[wrong].tolist()))} at {t.rows(wrong)}")
                t.task = np.full(len(t.x), task, dtype=np.int64)
            elif t.task is None:
                if len(tasks) > 1:
                    raise ConfigError(f"{t.where}: {t.label} has no task ids (array 'task_activity' / the task "
                                      f"column) but the data has tasks {tasks}; add them, or give one file per task")
                t.task = np.full(len(t.x), tasks[0], dtype=np.int64)
            else:
                wrong = np.flatnonzero(~np.isin(t.task, tasks))
                if len(wrong):
                    raise ConfigError(f"{t.where}: {t.label} holds task ids {sorted(set(t.task[wrong].tolist()))} "
                                      f"at {t.rows(wrong)}; the data's tasks are {tasks}")
        return tasks

    def _assemble(self, split: str, tables: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, task of a split: each task's rows in file order, tasks sorted; every task present."""
        parts = [t for (s, _), t in sorted(tables.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)) if s == split]
        if not parts:
            return (np.empty((0, self.d_in), np.float32), np.empty((0, self.d_out), np.float32),
                    np.empty(0, np.int64))
        x = np.concatenate([t.x for t in parts])
        y = np.concatenate([t.y for t in parts])
        task = np.concatenate([t.task for t in parts])
        order = np.argsort(task, kind="stable")
        x, y, task = x[order], y[order], task[order]
        empty = [t for t in self.all_tasks if not (task == t).any()]
        if empty:
            files = ", ".join(sorted({t.label for t in parts}))
            if split == "train":
                allowed = "train needs rows for every task (each task has a criterion)"
            else:
                allowed = f"a given {split} split needs rows for every task (leave it out for none)"
            raise ConfigError(f"data_files[{split!r}] ({files}) has no rows for task(s) {empty}; {allowed}")
        return x, y, task

    def _carve_val(self, train: tuple) -> tuple[tuple, tuple]:
        """Hold out round(val_fraction * n_t) of each task's train rows (seeded), keeping file order."""
        frac = float(self.config_data["val_fraction"])
        x, y, task = train
        keep, held = [], []
        for t in self.all_tasks:
            rows = np.flatnonzero(task == t)
            n_val = int(np.floor(frac * len(rows) + 0.5))
            if not 1 <= n_val <= len(rows) - 1:
                raise ConfigError(f"data config key 'val_fraction' {frac} gives task {t} ({len(rows)} train rows) "
                                  f"{n_val} validation rows; allowed: at least 1 validation and 1 training row "
                                  "per task")
            rng = np.random.default_rng([self.task_seed(t), 1, t])
            chosen = np.zeros(len(rows), dtype=bool)
            chosen[rng.permutation(len(rows))[:n_val]] = True
            held.append(rows[chosen])
            keep.append(rows[~chosen])
        k, h = np.concatenate(keep), np.concatenate(held)
        return (x[k], y[k], task[k]), (x[h], y[h], task[h])

    def _fit_normalization(self, train: tuple) -> dict[str, dict[str, list[float]]]:
        out = {}
        for name, a in zip(("x", "y"), train[:2]):
            if name in self.config_data["normalize"]:
                a64 = a.astype(np.float64)
                std = a64.std(axis=0)
                out[name] = {"mean": a64.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
        return out

    def _apply(self, split: tuple) -> tuple:
        x, y, task = split
        x = self.normalize("x", x.astype(np.float64)).astype(np.float32)
        y = self.normalize("y", y.astype(np.float64)).astype(np.float32)
        return x, y, task

    def _stats(self, name: str, values: Any) -> tuple[Any, Any]:
        if name not in ("x", "y"):
            raise ValueError(f"name must be 'x' or 'y', got {name!r}")
        stats = (self.normalization or {}).get(name)
        if stats is None:
            return None, None
        if isinstance(values, torch.Tensor):
            return (torch.tensor(stats["mean"], dtype=values.dtype, device=values.device),
                    torch.tensor(stats["std"], dtype=values.dtype, device=values.device))
        return np.asarray(stats["mean"]), np.asarray(stats["std"])


__all__ = ["FileData", "file_fingerprint", "file_entries", "resolve_path", "REPO_ROOT", "NORMALIZE"]
