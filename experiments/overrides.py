"""Command-line overrides of config keys, Hydra-style: ``section.key=value``.

    python main.py --experiment tinyTest training.learning_rate=0.01 architecture.width=[64,128]
    python main.py custom.seed=[0,1,2] trainer.max_epochs=10
    python main.py "training.learning_rate={'task_0': 0.1, 'task_1': 0.01}"
    python main.py training.learning_rate.task_0=0.1      # one task's value

Sections: ``data``, ``architecture``, ``training``, ``custom``, ``trainer``
(``--config_trainer k:v`` is another spelling of ``trainer.k=v``). A value is read as a
Python literal (``ast.literal_eval``: numbers, strings, lists, tuples, dicts, None,
True/False; also lower-case true/false), else it is the plain string
(``data.f_true=sine``; ``custom.keep_checkpoints=none`` is the string 'none', ``None`` is None). A list is a grid axis exactly as in configs.py: to give a
list-valued parameter, wrap it in another list (``architecture.list_a=[[0,0.5,0.5]]``).
A key that is in several config dicts (``d_in`` in data and architecture) is one grid
axis: an override sets it in every dict that has it. Unknown sections and keys are
refused with the closest valid names, before anything runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from core_code.util.config_extractions import ConfigError, closest_keys, is_task_specific, unknown_key_message

SECTIONS = ("data", "architecture", "training", "custom", "trainer")

# section.key=value or section.key.task_N=value; the key part is a dotted name.
OVERRIDE_RE = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\.(task_\d+))?=(.*)", re.DOTALL)
# What looks like an override (to tell it from a --config_trainer key:value item).
LOOKS_LIKE_OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")


class OverrideError(ConfigError):
    """A command-line override cannot be applied (one line; exit code 2)."""


@dataclass(frozen=True)
class Override:
    section: str
    key: str
    value: Any
    task: Optional[str] = None  # 'task_0': set only that task's value
    text: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}" + (f".{self.task}" if self.task else "")


def parse_literal(text: str) -> Any:
    """A Python literal if ``text`` is one (``0.01``, ``[64,128]``, ``{'task_0': 1}``), else ``text``."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def is_override(item: str) -> bool:
    """True if ``item`` is written like an override (``a.b=...``), not like ``key:value``."""
    return bool(LOOKS_LIKE_OVERRIDE.match(item)) and "." in item.partition("=")[0]


def parse_override(item: str) -> Override:
    """``'training.learning_rate=0.01'`` -> Override; OverrideError for a malformed item."""
    m = OVERRIDE_RE.fullmatch(item)
    if not m:
        raise OverrideError(f"override {item!r} is not section.key=value (e.g. training.learning_rate=0.01, "
                            f"architecture.width=[64,128]); sections: {', '.join(SECTIONS)}")
    section, key, task, value = m.groups()
    if section not in SECTIONS:
        close = closest_keys(section, SECTIONS)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise OverrideError(f"override {item!r}: unknown config section '{section}'.{hint} "
                            f"Sections: {', '.join(SECTIONS)}")
    return Override(section, key, parse_literal(value), task, item)


def parse_overrides(items: Iterable[str]) -> list[Override]:
    return [parse_override(item) for item in items]


def trainer_items_as_overrides(parsed: Mapping[str, Any]) -> list[Override]:
    """``--config_trainer`` items (already parsed to a dict) as trainer overrides."""
    return [Override("trainer", k, v, None, f"--config_trainer {k}:{v}") for k, v in parsed.items()]


def valid_keys(section: str, custom_defaults: Mapping[str, Any]) -> tuple[set[str], Mapping[str, str]]:
    """The keys a section accepts and its removed keys (key -> what replaced it)."""
    if section == "data":
        from core_code.util.default_config import DATA_DEFAULTS

        return set(DATA_DEFAULTS), {}
    if section == "training":
        from core_code.util.default_config import TRAINING_DEFAULTS, TRAINING_REMOVED_KEYS

        return set(TRAINING_DEFAULTS), TRAINING_REMOVED_KEYS
    if section == "architecture":
        from core_code.create_model import architecture_keys

        return architecture_keys() | {"architecture_key"}, {}
    if section == "custom":
        return set(custom_defaults), {}
    from core_code.util.trainer_config import TRAINER_REMOVED_KEYS, trainer_keys

    return set(trainer_keys()), TRAINER_REMOVED_KEYS


def check_key(ov: Override, custom_defaults: Mapping[str, Any]) -> None:
    """OverrideError ("Did you mean ...") unless the override's section accepts its key."""
    valid, removed = valid_keys(ov.section, custom_defaults)
    if ov.key in valid:
        return
    where = f"{ov.section} config"
    if ov.key in removed:
        raise OverrideError(f"{ov.text}: {where} key '{ov.key}' is no longer supported: {removed[ov.key]}")
    raise OverrideError(f"{ov.text}: {unknown_key_message(ov.key, valid, where)}")


def _tasks_named(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    names: set[str] = set()
    for d in dicts:
        for v in d.values():
            for w in (v if isinstance(v, list) else [v]):
                if is_task_specific(w):
                    names |= {str(k) for k in w}
    return sorted(names)


def _task_value(ov: Override, old: Any, grid_dicts: Sequence[Mapping[str, Any]]) -> dict:
    """The task-specific dict an ``section.key.task_N=value`` override gives."""
    if isinstance(old, list):
        raise OverrideError(f"{ov.text}: '{ov.section}.{ov.key}' is a grid axis {old!r}; give the "
                            f"whole value instead ({ov.section}.{ov.key}=...)")
    if is_task_specific(old):
        if ov.task not in old:
            raise OverrideError(f"{ov.text}: '{ov.section}.{ov.key}' names the tasks "
                                f"{', '.join(sorted(map(str, old)))}, not {ov.task}")
        return {**old, ov.task: ov.value}
    tasks = _tasks_named(grid_dicts)
    if ov.task not in tasks:
        raise OverrideError(f"{ov.text}: the config names the tasks {', '.join(tasks) or '(none)'}; "
                            f"{ov.task} is not one of them (give {ov.section}.{ov.key}={{'task_0': ..., ...}})")
    return {t: (ov.value if t == ov.task else old) for t in tasks}


def apply_overrides(configs: Mapping[str, dict], overrides: Sequence[Override],
                    custom_defaults: Mapping[str, Any], defaults: Optional[Mapping[str, Mapping[str, Any]]] = None
                    ) -> dict[str, dict]:
    """New config dicts (``{'data': ..., 'architecture': ..., 'training': ..., 'custom': ..., 'trainer': ...}``)
    with the overrides applied in order (a later one wins). Every key is checked first.

    ``defaults`` (section -> defaults) give the old value for a per-task override of a key
    the configs.py does not set.
    """
    for ov in overrides:
        check_key(ov, custom_defaults)
    out = {s: dict(configs.get(s) or {}) for s in SECTIONS}
    grid_sections = ("data", "architecture", "training", "custom")
    for ov in overrides:
        value = ov.value
        if ov.task is not None:
            if ov.section == "trainer":
                raise OverrideError(f"{ov.text}: trainer settings are not task-specific")
            old = out[ov.section].get(ov.key, (defaults or {}).get(ov.section, {}).get(ov.key))
            value = _task_value(ov, old, [out[s] for s in grid_sections])
        targets = [ov.section]
        if ov.section in grid_sections:  # a key in several grid dicts is one axis: set it everywhere
            targets += [s for s in grid_sections if s != ov.section and ov.key in out[s]]
        for s in targets:
            out[s][ov.key] = value
    return out


def recorded(overrides: Sequence[Override]) -> dict[str, Any]:
    """``{'training.learning_rate': 0.01, ...}``: the overrides as config.json records them."""
    return {ov.name: ov.value for ov in overrides}


__all__ = ["Override", "OverrideError", "SECTIONS", "apply_overrides", "is_override", "parse_literal",
           "parse_override", "parse_overrides", "recorded", "trainer_items_as_overrides"]
