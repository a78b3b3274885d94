"""Grid summary (experiments.analysis.collect) on synthetic run folders: summary.csv, table, plots, CLI."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.analysis import collect as co
from experiments.analysis import comparison_plots as cp

TAG = "grid"
# summary.json fields of a point that is running right now (this process, heartbeat now)
ALIVE = {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_unix": time.time() + 3600}
ROOT = Path(__file__).resolve().parents[1]


def _point_config(width, lr, **arch):
    return {
        "experiment": "tinyTest",
        "data": {"d_in": 1, "d_out": 7, "n_train": {"task_0": 32, "task_1": 64}, "noise_scale": 0.05},
        "architecture": {"architecture_key": "abcMLP", "width": width, "depth": 3, "d_in": 1, "d_out": 7, **arch},
        "training": {"learning_rate": lr, "criterion": {"task_0": ["dimred_MSELoss", [0]],
                                                         "task_1": ["dimred_MSELoss", [1, 2]]}},
        "custom": {"seed": 1},
    }


def _write_metrics(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch", "train/loss_task_0", "train/loss_task_1", "validation/loss_task_0", "validation/loss_task_1"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for epoch, (v0, v1) in enumerate(rows):
            w.writerow([epoch, 1.0, 1.0, v0, v1])


def make_grid(root: Path, points, tag=TAG):
    """points: list of (config, status or None, metrics rows or None, summary extras)."""
    base = root / tag
    base.mkdir(parents=True)
    manifest = {"experiment": "tinyTest", "tag": tag, "grid_size": len(points), "created": "now",
                "points": [{"index": i + 1, "id": f"id{i + 1}", "config": cfg} for i, (cfg, *_) in enumerate(points)]}
    (base / "manifest.json").write_text(json.dumps(manifest))
    for i, (_, status, metrics, extra) in enumerate(points):
        d = base / f"config{i + 1}"
        if status is not None:
            d.mkdir()
            (d / "summary.json").write_text(json.dumps({"status": status, "id": f"id{i + 1}", **extra}))
        if metrics is not None:
            _write_metrics(d / "metrics.csv", metrics)
    return base


@pytest.fixture
def grid(tmp_path):
    """2 widths x 2 learning rates: two done, one failed after one epoch, one pending."""
    make_grid(tmp_path, [
        (_point_config(16, 0.01), "done", [(1.0, 2.0), (0.5, 1.0), (0.75, 0.5)],
         {"epochs": 3, "final": {"validation/loss_task_0": 0.75, "validation/loss_task_1": 0.5}}),
        (_point_config(16, 0.1), "done", [(0.5, 0.25), (0.25, 0.125)], {"epochs": 2}),
        (_point_config(32, 0.01), "failed", [(2.0, 4.0)], {"error": "RuntimeError: boom"}),
        (_point_config(32, 0.1), None, None, {}),
    ])
    return tmp_path


HEADER = ["index", "id", "status", "width", "learning_rate", "epochs",
          "final_val_loss_task_0", "best_val_loss_task_0", "final_val_loss_task_1", "best_val_loss_task_1"]

TABLE = """\
index  id   status   width  learning_rate  epochs  final_val_loss_task_0  best_val_loss_task_0  final_val_loss_task_1  best_val_loss_task_1
-----  ---  -------  -----  -------------  ------  ---------------------  --------------------  ---------------------  --------------------
    1  id1  done        16           0.01       3                   0.75                   0.5                    0.5                   0.5
    2  id2  done        16            0.1       2                   0.25                  0.25                  0.125                 0.125
    3  id3  failed      32           0.01       1                      2                     2                      4                     4
    4  id4  pending     32            0.1       -                      -                     -                      -                     -
4 points: 2 done, 1 failed, 1 pending"""


def test_summary_csv_has_one_row_per_point_with_exact_columns(grid):
    rows = co.collect(grid, TAG)
    path = co.write_summary_csv(rows, grid / TAG / "summary.csv")
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == HEADER
    assert table[1:] == [
        ["1", "id1", "done", "16", "0.01", "3", "0.75", "0.5", "0.5", "0.5"],
        ["2", "id2", "done", "16", "0.1", "2", "0.25", "0.25", "0.125", "0.125"],
        ["3", "id3", "failed", "32", "0.01", "1", "2.0", "2.0", "4.0", "4.0"],
        ["4", "id4", "pending", "32", "0.1", "", "", "", "", ""],
    ]
    assert co.parameter_columns(rows) == ["width", "learning_rate"]
    assert co.task_ids(rows) == [0, 1]


def test_table_is_aligned_with_a_status_count(grid):
    assert co.format_table(co.collect(grid, TAG)) == TABLE


def test_comparison_plots_exist_for_every_task_and_numeric_parameter(grid):
    rows = co.collect(grid, TAG)
    files = cp.plot_comparisons(rows, grid, TAG)
    names = sorted(f.name for f in files)
    expected = sorted(f"summary_task{t}_{kind}.{ext}" for t in (0, 1)
                      for kind in ("final_vs_width", "final_vs_learning_rate", "curves") for ext in ("png", "pdf"))
    assert names == expected
    for f in files:
        assert f.parent == grid / TAG and f.stat().st_size > 1000


def test_log_axis_only_where_values_span_a_decade():
    assert cp._spans_decade([0.01, 0.1])
    assert cp._spans_decade([64, 128, 256, 512, 1024])
    assert not cp._spans_decade([8, 16, 32])
    assert not cp._spans_decade([-1.0, 1.0])


def test_cli_writes_summary_and_prints_the_table(grid, capsys):
    assert co.main([TAG, "--runs_dir", str(grid)]) == 0
    out = capsys.readouterr().out
    assert TABLE in out
    assert (grid / TAG / "summary.csv").is_file()
    assert (grid / TAG / "summary_task1_curves.png").is_file()


def test_cli_without_a_manifest_says_so(tmp_path, capsys):
    assert co.main(["nope", "--runs_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err and "nope" in err


def test_partial_grid_running_and_diverged_points(tmp_path):
    """A running point shows its epochs so far; a diverged one its nan final and finite best."""
    make_grid(tmp_path, [
        (_point_config(16, 0.01), "running", [(1.0, 1.0), (0.5, 0.5)], ALIVE),
        (_point_config(16, 10.0), "diverged", [(1.0, 1.0), (math.nan, 0.25)], {"epochs": 2}),
    ])
    rows = co.collect(tmp_path, TAG)
    assert [r["status"] for r in rows] == ["running", "diverged"]
    assert [r["epochs"] for r in rows] == [2, 2]
    assert co.parameter_columns(rows) == ["learning_rate"]  # width no longer varies
    assert math.isnan(rows[1]["final_val_loss_task_0"]) and rows[1]["best_val_loss_task_0"] == 1.0
    text = co.format_table(rows)
    assert "nan" in text and "1 diverged, 1 running" in text
    assert cp.plot_comparisons(rows, tmp_path, TAG)  # nan points are left out, not an error


def test_varying_values_shared_keys_lists_and_sections(tmp_path):
    """d_in in data and architecture is one column; a list value is shown as JSON, and not plotted."""
    points = []
    for i, la in enumerate(([-0.5, 0, 0.5], [0, 0.5, 0.5])):
        cfg = _point_config(16, 0.01, list_a=la)
        cfg["data"]["d_in"] = cfg["architecture"]["d_in"] = 1 + i
        points.append((cfg, "done", [(0.5, 0.5)], {"epochs": 1}))
    make_grid(tmp_path, points)
    rows = co.collect(tmp_path, TAG)
    assert co.parameter_columns(rows) == ["d_in", "list_a"]
    co.write_summary_csv(rows, tmp_path / "s.csv")
    with (tmp_path / "s.csv").open(newline="") as fh:
        assert list(csv.reader(fh))[1][3:5] == ["1", "[-0.5,0,0.5]"]
    names = {f.name for f in cp.plot_comparisons(rows, tmp_path, TAG)}
    assert "summary_task0_final_vs_d_in.png" in names
    assert not any("list_a" in n for n in names)


def test_a_key_that_differs_between_sections_gets_section_columns():
    points = [{"config": {"data": {"seed": s}, "custom": {"seed": 1}}} for s in (1, 2)]
    assert co.varying_parameters(points) == {"data.seed": ("data", "seed")}


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    """A run killed mid-write leaves half a line: the point shows the epochs before it."""
    make_grid(tmp_path, [
        (_point_config(16, 0.01), "running", [(1.0, 1.0), (0.5, 0.25)], {}),
        (_point_config(16, 0.1), "done", [(0.5, 0.5)], {"epochs": 1}),
    ])
    with (tmp_path / TAG / "config1" / "metrics.csv").open("a") as fh:
        fh.write("2,1.0,1.0,0.2,1e")  # cut inside '1e-05'
    rows = co.collect(tmp_path, TAG)
    assert rows[0]["epochs"] == 2
    assert (rows[0]["final_val_loss_task_0"], rows[0]["final_val_loss_task_1"]) == (0.5, 0.25)
    assert (rows[0]["best_val_loss_task_0"], rows[0]["best_val_loss_task_1"]) == (0.5, 0.25)


def test_module_runs_as_a_script(grid):
    out = subprocess.run([sys.executable, "-m", "experiments.analysis.collect", TAG, "--runs_dir", str(grid),
                          "--no_plots"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert TABLE in out.stdout and f"wrote {grid / TAG / 'summary.csv'}" in out.stdout
    assert not list((grid / TAG).glob("summary_task*"))
    assert importlib.util.find_spec("experiments.collect") is None  # moved, no shim left behind


# ----------------------------------------------- in-domain, baselines, seeds as repetitions
def _write_rows(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _seed_grid(root: Path):
    """lr {0.01, 0.1} x seed {1, 2, 3} (data and custom seed tied); lr 0.1 seed 3 failed."""
    finals = {(0.01, 1): 0.5, (0.01, 2): 0.7, (0.01, 3): 0.6, (0.1, 1): 0.2, (0.1, 2): 0.4, (0.1, 3): 9.0}
    points = []
    for lr in (0.01, 0.1):
        for seed in (1, 2, 3):
            cfg = _point_config(16, lr)
            cfg["data"]["seed"] = cfg["custom"]["seed"] = seed
            status = "failed" if (lr, seed) == (0.1, 3) else "done"
            points.append((cfg, status, None, {"epochs": 2}))
    base = make_grid(root, points)
    for i, (lr, seed) in enumerate(finals):
        v = finals[(lr, seed)]
        _write_rows(base / f"config{i + 1}" / "metrics.csv", [
            {"epoch": 0, "validation/loss_task_0": 2 * v, "validation/loss_in_domain_task_0": v},
            {"epoch": 1, "validation/loss_task_0": v, "validation/loss_in_domain_task_0": v / 2}])
        (base / f"config{i + 1}" / "baselines.json").write_text(json.dumps(
            {"baseline/validation_loss_task_0": 2.0, "baseline/validation_loss_in_domain_task_0": 0.5 + seed}))
    return base


def test_in_domain_baseline_and_ratio_columns(tmp_path):
    _seed_grid(tmp_path)
    rows = co.collect(tmp_path, TAG)
    assert list(rows[0])[3:] == [
        "seed", "learning_rate", "epochs", "final_val_loss_task_0", "best_val_loss_task_0",
        "final_val_loss_in_domain_task_0", "best_val_loss_in_domain_task_0", "baseline_val_loss_task_0",
        "baseline_val_loss_in_domain_task_0", "final_over_baseline_task_0", "final_over_baseline_in_domain_task_0",
        "final_val_loss_task_1", "best_val_loss_task_1"]  # task 1 (named by the criterion) has no metrics
    r = rows[1]  # lr 0.01, seed 2
    assert (r["final_val_loss_task_0"], r["best_val_loss_task_0"]) == (0.7, 0.7)
    assert (r["final_val_loss_in_domain_task_0"], r["best_val_loss_in_domain_task_0"]) == (0.35, 0.35)
    assert (r["baseline_val_loss_task_0"], r["baseline_val_loss_in_domain_task_0"]) == (2.0, 2.5)
    assert r["final_over_baseline_task_0"] == 0.7 / 2.0
    assert r["final_over_baseline_in_domain_task_0"] == 0.35 / 2.5


def test_baselines_from_summary_when_no_file(tmp_path):
    make_grid(tmp_path, [(_point_config(16, lr), "done", [(0.5, 0.25)],
                          {"final": {"baseline/validation_loss_task_0": 1.0}, "baselines": baselines})
                         for lr, baselines in ((0.01, {"baseline/validation_loss_task_1": 0.5}), (0.1, None))])
    rows = co.collect(tmp_path, TAG)
    # the 'baselines' entry wins over 'final'; without it 'final' is read
    assert [(r.get("baseline_val_loss_task_0"), r.get("baseline_val_loss_task_1")) for r in rows] == [
        (None, 0.5), (1.0, None)]
    assert [r["final_over_baseline_task_1"] for r in rows] == [0.5, None]


def test_seeds_are_aggregated_not_an_axis(tmp_path):
    _seed_grid(tmp_path)
    rows = co.collect(tmp_path, TAG)
    assert co.seed_columns(rows) == ["seed"]
    agg = co.aggregate_seeds(rows)
    assert [(a["learning_rate"], a["points"], a["n"]) for a in agg] == [(0.01, 3, 3), (0.1, 3, 2)]
    assert agg[0]["final_val_loss_task_0_mean"] == pytest.approx(0.6, abs=1e-15)
    assert agg[0]["final_val_loss_task_0_std"] == pytest.approx(0.1, abs=1e-15)  # sample std, ddof 1
    assert agg[1]["final_val_loss_task_0_mean"] == pytest.approx(0.3, abs=1e-15)  # the failed seed left out
    assert agg[1]["final_val_loss_task_0_std"] == pytest.approx(math.sqrt(0.02), abs=1e-15)
    assert agg[1]["baseline_val_loss_in_domain_task_0_mean"] == 2.0  # seeds 1, 2: 1.5, 2.5
    assert "seed" not in agg[0]
    names = {f.name for f in cp.plot_comparisons(rows, tmp_path, TAG)}
    assert names == {"summary_task0_final_vs_learning_rate.png", "summary_task0_final_vs_learning_rate.pdf",
                     "summary_task0_curves.png", "summary_task0_curves.pdf"}  # never a loss-vs-seed plot


def test_mean_std():
    assert co.mean_std([]) == (None, None)
    assert co.mean_std([2.0]) == (2.0, None)
    assert co.mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))


def test_cli_prints_the_seed_table(tmp_path, capsys):
    _seed_grid(tmp_path)
    assert co.main([TAG, "--runs_dir", str(tmp_path), "--no_plots"]) == 0
    out = capsys.readouterr().out
    assert "over seeds (seed): mean ± sample std (ddof 1) over the n done points" in out
    assert "0.6 ± 0.1" in out and "0.3 ± 0.14" in out
    with (tmp_path / TAG / "summary_seeds.csv").open(newline="") as fh:
        header, *body = list(csv.reader(fh))
    assert header[:3] == ["learning_rate", "points", "n"] and len(body) == 2


# ------------------------------------------------ paper figures, test losses, several TAGs
WIDTHS = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]


def _width_grid(root: Path, tag=TAG, widths=WIDTHS, scale=1.0, diagnostics=False):
    """One point per width, done, with train/validation curves (and diagnostics) and a test loss."""
    points = []
    for w in widths:
        cfg = _point_config(w, 0.01)
        points.append((cfg, "done", None, {"epochs": 2, "final": {"test/loss_task_0": scale / w,
                                                                 "test/loss_in_domain_task_0": scale / w / 2}}))
    base = make_grid(root, points, tag=tag)
    for i, w in enumerate(widths):
        rows = []
        for e in range(2):
            r = {"epoch": e, "train/loss_task_0": scale * (2 - e) / w, "validation/loss_task_0": scale * (3 - e) / w}
            if diagnostics:
                r.update({"diagnostics/cos_task_0_task_1": 0.5 - e, "diagnostics/grad_norm_task_0": 1.0 + e,
                          "diagnostics/grad_norm_task_1": 2.0 + e, "diagnostics/grad_norm_task_1_layer_0": 9.0})
            rows.append(r)
        _write_rows(base / f"config{i + 1}" / "metrics.csv", rows)
    return base


def _figures(rows, root, tags):
    return dict(cp.comparison_figures(rows, root, tags))


def test_test_losses_in_summary_csv(tmp_path):
    _width_grid(tmp_path, widths=[16, 32])
    rows = co.collect(tmp_path, TAG)
    assert [(r["test_loss_task_0"], r["test_loss_in_domain_task_0"]) for r in rows] == [
        (1 / 16, 1 / 32), (1 / 32, 1 / 64)]
    co.write_summary_csv(rows, tmp_path / "s.csv")
    header = (tmp_path / "s.csv").read_text().splitlines()[0].split(",")
    i = header.index("test_loss_task_0")
    assert header[i:i + 3] == ["test_loss_task_0", "test_loss_in_domain_task_0", "final_val_loss_task_1"]
    assert "test_loss_task_1" not in header  # task 1 (named by the criterion) was never tested


def test_log_axis_ticks_are_the_grid_values(tmp_path):
    _width_grid(tmp_path, widths=[16, 32, 64, 128, 256, 512])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figures(co.collect(tmp_path, TAG), tmp_path, TAG)["summary_task0_final_vs_width"]
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [16, 32, 64, 128, 256, 512]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64", "128", "256", "512"]
    assert [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()] == []  # no "3x10^1"
    assert ax.xaxis.get_minorticklocs().size == 0
    # more values than MAX_TICKS: every k-th one, still grid values
    assert cp.grid_ticks(ax.xaxis, list(range(1, 26))) == list(range(1, 26, 3))


def test_every_title_names_the_tag_and_legends_sit_outside(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _width_grid(tmp_path, diagnostics=True)
    figs = _figures(co.collect(tmp_path, TAG), tmp_path, TAG)
    assert sorted(figs) == ["summary_diagnostics", "summary_task0_curves", "summary_task0_final_vs_width"]
    for name, fig in figs.items():
        titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
        assert any(t.startswith(f"{TAG}: ") for t in titles), (name, titles)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for legend in fig.legends:
            for ax in fig.axes:
                assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        assert all(ax.get_legend() is None for ax in fig.axes)


def test_curves_show_training_and_validation(tmp_path):
    _width_grid(tmp_path, widths=[16, 32])
    fig = _figures(co.collect(tmp_path, TAG), tmp_path, TAG)["summary_task0_curves"]
    train_ax, val_ax = fig.axes
    assert (train_ax.get_title(), val_ax.get_title()) == ("training loss", "validation loss")
    assert [list(line.get_ydata()) for line in train_ax.get_lines()] == [[2 / 16, 1 / 16], [2 / 32, 1 / 32]]
    assert [list(line.get_ydata()) for line in val_ax.get_lines()] == [[3 / 16, 2 / 16], [3 / 32, 2 / 32]]
    assert list(val_ax.get_lines()[0].get_xdata()) == [1, 2]  # epochs trained, as summary.json's 'epochs'
    assert train_ax.get_lines()[0].get_color() == val_ax.get_lines()[0].get_color()


def test_twelve_points_get_twelve_distinct_colours(tmp_path):
    colors = cp.line_colors(12)
    assert len(set(colors)) == 12
    assert len(set(cp.line_colors(10))) == 10
    _width_grid(tmp_path)
    fig = _figures(co.collect(tmp_path, TAG), tmp_path, TAG)["summary_task0_curves"]
    drawn = [line.get_color() for line in fig.axes[1].get_lines()]
    assert drawn == colors  # one per width, in width order (viridis, not a repeating 10-colour cycle)


def test_diagnostics_plot(tmp_path):
    _width_grid(tmp_path, widths=[16, 32], diagnostics=True)
    fig = _figures(co.collect(tmp_path, TAG), tmp_path, TAG)["summary_diagnostics"]
    cos_ax, norm_ax = fig.axes
    assert [list(line.get_ydata()) for line in cos_ax.get_lines() if list(line.get_xdata()) == [1, 2]] == [
        [0.5, -0.5], [0.5, -0.5]]
    assert len([line for line in norm_ax.get_lines()]) == 4  # 2 points x 2 tasks (the per-layer norm left out)
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"cosine, tasks 0 and 1", "norm, task 0", "norm, task 1", "width=16", "width=32"} <= labels
    assert cp.diagnostic_columns([[{"epoch": 0, "diagnostics/grad_norm_task_10": 1.0,
                                     "diagnostics/grad_norm_task_2": 1.0}]])[1] == [
        "diagnostics/grad_norm_task_2", "diagnostics/grad_norm_task_10"]


def test_several_tags_one_table_and_one_set_of_plots(tmp_path, capsys):
    _width_grid(tmp_path, tag="sgd", widths=[16, 32])
    _width_grid(tmp_path, tag="adam", widths=[16, 32], scale=0.5)
    rows = co.collect_many(tmp_path, ["sgd", "adam"])
    assert [(r["tag"], r["index"], r["width"], r["final_val_loss_task_0"]) for r in rows] == [
        ("sgd", 1, 16, 2 / 16), ("sgd", 2, 32, 2 / 32), ("adam", 1, 16, 1 / 16), ("adam", 2, 32, 1 / 32)]
    assert list(rows[0])[:5] == ["tag", "index", "id", "status", "width"]
    assert co.main(["sgd", "adam", "--runs_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["tag", "index", "id", "status"]
    base = tmp_path / "sgd"
    assert (base / "summary_sgd+adam.csv").is_file() and not (base / "summary.csv").exists()
    with (base / "summary_sgd+adam.csv").open(newline="") as fh:
        assert [r[:3] for r in list(csv.reader(fh))[1:]] == [["sgd", "1", "id1"], ["sgd", "2", "id2"],
                                                              ["adam", "1", "id1"], ["adam", "2", "id2"]]
    assert {p.name for p in base.glob("summary_sgd+adam_task0_*.png")} == {
        "summary_sgd+adam_task0_final_vs_width.png", "summary_sgd+adam_task0_curves.png"}
    figs = _figures(rows, tmp_path, ["sgd", "adam"])
    ax = figs["summary_task0_final_vs_width"].axes[0]
    assert ax.get_title().startswith("sgd + adam: task 0")
    labels = [t.get_text() for t in figs["summary_task0_final_vs_width"].legends[0].get_texts()]
    assert labels == ["tag=sgd", "tag=adam"]
    # --out: plain names in that folder
    assert co.main(["sgd", "adam", "--runs_dir", str(tmp_path), "--out", str(tmp_path / "cmp"), "--no_plots"]) == 0
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["summary.csv"]
    assert co.main(["sgd", "nope", "--runs_dir", str(tmp_path)]) == 1
    assert "nope" in capsys.readouterr().err


def test_several_tags_with_seeds_keep_tags_apart(tmp_path):
    for tag in ("a", "b"):
        _seed_grid(tmp_path / tag)
        (tmp_path / tag / TAG).rename(tmp_path / tag / tag)
        (tmp_path / tag / tag).rename(tmp_path / f"{tag}_grid")
    rows = co.collect_many(tmp_path, ["a_grid", "b_grid"])
    agg = co.aggregate_seeds(rows)
    assert [(a["tag"], a["learning_rate"], a["n"]) for a in agg] == [
        ("a_grid", 0.01, 3), ("a_grid", 0.1, 2), ("b_grid", 0.01, 3), ("b_grid", 0.1, 2)]
