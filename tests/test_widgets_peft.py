"""Tests for lab_utils.widgets.peft: the trade-off plot, the LoRA rank sweep and the small panels.

Each test reads the artists back (points, error bars, lines, labels, scales) rather than only checking that
something was drawn, and each bad input is refused with a message naming what to change.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from lab_utils.widgets import plot_panels, plot_rank_sweep, plot_tradeoff


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {"trainable": [22_700_000, 3_600_000, 300_000, 150_000, 2_000],
         "test_accuracy": [0.92, 0.90, 0.89, 0.91, 0.75],
         "ci_low": [0.90, 0.88, 0.87, 0.89, 0.73],
         "ci_high": [0.93, 0.92, 0.91, 0.92, 0.77]},
        index=pd.Index(["full", "last 2", "adapters", "LoRA", "prompt"], name="method"))


def _containers(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


# --- plot_tradeoff ----------------------------------------------------------------------------------------------------
def test_tradeoff_one_labelled_point_per_method_with_error_bars_and_baseline():
    table = _table()
    ax = plot_tradeoff(table, baseline=0.702, title="methods")
    assert ax.get_xscale() == "log" and ax.get_title() == "methods"
    points = _containers(ax)
    assert [c.get_label() for c in points] == list(table.index)
    for c, (_, row) in zip(points, table.iterrows(), strict=True):
        line, _, (bars,) = c  # the marker, caps, the vertical bar collection
        np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [row["trainable"]])
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [row["test_accuracy"]])
        (segment,) = bars.get_segments()
        np.testing.assert_allclose(segment[:, 1], [row["ci_low"], row["ci_high"]])  # the bar spans the interval
    assert not ax.texts  # named in the legend, not beside the points (close points' labels would overlap)
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.702)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*table.index, "majority baseline (70.2%)"]
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert "trainable" in ax.get_xlabel() and "log" in ax.get_xlabel() and "95% CI" in ax.get_ylabel()
    xmin, xmax = ax.get_xlim()
    assert xmin < table["trainable"].min() and xmax > table["trainable"].max()  # every point in view


def test_tradeoff_without_ci_or_baseline_and_other_columns_skips_nan():
    table = _table().rename(columns={"trainable": "params", "test_accuracy": "val_acc"})
    table.loc["prompt", "val_acc"] = np.nan  # a method without a score is left out, not drawn at 0
    _, ax = plt.subplots()
    assert plot_tradeoff(table, x="params", y="val_acc", ci=None, ax=ax) is ax
    points = _containers(ax)
    assert len(points) == 4 and all(c.has_yerr is False for c in points)
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [n for n in table.index if n != "prompt"]
    assert "CI" not in ax.get_ylabel()


def test_tradeoff_non_accuracy_y_is_not_shown_in_percent():
    table = _table().rename(columns={"test_accuracy": "seconds_per_step"})
    ax = plot_tradeoff(table, y="seconds_per_step", ci=None, baseline=0.5)
    assert not isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "majority baseline (0.5)"


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (lambda t: t.to_dict(), {}, TypeError, "pandas DataFrame"),
        (lambda t: t.iloc[:0], {}, ValueError, "empty"),
        (lambda t: t.drop(columns="trainable"), {}, ValueError, "no column 'trainable'"),
        (lambda t: t.drop(columns="ci_high"), {}, ValueError, "no column 'ci_high'"),
        (lambda t: t, {"y": "accuracy"}, ValueError, "no column 'accuracy'"),
        (lambda t: t.assign(trainable=[1, 2, 0, 4, 5]), {}, ValueError, "must be > 0"),
        (lambda t: t.assign(test_accuracy=["a"] * 5), {}, ValueError, "must hold numbers"),
        (lambda t: t.assign(test_accuracy=np.nan), {}, ValueError, "only NaN"),
        (lambda t: t, {"ci": ("ci_high", "ci_low")}, ValueError, "must contain"),
        (lambda t: t, {"ci": ("ci_low",)}, ValueError, "pair of column names"),
    ],
)
def test_tradeoff_bad_input(change, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_tradeoff(change(_table()), **kwargs)


# --- plot_rank_sweep --------------------------------------------------------------------------------------------------
def _sweep() -> pd.DataFrame:
    rows = []
    for targets, gain in [("q", 0.0), (("query", "value"), 0.01), ("q, k, v, o", 0.02)]:
        for r in (8, 1, 4, 64):  # unsorted on purpose: the lines must be drawn in rank order
            rows.append({"r": r, "targets": targets, "val_accuracy": 0.85 + gain + 0.001 * np.log2(r)})
    return pd.DataFrame(rows)


def test_rank_sweep_one_line_per_target_set_in_rank_order_on_log2_axis():
    frame = _sweep()
    ax = plot_rank_sweep(frame, title="sweep")
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["q", "query + value", "q, k, v, o"]  # first-appearance order
    for line, gain in zip(lines, [0.0, 0.01, 0.02], strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [1, 4, 8, 64])
        np.testing.assert_allclose(line.get_ydata(), 0.85 + gain + 0.001 * np.log2([1, 4, 8, 64]))
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert list(ax.get_xticks()) == [1, 4, 8, 64]
    assert ax.get_title() == "sweep" and "rank" in ax.get_xlabel() and ax.get_ylabel() == "val accuracy"
    assert ax.get_legend().get_title().get_text() == "targets"
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)


def test_rank_sweep_other_column_names():
    frame = _sweep().rename(columns={"r": "rank", "targets": "modules", "val_accuracy": "f1"})
    ax = plot_rank_sweep(frame, r="rank", targets="modules", y="f1")
    assert len(ax.get_lines()) == 3 and ax.get_ylabel() == "f1"
    assert not isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda f: f.values, TypeError, "pandas DataFrame"),
        (lambda f: f.drop(columns="targets"), ValueError, "no column 'targets'"),
        (lambda f: f.drop(columns="val_accuracy"), ValueError, "no column 'val_accuracy'"),
        (lambda f: f.assign(r=0), ValueError, "whole ranks >= 1"),
        (lambda f: f.assign(r=2.5), ValueError, "whole ranks >= 1"),
    ],
)
def test_rank_sweep_bad_input(change, error, match):
    with pytest.raises(error, match=match):
        plot_rank_sweep(change(_sweep()))


# --- plot_panels ------------------------------------------------------------------------------------------------------
def _layers() -> pd.DataFrame:
    return pd.DataFrame({"k": [6, 0, 2, 1], "val_accuracy": [0.9, 0.7, 0.86, 0.82],
                         "trainable": [22_700_000, 800, 3_600_000, 1_800_000], "peak_mib": [900.0, 300, 500, 400]})


def test_panels_one_axes_per_column_sorted_by_x_with_log_and_titles():
    frame = _layers()
    fig = plot_panels(frame, "k", ["val_accuracy", "trainable", "peak_mib"], logy=["trainable"],
                      titles=["accuracy", "trainable parameters", "peak memory (MiB)"], xlabel="layers trained")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    order = frame.sort_values("k")
    for ax, column in zip(fig.axes, ["val_accuracy", "trainable", "peak_mib"], strict=True):
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 6])
        np.testing.assert_allclose(line.get_ydata(), order[column])
        assert ax.get_xlabel() == "layers trained"
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "trainable parameters", "peak memory (MiB)"]
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log", "linear"]
    assert isinstance(fig.axes[0].yaxis.get_major_formatter(), PercentFormatter)
    assert not isinstance(fig.axes[2].yaxis.get_major_formatter(), PercentFormatter)


def test_panels_x_from_the_index_single_column_and_title_mapping():
    frame = _layers().set_index("k")
    fig = plot_panels(frame, "k", "peak_mib", titles={"peak_mib": "memory"})
    (ax,) = fig.axes
    assert ax.get_title() == "memory" and ax.get_xlabel() == "k"
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0, 1, 2, 6])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("k", []), {}, ValueError, "columns is empty"),
        (("layers", ["val_accuracy"]), {}, ValueError, "no column 'layers'"),
        (("k", ["val_accuracy", "seconds"]), {}, ValueError, "no column 'seconds'"),
        (("k", ["val_accuracy"]), {"logy": ["trainable"]}, ValueError, "not in columns"),
        (("k", ["val_accuracy", "trainable"]), {"titles": ["one"]}, ValueError, "one per column"),
    ],
)
def test_panels_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_panels(_layers(), *args, **kwargs)


def test_panels_refuses_non_positive_values_on_a_log_axis_and_non_frames():
    with pytest.raises(ValueError, match="log axis"):
        plot_panels(_layers().assign(trainable=[0, 1, 2, 3]), "k", ["trainable"], logy=["trainable"])
    with pytest.raises(TypeError, match="pandas DataFrame"):
        plot_panels({"k": [1]}, "k", ["k"])
