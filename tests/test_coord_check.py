"""Coordinate check: the width exponents each parametrization predicts, under SGD and Adam, and the CLI.

These tests pin the abc implementation (core_code/model_lib, util/optimizers.py) through
the optimizer training builds. Setup: abcMLP depth 4 (1 -> n -> n -> n -> 4), biases on
(bias_tune 1), widths 64..1024 (a factor 16), full-batch steps on y = sin(pi x) at 64
points; SGD eta 0.5, Adam eta 0.02. The exponent is the least-squares slope of
log(mean |h_t - h_0|) (feature) or log(mean |beta_t - beta_0|) (effective bias) against
log(width), per seed, averaged over seeds.

Measured here (4 seeds, step 2, mean over the hidden layers of the per-layer means; spread
= sd over seeds of one layer): muP SGD features +0.05 (sd 0.04-0.09), biases +0.05;
muP Adam features -0.00 (sd 0.02-0.03), biases -0.01; SP Adam hidden features +0.91 and
+0.99 (sd 0.07-0.09); Adam with the SGD muP exponents (list_c 0) +0.33 (first layer) and
+0.50-0.55 (hidden), i.e. FAIL. NTK SGD (bias_tune 0.2): -0.29 to -0.41 per layer at these
small widths (-0.47 at widths 256..4096), so its window is [-0.75, -0.25].
torch runs single-threaded here: two OpenMP threads on a busy 2-core machine ran 4x slower.
"""

from __future__ import annotations

import csv
import importlib.util
import os

import pytest
import torch

from core_code.util.config_extractions import ConfigError
from core_code.util.optimizers import make_optimizer
from experiments.analysis import coord_check as cc

SEED0 = int(os.environ.get("COORD_CHECK_SEED0", "0"))
WIDTHS = (64, 128, 256, 512, 1024)
STEPS = 2
LR = {"SGD": 0.5, "Adam": 0.02}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeds(n: int) -> range:
    return range(SEED0, SEED0 + n)


def run(parametrization: str, update_rule: str = "SGD", n_seeds: int = 3, steps: int = STEPS,
        **overrides) -> cc.CoordCheck:
    cfg = cc.architecture_config(parametrization=parametrization, overrides={"d_out": 4, **overrides})
    return cc.coord_check(cfg, widths=WIDTHS, seeds=seeds(n_seeds), steps=steps, lr=LR[update_rule],
                          update_rule=update_rule, label=f"{parametrization} {update_rule}")


def _by(verdicts, quantity):
    return {v.layer: v for v in verdicts if v.quantity == quantity}


# ------------------------------------------------------------- predicted exponents
@pytest.mark.parametrize("update_rule", ["SGD", "Adam"])
def test_mup_hidden_features_and_biases_change_by_order_one_at_every_width(update_rule):
    """muP, with the exponents resolved for the optimizer: feature and bias change exponent 0 (tolerance 0.2)."""
    result = run("muP", update_rule)
    assert result.hidden == [0, 1, 2]
    for step in range(1, STEPS + 1):
        verdicts = result.verdicts(step)
        assert {(v.layer, v.quantity) for v in verdicts} == {(i, q) for i in (0, 1, 2) for q in ("feature", "bias")}
        for v in verdicts:
            assert v.predicted == ("==", 0.0) and v.passed, v.text()
            assert abs(v.measured) < 0.2
    assert result.passed() is True


def test_ntk_sgd_hidden_features_and_biases_shrink_like_inverse_sqrt_width():
    """NTK: the kernel regime, ~ width^(-1/2); window [-0.75, -0.25] on the mean over the hidden layers.

    bias_tune 0.2 keeps the biases on but their N(0, 1) output offset from drowning the
    slope (sd over seeds 0.08-0.1 instead of 0.2); measured features -0.40, biases -0.35
    (per layer -0.29 to -0.41 at these small widths; -0.47 at widths 256..4096).
    """
    result = run("NTK", "SGD", n_seeds=4, bias_tune=0.2)
    for step in range(1, STEPS + 1):
        verdicts = result.verdicts(step)
        assert all(v.predicted == ("==", -0.5) for v in verdicts)
        for quantity in ("feature", "bias"):
            mean = sum(v.measured for v in verdicts if v.quantity == quantity) / 3
            assert -0.75 <= mean <= -0.25, (quantity, step, [v.text() for v in verdicts])


def test_sp_adam_hidden_features_grow_with_width():
    """SP + Adam, c 0: hidden layers (fan-in n) grow like width^+1 (measured +0.91, +0.99); layer 0 not predicted."""
    result = run("SP", "Adam", n_seeds=2)
    features = _by(result.verdicts(), "feature")
    assert features[0].predicted is None
    for layer in (1, 2):
        assert features[layer].predicted == (">", 0.0) and features[layer].passed
        assert features[layer].blew_up or features[layer].measured > 0.6, features[layer].text()


def test_adam_with_the_sgd_mup_exponents_fails_the_check():
    """Adam with muP's a, b but the SGD learning-rate exponents (explicit list_c 0): features grow, FAIL."""
    result = run("muP", "Adam", n_seeds=2, list_c=0)
    assert result.passed() is False
    features = _by(result.verdicts(), "feature")
    assert all(not v.passed and v.measured > 0.25 for v in features.values()), [v.text() for v in features.values()]
    assert "FAIL" in result.report() and "explicit list_c" in result.report()


def test_mup_output_at_init_shrinks_like_inverse_sqrt_width_without_its_bias():
    """muP: last layer n^(-1/2) * W h, W ~ N(0, 1/n): output ~ width^(-1/2) (bias N(0, 1) excluded).

    Init only (no step): the recorded pre-bias output subtracts the effective bias. d_out 8
    and 12 seeds: per-seed sd of the slope 0.11, mean's 0.033. NTK's output at init stays
    of order one (exponent 0).
    """
    mup = run("muP", n_seeds=12, steps=0, d_out=8)
    ntk = run("NTK", n_seeds=12, steps=0, d_out=8)
    assert -0.75 < mup.init_output_exponent() < -0.3, mup.init_output_exponent()
    assert abs(ntk.init_output_exponent()) < 0.2, ntk.init_output_exponent()
    # the effective bias is N(0, 1) in every parametrization: with it the output does not shrink
    with_bias = mup.slope(mup.n_layers - 1, 0, "act_mean_abs")
    assert with_bias > -0.2, with_bias


def test_learning_rate_exponent_c_scales_sgd_by_width_to_the_minus_c():
    """c 1 at eta equals c 0 at eta / width (biases off: the output bias keeps c 0): multipliers reach the optimizer."""
    width = 64
    base = cc.architecture_config(parametrization="muP", overrides={"bias_tune": 0.0})
    c1 = cc.coord_check({**base, "c": 1.0}, widths=[width], seeds=[SEED0], steps=2, lr=0.5)
    c0 = cc.coord_check({**base, "c": 0.0}, widths=[width], seeds=[SEED0], steps=2, lr=0.5 / width)
    for a, b in zip(c1.rows, c0.rows):
        assert a["delta_mean_abs"] == pytest.approx(b["delta_mean_abs"], rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("update_rule,optimizer,group_lrs", [
    ("SGD", torch.optim.SGD, lambda w: [0.5]),
    # muP + Adam: weights first/last and n-output biases w^-1/2, hidden weights w^-1, output bias 1
    ("Adam", torch.optim.Adam, lambda w: [0.02 * w ** -0.5, 0.02 / w, 0.02]),
])
def test_optimizer_is_the_one_training_builds(monkeypatch, update_rule, optimizer, group_lrs):
    """make_optimizer with the configured update rule; lr eta * width^-c per group, c resolved for that optimizer."""
    built = []

    def recording(modules, rule, lr, callback=None):
        opt = make_optimizer(modules, rule, lr, callback)
        built.append((rule, lr, callback, opt))
        return opt

    monkeypatch.setattr(cc, "make_optimizer", recording)
    lr = LR[update_rule]
    result = cc.coord_check(cc.architecture_config(parametrization="muP"), widths=[16, 32], seeds=[SEED0], steps=1,
                            lr=lr, update_rule=update_rule)
    assert result.update_rule == update_rule and result.lr == lr
    assert [(rule, r_lr, cb) for rule, r_lr, cb, _ in built] == [(update_rule, lr, None)] * 2
    for (_, _, _, opt), width in zip(built, (16, 32)):
        assert isinstance(opt, optimizer)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(group_lrs(width))
    assert importlib.util.find_spec("core_code.coord_check") is None  # moved, no shim left behind


def test_ntk_with_adam_is_refused_before_training():
    with pytest.raises(ConfigError, match="'NTK'.*update_rule SGD only, not 'Adam'"):
        cc.coord_check(cc.architecture_config(parametrization="NTK"), widths=[8], seeds=[0], steps=1,
                       update_rule="Adam")


def test_explicit_exponents_equal_the_named_parametrization():
    """list_a / list_b / c given by hand reproduce the preset (same seeds: same numbers)."""
    named = cc.coord_check(cc.architecture_config(parametrization="NTK"), widths=[32, 64], seeds=[SEED0], steps=1)
    explicit = cc.coord_check(
        cc.architecture_config(list_a=[0, 0.5, 0.5, 0.5], list_b=[0, 0, 0, 0], c=0),
        widths=[32, 64], seeds=[SEED0], steps=1)
    assert [r["delta_mean_abs"] for r in named.rows] == [r["delta_mean_abs"] for r in explicit.rows]
    assert [r["bias_delta_mean_abs"] for r in named.rows] == [r["bias_delta_mean_abs"] for r in explicit.rows]


# ---------------------------------------------------------------------------- CLI
def _read(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_cli_writes_csv_plots_and_reports_exponents(tmp_path, capsys):
    out = tmp_path / "cc"
    rc = cc.main(["--parametrization", "NTK", "--depth", "3", "--widths", "16,32", "--seeds", "2",
                  "--steps", "1", "--out", str(out), "--dpi", "40"])
    assert rc == 0
    columns, rows = _read(out / "coord_check.csv")
    assert tuple(columns) == cc.CSV_COLUMNS
    assert len(rows) == 2 * 2 * 2 * 3  # widths x seeds x (init + steps) x layers
    assert {r["layer"] for r in rows} == {"0", "1", "2"}
    assert all(float(r["delta_mean_abs"]) == 0.0 for r in rows if r["step"] == "0")
    for stem in ["coord_check", "layer0", "layer1", "layer2"]:
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    text = capsys.readouterr().out
    assert "mean |h_t - h_0| (feature) and mean |beta_t - beta_0| (bias, effective)" in text
    assert "1 full-batch SGD steps, lr 0.1" in text
    assert "verdict at step 1 (hidden layers; predicted for NTK under SGD" in text and "tolerance 0.2" in text
    verdict_lines = [line for line in text.splitlines() if line.strip().endswith(("PASS", "FAIL"))]
    assert len(verdict_lines) == 2 * 2  # 2 hidden layers x (feature, bias)
    assert all("-0.50" in line for line in verdict_lines)


def test_output_folder_names_everything_that_defines_the_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--depth", "3", "--widths", "8,16", "--seeds", "1", "--steps", "1", "--no_plots"]
    assert cc.main(["--parametrization", "muP", *common]) == 0
    assert cc.main(["--parametrization", "muP", "--update_rule", "Adam", *common]) == 0
    assert cc.main(["--parametrization", "muP", "--update_rule", "Adam", "--list_c", "0", *common]) == 0
    assert cc.main(["--parametrization", "muP", "--update_rule", "Adam", "--lr", "0.1", *common]) == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "coord_check").iterdir())
    assert names == sorted([
        "abcMLP-muP-depth3-SGD-lr0.1-w8_16-steps1-seeds1",
        "abcMLP-muP-depth3-Adam-lr0.02-w8_16-steps1-seeds1",
        "abcMLP-muP-list_c0-depth3-Adam-lr0.02-w8_16-steps1-seeds1",
        "abcMLP-muP-depth3-Adam-lr0.1-w8_16-steps1-seeds1",
    ])


def test_cli_on_an_experiments_data_and_architecture(tmp_path, capsys):
    """--experiment: the experiment's training split, per-task criteria, architecture (tinyTest: depth 3), optimizer."""
    out = tmp_path / "tiny"
    rc = cc.main(["--experiment", "tinyTest", "--widths", "8,16", "--seeds", "1", "--steps", "1",
                  "--no_plots", "--out", str(out)])
    assert rc == 0
    _, rows = _read(out / "coord_check.csv")
    assert {r["layer"] for r in rows} == {"0", "1", "2"}
    assert not list(out.glob("*.png"))
    text = capsys.readouterr().out
    assert "on tinyTest" in text and "full-batch Adam steps" in text  # the experiment's optimizer


def test_cli_refuses_bad_exponents_with_a_message(tmp_path, capsys):
    rc = cc.main(["--list_a", "0,0.5", "--no_plots", "--out", str(tmp_path)])
    assert rc == 2
    assert "list_a" in capsys.readouterr().err
    rc = cc.main(["--parametrization", "NTK", "--update_rule", "Adam", "--no_plots", "--out", str(tmp_path)])
    assert rc == 2
    assert "defined for update_rule SGD only, not 'Adam'" in capsys.readouterr().err


def test_single_number_exponent_is_broadcast_to_every_layer():
    args = cc.build_parser().parse_args(["--list_b", "0.5", "--list_a=-0.5,0,0,0.5"])
    assert args.list_b == 0.5 and args.list_a == [-0.5, 0.0, 0.0, 0.5]
