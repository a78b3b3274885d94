"""BasicManager: the grid of an experiment, its validation, and running its points.

An experiment's Manager subclasses BasicManager, names the experiment and its custom
config defaults, and may override the ``make_*`` hooks (data, model, callbacks).
Grid order is documented in ``experiments.grid``: the job-array index i (1-based, as
``main.py --num_config``) always means the same configuration.

What a run needs besides the manager lives beside it: ``console`` (what the console
shows), ``run_control`` (signals, heartbeat, how a stop is classified), ``validation``
(checks of resolved configs, GridError), ``checkpoints`` (resume, final, pruning) and
``status`` (the --status table).
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Union

from core_code.util.config_extractions import ConfigError, check_config, complete_config
from core_code.util.default_config import init_config_data, init_config_training
from experiments import checkpoints, grid
from experiments.console import describe_point, os_error, progress_mode
from experiments.provenance import provenance
from experiments.run_control import (
    Heartbeat,
    Interrupted,
    SignalRecorder,
    process_rank,
    record_status,
    run_state_callback,
    stop_status,
    wandb_offline_dir,
)
from experiments.run_state import (
    FINISHED,
    GridChangedError,
    PointLock,
    PointLockedError,
    RunDir,
    jsonable,
    point_id,
    write_json,
    write_text_atomic,
)
from experiments.status import status_table
from experiments.validation import (
    GridError,
    check_tasks_outputs,
    check_trainer_config,
    check_values,
    resolved_lr_exponents,
)

# The grid's dicts, in grid order (see experiments.grid), as error messages name them.
DICT_NAMES = ("configs_data", "configs_architecture", "configs_training", "configs_custom")


class BasicManager:
    """Expands, validates and runs the grid of one experiment."""

    experiment: str = "experiment"
    # Keys accepted in configs_custom, with their defaults.
    CUSTOM_DEFAULTS: dict[str, Any] = {
        "seed": 77,
        "workers": True,
        "logging_epoch_interval": 50,
        "checkpoint_every_n_epochs": 10,
        # Once a point is done: 'all' keeps every checkpoint, 'last' the newest, 'none' none (no --extend).
        # Not part of the point's id (it does not change what is computed).
        "keep_checkpoints": "all",
    }
    # The command-line overrides this manager was made with ({'training.learning_rate': 0.01}), for config.json.
    overrides: dict[str, Any] = {}

    grid_config_lists = staticmethod(grid.grid_config_lists)

    def __init__(
        self,
        configs_data: dict,
        configs_architecture: dict,
        configs_training: dict,
        configs_trainer: Optional[dict] = None,
        configs_custom: Optional[dict] = None,
        runs_dir: Union[str, Path] = "runs",
        wandb_mode: Optional[str] = None,
    ):
        self.configs_data = dict(configs_data)
        self.configs_architecture = dict(configs_architecture)
        self.configs_training = dict(configs_training)
        self.configs_trainer = dict(configs_trainer or {})
        self.configs_custom = dict(configs_custom or {})
        self.runs_dir = Path(runs_dir)
        self.wandb_mode = wandb_mode

    # ------------------------------------------------------------------ grid
    def _dicts(self) -> tuple[dict, dict, dict, dict]:
        return self.configs_data, self.configs_architecture, self.configs_training, self.configs_custom

    def grid_size(self) -> int:
        """Number of grid points."""
        return grid.grid_size(*self._dicts(), names=DICT_NAMES)

    def grid(self) -> list[dict]:
        """Every grid point as ``{'data', 'architecture', 'training', 'custom'}`` (raw)."""
        lists = self.grid_config_lists(*self._dicts(), names=DICT_NAMES)
        return [dict(zip(("data", "architecture", "training", "custom"), parts)) for parts in zip(*lists)]

    def varying_keys(self) -> list[str]:
        """Config keys that take more than one value in the grid."""
        return grid.varying_keys(*self._dicts(), names=DICT_NAMES)

    def point_values(self) -> list[dict]:
        """Per grid point, ``{key: value}`` of the keys that vary (what tells the points apart)."""
        keys = self.varying_keys()
        out = []
        for point in self.grid():
            merged = {k: v for part in point.values() for k, v in part.items()}
            out.append({k: merged[k] for k in keys})
        return out

    def run_config(self, cfg: dict, index: int, tag: Optional[str], with_provenance: bool = True) -> dict:
        """What config.json records of grid point ``index`` (1-based): the resolved config, the
        Trainer settings, id, tag, index, the command-line overrides and the provenance."""
        out = {**cfg, "trainer": self.trainer_config(), "id": point_id(cfg), "tag": tag, "index": index,
               "overrides": dict(self.overrides)}
        if with_provenance:
            out["provenance"] = provenance()
        return out

    def config_json(self, index: int, tag: Optional[str] = None) -> str:
        """The resolved configuration of grid point ``index`` (1-based) as JSON: config.json
        without the provenance. Validates the whole grid first."""
        import json

        from experiments.run_state import strict_jsonable

        configs = self.validate()
        value, _ = strict_jsonable(self.run_config(configs[index - 1], index, tag, with_provenance=False))
        return json.dumps(value, indent=2)

    def resolve(self, point: dict) -> dict:
        """The complete configuration of one grid point, resolved once.

        ``{'experiment', 'data', 'architecture', 'training', 'custom', 'lr_exponents'}``
        (plus ``'data_fingerprint'`` for file data): every default filled, the
        architecture's d_in/d_out taken from the data, its parametrization preset expanded,
        and the learning-rate exponents the preset gives for the configured optimizer(s).
        Every component receives these dicts; the grid point's id, its ``config.json`` and
        its W&B config are computed from them.
        """
        from core_code.create_data import FUNCTION_KEYS, data_fingerprint
        from core_code.create_model import resolve_architecture

        data_cfg = init_config_data(**point["data"])
        data = self.make_data(data_cfg)
        if data_cfg["data_source"] != "function":  # keys only the function source reads
            data_cfg = {k: v for k, v in data_cfg.items() if k not in FUNCTION_KEYS}
        arch = dict(point["architecture"])
        arch.setdefault("d_in", data.d_in)
        arch.setdefault("d_out", data.d_out)
        arch = resolve_architecture(**arch)
        training = init_config_training(**point["training"])
        cfg = {
            "experiment": self.experiment,
            "data": data_cfg,
            "architecture": arch,
            "training": training,
            "custom": complete_config(point["custom"], self.CUSTOM_DEFAULTS, "custom config"),
            "lr_exponents": resolved_lr_exponents(arch, training["update_rule"]),
        }
        fingerprint = data_fingerprint(data_cfg)
        if fingerprint:  # a changed dataset under the same TAG is a changed grid
            cfg["data_fingerprint"] = fingerprint
        if getattr(data, "normalization", None) is not None:
            cfg["data_normalization"] = data.normalization
        return cfg

    def trainer_config(self) -> dict:
        """The Trainer settings of every grid point (defaults filled; not part of the ids)."""
        from core_code.util.trainer_config import init_config_trainer

        # No model-summary table unless asked for (enable_model_summary=True).
        return init_config_trainer(**{"enable_model_summary": False, **self.configs_trainer})

    # ------------------------------------------------------------ validation
    def validate_point(self, cfg: dict) -> None:
        """Raise a ConfigError if a resolved grid point cannot run. Builds the model on the meta device."""
        import torch

        from core_code.lightning_multitask import LightningMultitask
        from core_code.util.batching import deterministic_task_batch_sizes
        from core_code.util.criteria import criterion_dims
        from core_code.util.lightning import DataModule

        data = self.make_data(cfg["data"])
        for key in ("d_in", "d_out"):
            arch_value = cfg["architecture"].get(key)
            if arch_value is not None and arch_value != getattr(data, key):
                raise ConfigError(f"'{key}' is {getattr(data, key)} in the data config but {arch_value} "
                                  "in the architecture config")
        with torch.device("meta"):
            models = self.make_model(cfg["architecture"], data)
            lm = LightningMultitask(models, **cfg["training"])
        lm.check_tasks(data.all_tasks)
        for t in data.all_tasks:
            dims = criterion_dims(lm.criterion(t), data.d_out)
            bad = [d for d in dims if not 0 <= d < data.d_out]
            if bad:
                raise ConfigError(f"training config key 'criterion' of task {t} uses output dims {bad}, "
                                  f"but d_out is {data.d_out}")
        if lm.shared:
            check_tasks_outputs(cfg["data"], {t: criterion_dims(lm.criterion(t), data.d_out) for t in data.all_tasks},
                                data.d_out)
        if cfg["training"]["batching_strategy"] == "data_deterministic":
            deterministic_task_batch_sizes(data.n_samples("train"), cfg["training"]["batch_size"])
        if sum(data.n_samples("train").values()) == 0:
            raise ConfigError("data config key 'n_train' is 0 for every task: there is nothing to train on "
                              "(allowed: an int >= 0 per task, at least one > 0)")
        check_values(cfg)
        DataModule(data, **cfg["training"])  # checks the loader settings (draws no data)
        check_config(**cfg["custom"])

    def validate(self) -> list[dict]:
        """Resolve and validate every grid point, all at once.

        Returns the resolved configurations (grid order); raises GridError listing every
        problem of every point.
        """
        try:
            points = self.grid()
            check_trainer_config(self.trainer_config())
        except ConfigError as err:
            raise GridError(str(err)) from None
        problems, resolved = [], []
        for i, point in enumerate(points):
            try:
                cfg = self.resolve(point)
                self.validate_point(cfg)
                resolved.append(cfg)
            except (ConfigError, ValueError, TypeError) as err:
                problems.append(f"config {i + 1}: {err}")
        if problems:
            raise GridError(f"{len(problems)} of {len(points)} grid points are invalid:\n  " + "\n  ".join(problems))
        return resolved

    # ------------------------------------------------------------------ hooks
    def make_data(self, config_data: dict) -> Any:
        """The data object of a grid point, from its ``data_source`` (CreateData by default)."""
        from core_code.create_data import make_data

        return make_data(**config_data)

    def make_model(self, config_architecture: dict, data: Any) -> Any:
        """The model(s) of a grid point; d_in/d_out default to the data's."""
        from core_code.create_model import create_model

        cfg = dict(config_architecture)
        cfg.setdefault("d_in", data.d_in)
        cfg.setdefault("d_out", data.d_out)
        return create_model(**cfg)

    def logging_callback_class(self) -> type:
        """The experiment's LoggingCallback class (a subclass of ``experiments.logging.LoggingCallback``)."""
        from experiments.logging import LoggingCallback

        return LoggingCallback

    def make_callbacks(self, cfg: dict, run_dir: Path) -> list:
        """Callbacks of a grid point's training (logging + checkpoints by default).

        The logging callback is found by type, so an override may add callbacks in any order.
        """
        from pytorch_lightning.callbacks import ModelCheckpoint

        callbacks = [
            self.logging_callback_class()(run_dir, logging_epoch_interval=cfg["custom"]["logging_epoch_interval"]),
        ]
        every = cfg["custom"]["checkpoint_every_n_epochs"]
        if every is not None:  # None: no periodic checkpoints (a stop still writes interrupted.ckpt)
            # save_top_k=1 (the newest epoch): with 0, Lightning 2.x writes last.ckpt only at the end.
            # No version counter: a resumed run moves last.ckpt on instead of adding last-v1.ckpt.
            callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last="link", save_top_k=1,
                                             every_n_epochs=every, save_on_train_epoch_end=True,
                                             enable_version_counter=False))
        return callbacks

    # -------------------------------------------------------------------- run
    def run(self, experimentbatch_name: str, ind_configs: Union[None, int, list[int]] = None,
            extend: bool = False, vectorize: bool = False) -> dict[int, str]:
        """Run all grid points, or the given 0-based indices; returns {1-based index: status}.

        Validates every point first. Finished points are skipped, unfinished ones resume
        from their checkpoint; one failing point never stops the others. A signal
        (SIGTERM, SIGINT; SIGUSR1 outside Slurm) stops the grid: the running point is
        checkpointed and recorded as 'interrupted', later points are not started, and
        ``Interrupted`` is raised (``exit_code`` 128 + signal number). ``extend``: a done
        point whose trainer max_epochs/max_steps is now larger continues from its last
        checkpoint (recorded in its summary's ``history``); otherwise it is skipped.
        ``vectorize``: new points that share tensor shapes train together as one ensemble
        (``experiments.vectorize.run_vectorized``); the others as above.
        """
        configs = self.validate()
        self._extend = bool(extend)
        try:
            self._values = self.point_values()
        except ConfigError:
            self._values = [{} for _ in configs]
        if ind_configs is None:
            indices = list(range(len(configs)))
        else:
            indices = [ind_configs] if isinstance(ind_configs, int) else list(ind_configs)
            bad = [i for i in indices if not 0 <= i < len(configs)]
            if bad:
                raise GridError(f"grid point indices {bad} out of range: the grid has {len(configs)} points "
                                f"(0-based 0..{len(configs) - 1})")
        run_dir = RunDir(self.runs_dir, experimentbatch_name)
        run_dir.records = process_rank() == 0
        run_dir.ensure_manifest(self.experiment, configs, write=run_dir.records)
        results: dict[int, str] = {}
        self._signals = SignalRecorder()
        self._signals.install()
        try:
            if vectorize:
                from experiments.vectorize import run_vectorized

                return run_vectorized(self, run_dir, configs, indices)
            for i in indices:
                try:
                    results[i + 1] = self.run_point(run_dir, i, configs[i])
                except Interrupted:
                    results[i + 1] = "interrupted"
                    rest = [j + 1 for j in indices if j + 1 not in results]
                    if rest:
                        print(f"[{run_dir.tag}] not started: config {', '.join(map(str, rest))} (still pending; "
                              "rerun the TAG or resubmit with --missing)", file=sys.stderr)
                    raise
        finally:
            self._signals.restore()
        return results

    def run_point(self, run_dir: RunDir, i: int, cfg: dict) -> str:
        """Run grid point ``i`` (0-based) unless finished; record its status and any traceback.

        Returns the point's status, 'skipped' (finished before), 'locked' (another process
        runs it) or 'refused' (its folder holds another configuration's results).
        """
        index = i + 1
        pid = point_id(cfg)
        where = f"[{run_dir.tag}] config {index}"
        try:
            # Only the process that records (global rank 0) locks: the other ranks of a
            # multi-process run are part of the same run of the point.
            lock = run_dir.lock(index).acquire() if run_dir.records else PointLock(run_dir.point_dir(index))
        except PointLockedError as err:
            print(f"{where}: refused: another process is running this point ({err}); going on with the others",
                  file=sys.stderr)
            return "locked"
        except OSError as err:
            print(f"{where}: FAILED: cannot create {err.filename or run_dir.point_dir(index)}: "
                  f"{err.strerror or err}", file=sys.stderr)
            return "failed"
        try:
            if not lock.supported:
                print(f"{where}: warning: no file locking on this file system; a second run of this point "
                      "would not be detected", file=sys.stderr)
            summary = run_dir.summary(index)
            status, recorded = summary.get("status", "pending"), summary.get("id")
            if recorded is not None and recorded != pid:
                print(f"{where}: refused: {run_dir.point_dir(index)} holds the results of point id {recorded}, "
                      f"not {pid}; nothing was overwritten (use a new TAG)", file=sys.stderr)
                return "refused"
            if status in FINISHED and recorded == pid:
                more = self._more_training(summary) if status == "done" else None
                if more is None:
                    print(f"{where}: already {status}, skipped")
                    return "skipped"
                if not getattr(self, "_extend", False):
                    print(f"{where}: already done ({more['what_done']}), skipped; the trainer now asks for "
                          f"{more['what_new']}: add --extend to continue it from its last checkpoint")
                    return "skipped"
                if not run_dir.checkpoint_candidates(index):
                    print(f"{where}: cannot extend: no checkpoint left (keep_checkpoints "
                          f"{cfg['custom'].get('keep_checkpoints')!r}); skipped (use a new TAG to train it anew)",
                          file=sys.stderr)
                    return "skipped"
                history = list(summary.get("history") or [])
                history.append({"event": "extended", "from_epochs": summary.get("epochs"),
                                "to_epochs": more["max_epochs"], "from_steps": summary.get("global_step"),
                                "to_steps": more["max_steps"], "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                record_status(run_dir, index, "done", history=history)
                print(f"{where}: extending from {more['what_done']} to {more['what_new']}")
            return self._run_locked(run_dir, index, cfg)
        finally:
            lock.release()

    def _more_training(self, summary: dict) -> Optional[dict]:
        """What the trainer now asks beyond a done point's recorded end, or None (max_epochs/max_steps)."""
        tc = self.trainer_config()
        max_epochs, max_steps = tc.get("max_epochs"), tc.get("max_steps", -1)
        epochs, steps = summary.get("epochs"), summary.get("global_step")
        if not (isinstance(epochs, int) and isinstance(steps, int)) or str(summary.get("stop", "")).startswith("early"):
            return None
        limit_e, limit_s = max_epochs not in (None, -1), max_steps not in (None, -1)
        room_e, room_s = (not limit_e or max_epochs > epochs), (not limit_s or max_steps > steps)
        if not (limit_e or limit_s) or not (room_e and room_s):
            return None
        if limit_e:
            done, new = f"{epochs} epochs", f"max_epochs={max_epochs}"
        else:
            done, new = f"{steps} steps", f"max_steps={max_steps}"
        return {"max_epochs": max_epochs, "max_steps": max_steps, "what_done": done, "what_new": new}

    def _run_locked(self, run_dir: RunDir, index: int, cfg: dict) -> str:
        where = f"[{run_dir.tag}] config {index}"
        signals = getattr(self, "_signals", None) or SignalRecorder()
        try:
            return self._train_point(run_dir, index, cfg)
        except (KeyboardInterrupt, Interrupted, SystemExit) as exc:
            signum = signals.received or (exc.signum if isinstance(exc, Interrupted) else None)
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = signal.SIGINT
            if signum is None:  # a sys.exit() in user code: a failure, and the process ends
                record_status(run_dir, index, "failed", error=f"SystemExit({exc.code!r})")
                raise
            name = signal.Signals(signum).name
            ckpt = getattr(self, "_last_interrupt_checkpoint", None)
            record_status(run_dir, index, "interrupted", signal=name, checkpoint=ckpt,
                    error=f"stopped by {name}" + ("" if ckpt else " (no checkpoint could be written)"))
            print(f"{where}: interrupted by {name}" + (f"; checkpoint {ckpt}" if ckpt else ""), file=sys.stderr)
            raise Interrupted(signum) from None
        except Exception:  # noqa: BLE001 - recorded, and the grid goes on
            tb = traceback.format_exc()
            last = tb.strip().splitlines()[-1]
            error_txt = run_dir.point_dir(index) / "error.txt"
            try:
                write_text_atomic(error_txt, tb)
            except OSError as err:
                print(f"error: cannot write {error_txt}: {os_error(err)}", file=sys.stderr)
                error_txt = None
            record_status(run_dir, index, "failed", error=last)
            print(f"{where}: FAILED ({last})" + (f"; traceback in {error_txt}" if error_txt else ""))
            return "failed"

    def wandb_logger(self, run_dir: RunDir, index: int, cfg: dict, run_config: dict) -> Any:
        """Point ``index``'s WandbLogger (None when W&B is disabled): project ``logging_<experiment>``,
        run ``<TAG>_config<i>``, id from TAG and the point's id, group = architecture; files in
        ``wandb/`` beside ``runs/``. A vectorized member's run is made by the same call."""
        from experiments.logging import make_wandb_logger

        arch = cfg["architecture"].get("architecture_key", "model")
        return make_wandb_logger(
            project=f"logging_{self.experiment}",
            name=f"{run_dir.tag}_config{index}",
            run_id=f"{run_dir.tag}-{point_id(cfg)}".replace(".", "-"),
            group=str(arch),
            tags=[self.experiment, run_dir.tag, str(arch)],
            config=run_config,
            save_dir=str(self.runs_dir.parent),
            mode=self.wandb_mode,
        )

    def _train_point(self, run_dir: RunDir, index: int, cfg: dict) -> str:
        import pytorch_lightning as pl

        from core_code.lightning_multitask import LightningMultitask
        from core_code.util.lightning import DataModule
        from experiments.logging import LoggingCallback, finish_wandb

        signals = getattr(self, "_signals", None) or SignalRecorder()
        self._last_interrupt_checkpoint = None
        pdir = run_dir.point_dir(index)
        pdir.mkdir(parents=True, exist_ok=True)
        trainer_cfg = self.trainer_config()
        lines = progress_mode(trainer_cfg) == "lines"
        if lines:
            trainer_cfg["enable_progress_bar"] = False
        pid = point_id(cfg)
        # What ran: the resolved configuration, the Trainer settings, overrides and the provenance.
        run_config = self.run_config(cfg, index, run_dir.tag)
        write_json(pdir / "config.json", run_config)
        ckpt, ckpt_history = self._choose_checkpoint(run_dir, index, pid)
        if ckpt is not None:
            checkpoints.check_metrics_csv(pdir, ckpt_history)
        run_dir.write_summary(index, status="running", id=pid, resumed_from=ckpt, error=None, signal=None,
                              started=time.strftime("%Y-%m-%dT%H:%M:%S"), started_unix=round(time.time(), 1),
                              max_epochs=trainer_cfg.get("max_epochs"), max_steps=trainer_cfg.get("max_steps", -1))
        values = (getattr(self, "_values", None) or [])
        values = values[index - 1] if len(values) >= index else {}
        print(f"[{run_dir.tag}] config {index}" + (f" ({describe_point(values)})" if values else "")
              + (f": resuming from {ckpt}" if ckpt else ": starting") + f"; run folder {pdir}", flush=True)
        heartbeat = Heartbeat(run_dir, index)
        heartbeat.start()
        try:
            pl.seed_everything(cfg["custom"]["seed"], workers=cfg["custom"]["workers"], verbose=False)
            data = self.make_data(cfg["data"])
            models = self.make_model(cfg["architecture"], data)
            data_module = DataModule(data, **cfg["training"])
            module = LightningMultitask(models, **cfg["training"])
            module.save_hyperparameters(jsonable(run_config), logger=False)  # into every checkpoint
            callbacks = self.make_callbacks(cfg, pdir)
            log_cb = next((cb for cb in callbacks if isinstance(cb, LoggingCallback)), None)
            if log_cb is not None and values and getattr(log_cb, "title_suffix", "absent") is None:
                log_cb.title_suffix = describe_point(values)  # the varying values in every plot title
            state_cb = run_state_callback(self, run_dir, index, signals, lines=lines)
            logger = self.wandb_logger(run_dir, index, cfg, run_config)  # unset 'anonymous' already dropped
            offline_dir = None
            try:
                signals.graceful = True
                try:
                    # checkpoint_every_n_epochs None: no periodic checkpoints, not even Lightning's default one
                    off = {"enable_checkpointing": False} if cfg["custom"]["checkpoint_every_n_epochs"] is None else {}
                    trainer = module.fit(data_module, logger=logger, callbacks=[*callbacks, state_cb],
                                         ckpt_path=ckpt, **{"default_root_dir": str(pdir), **off, **trainer_cfg})
                finally:
                    signals.graceful = False
                signals.check()  # a signal that came after the last batch still stops this point
                diverged = log_cb.diverged if log_cb is not None else None
                status, note = stop_status(trainer, diverged)
                if status == "done" and cfg["custom"].get("keep_checkpoints", "all") != "none":
                    checkpoints.save_final_checkpoint(run_dir, index, trainer)
                if status in FINISHED and sum(data.n_samples("test").values()) > 0:
                    trainer.test(module, datamodule=data_module, verbose=False)
                    signals.check()
                offline_dir = wandb_offline_dir(logger)
            finally:
                finish_wandb()
        finally:
            heartbeat.stop()
        fields: dict[str, Any] = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                                  "final": log_cb.final_metrics() if log_cb is not None else {},
                                  "diverged": diverged, "stop": note,
                                  # what steps_per_chunk ('auto' by default) became for this fit
                                  "steps_per_chunk": data_module.chunk_steps}
        if status == "time_limit":
            fields["checkpoint"] = self._last_interrupt_checkpoint
        if status == "failed":
            fields["error"] = note
        run_dir.write_summary(index, status=status, **fields)
        if status == "done":
            checkpoints.prune_checkpoints(run_dir, index, cfg["custom"].get("keep_checkpoints", "all"))
        print(f"[{run_dir.tag}] config {index}: {status} after {trainer.current_epoch} epochs ({note}) -> {pdir}")
        if offline_dir is not None:
            print(f"[{run_dir.tag}] config {index}: W&B offline run in {offline_dir}; upload it with: "
                  f"wandb sync {offline_dir}")
        return status

    def _choose_checkpoint(self, run_dir: RunDir, index: int, pid: str) -> tuple[Optional[str], list]:
        """The checkpoint point ``index`` resumes from and its history (``checkpoints.choose_checkpoint``)."""
        return checkpoints.choose_checkpoint(run_dir, index, pid)

    # --------------------------------------------------------------- status
    def status_table(self, experimentbatch_name: str) -> str:
        """The --status table of the TAG's grid points (``experiments.status.status_table``)."""
        return status_table(self.runs_dir, experimentbatch_name)

    def missing(self, experimentbatch_name: str, check_grid: bool = True) -> list[int]:
        """1-based indices of the TAG's grid points that are not finished (all, for a new TAG).

        Unfinished: every status but done/diverged (pending, running, stale, failed,
        interrupted, time_limit). ``check_grid``: raises GridChangedError when the TAG holds
        another grid than this manager's (a missing manifest is checked against the points'
        records); without it the TAG's manifest alone says what its grid is.
        """
        run_dir = RunDir(self.runs_dir, experimentbatch_name)
        manifest = run_dir.manifest()
        if not check_grid and manifest is not None:
            return [i for i, _, s in run_dir.statuses(manifest) if s not in FINISHED]
        configs = self.validate()
        manifest = run_dir.ensure_manifest(self.experiment, configs, write=False)
        return [i for i, _, s in run_dir.statuses(manifest) if s not in FINISHED]


__all__ = ["BasicManager", "GridError", "GridChangedError", "Interrupted", "FINISHED"]
