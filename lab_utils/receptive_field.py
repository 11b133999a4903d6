"""Receptive field of stacked sparse attention: which input tokens can reach an output after L layers.

Chapter "Efficient attention" (chapters/05_efficient_attention). One attention layer with mask `M` (bool,
True = may attend, shape `(T, T)`) lets output `i` read input `j` iff `M[i, j]`; the residual connection also
carries `x_i` itself to output `i`, so one layer connects `A = M | I`. Stacking `L` layers composes the
connections: the receptive field is the boolean matrix power `A^L` (`R[i, j]` True iff some path
`j -> ... -> i` of `L` hops exists). For a causal sliding window of `window` keys each hop reaches `window - 1`
tokens further back, hence the closed form `(window - 1) * L + 1` (Beltagy et al. 2020), e.g. 3 layers with a
window of 4: output 11 sees tokens 2..11, 10 tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lab_utils.masks import _check_size

__all__ = ["receptive_field", "receptive_field_row", "receptive_field_size", "receptive_field_span"]


def _check_square_mask(mask: object) -> Tensor:
    """`mask` if it is a square 2-D bool tensor, else a clear error."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}; convert with `.bool()`")
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(
            f"mask must be a square (T, T) self-attention mask to be stacked over layers, got shape {tuple(mask.shape)}"
        )
    return mask


def _one_layer(mask: Tensor) -> Tensor:
    """Connections of one layer as float 0/1: attention `mask` plus the residual path (the diagonal)."""
    eye = torch.eye(mask.shape[0], dtype=torch.bool, device=mask.device)
    return (mask | eye).float()  # float matmul: exact 0/1 reachability counts up to 2**24


def receptive_field(mask: Tensor, n_layers: int) -> Tensor:
    """Which inputs reach each output after `n_layers` layers with the same attention mask, by propagation.

    Computes the boolean matrix power `(mask | I)^n_layers` by `n_layers` products: `R_0 = I`,
    `R_{l+1} = (mask | I) R_l`. The identity stands for the residual connection, which always carries a token's own
    input forward (for a causal sliding-window mask the diagonal is in the mask anyway).

    Args:
        mask: bool `(T, T)` self-attention mask, True = may attend (e.g. `masks.sliding_window_mask(T, window=4)`).
        n_layers: number of stacked layers (>= 0; 0 gives the identity: each output is its own input).

    Returns:
        Bool tensor `R` of shape `(T, T)`: `R[i, j]` True iff input `j` can influence output `i`.

    Raises:
        TypeError: if `mask` is not a bool tensor or `n_layers` is not an int.
        ValueError: if `mask` is not square 2-D or `n_layers` < 0.
    """
    mask = _check_square_mask(mask)
    _check_size("n_layers", n_layers, minimum=0)
    step = _one_layer(mask)  # (T, T)
    reach = torch.eye(mask.shape[0], device=mask.device)  # (T, T), R_0 = I
    for _ in range(n_layers):
        reach = ((step @ reach) > 0).float()  # one more hop; clamp to 0/1 so counts never grow
    return reach.bool()


def receptive_field_row(mask: Tensor, n_layers: int, position: int) -> Tensor:
    """The inputs reaching output `position` after `n_layers` layers: row `position` of `receptive_field`.

    Propagates a single row vector (`r <- r (mask | I)`), `O(n_layers * T^2)` instead of a `T x T` matrix power.

    Args:
        mask: bool `(T, T)` self-attention mask, True = may attend.
        n_layers: number of layers (>= 0).
        position: the output position, in `[0, T)`.

    Returns:
        Bool tensor of shape `(T,)`: True for every input position that reaches the output.

    Raises:
        TypeError: if `mask` is not a bool tensor or an integer argument is not an int.
        ValueError: if `mask` is not square, `n_layers` < 0 or `position` is outside `[0, T)`.
    """
    mask = _check_square_mask(mask)
    _check_size("n_layers", n_layers, minimum=0)
    T = mask.shape[0]
    _check_size("position", position, minimum=0)
    if position >= T:
        raise ValueError(f"position must lie in [0, T) = [0, {T}), got {position}")
    step = _one_layer(mask)
    row = torch.zeros(T, device=mask.device)
    row[position] = 1.0
    for _ in range(n_layers):
        row = ((row @ step) > 0).float()  # inputs one more hop back
    return row.bool()


def receptive_field_span(mask: Tensor, n_layers: int, position: int) -> tuple[int, int]:
    """First and last input positions reaching output `position` after `n_layers` layers.

    For a (dilated) window the field may have holes; the span is its extent, `last - first + 1` positions.

    Args:
        mask: bool `(T, T)` self-attention mask, True = may attend.
        n_layers: number of layers (>= 0).
        position: the output position, in `[0, T)`.

    Returns:
        `(first, last)` as ints; for a causal mask `last == position`.

    Raises:
        TypeError, ValueError: as `receptive_field_row`.
    """
    reached = receptive_field_row(mask, n_layers, position).nonzero().flatten()  # never empty: the residual path
    return int(reached.min()), int(reached.max())


def receptive_field_size(window: int, n_layers: int) -> int:
    """Closed form of the receptive field of a causal sliding window: `(window - 1) * n_layers + 1` tokens.

    Each layer lets a token read the `window - 1` tokens before it, so `n_layers` layers reach
    `(window - 1) * n_layers` tokens back, plus the token itself. Valid away from the start of the sequence
    (for output `i` the field is `min(i + 1, size)` tokens: it cannot reach before position 0).

    Args:
        window: keys per causal window, the query itself included (>= 1).
        n_layers: number of layers (>= 0).

    Returns:
        The number of input tokens that reach one output.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if `window` < 1 or `n_layers` < 0.
    """
    _check_size("window", window)
    _check_size("n_layers", n_layers, minimum=0)
    return (window - 1) * n_layers + 1
