"""Which resolved grid points may train as one ensemble (``group_key``), and the groups."""

from __future__ import annotations

from typing import Any, Optional, Sequence

#: architecture keys that only change forward multipliers / init / learning rates (not shapes).
_ABC_FREE_KEYS = ("list_a", "list_b", "c", "list_c", "list_a_bias", "list_b_bias", "list_c_bias",
                  "parametrization", "bias_tune")
#: data keys that change values, not shapes or batch composition.
_DATA_FREE_KEYS = ("seed", "noise_scale", "f_true", "f_true_callback", "x_min_train", "x_max_train",
                   "x_min_val", "x_max_val", "x_min_test", "x_max_test", "data_generators_train",
                   "data_generators_val", "data_generators_test")


def _frozen(value: Any) -> Any:
    """A hashable, order-stable form of a config value (callables by identity)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if callable(value):
        return ("callable", id(value))
    return repr(value)


def group_key(cfg: dict) -> tuple[Any, Optional[str]]:
    """``(key, reason)``: points with equal keys can train as one ensemble.

    ``reason`` is None for a vectorizable point, else why it stays alone (its key is then unique).
    """
    from core_code.util.config_extractions import is_task_specific
    from core_code.vectorized import MEMBER_KEYS, VECTORIZABLE_RULES, _aggregation_name, per_task_optimizers

    arch, tr, data = cfg["architecture"], cfg["training"], cfg["data"]
    reason = None
    if any(is_task_specific(v) for v in arch.values()):
        reason = "per-task models (task-specific architecture)"
    rules = tr["update_rule"].values() if is_task_specific(tr["update_rule"]) else [tr["update_rule"]]
    if any(r not in VECTORIZABLE_RULES for r in rules):
        reason = f"update_rule {tr['update_rule']!r} (vectorized: {', '.join(VECTORIZABLE_RULES)})"
    agg = _aggregation_name(tr)
    if agg not in ("sum", "mean"):
        reason = f"mtl_method {agg!r} (vectorized: sum, mean)"
    if tr.get("diagnostics_every_n_steps") is not None:
        reason = "diagnostics_every_n_steps is set"
    if tr["batching_strategy"] not in ("data_deterministic", "data_stochastic"):
        reason = f"batching_strategy {tr['batching_strategy']!r}"
    if reason is not None:
        return ("alone", id(cfg)), reason
    free_arch = _ABC_FREE_KEYS if arch.get("architecture_key") == "abcMLP" else ()
    key_tr = {k: v for k, v in tr.items() if k not in MEMBER_KEYS}
    key_tr["_per_task_optimizers"] = per_task_optimizers(tr)
    key_data = {k: v for k, v in data.items() if k not in _DATA_FREE_KEYS}
    key = (_frozen(key_data), _frozen({k: v for k, v in arch.items() if k not in free_arch}), _frozen(key_tr))
    if tr["batching_strategy"] == "data_stochastic" and tr.get("shuffle", True):
        # one shuffled stream over all tasks: the batch composition follows the batching seed
        key = key + (("seed", cfg["custom"]["seed"]),)
    return key, None


def group_points(configs: Sequence[dict]) -> list[list[int]]:
    """Indices into ``configs`` that can share one ensemble, in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(group_key(cfg)[0], []).append(i)
    return list(groups.values())


def describe_groups(configs: Sequence[dict], groups: Sequence[Sequence[int]]) -> str:
    """One line per group: its size, the 1-based grid indices and what its members share / why alone."""
    lines = [f"{len(configs)} grid points in {len(groups)} vectorized group(s):"]
    for g in groups:
        _, reason = group_key(configs[g[0]])
        a = configs[g[0]]["architecture"]
        shape = f"{a.get('architecture_key')} width {a.get('width')} depth {a.get('depth')}"
        idx = ", ".join(str(i + 1) for i in g)
        lines.append(f"  {len(g):>3} x {shape}, batch {configs[g[0]]['training'].get('batch_size')}: configs {idx}"
                     + (f"  (alone: {reason})" if reason else ""))
    return "\n".join(lines)
