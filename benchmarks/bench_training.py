"""Framework vs plain PyTorch: time per epoch, peak memory and start-up on compositeSine.

    .venv/bin/python benchmarks/bench_training.py                  # 64x3, 512x4, 2048x6
    .venv/bin/python benchmarks/bench_training.py --sizes 256x3,1024x4 --repeats 7
    .venv/bin/python benchmarks/bench_training.py --threads 1 --no-mem --no-startup

For every size (width x depth) it builds the compositeSine problem (data from
``experiments/compositeSine/configs.py`` via ``CreateData``, an abcMLP in the NTK
parametrization via ``create_model``, SGD, batch 64 = 21 + 43 rows, 13 steps an epoch,
2048 validation points) and

1. checks that the framework and the plain loop produce the same per-task training and
   validation losses for the same seed (rtol 1e-5) and the same final weights; aborts
   otherwise, so the ratios compare equal work;
2. times, interleaved and repeated in this one process,
   (a) the framework: ``LightningMultitask`` + ``DataModule`` + the experiment's
       ``LoggingCallback`` (CSV to a temporary folder, plots off), W&B disabled,
       progress bar, checkpointing and model summary off, Trainer defaults otherwise
       (``max_time`` included), in two modes: ``framework`` (the default,
       ``steps_per_chunk: 'auto'``, which here runs the epoch's 13 optimizer steps in one
       Lightning step; the value it resolved to is printed) and ``framework-1-step``
       (``steps_per_chunk=1``: Lightning drives every optimizer step, as 'auto' does when
       a callback observes single steps);
   (b) ``PlainLoop``: the loop a researcher writes in an afternoon, written for speed:
       preloaded tensors, the same per-task batch composition by index slicing (one
       gather per epoch), per-task dimred MSE by slicing, SGD, one no-grad validation
       pass over the 2048 points (both tasks' validation rows hold the same points: one
       forward for both, as the framework does), one host sync per epoch for the losses;
   and prints the median time per epoch (train + validation, wall clock and CPU time of
   the process) of each and the ratios to the plain loop (the first epoch of every run
   is a warm-up and not counted; epochs per run: about ``--budget`` seconds);
3. ``--mem`` (default on): peak resident memory (VmHWM) at the largest size, framework
   vs plain, 2 epochs each in a fresh child process; the plain child never imports
   Lightning;
4. ``--startup`` (default on): process start to the first training step of
   ``python main.py --wandb disabled`` (compositeSine and tinyTest) vs the bare
   ``python -c "import torch, pytorch_lightning"`` (medians of 3).

Timing runs once per torch thread count of ``--threads`` (default ``1,2``, in this one
process); memory and start-up once. The table ends each row with the issue's goal for the
size (framework / plain, wall time) and whether the measured ratio meets it.

Numbers are noisy on a shared machine: interleave, repeat (``--repeats``) and read the
medians; the CPU-time ratio is the steadier one when other jobs compete for the cores,
and ``--threads 1`` avoids the large slow-downs of two OpenMP threads on a busy 2-core
machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core_code.util.memory import keep_freed_memory  # noqa: E402

DEFAULT_SIZES = ((64, 3), (512, 4), (2048, 6))
# Framework variants: name -> DataModule(steps_per_chunk=...). 'framework' is the default
# ('auto': nothing here observes single steps, so up to 32 optimizer steps run in one
# Lightning step: compositeSine's whole 13-step epoch); 'framework-1-step' makes Lightning
# drive every optimizer step (what 'auto' falls back to when a callback needs single steps).
MODES = {"framework": "auto", "framework-1-step": 1}
CHUNK_STEPS: dict = {}  # steps_per_chunk -> what the last framework run resolved it to
SEED = 77


# ------------------------------------------------------------------------ problem
@dataclass
class Problem:
    """The compositeSine problem at one size: data, initial model, training config."""

    width: int
    depth: int
    data: object  # CreateData
    init_model: torch.nn.Module
    training: dict
    seed: int

    def fresh_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.init_model)


def _unwrap(value):
    """A grid axis with one value -> the value (configs wrap list-valued parameters)."""
    return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list) else value


def build_problem(width: int, depth: int, seed: int = SEED, n_train: Optional[dict] = None,
                  n_val: Optional[int] = None) -> Problem:
    """compositeSine data and an NTK abcMLP of ``width`` x ``depth`` (seeded)."""
    import numpy as np

    from core_code.create_data import CreateData
    from core_code.create_model import create_model
    from core_code.model_lib.parametrizations import abc_preset
    from experiments.compositeSine import configs

    torch.manual_seed(seed)
    np.random.seed(seed)
    cfg_data = dict(configs.configs_data)
    if n_train is not None:
        cfg_data["n_train"] = n_train
    if n_val is not None:
        cfg_data["n_val"] = n_val
    data = CreateData(**cfg_data)
    arch = {k: _unwrap(v) for k, v in configs.configs_architecture.items()}
    ntk = abc_preset("NTK", depth)
    if depth == 6:  # the experiment's own exponents are the NTK ones
        assert (arch["list_a"], arch["list_b"]) == (ntk["list_a"], ntk["list_b"]) and arch["c"] == 0, arch
    arch.update(width=width, depth=depth, **ntk)
    model = create_model(**arch)
    training = {k: _unwrap(v) for k, v in configs.configs_training.items()}
    return Problem(width, depth, data, model, training, seed)


# --------------------------------------------------------------------- plain loop
def deterministic_sizes(n: dict[int, int], batch_size: int) -> dict[int, int]:
    """Per-task rows of a batch: floor(share * batch_size) (>= 1), the largest task takes the rest."""
    total = sum(n.values())
    sizes = {t: max(1, math.floor(k / total * batch_size)) for t, k in n.items()}
    largest = max(n, key=lambda t: (n[t], -t))
    sizes[largest] += batch_size - sum(sizes.values())
    return sizes


def seeded_permutation(n: int, seed: int, epoch: int, stream: int) -> torch.Tensor:
    """The permutation the framework's loaders draw for (seed, epoch, stream)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % 2**62)
    return torch.randperm(n, generator=gen)


class PlainLoop:
    """compositeSine by hand: SGD on the sum of the per-task dimred-MSE losses.

    Batches: every batch holds ``b_t`` rows of each task t (proportional to the task's
    share), ``max_t ceil(n_t / b_t)`` batches an epoch, a task that runs out continues
    with a fresh permutation; the permutations are the framework's seeded ones, so both
    see the same batches. The epoch's index matrix is built once and the rows gathered in
    one indexing op; a batch is then a view.
    """

    def __init__(self, model: torch.nn.Module, train: dict, val: dict, batch_size: int, lr: float,
                 dims: dict[int, tuple[int, int]], seed: int, shuffle: bool = True):
        self.model = model
        self.x, self.y = train["x"], train["y"]
        self.xv, self.yv = val["x"], val["y"]
        self.seed, self.shuffle = seed, shuffle
        self.dims = dims  # task -> (lo, hi): the contiguous output dims its loss looks at
        self.blocks = self._blocks(train["task_activity"])
        self.val_blocks = self._blocks(val["task_activity"])
        # compositeSine validates every task on the same points: evaluate them once (as the
        # framework does), then repeat the outputs for each task's block
        spans = list(self.val_blocks.values())
        a0, b0 = spans[0]
        self.val_repeat = len(spans) if all(b - a == b0 - a0 and torch.equal(self.xv[a:b], self.xv[a0:b0])
                                            for a, b in spans) else 1
        self.xv_eval = self.xv[a0:b0] if self.val_repeat > 1 else self.xv
        n = {t: b - a for t, (a, b) in self.blocks.items()}
        self.sizes = deterministic_sizes(n, batch_size)
        self.num_batches = max(math.ceil(n[t] / s) for t, s in self.sizes.items())
        offsets, a = {}, 0
        for t in self.blocks:
            offsets[t] = (a, a + self.sizes[t])
            a += self.sizes[t]
        self.batch_blocks = offsets  # task -> rows of a batch
        c = float(getattr(model, "c", 0.0))
        width = float(getattr(model, "width", 1))
        self.opt = torch.optim.SGD(model.parameters(), lr=lr * width ** (-c))
        self.epoch = 0

    @staticmethod
    def _blocks(ta: torch.Tensor) -> dict[int, tuple[int, int]]:
        tasks, counts = torch.unique_consecutive(ta, return_counts=True)
        stops = torch.cumsum(counts, 0).tolist()
        return {int(t): (b - int(c), b) for t, c, b in zip(tasks.tolist(), counts.tolist(), stops)}

    def epoch_index(self, epoch: int) -> torch.Tensor:
        """(num_batches, batch_size) row indices of an epoch's batches."""
        cols = []
        for t, (start, stop) in self.blocks.items():
            n, size = stop - start, self.sizes[t]
            need = self.num_batches * size
            if self.shuffle:
                perms = [seeded_permutation(n, self.seed, epoch * 1_000_003 + c, t)
                         for c in range(math.ceil(need / n))]
            else:
                perms = [torch.arange(n)] * math.ceil(need / n)
            cols.append((torch.cat(perms)[:need] + start).view(self.num_batches, size))
        return torch.cat(cols, 1)

    def _losses(self, out: torch.Tensor, y: torch.Tensor, blocks: dict) -> list[torch.Tensor]:
        return [F.mse_loss(out[a:b, lo:hi], y[a:b, lo:hi])
                for (t, (a, b)), (lo, hi) in zip(blocks.items(), (self.dims[t] for t in blocks))]

    def train_epoch(self) -> dict[int, float]:
        """One epoch of SGD steps; the per-task mean training losses."""
        idx = self.epoch_index(self.epoch)
        self.epoch += 1
        xs, ys = self.x[idx], self.y[idx]
        model, opt, blocks = self.model, self.opt, self.batch_blocks
        acc = []
        for k in range(self.num_batches):
            y = ys[k]
            losses = self._losses(model(xs[k]), y, blocks)
            loss = losses[0] + losses[1] if len(losses) == 2 else torch.stack(losses).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc.append(torch.stack(losses).detach())
        means = torch.stack(acc).mean(0).tolist()  # one host sync per epoch
        return dict(zip(blocks, means))

    @torch.no_grad()
    def validate(self) -> dict[int, float]:
        """One forward over the validation points; the per-task losses."""
        out = self.model(self.xv_eval)
        out = out.repeat(self.val_repeat, 1) if self.val_repeat > 1 else out
        losses = self._losses(out, self.yv, self.val_blocks)
        return dict(zip(self.val_blocks, torch.stack(losses).tolist()))

    def run_epoch(self) -> tuple[dict[int, float], dict[int, float]]:
        return self.train_epoch(), self.validate()


def criterion_ranges(training: dict) -> dict[int, tuple[int, int]]:
    """task -> (lo, hi) of its dimred_MSELoss dims (compositeSine's are contiguous)."""
    out = {}
    for key, (name, dims) in training["criterion"].items():
        assert name == "dimred_MSELoss" and list(dims) == list(range(dims[0], dims[-1] + 1)), (key, dims)
        out[int(key.split("_")[1])] = (dims[0], dims[-1] + 1)
    return out


def make_plain(problem: Problem, model: Optional[torch.nn.Module] = None) -> PlainLoop:
    tr = problem.training
    assert tr["update_rule"] == "SGD" and tr["batching_strategy"] == "data_deterministic"
    assert not tr.get("regularization_alpha") and tr.get("loss_aggregation", "sum") == "sum"
    return PlainLoop(model if model is not None else problem.fresh_model(),
                     problem.data.create_data("train"), problem.data.create_data("val"),
                     tr["batch_size"], tr["learning_rate"], criterion_ranges(tr), problem.seed,
                     shuffle=tr.get("shuffle", True))


def _now() -> tuple[float, float]:
    """(wall clock, CPU time of this process): CPU time is what other jobs on a shared machine disturb least."""
    return time.perf_counter(), time.process_time()


def _diffs(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def run_plain(problem: Problem, epochs: int, model: Optional[torch.nn.Module] = None):
    """([(wall, cpu) seconds] per epoch, [(train losses, val losses)] per epoch, model)."""
    loop = make_plain(problem, model)
    marks, losses = [_now()], []
    for _ in range(epochs):
        losses.append(loop.run_epoch())
        marks.append(_now())
    return _diffs(marks), losses, loop.model


# ---------------------------------------------------------------------- framework
TRAINER_SETTINGS = dict(enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)


def _epoch_timer():
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        """Times epoch k as (start of epoch k+1) - (start of epoch k); the last to on_train_end."""

        def __init__(self):
            self.marks: list[tuple[float, float]] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.marks.append(_now())

        def on_train_end(self, trainer, pl_module):
            self.marks.append(_now())

        def times(self) -> list[tuple[float, float]]:
            return _diffs(self.marks)

    return EpochTimer()


def run_framework(problem: Problem, epochs: int, model: Optional[torch.nn.Module] = None,
                  out_dir: Optional[str] = None, steps_per_chunk="auto", **trainer_overrides):
    """([(wall, cpu) seconds] per epoch, [(train losses, val losses)] per epoch, model) of the framework."""
    import pytorch_lightning as pl

    from core_code.lightning_multitask import LightningMultitask
    from core_code.util.lightning import DataModule
    from experiments.logging import LoggingCallback

    model = model if model is not None else problem.fresh_model()
    pl.seed_everything(problem.seed, verbose=False)
    dm = DataModule(problem.data, steps_per_chunk=steps_per_chunk, **problem.training)
    lm = LightningMultitask(model, **problem.training)
    timer = _epoch_timer()
    tmp = tempfile.TemporaryDirectory() if out_dir is None else None
    log_cb = LoggingCallback(out_dir or tmp.name, logging_epoch_interval=50, plot=False)
    try:
        lm.fit(dm, logger=False, callbacks=[timer, log_cb], max_epochs=epochs,
               **{**TRAINER_SETTINGS, **trainer_overrides})
    finally:
        if tmp is not None:
            tmp.cleanup()
    CHUNK_STEPS[steps_per_chunk] = dm.chunk_steps
    tasks = sorted(problem.data.all_tasks)
    losses = [({t: row[f"train/loss_task_{t}"] for t in tasks}, {t: row[f"validation/loss_task_{t}"] for t in tasks})
              for row in log_cb.history]
    return timer.times(), losses, model


# -------------------------------------------------------------------- equivalence
def compare_losses(a: list, b: list, rtol: float = 1e-5) -> list[str]:
    """Differences between two runs' [(train, val)] per-epoch losses (empty: the same)."""
    problems = []
    if len(a) != len(b):
        return [f"{len(a)} vs {len(b)} epochs"]
    for epoch, (ra, rb) in enumerate(zip(a, b)):
        for split, da, db in (("train", ra[0], rb[0]), ("validation", ra[1], rb[1])):
            if set(da) != set(db):
                problems.append(f"epoch {epoch} {split}: tasks {sorted(da)} vs {sorted(db)}")
                continue
            for t in da:
                if not math.isclose(da[t], db[t], rel_tol=rtol, abs_tol=1e-12):
                    problems.append(f"epoch {epoch} {split} task {t}: {da[t]:.9g} vs {db[t]:.9g}")
    return problems


def check_equivalence(problem: Problem, epochs: int = 2, rtol: float = 1e-5,
                      modes: tuple[str, ...] = tuple(MODES)) -> list:
    """Run the plain loop and every framework mode ``epochs`` epochs from the same init;
    raise if their losses or final weights differ."""
    _, lp, mp = run_plain(problem, epochs)
    problems = []
    for mode in modes:
        _, lf, mf = run_framework(problem, epochs, steps_per_chunk=MODES[mode])
        mf, mp = mf.requires_grad_(False), mp.requires_grad_(False)
        problems += [f"{mode}: {p}" for p in compare_losses(lf, lp, rtol)]
        for (name, pf), pp in zip(mf.named_parameters(), mp.parameters()):
            if not torch.allclose(pf, pp, rtol=1e-4, atol=1e-6):
                problems.append(f"{mode}: parameter {name} differs after {epochs} epochs "
                                f"(max abs diff {float((pf - pp).abs().max()):.3g})")
    if problems:
        raise AssertionError(f"framework and plain loop differ at {problem.width}x{problem.depth}:\n  "
                             + "\n  ".join(problems))
    return lp


# ------------------------------------------------------------------------- timing
#: The throughput issue's goals for single runs: framework / plain loop, wall time per epoch.
GOALS = {"64x3": 1.3, "512x4": 1.1, "2048x6": 1.05}


def time_size(problem: Problem, repeats: int, epochs: Optional[int], budget_s: float,
              modes: tuple[str, ...] = tuple(MODES)) -> dict:
    """Interleaved runs of the plain loop and each framework mode; per-epoch medians.

    The first epoch of every run is a warm-up and dropped. Returns, per mode, the median
    wall-clock and CPU seconds per epoch and their ratios to the plain loop.
    """
    if epochs is None:  # aim at ~budget_s per run
        t, _, _ = run_plain(problem, 3)
        epochs = int(min(60, max(3, budget_s / max(t[-1][0], 1e-4))))
    names = ("plain",) + tuple(modes)
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if name == "plain":
                times, _, _ = run_plain(problem, epochs)
            else:
                times, _, _ = run_framework(problem, epochs, steps_per_chunk=MODES[name])
            samples[name].extend(times[1:])
    med = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in samples.items()}
    return {"size": f"{problem.width}x{problem.depth}", "epochs": epochs, "repeats": repeats, "median": med,
            "ratio": {n: (med[n][0] / med["plain"][0], med[n][1] / med["plain"][1]) for n in modes}}


# ------------------------------------------------------------------------- memory
def child_memory(which: str, width: int, depth: int, epochs: int) -> dict:
    """Run in a child: one run of ``which`` and this process's peak RSS (MiB)."""
    problem = build_problem(width, depth)
    model, problem.init_model = problem.init_model, None  # train the one model: no second copy
    if which == "framework":
        run_framework(problem, epochs, model=model)
    else:
        run_plain(problem, epochs, model=model)
    return {"which": which, "peak_mib": peak_rss_mib(), "lightning_imported": "pytorch_lightning" in sys.modules}


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM, which starts afresh at exec.

    (``getrusage``'s ru_maxrss does not: a child forked from a big parent reports at
    least the parent's size.)
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_memory(width: int, depth: int, epochs: int = 2, repeats: int = 1, threads: Optional[int] = None) -> dict:
    """Peak RSS (MiB) of the plain loop and of the framework, each run in a fresh child process."""
    out = {}
    extra = ["--threads", str(threads)] if threads else []
    for which in ("plain", "framework") * repeats:
        proc = subprocess.run([sys.executable, __file__, "--child-mem", which, "--sizes", f"{width}x{depth}",
                               "--epochs", str(epochs), *extra], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"memory child ({which}) failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        out.setdefault(which, []).append(res["peak_mib"])
    return {k: min(v) for k, v in out.items()}


# ------------------------------------------------------------------------ start-up
# Runs main.py with one more callback: at the first training batch it prints the time and
# ends the process (nothing after the first step is measured).
_FIRST_STEP_BOOT = r"""
import os, sys, time, runpy
import experiments.util as eu
_orig = eu.BasicManager.make_callbacks
def make_callbacks(self, cfg, run_dir):
    import pytorch_lightning as pl
    class FirstStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sys.stderr.write("\nFIRST_STEP_AT %r\n" % time.time())
            sys.stderr.flush()
            os._exit(0)
    return _orig(self, cfg, run_dir) + [FirstStep()]
eu.BasicManager.make_callbacks = make_callbacks
sys.argv = ["main.py"] + sys.argv[1:]
runpy.run_path("main.py", run_name="__main__")
"""


def _first_step_seconds(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", _FIRST_STEP_BOOT, *args, "--runs_dir", tmp],
                              capture_output=True, text=True, cwd=ROOT, env=env)
        found = re.search(r"FIRST_STEP_AT ([0-9.]+)", proc.stderr)
        if found:
            return float(found.group(1)) - t0
        raise RuntimeError(f"main.py never reached a training step:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def _bare_import_seconds() -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", "import time, torch, pytorch_lightning; print(repr(time.time()))"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return float(out.strip().splitlines()[-1]) - t0


def measure_startup(repeats: int = 3) -> dict:
    runs = {
        "bare import torch, pytorch_lightning": _bare_import_seconds,
        "main.py (compositeSine 2048x6)": lambda: _first_step_seconds(
            ["--wandb", "disabled", "--num_config", "1", "--config_trainer", "max_epochs:1"]),
        "main.py --experiment tinyTest": lambda: _first_step_seconds(
            ["--experiment", "tinyTest", "--wandb", "disabled", "--num_config", "1",
             "--config_trainer", "max_epochs:1"]),
    }
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            samples[name].append(fn())
    return {k: statistics.median(v) for k, v in samples.items()}


# -------------------------------------------------------------------------- main
def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, _, d = item.strip().lower().partition("x")
        out.append((int(w), int(d)))
    return out


def _quiet() -> None:
    """Lightning's info lines and warnings off (after importing it: its import sets the level)."""
    import logging
    import warnings

    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None, help="WxD,... (default 64x3,512x4,2048x6)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs of each variant per size (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: ~--budget seconds a run)")
    p.add_argument("--budget", type=float, default=1.5, help="target seconds per run when --epochs is not set")
    p.add_argument("--threads", default="1,2",
                   help="torch thread counts, each timed in turn (default 1,2; 1 is the most stable on a busy machine)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"framework variants to time, of {', '.join(MODES)} (default: all)")
    p.add_argument("--mem", dest="mem", action="store_true", default=True)
    p.add_argument("--no-mem", dest="mem", action="store_false", help="skip the peak-memory comparison")
    p.add_argument("--startup", dest="startup", action="store_true", default=True)
    p.add_argument("--no-startup", dest="startup", action="store_false", help="skip the start-up measurement")
    p.add_argument("--child-mem", choices=("framework", "plain"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = parse_sizes(args.sizes) if args.sizes else list(DEFAULT_SIZES)
    modes = tuple(m for m in args.modes.split(",") if m)
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    keep_freed_memory()  # as main.py does before training; the plain loop runs with it too
    if args.child_mem != "plain":  # the plain loop's child never imports Lightning
        _quiet()

    if args.child_mem:
        print(json.dumps(child_memory(args.child_mem, *sizes[0], args.epochs or 2)))
        return 0

    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    problems = {}
    for n in threads:
        torch.set_num_threads(n)
        for width, depth in sizes:
            if (width, depth) not in problems:
                problems[width, depth] = problem = build_problem(width, depth)
                check_equivalence(problem, modes=modes)
                chunks = ", ".join(f"{m}: steps_per_chunk {MODES[m]!r} -> {CHUNK_STEPS.get(MODES[m])}" for m in modes)
                print(f"{width}x{depth}: plain loop and {', '.join(modes)} give the same losses and weights "
                      f"(2 epochs); {chunks}", flush=True)
            row = time_size(problems[width, depth], args.repeats, args.epochs, args.budget, modes)
            row["threads"] = n
            rows.append(row)
            med = row["median"]
            print(f"  {row['size']}, {n} thread(s): plain {med['plain'][0] * 1e3:.2f} ms/epoch "
                  f"(cpu {med['plain'][1] * 1e3:.2f})", end="")
            for m in modes:
                print(f"; {m} {med[m][0] * 1e3:.2f} (cpu {med[m][1] * 1e3:.2f}) ratio {row['ratio'][m][0]:.3f}"
                      f" (cpu {row['ratio'][m][1]:.3f})", end="")
            print(f"  [{row['epochs']} epochs x {row['repeats']} runs each]", flush=True)
    print("\ngoal (framework / plain, wall): " + ", ".join(f"<= {g} at {k}" for k, g in GOALS.items()))
    head = " | ".join(f"{m} ms | ratio (cpu ratio)" for m in modes)
    print(f"\nmedian time per epoch (train + validation):\n\n| model | threads | plain ms | {head} | goal |")
    print("|---|---|---|" + "---|---|" * len(modes) + "---|")
    for r in rows:
        med = r["median"]
        cells = " | ".join(f"{med[m][0] * 1e3:.2f} | {r['ratio'][m][0]:.3f} ({r['ratio'][m][1]:.3f})" for m in modes)
        goal = GOALS.get(r["size"])
        verdict = ("-" if goal is None or "framework" not in modes
                   else f"{goal}: {'met' if r['ratio']['framework'][0] <= goal else 'missed'}")
        print(f"| {r['size']} | {r['threads']} | {med['plain'][0] * 1e3:.2f} | {cells} | {verdict} |")
    if args.mem:
        w, d = max(sizes, key=lambda s: s[0] ** 2 * s[1])
        mem = measure_memory(w, d, threads=threads[0])
        print(f"\npeak RSS at {w}x{d} (2 epochs, separate processes): framework {mem['framework']:.0f} MiB, "
              f"plain {mem['plain']:.0f} MiB, ratio {mem['framework'] / mem['plain']:.3f}")
    if args.startup:
        st = measure_startup()
        bare = st["bare import torch, pytorch_lightning"]
        print("\nprocess start to first training step (median of 3):")
        for name, sec in st.items():
            extra = "" if name.startswith("bare") else f"   (+{sec - bare:.2f} s over the bare import)"
            print(f"  {name:40s} {sec:6.2f} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
