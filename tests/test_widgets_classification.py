"""Tests for lab_utils.widgets.classification: what the confusion-matrix and Trainer-log plots draw, and bad input."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lab_utils.widgets import plot_confusion_matrix, plot_trainer_log


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


CM = np.array([[8, 2], [1, 3]])  # rows = true class

# The shape of trainer.state.log_history: training losses every 2 steps, evaluations every 4, a final summary.
LOG = [
    {"loss": 0.70, "grad_norm": 1.0, "learning_rate": 5e-5, "epoch": 0.25, "step": 2},
    {"loss": 0.60, "grad_norm": 1.0, "learning_rate": 4e-5, "epoch": 0.5, "step": 4},
    {"eval_loss": 0.55, "eval_accuracy": 0.70, "eval_f1": 0.41, "epoch": 0.5, "step": 4},
    {"loss": 0.45, "grad_norm": 1.0, "learning_rate": 2e-5, "epoch": 0.75, "step": 6},
    {"loss": 0.40, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": 1.0, "step": 8},
    {"eval_loss": 0.42, "eval_accuracy": 0.85, "eval_f1": 0.80, "epoch": 1.0, "step": 8},
    {"train_runtime": 1.0, "train_loss": 0.54, "epoch": 1.0, "step": 8},
]


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_confusion_matrix_normalised_by_true_class():
    ax = plot_confusion_matrix(CM, ["negative", "positive"], title="binary")
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image, [[0.8, 0.2], [0.25, 0.75]])  # each row sums to 1: recall on the diagonal
    assert texts(ax) == ["80.0%\n(8)", "20.0%\n(2)", "25.0%\n(1)", "75.0%\n(3)"]  # row by row: row 0 = true 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["negative", "positive"]
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class" and ax.get_title() == "binary"


def test_confusion_matrix_counts():
    ax = plot_confusion_matrix(CM, ["a", "b"], normalize=False)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), CM)
    assert texts(ax) == ["8", "2", "1", "3"]


def test_confusion_matrix_row_without_examples_is_zero_not_nan():
    ax = plot_confusion_matrix(np.array([[0, 0], [1, 3]]), ["a", "b"])
    assert np.isfinite(ax.get_images()[0].get_array()).all()


@pytest.mark.parametrize(("cm", "labels", "match"), [
    (np.ones((2, 3)), ["a", "b"], "square"),
    (np.array([[1, -1], [0, 1]]), ["a", "b"], "negative"),
    (CM, ["a", "b", "c"], "3 names but cm has 2 classes"),
])
def test_confusion_matrix_bad_inputs(cm, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(cm, labels)


def test_trainer_log_draws_losses_and_metric_at_their_steps():
    ax = plot_trainer_log(LOG, title="run")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["training loss"].get_xdata(), [2, 4, 6, 8])
    np.testing.assert_allclose(lines["training loss"].get_ydata(), [0.7, 0.6, 0.45, 0.4])
    np.testing.assert_array_equal(lines["validation loss"].get_xdata(), [4, 8])
    right = {line.get_label(): line for line in ax.right_ax.get_lines()}
    np.testing.assert_allclose(right["validation accuracy"].get_ydata(), [0.70, 0.85])
    best = right["best accuracy (0.850 at step 8)"]
    assert list(best.get_xdata()) == [8] and list(best.get_ydata()) == [0.85]
    assert ax.get_title() == "run" and ax.get_xlabel() == "step"


def test_trainer_log_other_metric_and_none():
    ax = plot_trainer_log(LOG, metric="eval_f1")
    assert "best f1 (0.800 at step 8)" in [line.get_label() for line in ax.right_ax.get_lines()]
    ax = plot_trainer_log(LOG, metric=None)
    assert ax.right_ax is None and len(ax.get_lines()) == 2


def test_trainer_log_with_evaluations_only():
    ax = plot_trainer_log([entry for entry in LOG if "loss" not in entry])
    assert [line.get_label() for line in ax.get_lines()] == ["validation loss"]


@pytest.mark.parametrize(("log", "kwargs", "error", "match"), [
    ({"step": 1, "loss": 0.5}, {}, TypeError, "list of dicts"),
    ([1, 2], {}, TypeError, "list of dicts"),
    ([{"train_runtime": 1.0, "step": 8}], {}, ValueError, "no 'loss' nor 'eval_loss'"),
    (LOG, {"metric": "eval_precision"}, ValueError, r"not in log_history; available: \['eval_accuracy'"),
])
def test_trainer_log_bad_inputs(log, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_trainer_log(log, **kwargs)
