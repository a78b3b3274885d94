"""Vectorized grid points vs one run per point: wall time, and peak memory.

    .venv/bin/python benchmarks/bench_vectorized.py                        # everything
    .venv/bin/python benchmarks/bench_vectorized.py --sections time --sizes 64x3 --points 16 --epochs 20
    .venv/bin/python benchmarks/bench_vectorized.py --sections impl        # baddbmm vs vmap forward
    .venv/bin/python benchmarks/bench_vectorized.py --sections time,floor --sizes 64x3

A seed sweep of compositeSine (data and training of ``experiments/compositeSine/configs.py``,
an NTK abcMLP of the given size, SGD, 13 steps an epoch, 2048 validation points): K points
that differ only in ``seed`` (custom seed: data draws, init, batch order), ``--epochs`` each.

- ``time``: (a) ``experiments.vectorize.train_group`` on all K points (one ensemble, one
  Trainer: data, baselines, in-domain rows, per-member results and checkpoints included);
  (b) the same K points one by one in this process, each as ``BasicManager._train_point``
  builds it (``seed_everything``, data, model, ``DataModule``, ``LightningMultitask``, the
  experiment's ``LoggingCallback`` without plots, a quiet Trainer); (c) K separate
  processes, estimated as K x (process start of ``python -c "import torch,
  pytorch_lightning"``, measured, + one point of (b)). Prints seconds and speed-ups.
- ``impl``: ``train_group`` with the forward as batched matmuls (``baddbmm``) and as
  ``vmap(functional_call)``, at each size.
- ``mem``: peak resident memory (VmHWM) of fresh processes: imports only, one point, and
  the K-point ensemble (2 epochs each); checks K-member <= K x (single - imports) + imports.
- ``floor``: one epoch of a hand-written K-member ensemble with the same shapes (layers in
  the forms ``StackedModel`` uses, ReLU, each task's MSE over its rows and columns, the
  gradients written out as the framework's, plain SGD, validation member by member over the
  distinct points; no framework, no abc multipliers): what the arithmetic of an epoch costs
  in eager PyTorch. With ``time`` in the
  same run it also prints the speed-up over one by one that this arithmetic alone would allow.

``--threads 1,2`` (the default) repeats ``time`` and ``impl`` with each torch thread count
in this one run; ``mem`` runs with the first. The run ends with the issue's goals (16
points x 20 epochs: 64x3 vectorized >= 5x one by one and >= 10x 16 processes, 512x4 >= 1.5x;
the memory bound) and whether each measured value meets it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, accelerator="auto", devices=1)


def _unwrap(value):
    return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list) else value


def configs(width: int, depth: int, points: int) -> list[dict]:
    """K resolved compositeSine points (seeds 1..K) at width x depth, NTK."""
    from core_code.create_model import resolve_architecture
    from core_code.model_lib.parametrizations import abc_preset
    from core_code.util.default_config import init_config_data, init_config_training
    from experiments.compositeSine import configs as exp

    arch = {k: _unwrap(v) for k, v in exp.configs_architecture.items()}
    arch.update(width=width, depth=depth, **abc_preset("NTK", depth))
    arch.pop("c", None)
    training = {k: _unwrap(v) for k, v in exp.configs_training.items()}
    return [{"data": init_config_data(**exp.configs_data), "architecture": resolve_architecture(**arch),
             "training": init_config_training(**training), "custom": {"seed": s, "workers": True}}
            for s in range(1, points + 1)]


class Builder:
    def make_data(self, config_data):
        from core_code.create_data import CreateData

        return CreateData(**config_data)

    def make_model(self, config_architecture, data):
        from core_code.create_model import create_model

        return create_model(**config_architecture)


def single_point(cfg: dict, epochs: int) -> tuple[float, float]:
    """One point as the one-point path trains it; (wall, CPU) seconds."""
    import pytorch_lightning as pl

    from core_code.lightning_multitask import LightningMultitask
    from core_code.util.lightning import DataModule
    from experiments.compositeSine.logging_callback import LoggingCallback

    t, c = time.perf_counter(), time.process_time()
    pl.seed_everything(cfg["custom"]["seed"], workers=True, verbose=False)
    b = Builder()
    data = b.make_data(cfg["data"])
    model = b.make_model(cfg["architecture"], data)
    dm = DataModule(data, **cfg["training"])
    lm = LightningMultitask(model, **cfg["training"])
    pl.Trainer(**{**QUIET, "max_epochs": epochs, "callbacks": [LoggingCallback(None, plot=False)]}).fit(
        lm, datamodule=dm)
    return time.perf_counter() - t, time.process_time() - c


def vectorized(cfgs: list[dict], epochs: int, impl: str = "auto") -> tuple[float, float]:
    """``train_group`` on ``cfgs``; (wall, CPU) seconds."""
    from experiments.vectorize import train_group

    t, c = time.perf_counter(), time.process_time()
    results = train_group(Builder(), cfgs, {**QUIET, "max_epochs": epochs}, impl=impl)
    assert all(r.status == "done" for r in results), [r.status for r in results]
    return time.perf_counter() - t, time.process_time() - c


def process_start(repeats: int = 3) -> tuple[float, float]:
    """Medians of (wall, CPU) seconds of ``python -c "import torch, pytorch_lightning"``."""
    import resource

    walls, cpus = [], []
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning"], check=True)
        walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


#: What ``--sections`` can name (see the module docstring).
SECTIONS = ("time", "impl", "mem", "floor")

#: The goals of the throughput issue (16 points x 20 epochs): vectorized vs one by one in one
#: process, and vs 16 separate processes (64x3 only).
GOALS = {"64x3": {"one by one": 5.0, "16 processes": 10.0}, "512x4": {"one by one": 1.5}}


def section_time(sizes, points: int, epochs: int, repeats: int, threads: int, start: tuple,
                 results: list) -> None:
    """Times the sizes; appends ``{size, threads, vec, one, sep}`` (median wall seconds) to ``results``."""
    start_wall, start_cpu = start
    for w, d in sizes:
        cfgs = configs(w, d, points)
        single_point(cfgs[0], 1)  # warm-up (imports, kernels)
        vectorized(cfgs[:2], 1)
        vec, one = [], []
        for _ in range(repeats):  # interleaved
            vec.append(vectorized(cfgs, epochs))
            runs = [single_point(c, epochs) for c in cfgs]
            one.append((sum(r[0] for r in runs), sum(r[1] for r in runs)))
        for i, (what, start) in enumerate((("wall", start_wall), ("CPU", start_cpu))):
            v = statistics.median(x[i] for x in vec)
            o = statistics.median(x[i] for x in one)
            sep = points * start + o
            print(f"{w}x{d}, {threads} thread(s), {points} points x {epochs} epochs, {what}: vectorized {v:.2f} s | "
                  f"one by one {o:.2f} s ({o / v:.1f}x) | {points} processes (est. {points} x start + one by one) "
                  f"{sep:.1f} s ({sep / v:.1f}x)  [vec {', '.join(f'{x[i]:.2f}' for x in vec)}; "
                  f"one {', '.join(f'{x[i]:.2f}' for x in one)}]", flush=True)
            if what == "wall":
                results.append({"size": f"{w}x{d}", "threads": threads, "vec": v, "one": o, "sep": sep})


def print_goals(results: list, mem: list, points: int, epochs: int) -> None:
    """Each measured speed-up (and the memory check) against its goal: met or missed."""
    print(f"\ngoals ({points} points x {epochs} epochs; the goals are stated for 16 x 20; wall-time medians):")
    goal_sweep = (points, epochs) == (16, 20)
    for r in results:
        for what, goal in GOALS.get(r["size"], {}).items():
            ratio = (r["one"] if what == "one by one" else r["sep"]) / r["vec"]
            verdict = ("met" if ratio >= goal else "missed") if goal_sweep else "not the goal's sweep"
            label = what if what == "one by one" else f"{points} separate processes"
            print(f"  {r['size']}, {r['threads']} thread(s): vectorized {ratio:.1f}x faster than {label} "
                  f"(goal {goal:g}x: {verdict})")
    for m in mem:
        print(f"  {m['size']}: {points}-member ensemble +{m['many']:.0f} MiB <= {points} x one point "
              f"{m['bound']:.0f} MiB ({'met' if m['many'] <= m['bound'] else 'missed'})")


def section_impl(sizes, points: int, epochs: int) -> None:
    impls = ("bmm", "vmap")
    for w, d in sizes:
        cfgs = configs(w, d, points)
        for impl in impls:
            vectorized(cfgs[:2], 1, impl)
        res = {impl: [] for impl in impls}
        for _ in range(3):
            for impl in impls:
                res[impl].append(vectorized(cfgs, epochs, impl))
        for i, what in enumerate(("wall", "CPU")):
            med = {impl: statistics.median(x[i] for x in res[impl]) for impl in impls}
            print(f"{w}x{d}, {points} members x {epochs} epochs, {what}: "
                  + ", ".join(f"{impl} {t:.2f} s" for impl, t in med.items()))


def hand_written_epoch(cfg: dict, points: int, epochs: int = 10) -> tuple[float, float]:
    """Median (training, validation) seconds of an epoch of the hand-written ensemble (``floor``)."""
    import math

    import torch

    from benchmarks.bench_training import criterion_ranges
    from core_code.util.batching import deterministic_task_batch_sizes, task_blocks
    from core_code.vectorized.stacked import NARROW_MAX_OUT

    arch, training = cfg["architecture"], cfg["training"]
    data = Builder().make_data(cfg["data"])
    train, val = data.create_data("train"), data.create_data("val")
    n = {t: b - a for t, (a, b) in task_blocks(train["task_activity"]).items()}
    sizes = {t: s for t, s in deterministic_task_batch_sizes(n, training["batch_size"]).items() if s}
    steps = max(math.ceil(n[t] / s) for t, s in sizes.items())
    cols = {t: slice(lo, hi) for t, (lo, hi) in criterion_ranges(training).items()}  # compared columns
    rows, a = {}, 0
    for t, size in sizes.items():
        rows[t], a = (a, a + size), a + size
    widths = [arch["d_in"]] + [arch["width"]] * (arch["depth"] - 1) + [arch["d_out"]]
    form = ["outer" if i == 1 else "narrow" if 1 < o < NARROW_MAX_OUT else "bmm" for i, o in zip(widths, widths[1:])]
    gen = torch.Generator().manual_seed(0)
    params = []
    for i, o, f in zip(widths, widths[1:], form):
        shape = (points, o, i) if f == "narrow" else (points, i, o)
        params += [torch.randn(*shape, generator=gen) / math.sqrt(i), torch.zeros(points, 1, o)]
    lr = float(training["learning_rate"] if not isinstance(training["learning_rate"], dict)
               else next(iter(training["learning_rate"].values())))

    def layer(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, f: str, batched: bool) -> torch.Tensor:
        if f == "outer":
            return torch.addcmul(b, h, w)
        if f == "narrow":
            return (torch.baddbmm if batched else torch.addmm)(b.mT, w, h.mT).mT
        return (torch.baddbmm if batched else torch.addmm)(b, h, w)

    def forward(h: torch.Tensor, ps: list, batched: bool = True) -> torch.Tensor:
        for j, f in enumerate(form):
            h = layer(h, ps[2 * j], ps[2 * j + 1], f, batched)
            h = torch.relu(h) if j < len(form) - 1 else h
        return h

    x = torch.randn(points, a, widths[0], generator=gen)
    y = torch.randn(points, a, widths[-1], generator=gen)
    xv = torch.unique(val["x"], dim=0)

    @torch.no_grad()
    def train_epoch() -> None:  # gradients written out, as the framework's (autograd: slower)
        for _ in range(steps):
            hs, h = [], x
            for j, f in enumerate(form):
                hs.append(h)
                h = layer(h, params[2 * j], params[2 * j + 1], f, True)
                h = torch.relu(h) if j < len(form) - 1 else h
            diff = h - y
            g = torch.zeros_like(diff)
            for t, (p, q) in rows.items():
                d = diff[:, p:q, cols[t]]
                d.square().mean(dim=(1, 2))
                g[:, p:q, cols[t]] = d * (2.0 / d[0].numel())
            grads = [None] * len(params)
            for j in reversed(range(len(form))):
                w, hin = params[2 * j], hs[j]
                grads[2 * j + 1] = g.sum(1, keepdim=True)
                if form[j] == "outer":
                    grads[2 * j] = torch.bmm(hin.mT, g)
                    gh = torch.bmm(g, w.mT)
                elif form[j] == "narrow":
                    grads[2 * j] = torch.bmm(g.mT, hin)
                    gh = torch.bmm(g, w)
                else:
                    grads[2 * j] = torch.bmm(hin.mT, g)
                    gh = torch.bmm(g, w.mT)
                if j > 0:
                    g = torch.ops.aten.threshold_backward(gh, hin, 0)
            torch._foreach_add_(params, grads, alpha=-lr)

    @torch.no_grad()
    def validate() -> None:
        out = torch.stack([forward(xv, [prm[k] for prm in params], batched=False) for k in range(points)])
        [out[:, :, cols[t]].square().mean(dim=(1, 2)) for t in rows]

    times: list[tuple[float, float]] = []
    for e in range(epochs + 2):  # 2 warm-up epochs
        t0 = time.perf_counter()
        train_epoch()
        t1 = time.perf_counter()
        validate()
        if e >= 2:
            times.append((t1 - t0, time.perf_counter() - t1))
    return statistics.median(t for t, _ in times), statistics.median(v for _, v in times)


def section_floor(sizes, points: int, epochs: int, threads: int, results: list) -> None:
    """Prints the hand-written ensemble's epoch and, given ``time`` results, the speed-up it would allow."""
    for w, d in sizes:
        train, val = hand_written_epoch(configs(w, d, points)[0], points)
        line = (f"{w}x{d}, {threads} thread(s): hand-written {points}-member epoch {1e3 * (train + val):.1f} ms "
                f"(training {1e3 * train:.1f}, validation {1e3 * val:.1f})")
        for r in results:
            if r["size"] == f"{w}x{d}" and r["threads"] == threads:
                line += (f"; the framework's vectorized sweep {1e3 * r['vec'] / epochs:.1f} ms an epoch (set-up "
                         f"included); this arithmetic alone: at most {r['one'] / (epochs * (train + val)):.1f}x "
                         f"faster than one by one ({r['one']:.2f} s)")
        print(line, flush=True)


def _child(kind: str, w: int, d: int, points: int) -> None:
    import warnings as _w

    _w.simplefilter("ignore")
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401

    cfgs = configs(w, d, points)
    if kind == "single":
        single_point(cfgs[0], 2)
    elif kind == "vectorized":
        vectorized(cfgs, 2)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"kb": hwm}))


def section_mem(sizes, points: int, threads: int, results: list) -> None:
    for w, d in sizes:
        kb = {}
        for kind in ("imports", "single", "vectorized"):
            out = subprocess.run([sys.executable, __file__, "--child", kind, f"--sizes={w}x{d}", f"--points={points}",
                                  f"--threads={threads}"],
                                 check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            kb[kind] = json.loads(out.stdout.strip().splitlines()[-1])["kb"]
        base, one, many = kb["imports"], kb["single"] - kb["imports"], kb["vectorized"] - kb["imports"]
        bound = points * one
        print(f"{w}x{d}: peak RSS imports {base / 1024:.0f} MiB; one point +{one / 1024:.1f} MiB; {points}-member "
              f"ensemble +{many / 1024:.1f} MiB (bound {points} x one = {bound / 1024:.1f} MiB: "
              f"{'OK' if many <= bound else 'EXCEEDED'}; {many / max(one, 1):.1f}x one point)", flush=True)
        results.append({"size": f"{w}x{d}", "many": many / 1024, "bound": bound / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"of {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--sizes", default="64x3,512x4")
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="torch thread counts, each measured in turn (default 1,2)")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if unknown:  # before any import or measurement
        ap.error(f"--sections: unknown {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    import logging

    import torch

    from core_code.util.memory import keep_freed_memory

    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    keep_freed_memory()  # as main.py does before training
    warnings.simplefilter("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                 "pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.child:
        _child(args.child, *sizes[0], args.points)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores; "
          f"{args.points} points x {args.epochs} epochs; load average {os.getloadavg()[0]:.2f}")
    sections = args.sections.split(",")
    times: list = []
    mem: list = []
    if "time" in sections:
        start = process_start()
        print(f"process start (import torch, pytorch_lightning): {start[0]:.2f} s wall, {start[1]:.2f} s CPU")
    for n in threads:
        torch.set_num_threads(n)
        if "time" in sections:
            section_time(sizes, args.points, args.epochs, args.repeats, n, start, times)
        if "impl" in sections:
            print(f"impl, {n} thread(s):")
            section_impl(sizes, args.points, min(args.epochs, 5))
        if "floor" in sections:
            section_floor(sizes, args.points, args.epochs, n, times)
    if "mem" in sections:
        section_mem(sizes, args.points, threads[0], mem)
    if times or mem:
        print_goals(times, mem, args.points, args.epochs)


if __name__ == "__main__":
    main()
