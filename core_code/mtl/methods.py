"""The multi-task methods: how task losses or task gradients become one update.

Two kinds (``MTLMethod.kind``):

- ``'linear'``: the update is the gradient of ``sum_t w_t L_t`` (plus, for ``uw``, terms
  in the method's own parameters); ``loss(obj, tasks)`` gives that scalar and ``w``.
- ``'gradient'``: the method needs the task gradients ``G`` (T x P, shared parameters
  only); ``directions(G, obj, tasks)`` returns one direction per task (T x P, ``joint``
  False: each task's optimizer can get its own) or one joint direction (P,).

Every method sees only the SHARED parameters' gradients; ``LightningMultitask`` gives
task-specific parameters their plain task gradients. ``obj`` is the (T,) vector of the
present tasks' objectives (loss plus regularization), ``tasks`` their task numbers.
``last_weights`` holds the weights the method gave the tasks at its last call (None
where it has none, e.g. PCGrad), for the diagnostics.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

from core_code.mtl.solvers import cagrad_weights, imtl_g_weights, min_norm_weights
from core_code.util.config_extractions import ConfigError, parse_task_key, task_key


def _dist_world() -> int:
    """The torch.distributed world size (1 without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _gram(G: torch.Tensor) -> list[list[float]]:
    """``G G^T`` in float64 as Python floats (one host transfer)."""
    return (G.double() @ G.double().T).cpu().tolist()


class MTLMethod(nn.Module):
    """Base class. Subclasses set ``name``, ``kind``, ``joint``, ``options`` (name -> default)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "linear"
    joint: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        super().__init__()
        self.opts = {**self.options, **options}
        self.tasks: Optional[list[int]] = None
        self.last_weights: Optional[torch.Tensor] = None
        self.check_options()

    def check_options(self) -> None:
        """Raise ConfigError for a bad option value (override)."""

    def _bad(self, key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"training config key 'mtl_method': option {key!r} of {self.name!r} is {value!r}; "
                           f"allowed: {allowed}")

    @property
    def needs_tasks(self) -> bool:
        """Does ``setup(tasks)`` create per-task parameters or state?"""
        return False

    def setup(self, tasks: Sequence[int]) -> None:
        """Fix the task set (sorted task numbers); creates per-task parameters/state."""
        self.tasks = sorted(int(t) for t in tasks)

    def index(self, tasks: Sequence[int]) -> list[int]:
        """Positions of ``tasks`` in ``self.tasks``."""
        if self.tasks is None:
            raise ConfigError(f"mtl_method {self.name!r} needs the task set before training: give a task-specific "
                              "training value or train through a DataModule")
        pos = {t: i for i, t in enumerate(self.tasks)}
        missing = [t for t in tasks if t not in pos]
        if missing:
            raise ConfigError(f"mtl_method {self.name!r} was set up for tasks {self.tasks}, got tasks {missing}")
        return [pos[t] for t in tasks]

    def task_module(self, task: int) -> Optional[nn.Module]:
        """The module holding ``task``'s own method parameters (for its optimizer), or None."""
        return None

    def before_step(self, epoch: int) -> None:
        """Called before every training step, or chunk of steps, with its epoch (on every rank)."""

    def epoch_end(self) -> None:
        """Called at the end of every training epoch (on every rank)."""

    # linear methods
    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        """The (T,) task weights (detached) for this step."""
        raise NotImplementedError

    def loss(self, obj: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar to backpropagate, detached (T,) weights of the shared parameters)."""
        w = self.weights(obj.detach(), tasks)
        self.last_weights = w
        return (w * obj).sum(), w

    # all methods (linear: w_t g_t)
    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        """Per-task (T, P) directions, or a joint (P,) one, from the task gradients ``G`` (T, P)."""
        _, w = self.loss(obj, tasks)
        return w.to(G.dtype).unsqueeze(1) * G


# ----------------------------------------------------------------- linear methods
class Sum(MTLMethod):
    """The plain sum of the task losses (the default; Lightning's fast path)."""

    name = "sum"

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        return torch.ones_like(obj)

    def loss(self, obj: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.ones_like(obj.detach())
        self.last_weights = w
        return obj.sum(), w


class Mean(MTLMethod):
    """The mean of the (present) task losses."""

    name = "mean"

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        return torch.full_like(obj, 1.0 / len(tasks))


class Fixed(MTLMethod):
    """Fixed weights ``task_weights = {'task_0': w_0, ...}`` (every w > 0)."""

    name = "fixed"
    options = {"task_weights": None}

    def check_options(self) -> None:
        tw = self.opts["task_weights"]
        if not isinstance(tw, dict) or not tw:
            raise self._bad("task_weights", tw, "a dict {'task_0': w_0, ...} of numbers > 0")
        for k, v in tw.items():
            if parse_task_key(k) is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise self._bad("task_weights", tw, "a dict {'task_0': w_0, ...} of numbers > 0")

    def setup(self, tasks: Sequence[int]) -> None:
        super().setup(tasks)
        named = sorted(parse_task_key(k) for k in self.opts["task_weights"])
        if named != self.tasks:
            raise ConfigError(f"training config key 'mtl_method': 'fixed' task_weights name tasks {named}, "
                              f"the training has tasks {self.tasks}")

    @property
    def needs_tasks(self) -> bool:
        return True

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        tw = self.opts["task_weights"]
        return torch.tensor([float(tw[task_key(t)]) for t in tasks], dtype=obj.dtype, device=obj.device)


class _Scalar(nn.Module):
    """One scalar parameter (a task's own method parameter)."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))


class UncertaintyWeighting(MTLMethod):
    """Kendall et al. 2018 (regression): sum_t 0.5 exp(-s_t) L_t + 0.5 s_t, s_t = log sigma_t^2 learned.

    The log-variances start at 0 and are trained by the optimizer with the model (each
    task's by its own optimizer when there are per-task optimizers).
    """

    name = "uw"

    @property
    def needs_tasks(self) -> bool:
        return True

    def setup(self, tasks: Sequence[int]) -> None:
        super().setup(tasks)
        if not hasattr(self, "log_vars"):
            self.log_vars = nn.ModuleDict({task_key(t): _Scalar(0.0) for t in self.tasks})

    def task_module(self, task: int) -> Optional[nn.Module]:
        return self.log_vars[task_key(task)]

    def log_variances(self, tasks: Sequence[int]) -> torch.Tensor:
        self.index(tasks)
        return torch.stack([self.log_vars[task_key(t)].value for t in tasks])

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        return (0.5 * torch.exp(-self.log_variances(tasks))).detach().to(obj.dtype)

    def loss(self, obj: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.log_variances(tasks).to(obj.dtype)
        w = 0.5 * torch.exp(-s)
        self.last_weights = w.detach()
        return (w * obj + 0.5 * s).sum(), w.detach()


class DynamicWeightAverage(MTLMethod):
    """Liu et al. 2019 (MTAN): w_k = K softmax_k(r_k / temperature), r_k = L_k(e-1) / L_k(e-2).

    L_k(e) is task k's mean objective over training epoch e (averaged over ranks under
    DDP); the first two epochs use w = 1.

    The running epoch's sums are checkpointed with the history, so a run resumed inside an
    epoch, or from a checkpoint taken before that epoch's end ran, finds the same L_k(e) as
    one never stopped. Under DDP a checkpoint holds rank 0's sums only: there a resumed
    epoch's L_k(e) covers the steps after the resume.
    """

    #: checkpointed with the history; checkpoints written before they were have none
    _SUM_BUFFERS = ("epoch_sum", "epoch_count")
    #: the epoch the running sums belong to (None: no sums since the last epoch end); checkpointed
    _sums_epoch: Optional[int] = None

    name = "dwa"
    options = {"temperature": 2.0}

    def check_options(self) -> None:
        t = self.opts["temperature"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise self._bad("temperature", t, "a number > 0")

    @property
    def needs_tasks(self) -> bool:
        return True

    def setup(self, tasks: Sequence[int]) -> None:
        super().setup(tasks)
        n = len(self.tasks)
        if not hasattr(self, "history"):
            self.register_buffer("history", torch.full((2, n), float("nan"), dtype=torch.float64))
            self.register_buffer("epoch_sum", torch.zeros(n, dtype=torch.float64))
            self.register_buffer("epoch_count", torch.zeros(n, dtype=torch.float64))

    def all_weights(self) -> torch.Tensor:
        """(len(self.tasks),) weights of the current epoch."""
        h = self.history
        if bool(torch.isnan(h).any()):
            return torch.ones(h.shape[1], dtype=h.dtype, device=h.device)
        r = h[1] / h[0]
        return h.shape[1] * torch.softmax(r / float(self.opts["temperature"]), dim=0)

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        idx = self.index(tasks)
        i = torch.tensor(idx, device=self.epoch_sum.device)
        self.epoch_sum.index_add_(0, i, obj.detach().to(self.epoch_sum))
        self.epoch_count.index_add_(0, i, torch.ones(len(idx), dtype=self.epoch_count.dtype,
                                                     device=self.epoch_count.device))
        if self._current is None:
            self._current = self.all_weights()
        return self._current[idx].to(device=obj.device, dtype=obj.dtype)

    _current: Optional[torch.Tensor] = None

    def before_step(self, epoch: int) -> None:
        if self._sums_epoch is not None and self._sums_epoch != epoch:
            # The sums of an epoch whose end never ran: the run resumed from a checkpoint of
            # that epoch's last step, and Lightning went on with the next epoch. Close it
            # first, as the uninterrupted run did.
            self.epoch_end()
        self._sums_epoch = epoch

    def epoch_end(self) -> None:
        if self.tasks is None:
            return
        s, c = self.epoch_sum.clone(), self.epoch_count.clone()
        if _dist_world() > 1:
            torch.distributed.all_reduce(s)
            torch.distributed.all_reduce(c)
        mean = torch.where(c > 0, s / c.clamp_min(1.0), self.history[1])
        self.history.copy_(torch.stack([self.history[1], mean]))
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self._current = None
        self._sums_epoch = None

    def get_extra_state(self) -> dict:
        return {"sums_epoch": self._sums_epoch}

    def set_extra_state(self, state: Any) -> None:
        self._sums_epoch = state.get("sums_epoch") if isinstance(state, dict) else None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        older = [k for k in (*self._SUM_BUFFERS, "_extra_state") if prefix + k in missing_keys]
        for k in older:  # a checkpoint written before the sums were kept: the epoch starts from none
            missing_keys.remove(prefix + k)
        # under DDP the checkpoint holds rank 0's sums, not this rank's
        if (older or _dist_world() > 1) and self.tasks is not None:
            self.epoch_sum.zero_()
            self.epoch_count.zero_()
            self._sums_epoch = None
        self._current = None


class RandomLossWeighting(MTLMethod):
    """Lin et al. 2021 (RLW): w = softmax(z), z ~ N(0, I) drawn every step (global torch RNG; rank 0's under DDP)."""

    name = "rlw"

    def weights(self, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        z = torch.randn(len(tasks), dtype=torch.float64).to(obj.device)
        if _dist_world() > 1:
            torch.distributed.broadcast(z, 0)
        return torch.softmax(z, dim=0).to(obj.dtype)


# --------------------------------------------------------------- gradient methods
class GradNorm(MTLMethod):
    """Chen et al. 2018: weights w (sum T) moved to balance the weighted gradient norms.

    Per step: G_i = w_i ||g_i|| over the shared parameters (the paper uses the last
    shared layer; the task gradients are computed here anyway), r_i = (L_i / L_i(0)) /
    mean_j(L_j / L_j(0)), target_i = mean(G) r_i^alpha (a constant); the update uses
    sum_i w_i g_i, then w_i <- w_i - lr * sign(G_i - target_i) ||g_i|| (the gradient of
    sum_i |G_i - target_i|) and w <- T w / sum(w). L_i(0): the first step's objective.
    """

    name = "gradnorm"
    kind = "gradient"
    options = {"alpha": 1.5, "lr": 0.025}

    def check_options(self) -> None:
        for key in ("alpha", "lr"):
            v = self.opts[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise self._bad(key, v, "a number >= 0")

    @property
    def needs_tasks(self) -> bool:
        return True

    def setup(self, tasks: Sequence[int]) -> None:
        super().setup(tasks)
        if not hasattr(self, "task_weights"):
            n = len(self.tasks)
            self.register_buffer("task_weights", torch.ones(n, dtype=torch.float64))
            self.register_buffer("initial_losses", torch.full((n,), float("nan"), dtype=torch.float64))

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        idx = torch.tensor(self.index(tasks), device=self.task_weights.device)
        w = self.task_weights[idx].clone()
        obj64 = obj.detach().to(w)
        init = self.initial_losses[idx]
        init = torch.where(torch.isnan(init), obj64, init)
        self.initial_losses[idx] = init
        norms = G.detach().double().norm(dim=1).to(w.device)
        gw = w * norms
        ratio = obj64 / init
        target = gw.mean() * (ratio / ratio.mean()) ** float(self.opts["alpha"])
        new = w - float(self.opts["lr"]) * torch.sign(gw - target) * norms
        self.task_weights[idx] = new
        self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())
        self.last_weights = w
        return w.to(device=G.device, dtype=G.dtype).unsqueeze(1) * G


class PCGrad(MTLMethod):
    """Yu et al. 2020: each g_i is projected, for every other task j in random order with
    g_i' . g_j < 0, onto g_j's normal plane: g_i' -= (g_i' . g_j) / ||g_j||^2 g_j.
    The update is sum_i g_i' (per-task optimizers: task i's optimizer gets g_i').
    The order is drawn from a generator seeded with the step count (identical on all ranks).
    """

    name = "pcgrad"
    kind = "gradient"
    step_count: int = 0

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        n = G.shape[0]
        gen = torch.Generator().manual_seed(self.step_count)
        self.step_count += 1
        sq = (G * G).sum(dim=1).clamp_min(torch.finfo(G.dtype).tiny)
        out = G.clone()
        for i in range(n):
            for j in torch.randperm(n, generator=gen).tolist():
                if j == i:
                    continue
                coef = torch.clamp(out[i] @ G[j], max=0.0) / sq[j]  # 0 unless they conflict
                out[i] -= coef * G[j]
        self.last_weights = None
        return out


class MGDA(MTLMethod):
    """Sener & Koltun 2018: the min-norm point sum_t alpha_t g_t of the gradients' convex hull.

    ``normalization`` ('none' default, 'l2', 'loss', 'loss+'): the gradients the solver
    sees are divided by ||g_t||, L_t or L_t ||g_t||; the update is sum_t alpha_t g_t with
    the original gradients (as in the paper's code).
    """

    name = "mgda"
    kind = "gradient"
    joint = True
    options = {"normalization": "none"}
    NORMALIZATIONS = ("none", "l2", "loss", "loss+")

    def check_options(self) -> None:
        if self.opts["normalization"] not in self.NORMALIZATIONS:
            raise self._bad("normalization", self.opts["normalization"], ", ".join(self.NORMALIZATIONS))

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        m = _gram(G)
        n = len(m)
        norm = self.opts["normalization"]
        if norm != "none":
            losses = obj.detach().double().cpu().tolist()
            scale = []
            for i in range(n):
                gn = math.sqrt(max(m[i][i], 0.0))
                s = {"l2": gn, "loss": losses[i], "loss+": losses[i] * gn}[norm]
                scale.append(s if s > 0 else 1.0)
            m = [[m[i][j] / (scale[i] * scale[j]) for j in range(n)] for i in range(n)]
        alpha = torch.tensor(min_norm_weights(m), dtype=G.dtype, device=G.device)
        self.last_weights = alpha
        return alpha @ G


class CAGrad(MTLMethod):
    """Liu et al. 2021: d = g0 + sqrt(phi) / ||g_w|| g_w, g0 the mean gradient, phi = c^2 ||g0||^2,
    w the minimiser over the simplex of g_w . g0 + sqrt(phi) ||g_w|| (c = 0: the mean)."""

    name = "cagrad"
    kind = "gradient"
    joint = True
    options = {"c": 0.4}

    def check_options(self) -> None:
        c = self.opts["c"]
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0:
            raise self._bad("c", c, "a number >= 0")

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        n = G.shape[0]
        w, lam = cagrad_weights(_gram(G), float(self.opts["c"]))
        coef = torch.tensor([1.0 / n + lam * wi for wi in w], dtype=G.dtype, device=G.device)
        self.last_weights = coef
        return coef @ G


class IMTLG(MTLMethod):
    """Liu et al. 2021 (ICLR), IMTL-G: sum_t alpha_t g_t (alpha summing to 1) with equal
    projections onto every task's unit gradient."""

    name = "imtl_g"
    kind = "gradient"
    joint = True

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        alpha = torch.tensor(imtl_g_weights(_gram(G)), dtype=G.dtype, device=G.device)
        self.last_weights = alpha
        return alpha @ G


class Custom(MTLMethod):
    """``mtl_method_callback(G, obj) -> (P,)``: the joint update of the shared parameters
    from the task gradients G (T, P) and objectives obj (T,), task order as ``tasks``."""

    name = "custom"
    kind = "gradient"
    joint = True

    def __init__(self, callback: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **options: Any):
        super().__init__(**options)
        self.callback = callback

    def directions(self, G: torch.Tensor, obj: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
        out = self.callback(G, obj.detach())
        if not isinstance(out, torch.Tensor) or out.shape != G.shape[1:]:
            raise ConfigError(f"training config key 'mtl_method_callback' must return a tensor of shape "
                              f"{tuple(G.shape[1:])} (the shared parameters' update), got "
                              f"{getattr(out, 'shape', type(out).__name__)}")
        return out
