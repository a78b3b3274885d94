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

from core_code.mtl import make_mtl_method
from core_code.mtl.diagnostics import Diagnostics
from core_code.mtl.partition import Partition
from core_code.util.aggregation import sum_losses
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
from core_code.util.lightning import keep_batch_attributes
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
    """Multi-task training of ``models`` (see module docstring).

    ``takes_chunks``: ``training_step`` runs a ``ChunkBatch`` (several optimizer steps);
    a subclass that overrides ``training_step`` gets one batch per step unless it says so too.
    """

    takes_chunks = True

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
        self._init_mtl()
        self._task_cfg: dict[int, dict] = {}
        self._criteria: dict[int, Any] = {}
        for t in sorted(self.config_tasks or {0}):  # validate the criteria up front
            self.criterion(t)
        self.configure_optimizers()

    def _init_mtl(self) -> None:
        """The multi-task method (``mtl_method``) and the diagnostics (``diagnostics_every_n_steps``)."""
        cfg = self.config_training
        for key in ("mtl_method", "mtl_method_callback", "diagnostics_every_n_steps"):
            if is_task_specific(cfg[key]):
                raise ConfigError(f"training config key '{key}' is {cfg[key]!r}; it cannot be task-specific "
                                  "(it acts on all tasks at once)")
        self.mtl_method = make_mtl_method(cfg["mtl_method"], cfg["mtl_method_callback"])
        every = cfg["diagnostics_every_n_steps"]
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ConfigError(f"training config key 'diagnostics_every_n_steps' is {every!r}; allowed: None (off) "
                              "or an int >= 1")
        if self.mtl_method.joint and self.per_task_optimizers:
            raise ConfigError(f"training config key 'mtl_method' is {self.mtl_method.name!r}, which makes ONE joint "
                              "update direction for the shared parameters; it cannot feed per-task optimizers "
                              "(update_rule or learning_rate is task-specific). Use one optimizer, or a per-task "
                              "method: sum, mean, fixed, uw, dwa, rlw, gradnorm, pcgrad")
        self.diagnostics_every: Optional[int] = every
        # The default (sum, no diagnostics) keeps the plain path: one backward of the sum.
        self._fast = self.mtl_method.name == "sum" and every is None
        self.aggregate = sum_losses
        self._diagnostics = Diagnostics()
        self._mtl_updates = 0
        if self.mtl_method.needs_tasks and self.tasks is not None:
            self.mtl_method.setup(self.tasks)

    def setup(self, stage: str) -> None:
        """Set the multi-task method up for the data's tasks when the config did not fix them;
        make the Trainer's input conversion keep the batches' steps and blocks."""
        keep_batch_attributes(self._trainer)
        method = self.mtl_method
        if method.needs_tasks and method.tasks is None:
            data = getattr(getattr(self._trainer, "datamodule", None), "data", None)
            tasks = self.tasks or getattr(data, "all_tasks", None)
            if tasks:
                method.setup(tasks)
                if hasattr(self, "_optimizers_built") and any(True for _ in method.parameters()):
                    del self._optimizers_built  # the method's parameters join the optimizer

    def epoch_diagnostics(self) -> dict[str, float]:
        """This epoch's means of the diagnostics (``diagnostics/...``; {} when off)."""
        return self._diagnostics.epoch_means()

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
        """Per-task predictions for a batch: one forward of the shared model, sliced.

        An evaluation batch whose tasks share points (``TaskBatch.distinct``) runs the
        shared model once per distinct point.
        """
        blocks = batch_blocks(batch)
        return self._predict(batch["x"], blocks, getattr(batch, "distinct", None)), blocks

    def task_losses(self, batch: dict, preds: dict, blocks: dict) -> dict[int, torch.Tensor]:
        """Per-task criterion values (without regularization)."""
        return self._losses(batch["y"], preds, blocks)

    def _predict(self, x: torch.Tensor, blocks: dict[int, tuple[int, int]],
                 distinct: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> dict[int, torch.Tensor]:
        if self.shared:
            out = self.model(x) if distinct is None else self.model(distinct[0]).index_select(0, distinct[1])
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
            if any(True for _ in self.mtl_method.parameters()):
                modules.append(self.mtl_method)
            opts = [make_optimizer(modules, cfg["update_rule"], cfg["learning_rate"], cfg["update_rule_callback"])]
            self.optimizer_tasks = None
        else:
            self.optimizer_tasks = sorted(self.config_tasks)
            opts = []
            for t in self.optimizer_tasks:
                tc = self.task_config(t)
                modules = [self.task_model(t)]
                own = self.mtl_method.task_module(t)  # the task's own method parameters (uw)
                if own is not None:
                    modules.append(own)
                opts.append(make_optimizer(modules, tc["update_rule"], tc["learning_rate"],
                                           tc["update_rule_callback"]))
        self._optimizers_built = opts
        return opts

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)
        self._diagnostics.reset()

    def on_train_start(self) -> None:
        # optimizer steps so far (a resumed run continues the diagnostics schedule)
        self._mtl_updates = self.trainer.global_step // max(1, len(self.trainer.optimizers))

    def on_train_epoch_end(self) -> None:
        self.mtl_method.epoch_end()

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        # What an epoch gathers belongs to this epoch: after a resume from a checkpoint of an
        # epoch's last step, Lightning starts the next epoch without that epoch's end.
        self.mtl_method.before_step(self.current_epoch)
        if self.diagnostics_every is not None:
            self._diagnostics.begin(self.current_epoch)
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

    def _optimize(self, losses: dict[int, torch.Tensor], steps: "_StepMachinery",
                  plain: Optional[dict[int, torch.Tensor]] = None,
                  global_rows: Optional[Mapping[int, int]] = None) -> torch.Tensor:
        """Backward and step on the step's losses (plus regularization); the aggregate loss.

        ``plain``: the criterion values before the DDP rank weighting (default ``losses``),
        from whose graphs the shared parameters are found; ``global_rows``: the global batch's
        tasks under DDP.
        """
        objectives = self._objectives(losses)
        if not self._fast:
            return self._mtl_optimize(objectives, steps, losses if plain is None else plain, global_rows)
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
        return losses, preds, blocks, self._optimize(objective, steps, losses, global_rows).detach()

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
        # One optimizer and the plain sum: backward has freed each step's graph buffers,
        # so the step's tensors are kept as they are and detached once, at the end.
        # Per-task optimizers and the other methods retain the graph: detach right away.
        detach_now = self.per_task_optimizers or not self._fast
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
                total = self._optimize(self._rank_share(losses, blocks, shares[i]), steps, losses, shares[i])
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

    # ------------------------------------------------------ multi-task methods
    def _world(self) -> int:
        trainer = self._trainer
        return trainer.world_size if trainer is not None else 1

    def _task_partition(self, plain: Mapping[int, torch.Tensor], global_rows: Optional[Mapping[int, int]],
                        world: int) -> Partition:
        """The shared/task-specific split of the parameters, extended when new tasks appear."""
        part = self.__dict__.get("_partition")
        if part is None:
            named = self.model.named_parameters() if self.shared else self.models.named_parameters()
            part = self.__dict__["_partition"] = Partition(named)
        part.update(plain, None if global_rows is None else list(global_rows), world)
        return part

    def _mtl_optimize(self, objectives: dict[int, torch.Tensor], steps: "_StepMachinery",
                      plain: Mapping[int, torch.Tensor], global_rows: Optional[Mapping[int, int]]) -> torch.Tensor:
        """One update with ``mtl_method`` acting on the shared parameters (see ``core_code.mtl``)."""
        world = self._world()
        part = self._task_partition(plain, global_rows, world)
        method = self.mtl_method
        tasks = sorted(objectives)
        if method.needs_tasks and method.tasks is None:
            if getattr(method, "creates_parameters", False):
                raise ConfigError(f"mtl_method {method.name!r} learns per-task parameters, so its tasks must be "
                                  "known before the optimizer is built: give a task-specific training value, "
                                  "per-task models, or train with a DataModule")
            method.setup(self.tasks or tasks)
        self._mtl_updates += 1
        diag = self.diagnostics_every is not None and self._mtl_updates % self.diagnostics_every == 0
        if self.per_task_optimizers:
            return self._mtl_per_task(objectives, tasks, part, steps, diag, world)
        if method.kind == "linear":
            return self._mtl_linear(objectives, tasks, part, steps, diag, world)
        return self._mtl_gradient(objectives, tasks, part, steps, diag, world)

    @staticmethod
    def _flat(params: Sequence[torch.Tensor], grads: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        return torch.cat([p.new_zeros(p.numel()) if g is None else g.reshape(-1) for p, g in zip(params, grads)])

    def _task_grads(self, objectives: Mapping[int, torch.Tensor], tasks: Sequence[int],
                    params: Sequence[torch.Tensor], world: int, retain_last: bool = True) -> torch.Tensor:
        """(T, sum of numels): each task's gradient of its objective over ``params``, averaged over ranks."""
        if not params:
            ref = objectives[tasks[0]]
            return ref.new_zeros((len(tasks), 0))
        rows = []
        for i, t in enumerate(tasks):
            retain = retain_last or i < len(tasks) - 1
            grads = torch.autograd.grad(objectives[t], params, retain_graph=retain, allow_unused=True)
            rows.append(self._flat(params, grads))
        G = torch.stack(rows)
        if world > 1:
            torch.distributed.all_reduce(G)
            G.div_(world)
        return G

    def _mean_objectives(self, objectives: Mapping[int, torch.Tensor], tasks: Sequence[int],
                         world: int) -> torch.Tensor:
        """(T,) detached objectives, averaged over ranks (the global batch's under DDP)."""
        obj = torch.stack([objectives[t].detach() for t in tasks])
        if world > 1:
            obj = obj.clone()
            torch.distributed.all_reduce(obj)
            obj.div_(world)
        return obj

    @staticmethod
    def _assign(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
        """Set each parameter's ``.grad`` to its slice of ``flat``."""
        start = 0
        for p in params:
            n = p.numel()
            p.grad = flat[start:start + n].view_as(p).clone()
            start += n

    def _mtl_linear(self, objectives: dict[int, torch.Tensor], tasks: list[int], part: Partition,
                    steps: "_StepMachinery", diag: bool, world: int) -> torch.Tensor:
        """One optimizer, a loss-weighting method: backward of sum_t w_t L_t, task-specific grads unweighted."""
        G = self._task_grads(objectives, tasks, part.shared, world) if diag else None
        obj = torch.stack([objectives[t] for t in tasks])
        steps.raw[0].zero_grad(set_to_none=True)
        total, w = self.mtl_method.loss(obj, tasks)
        steps.backward(total)
        if part.has_own:  # task-specific parameters got w_t g_t: make it g_t (w_t > 0)
            for i, t in enumerate(tasks):
                for p in part.own.get(t, ()):
                    if p.grad is not None:
                        p.grad.div_(w[i].to(p.grad.dtype))
        if diag:
            self._diagnostics.record(G, tasks, part.layers, w)
        steps.step(0)
        return total.detach()

    def _mtl_gradient(self, objectives: dict[int, torch.Tensor], tasks: list[int], part: Partition,
                      steps: "_StepMachinery", diag: bool, world: int) -> torch.Tensor:
        """One optimizer, a gradient method: task gradients (averaged over ranks), combined on the shared part."""
        shared_ids = part.shared_ids
        rest = [p for p in part.params if id(p) not in shared_ids]
        params = part.shared + rest
        full = self._task_grads(objectives, tasks, params, world, retain_last=False)
        obj = self._mean_objectives(objectives, tasks, world)
        G = full[:, :part.n_shared]
        method = self.mtl_method
        d = method.directions(G, obj, tasks) if part.n_shared else G.new_zeros(0)
        if d.dim() == 2:
            d = d.sum(dim=0)
        steps.raw[0].zero_grad(set_to_none=True)
        self._assign(part.shared, d)
        self._assign(rest, full[:, part.n_shared:].sum(dim=0))  # task-specific: the plain task gradients
        if diag:
            self._diagnostics.record(G, tasks, part.layers, method.last_weights)
        steps.step(0)
        return obj.sum()

    def _mtl_per_task(self, objectives: dict[int, torch.Tensor], tasks: list[int], part: Partition,
                      steps: "_StepMachinery", diag: bool, world: int) -> torch.Tensor:
        """Per-task optimizers: each task's own gradient, its shared part modified by the method."""
        method = self.mtl_method
        method_ids = {id(p) for p in method.parameters()}
        grads: dict[int, dict[int, torch.Tensor]] = {}
        last = len(self.optimizer_tasks) - 1
        for i, t in enumerate(self.optimizer_tasks):
            params = [p for p in steps.params[i] if id(p) not in method_ids]
            if t in objectives:
                gs = torch.autograd.grad(objectives[t], params, retain_graph=i < last,
                                         allow_unused=True)
            else:
                gs = [None] * len(params)
            flat = self._flat(params, gs)
            if world > 1:  # gradients bypass DDP's hooks here: average them by hand
                torch.distributed.all_reduce(flat)
                flat.div_(world)
            grads[t] = {}
            start = 0
            for p in params:
                grads[t][id(p)] = flat[start:start + p.numel()].view_as(p)
                start += p.numel()
        obj = self._mean_objectives(objectives, tasks, world)
        G = None
        if part.shared and tasks:
            G = torch.stack([torch.cat([grads[t][id(p)].reshape(-1) if id(p) in grads[t]
                                        else p.new_zeros(p.numel()) for p in part.shared]) for t in tasks])
            D = method.directions(G, obj, tasks)
            for r, t in enumerate(tasks):
                start = 0
                for p in part.shared:
                    if id(p) in grads[t]:
                        grads[t][id(p)] = D[r, start:start + p.numel()].view_as(p)
                    start += p.numel()
        own_params = list(method.parameters())
        if own_params and tasks:  # the method's own parameters (uw's log-variances), at the objectives' values
            total, _ = method.loss(obj, tasks)
            for p, g in zip(own_params, torch.autograd.grad(total, own_params, allow_unused=True)):
                p.grad = torch.zeros_like(p) if g is None else g
        if diag:
            self._diagnostics.record(G, tasks, part.layers, method.last_weights)
        for i, t in enumerate(self.optimizer_tasks):
            params = steps.params[i]
            for p in params:
                if id(p) not in method_ids:
                    p.grad = grads[t][id(p)].clone()
            steps.step(i)
            for p in params:
                p.grad = None
        return obj.sum()

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
        state.pop("_partition", None)
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
        if self._diagnostics.records:  # the running epoch's diagnostics (a mid-epoch stop)
            checkpoint["mtl_diagnostics"] = self._diagnostics.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        import random

        import numpy as np

        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            name, keys, pos, has_gauss, gauss = states["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(states["python"])
        self._diagnostics.load_state_dict(checkpoint.get("mtl_diagnostics"))

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
