"""Hyper-parameter transfer across width (Tensor Programs V): best learning rate per width.

``python -m experiments.analysis.transfer TAG [--runs_dir runs] [--metric final|best] [--task 0]``
reads the grid ``runs/TAG`` (any grid with ``learning_rate`` and ``width`` axes; normally
the ``transfer`` experiment; a ``seed`` axis is averaged over) and writes

- ``runs/TAG/transfer.png|pdf``: the validation loss of task ``--task`` (its last value,
  or with ``--metric best`` its lowest) against the learning rate, one line per width,
  mean ± sample std (ddof 1) over seeds, log axes; the best learning rate of each width
  is starred;
- ``runs/TAG/transfer.csv`` and the same table on stdout: per width the best learning
  rate (lowest mean over seeds), its mean loss, std and n, and the drift exponent: the
  least-squares slope of log(best lr) against log(width). 0 means the optimum transfers;
  SP with Adam drifts roughly as width^-1.

A diverged point counts as an infinite loss (its learning rate cannot be the best);
failed or unfinished points are left out.

``python -m experiments.analysis.transfer --run [--tag T] [--parametrization muP|NTK|SP]
[--update_rule SGD|Adam|AdamW] [--learning_rates 0.01,0.1,...] [--widths 32,64] [--seeds 0,1]
[--epochs N] [--f_true sine] [--depth 3]`` builds the ``transfer`` experiment's manager
with these overrides, runs its grid (resumable: rerun the same command to finish it) and
then analyses it. The same grid runs on a cluster with ``EXPERIMENT=transfer``.

``python -m experiments.analysis.transfer --compare TAG_A TAG_B --out docs/transfer_x``
draws several grids side by side (shared y axis) and prints each one's table.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.analysis.collect import collect, mean_std
from experiments.logging.metrics import best_column, final_column
from experiments.run_state import RunDir, write_text_atomic

METRICS = ("final", "best")

#: A result: (width, learning rate, seed, loss); loss inf for a diverged point.
Result = tuple[float, float, Any, float]


# ------------------------------------------------------------------- reading
def read_results(runs_dir: Path | str, tag: str, metric: str = "final", task: int = 0) -> list[Result]:
    """(width, learning rate, seed, loss) of every finished point of ``runs_dir/tag``.

    Done points give their final (or best) validation loss of ``task``; diverged ones
    inf; others are left out. Raises FileNotFoundError without a manifest, ValueError for
    a bad ``metric``.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    manifest = RunDir(runs_dir, tag).manifest()
    if manifest is None:
        raise FileNotFoundError(f"no grid under {Path(runs_dir) / tag}: manifest.json is missing or unreadable")
    configs = {p["index"]: p.get("config", {}) for p in manifest["points"]}
    column = (final_column if metric == "final" else best_column)(task)
    out: list[Result] = []
    for row in collect(runs_dir, tag):
        cfg = configs[row["index"]]
        width = (cfg.get("architecture") or {}).get("width")
        lr = (cfg.get("training") or {}).get("learning_rate")
        seed = (cfg.get("custom") or {}).get("seed", (cfg.get("data") or {}).get("seed"))
        if not isinstance(width, (int, float)) or not isinstance(lr, (int, float)):
            continue
        value = row.get(column)
        if row["status"] == "diverged" or (row["status"] == "done" and isinstance(value, float)
                                           and not math.isfinite(value)):
            out.append((float(width), float(lr), seed, math.inf))
        elif row["status"] == "done" and isinstance(value, (int, float)):
            out.append((float(width), float(lr), seed, float(value)))
    return out


# ---------------------------------------------------------------- analysis
def loss_table(results: Sequence[Result]) -> dict[float, dict[float, tuple[float, Optional[float], int]]]:
    """``{width: {lr: (mean, std, n)}}`` over seeds (std: sample std, None below 2 seeds; inf if any diverged)."""
    values: dict[float, dict[float, list[float]]] = {}
    for width, lr, _, loss in results:
        values.setdefault(width, {}).setdefault(lr, []).append(loss)
    table: dict[float, dict[float, tuple[float, Optional[float], int]]] = {}
    for width in sorted(values):
        table[width] = {}
        for lr in sorted(values[width]):
            losses = values[width][lr]
            if any(math.isinf(v) for v in losses):
                table[width][lr] = (math.inf, None, len(losses))
            else:
                mean, std = mean_std(losses)
                table[width][lr] = (float(mean), std, len(losses))
    return table


def best_learning_rates(results: Sequence[Result]) -> dict[float, tuple[float, float, Optional[float], int]]:
    """``{width: (best lr, its mean loss, std, n)}``: the lr with the lowest mean loss over seeds."""
    best = {}
    for width, row in loss_table(results).items():
        finite = {lr: v for lr, v in row.items() if math.isfinite(v[0])}
        if finite:
            lr = min(finite, key=lambda k: (finite[k][0], k))
            best[width] = (lr, *finite[lr])
    return best


def drift_exponent(best_lr: dict[float, float]) -> Optional[float]:
    """Least-squares slope of log(best lr) against log(width); None below two widths."""
    if len(best_lr) < 2:
        return None
    xs = [math.log(w) for w in best_lr]
    ys = [math.log(lr) for lr in best_lr.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def grid_label(runs_dir: Path | str, tag: str) -> str:
    """'muP, Adam, sine, depth 3' from the grid's first point (what was swept over)."""
    manifest = RunDir(runs_dir, tag).manifest() or {}
    points = manifest.get("points") or [{}]
    cfg = points[0].get("config", {})
    arch, training, data = cfg.get("architecture") or {}, cfg.get("training") or {}, cfg.get("data") or {}
    parts = [arch.get("parametrization"), training.get("update_rule"), data.get("f_true"),
             f"depth {arch['depth']}" if "depth" in arch else None]
    return ", ".join(str(p) for p in parts if p is not None)


# ------------------------------------------------------------------ output
def at_edge(results: Sequence[Result]) -> set[float]:
    """Widths whose best learning rate is the smallest or largest one tried (the optimum may lie beyond)."""
    table = loss_table(results)
    return {w for w, (lr, *_) in best_learning_rates(results).items() if lr in (min(table[w]), max(table[w]))}


def format_best_table(best: dict[float, tuple[float, float, Optional[float], int]], drift: Optional[float],
                      metric: str, edges: frozenset | set = frozenset()) -> str:
    """The best-lr table and the drift exponent as text; widths in ``edges`` get a ``*``."""
    lines = [f"{'width':>7}  {'best lr':>10}  {metric + ' val loss':>15}  {'std':>9}  {'n':>3}"]
    for width, (lr, mean, std, n) in sorted(best.items()):
        lines.append(f"{width:>7g}  {lr:>10.4g}{'*' if width in edges else ' '} {mean:>15.4g}  "
                     f"{'-' if std is None else f'{std:.2g}':>9}  {n:>3}")
    lines.append("drift exponent (slope of log best lr vs log width): "
                 + ("- (fewer than 2 widths)" if drift is None else f"{drift:+.3f}"))
    if edges:
        lines.append("* best lr at the edge of the learning-rate grid: the optimum may lie beyond it and the "
                     "drift is unreliable; widen --learning_rates")
    return "\n".join(lines)


def write_best_csv(best: dict[float, tuple[float, float, Optional[float], int]], drift: Optional[float],
                   path: Path) -> Path:
    """``width,best_lr,mean_loss,std_loss,n,drift_exponent`` (the drift on every row), atomically."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["width", "best_lr", "mean_loss", "std_loss", "n", "drift_exponent"])
    for width, (lr, mean, std, n) in sorted(best.items()):
        w.writerow([f"{width:g}", repr(lr), repr(mean), "" if std is None else repr(std), n,
                    "" if drift is None else repr(drift)])
    write_text_atomic(path, buf.getvalue())
    return path


def _draw(ax: Any, results: Sequence[Result], title: str, metric: str, task: int) -> None:
    """Loss against learning rate on ``ax``: one line per width, mean ± std over seeds, best lr starred."""
    from matplotlib import colormaps

    table = loss_table(results)
    best = best_learning_rates(results)
    cmap = colormaps["viridis"]
    widths = sorted(table)
    for k, width in enumerate(widths):
        row = {lr: v for lr, v in table[width].items() if math.isfinite(v[0])}
        if not row:
            continue
        color = cmap(k / max(len(widths) - 1, 1))
        lrs = sorted(row)
        errs = [row[lr][1] or 0.0 for lr in lrs]
        n = max(v[2] for v in row.values())
        ax.errorbar(lrs, [row[lr][0] for lr in lrs], yerr=errs if any(errs) else None, fmt="o-", color=color,
                    capsize=3, markersize=4, label=f"width {width:g}" + (f" (n={n})" if n > 1 else ""))
        if width in best:
            ax.plot([best[width][0]], [best[width][1]], "*", color=color, markersize=14, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"{metric} validation loss, task {task}")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, out_stem: Path) -> list[Path]:
    fig.tight_layout()
    written = []
    for ext in ("png", "pdf"):
        path = Path(out_stem).with_suffix(f".{ext}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def plot_transfer(results: Sequence[Result], out_stem: Path, title: str, metric: str = "final",
                  task: int = 0) -> list[Path]:
    """Loss against learning rate, one line per width (mean ± std over seeds), log axes; PNG and PDF."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6))
    _draw(fig.add_subplot(), results, title, metric, task)
    return _save(fig, out_stem)


def _title(runs_dir: Path | str, tag: str, results: Sequence[Result], drift: Optional[float], metric: str) -> str:
    seeds = len({r[2] for r in results})
    return (f"{grid_label(runs_dir, tag)} ({tag})\n{metric} validation loss vs learning rate, "
            f"mean ± std over {seeds} seed(s)\nbest-lr drift exponent " + ("-" if drift is None else f"{drift:+.2f}"))


def compare(runs_dir: Path | str, tags: Sequence[str], out_stem: Path, metric: str = "final",
            task: int = 0) -> tuple[list[Path], str]:
    """The transfer plots of several grids side by side (e.g. muP vs SP), one shared y range; files and text."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * len(tags), 4.8))
    axes = fig.subplots(1, len(tags), sharey=True, squeeze=False)[0]
    texts = []
    for ax, tag in zip(axes, tags):
        results = read_results(runs_dir, tag, metric, task)
        best = best_learning_rates(results)
        drift = drift_exponent({w: v[0] for w, v in best.items()})
        _draw(ax, results, _title(runs_dir, tag, results, drift, metric), metric, task)
        texts.append(f"{grid_label(runs_dir, tag)} ({tag}), {len(results)} finished points\n"
                     + format_best_table(best, drift, metric, at_edge(results)))
    return _save(fig, out_stem), "\n\n".join(texts)


def analyse(runs_dir: Path | str, tag: str, metric: str = "final", task: int = 0,
            out_stem: Optional[Path] = None) -> dict[str, Any]:
    """Plot, table and drift of ``runs_dir/tag``; returns ``{'best', 'drift', 'files', 'text'}``."""
    results = read_results(runs_dir, tag, metric, task)
    best = best_learning_rates(results)
    drift = drift_exponent({w: v[0] for w, v in best.items()})
    root = RunDir(runs_dir, tag).root
    files = [write_best_csv(best, drift, root / "transfer.csv")]
    if results:
        files += plot_transfer(results, out_stem or root / "transfer", _title(runs_dir, tag, results, drift, metric),
                               metric, task)
    text = f"{grid_label(runs_dir, tag)} ({tag}), {len(results)} finished points\n" + format_best_table(
        best, drift, metric, at_edge(results))
    return {"best": best, "drift": drift, "files": files, "text": text}


# --------------------------------------------------------------------- run
def _numbers(text: str, cast: type = float) -> list:
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def run_grid(tag: str, runs_dir: Path | str = "runs", wandb_mode: str = "disabled", **overrides: Any) -> dict:
    """Run the ``transfer`` experiment's grid under ``tag`` with ``overrides``; {index: status}.

    Overrides (None: keep configs.py's): parametrization, depth (architecture),
    update_rule, learning_rates (training), widths, seeds, f_true, epochs (max_epochs).
    """
    from experiments import make_manager

    epochs = overrides.get("epochs")
    manager = make_manager("transfer", trainer_overrides={"max_epochs": epochs} if epochs else None,
                           runs_dir=runs_dir, wandb_mode=wandb_mode)
    keys = {"parametrization": ("configs_architecture", "parametrization"),
            "depth": ("configs_architecture", "depth"),
            "widths": ("configs_architecture", "width"),
            "update_rule": ("configs_training", "update_rule"),
            "learning_rates": ("configs_training", "learning_rate"),
            "f_true": ("configs_data", "f_true")}
    for name, value in overrides.items():
        if value is None or name == "epochs":
            continue
        if name == "seeds":
            manager.configs_data["seed"] = manager.configs_custom["seed"] = list(value)
        elif name in keys:
            section, key = keys[name]
            getattr(manager, section)[key] = list(value) if isinstance(value, (list, tuple)) else value
        else:
            raise ValueError(f"unknown transfer override {name!r}; allowed: {', '.join([*keys, 'seeds', 'epochs'])}")
    return manager.run(tag)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: analyse ``TAG``, or ``--run`` the transfer grid first (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.transfer",
        description="Hyper-parameter transfer across width: loss vs learning rate per width, best lr drift.")
    parser.add_argument("tag", nargs="?", help="the grid's TAG (with --run: default transfer_<par>_<opt>_<time>)")
    parser.add_argument("--runs_dir", default="runs", help="folder holding the TAG folders (default: runs)")
    parser.add_argument("--metric", choices=METRICS, default="final", help="final (default) or best validation loss")
    parser.add_argument("--task", type=int, default=0, help="the task whose loss is compared (default 0)")
    parser.add_argument("--out", type=Path, help="write the plot to OUT.png/.pdf instead of runs/TAG/transfer")
    parser.add_argument("--compare", nargs="+", metavar="TAG",
                        help="draw these grids' transfer plots side by side into --out (e.g. a muP and an SP TAG)")
    run = parser.add_argument_group("running the grid (--run)")
    run.add_argument("--run", action="store_true", help="run the transfer experiment's grid first")
    run.add_argument("--tag", dest="tag_opt", metavar="TAG", help="the TAG to run into (same as the positional)")
    run.add_argument("--parametrization", help="muP, NTK or SP (default: configs.py's)")
    run.add_argument("--update_rule", help="SGD, Adam or AdamW (default: configs.py's)")
    run.add_argument("--learning_rates", type=_numbers, help="comma-separated learning rates")
    run.add_argument("--widths", type=lambda t: _numbers(t, int), help="comma-separated widths")
    run.add_argument("--seeds", type=lambda t: _numbers(t, int), help="comma-separated seeds")
    run.add_argument("--epochs", type=int, help="max_epochs")
    run.add_argument("--depth", type=int, help="abcMLP depth")
    run.add_argument("--f_true", help="target function (default: configs.py's)")
    run.add_argument("--wandb", default="disabled", choices=("online", "offline", "disabled"))
    args = parser.parse_args(argv)
    if args.compare:
        if args.out is None:
            parser.error("--compare needs --out")
        try:
            files, text = compare(args.runs_dir, args.compare, args.out, args.metric, args.task)
        except FileNotFoundError as err:
            print(f"transfer: {err}", file=sys.stderr)
            return 1
        print(text)
        print("wrote " + ", ".join(str(f) for f in files))
        return 0
    tag = args.tag_opt or args.tag
    if args.run:
        if tag is None:
            tag = f"transfer_{args.parametrization or 'default'}_{args.update_rule or 'default'}_" \
                  f"{time.strftime('%Y%m%d_%H%M%S')}"
        from experiments.util import GridError

        try:
            run_grid(tag, args.runs_dir, args.wandb, parametrization=args.parametrization,
                     update_rule=args.update_rule, learning_rates=args.learning_rates, widths=args.widths,
                     seeds=args.seeds, epochs=args.epochs, depth=args.depth, f_true=args.f_true)
        except (GridError, ValueError) as err:
            print(f"transfer: {err}", file=sys.stderr)
            return 2
    elif tag is None:
        parser.error("give a TAG to analyse, or --run")
    try:
        result = analyse(args.runs_dir, tag, args.metric, args.task, args.out)
    except FileNotFoundError as err:
        print(f"transfer: {err}", file=sys.stderr)
        return 1
    print(result["text"])
    print("wrote " + ", ".join(str(f) for f in result["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
