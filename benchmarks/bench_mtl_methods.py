"""Per-step cost of every ``mtl_method`` (and of the diagnostics) against ``sum``.

Builds a shared abcMLP (muP, d_in 1, d_out 7) with the two compositeSine tasks (task_0
output 0, task_1 outputs 1..6, dimred MSE), one batch of 64 rows (21 + 43), SGD, and
times ``LightningMultitask.training_step`` called directly (no Trainer: the method's own
cost, without Lightning's loop), all methods interleaved, median over rounds.

    .venv/bin/python benchmarks/bench_mtl_methods.py                  # 64x3 and 512x4
    .venv/bin/python benchmarks/bench_mtl_methods.py --sizes 2048x6 --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_code.create_model import create_model  # noqa: E402
from core_code.lightning_multitask import LightningMultitask  # noqa: E402

METHODS: list[tuple[str, dict]] = [
    ("sum", {}),
    ("sum + diagnostics every step", {"diagnostics_every_n_steps": 1}),
    ("sum + diagnostics every 10", {"diagnostics_every_n_steps": 10}),
    ("mean", {"mtl_method": "mean"}),
    ("fixed", {"mtl_method": ("fixed", {"task_weights": {"task_0": 1.0, "task_1": 2.0}})}),
    ("uw", {"mtl_method": "uw"}),
    ("dwa", {"mtl_method": "dwa"}),
    ("rlw", {"mtl_method": "rlw"}),
    ("gradnorm", {"mtl_method": "gradnorm"}),
    ("pcgrad", {"mtl_method": "pcgrad"}),
    ("mgda", {"mtl_method": "mgda"}),
    ("cagrad", {"mtl_method": "cagrad"}),
    ("imtl_g", {"mtl_method": "imtl_g"}),
]


def make(width: int, depth: int, extra: dict) -> LightningMultitask:
    torch.manual_seed(0)
    model = create_model(architecture_key="abcMLP", width=width, depth=depth, d_in=1, d_out=7,
                         parametrization="muP")
    cfg = {"update_rule": "SGD", "learning_rate": 1e-3, "regularization_alpha": 0,
           "criterion": {"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [1, 2, 3, 4, 5, 6])}}
    return LightningMultitask(model, **cfg, **extra)


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, generator=g) * 4 - 2
    return {"x": x, "y": torch.randn(64, 7, generator=g), "task_activity": torch.tensor([0] * 21 + [1] * 43)}


def bench(width: int, depth: int, steps: int, rounds: int) -> list[tuple[str, float]]:
    b = batch()
    modules = {name: make(width, depth, extra) for name, extra in METHODS}
    for lm in modules.values():  # warm-up
        for _ in range(3):
            lm.training_step(b, 0)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds):
        for name, lm in modules.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                lm.training_step(b, 0)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    return [(name, statistics.median(v)) for name, v in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64x3,512x4", help="WIDTHxDEPTH,... (default 64x3,512x4)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for size in args.sizes.split(","):
        w, d = (int(v) for v in size.lower().split("x"))
        rows = bench(w, d, args.steps, args.rounds)
        base = rows[0][1]
        print(f"\nabcMLP {w}x{d}, batch 64, 2 tasks, {torch.get_num_threads()} threads "
              f"(median of {args.rounds} rounds x {args.steps} steps)")
        print(f"| {'method':<30} | {'ms/step':>8} | {'x sum':>6} |")
        print(f"|{'-' * 32}|{'-' * 10}:|{'-' * 7}:|")
        for name, ms in rows:
            print(f"| {name:<30} | {ms:8.3f} | {ms / base:6.2f} |")


if __name__ == "__main__":
    main()
