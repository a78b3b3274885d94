"""Vectorized grid points (``--vectorize``): group resolved points, train each group as one ensemble.

Two calls (see ``core_code.vectorized`` for the ensemble itself)::

    groups = group_points(configs)            # list of index lists (into ``configs``)
    print(describe_groups(configs, groups))
    for group in groups:
        results = train_group(manager, [configs[i] for i in group], manager.trainer_config())
        for i, r in zip(group, results): ...  # r.status, r.history, r.final, r.diverged, r.save_checkpoint(path)

``configs`` are resolved grid points (``BasicManager.resolve``). Points share a group when
everything that fixes tensor shapes and batch composition agrees (``group_key``): data
sizes and dims, the architecture up to its abc exponents and ``bias_tune``, the training
config up to ``learning_rate`` and ``regularization_alpha``. Seeds (custom and data),
noise, target functions and data ranges may differ. Points that can never be vectorized
(per-task models, custom optimizers, MTL methods other than sum/mean, ...) form groups of
one, with the reason in ``group_key``'s second value; a group of one trains through the
same ensemble code (the lead may prefer the ordinary path for those).

Every member is built as its single run builds it: ``seed_everything(custom seed)``, then
``make_data``, ``make_model``, and the batching seed ``DataModule`` would take
(``torch.initial_seed() % 2**31``); so member k's batches, data and initial weights are
those of the one-point run.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

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


@dataclass
class MemberResult:
    """Everything the one-point path records for one member of a vectorized group.

    ``status``: 'done', 'diverged', 'time_limit' or 'failed' (as ``experiments.run_control.stop_status``);
    ``history``: per-epoch metric rows (the LoggingCallback's ``history``); ``final``: its
    ``final_metrics()`` (last row, test losses, baselines); ``diverged``: None or
    ``{'task', 'epoch', 'split', 'step'}``; ``state_dict``: a ``LightningMultitask``
    state_dict; ``optimizer_states``: the single run's optimizer state_dicts;
    ``checkpoint``: a Lightning checkpoint a single run resumes from (None if diverged).
    """

    index: int
    status: str
    stop: str
    epochs: int
    global_step: int
    history: list[dict]
    final: dict
    diverged: Optional[dict]
    baselines: dict
    state_dict: dict
    optimizer_states: list[dict]
    checkpoint: Optional[dict] = field(default=None, repr=False)

    def summary_fields(self) -> dict[str, Any]:
        """The fields ``run_dir.write_summary`` gets in the one-point path (besides status)."""
        return {"epochs": self.epochs, "global_step": self.global_step, "final": self.final,
                "diverged": self.diverged, "stop": self.stop, "vectorized": True}

    def save_checkpoint(self, path: Union[str, Path]) -> Optional[Path]:
        """Write ``checkpoint`` (atomically) to ``path``; None when there is none (diverged)."""
        import torch

        if self.checkpoint is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.checkpoint, tmp)
        tmp.replace(path)
        return path


def _build_member(manager: Any, cfg: dict) -> tuple[Any, Any, int]:
    """(data, model, batching seed) exactly as the point's single run builds them."""
    import pytorch_lightning as pl
    import torch

    pl.seed_everything(cfg["custom"]["seed"], workers=cfg["custom"]["workers"], verbose=False)
    data = manager.make_data(cfg["data"])
    model = manager.make_model(cfg["architecture"], data)
    return data, model, int(torch.initial_seed() % 2**31)


def _in_domain(datas: Sequence[Any], dm: Any) -> tuple[dict, list[dict]]:
    """Per split and task the members' in-box row masks; per member the boxes."""
    from experiments.logging.callback import in_box, training_box

    boxes = [{int(t): b for t in getattr(d, "all_tasks", []) if (b := training_box(d, int(t))) is not None}
             for d in datas]
    masks: dict[str, dict[int, list]] = {}
    for split in ("val", "test"):
        tensors = dm.split(split)
        from core_code.util.batching import task_blocks

        for t, (a, b) in task_blocks(tensors[0]["task_activity"]).items():
            if all(t in bx for bx in boxes):
                masks.setdefault(split, {})[t] = [in_box(ts["x"][a:b], bx[t]) for ts, bx in zip(tensors, boxes)]
    return masks, boxes


def train_group(manager: Any, configs: Sequence[dict], trainer_config: Optional[dict] = None,
                hyper_parameters: Optional[Sequence[dict]] = None, impl: str = "auto",
                logging_state_key: str = "LoggingCallback", callbacks: Sequence[Any] = ()) -> list[MemberResult]:
    """Train the resolved points ``configs`` (one group of ``group_points``) as one ensemble.

    ``manager`` gives ``make_data`` and ``make_model``; ``trainer_config`` the Trainer
    settings (e.g. ``manager.trainer_config()``; logger, checkpointing and model summary
    are turned off, devices 'auto' becomes 1). ``hyper_parameters[k]`` goes into member
    k's checkpoint (the single run's ``save_hyperparameters`` dict, e.g. the run config with
    its id). ``logging_state_key`` names the LoggingCallback's entry in the checkpoint's
    ``callbacks`` (its ``state_key``). ``callbacks`` are extra Lightning callbacks of the
    ensemble's Trainer (e.g. a heartbeat). Returns one ``MemberResult`` per config.
    """
    import pytorch_lightning as pl
    import torch

    from core_code.util.trainer_config import init_config_trainer
    from core_code.vectorized import VectorizedDataModule, VectorizedMultitask
    from experiments.logging.callback import baseline_losses
    from experiments.run_control import stop_status

    members = [_build_member(manager, cfg) for cfg in configs]
    datas = [m[0] for m in members]
    seeds = [m[2] for m in members]
    module = VectorizedMultitask([m[1] for m in members], [cfg["training"] for cfg in configs], impl=impl)
    dm = VectorizedDataModule(datas, seeds, **configs[0]["training"])
    dm.setup()
    masks, boxes = _in_domain(datas, dm)
    module.set_in_domain_masks(masks)
    baselines = [baseline_losses(dm.split("train")[k], dm.split("val")[k], module.criterion, boxes[k])
                 for k in range(len(configs))]
    tc = init_config_trainer(**(trainer_config or {}))
    if tc.get("devices") == "auto":
        tc["devices"] = 1
    if tc.get("num_nodes", 1) != 1 or tc.get("strategy") not in ("auto", None) or tc.get("devices") not in (1, [0], "1"):
        raise ValueError(f"vectorized groups run on one device, got devices={tc.get('devices')!r}, "
                         f"strategy={tc.get('strategy')!r}, num_nodes={tc.get('num_nodes', 1)!r}")
    recorder = _epoch_steps_callback()
    tc.update(logger=False, enable_checkpointing=False, enable_model_summary=False,
              callbacks=[recorder, *callbacks, *(tc.get("callbacks") or [])])
    trainer = pl.Trainer(**tc)
    trainer.fit(module, datamodule=dm)
    test_rows = len(dm.split("test")[0]["task_activity"])
    finished = trainer.current_epoch >= (trainer.max_epochs or 0) or (
        trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps)
    if test_rows > 0 and finished:
        trainer.test(module, datamodule=dm, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer.save_checkpoint(Path(tmp) / "ensemble.ckpt", weights_only=False)
        base = torch.load(Path(tmp) / "ensemble.ckpt", map_location="cpu", weights_only=False)
    results = []
    for k in range(len(configs)):
        div = module.diverged(k)
        status, note = stop_status(trainer, div)
        history = module.member_history(k)
        final = dict(history[-1]) if history else {}
        if div is None:
            final.update(module.test_metrics[k])
        final.update(baselines[k])
        if div is not None:
            epochs = div["epoch"] + 1
            global_step = recorder.steps.get(div["epoch"], trainer.global_step)
        else:
            epochs, global_step = trainer.current_epoch, trainer.global_step
        model = module.member_model(k)
        opt_states = module.member_optimizer_states(k, model)
        state_dict = module.member_state_dict(k)
        ckpt = None
        if div is None:
            ckpt = {key: copy.deepcopy(v) for key, v in base.items()
                    if key not in ("state_dict", "optimizer_states", "vectorized", "VectorizedDataModule",
                                   "hyper_parameters", "callbacks")}
            ckpt["state_dict"] = state_dict
            ckpt["optimizer_states"] = opt_states
            ckpt["DataModule"] = {"seed": seeds[k]}
            ckpt["callbacks"] = {logging_state_key: {"history": history, "diverged": None}}
            if hyper_parameters is not None:
                ckpt["hyper_parameters"] = hyper_parameters[k]
        results.append(MemberResult(index=k, status=status, stop=note, epochs=epochs, global_step=global_step,
                                    history=history, final=final, diverged=div, baselines=baselines[k],
                                    state_dict=state_dict, optimizer_states=opt_states, checkpoint=ckpt))
    return results


def _epoch_steps_callback() -> Any:
    """A callback recording ``global_step`` at each training epoch's end (a diverged member's last step)."""
    import pytorch_lightning as pl

    class _EpochSteps(pl.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: dict[int, int] = {}

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.steps[trainer.current_epoch] = trainer.global_step

    return _EpochSteps()


def run_vectorized(manager: Any, run_dir: Any, configs: Sequence[dict], indices: Sequence[int]) -> dict[int, str]:
    """``main.py --vectorize``: run the 0-based ``indices`` of the resolved ``configs`` in groups.

    Returns ``{1-based index: status}``. A point trains in an ensemble only when it is new:
    finished points, points with checkpoints to resume from, points another process holds
    and points that cannot share a group go through ``manager.run_point`` (the ordinary
    path, with its skip, resume, lock and refusal rules). Every member of an ensemble is
    written out as its own run would be: config.json, metrics.csv, baselines.json,
    summary.json (``vectorized: true``) and checkpoints/last.ckpt, which resumes as a
    single run. A failing ensemble marks each of its members failed, with the traceback.
    """
    import sys
    import traceback

    from experiments.logging.metrics import MetricsCSV
    from experiments.run_state import PointLockedError, point_id, write_json, write_text_atomic

    results: dict[int, str] = {}
    fresh = [i for i in indices
             if not run_dir.summary(i + 1).get("id") and not run_dir.checkpoint_candidates(i + 1)]
    sub = [configs[i] for i in fresh]
    groups = [[fresh[j] for j in g] for g in group_points(sub)] if sub else []
    if groups:
        print(f"[{run_dir.tag}] vectorized groups:\n" + describe_groups(sub, group_points(sub)))
    alone = [i for i in indices if i not in fresh] + [g[0] for g in groups if len(g) == 1]
    for group in (g for g in groups if len(g) > 1):
        locks, members = [], []
        for i in group:
            try:
                locks.append(run_dir.lock(i + 1).acquire())
                members.append(i)
            except PointLockedError:
                alone.append(i)  # the ordinary path refuses it with its message
        try:
            if len(members) < 2:
                alone.extend(members)
                continue
            run_configs = [manager.run_config(configs[i], i + 1, run_dir.tag) for i in members]
            for i, rc in zip(members, run_configs):
                write_json(run_dir.point_dir(i + 1) / "config.json", rc)
                run_dir.write_summary(i + 1, status="running", id=point_id(configs[i]), vectorized=True)
            print(f"[{run_dir.tag}] configs {', '.join(str(i + 1) for i in members)}: training as one ensemble")
            try:
                out = train_group(manager, [configs[i] for i in members], manager.trainer_config(),
                                  hyper_parameters=run_configs)
            except Exception:  # noqa: BLE001 - recorded for every member; the grid goes on
                tb = traceback.format_exc()
                for i in members:
                    write_text_atomic(run_dir.point_dir(i + 1) / "error.txt", tb)
                    run_dir.write_summary(i + 1, status="failed", error=tb.strip().splitlines()[-1])
                    results[i + 1] = "failed"
                print(f"[{run_dir.tag}] ensemble of configs {members} FAILED: {tb.strip().splitlines()[-1]}",
                      file=sys.stderr)
                continue
            except BaseException as stop:  # a signal (Interrupted), Ctrl-C, SystemExit
                # A stopped ensemble keeps no partial checkpoint: its members start afresh on a rerun.
                for i in members:
                    run_dir.write_summary(i + 1, status="interrupted", error=f"{type(stop).__name__} during "
                                          "a vectorized ensemble (no checkpoint: reruns start it afresh)")
                raise
            for i, r in zip(members, out):
                pdir = run_dir.point_dir(i + 1)
                MetricsCSV(pdir / "metrics.csv").rewrite(r.history)
                write_json(pdir / "baselines.json", r.baselines)
                r.save_checkpoint(pdir / "checkpoints" / "last.ckpt")
                run_dir.write_summary(i + 1, status=r.status, id=point_id(configs[i]), **r.summary_fields())
                results[i + 1] = r.status
                print(f"[{run_dir.tag}] config {i + 1}: {r.status} after {r.epochs} epochs ({r.stop}) -> {pdir}")
        finally:
            for lock in locks:
                lock.release()
    for i in sorted(set(alone)):
        results[i + 1] = manager.run_point(run_dir, i, configs[i])
    return dict(sorted(results.items()))


__all__ = ["group_key", "group_points", "describe_groups", "train_group", "run_vectorized", "MemberResult"]
