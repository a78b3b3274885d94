"""One group of points trained as one ensemble (``train_group``), with what each member
writes besides its training: figures, logger rows, and the epoch-end state a stopped
ensemble's members resume from."""

from __future__ import annotations

import copy
import functools
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

#: the most of an ensemble's training time spent keeping its state at epoch ends (what a
#: stopped ensemble's members resume from; see ``_ensemble_class``).
SNAPSHOT_SHARE = 0.02


@dataclass
class MemberPlots:
    """Fit figures of one member, drawn as its single run's LoggingCallback draws them.

    ``out_dir``: the point's folder (figures go to ``out_dir/plots``, named as
    ``experiments.logging.plots`` names them); ``every``: the callback's
    ``logging_epoch_interval`` (figures every ``every`` epochs and at the last epoch);
    ``title_suffix``: in every title (the point's varying values, ``describe_point``).
    """

    out_dir: Path
    every: int = 50
    title_suffix: Optional[str] = None


@dataclass
class MemberResult:
    """Everything the one-point path records for one member of a vectorized group.

    ``status``: 'done', 'diverged', 'time_limit' or 'failed' (as ``experiments.run_control.stop_status``),
    or 'interrupted' (given to ``train_group``'s ``on_interrupt``); ``history``: per-epoch
    metric rows (the LoggingCallback's ``history``); ``final``: its ``final_metrics()``
    (last row, test losses, baselines); ``diverged``: None or ``{'task', 'epoch', 'split',
    'step'}``; ``state_dict``: a ``LightningMultitask`` state_dict; ``optimizer_states``:
    the single run's optimizer state_dicts; ``checkpoint``: a Lightning checkpoint a single
    run resumes from (None if diverged); ``log_rows``: ``(step, metrics)`` in the order and
    on the step axis the single run sends them to its loggers (baselines, per epoch the
    validation then the training losses, figures as PNG paths, test losses); ``figures``:
    the PNG files of the member's fit figures; ``steps_per_chunk``: as the ensemble's fit
    resolved it (the single run's summary records its own).
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
    log_rows: list[tuple[int, dict]] = field(default_factory=list, repr=False)
    figures: list[Path] = field(default_factory=list, repr=False)
    steps_per_chunk: Any = None

    def summary_fields(self) -> dict[str, Any]:
        """The fields ``run_dir.write_summary`` gets in the one-point path (besides status)."""
        out = {"epochs": self.epochs, "global_step": self.global_step, "final": self.final,
               "diverged": self.diverged, "stop": self.stop, "vectorized": True}
        if self.steps_per_chunk is not None:  # what steps_per_chunk became for the ensemble's fit
            out["steps_per_chunk"] = self.steps_per_chunk
        return out

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
    from core_code.util.batching import task_blocks
    from experiments.logging.callback import in_box, training_box

    boxes = [{int(t): b for t in getattr(d, "all_tasks", []) if (b := training_box(d, int(t))) is not None}
             for d in datas]
    masks: dict[str, dict[int, list]] = {}
    for split in ("val", "test"):
        tensors = dm.split(split)
        for t, (a, b) in task_blocks(tensors[0]["task_activity"]).items():
            if all(t in bx for bx in boxes):
                masks.setdefault(split, {})[t] = [in_box(ts["x"][a:b], bx[t]) for ts, bx in zip(tensors, boxes)]
    return masks, boxes


def train_group(manager: Any, configs: Sequence[dict], trainer_config: Optional[dict] = None,
                hyper_parameters: Optional[Sequence[dict]] = None, impl: str = "auto",
                logging_state_key: str = "LoggingCallback", callbacks: Sequence[Any] = (),
                plots: Optional[Sequence[Optional[MemberPlots]]] = None,
                on_interrupt: Optional[Callable[[list[MemberResult], BaseException], None]] = None,
                ) -> list[MemberResult]:
    """Train the resolved points ``configs`` (one group of ``group_points``) as one ensemble.

    ``manager`` gives ``make_data`` and ``make_model``; ``trainer_config`` the Trainer
    settings (e.g. ``manager.trainer_config()``; logger, checkpointing and model summary
    are turned off, devices 'auto' becomes 1). ``hyper_parameters[k]`` goes into member
    k's checkpoint (the single run's ``save_hyperparameters`` dict, e.g. the run config with
    its id). ``logging_state_key`` names the LoggingCallback's entry in the checkpoint's
    ``callbacks`` (its ``state_key``). ``callbacks`` are extra Lightning callbacks of the
    ensemble's Trainer (e.g. a heartbeat). ``plots[k]`` (None: none) draws member k's fit
    figures while the ensemble trains, when its single run would draw them. Returns one
    ``MemberResult`` per config.

    A signal (``experiments.run_control.Interrupted``), Ctrl-C or ``SystemExit`` that stops
    the ensemble propagates; before, ``on_interrupt(results, exception)`` gets one result
    per member at the last epoch boundary the ensemble kept in memory (every epoch end,
    unless epochs are so short that this would cost more than ``SNAPSHOT_SHARE`` of the
    training time): status 'interrupted' with a ``checkpoint`` that resumes as a single
    run, exactly (None when the first epoch had not ended), or 'diverged'.
    """
    import pytorch_lightning as pl

    from core_code.util.lightning_compat import batches_that_stepped
    from core_code.util.trainer_config import init_config_trainer
    from core_code.vectorized import VectorizedDataModule
    from experiments.logging.callback import baseline_losses
    from experiments.run_control import Interrupted, stop_status

    members = [_build_member(manager, cfg) for cfg in configs]
    datas = [m[0] for m in members]
    seeds = [m[2] for m in members]
    module = _ensemble_class()([m[1] for m in members], [cfg["training"] for cfg in configs], impl=impl)
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
    recorder = _steps_callback()
    plotter = _plots_callback(configs, plots) if plots is not None and any(p is not None for p in plots) else None
    tc.update(logger=False, enable_checkpointing=False, enable_model_summary=False,
              callbacks=[recorder, *([plotter] if plotter is not None else []), *callbacks,
                         *(tc.get("callbacks") or [])])
    trainer = pl.Trainer(**tc)
    group = _Group(module, recorder, plotter, baselines, seeds, hyper_parameters, logging_state_key)
    try:
        trainer.fit(module, datamodule=dm)
        test_rows = len(dm.split("test")[0]["task_activity"])
        finished = trainer.current_epoch >= (trainer.max_epochs or 0) or (
            trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps)
        tested = test_rows > 0 and finished
        if tested:
            trainer.test(module, datamodule=dm, verbose=False)
    except (KeyboardInterrupt, SystemExit, Interrupted) as stop:
        if on_interrupt is not None:
            try:
                stopped = group.stopped_results()
            except Exception as err:  # noqa: BLE001 - must not hide the stop itself
                print(f"vectorized ensemble: cannot cut its members at the last epoch boundary "
                      f"({type(err).__name__}: {err}); they get no checkpoint", file=sys.stderr)
            else:
                on_interrupt(stopped, stop)
        raise
    base = _dump_checkpoint(trainer)  # in memory: what save_checkpoint would write
    test_step = batches_that_stepped(trainer)
    results = []
    for k in range(len(configs)):
        div = module.diverged(k)
        status, note = stop_status(trainer, div)
        if div is not None:
            epochs = div["epoch"] + 1
            global_step = recorder.steps.get(div["epoch"], trainer.global_step)
        else:
            epochs, global_step = trainer.current_epoch, trainer.global_step
        test = module.test_metrics[k] if tested and div is None else None
        result = group.result(k, base, status, note, epochs, global_step, test=test,
                              test_step=test_step, test_epoch=trainer.current_epoch)
        result.steps_per_chunk = dm.chunk_steps
        results.append(result)
    return results


class _Group:
    """One ensemble's bookkeeping: builds its members' results (at the end, or when stopped)."""

    def __init__(self, module: Any, recorder: Any, plotter: Any, baselines: list[dict], seeds: list[int],
                 hyper_parameters: Optional[Sequence[dict]], logging_state_key: str) -> None:
        self.module, self.recorder, self.plotter = module, recorder, plotter
        self.baselines, self.seeds = baselines, seeds
        self.hyper_parameters, self.logging_state_key = hyper_parameters, logging_state_key

    def result(self, k: int, base: Optional[dict], status: str, note: str, epochs: int, global_step: int,
               test: Optional[dict] = None, test_step: int = 0, test_epoch: int = 0,
               upto_epoch: Optional[int] = None) -> MemberResult:
        """Member k's result from the module's current state; ``base``: the ensemble's checkpoint."""
        module = self.module
        div = module.diverged(k)
        history = module.member_history(k)
        final = dict(history[-1]) if history else {}
        if test:
            final.update(test)
        final.update(self.baselines[k])
        opt_states = module.member_optimizer_states(k)
        state_dict = module.member_state_dict(k)
        ckpt = None
        if div is None and base is not None:
            ckpt = {key: copy.deepcopy(v) for key, v in base.items()
                    if key not in ("state_dict", "optimizer_states", "vectorized", "VectorizedDataModule",
                                   "hyper_parameters", "callbacks")}
            ckpt["state_dict"] = state_dict
            ckpt["optimizer_states"] = opt_states
            ckpt["DataModule"] = {"seed": self.seeds[k]}
            ckpt["callbacks"] = {self.logging_state_key: {"history": history, "diverged": None}}
            if self.hyper_parameters is not None:
                ckpt["hyper_parameters"] = self.hyper_parameters[k]
        images = self.plotter.images[k] if self.plotter is not None else []
        if upto_epoch is not None:
            images = [im for im in images if im[0] <= upto_epoch]
        rows = _log_rows(history, self.baselines[k], self.recorder, images, test, test_step, test_epoch)
        figures = [p for im in images for p in im[3].values()]
        return MemberResult(index=k, status=status, stop=note, epochs=epochs, global_step=global_step,
                            history=history, final=final, diverged=div, baselines=self.baselines[k],
                            state_dict=state_dict, optimizer_states=opt_states, checkpoint=ckpt,
                            log_rows=rows, figures=figures)

    def stopped_results(self) -> list[MemberResult]:
        """Every member at the last finished epoch boundary (the module is set back to it)."""
        from experiments.run_control import stop_status

        module = self.module
        snap = getattr(module, "epoch_snapshot", None)
        if snap is None:  # stopped in the first epoch: nothing to resume from
            return [MemberResult(index=k, status="interrupted", stop="stopped in the first epoch", epochs=0,
                                 global_step=0, history=[], final=dict(self.baselines[k]), diverged=None,
                                 baselines=self.baselines[k], state_dict={}, optimizer_states=[],
                                 log_rows=_log_rows([], self.baselines[k], self.recorder, [], None, 0, 0))
                    for k in range(module.K)]
        _restore(module, snap)
        epoch = int(snap["epoch"])
        out = []
        for k in range(module.K):
            div = module.diverged(k)
            if div is not None:
                _, note = stop_status(None, div)
                out.append(self.result(k, None, "diverged", note, div["epoch"] + 1,
                                       self.recorder.steps.get(div["epoch"], int(snap["global_step"])),
                                       upto_epoch=epoch))
            else:
                out.append(self.result(k, snap, "interrupted", f"stopped; checkpoint after epoch {epoch + 1}",
                                       epoch + 1, int(snap["global_step"]), upto_epoch=epoch))
        return out


def _log_rows(history: list[dict], baselines: dict, recorder: Any, images: list[tuple], test: Optional[dict],
              test_step: int, test_epoch: int) -> list[tuple[int, dict]]:
    """``(step, metrics)`` as the single run's LoggingCallback sends them to its loggers.

    Baselines at the start; per epoch the validation losses (at validation's end), the
    training losses (at the epoch's end), then that epoch's figures; the last epoch's
    figures at the end of training; the test losses. Every row but the baselines carries
    ``epoch`` (0-based; the test row: epochs trained, as Lightning logs it).
    """
    rows: list[tuple[int, dict]] = []
    if baselines:
        rows.append((recorder.log_start, dict(baselines)))
    for row in history:
        e = int(row["epoch"])
        val = {k: v for k, v in row.items() if k.startswith("validation/")}
        train = {k: v for k, v in row.items() if k != "epoch" and k not in val}
        train_step = recorder.train_log.get(e, 0)
        if val:
            rows.append((recorder.val_log.get(e, train_step), {**val, "epoch": e}))
        if train:
            rows.append((train_step, {**train, "epoch": e}))
        rows += [(step, {**imgs, "epoch": ep}) for ep, step, at_end, imgs in images if not at_end and ep == e]
    rows += [(step, {**imgs, "epoch": ep}) for ep, step, at_end, imgs in images if at_end]
    if test:
        rows.append((test_step, {**test, "epoch": test_epoch}))
    return rows


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor detached and copied to the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        items = [(k, _cpu_copy(v)) for k, v in obj.items()]
        try:
            return type(obj)(items)
        except TypeError:
            return dict(items)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _dump_checkpoint(trainer: Any) -> dict:
    """The Trainer's checkpoint dict now (what ``save_checkpoint`` would write), copied to the CPU.

    ``lightning_compat.dump_checkpoint`` (private Lightning); without it, through a
    temporary file. The ensemble's ``vectorized`` entry keeps only the length of each
    member's history (rows are only ever appended; ``_restore`` cuts them back), its
    divergences and step count: copying the histories would cost more every epoch.
    """
    from core_code.util.lightning_compat import dump_checkpoint

    ckpt = dump_checkpoint(trainer)
    if ckpt is None:
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(Path(tmp) / "epoch.ckpt", weights_only=False)
            ckpt = torch.load(Path(tmp) / "epoch.ckpt", map_location="cpu", weights_only=False)
    state = ckpt.pop("vectorized", None) or {}
    snap = _cpu_copy(ckpt)
    snap["vectorized"] = {"history_len": [len(h) for h in state.get("history", [])],
                          "diverged": copy.deepcopy(state.get("diverged", [])),
                          "steps_done": int(state.get("steps_done", 0))}
    return snap


def _restore(module: Any, snap: dict) -> None:
    """Set an ensemble module (weights, optimizer states, histories) back to a ``_dump_checkpoint``."""
    module.load_state_dict(snap["state_dict"])
    for opt, state in zip(module.configure_optimizers(), snap.get("optimizer_states") or []):
        opt.load_state_dict(state)
    vec = snap["vectorized"]
    module.on_load_checkpoint({"vectorized": {
        "history": [module.member_history(k)[:n] for k, n in enumerate(vec["history_len"])],
        "diverged": copy.deepcopy(vec["diverged"]), "steps_done": vec["steps_done"]}})


@functools.lru_cache(maxsize=None)
def _ensemble_class() -> type:
    """``VectorizedMultitask`` keeping, at epoch ends, the ensemble's checkpoint in memory."""
    from core_code.vectorized import VectorizedMultitask

    class SnapshotMultitask(VectorizedMultitask):
        """A ``VectorizedMultitask`` whose ``epoch_snapshot`` is its state at the end of an epoch.

        Taken after the module's own epoch-end hook (the epoch's histories and divergences
        are recorded), where a single run's epoch-end ``ModelCheckpoint`` saves: a member
        cut from it resumes as a single run at the next epoch, exactly. A stopped ensemble
        resumes from it, not from the state where it stopped: a signal stops an ensemble at
        once, possibly inside an optimizer step, so only an epoch-end state is whole.

        Taken at the first epoch's end, then whenever the time since the last one is at
        least ``1 / SNAPSHOT_SHARE`` times what the last one took: every epoch unless
        epochs are very short, and never more than ``SNAPSHOT_SHARE`` of the training time.
        """

        epoch_snapshot: Optional[dict] = None
        _snapshot_cost = 0.0
        _snapshot_done = 0.0

        def on_train_epoch_end(self) -> None:
            super().on_train_epoch_end()
            now = time.monotonic()
            if self.epoch_snapshot is not None and (now - self._snapshot_done) * SNAPSHOT_SHARE < self._snapshot_cost:
                return
            self.epoch_snapshot = None  # never a stale one if the dump fails
            self.epoch_snapshot = _dump_checkpoint(self.trainer)
            self._snapshot_done = time.monotonic()
            self._snapshot_cost = self._snapshot_done - now

    return SnapshotMultitask


def _steps_callback() -> Any:
    """A callback recording the ensemble's steps: ``steps[epoch]`` (``global_step`` at the epoch's
    end, a diverged member's last step) and the logging step axis (``batches_that_stepped``)
    at the start (``log_start``), at each validation end (``val_log``) and epoch end (``train_log``)."""
    import pytorch_lightning as pl

    from core_code.util.lightning_compat import batches_that_stepped

    class _Steps(pl.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: dict[int, int] = {}
            self.log_start = 0
            self.val_log: dict[int, int] = {}
            self.train_log: dict[int, int] = {}

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.log_start = batches_that_stepped(trainer)

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self.val_log[trainer.current_epoch] = batches_that_stepped(trainer)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.steps[trainer.current_epoch] = trainer.global_step
            self.train_log[trainer.current_epoch] = batches_that_stepped(trainer)

    return _Steps()


def _plots_callback(configs: Sequence[dict], specs: Sequence[Optional[MemberPlots]]) -> Any:
    """A callback drawing each member's fit figures when its single run's LoggingCallback would:
    every ``every`` epochs and at the last epoch (``images[k]``: ``(epoch, step, at_end, {key: png})``).

    Members that stopped (diverged) get none from then on: their single run would draw a
    non-finite model.
    """
    import pytorch_lightning as pl

    from core_code.lightning_multitask import LightningMultitask
    from core_code.util.lightning_compat import batches_that_stepped
    from experiments.logging import plots

    class _MemberPlots(pl.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.specs = list(specs)
            self.images: list[list[tuple]] = [[] for _ in self.specs]
            self._plotted: list[set[int]] = [set() for _ in self.specs]
            self._epoch: Optional[int] = None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._epoch = trainer.current_epoch

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = trainer.current_epoch
            for k, spec in enumerate(self.specs):
                if spec is not None and (epoch + 1) % spec.every == 0:
                    self._plot(trainer, pl_module, k, epoch, at_end=False)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = self._epoch if self._epoch is not None else max(trainer.current_epoch - 1, 0)
            for k, spec in enumerate(self.specs):
                if spec is not None and epoch not in self._plotted[k]:
                    self._plot(trainer, pl_module, k, epoch, at_end=True)

        def _plot(self, trainer: Any, module: Any, k: int, epoch: int, at_end: bool) -> None:
            self._plotted[k].add(epoch)
            if module.diverged(k) is not None or not bool(module.active[k]):
                return
            tensors, data = trainer.datamodule.tensors[k], trainer.datamodule.datas[k]
            if "val" not in tensors or len(tensors["val"]["x"]) == 0:
                return
            spec = self.specs[k]
            lm = LightningMultitask(module.member_model(k), **configs[k]["training"]).to(module.device)
            images: dict[str, Path] = {}
            # file names and titles count epochs trained (1-based), as the single run's
            for key, name, fig in plots.model_snapshot_figures(lm, tensors, data, epoch + 1, spec.title_suffix,
                                                               plots.forward_context(trainer)):
                stem = Path(spec.out_dir) / plots.PLOT_DIR / name
                plots.save_figure(fig, stem)
                images[key] = stem.with_suffix(".png")
                fig.clf()
            self.images[k].append((epoch, batches_that_stepped(trainer), at_end, images))

    return _MemberPlots()


def heartbeat_callback(run_dir: Any, indices: Sequence[int]) -> Any:
    """A callback refreshing every member's heartbeat at each epoch end, as a single run's run-state
    callback does (``heartbeat_epoch``, ``epochs_done``: what --status shows)."""
    import pytorch_lightning as pl

    class _Heartbeats(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            for index in indices:
                try:
                    run_dir.heartbeat(index, heartbeat_epoch=trainer.current_epoch,
                                      epochs_done=trainer.current_epoch + 1)
                except OSError:
                    pass  # a missed heartbeat is no reason to stop training

    return _Heartbeats()
