"""EnsembleOptimizer: each member's SGD/Adam/AdamW step, elementwise with per-member learning rates."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from core_code.util.config_extractions import ConfigError
from core_code.util.optimizers import UPDATE_RULES, param_groups

#: update rules the ensemble optimizer reproduces (torch defaults, as ``make_optimizer`` builds them).
VECTORIZABLE_RULES = ("SGD", "Adam", "AdamW")



def rule_defaults(rule: str) -> dict:
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
    freezes members: their gradients become 0 (their Adam state is zeroed by
    ``reset_members``, so the update is 0) and AdamW's decay skips them. The step is
    written with plain tensor ops.
    """

    def __init__(self, params: Sequence[nn.Parameter], rule: str, lrs: Sequence[torch.Tensor],
                 active: torch.Tensor):
        self.rule = rule
        d = rule_defaults(rule)
        super().__init__(list(params), {"lr": float(lrs[0].max()) if len(lrs) else 0.0,
                                        "betas": d.get("betas"), "eps": d.get("eps"),
                                        "weight_decay": d.get("weight_decay", 0.0)})
        self.active = active
        # float64, cast to each parameter's dtype where used: float64 members ('64-true') step
        # with the single run's learning rates, not their float32 roundings
        self._lrs = [lr.to(torch.float64) for lr in lrs]
        self._lr_views: Optional[list[torch.Tensor]] = None

    def _views(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per parameter: lr_k shaped (K, 1, ..., 1) on the parameter's device, in its dtype."""
        if (self._lr_views is None or self._lr_views[0].device != params[0].device
                or self._lr_views[0].dtype != params[0].dtype):
            self._lr_views = [lr.to(p.device, p.dtype).view(-1, *([1] * (p.dim() - 1)))
                              for lr, p in zip(self._lrs, params)]
        return self._lr_views

    def set_lrs(self, lrs: Sequence[torch.Tensor]) -> None:
        """Replace the (K,) learning rates (e.g. after loading a checkpoint)."""
        self._lrs = [lr.to(torch.float64) for lr in lrs]
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
        # on the CPU the check is free (no device sync) and saves a pass over every gradient
        mask = self.active.device.type != "cpu" or not bool(self.active.all())
        frozen = ~self.active if mask else None
        grads = []
        for p in params:
            if p.grad is None:
                grads.append(torch.zeros_like(p))
            elif mask:  # in place, no temporary: a frozen member's (possibly NaN) gradient becomes 0
                grads.append(p.grad.masked_fill_(frozen.to(p.device).view(-1, *([1] * (p.dim() - 1))), 0.0))
            else:
                grads.append(p.grad)
        lrs = self._views(params)
        if self.rule == "SGD":
            torch._foreach_addcmul_(params, grads, lrs, value=-1.0)
            return
        beta1, beta2 = group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        if self.rule == "AdamW" and wd:  # no decay of frozen members
            act = self.active.to(params[0].device, params[0].dtype)
            decays = [lr * act.view(-1, *([1] * (lr.dim() - 1))) for lr in lrs]
        for i, (p, g, lr) in enumerate(zip(params, grads, lrs)):
            st = self.state[p]
            if not st:
                st["step"] = torch.zeros((), dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
            step = float(st["step"])
            if self.rule == "AdamW" and wd:
                p.mul_(1 - decays[i] * wd)
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


