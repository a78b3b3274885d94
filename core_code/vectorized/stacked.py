"""StackedModel: K models of identical parameter shapes as one module with stacked parameters."""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
from torch import nn

from core_code.util.config_extractions import ConfigError

#: CPU evaluation (no grad) of more rows than this goes member by member through all layers:
#: one member's activations stay in cache (measured 1.5x faster than layer by layer for all
#: K members at 16 x 2048 rows x width 64 and 512).
MEMBERWISE_MIN_ROWS = 256
#: Layers with more than 1 and fewer than this many outputs (typically the output layer) are
#: stored in the members' layout (K, out, in) and computed transposed, out^T = W h^T: CPU
#: GEMMs with 2-15 output columns are 2-4x slower than the same arithmetic transposed
#: (measured at 2048 rows x 64 inputs; the ensemble's fit and backward gain 1.5-1.8x there).
NARROW_MAX_OUT = 16


def _safe(name: str) -> str:
    return name.replace(".", "__")


def _templates(models: Sequence[nn.Module]) -> list[nn.Module]:
    """Per member a copy on the meta device; members alike in type, ``repr`` and
    ``config_architecture`` (a seed sweep's) share one (a deep copy is ~0.6 ms a member)."""
    seen: dict = {}
    out = []
    for m in models:
        config = getattr(m, "config_architecture", None)
        key = (type(m), repr(m), repr(config)) if config is not None else id(m)
        if key not in seen:
            seen[key] = copy.deepcopy(m).to("meta")
        out.append(seen[key])
    return out


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
        if impl not in ("auto", "bmm", "vmap"):
            raise ConfigError(f"StackedModel impl must be 'auto', 'bmm' or 'vmap', got {impl!r}")
        if impl == "bmm" and not is_abc:
            raise ConfigError(f"impl {impl!r} needs abcMLP members, got {type(first).__name__}")
        # 'auto': abcMLP members as batched matmuls (on the CPU as fast as or faster than one
        # addmm per member at widths 64 to 2048, forward and backward); other modules: vmap.
        self.requested = impl
        self.impl = ("bmm" if is_abc else "vmap") if impl == "auto" else impl
        # bmm: weights stored as (K, in, out), contiguous: CPU bmm and its backward are ~2x
        # faster than on a transposed view; narrow layers keep (K, out, in) (NARROW_MAX_OUT).
        # ``to_member`` gives a member's own layout back.
        self.transposed = ({f"layers.{i}.weight" for i in range(len(first.layers))
                            if not 1 < first.layers[i].weight.shape[0] < NARROW_MAX_OUT}
                           if self.impl == "bmm" else set())
        self.params = nn.ParameterDict({
            _safe(n): nn.Parameter(self._stack(n, [dict(m.named_parameters())[n].detach() for m in models]))
            for n in self.names})
        # Templates on the meta device: names, lr multipliers and repr, no memory.
        self.templates = _templates(models)
        if self.impl == "bmm":
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
        self._mult: list[Union[float, str]] = []
        self._bias_mult: list[Union[float, str]] = []
        # per layer, per member: (multiplier, bias multiplier) as floats (member-by-member evaluation)
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
        # Per layer, found once (the batched forward runs every optimizer step, where a few
        # microseconds of Python per layer add up): weight key, bias key (None: no bias),
        # narrow (stored (K, out, in), computed transposed), outer (one input: an outer
        # product, computed as a broadcast multiply, 2-3x faster than a GEMM with inner
        # dimension 1, forward and backward); and the activation after it (a plain ReLU
        # called directly, without the module call).
        self._layers = [(f"layers__{i}__weight", f"layers__{i}__bias" if layer.bias is not None else None,
                         f"layers.{i}.weight" not in self.transposed, layer.weight.shape[1] == 1)
                        for i, layer in enumerate(first.layers)]
        self._acts = [torch.relu if type(a) is nn.ReLU and not a.inplace else a for a in self.activations]

    def _stack(self, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = torch.stack(tensors)
        return out.transpose(1, 2).contiguous() if name in self.transposed else out.clone()

    def to_member(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Member slice ``value`` (of parameter ``name``, or of a tensor of its shape) in the member's layout."""
        return value.t().contiguous() if name in self.transposed else value

    def _factor(self, value: Union[float, str]) -> Union[float, torch.Tensor]:
        return getattr(self, value) if isinstance(value, str) else value

    def _narrow(self, i: int) -> bool:
        """Layer ``i`` is stored (K, out, in) and computed transposed (see ``NARROW_MAX_OUT``)."""
        return self._layers[i][2]

    def _forward_bmm(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        acts = self._acts
        for i in range(self.depth):
            h = self._batched_layer(i, h)
            if i < self.depth - 1:
                h = acts[i](h)
        return h

    def _batched_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` of every member on ``h`` (K, B, in): bm * bias + m * (h @ W^T), the single model's addmm."""
        m, bm = self._factor(self._mult[i]), self._factor(self._bias_mult[i])
        if not isinstance(m, float) or (m != 1.0 and torch.is_grad_enabled()):
            # per-member multipliers (K, 1, 1); in training also a shared one: scaling the
            # input saves a pass over the weight gradient (alpha would scale h^T g)
            h, m = h * m, 1.0
        return self._affine(i, h, self.params[self._layers[i][0]], self._bias_row(i, bm), m)

    def _bias_row(self, i: int, bm: Union[float, torch.Tensor]) -> Optional[torch.Tensor]:
        """Layer ``i``'s bias of every member times its multiplier ``bm``, (K, 1, out); None without bias."""
        bias_key = self._layers[i][1]
        if bias_key is None:
            return None
        bias = self.params[bias_key].unsqueeze(1)
        return bias if isinstance(bm, float) and bm == 1.0 else bias * bm

    def _member_layer(self, i: int, k: int, h: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        """Layer ``i`` of member ``k`` on ``h`` (R, in), with ``w``, ``b`` its slices (as ``_batched_layer``)."""
        m, bm = self._member_mults[i][k]
        bias = None if b is None else (b * bm if bm != 1.0 else b).unsqueeze(0)  # (1, out)
        return self._affine(i, h, w, bias, m)

    def _affine(self, i: int, h: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], m: float) -> torch.Tensor:
        """``bias + m * (h @ W^T)`` of layer ``i``: one member (2-D) or all (3-D, batched).

        ``w`` in the stored layout ((in, out); narrow: (out, in), computed as out^T = W h^T);
        ``bias`` row-shaped (``(..., 1, out)``) or None. One input: a broadcast product.
        """
        _, _, narrow, outer = self._layers[i]
        if outer:
            w_row = w.mT if narrow else w  # (..., 1, out)
            return h * w_row * m if bias is None else torch.addcmul(bias, h, w_row, value=m)
        a, b = (w, h.mT) if narrow else (h, w)
        batched = h.dim() == 3
        if bias is None:
            out = (torch.bmm if batched else torch.mm)(a, b)
            out = out * m if m != 1.0 else out
        else:
            out = (torch.baddbmm if batched else torch.addmm)(bias.mT if narrow else bias, a, b, alpha=m)
        return out.mT if narrow else out

    def _forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """Member by member through every layer (``x`` (K, B, d_in) or shared (B, d_in); no-grad CPU evaluation)."""
        outs = []
        layers = [(self.params[w], None if b is None else self.params[b]) for w, b, _, _ in self._layers]
        acts = self._acts
        for k in range(self.K):
            h = x[k] if x.dim() == 3 else x
            for i, (w, b) in enumerate(layers):
                h = self._member_layer(i, k, h, w[k], None if b is None else b[k])
                if i < self.depth - 1:
                    h = acts[i](h)
            outs.append(h)
        return torch.stack(outs)

    # ------------------------------------------------------- written-out gradients
    @property
    def direct_grads(self) -> bool:
        """Whether ``forward_keep`` and ``backward`` apply: abcMLP layers as batched matmuls, plain ReLUs between."""
        return self.impl == "bmm" and all(a is torch.relu for a in self._acts)

    @torch.no_grad()
    def forward_keep(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """``forward(x)`` without autograd, and the tape ``backward`` takes: per layer its input
        (after the previous ReLU), the input its weight multiplies (scaled by per-member
        multipliers) and the scalar multiplier left (the GEMMs' alpha)."""
        tape = []
        h = x
        for i in range(self.depth):
            m, bm = self._factor(self._mult[i]), self._factor(self._bias_mult[i])
            hin, alpha = (h * m, 1.0) if isinstance(m, torch.Tensor) else (h, m)
            z = self._affine(i, hin, self.params[self._layers[i][0]], self._bias_row(i, bm), alpha)
            tape.append((h, hin, alpha))
            h = torch.relu(z) if i < self.depth - 1 else z
        return h, tape

    @torch.no_grad()
    def backward(self, tape: list, grad_out: torch.Tensor) -> list[torch.Tensor]:
        """The stacked parameters' gradients (``named_stacked`` order) from ``forward_keep``'s tape
        and dL/d(output) ``grad_out`` (K, B, d_out): per layer the weight's and the input's
        gradient as one GEMM each (the multiplier as alpha), the bias's as a row sum, the
        ReLU's as a mask; what autograd computes for ``forward``, without its graph (a 64x3
        16-member step takes half the time)."""
        grads: dict[str, torch.Tensor] = {}
        g = grad_out
        for i in reversed(range(self.depth)):
            weight_key, bias_key, narrow, outer = self._layers[i]
            h, hin, alpha = tape[i]
            w = self.params[weight_key]
            if bias_key is not None:
                gb, bm = g.sum(1), self._factor(self._bias_mult[i])
                grads[bias_key] = gb * bm.view(-1, 1) if isinstance(bm, torch.Tensor) else gb * bm if bm != 1.0 else gb
            if outer:  # weight as a row (K, 1, out): a broadcast product forward
                w_row = w.mT if narrow else w
                gw = torch.bmm(hin.mT, g)  # (K, 1, out)
                gw = gw * alpha if alpha != 1.0 else gw
                grads[weight_key] = gw.mT.contiguous() if narrow else gw
                gh = torch.bmm(g, w_row.mT) * alpha if i > 0 else None
            elif narrow:  # stored (K, out, in)
                grads[weight_key] = torch.baddbmm(w, g.mT, hin, beta=0, alpha=alpha)
                gh = torch.baddbmm(hin, g, w, beta=0, alpha=alpha) if i > 0 else None
            else:  # stored (K, in, out)
                grads[weight_key] = torch.baddbmm(w, hin.mT, g, beta=0, alpha=alpha)
                gh = torch.baddbmm(hin, g, w.mT, beta=0, alpha=alpha) if i > 0 else None
            if gh is not None:
                m = self._factor(self._mult[i])
                if isinstance(m, torch.Tensor):
                    gh = gh * m
                g = torch.ops.aten.threshold_backward(gh, h, 0)  # the ReLU before layer i
        return [grads[_safe(n)] for n in self.names]

    # ------------------------------------------------------------------ vmap
    def _forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        base = self._base[0]
        names = self.names

        def one(params: tuple, xk: torch.Tensor) -> torch.Tensor:
            return functional_call(base, dict(zip(names, params)), (xk,))

        return vmap(one)(tuple(self.params[_safe(n)] for n in names), x)

    def _memberwise(self, x: torch.Tensor) -> bool:
        return (self.impl != "vmap" and self.requested == "auto" and x.device.type == "cpu"
                and x.shape[-2] > MEMBERWISE_MIN_ROWS and not torch.is_grad_enabled())

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_in)`` rows that every member sees -> ``(K, B, d_out)`` (no stacked copy of ``x``)."""
        if self._memberwise(x):
            return self._forward_members(x)
        return self.forward(x.expand(self.K, *x.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "vmap":
            return self._forward_vmap(x)
        if self._memberwise(x):
            return self._forward_members(x)
        return self._forward_bmm(x)

    # ------------------------------------------------------------- members
    def named_stacked(self) -> list[tuple[str, nn.Parameter]]:
        """``[(member parameter name, stacked parameter)]`` in the members' registration order."""
        return [(n, self.params[_safe(n)]) for n in self.names]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s own ``state_dict`` (copies)."""
        return {n: self.to_member(n, p[k].detach()).clone() for n, p in self.named_stacked()}


