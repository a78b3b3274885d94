"""The multi-task LightningModule: per-task criteria, regularization and optimizers.

``LightningMultitask(models, **config_training)`` trains one ``nn.Module`` shared by
all tasks, or a dict ``{'task_0': model, ...}`` of per-task models, on batches in the
``create_data`` layout (each task's rows one contiguous block).

Optimization (manual, so per-task optimizers have exact semantics):
- neither ``update_rule`` nor ``learning_rate`` task-specific: ONE optimizer minimising
  the aggregate of the task losses (``loss_aggregation``, default the sum);
- otherwise one optimizer per task: every task's gradient is computed from that task's
  loss alone at the same parameters, then each task's optimizer applies its own update
  with its own gradient (shared model + SGD: p <- p - lr_0 g_0 - lr_1 g_1).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from core_code.util.aggregation import make_aggregator
from core_code.util.batching import task_blocks
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    extract_taskconfig,
    is_task_specific,
    parse_task_key,
    task_key,
)
from core_code.util.criteria import make_criterion
from core_code.util.default_config import init_config_trainer, init_config_training
from core_code.util.optimizers import make_optimizer

Models = Union[torch.nn.Module, Mapping[str, torch.nn.Module]]


class LightningMultitask(pl.LightningModule):
    """Multi-task training of ``models`` (see module docstring)."""

    def __init__(self, models: Models, **config_training: Any):
        super().__init__()
        self.automatic_optimization = False
        self.config_training = init_config_training(**config_training)
        self.config_tasks = check_config(**self.config_training)
        self.shared = not isinstance(models, Mapping)
        if self.shared:
            self.model = models
        else:
            bad = [k for k in models if parse_task_key(k) is None]
            if bad:
                raise ConfigError(f"per-task models must be keyed 'task_0', 'task_1', ...; got {bad}")
            self.models = torch.nn.ModuleDict(dict(models))
        self.per_task_optimizers = any(
            is_task_specific(self.config_training[k]) for k in ("update_rule", "learning_rate")
        )
        self.aggregate = make_aggregator(self.config_training["loss_aggregation"])
        self._task_cfg: dict[int, dict] = {}
        self._criteria: dict[int, Any] = {}
        for t in sorted(self.config_tasks or {0}):  # validate the criteria up front
            self.criterion(t)
        self.configure_optimizers()

    # ------------------------------------------------------------- per task
    def task_config(self, task: int) -> dict:
        """The plain training config of one task."""
        if task not in self._task_cfg:
            if self.config_tasks is not None and task not in self.config_tasks:
                raise ConfigError(f"task {task} is not among the training config's tasks {sorted(self.config_tasks)}")
            self._task_cfg[task] = extract_taskconfig(self.config_training, task)
        return self._task_cfg[task]

    def criterion(self, task: int):
        """The criterion of one task (built once)."""
        if task not in self._criteria:
            cfg = self.task_config(task)
            self._criteria[task] = make_criterion(cfg["criterion"], cfg["criterion_callback"])
        return self._criteria[task]

    def task_model(self, task: int) -> torch.nn.Module:
        """The model that serves ``task``."""
        if self.shared:
            return self.model
        key = task_key(task)
        if key not in self.models:
            raise ConfigError(f"no model for {key}; per-task models exist for {sorted(self.models)}")
        return self.models[key]

    @property
    def tasks(self) -> Optional[list[int]]:
        """Tasks fixed by the configuration or the per-task models (None: any)."""
        if self.config_tasks is not None:
            return sorted(self.config_tasks)
        if not self.shared:
            return sorted(parse_task_key(k) for k in self.models)
        return None

    def regularization(self, task: int) -> Optional[torch.Tensor]:
        """alpha * sum over the task model's parameters of ||p||_ord^2 (None if alpha == 0)."""
        cfg = self.task_config(task)
        alpha = cfg["regularization_alpha"]
        if not alpha:
            return None
        params = [p for p in self.task_model(task).parameters() if p.requires_grad]
        norms = torch._foreach_norm(params, cfg["regularization_ord"])
        return alpha * torch.stack(norms).pow(2).sum()

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, task: Optional[int] = None) -> torch.Tensor:
        """Predictions of the shared model, or of ``task``'s model."""
        return self.model(x) if self.shared else self.task_model(0 if task is None else task)(x)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Task blocks are found on the CPU, before the batch moves to an accelerator.
        batch = dict(batch)
        batch["_blocks"] = task_blocks(batch["task_activity"])
        return batch

    def predict_tasks(self, batch: dict) -> tuple[dict[int, torch.Tensor], dict[int, tuple[int, int]]]:
        """Per-task predictions for a batch: one forward of the shared model, sliced."""
        blocks = batch.get("_blocks") or task_blocks(batch["task_activity"])
        x = batch["x"]
        if self.shared:
            out = self.model(x)
            preds = {t: out[a:b] for t, (a, b) in blocks.items()}
        else:
            preds = {t: self.task_model(t)(x[a:b]) for t, (a, b) in blocks.items()}
        return preds, blocks

    def task_losses(self, batch: dict, preds: dict, blocks: dict) -> dict[int, torch.Tensor]:
        """Per-task criterion values (without regularization)."""
        y = batch["y"]
        return {t: self.criterion(t)(preds[t], y[a:b]) for t, (a, b) in blocks.items()}

    # ------------------------------------------------------------- training
    def configure_optimizers(self):
        if hasattr(self, "_optimizers_built"):
            return self._optimizers_built
        cfg = self.config_training
        if not self.per_task_optimizers:
            modules = [self.model] if self.shared else list(self.models.values())
            opts = [make_optimizer(modules, cfg["update_rule"], cfg["learning_rate"], cfg["update_rule_callback"])]
            self.optimizer_tasks = None
        else:
            self.optimizer_tasks = sorted(self.config_tasks)
            opts = []
            for t in self.optimizer_tasks:
                tc = self.task_config(t)
                opts.append(make_optimizer([self.task_model(t)], tc["update_rule"], tc["learning_rate"],
                                           tc["update_rule_callback"]))
        self._optimizers_built = opts
        return opts

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        preds, blocks = self.predict_tasks(batch)
        losses = self.task_losses(batch, preds, blocks)
        objectives = dict(losses)
        for t in losses:
            reg = self.regularization(t)
            if reg is not None:
                objectives[t] = objectives[t] + reg
        opts = self.optimizers()
        if not isinstance(opts, list):
            opts = [opts]
        if not self.per_task_optimizers:
            opt = opts[0]
            opt.zero_grad(set_to_none=True)
            self.manual_backward(self.aggregate(objectives))
            opt.step()
        else:
            self._per_task_step(opts, objectives)
        return {
            "loss": self.aggregate({t: v.detach() for t, v in objectives.items()}),
            "losses": {t: v.detach() for t, v in losses.items()},
            "preds": {t: p.detach() for t, p in preds.items()},
            "n": {t: b - a for t, (a, b) in blocks.items()},
        }

    def _per_task_step(self, opts: Sequence, objectives: Mapping[int, torch.Tensor]) -> None:
        """Each task's gradient from its own loss at the same parameters, then each step."""
        grads: dict[int, list] = {}
        world = self.trainer.world_size if self._trainer is not None else 1
        for t, opt in zip(self.optimizer_tasks, opts):
            params = [p for g in opt.param_groups for p in g["params"]]
            if t not in objectives:
                grads[t] = [torch.zeros_like(p) for p in params]
            else:
                gs = torch.autograd.grad(objectives[t], params, retain_graph=True, allow_unused=True)
                grads[t] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
            if world > 1:  # gradients bypass DDP's hooks here: average them by hand
                for g in grads[t]:
                    torch.distributed.all_reduce(g)
                    g.div_(world)
        for t, opt in zip(self.optimizer_tasks, opts):
            params = [p for g in opt.param_groups for p in g["params"]]
            for p, g in zip(params, grads[t]):
                p.grad = g
            opt.step()
            for p in params:
                p.grad = None

    # ----------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict) -> dict:
        preds, blocks = self.predict_tasks(batch)
        losses = self.task_losses(batch, preds, blocks)
        return {"losses": losses, "preds": preds, "n": {t: b - a for t, (a, b) in blocks.items()}}

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch)

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # RNG states, so a resumed run continues the same random stream.
        import random

        import numpy as np

        # Plain types only: Lightning loads checkpoints with torch.load(weights_only=True).
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(),
                                    "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
                                    "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        import random

        import numpy as np

        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            name, keys, pos, has_gauss, gauss = states["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(states["python"])

    # ------------------------------------------------------------------ fit
    def check_tasks(self, data_tasks: Sequence[int]) -> None:
        """Raise ConfigError when the data's tasks and the training config's tasks differ."""
        data_tasks = sorted(data_tasks)
        if self.config_tasks is not None and sorted(self.config_tasks) != data_tasks:
            raise ConfigError(
                f"the data has tasks {data_tasks} but the training config's task-specific values "
                f"name tasks {sorted(self.config_tasks)}"
            )
        if not self.shared:
            model_tasks = sorted(parse_task_key(k) for k in self.models)
            if model_tasks != data_tasks:
                raise ConfigError(f"the data has tasks {data_tasks} but per-task models exist for tasks {model_tasks}")

    def fit(
        self,
        data_module: pl.LightningDataModule,
        logger: Any = None,
        callbacks: Optional[list] = None,
        ckpt_path: Optional[str] = None,
        **config_trainer: Any,
    ) -> pl.Trainer:
        """Check tasks, then train with ``pl.Trainer(**init_config_trainer(**config_trainer))``."""
        self.check_tasks(data_module.data.all_tasks)
        config = init_config_trainer(**config_trainer)
        config["logger"] = logger if logger is not None else config.get("logger", False)
        config["callbacks"] = list(callbacks or []) + list(config.get("callbacks") or [])
        trainer = pl.Trainer(**config)
        trainer.fit(self, datamodule=data_module, ckpt_path=ckpt_path)
        return trainer
