"""Vectorized grid points: K models of the same shapes trained as ONE ensemble.

``VectorizedMultitask(models, configs_training)`` trains K members (models with the same
parameter shapes, training configs that differ only in ``learning_rate`` and
``regularization_alpha``) inside one LightningModule: every parameter carries a leading
ensemble dimension K, one forward computes all members (batched matmuls for ``abcMLP``,
``torch.func.vmap`` over ``functional_call`` for any other module whose members differ
only in their parameters), and the summed loss gives each member its own gradient (the
members share no parameter). ``VectorizedDataModule`` stacks the members' batches: the
same batch composition (task blocks) at every step, each member's rows from its own data
and its own permutation (the one a single run with that member's seed draws).

Each member's optimizer semantics are kept exactly (``EnsembleOptimizer``): SGD, Adam and
AdamW with torch's defaults (the ones ``make_optimizer`` builds) applied elementwise with a
per-member, per-parameter learning-rate tensor ``lr_k * multiplier_k(param)`` built from
``core_code.util.optimizers.param_groups`` of that member's own model (abc multipliers
per layer, per optimizer). Per-task optimizers (``update_rule``/``learning_rate``
task-specific) work as in ``LightningMultitask``: each task's gradient from its own loss
at the same parameters, then each task's optimizer steps.

Divergence: a member whose step loss (any task) is not finite is frozen on the device
(no host sync): its gradients are replaced by zeros and its learning rates by 0, its
optimizer state zeroed, so it stays at the parameters it had; the others go on. At the
end of each epoch the frozen members (and members whose epoch loss is not finite, as a
single run's LoggingCallback sees it) are recorded, ``diverged(k) == {'task', 'epoch',
'split', 'step'}``, and their per-epoch history stops after that epoch. Training stops
when every member has diverged.

Per member afterwards: ``member_history(k)`` (rows ``{'epoch', 'train/loss_task_<t>',
'validation/loss_task_<t>'}`` as the LoggingCallback writes them), ``diverged(k)``,
``member_state_dict(k)`` (a ``LightningMultitask`` state_dict: ``model.<name>``) and
``member_optimizer_states(k)`` (the state_dicts of the optimizers a single
``LightningMultitask`` of that member would hold, in their layout).

Limits (``check_members`` says which in one line): one shared model per member (no
per-task models), the update rules of ``VECTORIZABLE_RULES``, built-in batching strategies
or any strategy whose batches have the same task blocks for every member.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from torch import nn

from core_code.util.batching import DeterministicLoader, make_train_loader, task_blocks
from core_code.util.config_extractions import (
    ConfigError,
    check_config,
    extract_taskconfig,
    is_task_specific,
)
from core_code.util.criteria import make_criterion
from core_code.util.default_config import init_config_training
from core_code.util.lightning import resolve_steps_per_chunk
from core_code.util.lightning_compat import can_count_steps, count_step, raw_optimizer
from core_code.util.optimizers import UPDATE_RULES, make_optimizer, param_groups

Blocks = dict[int, tuple[int, int]]

#: update rules the ensemble optimizer reproduces (torch defaults, as ``make_optimizer`` builds them).
VECTORIZABLE_RULES = ("SGD", "Adam", "AdamW")
#: CPU width from which ``StackedModel(impl='auto')`` runs one addmm per member instead of baddbmm.
LOOP_MIN_WIDTH = 256
#: CPU evaluation (no grad) of more rows than this goes member by member through all layers:
#: one member's activations stay in cache (measured 1.5x faster than layer by layer for all
#: K members at 16 x 2048 rows x width 64 and 512).
MEMBERWISE_MIN_ROWS = 256
#: training config keys that may differ between the members of one ensemble.
MEMBER_KEYS = ("learning_rate", "regularization_alpha")
#: per-epoch metric names, as ``experiments.logging.metrics.metric_name`` spells them.
METRIC_PREFIX = {"train": "train", "val": "validation", "test": "test"}


def metric_name(split: str, task: int) -> str:
    """``'train/loss_task_0'``, ``'validation/loss_task_1'`` (the LoggingCallback's names)."""
    return f"{METRIC_PREFIX[split]}/loss_task_{task}"


def in_domain_name(split: str, task: int) -> str:
    """``'validation/loss_in_domain_task_0'`` (``experiments.logging.metrics.in_domain_metric_name``)."""
    return f"{METRIC_PREFIX[split]}/loss_in_domain_task_{task}"


def _safe(name: str) -> str:
    return name.replace(".", "__")


# --------------------------------------------------------------------------- models
class StackedModel(nn.Module):
    """K models of identical parameter shapes as one module with stacked parameters.

    ``params[_safe(name)]`` has shape ``(K, *shape)`` (bmm: weights ``(K, in, out)``, see
    ``transposed``/``to_member``); ``forward(x)`` maps ``(K, B, d_in)``
    to ``(K, B, d_out)``. abcMLP members: batched matmuls (``torch.baddbmm``) with each
    member's own forward multipliers n^-a and bias multipliers (per layer); any other
    module: ``vmap(functional_call)`` of the first member, which requires the members to
    differ in nothing but parameter values (same ``repr``).
    """

    def __init__(self, models: Sequence[nn.Module], impl: str = "auto"):
        super().__init__()
        if not models:
            raise ConfigError("an ensemble needs at least one member model")
        self.K = len(models)
        first = models[0]
        self.names = [n for n, _ in first.named_parameters()]
        for k, m in enumerate(models):
            shapes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
            if type(m) is not type(first) or shapes != [(n, tuple(p.shape)) for n, p in first.named_parameters()]:
                raise ConfigError(f"ensemble member {k} ({type(m).__name__}) differs in type or parameter shapes "
                                  f"from member 0 ({type(first).__name__}); such points cannot be vectorized")
            if list(m.named_buffers()):
                raise ConfigError(f"ensemble member {k} has buffers; only buffer-free models are vectorized")
        is_abc = type(first).__name__ == "abcMLP" and hasattr(first, "layers") and hasattr(first, "activations")
        if impl not in ("auto", "bmm", "loop", "vmap"):
            raise ConfigError(f"StackedModel impl must be 'auto', 'bmm', 'loop' or 'vmap', got {impl!r}")
        if impl in ("bmm", "loop") and not is_abc:
            raise ConfigError(f"impl {impl!r} needs abcMLP members, got {type(first).__name__}")
        # 'auto' (abcMLP): baddbmm, except on the CPU at width >= LOOP_MIN_WIDTH, where one
        # addmm per member is faster (measured: 1.3-1.5x at 512, bmm 1.35x faster at 64).
        self.requested = impl
        self.impl = ("bmm" if is_abc else "vmap") if impl == "auto" else impl
        self.width = int(getattr(first, "width", 0) or 0)
        # bmm: weights stored as (K, in, out), contiguous: CPU bmm and its backward are ~2x
        # faster than on a transposed view. ``to_member`` gives a member's own layout back.
        self.transposed = ({f"layers.{i}.weight" for i in range(len(first.layers))} if self.impl in ("bmm", "loop")
                           else set())
        self.params = nn.ParameterDict({
            _safe(n): nn.Parameter(self._stack(n, [dict(m.named_parameters())[n].detach() for m in models]))
            for n in self.names})
        # Templates on the meta device: names, lr multipliers and repr, no memory.
        self.templates = [copy.deepcopy(m).to("meta") for m in models]
        if self.impl in ("bmm", "loop"):
            self._init_bmm(models)
        else:
            rep = repr(first)
            bad = [k for k, m in enumerate(models) if repr(m) != rep]
            if bad:
                raise ConfigError(f"ensemble members {bad} differ from member 0 in more than their parameters "
                                  f"({type(first).__name__}: {rep.splitlines()[0]}...); vmap needs identical modules")
            self._base = [self.templates[0]]  # a list: not a submodule

    # ---------------------------------------------------------------- abcMLP
    def _init_bmm(self, models: Sequence[nn.Module]) -> None:
        first = models[0]
        self.depth = len(first.layers)
        acts = [repr(a) for a in first.activations]
        for k, m in enumerate(models):
            if [repr(a) for a in m.activations] != acts:
                raise ConfigError(f"ensemble member {k} has other activations than member 0; not vectorizable")
        self.activations = copy.deepcopy(first.activations)
        self.has_bias = [first.layers[i].bias is not None for i in range(self.depth)]
        self._mult: list[Union[float, str]] = []
        self._bias_mult: list[Union[float, str]] = []
        # per layer, per member: (multiplier, bias multiplier) as floats (the 'loop' forward)
        self._member_mults = [[(float(m.layers[i].multiplier), float(m.layers[i].bias_multiplier)) for m in models]
                              for i in range(self.depth)]
        for i in range(self.depth):
            for attr, out in (("multiplier", self._mult), ("bias_multiplier", self._bias_mult)):
                vals = [float(getattr(m.layers[i], attr)) for m in models]
                if all(v == vals[0] for v in vals):
                    out.append(vals[0])
                else:
                    name = f"_{attr}_{i}"
                    self.register_buffer(name, torch.tensor(vals).view(-1, 1, 1), persistent=False)
                    out.append(name)

    def _stack(self, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = torch.stack(tensors)
        return out.transpose(1, 2).contiguous() if name in self.transposed else out.clone()

    def to_member(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Member slice ``value`` (of parameter ``name``, or of a tensor of its shape) in the member's layout."""
        return value.t().contiguous() if name in self.transposed else value

    def _factor(self, value: Union[float, str]) -> Union[float, torch.Tensor]:
        return getattr(self, value) if isinstance(value, str) else value

    def _forward_bmm(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(self.depth):
            w = self.params[f"layers__{i}__weight"]  # (K, in, out)
            m = self._factor(self._mult[i])
            bm = self._factor(self._bias_mult[i])
            if not self.has_bias[i]:
                h = torch.bmm(h, w)
                h = h * m if not (isinstance(m, float) and m == 1.0) else h
            elif isinstance(m, float) and isinstance(bm, float):
                # the single model's addmm: bm * bias + m * (h @ W^T)
                h = torch.baddbmm(self.params[f"layers__{i}__bias"].unsqueeze(1), h, w, beta=bm, alpha=m)
            else:
                bias = self.params[f"layers__{i}__bias"].unsqueeze(1) * bm
                h = torch.baddbmm(bias, h * m if not isinstance(m, float) else h, w,
                                  alpha=m if isinstance(m, float) else 1.0)
            if i < self.depth - 1:
                h = self.activations[i](h)
        return h

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """One addmm per member on views of the stacked parameters (unbind: one stack in backward)."""
        hs = x.unbind(0)
        for i in range(self.depth):
            ws = self.params[f"layers__{i}__weight"].unbind(0)
            mults = self._member_mults[i]
            if self.has_bias[i]:
                bs = self.params[f"layers__{i}__bias"].unbind(0)
                hs = [torch.addmm(b, h, w, beta=bm, alpha=m) for h, w, b, (m, bm) in zip(hs, ws, bs, mults)]
            else:
                hs = [torch.mm(h, w) * m for h, w, (m, _) in zip(hs, ws, mults)]
            if i < self.depth - 1:
                act = self.activations[i]
                hs = [act(h) for h in hs]
        return torch.stack(hs)

    def _forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """Member by member through every layer (``x`` (K, B, d_in); no-grad CPU evaluation)."""
        outs = []
        for k in range(self.K):
            h = x[k]
            for i in range(self.depth):
                w = self.params[f"layers__{i}__weight"][k]  # (in, out)
                m, bm = self._member_mults[i][k]
                if self.has_bias[i]:
                    h = torch.addmm(self.params[f"layers__{i}__bias"][k], h, w, beta=bm, alpha=m)
                else:
                    h = torch.mm(h, w) * m
                if i < self.depth - 1:
                    h = self.activations[i](h)
            outs.append(h)
        return torch.stack(outs)

    # ------------------------------------------------------------------ vmap
    def _forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        base = self._base[0]
        names = self.names

        def one(params: tuple, xk: torch.Tensor) -> torch.Tensor:
            return functional_call(base, dict(zip(names, params)), (xk,))

        return vmap(one)(tuple(self.params[_safe(n)] for n in names), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "vmap":
            return self._forward_vmap(x)
        if (self.requested == "auto" and x.device.type == "cpu" and x.shape[1] > MEMBERWISE_MIN_ROWS
                and not torch.is_grad_enabled()):
            return self._forward_members(x)
        if self.impl == "loop" or (self.requested == "auto" and x.device.type == "cpu"
                                   and self.width >= LOOP_MIN_WIDTH):
            return self._forward_loop(x)
        return self._forward_bmm(x)

    # ------------------------------------------------------------- members
    def named_stacked(self) -> list[tuple[str, nn.Parameter]]:
        """``[(member parameter name, stacked parameter)]`` in the members' registration order."""
        return [(n, self.params[_safe(n)]) for n in self.names]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s own ``state_dict`` (copies)."""
        return {n: self.to_member(n, p[k].detach()).clone() for n, p in self.named_stacked()}


# ------------------------------------------------------------------------ optimizer
def _rule_defaults(rule: str) -> dict:
    """The defaults ``make_optimizer`` uses for ``rule`` (a ConfigError unless reproduced here)."""
    if rule not in VECTORIZABLE_RULES or UPDATE_RULES.get(rule) not in (torch.optim.SGD, torch.optim.Adam,
                                                                        torch.optim.AdamW):
        raise ConfigError(f"update_rule {rule!r} cannot be vectorized (supported: {', '.join(VECTORIZABLE_RULES)})")
    d = dict(UPDATE_RULES[rule]([torch.zeros(1, requires_grad=True)], lr=1.0).defaults)
    if rule == "SGD" and (d.get("momentum") or d.get("weight_decay") or d.get("nesterov") or d.get("maximize")):
        raise ConfigError(f"update_rule 'SGD' with non-default settings {d} cannot be vectorized")
    if rule != "SGD" and (d.get("amsgrad") or d.get("maximize")):
        raise ConfigError(f"update_rule {rule!r} with non-default settings {d} cannot be vectorized")
    return d


def member_lr_tensors(templates: Sequence[nn.Module], names: Sequence[str], rule: str,
                      lrs: Sequence[float]) -> dict[str, torch.Tensor]:
    """``{name: (K,) learning rates}``: member k's ``lr_k * multiplier`` of that parameter.

    Read from ``param_groups([template_k], lr_k, rule)``: the groups ``make_optimizer``
    builds for a single run (abc multipliers per layer and per optimizer). A parameter
    in no group (frozen in the single run) gets 0.
    """
    out = {n: torch.zeros(len(templates), dtype=torch.float64) for n in names}
    for k, (model, lr) in enumerate(zip(templates, lrs)):
        by_id = {id(p): n for n, p in model.named_parameters()}
        for group in param_groups([model], float(lr), rule):
            for p in group["params"]:
                out[by_id[id(p)]][k] = float(group["lr"])
    return out


class EnsembleOptimizer(torch.optim.Optimizer):
    """SGD / Adam / AdamW over stacked parameters with per-member, per-parameter learning rates.

    ``lrs[i]`` is a (K,) tensor for ``params[i]`` (broadcast over the member's slice). The
    update of member k equals ``torch.optim.<rule>`` with that member's learning rate
    (torch's defaults otherwise); ``active`` (a (K,) bool tensor, shared with the module)
    zeroes the updates of frozen members. The step is written with plain tensor ops.
    """

    def __init__(self, params: Sequence[nn.Parameter], rule: str, lrs: Sequence[torch.Tensor],
                 active: torch.Tensor):
        self.rule = rule
        d = _rule_defaults(rule)
        super().__init__(list(params), {"lr": float(lrs[0].max()) if len(lrs) else 0.0,
                                        "betas": d.get("betas"), "eps": d.get("eps"),
                                        "weight_decay": d.get("weight_decay", 0.0)})
        self.active = active
        self._lrs = [lr.to(torch.float32) for lr in lrs]
        self._lr_views: Optional[list[torch.Tensor]] = None

    def _views(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per parameter: lr_k * active_k shaped (K, 1, ..., 1) on the parameter's device."""
        if self._lr_views is None or self._lr_views[0].device != params[0].device:
            self._lr_views = [lr.to(p.device, p.dtype).view(-1, *([1] * (p.dim() - 1)))
                              for lr, p in zip(self._lrs, params)]
        act = self.active.to(params[0].device, params[0].dtype)
        return [lr * act.view(-1, *([1] * (lr.dim() - 1))) for lr in self._lr_views]

    def set_lrs(self, lrs: Sequence[torch.Tensor]) -> None:
        """Replace the (K,) learning rates (e.g. after loading a checkpoint)."""
        self._lrs = [lr.to(torch.float32) for lr in lrs]
        self._lr_views = None

    @torch.no_grad()
    def reset_members(self, mask: torch.Tensor) -> None:
        """Zero the optimizer state of the members in ``mask`` (frozen members)."""
        for p in self.param_groups[0]["params"]:
            st = self.state.get(p)
            if not st:
                continue
            view = mask.to(p.device).view(-1, *([1] * (p.dim() - 1)))
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key].masked_fill_(view, 0.0)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102 - see class docstring
        if closure is not None:
            raise ValueError("EnsembleOptimizer.step takes no closure")
        group = self.param_groups[0]
        params = [p for p in group["params"]]
        if not params:
            return
        frozen = ~self.active
        grads = []
        for p in params:
            if p.grad is None:
                grads.append(torch.zeros_like(p))
                continue
            # in place, no temporary: a frozen member's (possibly NaN) gradient becomes 0
            grads.append(p.grad.masked_fill_(frozen.to(p.device).view(-1, *([1] * (p.dim() - 1))), 0.0))
        lrs = self._views(params)
        if self.rule == "SGD":
            for p, g, lr in zip(params, grads, lrs):
                p.addcmul_(g, lr, value=-1.0)
            return
        beta1, beta2 = group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        for p, g, lr in zip(params, grads, lrs):
            st = self.state[p]
            if not st:
                st["step"] = torch.zeros((), dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
            step = float(st["step"])
            if self.rule == "AdamW" and wd:
                p.mul_(1 - lr * wd)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bc1 = 1 - beta1 ** step
            bc2_sqrt = math.sqrt(1 - beta2 ** step)
            denom = (v.sqrt() / bc2_sqrt).add_(eps)
            p.sub_((lr / bc1) * m / denom)

    def member_state(self, k: int, names: Sequence[str], layout: Any = None) -> dict[str, dict[str, torch.Tensor]]:
        """``{name: {'step', 'exp_avg', 'exp_avg_sq'}}`` of member k (empty for SGD).

        ``layout(name, tensor)`` maps a member slice to the member's own layout (``StackedModel.to_member``).
        """
        conv = layout or (lambda n, t: t)
        out = {}
        for n, p in zip(names, self.param_groups[0]["params"]):
            st = self.state.get(p)
            if st:
                out[n] = {"step": st["step"].clone(), "exp_avg": conv(n, st["exp_avg"][k]).clone(),
                          "exp_avg_sq": conv(n, st["exp_avg_sq"][k]).clone()}
        return out


# ------------------------------------------------------------------------- configs
#: plain task-loss aggregations, per member: ``{task: (K,)} -> (K,)``.
_AGGREGATIONS = {"sum": lambda losses: torch.stack(list(losses.values())).sum(0),
                 "mean": lambda losses: torch.stack(list(losses.values())).mean(0)}


def _aggregation_name(cfg: Mapping) -> Any:
    """The config's task-loss combination: ``mtl_method`` (or the older ``loss_aggregation``)."""
    value = cfg.get("mtl_method", cfg.get("loss_aggregation", "sum"))
    if isinstance(value, (list, tuple)) and len(value) == 2 and not value[1]:
        value = value[0]  # (name, {}) without options
    return value


def _aggregator(cfg: Mapping):
    """The per-member aggregation of the plain methods 'sum' and 'mean' (ConfigError otherwise)."""
    name = _aggregation_name(cfg)
    if not isinstance(name, str) or name not in _AGGREGATIONS:
        raise ConfigError(f"mtl_method {name!r} cannot be vectorized (only {', '.join(_AGGREGATIONS)})")
    if cfg.get("diagnostics_every_n_steps") is not None:
        raise ConfigError("diagnostics_every_n_steps is set: task-gradient diagnostics are not vectorized")
    return _AGGREGATIONS[name]


def _key_value(value: Any) -> Any:
    return repr(value)


def per_task_optimizers(cfg: Mapping) -> bool:
    """Does a training config train with one optimizer per task (as ``LightningMultitask``)?"""
    return any(is_task_specific(cfg[k]) for k in ("update_rule", "learning_rate"))


def check_members(configs_training: Sequence[Mapping]) -> list[dict]:
    """Complete the members' training configs; ConfigError unless they can share one ensemble.

    They must agree on every key but ``MEMBER_KEYS`` and on whether they use per-task
    optimizers, and use a vectorizable update rule and task-loss aggregation.
    """
    cfgs = [init_config_training(**dict(c)) for c in configs_training]
    if not cfgs:
        raise ConfigError("an ensemble needs at least one member")
    first = cfgs[0]
    for k, c in enumerate(cfgs[1:], 1):
        for key in first:
            if key in MEMBER_KEYS:
                continue
            if _key_value(c[key]) != _key_value(first[key]):
                raise ConfigError(f"ensemble member {k}: training key '{key}' is {c[key]!r}, member 0 has "
                                  f"{first[key]!r}; only {', '.join(MEMBER_KEYS)} may differ")
    if len({per_task_optimizers(c) for c in cfgs}) > 1:
        raise ConfigError("some members have per-task optimizers (task-specific update_rule or learning_rate) "
                          "and others not; not vectorizable together")
    for c in cfgs:
        check_config(**c)
        _aggregator(c)
        rules = c["update_rule"].values() if is_task_specific(c["update_rule"]) else [c["update_rule"]]
        for r in rules:
            _rule_defaults(r)
    return cfgs


# ---------------------------------------------------------------------------- data
class EnsembleBatch(dict):
    """Stacked rows of K members: ``x`` (K, R, d_in), ``y`` (K, R, d_out), ``task_activity`` (R,).

    ``steps``: ``[(start, stop, blocks)]``, one per optimizer step (as ``ChunkBatch``):
    the rows of each step along dim 1 and its task blocks, the same for every member.
    """

    def __init__(self, *args, steps: Sequence[tuple[int, int, Blocks]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = list(steps)

    def to(self, device: Any, non_blocking: bool = True) -> "EnsembleBatch":
        return EnsembleBatch({k: v.to(device, non_blocking=non_blocking) for k, v in self.items()},
                             steps=self.steps)


class EnsembleLoader:
    """Training batches of K members, ``steps`` optimizer steps per yielded ``EnsembleBatch``.

    Each member's batches are those of its own loader (``make_train_loader`` over its data
    with its seed); a ``DeterministicLoader``'s epoch is gathered for all members at once.
    Other strategies are zipped step by step; their task blocks must agree.
    """

    def __init__(self, tensors: Sequence[Mapping[str, torch.Tensor]], config: Mapping, seeds: Sequence[int],
                 steps: Union[int, str] = 1):
        self.loaders = [make_train_loader(dict(t), dict(config), int(s)) for t, s in zip(tensors, seeds)]
        self.x = torch.stack([t["x"] for t in tensors])
        self.y = torch.stack([t["y"] for t in tensors])
        self.task_activity = tensors[0]["task_activity"]
        self.steps = steps
        self.epoch = 0
        self.deterministic = all(type(ld) is DeterministicLoader for ld in self.loaders)

    def __len__(self) -> int:
        n = len(self.loaders[0])
        return n if self.steps == 1 else math.ceil(n / self._per_chunk())

    def _per_chunk(self) -> int:
        return max(1, len(self.loaders[0])) if self.steps == "epoch" else int(self.steps)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for ld in self.loaders:
            if hasattr(ld, "set_epoch"):
                ld.set_epoch(epoch)

    def __iter__(self) -> Iterator[EnsembleBatch]:
        epoch = self.epoch
        self.epoch += 1
        for ld in self.loaders:
            if hasattr(ld, "set_epoch"):
                ld.set_epoch(epoch)
        per = self._per_chunk()
        if self.deterministic:
            index = torch.stack([ld.epoch_index(epoch) for ld in self.loaders])  # (K, batches, rows)
            blocks = self.loaders[0].batch_blocks
            rows = index.shape[2]
            members = torch.arange(len(self.loaders)).view(-1, 1, 1)
            for s in range(0, index.shape[1], per):
                part = index[:, s:s + per]
                flat = part.reshape(len(self.loaders), -1)
                n = part.shape[1]
                yield EnsembleBatch({"x": self.x[members[:, :, 0], flat], "y": self.y[members[:, :, 0], flat],
                                     "task_activity": self.task_activity[flat[0]]},
                                    steps=[(i * rows, (i + 1) * rows, blocks) for i in range(n)])
            return
        iters = [iter(ld) for ld in self.loaders]
        group: list[list[dict]] = []
        for batches in zip(*iters):
            group.append(list(batches))
            if len(group) == per:
                yield self._stack(group)
                group = []
        if group:
            yield self._stack(group)

    @staticmethod
    def _stack(group: list[list[dict]]) -> EnsembleBatch:
        steps, a = [], 0
        for batches in group:
            blocks = [getattr(b, "blocks", None) or task_blocks(b["task_activity"]) for b in batches]
            if any(bl != blocks[0] for bl in blocks):
                raise ConfigError("the members' batches differ in task composition at the same step; "
                                  "these points cannot be vectorized (use a shared seed or data_deterministic)")
            n = len(batches[0]["task_activity"])
            steps.append((a, a + n, blocks[0]))
            a += n
        x = torch.stack([torch.cat([bs[k]["x"] for bs in group]) for k in range(len(group[0]))])
        y = torch.stack([torch.cat([bs[k]["y"] for bs in group]) for k in range(len(group[0]))])
        ta = torch.cat([bs[0]["task_activity"] for bs in group])
        return EnsembleBatch({"x": x, "y": y, "task_activity": ta}, steps=steps)


class _EnsembleEvalLoader:
    """One batch: every member's whole split, stacked."""

    def __init__(self, tensors: Sequence[Mapping[str, torch.Tensor]]):
        self.batch = EnsembleBatch({"x": torch.stack([t["x"] for t in tensors]),
                                    "y": torch.stack([t["y"] for t in tensors]),
                                    "task_activity": tensors[0]["task_activity"]},
                                   steps=[(0, len(tensors[0]["task_activity"]),
                                           task_blocks(tensors[0]["task_activity"]))])

    def __len__(self) -> int:
        return 1 if len(self.batch["task_activity"]) else 0

    def __iter__(self) -> Iterator[EnsembleBatch]:
        if len(self):
            yield self.batch


class VectorizedDataModule(pl.LightningDataModule):
    """Stacked train/val/test loaders of K members (``datas[k].create_data(split)``, ``seeds[k]``).

    ``seeds[k]`` is the batching seed member k's single run would use (``DataModule.seed``:
    ``torch.initial_seed() % 2**31`` after that point's ``seed_everything``). Every split
    must have the same task rows in every member (same ``task_activity``).
    """

    def __init__(self, datas: Sequence[Any], seeds: Sequence[int], steps_per_chunk: Union[int, str, None] = None,
                 **config_training: Any):
        super().__init__()
        if len(datas) != len(seeds):
            raise ConfigError(f"{len(datas)} member data objects but {len(seeds)} seeds")
        self.datas = list(datas)
        self.data = self.datas[0]  # for callbacks that read tasks/boxes
        self.seeds = [int(s) for s in seeds]
        self.config_training = init_config_training(**config_training)
        self.steps_per_chunk = (self.config_training.get("steps_per_chunk", "auto") if steps_per_chunk is None
                                else steps_per_chunk)
        self.chunk_steps: Union[int, str] = 1  # what the last train_dataloader() used
        self.tensors: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in datas]
        self._train_loader: Optional[EnsembleLoader] = None

    def setup(self, stage: Optional[str] = None) -> None:
        for split in ("train", "val", "test"):
            for k, data in enumerate(self.datas):
                if split not in self.tensors[k]:
                    self.tensors[k][split] = {key: torch.as_tensor(v) for key, v in data.create_data(split).items()}
            ta = [t[split]["task_activity"] for t in self.tensors]
            if any(not torch.equal(a, ta[0]) for a in ta):
                raise ConfigError(f"the members' {split} splits differ in task rows (n_{split} per task); "
                                  "not vectorizable together")

    def split(self, split: str) -> list[dict[str, torch.Tensor]]:
        if not self.tensors[0].get(split):
            self.setup(split)
        return [t[split] for t in self.tensors]

    def train_dataloader(self) -> EnsembleLoader:
        self._train_loader = EnsembleLoader(self.split("train"), self.config_training, self.seeds, 1)
        self.chunk_steps = resolve_steps_per_chunk(self.steps_per_chunk, getattr(self, "trainer", None),
                                                   len(self._train_loader), self.config_training)
        self._train_loader.steps = self.chunk_steps
        return self._train_loader

    def val_dataloader(self) -> _EnsembleEvalLoader:
        return _EnsembleEvalLoader(self.split("val"))

    def test_dataloader(self) -> _EnsembleEvalLoader:
        return _EnsembleEvalLoader(self.split("test"))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, EnsembleBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def set_epoch(self, epoch: int) -> None:
        if self._train_loader is not None:
            self._train_loader.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"seeds": list(self.seeds)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seeds = [int(s) for s in state_dict["seeds"]]


# -------------------------------------------------------------------------- module
def _batched_criterion(criterion: Any):
    """``(pred (K,R,d), y (K,R,d)) -> (K,)``: the criterion per member (one op for MSE kinds)."""
    dims = getattr(criterion, "dims", None)
    if criterion is torch.nn.functional.mse_loss:
        return lambda p, y: (p - y).square().mean(dim=(1, 2))
    if dims is not None and getattr(criterion, "__qualname__", "").startswith("dimred_mse_loss"):
        idx = list(dims)
        if idx == list(range(idx[0], idx[0] + len(idx))):
            lo, hi = idx[0], idx[0] + len(idx)
            return lambda p, y: (p[:, :, lo:hi] - y[:, :, lo:hi]).square().mean(dim=(1, 2))
        index = torch.tensor(idx)
        return lambda p, y: (p.index_select(2, index.to(p.device))
                             - y.index_select(2, index.to(p.device))).square().mean(dim=(1, 2))
    return lambda p, y: torch.stack([criterion(p[k], y[k]) for k in range(p.shape[0])])


class VectorizedMultitask(pl.LightningModule):
    """K members trained together (see module docstring).

    ``models``: one ``nn.Module`` per member (same parameter shapes); ``configs_training``:
    one training config per member (``check_members``). ``impl``: 'auto' (abcMLP: batched
    matmuls, on the CPU from width ``LOOP_MIN_WIDTH`` one addmm per member; others: vmap),
    'bmm', 'loop' or 'vmap'. ``takes_chunks``: an ``EnsembleBatch`` may hold several
    optimizer steps (``steps_per_chunk``).
    """

    takes_chunks = True

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
        self.in_domain_masks: dict[str, dict[int, list[torch.Tensor]]] = {}
        self._masked: dict[str, dict[int, list]] = {"val": {}, "test": {}}
        self._steps_done = 0
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

    def _regularization(self, task: int) -> Optional[torch.Tensor]:
        """(K,) alpha_k * sum_p ||p_k||_ord^2 of task ``task`` (None when every alpha is 0)."""
        if task not in self._reg:
            alphas = [float(self.task_config(k, task)["regularization_alpha"]) for k in range(self.K)]
            ord_ = self.task_config(0, task)["regularization_ord"]
            self._reg[task] = (torch.tensor(alphas), ord_) if any(alphas) else None
        reg = self._reg[task]
        if reg is None:
            return None
        alphas, ord_ = reg
        if alphas.device != self.device:
            alphas = alphas.to(self.device)
            self._reg[task] = (alphas, ord_)
        total = None
        for _, p in self.ensemble.named_stacked():
            n = torch.linalg.vector_norm(p.reshape(self.K, -1), ord_, dim=1).pow(2)
            total = n if total is None else total + n
        return alphas.to(total.device, total.dtype) * total

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, d_in) -> (K, B, d_out)``."""
        return self.ensemble(x)

    def _losses(self, x: torch.Tensor, y: torch.Tensor, blocks: Blocks) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        out = self.ensemble(x)
        return {t: self._batched(t)(out[:, a:b], y[:, a:b]) for t, (a, b) in blocks.items()}, out

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

    def _check_steps(self, losses: dict[int, torch.Tensor]) -> None:
        """Freeze members whose loss is not finite (device ops only; recorded at epoch end)."""
        ok = self.active.clone()
        for t, v in losses.items():
            finite = torch.isfinite(v.detach())
            newly = ok & ~finite
            self.bad_task.copy_(torch.where(newly & (self.bad_task < 0), torch.full_like(self.bad_task, t),
                                            self.bad_task))
            ok = ok & finite
        newly = self.active & ~ok
        self.bad_step.copy_(torch.where(newly, torch.full_like(self.bad_step, self._steps_done), self.bad_step))
        self.active.copy_(ok)
        for opt in self._opts or []:
            opt.reset_members(newly)

    def _optimize(self, losses: dict[int, torch.Tensor], steps: list) -> torch.Tensor:
        objectives = dict(losses)
        for t in objectives:
            reg = self._regularization(t)
            if reg is not None:
                objectives[t] = objectives[t] + reg
        self._check_steps(objectives)
        params = [p for _, p in self.ensemble.named_stacked()]
        if not self.per_task_optimizers:
            for p in params:
                p.grad = None
            total = self.aggregate(objectives)  # (K,): aggregation is per member (elementwise over K)
            total.sum().backward()
            steps[0]()
            self._steps_done += 1
            return total.detach()
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
            losses, _ = self._losses(x[:, a:b], y[:, a:b], blocks)
            totals.append(self._optimize(losses, steps))
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
        """
        self.in_domain_masks = {s: {int(t): list(m) for t, m in d.items()} for s, d in masks.items()}

    def _eval(self, batch: EnsembleBatch, split: str) -> dict:
        out = {}
        masks = self.in_domain_masks.get(split, {})
        self._masked[split] = {}
        for a, b, blocks in batch.steps:
            losses, preds = self._losses(batch["x"][:, a:b], batch["y"][:, a:b], blocks)
            for t, v in losses.items():
                self._acc[split].setdefault(t, []).append((v, blocks[t][1] - blocks[t][0]))
            for t, (lo, hi) in blocks.items():
                if t in masks:
                    crit = self.criterion(t)
                    vals = []
                    for k, mask in enumerate(masks[t]):
                        rows = mask.to(preds.device).nonzero().squeeze(1)
                        vals.append(None if rows.numel() == 0 else
                                    crit(preds[k, lo:hi].index_select(0, rows), batch["y"][k, lo:hi].index_select(0, rows)))
                    self._masked[split][t] = vals
            out = {"losses": losses, "preds": preds}
        return out

    def _masked_losses(self, split: str) -> dict[int, list[Optional[float]]]:
        return {t: [None if v is None else float(v) for v in vals] for t, vals in self._masked.get(split, {}).items()}

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

    def member_optimizer_states(self, k: int, model: Optional[nn.Module] = None) -> list[dict]:
        """The state_dicts of the optimizers a single ``LightningMultitask`` of member k holds."""
        model = model if model is not None else self.member_model(k)
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
            single.load_state_dict(sd)  # checks the layout
            out.append(single.state_dict())
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


__all__ = ["VectorizedMultitask", "VectorizedDataModule", "StackedModel", "EnsembleOptimizer", "EnsembleLoader",
           "EnsembleBatch", "check_members", "member_lr_tensors", "metric_name", "MEMBER_KEYS", "VECTORIZABLE_RULES"]
