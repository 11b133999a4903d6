"""Attention plots: a boolean mask (True = may attend) and a heatmap of attention weights with token labels.

Chapter "Encoders and decoders" (chapters/01_transformers). Rows are queries, columns keys.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

MASK_COLOURS = ListedColormap(["#f2f2f2", "#2b6a99"])  # blocked (False) light grey, may attend (True) blue


def _as_2d_array(x, name: str) -> np.ndarray:
    """`x` (torch tensor or array-like) as a 2-D NumPy array, or a ValueError naming `name`."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (T_q, T_k), got shape {arr.shape}; select one batch item and head, "
                         f"e.g. {name}[0, 0]")
    return arr


def _label_axes(ax: Axes, shape: tuple[int, int], query_labels, key_labels, fontsize: float) -> None:
    """Put query labels on the y axis and key labels on the x axis (positions 0.. when a list is None)."""
    T_q, T_k = shape
    for labels, size, axis in ((query_labels, T_q, "query"), (key_labels, T_k, "key")):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{axis}_labels has {len(labels)} entries but the matrix has {size} {axis} positions")
    ax.set_yticks(range(T_q), [str(t) for t in (query_labels if query_labels is not None else range(T_q))],
                  fontsize=fontsize)
    ax.set_xticks(range(T_k), [str(t) for t in (key_labels if key_labels is not None else range(T_k))],
                  fontsize=fontsize, rotation=90 if key_labels is not None else 0)
    ax.set_xlabel("key position j (attended to)")
    ax.set_ylabel("query position i (attending)")


def plot_mask(mask, ax: Axes | None = None, title: str | None = None, *, query_labels=None, key_labels=None,
              fontsize: float = 8) -> Axes:
    """Draw a boolean attention mask: blue = may attend (True), grey = blocked (False).

    Args:
        mask: bool, shape `(T_q, T_k)` (row i = query i); a tensor or an array.
        ax: axes to draw on; a new figure when None.
        title: axes title.
        query_labels: `T_q` tick labels for the rows (default 0..T_q-1), e.g. absolute positions with a KV cache.
        key_labels: `T_k` tick labels for the columns (default 0..T_k-1).
        fontsize: tick label size.

    Returns:
        The axes drawn on.

    Raises:
        TypeError: if `mask` is not boolean (a 0/1 or additive float mask has another polarity; convert it first).
        ValueError: if `mask` is not 2-D or a label list has the wrong length.
    """
    arr = _as_2d_array(mask, "mask")
    if arr.dtype != np.bool_:
        raise TypeError(f"mask must be boolean (True = may attend), got dtype {arr.dtype}; use `.bool()` on a 0/1 "
                        "mask, and convert additive 0/-inf masks with `mask == 0`")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(arr, cmap=MASK_COLOURS, vmin=0, vmax=1)
    # Thin white lines between cells, so single cells can be counted.
    ax.set_xticks(np.arange(arr.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(arr.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    _label_axes(ax, arr.shape, query_labels, key_labels, fontsize)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_attention(weights, ax: Axes | None = None, title: str | None = None, *, query_labels=None,
                   key_labels=None, mask=None, vmax: float | None = None, colorbar: bool = True,
                   fontsize: float = 8) -> Axes:
    """Heatmap of attention weights (row i = how query i spreads its attention over the keys).

    Args:
        weights: shape `(T_q, T_k)`, each row summing to 1 (or 0 for a fully masked query).
        ax: axes to draw on; a new figure when None.
        title: axes title.
        query_labels: `T_q` row labels, e.g. the tokens (default positions).
        key_labels: `T_k` column labels (default positions).
        mask: optional bool `(T_q, T_k)`, True = may attend; blocked cells are drawn grey, so that a weight of
            exactly 0 imposed by the mask is told apart from a small learned weight.
        vmax: top of the colour scale (default: the largest weight).
        colorbar: add a colour bar next to the axes.
        fontsize: tick label size.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if shapes are not 2-D and equal, a weight is negative or not finite, or a label list has the
            wrong length.
        TypeError: if `mask` is not boolean.
    """
    arr = _as_2d_array(weights, "weights").astype(float)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("weights must be finite and >= 0 (softmax outputs); got NaN, inf or a negative value")
    shown = arr
    if mask is not None:
        allowed = _as_2d_array(mask, "mask")
        if allowed.dtype != np.bool_:
            raise TypeError(f"mask must be boolean (True = may attend), got dtype {allowed.dtype}")
        if allowed.shape != arr.shape:
            raise ValueError(f"mask shape {allowed.shape} must equal weights shape {arr.shape}")
        shown = np.ma.masked_array(arr, mask=~allowed)  # NumPy's mask means "hidden": the opposite polarity
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.4))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")  # blocked cells grey
    top = vmax if vmax is not None else max(float(arr.max()), 1e-12)
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=top)
    _label_axes(ax, arr.shape, query_labels, key_labels, fontsize)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return ax
