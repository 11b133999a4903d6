"""Attention plots: a boolean mask (True = may attend) and a heatmap of attention weights with token labels.

Chapter "Encoders and decoders" (chapters/01_transformers). Rows are queries, columns keys.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm

MASK_COLOURS = ListedColormap(["#f2f2f2", "#2b6a99"])  # blocked (False) light grey, may attend (True) blue
MIN_RELATIVE_RANGE = 2.0  # relative scale spans at least [1/2, 2]: near-uniform rows stay pale, not saturated


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
                   fontsize: float = 8, relative_to_uniform: bool = False) -> Axes:
    """Heatmap of attention weights (row i = how query i spreads its attention over the keys).

    The default colour scale runs from 0 to the largest weight. With many keys, uniform attention is a small
    number (1/20 = 0.05 for 20 keys), so a row that is nearly uniform and a row that slightly prefers a few keys
    look alike, and rows with different numbers of allowed keys (causal rows, padded cross-attention) cannot
    be compared. `relative_to_uniform=True` colours `weight * n_allowed_keys` instead: 1 = the share uniform
    attention would give (white), red = more, blue = less, on a log scale centred at 1 (x2 and x1/2 are
    equally far from white). Use it for cross-attention and long sequences, or whenever the question is
    "which keys does this query favour?"; keep the default to read the weights themselves.

    Args:
        weights: shape `(T_q, T_k)`, each row summing to 1 (or 0 for a fully masked query).
        ax: axes to draw on; a new figure when None.
        title: axes title.
        query_labels: `T_q` row labels, e.g. the tokens (default positions).
        key_labels: `T_k` column labels (default positions).
        mask: optional bool `(T_q, T_k)`, True = may attend; blocked cells are drawn grey, so that a weight of
            exactly 0 imposed by the mask is told apart from a small learned weight.
        vmax: top of the colour scale (default: the largest weight); with `relative_to_uniform`, the largest
            ratio to uniform shown (> 1; the bottom is 1/vmax; default: the largest ratio, at least 2).
        colorbar: add a colour bar next to the axes.
        fontsize: tick label size.
        relative_to_uniform: colour each weight relative to uniform attention over the row's allowed keys
            (`mask`'s True entries, or all `T_k` keys without a mask), see above. Pass `mask` for causal or
            padded weights, otherwise the blocked keys count as allowed and uniform is understated.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if shapes are not 2-D and equal, a weight is negative or not finite, a label list has the
            wrong length, or `vmax` <= 1 with `relative_to_uniform`.
        TypeError: if `mask` is not boolean.
    """
    arr = _as_2d_array(weights, "weights").astype(float)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("weights must be finite and >= 0 (softmax outputs); got NaN, inf or a negative value")
    allowed = np.ones(arr.shape, dtype=bool)
    if mask is not None:
        allowed = _as_2d_array(mask, "mask")
        if allowed.dtype != np.bool_:
            raise TypeError(f"mask must be boolean (True = may attend), got dtype {allowed.dtype}")
        if allowed.shape != arr.shape:
            raise ValueError(f"mask shape {allowed.shape} must equal weights shape {arr.shape}")
    if relative_to_uniform:
        if vmax is not None and vmax <= 1:
            raise ValueError(f"with relative_to_uniform, vmax is the largest ratio to uniform and must be > 1, "
                             f"got {vmax}")
        n_allowed = allowed.sum(axis=1, keepdims=True)  # (T_q, 1)
        values = arr * n_allowed  # (T_q, T_k), 1 = uniform share
        visible = allowed & (n_allowed > 0)
        ratios = values[visible]
        extent = float(np.exp(np.abs(np.log(ratios[ratios > 0]))).max()) if (ratios > 0).any() else 1.0
        top = vmax if vmax is not None else max(extent, MIN_RELATIVE_RANGE)
        values = np.clip(values, 1 / top, top)  # a weight of exactly 0 would be -inf on the log scale
        norm, cmap, label = LogNorm(vmin=1 / top, vmax=top), plt.get_cmap("RdBu_r"), "weight / uniform weight"
    else:
        visible, values = allowed, arr
        top = vmax if vmax is not None else max(float(arr.max()), 1e-12)
        norm, cmap, label = None, plt.get_cmap("viridis"), "attention weight"
    # NumPy's mask means "hidden": the opposite polarity of ours. Blocked cells are drawn grey.
    shown = values if mask is None and visible.all() else np.ma.masked_array(values, mask=~visible)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.4))
    cmap = cmap.with_extremes(bad="#d9d9d9")
    if norm is None:
        image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=top)
    else:
        image = ax.imshow(shown, cmap=cmap, norm=norm)
    _label_axes(ax, arr.shape, query_labels, key_labels, fontsize)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
        if norm is not None:  # ticks at powers of 2 around 1, written as ratios
            powers = np.arange(-np.floor(np.log2(top)), np.floor(np.log2(top)) + 1)
            ticks = 2.0 ** powers
            bar.set_ticks(ticks, labels=[f"×{t:g}" if t >= 1 else f"×1/{1 / t:g}" for t in ticks])
            bar.minorticks_off()
    return ax
