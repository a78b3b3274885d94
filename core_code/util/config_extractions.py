"""Task-specific configuration values and strict key checking.

Any configuration value may be task-specific: a dict keyed ``task_0``, ``task_1``, ...
``check_config`` validates such dicts and returns the task set they name;
``extract_taskconfig`` resolves one task's plain configuration. ``complete_config``
fills defaults and refuses unknown keys (the original silently dropped them).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping, Optional

_TASK_KEY = re.compile(r"^task_(0|[1-9][0-9]*)$")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key."""


def task_key(task_num: int) -> str:
    """The key under which task ``task_num``'s value is stored: ``task_<n>``."""
    return f"task_{int(task_num)}"


def parse_task_key(key: Any) -> Optional[int]:
    """Return n for a well-formed key ``task_<n>`` (no leading zeros), else None."""
    if isinstance(key, str):
        match = _TASK_KEY.match(key)
        if match:
            return int(match.group(1))
    return None


def is_task_specific(value: Any) -> bool:
    """True if ``value`` is a task-specific dict (any dict counts; its keys are checked)."""
    return isinstance(value, dict)


def check_config(**config: Any) -> Optional[set[int]]:
    """Validate the task-specific values of one configuration.

    Returns the set of task numbers named by task-specific values, or None when no
    value is task-specific. Raises ConfigError (a ValueError) naming the key when a
    dict has a malformed task key, is empty, or names a different task set than
    another task-specific value.
    """
    all_tasks: Optional[set[int]] = None
    first_key = None
    for key, value in config.items():
        if not is_task_specific(value):
            continue
        if len(value) == 0:
            raise ConfigError(f"config key '{key}': an empty dict is not a valid task-specific value")
        tasks = set()
        for sub in value:
            num = parse_task_key(sub)
            if num is None:
                raise ConfigError(
                    f"config key '{key}': malformed task key {sub!r}; task-specific values "
                    "are dicts keyed 'task_0', 'task_1', ..."
                )
            tasks.add(num)
        if all_tasks is None:
            all_tasks, first_key = tasks, key
        elif tasks != all_tasks:
            raise ConfigError(
                f"config key '{key}' names tasks {sorted(tasks)} but '{first_key}' names "
                f"tasks {sorted(all_tasks)}: every task-specific value must name the same tasks"
            )
    return all_tasks


def extract_taskconfig(config: Mapping[str, Any], task_num: int) -> dict:
    """The plain configuration of task ``task_num``: task-specific values resolved."""
    key = task_key(task_num)
    out = {}
    for name, value in config.items():
        if is_task_specific(value):
            if key not in value:
                raise ConfigError(f"config key '{name}' has no value for '{key}'")
            value = value[key]
        out[name] = value
    return out


def closest_keys(key: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """Valid keys closest to ``key`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(key, sorted(valid), n=n, cutoff=0.5)


def unknown_key_message(key: str, valid: Iterable[str], where: str) -> str:
    """One-line message for a key that ``where`` does not accept."""
    valid = sorted(valid)
    close = closest_keys(key, valid)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {where} key '{key}'.{hint} Valid keys: {', '.join(valid)}"


def complete_config(
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    where: str,
    accepted: Iterable[str] = (),
    renamed: Optional[Mapping[str, str]] = None,
) -> dict:
    """Fill ``defaults`` into ``config`` and refuse keys no component accepts.

    ``accepted`` are extra keys that are allowed but not part of the result (e.g. keys
    of another architecture in a shared architecture config). ``renamed`` maps removed
    keys to a message saying what replaced them.
    """
    accepted = set(accepted)
    for key in config:
        if key in defaults or key in accepted:
            continue
        if renamed and key in renamed:
            raise ConfigError(f"{where} key '{key}' is no longer supported: {renamed[key]}")
        raise ConfigError(unknown_key_message(key, set(defaults) | accepted, where))
    out = dict(defaults)
    out.update({k: v for k, v in config.items() if k in defaults})
    return out
