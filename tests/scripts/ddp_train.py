"""The DDP scenarios of tests/test_ddp.py, and the script that trains them on 2 CPU processes.

``python tests/scripts/ddp_train.py OUT_DIR CASE [CASE ...]`` trains every CASE of
``CASES`` with ``strategy='ddp'``, ``devices=2`` (gloo, CPU) one after the other in one
process group (Lightning re-runs this script for rank 1) and writes, per case and rank,
``OUT_DIR/<case>_rank<r>.pt``: ``{'init', 'final'}`` (state dicts), ``'rows'`` (per
optimizer step ``{task: [row ids]}`` this rank trained on, also inside chunks) and
``'global_step'``.

``fit_case(case, **trainer_kw)`` builds and trains one case; tests/test_ddp.py calls it
in-process with ``devices=1`` for the 1-process reference, so both runs share every line
of setup (seed, model init, data, batching seed).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from core_code.lightning_multitask import LightningMultitask  # noqa: E402
from core_code.util.lightning import DataModule  # noqa: E402
from tests.helpers import FakeData, StepRowRecorder, tiny_model  # noqa: E402

# Inputs x = row * 2**-5 (in [0, 1.5)): exact row ids, no saturated Tanh units.
X_SCALE = 2**-5
# n: rows per task; batch_size: the GLOBAL batch (data_deterministic: per-task sizes
# proportional to the data, see deterministic_task_batch_sizes); per_task: task-specific
# learning rates, i.e. one optimizer per task (gradients all-reduced by hand);
# strategy: the batching strategy (default data_deterministic); steps_per_chunk:
# optimizer steps per Lightning step (default 1).
CASES = {
    # 4 + 8 rows per global batch: every rank holds 2 + 4 (equal counts per task), and
    # 4 batches an epoch cover every row exactly once.
    "equal_single": dict(n={0: 16, 1: 32}, batch_size=12, per_task=False),
    "equal_per_task": dict(n={0: 16, 1: 32}, batch_size=12, per_task=True),
    # 3 + 6 rows per global batch: task 0 splits 2 / 1 between the ranks.
    "unequal_single": dict(n={0: 15, 1: 30}, batch_size=9, per_task=False),
    "unequal_per_task": dict(n={0: 15, 1: 30}, batch_size=9, per_task=True),
    # 1 + 10 rows per global batch: rank 1 never sees task 0.
    "missing_task_single": dict(n={0: 4, 1: 40}, batch_size=11, per_task=False),
    # One shuffled stream, 9 rows a global batch (5 an epoch): task 0 has 6 of 45 rows, so
    # its rows split unevenly, often miss rank 1 and some global batches have none.
    "stochastic_per_task": dict(n={0: 6, 1: 39}, batch_size=9, per_task=True, strategy="data_stochastic"),
    # Chunks of 2 optimizer steps (the last chunk of an epoch 1): the stochastic batches
    # concatenated, one optimizer.
    "stochastic_chunked_single": dict(n={0: 6, 1: 39}, batch_size=9, per_task=False,
                                      strategy="data_stochastic", steps_per_chunk=2),
    # Chunks gathered at once by the deterministic loader; rank 1 never sees task 0.
    "chunked_missing_per_task": dict(n={0: 4, 1: 40}, batch_size=11, per_task=True, steps_per_chunk=2),
    # Multi-task methods under DDP: gradient surgery and a learned weighting, on uneven splits.
    "pcgrad_unequal_single": dict(n={0: 15, 1: 30}, batch_size=9, per_task=False, mtl_method="pcgrad"),
    "pcgrad_unequal_per_task": dict(n={0: 15, 1: 30}, batch_size=9, per_task=True, mtl_method="pcgrad"),
    "uw_unequal_single": dict(n={0: 15, 1: 30}, batch_size=9, per_task=False, mtl_method="uw"),
    "mgda_missing_single": dict(n={0: 4, 1: 40}, batch_size=11, per_task=False, mtl_method="mgda"),
}
MAX_EPOCHS = 2


def case_data(case: str) -> FakeData:
    return FakeData(CASES[case]["n"], x_scale=X_SCALE)


def fit_case(case: str, **trainer_kw):
    """Train ``case`` from seed 0: ``(model, trainer, recorder, init_state)``."""
    spec = CASES[case]
    pl.seed_everything(0, verbose=False)
    model = tiny_model()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lr = {"task_0": 0.05, "task_1": 0.1} if spec["per_task"] else 0.05
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=lr, regularization_alpha=0.01,
                            mtl_method=spec.get("mtl_method", "sum"))
    data = case_data(case)
    dm = DataModule(data, batch_size=spec["batch_size"], shuffle=True,
                    batching_strategy=spec.get("strategy", "data_deterministic"),
                    steps_per_chunk=spec.get("steps_per_chunk", 1))
    recorder = StepRowRecorder(data)
    trainer = lm.fit(dm, callbacks=[recorder], max_epochs=MAX_EPOCHS, accelerator="cpu",
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     num_sanity_val_steps=0, **trainer_kw)
    return model, trainer, recorder, init


def main(out_dir: str, cases: list[str]) -> None:
    for case in cases:
        model, trainer, recorder, init = fit_case(case, devices=2, strategy="ddp")
        final = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"init": init, "final": final, "rows": recorder.steps, "global_step": trainer.global_step},
                   Path(out_dir) / f"{case}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
