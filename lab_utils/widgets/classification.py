"""Plots for evaluating a classifier: the confusion matrix, and a ``transformers.Trainer`` run over its steps.

``plot_confusion_matrix`` follows ``lab_utils.classification.confusion_matrix`` (rows = true class, columns =
predicted); ``plot_trainer_log`` reads ``trainer.state.log_history`` (training losses logged every
``logging_steps``, evaluations every ``eval_steps``). Used in chapter "Fine-tuning and its memory bill".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

__all__ = ["plot_confusion_matrix", "plot_trainer_log"]


def plot_confusion_matrix(cm, labels: Sequence[str], *, normalize: bool = True, ax: Axes | None = None,
                          title: str | None = None) -> Axes:
    """Draw a confusion matrix as a heat map with its numbers written in the cells.

    Args:
        cm: counts, shape (C, C), rows = true class, columns = predicted class (as
            ``lab_utils.classification.confusion_matrix`` returns).
        labels: the C class names, in label order.
        normalize: colour and write each row as shares of its true class (the diagonal is then each class's
            recall), with the count below; False: colour and write the counts.
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: ``cm`` is not square, has negative entries, or ``labels`` has the wrong length.
    """
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"cm must be a square (C, C) matrix of counts, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("cm holds negative entries; pass counts (confusion_matrix(y_true, y_pred, C))")
    if len(labels) != counts.shape[0]:
        raise ValueError(f"labels has {len(labels)} names but cm has {counts.shape[0]} classes")
    row_sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
    shown = shares if normalize else counts
    if ax is None:
        size = 1.1 * len(labels) + 1.6
        _, ax = plt.subplots(figsize=(size + 0.8, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, counts.max()))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                       label="share of the true class" if normalize else "examples")
    threshold = (1 if normalize else max(1, counts.max())) / 2  # dark cells get white text
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{shares[i, j]:.1%}\n({counts[i, j]:,})" if normalize else f"{counts[i, j]:,}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if shown[i, j] > threshold else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title is not None:
        ax.set_title(title)
    return ax


def _series(log_history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    if not points:
        return np.array([]), np.array([])
    steps, values = zip(*points, strict=True)
    return np.asarray(steps), np.asarray(values, dtype=float)


def plot_trainer_log(log_history: Sequence[Mapping], *, metric: str | None = "eval_accuracy",
                     ax: Axes | None = None, title: str | None = None) -> Axes:
    """Training loss, validation loss and a validation metric over the steps of one ``Trainer`` run.

    The losses share the left axis; the metric (e.g. accuracy) has its own axis on the right, and a star
    marks its best value.

    Args:
        log_history: ``trainer.state.log_history``, a list of dicts with ``"step"`` and ``"loss"`` (training,
            every ``logging_steps``) or ``"eval_loss"`` and ``"eval_<metric>"`` (every ``eval_steps``).
        metric: the key of the metric to draw on the right axis; None draws the losses only.
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The (left) axes drawn on; the metric's axes is ``ax.right_ax`` (None without a metric).

    Raises:
        TypeError: ``log_history`` is not a list of dicts.
        ValueError: it holds neither a training nor a validation loss, or ``metric`` is not in it.
    """
    if isinstance(log_history, Mapping) or not isinstance(log_history, Sequence) or not all(
            isinstance(entry, Mapping) for entry in log_history):
        raise TypeError("log_history must be a list of dicts: pass trainer.state.log_history")
    train_steps, train_loss = _series(log_history, "loss")
    val_steps, val_loss = _series(log_history, "eval_loss")
    if len(train_loss) == 0 and len(val_loss) == 0:
        raise ValueError("log_history holds no 'loss' nor 'eval_loss': train with logging_steps / eval_strategy set")
    metric_steps, metric_values = _series(log_history, metric) if metric else (np.array([]), np.array([]))
    if metric and len(metric_values) == 0:
        keys = sorted({k for entry in log_history for k in entry if k.startswith("eval_")})
        raise ValueError(f"metric {metric!r} is not in log_history; available: {keys}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    if len(train_loss):
        ax.plot(train_steps, train_loss, color="C0", marker=".", linewidth=1.4, label="training loss")
    if len(val_loss):
        ax.plot(val_steps, val_loss, color="C1", linestyle="--", marker="o", markersize=4, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    ax.right_ax = None
    if metric:
        right = ax.twinx()
        shown = metric.removeprefix("eval_")
        right.plot(metric_steps, metric_values, color="C2", marker="s", markersize=4,
                   label=f"validation {shown}")
        best = int(np.argmax(metric_values))
        right.plot([metric_steps[best]], [metric_values[best]], linestyle="none", marker="*", markersize=13,
                   color="C2", markeredgecolor="black", markeredgewidth=0.7, zorder=5,
                   label=f"best {shown} ({metric_values[best]:.3f} at step {metric_steps[best]})")
        right.set_ylabel(f"validation {shown}")
        ax.right_ax = right
        more_handles, more_names = right.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    ax.legend(handles, names, fontsize=8, loc="center right")
    if title is not None:
        ax.set_title(title)
    return ax
