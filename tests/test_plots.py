"""Fit figures (experiments.logging.plots): titles, dense true function, training range, legend, overview."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_code.create_data import CreateData
from core_code.lightning_multitask import LightningMultitask
from core_code.util.function_lib import function_library
from core_code.util.lightning import DataModule
from experiments.logging import LoggingCallback, plots
from tests.helpers import QUIET_TRAINER

SUFFIX = "width=8, learning_rate=0.01"
CRITERION = {"task_0": ("dimred_MSELoss", [0]), "task_1": ("dimred_MSELoss", [1, 3])}


def _composite(**extra):
    """compositeSine (7 outputs), task 0 trained on [-1, 0], task 1 on [-1, 1], validated on [-1, 1]."""
    return CreateData(d_in=1, d_out=7, f_true="compositeSine", n_train={"task_0": 8, "task_1": 12},
                      x_min_train=-1, x_max_train={"task_0": 0, "task_1": 1}, n_val=9, x_min_val=-1,
                      x_max_val=1, n_test=0, noise_scale=0.1, seed=3, **extra)


def _fit(data, d_in=1, d_out=7, cb=None, max_epochs=1):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, 8), torch.nn.Tanh(), torch.nn.Linear(8, d_out))
    lm = LightningMultitask(model, learning_rate=0.01, batch_size=8, criterion=CRITERION)
    dm = DataModule(data, batch_size=8)
    trainer = lm.fit(dm, callbacks=[cb] if cb else [], max_epochs=max_epochs, **QUIET_TRAINER)
    return trainer, lm


@pytest.fixture(scope="module")
def snapshot():
    """{stem: figure} of one snapshot (epoch 2) of the compositeSine fit, and the data."""
    data = _composite()
    trainer, lm = _fit(data)
    figs = {name: fig for _, name, fig in plots.snapshot_figures(trainer, lm, 2, SUFFIX)}
    return figs, data


def _line(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_one_figure_per_task_and_active_output_plus_an_overview(snapshot):
    figs, _ = snapshot
    assert list(figs) == ["task0_dim0_epoch0002", "task1_dim1_epoch0002", "task1_dim3_epoch0002",
                          "overview_epoch0002"]


def test_title_names_task_function_output_epoch_and_grid_values(snapshot):
    figs, _ = snapshot
    assert figs["task1_dim3_epoch0002"].axes[0].get_title() == f"task 1: compositeSine[3], epoch 2\n{SUFFIX}"
    overview = figs["overview_epoch0002"]
    assert overview.get_suptitle() == f"epoch 2: {SUFFIX}"
    assert [ax.get_title() for ax in overview.axes if ax.get_visible()] == [
        "task 0: compositeSine[0]", "task 1: compositeSine[1]", "task 1: compositeSine[3]"]


def test_true_function_and_prediction_on_a_dense_grid(snapshot):
    figs, data = snapshot
    ax = figs["task1_dim3_epoch0002"].axes[0]
    truth, pred = _line(ax, "true function"), _line(ax, "prediction")
    x = truth.get_xdata()
    assert len(x) == plots.DENSE_POINTS == 1000 and len(pred.get_xdata()) == 1000
    assert (x[0], x[-1]) == (-1.0, 1.0)  # the validation (and training) x-range
    expected = function_library("compositeSine")(x.reshape(-1, 1).astype(np.float64))[:, 3]
    np.testing.assert_allclose(truth.get_ydata(), expected)
    assert len(ax.collections) == 1  # the training data; the validation rows are not repeated as points


def test_training_range_is_shaded(snapshot):
    figs, _ = snapshot
    for name, (lo, hi) in (("task0_dim0_epoch0002", (-1.0, 0.0)), ("task1_dim1_epoch0002", (-1.0, 1.0))):
        ax = figs[name].axes[0]
        span = next(p for p in ax.patches if p.get_label() == "training input range")
        xs = span.get_path().transformed(span.get_patch_transform()).vertices[:, 0]
        assert (xs.min(), xs.max()) == pytest.approx((lo, hi))
        assert ax.get_xlim() == pytest.approx((-1.0, 1.0))


@pytest.mark.parametrize("name", ["task0_dim0_epoch0002", "overview_epoch0002"])
def test_legend_is_outside_every_axes(snapshot, name):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = snapshot[0][name]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert {t.get_text() for t in legend.get_texts()} == {
        "training input range", "training data", "true function", "prediction"}
    for ax in fig.axes:
        if ax.get_visible():
            assert not box.overlaps(ax.get_window_extent(renderer))
            assert box.y1 <= ax.get_window_extent(renderer).y0  # below the axes
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_output_names():
    data = _composite()
    assert plots.output_name(data, 1, 4) == "compositeSine[4]"
    one = CreateData(d_in=1, d_out=1, f_true="sine", n_train=4, n_val=4, n_test=0, seed=1)
    assert plots.output_name(one, 0, 0) == "sine"

    def bump(x):
        return np.exp(-x[:, 0] ** 2)

    custom = CreateData(d_in=1, d_out=1, f_true="custom", f_true_callback=bump, n_train=4, n_val=4, n_test=0, seed=1)
    assert plots.output_name(custom, 0, 0) == "bump"
    assert plots.target_function(custom, 0) is bump
    assert plots.output_name(object(), 0, 2) == "output 2" and plots.target_function(object(), 0) is None


class FileLike:
    """Data without a true function (as ``FileData``): no curve, outputs named by index."""

    has_true_function = False

    def __init__(self):
        self.all_tasks, self.d_in, self.d_out = [0, 1], 1, 7
        self.task_configs = {0: {"d_in": 1, "d_out": 7}, 1: {"d_in": 1, "d_out": 7}}
        self._data = _composite()

    def create_data(self, split):
        return self._data.create_data(split)

    def n_samples(self, split):
        return self._data.n_samples(split)


def test_file_data_draws_no_true_function():
    trainer, lm = _fit(FileLike())
    figs = {name: fig for _, name, fig in plots.snapshot_figures(trainer, lm, 1)}
    ax = figs["task1_dim3_epoch0001"].axes[0]
    assert ax.get_title() == "task 1: output 3, epoch 1"
    labels = {line.get_label() for line in ax.get_lines()}
    assert "true function" not in labels and "prediction" in labels
    assert len(_line(ax, "prediction").get_xdata()) == 1000
    assert {c.get_label() for c in ax.collections} == {"training data", "validation data"}
    assert not ax.patches  # no training range in the config: nothing shaded


def test_d_in_2_predicted_against_true():
    data = CreateData(d_in=2, d_out=7, f_true="compositeSine", n_train={"task_0": 8, "task_1": 12}, n_val=9,
                      n_test=0, seed=3)
    trainer, lm = _fit(data, d_in=2)
    figs = {name: fig for _, name, fig in plots.snapshot_figures(trainer, lm, 1, SUFFIX)}
    ax = figs["task0_dim0_epoch0001"].axes[0]
    assert ax.get_xlabel() == "true y" and ax.get_ylabel() == "predicted y"
    assert ax.get_title() == f"task 0: compositeSine[0], epoch 1\n{SUFFIX}"
    assert len(figs) == 4


def test_callback_names_files_by_epochs_trained_and_passes_the_title_suffix(tmp_path):
    """Interval 2 over 3 epochs: snapshots after epochs 2 and 3 (the last = summary.json's 'epochs')."""
    cb = LoggingCallback(tmp_path, logging_epoch_interval=2, title_suffix=SUFFIX)
    trainer, _ = _fit(_composite(), cb=cb, max_epochs=3)
    assert trainer.current_epoch == 3
    stems = {p.stem for p in (tmp_path / "plots").glob("*.png")}
    assert stems == {f"{kind}_epoch{e:04d}" for e in (2, 3)
                     for kind in ("task0_dim0", "task1_dim1", "task1_dim3", "overview")}
    assert {p.suffix for p in (tmp_path / "plots").iterdir()} == {".png", ".pdf"}
    assert cb.title_suffix == SUFFIX
