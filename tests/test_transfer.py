"""Hyper-parameter transfer (experiments.analysis.transfer, experiments/transfer): drift, best lr, plot, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from experiments.analysis import transfer as tr

TAG = "tr"


def test_drift_exponent_is_the_least_squares_slope():
    assert tr.drift_exponent({32: 0.1, 64: 0.05, 128: 0.025}) == pytest.approx(-1.0, abs=1e-12)
    assert tr.drift_exponent({32: 0.5, 64: 0.5, 256: 0.5}) == 0.0
    # log2 widths 5, 6, 7 (mean 6), log2 lrs -1, -1, -3 (mean -5/3): slope (-1 * 2/3 + 1 * -4/3) / 2 = -1
    assert tr.drift_exponent({32: 0.5, 64: 0.5, 128: 0.125}) == pytest.approx(-1.0, abs=1e-12)
    assert tr.drift_exponent({32: 0.5}) is None and tr.drift_exponent({}) is None


def _synthetic(shift: float) -> list[tr.Result]:
    """loss = (log2 lr - log2 lr*(w))^2 + 1 + seed/10 with lr*(w) = 2^-4 * (w/32)^shift."""
    out = []
    for w in (32, 64, 128):
        centre = -4 + shift * math.log2(w / 32)
        for k in range(-8, 1):
            for seed in (0, 1):
                out.append((float(w), 2.0 ** k, seed, (k - centre) ** 2 + 1 + seed / 10))
    return out


@pytest.mark.parametrize("shift", [0.0, -1.0, -2.0])
def test_best_lr_and_drift_on_synthetic_results(shift):
    best = tr.best_learning_rates(_synthetic(shift))
    assert {w: v[0] for w, v in best.items()} == {32: 2.0 ** -4, 64: 2.0 ** (-4 + shift), 128: 2.0 ** (-4 + 2 * shift)}
    assert all(v[1:] == (pytest.approx(1.05), pytest.approx(math.sqrt(0.005)), 2) for v in best.values())
    assert tr.drift_exponent({w: v[0] for w, v in best.items()}) == pytest.approx(shift, abs=1e-12)


def test_a_diverged_seed_disqualifies_its_learning_rate():
    results = [(32.0, 0.1, 0, 0.5), (32.0, 0.1, 1, math.inf), (32.0, 0.01, 0, 0.9), (32.0, 0.01, 1, 0.7)]
    assert tr.loss_table(results)[32.0][0.1] == (math.inf, None, 2)
    assert tr.best_learning_rates(results) == {32.0: (0.01, pytest.approx(0.8), pytest.approx(math.sqrt(0.02)), 2)}


def _grid(root: Path, values: dict, statuses: dict | None = None) -> None:
    """A synthetic transfer grid: values[(width, lr, seed)] = final validation loss of task 0."""
    base = root / TAG
    base.mkdir(parents=True)
    points = []
    for i, (w, lr, seed) in enumerate(values):
        points.append({"index": i + 1, "id": f"id{i + 1}", "config": {
            "data": {"seed": seed, "f_true": "sine"}, "architecture": {"width": w, "parametrization": "SP", "depth": 3},
            "training": {"learning_rate": lr, "update_rule": "Adam"}, "custom": {"seed": seed}}})
    (base / "manifest.json").write_text(json.dumps({"experiment": "transfer", "points": points}))
    for i, key in enumerate(values):
        d = base / f"config{i + 1}"
        d.mkdir()
        status = (statuses or {}).get(key, "done")
        (d / "summary.json").write_text(json.dumps({"status": status}))
        (d / "metrics.csv").write_text(f"epoch,validation/loss_task_0\n0,9.0\n1,{values[key]}\n")


def test_analyse_writes_plot_table_and_csv(tmp_path):
    values = {(w, lr, s): v + s / 10 for w, table in {16: {0.1: 0.5, 0.01: 0.3, 0.001: 0.6},
                                                          32: {0.1: 0.7, 0.01: 0.4, 0.001: 0.2}}.items()
              for lr, v in table.items() for s in (0, 1)}
    values[(32, 0.0001, 0)] = 0.01  # failed: left out
    _grid(tmp_path, values, {(32, 0.0001, 0): "failed"})
    assert len(tr.read_results(tmp_path, TAG)) == 12
    out = tr.analyse(tmp_path, TAG)
    assert {w: v[0] for w, v in out["best"].items()} == {16.0: 0.01, 32.0: 0.001}
    assert out["drift"] == pytest.approx(-math.log(10) / math.log(2), abs=1e-12)
    assert sorted(f.name for f in out["files"]) == ["transfer.csv", "transfer.pdf", "transfer.png"]
    with (tmp_path / TAG / "transfer.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["width"], float(r["best_lr"]), float(r["mean_loss"]), r["n"]) for r in rows] == [
        ("16", 0.01, pytest.approx(0.35), "2"), ("32", 0.001, pytest.approx(0.25), "2")]
    assert "SP, Adam, sine, depth 3" in out["text"] and "drift exponent" in out["text"] and "-3.322" in out["text"]


def test_cli_errors(tmp_path, capsys):
    assert tr.main([TAG, "--runs_dir", str(tmp_path)]) == 1
    assert "no grid under" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown metric 'last'; allowed: final, best"):
        tr.read_results(tmp_path, TAG, metric="last")
    with pytest.raises(SystemExit):
        tr.main([])
    with pytest.raises(ValueError, match="unknown transfer override 'widht'"):
        tr.run_grid("x", tmp_path, widht=[8])


def test_the_experiment_is_registered_with_lists_for_lr_width_seed():
    from experiments import load_experiment

    manager_cls, configs = load_experiment("transfer")
    assert manager_cls.experiment == "transfer"
    assert all(isinstance(v, list) and len(v) > 1 for v in (
        configs.configs_training["learning_rate"], configs.configs_architecture["width"], configs.configs_custom["seed"]))
    assert configs.configs_data["seed"] == configs.configs_custom["seed"]


@pytest.mark.slow
def test_end_to_end_tiny_grid_runs_and_produces_plot_and_table(tmp_path, capsys):
    argv = ["--run", "--tag", TAG, "--runs_dir", str(tmp_path), "--parametrization", "SP", "--update_rule", "Adam",
            "--widths", "8,16", "--learning_rates", "0.01,0.1", "--seeds", "0,1", "--epochs", "1"]
    assert tr.main(argv) == 0
    out = capsys.readouterr().out
    assert "SP, Adam, sine, depth 3 (tr), 8 finished points" in out and "drift exponent" in out
    assert (tmp_path / TAG / "transfer.png").stat().st_size > 0
    with (tmp_path / TAG / "transfer.csv").open(newline="") as fh:
        assert [r["width"] for r in csv.DictReader(fh)] == ["8", "16"]
    # resumable like any grid: a rerun skips the finished points
    assert tr.main(argv) == 0
    assert capsys.readouterr().out.count("already done, skipped") == 8


def test_compare_draws_grids_side_by_side(tmp_path, capsys):
    _grid(tmp_path, {(16, lr, 0): v for lr, v in ((0.1, 0.5), (0.01, 0.3))})
    out = tmp_path / "docs" / "cmp"
    assert tr.main(["--compare", TAG, TAG, "--out", str(out), "--runs_dir", str(tmp_path)]) == 0
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".pdf").exists()
    assert capsys.readouterr().out.count("drift exponent") == 2
    with pytest.raises(SystemExit):
        tr.main(["--compare", TAG])  # needs --out


def test_a_best_lr_at_the_grid_edge_is_flagged():
    results = [(16.0, 0.1, 0, 0.5), (16.0, 0.01, 0, 0.3), (16.0, 0.001, 0, 0.6),
               (32.0, 0.1, 0, 0.2), (32.0, 0.01, 0, 0.4), (32.0, 0.001, 0, 0.6)]
    assert tr.at_edge(results) == {32.0}
    text = tr.format_best_table(tr.best_learning_rates(results), 1.0, "final", tr.at_edge(results))
    assert "     32         0.1*" in text and "     16        0.01 " in text
    assert text.endswith("drift is unreliable; widen --learning_rates")
