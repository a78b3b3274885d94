"""Lightning DDP on 2 CPU processes (gloo): both ranks end with identical weights."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "per_task"])
def test_ddp_two_cpu_ranks_end_identical(tmp_path, mode):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), mode], capture_output=True, text=True,
                          timeout=240, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
    # each rank trains on its half of every global batch, so as many steps as 1 process:
    # max(ceil(16/4), ceil(32/8)) = 4 batches per epoch, 2 epochs, x optimizers
    steps = str(4 * 2 * (2 if mode == "per_task" else 1))
    assert (tmp_path / "steps0.txt").read_text() == (tmp_path / "steps1.txt").read_text() == steps
