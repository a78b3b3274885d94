"""Grid expansion of configuration dicts.

Every value that is not a list is one fixed value; a list is an axis of the grid (to
give a list-valued parameter such as ``list_a``, wrap it in another list). A key that
appears in several dicts (e.g. ``d_in`` in data and architecture configs) is ONE axis,
so the dicts stay consistent.

Order (the job-array index i always means the same configuration): axes are taken in
order of first appearance -- the dicts in the order given, the keys of each dict in
insertion order -- and expanded like nested for-loops written in that order: the
first axis varies slowest, the last axis fastest. The values of an axis must be
distinct (a repeated value would run the same point twice).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Mapping, Optional, Sequence

from core_code.util.config_extractions import ConfigError


def as_axis(value: Any) -> list:
    """The grid values of one config entry: a list is an axis, anything else one value."""
    return list(value) if isinstance(value, list) else [value]


def _first_duplicate(values: Sequence[Any]) -> Optional[list]:
    """``[value]`` of the first value that occurs again in ``values`` (same type, equal), else None."""
    for j, v in enumerate(values):
        for w in values[:j]:
            try:
                if type(v) is type(w) and bool(v == w):
                    return [v]
            except Exception:  # noqa: BLE001 - values that cannot be compared are distinct
                continue
    return None


def grid_axes(*config_dicts: Mapping[str, Any], names: Optional[Sequence[str]] = None) -> dict[str, list]:
    """The axes of the grid over ``config_dicts``: key -> list of values, in grid order.

    ``names`` (e.g. 'configs_data') name the dicts in error messages.
    """
    names = list(names) if names is not None else [f"config dict {i}" for i in range(len(config_dicts))]
    axes: dict[str, list] = {}
    owner: dict[str, int] = {}
    for i, config in enumerate(config_dicts):
        for key, value in config.items():
            values = as_axis(value)
            if key in axes:
                if axes[key] != values:
                    raise ConfigError(
                        f"config key '{key}' is in {names[owner[key]]} and {names[i]} with different "
                        f"values ({axes[key]!r} vs {values!r}); a key in several config dicts is "
                        "one grid axis and must be given the same values there"
                    )
                continue
            if len(values) == 0:
                raise ConfigError(f"config key '{key}' is an empty list: the grid would be empty")
            duplicate = _first_duplicate(values)
            if duplicate is not None:
                raise ConfigError(f"config key '{key}' in {names[i]} lists the value {duplicate[0]!r} more than once "
                                  f"({values!r}); allowed: distinct values (each grid point would run twice)")
            axes[key] = values
            owner[key] = i
    return axes


def grid_size(*config_dicts: Mapping[str, Any], names: Optional[Sequence[str]] = None) -> int:
    """Number of grid points (product of the axis lengths), without expanding them."""
    size = 1
    for values in grid_axes(*config_dicts, names=names).values():
        size *= len(values)
    return size


def grid_config_lists(
    *config_dicts: Mapping[str, Any], names: Optional[Sequence[str]] = None
) -> tuple[list[dict], ...]:
    """Expand ``config_dicts`` to every combination of their list values.

    Returns one list per input dict, all of the same length (the grid size); entry i of
    each list is that dict's config at grid point i.
    """
    axes = grid_axes(*config_dicts, names=names)
    keys = list(axes)
    out: tuple[list[dict], ...] = tuple([] for _ in config_dicts)
    for combo in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, combo))
        for config, configs_out in zip(config_dicts, out):
            configs_out.append({key: point[key] for key in config})
    return out


def varying_keys(*config_dicts: Mapping[str, Any], names: Optional[Sequence[str]] = None) -> list[str]:
    """The keys whose axis has more than one value (what distinguishes grid points)."""
    return [k for k, v in grid_axes(*config_dicts, names=names).items() if len(v) > 1]


def format_value(value: Any) -> str:
    """A config value as a table shows it: strings bare, everything else as Python writes it."""
    return value if isinstance(value, str) else repr(value)


def align(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A header and rows of strings in columns (numeric columns right-aligned, others left)."""
    widths = [max([len(str(h)), *(len(r[j]) for r in rows)]) for j, h in enumerate(header)]
    right = [bool(rows) and all(re.fullmatch(r"[-+0-9.eE]+|None|nan|inf|-", r[j]) for r in rows)
             for j in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [fmt([str(h) for h in header]), *(fmt(list(r)) for r in rows)]
