"""Coordinate check of an abc-parametrization (as in Yang & Hu 2021 and Microsoft's ``mup``).

For an architecture config and a list of widths, every width is trained for a few
full-batch SGD steps (learning rate ``eta * width^(-c)`` through the model's
``lr_multipliers()``) from several seeds. Forward hooks on the linear layers record,
at init (step 0) and after every step, on the training inputs:

- ``act_mean_abs``: mean |h_t| of the layer's output (pre-activation), bias included;
- ``prebias_mean_abs``: the same without the bias term (``h_t - bias_tune * bias``);
- ``delta_mean_abs``: mean |h_t - h_0|, the change of the layer's output since init.

The CSV has one row per (width, seed, step, layer). The fitted exponent of a layer is
the least-squares slope of log(delta_mean_abs) against log(width), computed per seed
and averaged over the seeds. What a correct implementation shows (FUNCTIONS.md table):
under muP the hidden features change by Theta(1) (exponent ~ 0), under NTK by
Theta(width^-1/2) (exponent ~ -0.5), under SP with a width-independent learning rate
they grow with width; under muP the last layer's output at init (without its bias)
shrinks like width^-1/2.

The optimizer is built by ``core_code.util.optimizers.make_optimizer``, the function
training uses (SGD over the model's ``lr_multipliers()`` groups), so the check measures
the learning-rate scaling that training applies.

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

#: The exponent of the hidden-feature change each named parametrization predicts.
PREDICTED_DELTA_EXPONENT = {"muP": "0 (features move by Theta(1): feature learning); output at init -0.5",
                            "NTK": "-0.5 (features freeze as width grows: kernel regime); output at init 0",
                            "SP": "> 0 (constant learning rate: training blows up with width); output at init 0"}

#: The default network: abcMLP with 4 linear layers, 1 -> n -> n -> n -> 1. Biases are off
#: (bias_tune 0): their N(0, 1) init puts a width-independent random offset on every
#: output, so the first gradients' size varies from (width, seed) to (width, seed) and the
#: fitted slopes get noisy (their expectation is unchanged). ``--set bias_tune=1`` keeps them.
DEFAULT_ARCHITECTURE = {"architecture_key": "abcMLP", "depth": 4, "parametrization": "muP",
                        "d_in": 1, "d_out": 1, "bias_tune": 0.0}

CSV_COLUMNS = ("width", "seed", "step", "layer", "act_mean_abs", "prebias_mean_abs", "delta_mean_abs")

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


def experiment_setup(name: str) -> tuple[torch.Tensor, torch.Tensor, LossFn, dict]:
    """Training split, multi-task loss and architecture config of an experiment's first grid point.

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
    return x, y, loss, config_arch


# ---------------------------------------------------------------------- measurement
def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The model's linear layers in forward order (``linear_layers()`` or ``layers``)."""
    if hasattr(model, "linear_layers"):
        return list(model.linear_layers())
    if hasattr(model, "layers"):
        return list(model.layers)
    raise TypeError(f"{type(model).__name__} has neither linear_layers() nor layers: cannot hook its layers")


class _Recorder:
    """Forward hooks keeping each hooked layer's latest output (and its pre-bias part)."""

    def __init__(self, layers: Sequence[nn.Module]):
        self.out: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.prebias: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            out = output.detach()
            bias = getattr(module, "bias", None)
            prebias = out
            if isinstance(bias, torch.Tensor):
                prebias = out - float(getattr(module, "bias_tune", 1.0)) * bias.detach()
            self.out[i] = out.double()
            self.prebias[i] = prebias.double()

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
) -> tuple[list[dict], list[int]]:
    """Rows of one (width, seed): every hooked layer at init and after each SGD step.

    Also returns the output size (last dim) of every hooked layer.
    """
    torch.manual_seed(seed)
    model = make_model(width)
    layers = linear_layers(model)
    rec = _Recorder(layers)
    opt = make_optimizer([model], "SGD", lr)
    rows: list[dict] = []
    h0: list[torch.Tensor] = []
    try:
        for step in range(steps + 1):
            with torch.no_grad():
                model(x)
            if step == 0:
                h0 = [o.clone() for o in rec.out]
            for i, (out, pre) in enumerate(zip(rec.out, rec.prebias)):
                rows.append({
                    "width": width, "seed": seed, "step": step, "layer": i,
                    "act_mean_abs": out.abs().mean().item(),
                    "prebias_mean_abs": pre.abs().mean().item(),
                    "delta_mean_abs": (out - h0[i]).abs().mean().item(),
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

    def delta_exponent(self, step: Optional[int] = None) -> float:
        """Mean fitted feature-change exponent over the hidden layers."""
        return float(np.mean(list(self.delta_exponents(step).values())))

    def init_output_exponent(self) -> float:
        """Fitted exponent of the last layer's output at init, without its bias."""
        return self.slope(self.n_layers - 1, 0, "prebias_mean_abs")

    def _fmt(self, slope: float, layer: int, step: int) -> str:
        if math.isfinite(slope):
            return f"{slope:>+8.3f}"
        values = [r["delta_mean_abs"] for r in self.rows if r["layer"] == layer and r["step"] == step]
        return f"{'blew up' if not all(math.isfinite(v) for v in values) else 'n/a':>8}"

    def report(self) -> str:
        """Text: exponents per hidden layer and step, the init output exponent, the prediction."""
        lines = [f"coordinate check {self.label}: widths {self.widths}, seeds {self.seeds}, "
                 f"{self.steps} SGD steps",
                 "fitted exponent of mean |h_t - h_0| against width (slope of log-log fit, mean over seeds):"]
        steps = list(range(1, self.steps + 1))
        lines.append("  layer  " + "  ".join(f"{'step ' + str(t):>8}" for t in steps))
        for i in self.hidden:
            lines.append(f"  {i:>5}  " + "  ".join(f"{self._fmt(self.slope(i, t), i, t)}" for t in steps))
        mean = self.delta_exponent()
        if math.isfinite(mean):
            # per seed: the mean over hidden layers; then its standard error over the seeds
            per_seed = np.mean([self.seed_slopes(i, self.steps) for i in self.hidden], axis=0)
            err = np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else float("nan")
            text = f"{mean:+.3f} +- {err:.3f} (standard error over seeds)"
        else:
            text = "not finite (values blew up)"
        lines.append(f"  hidden layers, step {self.steps}: {text}")
        last = self.n_layers - 1
        lines.append("exponent of the last layer's output at init (without bias): "
                     f"{self.init_output_exponent():+.3f} +- {self.slope_error(last, 0, 'prebias_mean_abs'):.3f}")
        name = self.config.get("parametrization")
        named = self.config.get("architecture_key") == "abcMLP" and all(
            self.config.get(k) is None for k in ("list_a", "list_b", "c"))
        if named and name in PREDICTED_DELTA_EXPONENT:
            lines.append(f"predicted for {name}: feature-change exponent {PREDICTED_DELTA_EXPONENT[name]}")
        return "\n".join(lines)


def architecture_config(
    base: Optional[dict] = None,
    parametrization: Optional[str] = None,
    depth: Optional[int] = None,
    list_a: Optional[list[float]] = None,
    list_b: Optional[list[float]] = None,
    c: Optional[float] = None,
    overrides: Optional[dict] = None,
) -> dict:
    """An architecture config: ``base`` (default ``DEFAULT_ARCHITECTURE``) plus overrides.

    A given ``parametrization`` replaces the base's exponents; explicit list_a/list_b/c win.
    """
    cfg = dict(base) if base else dict(DEFAULT_ARCHITECTURE)
    if parametrization is not None:
        cfg.update(parametrization=parametrization, list_a=None, list_b=None, c=None)
    if depth is not None:
        cfg["depth"] = depth
    for key, value in (("list_a", list_a), ("list_b", list_b), ("c", c)):
        if value is not None:
            cfg[key] = value
    cfg.update(overrides or {})
    return cfg


def coord_check(
    config_architecture: dict,
    widths: Sequence[int] = (128, 256, 512, 1024, 2048),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    steps: int = 3,
    lr: float = 0.5,
    data: Optional[tuple[torch.Tensor, torch.Tensor, LossFn]] = None,
    label: str = "",
) -> CoordCheck:
    """Train every width for ``steps`` SGD steps from every seed and record every layer."""
    from core_code.create_model import create_model

    cfg = dict(config_architecture)
    key = cfg.get("architecture_key")
    if key not in WIDTH_KEYS:
        raise ValueError(f"coordinate check: architecture {key!r} is not supported; known: {', '.join(WIDTH_KEYS)}")
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
                                                       float(lr), int(steps))
            rows.extend(new_rows)
    return CoordCheck(rows=rows, widths=[int(w) for w in widths], seeds=[int(s) for s in seeds],
                      steps=int(steps), n_layers=len(out_dims[int(widths[0])]),
                      hidden=hidden_layers(out_dims), label=label, config=cfg)


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


def _mean_over_seeds(result: CoordCheck, layer: int, step: int, column: str) -> np.ndarray:
    return np.array([np.mean([r[column] for r in result.rows
                              if r["layer"] == layer and r["step"] == step and r["width"] == w])
                     for w in result.widths])


def _draw(ax, result: CoordCheck, layer: int, column: str, first_step: int) -> None:
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0, 0.9, result.steps + 1))
    for t in range(first_step, result.steps + 1):
        v = _mean_over_seeds(result, layer, t, column)
        ok = np.isfinite(v) & (v > 0)
        if ok.any():
            ax.plot(np.array(result.widths)[ok], v[ok], "o-", color=colors[t], label=f"step {t}", ms=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if 0 < lo and hi / lo < 10:  # at least a decade: flat lines look flat, not like noise
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / math.sqrt(10), mid * math.sqrt(10))
    ax.set_xlabel("width")
    ax.grid(True, which="both", alpha=0.3)


def plot(result: CoordCheck, out_dir: Path | str, dpi: int = 120) -> list[Path]:
    """One figure per layer (|h_t| and |h_t - h_0| against width) and an overview of all layers.

    Files (PNG and PDF): ``layer<i>.*`` and ``coord_check.*`` in ``out_dir``.
    """
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, stem: str) -> None:
        for ext in ("png", "pdf"):
            path = out_dir / f"{stem}.{ext}"
            fig.savefig(path, dpi=dpi)
            written.append(path)

    for i in range(result.n_layers):
        fig = Figure(figsize=(9, 3.6))
        ax1, ax2 = fig.subplots(1, 2)
        act = "prebias_mean_abs" if i == result.n_layers - 1 else "act_mean_abs"
        _draw(ax1, result, i, act, 0)
        ax1.set_ylabel("mean |h_t|" + (" (without bias)" if act == "prebias_mean_abs" else ""))
        _draw(ax2, result, i, "delta_mean_abs", 1)
        ax2.set_ylabel("mean |h_t - h_0|")
        slopes = " / ".join(f"{result.slope(i, t):+.2f}" for t in range(1, result.steps + 1))
        ax2.set_title(f"change since init; slope at steps 1..{result.steps}: {slopes}", fontsize=8)
        ax1.set_title("size of the output", fontsize=9)
        ax1.legend(fontsize=7)
        fig.suptitle(f"coordinate check {result.label}: {_layer_name(result, i)}")
        fig.tight_layout()
        save(fig, f"layer{i}")

    n = result.n_layers
    fig = Figure(figsize=(2.6 * n + 0.6, 5.2))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        act = "prebias_mean_abs" if i == n - 1 else "act_mean_abs"
        _draw(axes[0, i], result, i, act, 0)
        axes[0, i].set_title(_layer_name(result, i), fontsize=9)
        _draw(axes[1, i], result, i, "delta_mean_abs", 1)
        axes[1, i].set_title(f"slope {result.slope(i, result.steps):+.2f} (step {result.steps})", fontsize=8)
    axes[0, 0].set_ylabel("mean |h_t|")
    axes[1, 0].set_ylabel("mean |h_t - h_0|")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"coordinate check {result.label} (output layer without bias; mean over {len(result.seeds)} seeds)",
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
        description="Coordinate check of an abc-parametrization: how the size and the change of every "
                    "layer's output scale with width after a few SGD steps.")
    p.add_argument("--parametrization", default=None, choices=["muP", "NTK", "SP"],
                   help="named abc exponents (default: muP, or the experiment's architecture)")
    p.add_argument("--list_a", type=_floats, default=None, help="explicit a exponents, comma-separated, one per layer or one for all "
                        "(a leading minus needs =: --list_a=-0.5,0,0,0.5)")
    p.add_argument("--list_b", type=_floats, default=None, help="explicit b exponents, comma-separated (as --list_a)")
    p.add_argument("--c", type=float, default=None, help="explicit learning-rate exponent c")
    p.add_argument("--depth", type=int, default=None, help="number of linear layers (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other architecture config values (repeatable), e.g. --set bias_tune=1 "
                        "(the default network has its biases off), --set hidden_layer_activation=Tanh")
    p.add_argument("--widths", type=_ints, default=[128, 256, 512, 1024, 2048], help="comma-separated widths (default 128,256,512,1024,2048)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds 0, 1, ... (default 5)")
    p.add_argument("--steps", type=int, default=3, help="full-batch SGD steps (default 3)")
    p.add_argument("--lr", type=float, default=0.5, help="base learning rate eta; the model's lr_multipliers give eta * width^-c (default 0.5)")
    p.add_argument("--experiment", default=None,
                   help="take data (train split), loss and architecture from this experiment's first grid "
                        "point (default: y = sin(pi x) on 64 points of [-1, 1])")
    p.add_argument("--out", default=None, help="output folder (default runs/coord_check/<label>)")
    p.add_argument("--no_plots", action="store_true", help="write the CSV only")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG plots")
    return p


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
    if args.experiment:
        x, y, loss, base = experiment_setup(args.experiment)
        data = (x, y, loss)
    cfg = architecture_config(base, args.parametrization, args.depth, args.list_a, args.list_b, args.c, overrides)
    key = cfg.get("architecture_key")
    if key != "abcMLP":
        label = str(key)
    elif any(cfg.get(k) is not None for k in ("list_a", "list_b", "c")):
        label = "custom abc"
    else:
        label = str(cfg.get("parametrization"))
    if args.experiment:
        label += f" on {args.experiment}"
    try:
        result = coord_check(cfg, widths=args.widths, seeds=range(args.seeds), steps=args.steps, lr=args.lr,
                             data=data, label=label)
    except Exception as err:  # config errors: one line, not a traceback
        from core_code.util.config_extractions import ConfigError

        if isinstance(err, (ConfigError, ValueError)):
            print(f"coordinate check: {err}", file=sys.stderr)
            return 2
        raise
    out = Path(args.out) if args.out else Path("runs") / "coord_check" / label.replace(" ", "_")
    csv_path = write_csv(result, out / "coord_check.csv")
    print(result.report())
    print(f"wrote {csv_path}")
    if not args.no_plots:
        files = plot(result, out, dpi=args.dpi)
        print(f"wrote {len(files)} plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
