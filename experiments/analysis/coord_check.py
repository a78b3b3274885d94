"""Coordinate check of an abc-parametrization under the optimizer you train with.

As in Yang & Hu 2021 and Microsoft's ``mup``, for any exponents: every width is trained
for a few full-batch steps of the configured optimizer (SGD, Adam, AdamW; built by
``core_code.util.optimizers.make_optimizer``, the function training uses, so the
learning-rate exponents are the ones training resolves for that optimizer) from several
seeds. Forward hooks on the linear layers record, at init (step 0) and after every step,
on the training inputs:

- ``act_mean_abs``: mean |h_t| of the layer's output (pre-activation), bias included;
- ``prebias_mean_abs``: the same without the bias term;
- ``delta_mean_abs``: mean |h_t - h_0|, the change of the layer's output since init;
- ``bias_mean_abs`` / ``bias_delta_mean_abs``: mean |beta_t| and |beta_t - beta_0| of the
  layer's effective bias beta = bias_tune * n^(-a_bias) * bias (what the output sees).

The CSV has one row per (width, seed, step, layer). A fitted exponent is the
least-squares slope of log(value) against log(width), per seed; the report gives its
mean and standard deviation over the seeds. Predictions (docs/parametrizations.md): the
hidden layers' feature change and bias change have exponent 0 under muP (SGD and Adam),
-1/2 under NTK (SGD), and grow (> 0) under SP; the verdict compares the measured mean at
the last step with the prediction at a stated tolerance (PASS/FAIL per layer).

Run ``python -m experiments.analysis.coord_check --help``; no Lightning involved (a plain
torch loop).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from core_code.util.optimizers import make_optimizer

#: Config key holding the width that the parametrization scales with, per architecture.
WIDTH_KEYS = {"abcMLP": "width", "abcStack": "variable_width", "Stack": "variable_width"}

#: What each named parametrization predicts for the hidden layers (outputs of size n): the
#: exponent of the feature change and of the bias change, as ("==", value) or (">", value);
#: "first_<quantity>" overrides the value for the first layer (None: no prediction).
#: muP holds for SGD and Adam/AdamW alike (with the exponents resolved for the optimizer).
PREDICTIONS: dict[str, dict[str, tuple[str, float]]] = {
    "muP": {"feature": ("==", 0.0), "bias": ("==", 0.0)},
    "NTK": {"feature": ("==", -0.5), "bias": ("==", -0.5)},
    # SP's first layer (fan-in d_in = O(1)) has no growing sum: no prediction there
    "SP": {"feature": (">", 0.0), "first_feature": None},
}
PREDICTION_TEXT = {"muP": "feature learning: hidden features and biases move by Theta(1)",
                   "NTK": "kernel regime: hidden features and biases freeze like width^-1/2",
                   "SP": "width-independent learning rate: the hidden features' change grows with width"}

#: Default tolerance of a verdict: |measured mean - predicted| <= TOLERANCE (or measured > TOLERANCE for "grows").
TOLERANCE = 0.2

#: Default base learning rate per optimizer.
DEFAULT_LR = {"SGD": 0.1, "Adam": 0.02, "AdamW": 0.02}

#: The default network: abcMLP with 4 linear layers, 1 -> n -> n -> n -> 1, biases on.
DEFAULT_ARCHITECTURE = {"architecture_key": "abcMLP", "depth": 4, "parametrization": "muP",
                        "d_in": 1, "d_out": 1}

CSV_COLUMNS = ("width", "seed", "step", "layer", "act_mean_abs", "prebias_mean_abs", "delta_mean_abs",
               "bias_mean_abs", "bias_delta_mean_abs")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------ data
def sine_data(n: int = 64, d_out: int = 1) -> tuple[torch.Tensor, torch.Tensor, LossFn]:
    """``n`` equidistant x in [-1, 1] with y = sin(pi x) on every output; MSE loss."""
    x = torch.linspace(-1.0, 1.0, n).unsqueeze(1)
    y = torch.sin(math.pi * x).repeat(1, d_out)
    return x, y, nn.functional.mse_loss


def _first(value: Any) -> Any:
    """The first grid value of a config entry (a list is a grid axis)."""
    return value[0] if isinstance(value, list) else value


def experiment_setup(name: str) -> tuple[torch.Tensor, torch.Tensor, LossFn, dict, Any]:
    """Training split, multi-task loss, architecture config and update_rule of an experiment's first grid point.

    The loss is the sum over tasks of each task's criterion on its own rows (as in training).
    """
    from core_code.create_data import CreateData
    from core_code.create_model import architecture_keys
    from core_code.util.config_extractions import extract_taskconfig
    from core_code.util.criteria import make_criterion
    from core_code.util.default_config import init_config_training
    from experiments import load_experiment

    _, configs = load_experiment(name)
    config_data = {k: _first(v) for k, v in configs.configs_data.items()}
    # An experiment's architecture dict may repeat data keys (f_true ...) to tie grid axes.
    known = architecture_keys()
    config_arch = {k: _first(v) for k, v in configs.configs_architecture.items() if k in known}
    config_training = init_config_training(**{k: _first(v) for k, v in configs.configs_training.items()})
    data = CreateData(**config_data)
    train = data.create_data("train")
    x, y, tasks = train["x"], train["y"], train["task_activity"]
    criteria = {}
    for t in data.all_tasks:
        tcfg = extract_taskconfig(config_training, t)
        criteria[t] = make_criterion(tcfg["criterion"], tcfg.get("criterion_callback"))
    rows = {t: (tasks == t).nonzero().squeeze(1) for t in data.all_tasks}

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(criteria[t](pred[r], target[r]) for t, r in rows.items() if len(r))

    config_arch.setdefault("d_in", data.d_in)
    config_arch.setdefault("d_out", data.d_out)
    return x, y, loss, config_arch, config_training["update_rule"]


# ---------------------------------------------------------------------- measurement
def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The model's linear layers in forward order (``linear_layers()`` or ``layers``)."""
    if hasattr(model, "linear_layers"):
        return list(model.linear_layers())
    if hasattr(model, "layers"):
        return list(model.layers)
    raise TypeError(f"{type(model).__name__} has neither linear_layers() nor layers: cannot hook its layers")


def effective_bias(module: nn.Module) -> Optional[torch.Tensor]:
    """What the layer adds to its output: ``module.effective_bias()``, else bias_tune * bias (detached)."""
    if hasattr(module, "effective_bias"):
        bias = module.effective_bias()
    else:
        raw = getattr(module, "bias", None)
        bias = None if not isinstance(raw, torch.Tensor) else float(getattr(module, "bias_tune", 1.0)) * raw
    return None if bias is None else bias.detach()


class _Recorder:
    """Forward hooks keeping each hooked layer's latest output (and its pre-bias part)."""

    def __init__(self, layers: Sequence[nn.Module]):
        self.out: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.prebias: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.bias: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            out = output.detach()
            bias = effective_bias(module)
            self.out[i] = out.double()
            self.prebias[i] = (out if bias is None else out - bias).double()
            self.bias[i] = None if bias is None else bias.double()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def run_width(
    make_model: Callable[[int], nn.Module],
    width: int,
    seed: int,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    lr: float,
    steps: int,
    update_rule: str = "SGD",
) -> tuple[list[dict], list[int]]:
    """Rows of one (width, seed): every hooked layer at init and after each optimizer step.

    Also returns the output size (last dim) of every hooked layer.
    """
    torch.manual_seed(seed)
    model = make_model(width)
    layers = linear_layers(model)
    rec = _Recorder(layers)
    opt = make_optimizer([model], update_rule, lr)
    rows: list[dict] = []
    h0: list[torch.Tensor] = []
    b0: list[Optional[torch.Tensor]] = []
    try:
        for step in range(steps + 1):
            with torch.no_grad():
                model(x)
            if step == 0:
                h0 = [o.clone() for o in rec.out]
                b0 = [None if b is None else b.clone() for b in rec.bias]
            for i, (out, pre, bias) in enumerate(zip(rec.out, rec.prebias, rec.bias)):
                nan = float("nan")
                rows.append({
                    "width": width, "seed": seed, "step": step, "layer": i,
                    "act_mean_abs": out.abs().mean().item(),
                    "prebias_mean_abs": pre.abs().mean().item(),
                    "delta_mean_abs": (out - h0[i]).abs().mean().item(),
                    "bias_mean_abs": nan if bias is None else bias.abs().mean().item(),
                    "bias_delta_mean_abs": nan if bias is None else (bias - b0[i]).abs().mean().item(),
                })
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    finally:
        rec.remove()
    return rows, [int(h.shape[-1]) for h in h0]


def hidden_layers(out_dims: dict[int, list[int]]) -> list[int]:
    """Indices of the layers (not the last) whose output size is the width at every width.

    ``out_dims``: width -> output size of every hooked layer.
    """
    n_layers = len(next(iter(out_dims.values())))
    return [i for i in range(n_layers - 1) if all(dims[i] == w for w, dims in out_dims.items())]


@dataclass
class Verdict:
    """One layer's verdict: the predicted exponent next to the measured one (mean and sd over seeds)."""

    layer: int
    quantity: str  # 'feature' (mean |h_t - h_0|) or 'bias' (mean |beta_t - beta_0|)
    step: int
    measured: float  # mean over seeds; NaN when a value blew up or is zero
    spread: float  # standard deviation over seeds
    predicted: Optional[tuple[str, float]]  # ('==', value) or ('>', value); None: no prediction
    tolerance: float
    blew_up: bool = False

    @property
    def passed(self) -> Optional[bool]:
        """True/False against the prediction; None without one."""
        if self.predicted is None:
            return None
        op, value = self.predicted
        if op == ">":
            return self.blew_up or (math.isfinite(self.measured) and self.measured > value + self.tolerance)
        return math.isfinite(self.measured) and abs(self.measured - value) <= self.tolerance

    def text(self) -> str:
        if self.predicted is None:
            pred = "      -"
        else:
            op, value = self.predicted
            pred = f"{value:+7.2f}" if op == "==" else f"{'> ' + format(value, '+.1f'):>7}"
        meas = "blew up" if self.blew_up else ("    n/a" if not math.isfinite(self.measured)
                                              else f"{self.measured:+7.3f} +- {self.spread:.3f}")
        verdict = {None: "", True: "PASS", False: "FAIL"}[self.passed]
        return f"  {self.layer:>5}  {self.quantity:<8} {pred}   {meas:<16} {verdict}"


@dataclass
class CoordCheck:
    """The rows of a coordinate check and what they say about the width exponents."""

    rows: list[dict]
    widths: list[int]
    seeds: list[int]
    steps: int
    n_layers: int
    hidden: list[int]
    label: str = ""
    config: dict = field(default_factory=dict)
    update_rule: str = "SGD"
    lr: float = float("nan")

    def _series(self, layer: int, step: int, seed: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        pts = sorted((r["width"], r[column]) for r in self.rows
                     if r["layer"] == layer and r["step"] == step and r["seed"] == seed)
        return np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)

    def seed_slopes(self, layer: int, step: int, column: str = "delta_mean_abs") -> list[float]:
        """Least-squares slope of log(column) vs log(width) of every seed.

        NaN for a seed with a value that is not positive and finite (e.g. it blew up).
        """
        slopes = []
        for seed in self.seeds:
            w, v = self._series(layer, step, seed, column)
            if len(w) < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
                slopes.append(float("nan"))
            else:
                slopes.append(float(np.polyfit(np.log(w), np.log(v), 1)[0]))
        return slopes

    def slope(self, layer: int, step: int, column: str = "delta_mean_abs") -> float:
        """The fitted exponent: ``seed_slopes`` averaged over the seeds (NaN if any is NaN)."""
        return float(np.mean(self.seed_slopes(layer, step, column)))

    def slope_spread(self, layer: int, step: int, column: str = "delta_mean_abs") -> float:
        """Standard deviation of ``seed_slopes`` over the seeds (0 with one seed)."""
        slopes = self.seed_slopes(layer, step, column)
        return float(np.std(slopes, ddof=1)) if len(slopes) > 1 else 0.0

    def slope_error(self, layer: int, step: int, column: str = "delta_mean_abs") -> float:
        """Standard error of ``slope`` over the seeds (NaN with one seed)."""
        slopes = self.seed_slopes(layer, step, column)
        if len(slopes) < 2:
            return float("nan")
        return float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))

    def delta_exponents(self, step: Optional[int] = None) -> dict[int, float]:
        """Fitted exponent of the feature change of every hidden layer (default: last step)."""
        step = self.steps if step is None else step
        return {i: self.slope(i, step) for i in self.hidden}

    def bias_exponents(self, step: Optional[int] = None) -> dict[int, float]:
        """Fitted exponent of the effective-bias change of every hidden layer (default: last step)."""
        step = self.steps if step is None else step
        return {i: self.slope(i, step, "bias_delta_mean_abs") for i in self.hidden}

    def delta_exponent(self, step: Optional[int] = None) -> float:
        """Mean fitted feature-change exponent over the hidden layers."""
        return float(np.mean(list(self.delta_exponents(step).values())))

    def init_output_exponent(self) -> float:
        """Fitted exponent of the last layer's output at init, without its bias."""
        return self.slope(self.n_layers - 1, 0, "prebias_mean_abs")

    def prediction_name(self) -> Optional[str]:
        """The named parametrization whose claim the verdicts test (None for other architectures)."""
        name = self.config.get("parametrization")
        return name if self.config.get("architecture_key") in ("abcMLP", "abcStack") and name in PREDICTIONS else None

    def verdicts(self, step: Optional[int] = None, tolerance: float = TOLERANCE) -> list[Verdict]:
        """Per hidden layer, feature change then bias change, at ``step`` (default: the last)."""
        step = self.steps if step is None else step
        table = PREDICTIONS.get(self.prediction_name() or "", {})
        out = []
        for i in self.hidden:
            for quantity, column in (("feature", "delta_mean_abs"), ("bias", "bias_delta_mean_abs")):
                values = [r[column] for r in self.rows if r["layer"] == i and r["step"] == step]
                if all(math.isnan(v) for v in values):
                    continue  # no bias
                blew_up = any(math.isinf(v) or (math.isnan(v) and column == "delta_mean_abs") for v in values)
                predicted = table.get(f"first_{quantity}", table.get(quantity)) if i == 0 else table.get(quantity)
                out.append(Verdict(i, quantity, step, self.slope(i, step, column),
                                   self.slope_spread(i, step, column), predicted, tolerance, blew_up))
        return out

    def passed(self, step: Optional[int] = None, tolerance: float = TOLERANCE) -> Optional[bool]:
        """All verdicts with a prediction passed (None: nothing predicted)."""
        results = [v.passed for v in self.verdicts(step, tolerance) if v.passed is not None]
        return all(results) if results else None

    def _fmt(self, slope: float, layer: int, step: int, column: str = "delta_mean_abs") -> str:
        if math.isfinite(slope):
            return f"{slope:>+8.3f}"
        values = [r[column] for r in self.rows if r["layer"] == layer and r["step"] == step]
        blew_up = any(math.isinf(v) for v in values) or (column == "delta_mean_abs" and any(math.isnan(v)
                                                                                             for v in values))
        return f"{'blew up' if blew_up else 'n/a':>8}"

    def report(self, tolerance: float = TOLERANCE) -> str:
        """Text: exponents per layer and step, the init output exponent, the verdict per hidden layer."""
        lines = [f"coordinate check {self.label}: widths {self.widths}, seeds {self.seeds}, "
                 f"{self.steps} full-batch {self.update_rule} steps, lr {self.lr:g}",
                 "fitted exponent against width (slope of log-log fit, mean over seeds) of",
                 "mean |h_t - h_0| (feature) and mean |beta_t - beta_0| (bias, effective):"]
        steps = list(range(1, self.steps + 1))
        lines.append("  layer  quantity " + "  ".join(f"{'step ' + str(t):>8}" for t in steps))
        for i in range(self.n_layers):
            for quantity, column in (("feature", "delta_mean_abs"), ("bias", "bias_delta_mean_abs")):
                lines.append(f"  {i:>5}  {quantity:<8} " + "  ".join(
                    self._fmt(self.slope(i, t, column), i, t, column) for t in steps))
        last = self.n_layers - 1
        lines.append("exponent of the last layer's output at init (without bias): "
                     f"{self.init_output_exponent():+.3f} +- {self.slope_spread(last, 0, 'prebias_mean_abs'):.3f}")
        name = self.prediction_name()
        explicit = [k for k in ("list_a", "list_b", "c", "list_c", "list_a_bias", "list_b_bias", "list_c_bias")
                    if self.config.get(k) is not None]
        head = (f"verdict at step {self.steps} (hidden layers; predicted for {name}"
                + (f" with explicit {', '.join(explicit)}" if explicit else "")
                + f" under {self.update_rule}: {PREDICTION_TEXT[name]}; tolerance {tolerance}; "
                  "measured = mean +- sd over seeds):" if name else
                f"verdict at step {self.steps}: no prediction for this configuration (measured only):")
        lines.append(head)
        lines.append("  layer  quantity predicted measured         verdict")
        verdicts = self.verdicts(tolerance=tolerance)
        lines.extend(v.text() for v in verdicts)
        overall = self.passed(tolerance=tolerance)
        if overall is not None:
            lines.append(f"coordinate check {'PASSED' if overall else 'FAILED'}")
        return "\n".join(lines)


EXPONENT_KEYS = ("list_a", "list_b", "c", "list_c", "list_a_bias", "list_b_bias", "list_c_bias")


def architecture_config(
    base: Optional[dict] = None,
    parametrization: Optional[str] = None,
    depth: Optional[int] = None,
    list_a: Optional[list[float]] = None,
    list_b: Optional[list[float]] = None,
    c: Optional[float] = None,
    overrides: Optional[dict] = None,
    list_c: Optional[list[float]] = None,
) -> dict:
    """An architecture config: ``base`` (default ``DEFAULT_ARCHITECTURE``) plus overrides.

    A given ``parametrization`` replaces the base's exponents; explicit lists win.
    """
    cfg = dict(base) if base else dict(DEFAULT_ARCHITECTURE)
    if parametrization is not None:
        cfg.update(parametrization=parametrization, **{k: None for k in EXPONENT_KEYS})
    if depth is not None:
        cfg["depth"] = depth
    for key, value in (("list_a", list_a), ("list_b", list_b), ("c", c), ("list_c", list_c)):
        if value is not None:
            cfg[key] = value
    cfg.update(overrides or {})
    return cfg


def coord_check(
    config_architecture: dict,
    widths: Sequence[int] = (128, 256, 512, 1024, 2048),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    steps: int = 3,
    lr: Optional[float] = None,
    data: Optional[tuple[torch.Tensor, torch.Tensor, LossFn]] = None,
    label: str = "",
    update_rule: str = "SGD",
) -> CoordCheck:
    """Train every width for ``steps`` full-batch steps of ``update_rule`` from every seed; record every layer.

    ``lr`` defaults to ``DEFAULT_LR[update_rule]``.
    """
    from core_code.create_model import create_model

    cfg = dict(config_architecture)
    key = cfg.get("architecture_key")
    if key not in WIDTH_KEYS:
        raise ValueError(f"coordinate check: architecture {key!r} is not supported; known: {', '.join(WIDTH_KEYS)}")
    if lr is None:
        lr = DEFAULT_LR.get(update_rule, DEFAULT_LR["SGD"])
    width_key = WIDTH_KEYS[key]
    x, y, loss_fn = data if data is not None else sine_data(d_out=int(cfg.get("d_out") or 1))

    def make_model(width: int) -> nn.Module:
        model = create_model(**{**cfg, width_key: int(width)})
        if isinstance(model, dict):
            raise ValueError("coordinate check: task-specific architecture configs are not supported")
        return model

    if not widths or not seeds:
        raise ValueError("coordinate check: give at least one width and one seed")
    rows: list[dict] = []
    out_dims: dict[int, list[int]] = {}
    for width in widths:
        for seed in seeds:
            new_rows, out_dims[int(width)] = run_width(make_model, int(width), int(seed), x, y, loss_fn,
                                                       float(lr), int(steps), update_rule)
            rows.extend(new_rows)
    return CoordCheck(rows=rows, widths=[int(w) for w in widths], seeds=[int(s) for s in seeds],
                      steps=int(steps), n_layers=len(out_dims[int(widths[0])]),
                      hidden=hidden_layers(out_dims), label=label, config=cfg, update_rule=update_rule,
                      lr=float(lr))


# ---------------------------------------------------------------------------- output
def write_csv(result: CoordCheck, path: Path | str) -> Path:
    """The rows as CSV (columns ``CSV_COLUMNS``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: row[k] for k in CSV_COLUMNS})
    return path


def _layer_name(result: CoordCheck, i: int) -> str:
    if i == result.n_layers - 1:
        return f"layer {i} (output)"
    if i == 0:
        return f"layer {i} (input)"
    return f"layer {i} ({'hidden' if i in result.hidden else 'bottleneck'})"


def _seed_values(result: CoordCheck, layer: int, step: int, column: str) -> np.ndarray:
    """(widths, seeds) array of ``column``."""
    return np.array([[r[column] for r in sorted((r for r in result.rows if r["layer"] == layer and r["step"] == step
                                                  and r["width"] == w), key=lambda r: r["seed"])]
                     for w in result.widths], float)


def _draw(ax, result: CoordCheck, layer: int, column: str, first_step: int, reference: bool = False) -> None:
    """Mean over seeds per step (lines) with the seeds' min-max band; reference slopes 0 and -1/2."""
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0, 0.9, result.steps + 1))
    widths = np.array(result.widths, float)
    for t in range(first_step, result.steps + 1):
        values = _seed_values(result, layer, t, column)
        with np.errstate(all="ignore"):
            v = values.mean(axis=1)
        ok = np.isfinite(v) & (v > 0)
        if ok.any():
            ax.plot(widths[ok], v[ok], "o-", color=colors[t], label=f"step {t}", ms=3)
            ax.fill_between(widths[ok], values[ok].min(axis=1), values[ok].max(axis=1), color=colors[t], alpha=0.2,
                            lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if reference:
        ref = _seed_values(result, layer, result.steps, column)
        with np.errstate(all="ignore"):
            anchor = ref.mean(axis=1)[0] if ref.size else float("nan")
        if math.isfinite(anchor) and anchor > 0:
            for slope, style in ((0.0, "--"), (-0.5, ":")):
                ax.plot(widths, anchor * (widths / widths[0]) ** slope, style, color="grey", lw=1,
                        label=f"slope {slope:g}")
    ax.set_xlabel("width")
    ax.grid(True, which="both", alpha=0.3)


def _share_row_ylim(axes) -> None:
    """One y-range per row, spanning at least a decade (flat lines look flat, not like noise)."""
    for row in axes:
        lims = [ax.get_ylim() for ax in row if ax.has_data()]
        if not lims:
            continue
        lo, hi = min(v[0] for v in lims), max(v[1] for v in lims)
        if 0 < lo and hi / lo < 10:
            mid = math.sqrt(lo * hi)
            lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
        for ax in row:
            ax.set_ylim(lo, hi)


ROWS = (("prebias_mean_abs", "mean |h_t| (without bias)", 0, False),
        ("delta_mean_abs", "mean |h_t - h_0| (feature change)", 1, True),
        ("bias_delta_mean_abs", "mean |beta_t - beta_0| (bias change)", 1, True))


def _rows(result: CoordCheck) -> list[tuple[str, str, int, bool]]:
    has_bias = any(math.isfinite(r["bias_delta_mean_abs"]) and r["bias_delta_mean_abs"] > 0 for r in result.rows)
    return [row for row in ROWS if has_bias or row[0] != "bias_delta_mean_abs"]


def plot(result: CoordCheck, out_dir: Path | str, dpi: int = 120) -> list[Path]:
    """One figure per layer and an overview of all layers: rows = output size, feature change, bias change.

    Lines: mean over seeds per step; bands: the seeds' min-max; grey: reference slopes 0 and -1/2.
    Files (PNG and PDF): ``layer<i>.*`` and ``coord_check.*`` in ``out_dir``.
    """
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = _rows(result)

    def save(fig, stem: str) -> None:
        for ext in ("png", "pdf"):
            path = out_dir / f"{stem}.{ext}"
            fig.savefig(path, dpi=dpi)
            written.append(path)

    def title(i: int, column: str, first: int) -> str:
        if first == 0:
            return _layer_name(result, i)
        slope = result.slope(i, result.steps, column)
        return f"slope {slope:+.2f} +- {result.slope_spread(i, result.steps, column):.2f} (step {result.steps})" \
            if math.isfinite(slope) else f"slope n/a (step {result.steps})"

    for i in range(result.n_layers):
        fig = Figure(figsize=(4.2 * len(rows), 3.8))
        axes = fig.subplots(1, len(rows), squeeze=False)
        for ax, (column, ylabel, first, ref) in zip(axes[0], rows):
            _draw(ax, result, i, column, first, ref)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(title(i, column, first), fontsize=8)
            ax.legend(fontsize=6)
        fig.suptitle(f"coordinate check {result.label}: {_layer_name(result, i)}", fontsize=9)
        fig.tight_layout()
        save(fig, f"layer{i}")

    n = result.n_layers
    fig = Figure(figsize=(2.8 * n + 0.6, 2.5 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (column, ylabel, first, ref) in enumerate(rows):
        for i in range(n):
            _draw(axes[r, i], result, i, column, first, ref)
            axes[r, i].set_title(title(i, column, first), fontsize=8)
        axes[r, 0].set_ylabel(ylabel, fontsize=8)
    _share_row_ylim(axes)
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6)
    fig.suptitle(f"coordinate check {result.label}: {len(result.seeds)} seeds (lines: mean, bands: min-max)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, "coord_check")
    return written


# ------------------------------------------------------------------------------- CLI
def _floats(text: str) -> float | list[float]:
    """'0.5' -> 0.5 (the same exponent for every layer); '-0.5,0,0.5' -> a list."""
    values = [float(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 and "," not in text else values


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _parse_value(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.analysis.coord_check",
        description="Coordinate check of an abc-parametrization under the optimizer you train with: how the size "
                    "and the change of every layer's output and bias scale with width after a few steps, with a "
                    "PASS/FAIL verdict per hidden layer against the parametrization's prediction.")
    p.add_argument("--parametrization", default=None, choices=["muP", "NTK", "SP"],
                   help="named abc exponents (default: muP, or the experiment's architecture)")
    p.add_argument("--update_rule", default=None, choices=["SGD", "Adam", "AdamW"],
                   help="the optimizer, built by make_optimizer as in training (default: SGD, or the experiment's)")
    p.add_argument("--list_a", type=_floats, default=None, help="explicit a exponents, comma-separated, one per layer or one for all "
                        "(a leading minus needs =: --list_a=-0.5,0,0,0.5)")
    p.add_argument("--list_b", type=_floats, default=None, help="explicit b exponents, comma-separated (as --list_a)")
    p.add_argument("--c", type=float, default=None, help="explicit learning-rate exponent c for every layer")
    p.add_argument("--list_c", type=_floats, default=None,
                   help="explicit learning-rate exponents per layer, comma-separated (as --list_a)")
    p.add_argument("--depth", type=int, default=None, help="number of linear layers (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other architecture config values (repeatable), e.g. --set bias_tune=0 "
                        "(biases off), --set hidden_layer_activation=Tanh")
    p.add_argument("--widths", type=_ints, default=[128, 256, 512, 1024, 2048], help="comma-separated widths (default 128,256,512,1024,2048)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds 0, 1, ... (default 5)")
    p.add_argument("--steps", type=int, default=3, help="full-batch optimizer steps (default 3); the verdict reads the last")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate eta; the model's lr_multipliers give eta * width^-c per layer "
                        f"(default {', '.join(f'{k} {v:g}' for k, v in DEFAULT_LR.items())})")
    p.add_argument("--tol", type=float, default=TOLERANCE,
                   help=f"tolerance of the verdict on the fitted exponent (default {TOLERANCE})")
    p.add_argument("--experiment", default=None,
                   help="take data (train split), loss, architecture and optimizer from this experiment's first grid "
                        "point (default: y = sin(pi x) on 64 points of [-1, 1])")
    p.add_argument("--out", default=None, help="output folder (default runs/coord_check/<name of the check>)")
    p.add_argument("--no_plots", action="store_true", help="write the CSV only")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG plots")
    return p


def _short(value: Any) -> str:
    """A value as a file-name fragment: lists joined by '_', no spaces."""
    if isinstance(value, (list, tuple)):
        return "_".join(_short(v) for v in value)
    if isinstance(value, float):
        return format(value, "g")
    return str(value).replace(" ", "").replace("/", "-")


def check_name(cfg: dict, update_rule: str, lr: float, widths: Sequence[int], steps: int, n_seeds: int,
               experiment: Optional[str] = None, overrides: Optional[dict] = None) -> str:
    """A folder name made of everything that defines the check, so different checks never share one."""
    parts = [str(cfg.get("architecture_key"))]
    if cfg.get("parametrization") is not None:
        parts.append(str(cfg["parametrization"]))
    parts += [f"{k}{_short(cfg[k])}" for k in EXPONENT_KEYS if cfg.get(k) is not None]
    parts.append(f"depth{cfg.get('depth')}")
    parts += [f"{k}{_short(v)}" for k, v in sorted((overrides or {}).items())]
    if experiment:
        parts.append(f"on_{experiment}")
    parts += [update_rule, f"lr{lr:g}", f"w{_short(list(widths))}", f"steps{steps}", f"seeds{n_seeds}"]
    return "-".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            print(f"--set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v.strip())
    data = None
    base = None
    update_rule = args.update_rule or "SGD"
    if args.experiment:
        x, y, loss, base, experiment_rule = experiment_setup(args.experiment)
        data = (x, y, loss)
        if args.update_rule is None:
            if experiment_rule not in DEFAULT_LR:
                print(f"coordinate check: the experiment's update_rule {experiment_rule!r} is not supported; "
                      f"give --update_rule ({', '.join(DEFAULT_LR)})", file=sys.stderr)
                return 2
            update_rule = experiment_rule
    cfg = architecture_config(base, args.parametrization, args.depth, args.list_a, args.list_b, args.c, overrides,
                              list_c=args.list_c)
    lr = args.lr if args.lr is not None else DEFAULT_LR[update_rule]
    name = check_name(cfg, update_rule, lr, args.widths, args.steps, args.seeds, args.experiment, overrides)
    key = cfg.get("architecture_key")
    explicit = [k for k in EXPONENT_KEYS if cfg.get(k) is not None]
    label = f"{key} {cfg.get('parametrization')}" + (f" (explicit {', '.join(explicit)})" if explicit else "")
    label += f", {update_rule} lr {lr:g}" + (f" on {args.experiment}" if args.experiment else "")
    try:
        result = coord_check(cfg, widths=args.widths, seeds=range(args.seeds), steps=args.steps, lr=lr,
                             data=data, label=label, update_rule=update_rule)
    except Exception as err:  # config errors: one line, not a traceback
        from core_code.util.config_extractions import ConfigError

        if isinstance(err, (ConfigError, ValueError)):
            print(f"coordinate check: {err}", file=sys.stderr)
            return 2
        raise
    out = Path(args.out) if args.out else Path("runs") / "coord_check" / name
    csv_path = write_csv(result, out / "coord_check.csv")
    print(result.report(tolerance=args.tol))
    print(f"wrote {csv_path}")
    if not args.no_plots:
        files = plot(result, out, dpi=args.dpi)
        print(f"wrote {len(files)} plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
