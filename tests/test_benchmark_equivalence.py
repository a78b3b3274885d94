"""The benchmark compares equal work: at a tiny size, the framework (both modes) and the
plain PyTorch loop of ``benchmarks/bench_training.py`` give the same per-epoch losses
and the same weights for the same seed. No timing here (see the benchmark itself)."""

import pytest
import torch

import benchmarks.bench_training as bench


@pytest.fixture(scope="module")
def problem():
    return bench.build_problem(16, 3, n_train={"task_0": 64, "task_1": 128}, n_val=256)


@pytest.mark.parametrize("mode", list(bench.MODES))
def test_framework_and_plain_loop_give_the_same_losses(problem, mode):
    _, plain, plain_model = bench.run_plain(problem, 3)
    _, framework, framework_model = bench.run_framework(problem, 3, steps_per_chunk=bench.MODES[mode])
    assert len(plain) == len(framework) == 3
    # the default ('auto') chunks this problem's 4-batch epoch; the 1-step mode does not
    assert bench.CHUNK_STEPS[bench.MODES[mode]] == (4 if mode == "framework" else 1)
    for (p_train, p_val), (f_train, f_val) in zip(plain, framework):
        assert set(p_train) == set(f_train) == set(p_val) == set(f_val) == {0, 1}
        for t in (0, 1):
            assert f_train[t] == pytest.approx(p_train[t], rel=1e-5)
            assert f_val[t] == pytest.approx(p_val[t], rel=1e-5)
    assert plain[0][0] != plain[-1][0]  # it trained
    for pf, pp in zip(framework_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(pf, pp, rtol=1e-5, atol=1e-6)


def test_the_plain_loop_sees_the_frameworks_batches(problem):
    from core_code.util.lightning import DataModule

    dm = DataModule(problem.data, **problem.training)
    dm.seed = problem.seed
    dm.setup()
    loader = dm.train_dataloader()
    plain = bench.make_plain(problem)
    for epoch in range(2):
        loader.set_epoch(epoch)
        index = plain.epoch_index(epoch)
        batches = list(loader)
        assert len(batches) == len(index)
        for batch, rows in zip(batches, index):
            torch.testing.assert_close(batch["x"], plain.x[rows], rtol=0, atol=0)
            torch.testing.assert_close(batch["y"], plain.y[rows], rtol=0, atol=0)


def test_equivalence_check_catches_different_work(problem, monkeypatch):
    make_plain = bench.make_plain

    def twice_the_learning_rate(problem, model=None):
        loop = make_plain(problem, model)
        for group in loop.opt.param_groups:
            group["lr"] *= 2
        return loop

    monkeypatch.setattr(bench, "make_plain", twice_the_learning_rate)
    with pytest.raises(AssertionError, match="differ"):
        bench.check_equivalence(problem, epochs=2, modes=("framework",))
