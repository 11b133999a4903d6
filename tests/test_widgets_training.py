"""Tests for lab_utils.widgets.training: plot_history draws each run's curves in one colour and refuses bad input.

The stand-in History (SimpleNamespace) keeps these tests independent of lab_utils.training; the last tests use the
real History as well.
"""

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from lab_utils.widgets import plot_history
from lab_utils.widgets.training import moving_average


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


def fake_history(n: int = 50, *, offset: float = 0.0, seed: int = 0) -> SimpleNamespace:
    """A History-shaped record: noisy decreasing train loss, validation every 10 steps, best at the minimum."""
    rng = np.random.default_rng(seed)
    steps = list(range(1, n + 1))
    train = list(3.0 + offset - np.linspace(0, 1, n) + rng.normal(0, 0.2, n))
    val_steps = list(range(10, n + 1, 10))
    val = [2.9 + offset - 0.01 * s + 0.0004 * s * s for s in val_steps]
    best = int(np.argmin(val))
    return SimpleNamespace(steps=steps, train_loss=train, lr=[1e-3] * n, val_steps=val_steps, val_loss=val,
                           best_step=val_steps[best], best_val_loss=val[best], records=[])


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_moving_average_is_trailing_and_matches_convolution():
    x = np.arange(10.0) ** 2
    smoothed = moving_average(x, 3)
    assert smoothed.shape == x.shape
    np.testing.assert_allclose(smoothed[2:], np.convolve(x, np.ones(3) / 3, mode="valid"))  # full windows
    np.testing.assert_allclose(smoothed[:2], [0.0, 0.5])  # partial windows at the start: mean of what exists
    np.testing.assert_allclose(moving_average(x, 1), x)


def test_one_run_draws_raw_smoothed_validation_and_best():
    h = fake_history()
    ax = plot_history(h, smooth=5, title="run")
    lines = ax.get_lines()
    assert len(lines) == 4  # raw train, smoothed train, validation, best marker
    raw, smoothed, val, best = lines
    np.testing.assert_allclose(raw.get_ydata(), h.train_loss)
    assert raw.get_alpha() < 0.5  # faint
    np.testing.assert_allclose(smoothed.get_ydata(), moving_average(h.train_loss, 5))
    assert not np.allclose(smoothed.get_ydata(), h.train_loss)  # smoothing did something
    assert val.get_linestyle() == "--" and val.get_marker() == "o"
    np.testing.assert_allclose(val.get_xdata(), h.val_steps)
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (h.best_step, h.best_val_loss)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("train") and legend[1] == "validation" and "best validation" in legend[2]
    assert ax.get_title() == "run" and ax.get_ylabel() == "loss" and ax.get_xlabel() == "step"


def test_default_smoothing_window_is_about_a_25th_of_the_run():
    h = fake_history(100)
    ax = plot_history(h)
    smoothed = ax.get_lines()[1]
    np.testing.assert_allclose(smoothed.get_ydata(), moving_average(h.train_loss, 4))
    assert "4-step average" in smoothed.get_label()


def test_several_runs_get_one_colour_each_and_named_legend_entries():
    runs = {"small lr": fake_history(seed=1), "large lr": fake_history(offset=0.5, seed=2)}
    fig, ax = plt.subplots()
    assert plot_history(runs, ax) is ax
    by_label = lines_by_label(ax)
    assert {"small lr: validation", "large lr: validation"} <= set(by_label)
    colour = {name: to_rgba(by_label[f"{name}: validation"].get_color()) for name in runs}
    assert colour["small lr"] != colour["large lr"]
    for name in runs:  # every line of a run (raw, smoothed, validation, best) shares its colour
        drawn = [line for line in ax.get_lines() if line.get_label().startswith(name)]
        assert len(drawn) == 3
        assert all(to_rgba(line.get_color(), 1) == to_rgba(colour[name], 1) for line in drawn)
    assert len(ax.get_lines()) == 8


def test_reference_lines_are_grey_horizontal_lines_with_labels():
    ax = plot_history(fake_history(), reference_lines={"uniform guess": 3.4, "bigram": 2.5})
    horizontal = [line for line in ax.get_lines() if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2]
    assert sorted(line.get_ydata()[0] for line in horizontal) == [2.5, 3.4]
    assert all(np.allclose(to_rgba(line.get_color())[:3], to_rgba(line.get_color())[0]) for line in horizontal)
    assert {"uniform guess (3.40)", "bigram (2.50)"} <= {t.get_text() for t in ax.texts}


def test_a_run_without_validation_draws_only_the_training_loss():
    h = fake_history()
    h.val_steps, h.val_loss, h.best_step, h.best_val_loss = [], [], None, None
    ax = plot_history(h)
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (2-step average)"]


def empty_history():
    return SimpleNamespace(steps=[], train_loss=[], lr=[], val_steps=[], val_loss=[], best_step=None,
                           best_val_loss=None, records=[])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: plot_history(empty_history()), ValueError, "empty"),
        (lambda: plot_history({"run a": empty_history()}), ValueError, "'run a' is empty"),
        (lambda: plot_history({}), ValueError, "empty mapping"),
        (lambda: plot_history([fake_history()]), TypeError, "mapping name -> History"),
        (lambda: plot_history({"a": SimpleNamespace(train_loss=[1.0])}), TypeError, "steps"),
        (lambda: plot_history(SimpleNamespace(**{**vars(fake_history()), "steps": [1]})), ValueError, "must match"),
        (lambda: plot_history(fake_history(), smooth=0), ValueError, "smooth must be an int >= 1"),
        (lambda: plot_history(fake_history(), smooth=2.5), ValueError, "smooth"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_the_real_history_is_drawn_and_an_empty_one_refused():
    from lab_utils.training import History

    h = History(steps=[1, 2, 3, 4], train_loss=[4.0, 3.0, 2.5, 2.0], lr=[1e-3] * 4, val_steps=[2, 4],
                val_loss=[3.1, 2.9], best_step=4, best_val_loss=2.9)
    ax = plot_history({"real": h}, smooth=2)
    assert len(ax.get_lines()) == 4
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [4.0, 3.5, 2.75, 2.25])
    with pytest.raises(ValueError, match="empty"):
        plot_history(History())


def test_plots_what_the_real_train_loop_recorded():
    import torch
    from torch import nn

    from lab_utils.training import train

    torch.manual_seed(0)
    x = torch.randn(16, 3)
    data = torch.cat([x, (x @ torch.tensor([1.0, -2.0, 0.5]))[:, None]], dim=1)  # (16, 4): features, target
    batches = list(data.split(4))

    def squared_error(model, batch):
        return ((model(batch[:, :3]).squeeze(-1) - batch[:, 3]) ** 2).mean(), len(batch)

    history = train(nn.Linear(3, 1), batches, squared_error, steps=20, lr=0.05, val_batches=batches, eval_every=5,
                    progress=False)
    ax = plot_history(history, smooth=1)
    raw, smoothed, val, best = ax.get_lines()
    np.testing.assert_allclose(smoothed.get_ydata(), history.train_loss)
    np.testing.assert_allclose(val.get_xdata(), history.val_steps)
    assert best.get_xdata()[0] == history.best_step
