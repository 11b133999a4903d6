"""Parameter-efficient fine-tuning as pictures (chapter "Parameter-efficient fine-tuning").

plot_tradeoff: accuracy against trainable parameters (log x), one point per method named beside it, error bars
from a confidence interval and a dashed majority baseline. plot_rank_sweep: a LoRA rank x target-modules sweep, one line
per target set against r (log2 x), as in Hu et al. (2022), Table 6. plot_panels: a few small panels side by side,
each a column against one x (accuracy, trainable parameters and memory as the number of trained layers grows).
Accuracy columns (names with "acc") holding fractions in [0, 1] are shown in percent; inputs are DataFrames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, PercentFormatter

BASELINE_COLOUR = "0.45"  # grey: a reference, not a result
PANEL_SIZE = (3.4, 3.0)  # inches per panel: three fit the book's width


def _need_frame(frame: object, what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"{what} is empty: it needs at least one row")
    return frame


def _need_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    for c in columns:
        if c not in frame.columns:
            raise ValueError(f"{what} has no column {c!r}; its columns are {list(frame.columns)} (pass the "
                             "column's name as an argument or add it)")


def _numbers(frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
    try:
        values = frame[column].to_numpy(dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} column {column!r} must hold numbers, got {frame[column].tolist()!r}") from error
    return values


def _label(column: str) -> str:
    return column.replace("_", " ")


def _percent_axis(ax: Axes, column: str, values: np.ndarray) -> None:
    """Accuracies (a column named "...acc...") stored as fractions read as percentages."""
    finite = values[np.isfinite(values)]
    if "acc" in column.lower() and finite.size and finite.min() >= 0 and finite.max() <= 1:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def plot_tradeoff(table: pd.DataFrame, *, x: str = "trainable", y: str = "test_accuracy",
                  ci: tuple[str, str] | None = ("ci_low", "ci_high"), baseline: float | None = None,
                  ax: Axes | None = None, title: str | None = None,
                  baseline_label: str = "majority baseline") -> Axes:
    """Accuracy against trainable parameters on a log x axis: one labelled point per method, with error bars.

    Args:
        table: one row per method, indexed by the method's name, with columns ``x`` (> 0) and ``y`` (and the two
            ``ci`` columns unless ``ci`` is None); NaN in ``y`` skips a method.
        x: the column for the x axis, e.g. trainable parameter counts.
        y: the column for the y axis, e.g. test accuracy (an "acc..." column in [0, 1] is shown in percent).
        ci: the (low, high) columns of the interval around ``y`` (e.g. 95% Wilson), or None for no error bars.
        baseline: a reference value on the y axis, drawn dashed (e.g. the majority class's accuracy).
        ax: axes to draw on; a new figure when None.
        title: axes title.
        baseline_label: the baseline's name in the legend.

    Returns:
        The axes drawn on.

    Raises:
        TypeError: ``table`` is not a DataFrame.
        ValueError: a column is missing or not numeric, an ``x`` value is not > 0 (log axis), or an interval does
            not contain its ``y`` value.
    """
    table = _need_frame(table, "table")
    columns = [x, y, *(ci or ())]
    if ci is not None and len(ci) != 2:
        raise ValueError(f"ci must be a pair of column names (low, high) or None, got {ci!r}")
    _need_columns(table, columns, "table")
    data = table[~table[y].isna()]
    if data.empty:
        raise ValueError(f"table's column {y!r} holds only NaN: nothing to plot")
    xs, ys = _numbers(data, x, "table"), _numbers(data, y, "table")
    if not (np.isfinite(xs).all() and (xs > 0).all()):
        raise ValueError(f"column {x!r} must be > 0 for every plotted method (log axis), got "
                         f"{dict(zip(data.index, xs, strict=True))}")
    if ci is not None:
        low, high = _numbers(data, ci[0], "table"), _numbers(data, ci[1], "table")
        if not ((low <= ys + 1e-12) & (ys <= high + 1e-12)).all():
            raise ValueError(f"each interval [{ci[0]}, {ci[1]}] must contain its {y!r} value; check the columns' "
                             "order (low, high)")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.2))
    handles = []
    for k, name in enumerate(data.index):
        yerr = None if ci is None else [[ys[k] - low[k]], [high[k] - ys[k]]]
        handles.append(ax.errorbar([xs[k]], [ys[k]], yerr=yerr, fmt="o", markersize=7, capsize=4,
                                   color=f"C{k % 10}", label=str(name)))
    if baseline is not None:
        handles += [ax.axhline(baseline, color=BASELINE_COLOUR, linestyle="--", linewidth=1.2,
                   label=f"{baseline_label} ({baseline:.1%})" if "acc" in y.lower()
                   and 0 <= baseline <= 1 else f"{baseline_label} ({baseline:g})")]
    # A legend, not labels beside the points: methods with close parameter counts and scores (LoRA and prompt
    # tuning, say) would have overlapping labels.
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 3, xs.max() * 3)
    _percent_axis(ax, y, np.concatenate([ys, [] if baseline is None else [baseline]]))
    ax.set_xlabel(f"{_label(x)} parameters (log scale)" if x == "trainable" else f"{_label(x)} (log scale)")
    ax.set_ylabel(_label(y) + (" (95% CI)" if ci is not None else ""))
    ax.grid(alpha=0.3)
    if title is not None:
        ax.set_title(title)
    return ax


def _target_name(value: object) -> str:
    """("query", "value") -> "query + value"; a string stays as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, (Sequence, frozenset, set)):
        return " + ".join(str(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value))
    return str(value)


def plot_rank_sweep(frame: pd.DataFrame, *, r: str = "r", targets: str = "targets", y: str = "val_accuracy",
                    ax: Axes | None = None, title: str | None = None) -> Axes:
    """A LoRA sweep: ``y`` against the rank r (log2 x axis), one line per set of target modules.

    Args:
        frame: long format, one row per run, with columns ``r`` (int >= 1), ``targets`` (a name such as "q, v",
            or a tuple of module names) and ``y``. Lines keep the order in which target sets first appear.
        r: the rank column.
        targets: the target-set column.
        y: the score column (an "acc..." column in [0, 1] is shown in percent).
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The axes drawn on.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a column is missing, or a rank is not a whole number >= 1.
    """
    frame = _need_frame(frame, "frame")
    _need_columns(frame, [r, targets, y], "frame")
    ranks = _numbers(frame, r, "frame")
    if not (np.isfinite(ranks).all() and (ranks >= 1).all() and (ranks == np.round(ranks)).all()):
        raise ValueError(f"column {r!r} must hold whole ranks >= 1, got {sorted(set(frame[r].tolist()))}")
    scores = _numbers(frame, y, "frame")
    names = [_target_name(t) for t in frame[targets]]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    for name in dict.fromkeys(names):  # first-appearance order
        rows = np.array([n == name for n in names])
        order = np.argsort(ranks[rows])
        ax.plot(ranks[rows][order], scores[rows][order], marker="o", markersize=5, label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted(set(ranks.tolist()))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    _percent_axis(ax, y, scores)
    ax.set_xlabel(f"rank {r} (log2 scale)" if r == "r" else f"{_label(r)} (log2 scale)")
    ax.set_ylabel(_label(y))
    ax.grid(alpha=0.3)
    ax.legend(title=_label(targets), fontsize=8, title_fontsize=8)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_panels(frame: pd.DataFrame, x: str, columns: Sequence[str], *, logy: Sequence[str] = (),
                titles: Sequence[str] | Mapping[str, str] | None = None, xlabel: str | None = None) -> Figure:
    """Small panels side by side, each one column of ``frame`` against ``x`` (points joined in x order).

    Args:
        frame: one row per setting, e.g. per number of trained layers k; ``x`` may be a column or the index's name.
        x: the shared x variable.
        columns: the columns to draw, one panel each, left to right.
        logy: the columns whose panel has a log y axis (e.g. trainable parameters).
        titles: one title per column (a sequence in ``columns``' order, or a mapping column -> title); default:
            the column name.
        xlabel: the x-axis label; default: ``x``.

    Returns:
        The figure (``fig.axes`` holds the panels in ``columns``' order).

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: ``columns`` is empty, a column is missing or not numeric, ``logy`` names a column not drawn
            or holds values <= 0, or ``titles`` does not give one title per column.
    """
    frame = _need_frame(frame, "frame")
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    if not columns:
        raise ValueError("columns is empty: name at least one column to draw")
    if x not in frame.columns:
        if x != frame.index.name:
            raise ValueError(f"frame has no column {x!r} (nor an index named so); its columns are "
                             f"{list(frame.columns)}")
        frame = frame.reset_index()
    _need_columns(frame, columns, "frame")
    extra = [c for c in logy if c not in columns]
    if extra:
        raise ValueError(f"logy names {extra}, which are not in columns {columns}")
    if titles is None:
        titles = {c: _label(c) for c in columns}
    elif isinstance(titles, Mapping):
        titles = {c: titles.get(c, _label(c)) for c in columns}
    else:
        titles = list(titles)
        if len(titles) != len(columns):
            raise ValueError(f"titles has {len(titles)} entries for {len(columns)} columns; give one per column")
        titles = dict(zip(columns, titles, strict=True))
    data = frame.sort_values(x)
    xs = _numbers(data, x, "frame")
    fig, axes = plt.subplots(1, len(columns), figsize=(PANEL_SIZE[0] * len(columns), PANEL_SIZE[1]),
                             squeeze=False, layout="constrained")
    for k, (ax, column) in enumerate(zip(axes[0], columns, strict=True)):
        ys = _numbers(data, column, "frame")
        if column in logy:
            if (ys[np.isfinite(ys)] <= 0).any():
                raise ValueError(f"column {column!r} has values <= 0, which a log axis cannot show; drop it from "
                                 "logy or drop those rows")
            ax.set_yscale("log")
        ok = np.isfinite(ys)
        ax.plot(xs[ok], ys[ok], marker="o", markersize=5, color=f"C{k % 10}")
        if column not in logy:
            _percent_axis(ax, column, ys)
        ax.set_title(titles[column], fontsize=10)
        ax.set_xlabel(xlabel if xlabel is not None else _label(x))
        ax.grid(alpha=0.3, which="both")
    return fig
