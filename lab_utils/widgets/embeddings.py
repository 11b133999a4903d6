"""Embedding similarity: a heatmap of cosine similarities between sentence or token embeddings.

Chapter "Pre-training objectives" (chapters/01_transformers). Cosine similarity lies in [-1, 1]; the colour
scale is diverging and centred at 0, so "unrelated" (0) is white and a negative similarity is not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

SIMILARITY_CMAP = "RdBu_r"  # red = similar, white = 0 (unrelated), blue = opposite
ROUNDING_SLACK = 1e-3  # float16/bfloat16 dot products of unit vectors can overshoot 1 by a few 1e-4
MAX_LABEL_CHARS = 40  # long sentences are cut so the heatmap keeps its width


def _short(label, limit: int = MAX_LABEL_CHARS) -> str:
    text = " ".join(str(label).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_similarity(matrix, labels: Sequence, ax: Axes | None = None, *, title: str | None = None) -> Axes:
    """Heatmap of a cosine-similarity matrix with the value written in each cell.

    Rows carry the labels (numbered); columns carry the same numbers, so row i and column i are one item.

    Args:
        matrix: shape `(n, n)`, cosine similarities in [-1, 1] (e.g. `unit @ unit.T` for L2-normalised
            embeddings `unit` of shape `(n, d)`); a tensor or an array.
        labels: `n` labels (the sentences or tokens), in the matrix's order.
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if `matrix` is not square 2-D, not finite, outside [-1, 1] (embeddings not normalised),
            or `labels` does not have one entry per row.
    """
    arr = np.asarray(matrix.detach().float().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"matrix must be square (n, n), got shape {arr.shape}; compute unit @ unit.T for "
                         "embeddings of shape (n, d)")
    n = arr.shape[0]
    if isinstance(labels, str) or len(labels) != n:
        got = "a single string" if isinstance(labels, str) else f"{len(labels)} labels"
        raise ValueError(f"labels must have one entry per row ({n}), got {got}")
    if not np.isfinite(arr).all():
        raise ValueError("matrix contains NaN or inf; check for all-zero embeddings (their norm is 0)")
    if np.abs(arr).max() > 1 + ROUNDING_SLACK:
        raise ValueError(f"cosine similarities lie in [-1, 1], got values up to {np.abs(arr).max():.3g}; "
                         "L2-normalise the embeddings first (torch.nn.functional.normalize(x, dim=-1))")
    if ax is None:
        side = min(3 + 0.45 * n, 10)
        _, ax = plt.subplots(figsize=(side + 2.5, side))
    cmap = plt.get_cmap(SIMILARITY_CMAP)
    image = ax.imshow(arr, cmap=cmap, vmin=-1.0, vmax=1.0)
    fontsize = 8 if n <= 10 else max(5.0, 80 / n)
    for (i, j), value in np.ndenumerate(arr):
        r, g, b, _ = cmap(image.norm(value))
        luminance = 0.299 * r + 0.587 * g + 0.114 * b  # ITU-R BT.601 luma: dark cells get white text
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize,
                color="white" if luminance < 0.5 else "black")
    ax.set_yticks(range(n), [f"{i}: {_short(label)}" for i, label in enumerate(labels)], fontsize=8)
    ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=8)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    if title is not None:
        ax.set_title(title)
    return ax
