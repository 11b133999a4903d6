"""Training curves: the loss recorded by `lab_utils.training.train`, one colour per run.

Per run: the raw training loss drawn faintly, its trailing moving average in the run's colour, the validation
loss dashed with markers, and a star at the best validation step (the weights `restore_best=True` keeps).
Used wherever a chapter trains (chapters 01-03). Works on anything shaped like `History` (duck typing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

if TYPE_CHECKING:  # only for the type hints: plotting must not need the training module
    from lab_utils.training import History

RAW_ALPHA = 0.25  # the unsmoothed loss is context, not the message: faint
REFERENCE_COLOUR = "0.45"  # grey


def moving_average(values, window: int) -> np.ndarray:
    """Trailing moving average, same length as `values`: point i averages `values[max(0, i-window+1) : i+1]`.

    Trailing (not centred), so the smoothed curve at step s uses no loss recorded after s.
    """
    x = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    start = np.maximum(0, i - window + 1)
    return (csum[i + 1] - csum[start]) / (i + 1 - start)


def _as_runs(histories) -> dict[str, object]:
    """`histories` as an ordered dict name -> History ("" for a single unnamed run), validated."""
    if hasattr(histories, "train_loss"):
        runs = {"": histories}
    elif isinstance(histories, Mapping):
        runs = {str(name): h for name, h in histories.items()}
        if not runs:
            raise ValueError("histories is an empty mapping; pass a History or {'run name': History, ...}")
    else:
        raise TypeError("histories must be a History (what train() returns) or a mapping name -> History, "
                        f"got {type(histories).__name__}")
    for name, h in runs.items():
        who = f"history {name!r}" if name else "history"
        missing = [f for f in ("steps", "train_loss", "val_steps", "val_loss") if not hasattr(h, f)]
        if missing:
            raise TypeError(f"{who} has no {', '.join(missing)}: pass the History returned by train()")
        if len(h.steps) != len(h.train_loss) or len(h.val_steps) != len(h.val_loss):
            raise ValueError(f"{who}: steps/train_loss have lengths {len(h.steps)}/{len(h.train_loss)} and "
                             f"val_steps/val_loss {len(h.val_steps)}/{len(h.val_loss)}; each pair must match")
        if len(h.train_loss) == 0 and len(h.val_loss) == 0:
            raise ValueError(f"{who} is empty (no training or validation loss recorded); run train() with "
                             "steps >= 1 first")
    return runs


def plot_history(histories: History | Mapping[str, History], ax: Axes | None = None, *, smooth: int | None = None,
                 reference_lines: Mapping[str, float] | None = None, title: str | None = None,
                 ylabel: str = "loss") -> Axes:
    """Plot training and validation loss against the step, for one run or several.

    Args:
        histories: a `History` from `lab_utils.training.train`, or a mapping run name -> History (one colour
            per run, in the mapping's order).
        ax: axes to draw on; a new figure when None.
        smooth: window (in recorded steps) of the trailing moving average of the training loss; default
            about 1/25 of the run's length; 1 = no smoothing.
        reference_lines: label -> value, drawn as grey horizontal lines, e.g. `{"uniform guess": math.log(V)}`.
        title: axes title.
        ylabel: y-axis label.

    Returns:
        The axes drawn on.

    Raises:
        TypeError: if `histories` is not a History or a mapping of them.
        ValueError: if a history is empty or its lists have mismatched lengths, or `smooth` < 1.
    """
    runs = _as_runs(histories)
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1):
        raise ValueError(f"smooth must be an int >= 1 (window in steps; 1 = no smoothing), got {smooth!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, (name, h) in enumerate(runs.items()):
        colour = f"C{k % 10}"
        prefix = f"{name}: " if name else ""
        if len(h.train_loss):
            window = smooth if smooth is not None else max(1, round(len(h.train_loss) / 25))
            ax.plot(h.steps, h.train_loss, color=colour, alpha=RAW_ALPHA, linewidth=0.8)
            label = f"{prefix}train" + (f" ({window}-step average)" if window > 1 else "")
            ax.plot(h.steps, moving_average(h.train_loss, window), color=colour, linewidth=1.8, label=label)
        if len(h.val_loss):
            ax.plot(h.val_steps, h.val_loss, color=colour, linestyle="--", marker="o", markersize=4,
                    linewidth=1.4, label=f"{prefix}validation")
        best_step, best_loss = getattr(h, "best_step", None), getattr(h, "best_val_loss", None)
        if best_step is not None and best_loss is not None:
            ax.plot([best_step], [best_loss], linestyle="none", marker="*", markersize=13, color=colour,
                    markeredgecolor="black", markeredgewidth=0.7, zorder=5,
                    label=f"{prefix}best validation ({best_loss:.3f} at step {best_step})")
    for label, value in (reference_lines or {}).items():
        ax.axhline(value, color=REFERENCE_COLOUR, linestyle=":", linewidth=1.2)
        # x in axes fraction, y in data: the label sits just above the line at the right edge.
        ax.text(0.99, value, f"{label} ({value:.2f})", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=8, color=REFERENCE_COLOUR)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title is not None:
        ax.set_title(title)
    return ax
