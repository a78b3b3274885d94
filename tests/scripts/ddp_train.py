"""Train a tiny model with strategy='ddp' on 2 CPU processes; each rank saves its weights.

Run by tests/test_ddp.py as ``python tests/scripts/ddp_train.py OUT_DIR MODE``; Lightning
re-runs this script for rank 1. MODE: 'single' (one optimizer) or 'per_task'.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from core_code.lightning_multitask import LightningMultitask  # noqa: E402
from core_code.util.lightning import DataModule  # noqa: E402
from tests.test_training import FakeData  # noqa: E402


def main(out_dir: str, mode: str) -> None:
    pl.seed_everything(0, verbose=False)
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    lr = {"task_0": 0.01, "task_1": 0.02} if mode == "per_task" else 0.01
    lm = LightningMultitask(model, update_rule="SGD", learning_rate=lr, regularization_alpha=0.01)
    dm = DataModule(FakeData({0: 16, 1: 32}), batch_size=12)
    trainer = lm.fit(dm, max_epochs=2, accelerator="cpu", devices=2, strategy="ddp",
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     num_sanity_val_steps=0)
    rank = trainer.global_rank
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, Path(out_dir) / f"rank{rank}.pt")
    (Path(out_dir) / f"steps{rank}.txt").write_text(str(trainer.global_step))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
