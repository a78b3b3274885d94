"""VectorizedMultitask: the LightningModule training K members as one ensemble."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from core_code.util.batching import row_selection
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    extract_taskconfig,
)
from core_code.util.criteria import make_criterion
from core_code.util.lightning import keep_batch_attributes
from core_code.util.lightning_compat import can_count_steps, count_step, raw_optimizer
from core_code.util.optimizers import make_optimizer
from core_code.vectorized.data import Blocks, EnsembleBatch
from core_code.vectorized.members import _aggregation_name, _aggregator, check_members, per_task_optimizers
from core_code.vectorized.optim import EnsembleOptimizer, member_lr_tensors
from core_code.vectorized.stacked import StackedModel

#: per-epoch metric names, as ``experiments.logging.metrics.metric_name`` spells them.
METRIC_PREFIX = {"train": "train", "val": "validation", "test": "test"}


def metric_name(split: str, task: int) -> str:
    """``'train/loss_task_0'``, ``'validation/loss_task_1'`` (the LoggingCallback's names)."""
    return f"{METRIC_PREFIX[split]}/loss_task_{task}"


def in_domain_name(split: str, task: int) -> str:
    """``'validation/loss_in_domain_task_0'`` (``experiments.logging.metrics.in_domain_metric_name``)."""
    return f"{METRIC_PREFIX[split]}/loss_in_domain_task_{task}"


def _autocast_on(device_type: str) -> bool:
    """Whether autocast (mixed precision) is on for ``device_type`` (torch 2.1 spelling as fallback)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def mse_columns(criterion: Any) -> Optional[tuple[int, Optional[int]]]:
    """``(lo, hi)``: the criterion is the MSE over output columns lo:hi (hi None: all), else None."""
    if criterion is torch.nn.functional.mse_loss:
        return 0, None
    dims = getattr(criterion, "dims", None)
    if dims is not None and getattr(criterion, "__qualname__", "").startswith("dimred_mse_loss"):
        idx = list(dims)
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return idx[0], idx[0] + len(idx)
    return None


def _batched_criterion(criterion: Any):
    """``(pred (K,R,d), y (K,R,d), a, b) -> (K,)``: the criterion per member on rows a:b.

    MSE kinds take one slice of the rows and columns they compare (a few ops, whatever K).
    """
    cols = mse_columns(criterion)
    if cols is not None:
        lo, hi = cols
        return lambda p, y, a, b: (p[:, a:b, lo:hi] - y[:, a:b, lo:hi]).square().mean(dim=(1, 2))
    dims = getattr(criterion, "dims", None)
    if dims is not None and getattr(criterion, "__qualname__", "").startswith("dimred_mse_loss"):
        index = torch.tensor(list(dims))
        return lambda p, y, a, b: (p[:, a:b].index_select(2, index.to(p.device))
                                   - y[:, a:b].index_select(2, index.to(p.device))).square().mean(dim=(1, 2))
    return lambda p, y, a, b: torch.stack([criterion(p[k, a:b], y[k, a:b]) for k in range(p.shape[0])])


class VectorizedMultitask(pl.LightningModule):
    """K members trained together (see module docstring).

    ``models``: one ``nn.Module`` per member (same parameter shapes); ``configs_training``:
    one training config per member (``check_members``). ``impl``: 'auto' (abcMLP: batched
    matmuls; others: vmap), 'bmm' or 'vmap'. ``takes_chunks``: an ``EnsembleBatch`` may hold several
    optimizer steps (``steps_per_chunk``).
    """

    takes_chunks = True
    #: train with ``StackedModel.backward``'s written-out gradients where they apply (see
    #: ``_direct_columns``); False: always autograd (the tests compare the two).
    use_direct_grads = True

    def __init__(self, models: Sequence[nn.Module], configs_training: Sequence[Mapping], impl: str = "auto"):
        super().__init__()
        self.automatic_optimization = False
        if any(isinstance(m, Mapping) for m in models):
            raise ConfigError("per-task models (a task-specific architecture) cannot be vectorized")
        if len(models) != len(configs_training):
            raise ConfigError(f"{len(models)} member models but {len(configs_training)} training configs")
        self.configs = check_members(configs_training)
        self.K = len(models)
        self.ensemble = StackedModel(models, impl)
        cfg = self.configs[0]
        self.config_tasks = check_config(**cfg)
        self.per_task_optimizers = per_task_optimizers(cfg)
        self.aggregate = _aggregator(cfg)
        # written-out gradients: one optimizer, batched abcMLP layers with ReLUs, a plain sum or mean
        aggregation = _aggregation_name(cfg)
        self._direct_ok = (not self.per_task_optimizers and self.ensemble.direct_grads
                           and aggregation in ("sum", "mean"))
        self._direct_weight = 1.0 if aggregation == "sum" else None  # None: 1 / tasks
        self._task_columns: dict[int, Optional[tuple[int, Optional[int]]]] = {}
        self.register_buffer("active", torch.ones(self.K, dtype=torch.bool))
        # first step at which a member's loss was not finite (-1: never) and its task
        self.register_buffer("bad_step", torch.full((self.K,), -1, dtype=torch.long))
        self.register_buffer("bad_task", torch.full((self.K,), -1, dtype=torch.long))
        self._criteria: dict[int, Any] = {}
        self._reg: dict[int, Optional[tuple[torch.Tensor, Any]]] = {}
        self._history: list[list[dict[str, float]]] = [[] for _ in range(self.K)]
        self._diverged: list[Optional[dict]] = [None] * self.K
        self._acc: dict[str, dict[int, list]] = {"train": {}, "val": {}, "test": {}}
        self._val_epoch: tuple = (-1, {}, {})
        self._in_domain_rows: dict[str, dict[int, Any]] = {}
        self._masked: dict[str, dict[int, list]] = {"val": {}, "test": {}}
        self._steps_done = 0
        self._task_ids: dict[tuple, torch.Tensor] = {}
        self.test_metrics: list[dict[str, float]] = [{} for _ in range(self.K)]
        self.optimizer_tasks: Optional[list[int]] = None
        self._opts: Optional[list[EnsembleOptimizer]] = None

    # ----------------------------------------------------------------- tasks
    def task_config(self, k: int, task: int) -> dict:
        return extract_taskconfig(self.configs[k], task) if self.config_tasks is not None else self.configs[k]

    def criterion(self, task: int):
        """Task ``task``'s criterion (the same for every member), applied to one member's (pred, y)."""
        if task not in self._criteria:
            c = self.task_config(0, task)
            self._criteria[task] = make_criterion(c["criterion"], c["criterion_callback"])
        return self._criteria[task]

    def _batched(self, task: int):
        key = ("batched", task)
        if key not in self.__dict__.setdefault("_batched_cache", {}):
            self.__dict__["_batched_cache"][key] = _batched_criterion(self.criterion(task))
        return self.__dict__["_batched_cache"][key]

    def _regularized(self, task: int) -> Optional[tuple[torch.Tensor, Any]]:
        """``((K,) alphas on the module's device, ord)`` of task ``task``'s regularization; None when every alpha is 0."""
        if task not in self._reg:
            alphas = [float(self.task_config(k, task)["regularization_alpha"]) for k in range(self.K)]
            ord_ = self.task_config(0, task)["regularization_ord"]
            self._reg[task] = (torch.tensor(alphas), ord_) if any(alphas) else None
        reg = self._reg[task]
        if reg is not None and reg[0].device != self.device:  # moved once, not every step
            reg = self._reg[task] = (reg[0].to(self.device), reg[1])
        return reg

    def _regularization(self, task: int) -> Optional[torch.Tensor]:
        """(K,) alpha_k * sum_p ||p_k||_ord^2 of task ``task`` (None when every alpha is 0)."""
        reg = self._regularized(task)
        if reg is None:
            return None
        alphas, ord_ = reg
        total = self._squared_norms(ord_)
        return alphas.to(total.device, total.dtype) * total

    def _squared_norms(self, ord_: Any) -> torch.Tensor:
        """(K,) sum over the stacked parameters of ||p_k||_ord^2."""
        total = None
        for _, p in self.ensemble.named_stacked():
            n = torch.linalg.vector_norm(p.reshape(self.K, -1), ord_, dim=1).pow(2)
            total = n if total is None else total + n
        return total

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, d_in) -> (K, B, d_out)``."""
        return self.ensemble(x)

    def _losses(self, x: torch.Tensor, y: torch.Tensor, blocks: Blocks,
                out: Optional[torch.Tensor] = None) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        out = self.ensemble(x) if out is None else out
        return {t: self._batched(t)(out, y, a, b) for t, (a, b) in blocks.items()}, out

    # ------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        if self._opts is not None:
            return self._opts
        names = self.ensemble.names
        params = [p for _, p in self.ensemble.named_stacked()]
        temps = self.ensemble.templates
        if not self.per_task_optimizers:
            rule = self.configs[0]["update_rule"]
            lrs = member_lr_tensors(temps, names, rule, [c["learning_rate"] for c in self.configs])
            self._opts = [EnsembleOptimizer(params, rule, [lrs[n] for n in names], self.active)]
        else:
            self.optimizer_tasks = sorted(self.config_tasks)
            self._opts = []
            for t in self.optimizer_tasks:
                rule = self.task_config(0, t)["update_rule"]
                lrs = member_lr_tensors(temps, names, rule,
                                        [self.task_config(k, t)["learning_rate"] for k in range(self.K)])
                self._opts.append(EnsembleOptimizer(params, rule, [lrs[n] for n in names], self.active))
        return self._opts

    def setup(self, stage: str) -> None:
        """Make the Trainer's input conversion (e.g. '64-true') keep the batches' steps."""
        keep_batch_attributes(self._trainer)

    def on_fit_start(self) -> None:
        # Lightning may have replaced the optimizer list; the module keeps the same objects.
        for opt in self._opts or []:
            opt.active = self.active

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)
        self._acc["train"] = {}

    def _step_fns(self) -> list:
        trainer = self._trainer
        if trainer is None:
            return [opt.step for opt in self.configure_optimizers()]
        opts = self.optimizers()
        opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
        return [(lambda w=w: count_step(w, raw_optimizer(w).step)) if can_count_steps(w) else w.step
                for w in opts]

    def _check_steps(self, losses: dict[int, torch.Tensor], total: Optional[torch.Tensor] = None) -> None:
        """Freeze members whose loss is not finite (device ops only; recorded at epoch end).

        ``total``: the members' aggregate of ``losses``, finite only where every task loss is.
        On the CPU one host check of it (no device sync there) skips the ~15 small ops of the
        freezing when all is finite, as it is at almost every step.
        """
        tasks = list(losses)
        if total is not None and total.device.type == "cpu" and bool(torch.isfinite(total).all()):
            return
        finite = torch.isfinite(torch.stack([losses[t].detach() for t in tasks]))  # (tasks, K)
        newly = self.active & ~finite.all(0)
        key = (tuple(tasks), finite.device)
        if key not in self._task_ids:
            self._task_ids[key] = torch.tensor(tasks, device=finite.device)
        first_bad = self._task_ids[key][(~finite).to(torch.uint8).argmax(0)]  # the first non-finite task
        self.bad_task.copy_(torch.where(newly, first_bad, self.bad_task))
        self.bad_step.copy_(torch.where(newly, torch.full_like(self.bad_step, self._steps_done), self.bad_step))
        self.active.copy_(self.active & ~newly)
        for opt in self._opts or []:
            opt.reset_members(newly)

    def _optimize(self, losses: dict[int, torch.Tensor], steps: list) -> torch.Tensor:
        objectives = dict(losses)
        for t in objectives:
            reg = self._regularization(t)
            if reg is not None:
                objectives[t] = objectives[t] + reg
        params = self._opts[0].param_groups[0]["params"]  # the stacked parameters (every optimizer's)
        if not self.per_task_optimizers:
            for p in params:
                p.grad = None
            total = self.aggregate(objectives)  # (K,): aggregation is per member (elementwise over K)
            self._check_steps(objectives, total)
            total.sum().backward()
            steps[0]()
            self._steps_done += 1
            return total.detach()
        self._check_steps(objectives)
        grads = {}
        for t in self.optimizer_tasks:
            if t not in objectives:
                grads[t] = [torch.zeros_like(p) for p in params]
                continue
            gs = torch.autograd.grad(objectives[t].sum(), params, retain_graph=True, allow_unused=True)
            grads[t] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
        for i, t in enumerate(self.optimizer_tasks):
            for p, g in zip(params, grads[t]):
                p.grad = g
            steps[i]()
        for p in params:
            p.grad = None
        self._steps_done += 1
        return self.aggregate({t: v.detach() for t, v in objectives.items()})

    def _direct_columns(self, blocks: Blocks) -> Optional[dict[int, tuple[int, Optional[int]]]]:
        """Per task of ``blocks`` its MSE columns when the step's gradients can be written out, else None.

        Written out (``_direct_step``) where ``use_direct_grads`` is on, the members are batched
        abcMLPs with ReLUs (``StackedModel.direct_grads``), one optimizer steps the sum or
        mean of the task losses, every task's criterion is an MSE over contiguous columns
        and its regularization (if any) the squared 2-norm, and no autocast is on (mixed
        precision: autograd keeps the float32 gradients); anything else goes through autograd.
        """
        if not (self.use_direct_grads and self._direct_ok) or _autocast_on(self.device.type):
            return None
        cols = {}
        for t in blocks:
            if t not in self._task_columns:
                reg = self._regularized(t)
                self._task_columns[t] = mse_columns(self.criterion(t)) if reg is None or reg[1] == 2 else None
            if self._task_columns[t] is None:
                return None
            cols[t] = self._task_columns[t]
        return cols

    def _direct_step(self, x: torch.Tensor, y: torch.Tensor, blocks: Blocks,
                     cols: Mapping[int, tuple[int, Optional[int]]], steps: list) -> tuple[dict, torch.Tensor]:
        """One optimizer step with written-out gradients: ``({task: (K,) loss}, (K,) aggregate)``.

        dL/d(output) of task t's MSE is 2 w (pred - y) / n_t on its rows and columns (n_t
        their count, w the aggregation's weight: 1 for a sum, 1 / tasks for a mean), 0
        elsewhere (exact zeros, as autograd's); ``StackedModel.backward`` takes it from there.
        A task's regularization alpha_k sum_p ||p_k||^2 adds 2 w alpha_k p_k to each gradient.
        """
        out, tape = self.ensemble.forward_keep(x)
        diff = out - y
        grad = torch.zeros_like(diff)
        weight = self._direct_weight if self._direct_weight is not None else 1.0 / len(blocks)
        losses = {}
        for t, (a, b) in blocks.items():
            lo, hi = cols[t]
            d = diff[:, a:b, lo:hi]
            losses[t] = d.square().mean(dim=(1, 2))
            grad[:, a:b, lo:hi] = d * (2.0 * weight / d[0].numel())
        params = self._opts[0].param_groups[0]["params"]
        objectives, coef = losses, None  # coef: (K,) sum over tasks of w alpha_k
        for t in blocks:
            reg = self._regularized(t)
            if reg is not None:
                alphas = reg[0].to(diff.dtype)
                if coef is None:
                    objectives = dict(losses)
                    with torch.no_grad():
                        norms = self._squared_norms(2)
                    coef = torch.zeros_like(alphas)
                objectives[t] = losses[t] + alphas * norms
                coef = coef + weight * alphas
        total = self.aggregate(objectives)
        self._check_steps(objectives, total)
        grads = self.ensemble.backward(tape, grad)
        for p, g in zip(params, grads):
            p.grad = g if coef is None else g.add_(p.detach() * (2 * coef).view(-1, *([1] * (p.dim() - 1))))
        steps[0]()
        self._steps_done += 1
        return losses, total

    def training_step(self, batch: EnsembleBatch, batch_idx: int) -> dict:
        steps = self._step_fns()
        x, y = batch["x"], batch["y"]
        trainer = self._trainer
        remaining = None
        if trainer is not None and trainer.max_steps is not None and trainer.max_steps >= 0:
            remaining = trainer.max_steps - trainer.global_step
        totals = []
        acc = self._acc["train"]
        for a, b, blocks in batch.steps:
            if remaining is not None:
                if remaining <= 0:
                    break
                remaining -= len(steps)
            cols = self._direct_columns(blocks)
            if cols is not None:
                losses, total = self._direct_step(x[:, a:b], y[:, a:b], blocks, cols, steps)
            else:
                losses, _ = self._losses(x[:, a:b], y[:, a:b], blocks)
                total = self._optimize(losses, steps)
            totals.append(total)
            for t, v in losses.items():
                r = blocks[t][1] - blocks[t][0]
                acc.setdefault(t, []).append((v.detach(), r))
        loss = torch.stack(totals).mean(0) if totals else torch.zeros(self.K, device=self.device)
        return {"loss": loss.sum().detach(), "member_loss": loss}

    # ------------------------------------------------------------ evaluation
    def set_in_domain_masks(self, masks: Mapping[str, Mapping[int, Sequence[torch.Tensor]]]) -> None:
        """``{split: {task: [bool rows of member k's task block]}}``: extra per-member losses over those rows.

        Logged as ``<validation|test>/loss_in_domain_task_<t>`` (the LoggingCallback's names);
        only for an evaluation split that comes as one batch (as ``VectorizedDataModule`` makes it).
        Kept as ``row_selection`` (a slice where the rows are contiguous, else indices) when
        every member has the same rows (one batched loss for all members), else as one index
        tensor per member.
        """
        self._in_domain_rows = {}
        for s, d in masks.items():
            for t, ms in d.items():
                same = all(torch.equal(m, ms[0]) for m in ms[1:])
                rows = row_selection(ms[0]) if same else [m.nonzero().squeeze(1) for m in ms]
                self._in_domain_rows.setdefault(s, {})[int(t)] = rows

    def _in_domain_losses(self, split: str, task: int, p: torch.Tensor, y: torch.Tensor) -> Any:
        """Task ``task``'s criterion over each member's in-domain rows of its block ``p``, ``y`` (K, rows, d):
        a (K,) tensor, or per member a loss or None (no such rows)."""
        rows = self._in_domain_rows[split][task]
        if isinstance(rows, tuple):  # the same rows for every member
            sel, n = rows
            if n == 0:
                return [None] * self.K
            if isinstance(sel, torch.Tensor):
                sel = sel.to(p.device)
            return self._batched(task)(p[:, sel], y[:, sel], 0, n)  # a slice: views, no copies
        crit = self.criterion(task)
        rows = [r.to(p.device) for r in rows]
        return [None if r.numel() == 0 else crit(p[k].index_select(0, r), y[k].index_select(0, r))
                for k, r in enumerate(rows)]

    def _eval(self, batch: EnsembleBatch, split: str) -> dict:
        out = {}
        self._masked[split] = {}
        n_rows = batch["x"].shape[1]
        for a, b, blocks in batch.steps:
            full = None
            if batch.distinct is not None and (a, b) == (0, n_rows):  # one forward per distinct row
                rows, inverse = batch.distinct
                full = self.ensemble.forward_shared(rows).index_select(1, inverse)
            losses, preds = self._losses(batch["x"][:, a:b], batch["y"][:, a:b], blocks, full)
            for t, v in losses.items():
                self._acc[split].setdefault(t, []).append((v, blocks[t][1] - blocks[t][0]))
            for t, (lo, hi) in blocks.items():
                if t in self._in_domain_rows.get(split, {}):
                    self._masked[split][t] = self._in_domain_losses(split, t, preds[:, lo:hi],
                                                                    batch["y"][:, a:b][:, lo:hi])
            out = {"losses": losses, "preds": preds}
        return out

    def _masked_losses(self, split: str) -> dict[int, list[Optional[float]]]:
        return {t: (vals.double().cpu().tolist() if isinstance(vals, torch.Tensor)
                    else [None if v is None else float(v) for v in vals])
                for t, vals in self._masked.get(split, {}).items()}

    def on_validation_epoch_start(self) -> None:
        self._acc["val"] = {}

    def validation_step(self, batch: EnsembleBatch, batch_idx: int) -> dict:
        return self._eval(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._acc["test"] = {}

    def test_step(self, batch: EnsembleBatch, batch_idx: int) -> dict:
        return self._eval(batch, "test")

    def _epoch_losses(self, split: str) -> dict[int, list[float]]:
        """``{task: [loss of member k]}``: the row-weighted epoch mean (one host sync)."""
        acc = self._acc[split]
        if not acc:
            return {}
        tasks = sorted(acc)
        means = torch.stack([sum(v * r for v, r in acc[t]) / float(sum(r for _, r in acc[t])) for t in tasks])
        values = means.double().cpu().tolist()
        return dict(zip(tasks, values))

    def on_validation_epoch_end(self) -> None:
        if self.trainer is not None and self.trainer.sanity_checking:
            self._acc["val"] = {}
            return
        self._val_epoch = (self.current_epoch, self._epoch_losses("val"), self._masked_losses("val"))

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch
        train = self._epoch_losses("train")
        val_epoch, val, val_in = self._val_epoch
        if val_epoch != epoch:
            val, val_in = {}, {}
        bad_step = self.bad_step.cpu().tolist()
        bad_task = self.bad_task.cpu().tolist()
        for k in range(self.K):
            if self._diverged[k] is not None:
                continue
            row: dict[str, float] = {"epoch": epoch}
            row.update({metric_name("train", t): v[k] for t, v in train.items()})
            row.update({metric_name("val", t): v[k] for t, v in val.items()})
            row.update({in_domain_name("val", t): v[k] for t, v in val_in.items() if v[k] is not None})
            self._history[k].append(row)
            bad = None
            for split, losses in (("train", train), ("val", val)):
                nonfinite = [t for t, v in losses.items() if not math.isfinite(v[k])]
                if nonfinite:
                    bad = (nonfinite[0], split)
                    break
            if bad is None and bad_step[k] >= 0:
                bad = (bad_task[k], "train")
            if bad is not None:
                self._diverged[k] = {"task": bad[0], "epoch": epoch, "split": METRIC_PREFIX[bad[1]],
                                     "step": bad_step[k] if bad_step[k] >= 0 else None}
        newly = torch.tensor([d is not None for d in self._diverged], device=self.active.device)
        if bool((newly & self.active).any()):
            for opt in self._opts or []:
                opt.reset_members(newly & self.active)
            self.active.copy_(self.active & ~newly)
        if all(d is not None for d in self._diverged) and self.trainer is not None:
            self.trainer.should_stop = True

    def on_test_epoch_end(self) -> None:
        test = self._epoch_losses("test")
        for k in range(self.K):
            self.test_metrics[k] = {f"test/loss_task_{t}": v[k] for t, v in test.items()}
            self.test_metrics[k].update({in_domain_name("test", t): v[k] for t, v in self._masked_losses("test").items()
                                         if v[k] is not None})

    # --------------------------------------------------------------- members
    def member_history(self, k: int) -> list[dict[str, float]]:
        """Member k's per-epoch rows (stops after the epoch it diverged in)."""
        return [dict(r) for r in self._history[k]]

    def diverged(self, k: int) -> Optional[dict]:
        """None, or ``{'task', 'epoch', 'split', 'step'}`` of member k's first non-finite loss."""
        return None if self._diverged[k] is None else dict(self._diverged[k])

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k as a ``LightningMultitask`` state_dict (``model.<name>``)."""
        return {f"model.{n}": v for n, v in self.ensemble.member_state_dict(k).items()}

    def member_model(self, k: int) -> nn.Module:
        """A fresh copy of member k's model with its trained weights (on the CPU)."""
        model = copy.deepcopy(self.ensemble.templates[k]).to_empty(device="cpu")
        model.load_state_dict({n: v.cpu() for n, v in self.ensemble.member_state_dict(k).items()})
        return model

    def member_optimizer_states(self, k: int) -> list[dict]:
        """The state_dicts of the optimizers a single ``LightningMultitask`` of member k holds.

        Built on member k's template (meta device): its parameter groups are the single
        run's (``make_optimizer``: abc multipliers, per-task learning rates); the state
        tensors are member k's slices, on the CPU.
        """
        model = self.ensemble.templates[k]
        cfg = self.configs[k]
        by_id = {id(p): n for n, p in model.named_parameters()}
        opts = self.configure_optimizers()
        if not self.per_task_optimizers:
            singles = [make_optimizer([model], cfg["update_rule"], cfg["learning_rate"], cfg["update_rule_callback"])]
        else:
            singles = []
            for t in self.optimizer_tasks:
                tc = self.task_config(k, t)
                singles.append(make_optimizer([model], tc["update_rule"], tc["learning_rate"],
                                              tc["update_rule_callback"]))
        out = []
        for single, ens in zip(singles, opts):
            member = ens.member_state(k, self.ensemble.names, self.ensemble.to_member)
            sd = single.state_dict()
            ordered = [p for g in single.param_groups for p in g["params"]]
            sd["state"] = {i: {key: v.cpu() for key, v in member[by_id[id(p)]].items()}
                           for i, p in enumerate(ordered) if by_id[id(p)] in member}
            out.append(sd)
        return out

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vectorized"] = {"history": self._history, "diverged": self._diverged,
                                    "steps_done": self._steps_done}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("vectorized") or {}
        self._history = [list(h) for h in state.get("history", self._history)]
        self._diverged = list(state.get("diverged", self._diverged))
        self._steps_done = int(state.get("steps_done", 0))


