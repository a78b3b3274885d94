"""BasicManager: the grid of an experiment, its validation, and running its points.

An experiment's Manager subclasses BasicManager, names the experiment and its custom
config defaults, and may override the ``make_*`` hooks (data, model, callbacks).
Grid order is documented in ``experiments.grid``: the job-array index i (1-based, as
``main.py --num_config``) always means the same configuration.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Optional, Union

from core_code.util.config_extractions import ConfigError, check_config, complete_config
from core_code.util.default_config import init_config_data, init_config_training
from experiments import grid
from experiments.provenance import provenance
from experiments.run_state import GridChangedError, RunDir, count_statuses, jsonable, point_id, write_json

# The grid's dicts, in grid order (see experiments.grid), as error messages name them.
DICT_NAMES = ("configs_data", "configs_architecture", "configs_training", "configs_custom")

# Statuses of a grid point that a rerun of its TAG keeps (a diverged run diverges again).
FINISHED = ("done", "diverged")


class GridError(ConfigError):
    """One or more grid points are invalid; the message lists every problem."""


class BasicManager:
    """Expands, validates and runs the grid of one experiment."""

    experiment: str = "experiment"
    # Keys accepted in configs_custom, with their defaults.
    CUSTOM_DEFAULTS: dict[str, Any] = {
        "seed": 77,
        "workers": True,
        "logging_epoch_interval": 50,
        "checkpoint_every_n_epochs": 10,
    }

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

    def resolve(self, point: dict) -> dict:
        """The complete configuration of one grid point, resolved once.

        ``{'experiment', 'data', 'architecture', 'training', 'custom'}``: every default
        filled, the architecture's d_in/d_out taken from the data and its parametrization
        preset expanded. Every component receives these dicts; the grid point's id, its
        ``config.json`` and its W&B config are computed from them.
        """
        data_cfg = init_config_data(**point["data"])
        data = self.make_data(data_cfg)
        arch = dict(point["architecture"])
        arch.setdefault("d_in", data.d_in)
        arch.setdefault("d_out", data.d_out)
        from core_code.create_model import resolve_architecture

        return {
            "experiment": self.experiment,
            "data": data_cfg,
            "architecture": resolve_architecture(**arch),
            "training": init_config_training(**point["training"]),
            "custom": complete_config(point["custom"], self.CUSTOM_DEFAULTS, "custom config"),
        }

    def trainer_config(self) -> dict:
        """The Trainer settings of every grid point (defaults filled; not part of the ids)."""
        from core_code.util.trainer_config import init_config_trainer

        return init_config_trainer(**self.configs_trainer)

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
        if cfg["training"]["batching_strategy"] == "data_deterministic":
            deterministic_task_batch_sizes(data.n_samples("train"), cfg["training"]["batch_size"])
        DataModule(data, **cfg["training"])  # checks the loader settings (draws no data)
        check_config(**cfg["custom"])

    def validate(self) -> list[dict]:
        """Resolve and validate every grid point, all at once.

        Returns the resolved configurations (grid order); raises GridError listing every
        problem of every point.
        """
        try:
            points = self.grid()
            self.trainer_config()
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
    def make_data(self, config_data: dict):
        """The data object of a grid point (CreateData by default)."""
        from core_code.create_data import CreateData

        return CreateData(**config_data)

    def make_model(self, config_architecture: dict, data):
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

        return [
            self.logging_callback_class()(run_dir, logging_epoch_interval=cfg["custom"]["logging_epoch_interval"]),
            # save_top_k=1 (the newest epoch): with 0, Lightning 2.x writes last.ckpt only at the end.
            ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last="link", save_top_k=1,
                            every_n_epochs=cfg["custom"]["checkpoint_every_n_epochs"],
                            save_on_train_epoch_end=True),
        ]

    # -------------------------------------------------------------------- run
    def run(self, experimentbatch_name: str, ind_configs: Union[None, int, list[int]] = None) -> dict[int, str]:
        """Run all grid points, or the given 0-based indices; returns {1-based index: status}.

        Validates every point first. Finished points are skipped, unfinished ones resume
        from their checkpoint; one failing point never stops the others.
        """
        configs = self.validate()
        if ind_configs is None:
            indices = list(range(len(configs)))
        else:
            indices = [ind_configs] if isinstance(ind_configs, int) else list(ind_configs)
            bad = [i for i in indices if not 0 <= i < len(configs)]
            if bad:
                raise GridError(f"grid point indices {bad} out of range: the grid has {len(configs)} points "
                                f"(0-based 0..{len(configs) - 1})")
        run_dir = RunDir(self.runs_dir, experimentbatch_name)
        run_dir.ensure_manifest(self.experiment, configs)
        results = {}
        for i in indices:
            results[i + 1] = self.run_point(run_dir, i, configs[i])
        return results

    def run_point(self, run_dir: RunDir, i: int, cfg: dict) -> str:
        """Run grid point ``i`` (0-based) unless done; record its status and any traceback."""
        index = i + 1
        status = run_dir.status(index)
        if status in FINISHED:
            print(f"[{run_dir.tag}] config {index}: already {status}, skipped")
            return "skipped"
        try:
            status = self._train_point(run_dir, index, cfg)
        except KeyboardInterrupt:
            run_dir.write_summary(index, status="failed", error="interrupted")
            raise
        except Exception:  # noqa: BLE001 - recorded, and the grid goes on
            tb = traceback.format_exc()
            (run_dir.point_dir(index) / "error.txt").write_text(tb)
            run_dir.write_summary(index, status="failed", error=tb.strip().splitlines()[-1])
            print(f"[{run_dir.tag}] config {index}: FAILED ({tb.strip().splitlines()[-1]}); "
                  f"traceback in {run_dir.point_dir(index) / 'error.txt'}")
            status = "failed"
        return status

    def _train_point(self, run_dir: RunDir, index: int, cfg: dict) -> str:
        import pytorch_lightning as pl

        from core_code.lightning_multitask import LightningMultitask
        from core_code.util.lightning import DataModule
        from experiments.logging import LoggingCallback, finish_wandb, make_wandb_logger

        pdir = run_dir.point_dir(index)
        pdir.mkdir(parents=True, exist_ok=True)
        trainer_cfg = self.trainer_config()
        # What ran: the resolved configuration, the Trainer settings and the provenance.
        run_config = {**cfg, "trainer": trainer_cfg, "id": point_id(cfg), "tag": run_dir.tag, "index": index,
                      "provenance": provenance()}
        write_json(pdir / "config.json", run_config)
        ckpt = run_dir.resume_checkpoint(index)
        ckpt = self._readable_checkpoint(ckpt)
        run_dir.write_summary(index, status="running", id=point_id(cfg), resumed_from=str(ckpt) if ckpt else None)

        pl.seed_everything(cfg["custom"]["seed"], workers=cfg["custom"]["workers"], verbose=False)
        data = self.make_data(cfg["data"])
        models = self.make_model(cfg["architecture"], data)
        data_module = DataModule(data, **cfg["training"])
        module = LightningMultitask(models, **cfg["training"])
        module.save_hyperparameters(jsonable(run_config), logger=False)  # into every checkpoint
        callbacks = self.make_callbacks(cfg, pdir)
        arch = cfg["architecture"].get("architecture_key", "model")
        logger = make_wandb_logger(
            project=f"logging_{self.experiment}",
            name=f"{run_dir.tag}_config{index}",
            run_id=f"{run_dir.tag}-{point_id(cfg)}".replace(".", "-"),
            group=str(arch),
            tags=[self.experiment, run_dir.tag, str(arch)],
            config=run_config,
            save_dir=str(self.runs_dir.parent),  # W&B files in wandb/ beside runs/
            mode=self.wandb_mode,
        )
        try:
            trainer = module.fit(data_module, logger=logger, callbacks=callbacks, ckpt_path=ckpt,
                                 **{"default_root_dir": str(pdir), **trainer_cfg})
            if sum(data.n_samples("test").values()) > 0:
                trainer.test(module, datamodule=data_module, verbose=False)
        finally:
            finish_wandb()
        log_cb = next((cb for cb in callbacks if isinstance(cb, LoggingCallback)), None)
        diverged = log_cb.diverged if log_cb is not None else None
        status = "diverged" if diverged else "done"
        if trainer.interrupted and not diverged:
            status = "failed"
        run_dir.write_summary(index, status=status, epochs=trainer.current_epoch,
                              final=log_cb.final_metrics() if log_cb is not None else {}, diverged=diverged)
        print(f"[{run_dir.tag}] config {index}: {status} after {trainer.current_epoch} epochs -> {pdir}")
        return status

    @staticmethod
    def _readable_checkpoint(path: Optional[Path]) -> Optional[str]:
        """``path`` if it loads; otherwise report it and return None (restart from scratch)."""
        if path is None:
            return None
        import torch

        try:
            # mmap: checks the file without reading the tensors (Lightning loads it next)
            torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: start again
            print(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); restarting this point "
                  "from scratch")
            path.rename(path.with_suffix(".ckpt.unreadable"))
            return None
        return str(path)

    # --------------------------------------------------------------- status
    def status_table(self, experimentbatch_name: str) -> str:
        """Aligned table of the TAG's grid points with their status."""
        run_dir = RunDir(self.runs_dir, experimentbatch_name)
        rows = run_dir.statuses()
        if not rows:
            raise GridError(f"no runs found under {run_dir.root} (no manifest.json)")
        lines = [f"{'index':>5}  {'id':<10}  {'status':<8}  epochs"]
        for index, pid, status in rows:
            epochs = run_dir.summary(index).get("epochs", "")
            lines.append(f"{index:>5}  {pid:<10}  {status:<8}  {epochs}")
        counts = count_statuses(s for _, _, s in rows)
        lines.append("  ".join(f"{k}: {v}" for k, v in counts.items()))
        return "\n".join(lines)

    def missing(self, experimentbatch_name: str) -> list[int]:
        """1-based indices of the TAG's grid points that are not done (all, for a new TAG).

        Raises GridChangedError when the TAG holds another grid than this experiment's.
        """
        run_dir = RunDir(self.runs_dir, experimentbatch_name)
        configs = self.validate()
        if run_dir.manifest() is None:
            return list(range(1, len(configs) + 1))
        run_dir.ensure_manifest(self.experiment, configs)
        return [i for i, _, s in run_dir.statuses() if s not in FINISHED]


__all__ = ["BasicManager", "GridError", "GridChangedError"]
