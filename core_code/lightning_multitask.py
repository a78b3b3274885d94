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

Speed (the per-step cost must stay near a hand-written loop's):
- batches are ``TaskBatch``es that carry their task blocks (``DataModule`` makes
  them; any dict with the three keys works, its blocks are then searched per step);
  losses are computed by slicing each task's block;
- the optimizers and the step machinery are looked up once per fit, not per step;
- when nothing can observe the difference (single device, 32-bit ``Precision``, no
  module or callback overriding ``backward``/``on_before_backward``/
  ``on_after_backward``/``on_before_optimizer_step``), backward and step run directly
  (``loss.backward()``, ``optimizer.step()``), still counted by Lightning's step
  progress (``global_step``); otherwise through ``manual_backward`` and the
  ``LightningOptimizer``, which call those hooks;
- a ``ChunkBatch`` (``DataModule(steps_per_chunk=K)``) runs K optimizer steps in one
  ``training_step``: the same steps, without Lightning's per-step loop around each;
  it stops at ``max_steps`` exactly. Its outputs summarize the chunk: ``losses`` the
  row-weighted mean of each task's loss, ``n`` the rows, ``preds`` the concatenated
  predictions, ``loss`` the mean aggregate, ``steps`` the batches it trained on.

DDP (K processes): each rank holds a share of every global batch (``TaskBatch.
global_rows``, see ``core_code.util.batching``) and the ranks' gradients are averaged
(by DDP, or by hand for per-task optimizers). Each rank's per-task mean enters its
objective weighted by ``rows_on_rank * K / global_rows`` (so the average over ranks is
the global per-task mean, however unevenly the rows split), a task of the global batch
that a rank has no rows of enters as an exact zero, and regularization is added with
weight 1 on every rank for every task of the global batch (identical on all ranks, so
the average keeps it once). K processes thus train the 1-process objective for any
aggregator linear in the task losses (``sum``, ``mean``). The step outputs stay per
rank: ``losses`` the plain per-task means over the rank's rows, ``n`` its row counts;
``loss`` is the rank's weighted objective (its average over ranks is the global one).
With one process nothing of this runs (``global_rows`` is None).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from core_code.util.aggregation import make_aggregator
from core_code.util.batching import ChunkBatch, TaskBatch, batch_blocks
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    extract_taskconfig,
    is_task_specific,
    parse_task_key,
    task_key,
)
from core_code.util.criteria import make_criterion
from core_code.util.default_config import init_config_training
from core_code.util.lightning_compat import can_count_steps, count_step, optimizers_key, raw_optimizer
from core_code.util.optimizers import make_optimizer
from core_code.util.trainer_config import init_config_trainer

Models = Union[torch.nn.Module, Mapping[str, torch.nn.Module]]


_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class _StepMachinery:
    """How ``training_step`` runs backward and the optimizer steps during one fit.

    ``direct`` (the fast path) when nothing observes the difference: a single-device
    strategy with the plain 32-bit ``Precision`` plugin, and neither the module nor a
    callback overriding ``backward`` or the hooks Lightning calls around backward and
    step. Then ``loss.backward()`` and ``optimizer.step()`` run directly, wrapped by the
    ``LightningOptimizer``'s step-progress callbacks (so ``global_step`` and ``max_steps``
    count them as before). Otherwise ``manual_backward`` and ``LightningOptimizer.step``.
    Without a trainer (a step called by hand): the module's own optimizers, stepped
    directly, and the module's ``backward``.
    """

    def __init__(self, module: "LightningMultitask", trainer: Any, key: Any):
        self.trainer, self.key = trainer, key
        if trainer is None:
            self.wrapped = list(module.configure_optimizers())
            self.raw = list(self.wrapped)
            self.direct, self.counted = True, False
        else:
            opts = module.optimizers()
            self.wrapped = list(opts) if isinstance(opts, (list, tuple)) else [opts]
            self.raw = [raw_optimizer(o) for o in self.wrapped]
            self.direct = self._direct_ok(module, trainer)
            self.counted = True
        self.params = [[p for g in opt.param_groups for p in g["params"]] for opt in self.raw]
        if trainer is None:
            self.backward = module.backward
        elif self.direct:
            self.backward = torch.Tensor.backward
        else:
            self.backward = module.manual_backward

    def _direct_ok(self, module: "LightningMultitask", trainer: Any) -> bool:
        try:
            from pytorch_lightning.plugins.precision import Precision
            from pytorch_lightning.strategies import SingleDeviceStrategy
            from pytorch_lightning.utilities.model_helpers import is_overridden
        except ImportError:  # another Lightning: take the general path
            return False
        if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
            return False
        if any(is_overridden(h, module, pl.LightningModule) for h in _STEP_HOOKS + ("backward",)):
            return False
        if any(is_overridden(h, cb, pl.Callback) for cb in trainer.callbacks for h in _STEP_HOOKS):
            return False
        return all(can_count_steps(o) for o in self.wrapped)

    def step(self, i: int) -> None:
        """Step optimizer ``i``."""
        if not self.direct:
            self.wrapped[i].step()
        elif self.counted:
            count_step(self.wrapped[i], self.raw[i].step)  # Lightning's step progress (global_step)
        else:
            self.raw[i].step()


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

    def predict_tasks(self, batch: dict) -> tuple[dict[int, torch.Tensor], dict[int, tuple[int, int]]]:
        """Per-task predictions for a batch: one forward of the shared model, sliced."""
        blocks = batch_blocks(batch)
        return self._predict(batch["x"], blocks), blocks

    def task_losses(self, batch: dict, preds: dict, blocks: dict) -> dict[int, torch.Tensor]:
        """Per-task criterion values (without regularization)."""
        return self._losses(batch["y"], preds, blocks)

    def _predict(self, x: torch.Tensor, blocks: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
        if self.shared:
            out = self.model(x)
            return {t: out[a:b] for t, (a, b) in blocks.items()}
        return {t: self.task_model(t)(x[a:b]) for t, (a, b) in blocks.items()}

    def _losses(self, y: torch.Tensor, preds: dict, blocks: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
        criteria = self._criteria
        return {t: (criteria[t] if t in criteria else self.criterion(t))(preds[t], y[a:b])
                for t, (a, b) in blocks.items()}

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
        steps = self._step_machinery()
        if isinstance(batch, ChunkBatch):
            return self._train_chunk(batch, steps)
        losses, preds, blocks, loss = self._train_batch(batch, steps)
        return {
            "loss": loss,
            "losses": {t: v.detach() for t, v in losses.items()},
            "preds": {t: p.detach() for t, p in preds.items()},
            "n": {t: b - a for t, (a, b) in blocks.items()},
        }

    def _objectives(self, losses: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Each task's loss plus its regularization (the losses themselves when alpha is 0)."""
        reg_tasks = self.__dict__.get("_reg_tasks")
        if reg_tasks is None:
            alpha = self.config_training["regularization_alpha"]
            any_alpha = any(alpha.values()) if isinstance(alpha, Mapping) else bool(alpha)
            reg_tasks = self.__dict__["_reg_tasks"] = {} if any_alpha else False
        if reg_tasks is False:  # no task is regularized
            return losses
        objectives = losses
        for t in losses:
            if t not in reg_tasks:
                reg_tasks[t] = bool(self.task_config(t)["regularization_alpha"])
            if reg_tasks[t]:
                if objectives is losses:
                    objectives = dict(losses)
                objectives[t] = objectives[t] + self.regularization(t)
        return objectives

    def _optimize(self, losses: dict[int, torch.Tensor], steps: "_StepMachinery") -> torch.Tensor:
        """Backward and step on the step's losses (plus regularization); the aggregate loss."""
        objectives = self._objectives(losses)
        if not self.per_task_optimizers:
            steps.raw[0].zero_grad(set_to_none=True)
            total = self.aggregate(objectives)
            steps.backward(total)
            steps.step(0)
            return total
        self._per_task_step(steps, objectives)
        return self.aggregate({t: v.detach() for t, v in objectives.items()})

    def _train_batch(self, batch: dict, steps: "_StepMachinery"):
        """One optimizer step (one per optimizer) on ``batch``: (losses, preds, blocks, detached loss)."""
        preds, blocks = self.predict_tasks(batch)
        losses = self.task_losses(batch, preds, blocks)
        global_rows = getattr(batch, "global_rows", None)
        objective = losses if global_rows is None else self._rank_share(losses, blocks, global_rows)
        return losses, preds, blocks, self._optimize(objective, steps).detach()

    def _rank_share(self, losses: dict[int, torch.Tensor], blocks: dict[int, tuple[int, int]],
                    global_rows: Mapping[int, int]) -> dict[int, torch.Tensor]:
        """This DDP rank's task losses, weighted so their average over ranks is the global batch's.

        ``losses[t]`` is the mean over this rank's n_t rows of task t; the global batch
        has N_t. Weighted by n_t * world / N_t, the ranks' average is the mean over all
        N_t rows. A task of the global batch without rows here enters as an exact zero
        that reaches the task model's parameters (so every task is regularized, every
        aggregate has the same tasks, and DDP gets a gradient for every parameter).
        """
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        out: dict[int, torch.Tensor] = {}
        for t, n_global in global_rows.items():
            if t in losses:
                a, b = blocks[t]
                weight = (b - a) * world / n_global
                out[t] = losses[t] if weight == 1.0 else losses[t] * weight
            else:
                params = [p for p in self.task_model(t).parameters() if p.requires_grad]
                out[t] = torch.stack([p.sum() for p in params]).sum() * 0.0
        for t in losses:  # not in global_rows (a batch that does not describe itself fully)
            out.setdefault(t, losses[t])
        return out

    def _train_chunk(self, chunk: ChunkBatch, steps: "_StepMachinery") -> dict:
        """The chunk's batches one optimizer step each, stopping at ``max_steps``; a summary."""
        trainer = self._trainer
        # Optimizer steps left before max_steps (Lightning checks global_step >= max_steps
        # between its steps; here between the chunk's batches). Each batch steps every optimizer.
        remaining = None
        if trainer is not None and trainer.max_steps is not None and trainer.max_steps >= 0:
            remaining = trainer.max_steps - trainer.global_step
        per_batch = len(steps.raw)
        # Subclasses that override predict_tasks/task_losses get them called with a
        # TaskBatch per step; otherwise the rows are sliced without building one.
        cls = type(self)
        lean = (self.shared and cls.predict_tasks is LightningMultitask.predict_tasks
                and cls.task_losses is LightningMultitask.task_losses)
        # One optimizer: backward has freed each step's graph buffers, so the step's
        # tensors are kept as they are and detached once, at the end. Per-task
        # optimizers retain the graph: detach right away.
        detach_now = self.per_task_optimizers
        x, y = chunk["x"], chunk["y"]
        shares = chunk.global_rows  # None with one process
        records = []
        for i, (a, b, blocks) in enumerate(chunk.steps):
            if remaining is not None:
                if remaining <= 0:
                    break
                remaining -= per_batch
            if lean:
                preds = self._predict(x[a:b], blocks)
                losses = self._losses(y[a:b], preds, blocks)
            else:
                batch = TaskBatch({k: v[a:b] for k, v in chunk.items()}, blocks=blocks,
                                  global_rows=None if shares is None else shares[i])
                preds, _ = self.predict_tasks(batch)
                losses = self.task_losses(batch, preds, blocks)
            if shares is None or shares[i] is None:
                total = self._optimize(losses, steps)
            else:
                total = self._optimize(self._rank_share(losses, blocks, shares[i]), steps)
            if detach_now:
                losses = {t: v.detach() for t, v in losses.items()}
                preds = {t: v.detach() for t, v in preds.items()}
            records.append((losses, preds, blocks, total))
        return self._chunk_summary(records)

    @torch.no_grad()
    def _chunk_summary(self, records: list) -> dict:
        """``loss`` (mean aggregate), per-task ``losses`` (row-weighted means), ``n``, ``preds``, ``steps``."""
        out: dict[str, Any] = {"losses": {}, "n": {}, "preds": {}, "steps": len(records)}
        if not records:
            return out
        out["loss"] = torch.stack([r[3] for r in records]).mean()
        tasks = list(dict.fromkeys(t for r in records for t in r[0]))
        for t in tasks:
            parts = [(r[0][t], r[1][t], r[2][t]) for r in records if t in r[0]]
            rows = [b - a for _, _, (a, b) in parts]
            values = torch.stack([v for v, _, _ in parts])
            if min(rows) == max(rows):
                out["losses"][t] = values.mean()
            else:
                weights = torch.tensor(rows, dtype=values.dtype, device=values.device)
                out["losses"][t] = torch.dot(values, weights) / float(sum(rows))
            out["n"][t] = sum(rows)
            out["preds"][t] = torch.cat([p for _, p, _ in parts])
        return out

    def _per_task_step(self, steps: "_StepMachinery", objectives: Mapping[int, torch.Tensor]) -> None:
        """Each task's gradient from its own loss at the same parameters, then each step."""
        grads: dict[int, list] = {}
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        for i, t in enumerate(self.optimizer_tasks):
            params = steps.params[i]
            if t not in objectives:
                grads[t] = [torch.zeros_like(p) for p in params]
            else:
                gs = torch.autograd.grad(objectives[t], params, retain_graph=True, allow_unused=True)
                grads[t] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
            if world > 1:  # gradients bypass DDP's hooks here: average them by hand
                for g in grads[t]:
                    torch.distributed.all_reduce(g)
                    g.div_(world)
        for i, t in enumerate(self.optimizer_tasks):
            params = steps.params[i]
            for p, g in zip(params, grads[t]):
                p.grad = g
            steps.step(i)
            for p in params:
                p.grad = None

    def _step_machinery(self) -> "_StepMachinery":
        """The optimizers and how to step them, built once per fit (see ``_StepMachinery``)."""
        trainer = self._trainer
        key = optimizers_key(trainer)
        cached = self.__dict__.get("_steps_cache")
        if cached is None or cached.trainer is not trainer or cached.key is not key or (key is None and trainer is not None):
            cached = _StepMachinery(self, trainer, key)
            self.__dict__["_steps_cache"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_steps_cache", None)  # holds the trainer and its optimizer wrappers
        return state

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
