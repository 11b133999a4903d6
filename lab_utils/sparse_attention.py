"""Causal sliding-window attention without the `T x T` score matrix, and windowed evaluation of a causal LM.

Chapter "Efficient attention" (chapters/05_efficient_attention). Dense masked attention computes all `T^2` scores
and then throws away those outside the window; `banded_attention` computes only the band. Queries are cut into
blocks of `window` tokens; the keys a block needs lie in the same block and the one before it, so each block
costs a `window x 2 window` score tile: `2 T window` scores in all instead of `T^2` (Beltagy et al. 2020 use the
same idea). `windowed_nll` measures what the window costs a pretrained model: the next-token loss of a long text
when each token sees only the last `window` tokens, optionally plus the first `n_sink` "attention sinks"
(Xiao et al. 2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lab_utils.masks import _check_size, causal_mask, combine_masks, sink_mask, sliding_window_mask, union_masks

__all__ = ["banded_attention", "dense_window_attention", "window_mask", "windowed_nll"]


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{name} needs at least 2 dims (..., T, d), got shape {tuple(t.shape)}")
    if q.shape[:-1] != k.shape[:-1] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            "q, k and v must share (..., T) (self-attention over one sequence), got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim d, got {q.shape[-1]} and {k.shape[-1]}")


def window_mask(T: int, *, window: int, n_sink: int = 0, device: torch.device | str | None = None) -> Tensor:
    """Causal sliding window of `window` keys, plus the first `n_sink` tokens for every query (attention sinks).

    `combine_masks(union_masks(sliding_window_mask, sink_mask), causal_mask)`, shape `(T, T)`, True = may attend.

    Args:
        T: sequence length (>= 1).
        window: keys in the sliding window, the query itself included (>= 1).
        n_sink: sink tokens at the start that every later query may also attend to (>= 0).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T, T)`.
    """
    local = sliding_window_mask(T, window=window, device=device)
    sinks = sink_mask(T, n_sink=n_sink, device=device)
    return combine_masks(union_masks(local, sinks), causal_mask(T, device=device))


def dense_window_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int) -> Tensor:
    """Reference: causal sliding-window attention the dense way, materialising all `T x T` scores then masking.

    Args:
        q: queries `(..., T, d)`.
        k: keys `(..., T, d)`.
        v: values `(..., T, d_v)`.
        window: keys per query, itself included (>= 1).

    Returns:
        Output of shape `(..., T, d_v)`.

    Raises:
        TypeError, ValueError: on non-tensors, mismatched shapes or `window` < 1.
    """
    _check_qkv(q, k, v)
    _check_size("window", window)
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, T): quadratic memory
    scores = scores.masked_fill(~sliding_window_mask(T, window=window, device=q.device), float("-inf"))
    return scores.softmax(dim=-1) @ v  # every row keeps its diagonal, so no row is all -inf


def banded_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int) -> Tensor:
    """Causal sliding-window attention in `O(T * window)` memory, equal to dense masked attention.

    Query `i` attends keys `i - window < j <= i` (`masks.sliding_window_mask`). The sequence is padded to a
    multiple of `window` and cut into blocks of `window` queries; block `b` needs only key blocks `b - 1` and `b`,
    so each block computes a `(window, 2 window)` tile of scores, masked to the band. Peak extra memory is
    `2 * T * window` scores (plus copies of k and v), against `T^2` for `dense_window_attention`.

    Args:
        q: queries `(..., T, d)`.
        k: keys `(..., T, d)`.
        v: values `(..., T, d_v)`.
        window: keys per query, itself included (>= 1). `window >= T` gives ordinary causal attention.

    Returns:
        Output of shape `(..., T, d_v)`, allclose to `dense_window_attention(q, k, v, window=window)` and to
        `F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(T, window=window))`.

    Raises:
        TypeError, ValueError: on non-tensors, mismatched shapes or `window` < 1.
    """
    _check_qkv(q, k, v)
    _check_size("window", window)
    T, w = q.shape[-2], min(window, q.shape[-2])  # a window longer than the sequence is plain causal attention
    n_blocks = -(-T // w)
    pad = n_blocks * w - T  # padded queries are dropped at the end; padded keys lie in every real query's future
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (..., n_blocks * w, d)
    batch = q.shape[:-2]
    qb = q.reshape(*batch, n_blocks, w, q.shape[-1])  # (..., n_blocks, w, d)
    kb = k.reshape(*batch, n_blocks, w, k.shape[-1])
    vb = v.reshape(*batch, n_blocks, w, v.shape[-1])
    # Keys of block b: the previous block then block b itself (block -1 is zeros, masked below).
    k2 = torch.cat([F.pad(kb, (0, 0, 0, 0, 1, 0))[..., :-1, :, :], kb], dim=-2)  # (..., n_blocks, 2w, d)
    v2 = torch.cat([F.pad(vb, (0, 0, 0, 0, 1, 0))[..., :-1, :, :], vb], dim=-2)  # (..., n_blocks, 2w, d_v)
    scores = qb @ k2.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., n_blocks, w, 2w): the band, tiled
    # Query a of block b is at b*w + a, key c of the tile at (b-1)*w + c: allowed iff
    # b*w + a - window < (b-1)*w + c <= b*w + a, i.e. a + w - window < c <= a + w (a < c <= a + w when w == window).
    a = torch.arange(w, device=q.device)[:, None]
    c = torch.arange(2 * w, device=q.device)[None, :]
    band = (c > a + w - window) & (c <= a + w)  # (w, 2w), identical for every block
    first = band & (c >= w)  # block 0: its "previous block" is padding
    allowed = torch.stack([first, *([band] * (n_blocks - 1))]) if n_blocks > 1 else first[None]  # (n_blocks, w, 2w)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(dim=-1) @ v2  # (..., n_blocks, w, d_v)
    return out.reshape(*batch, n_blocks * w, v.shape[-1])[..., :T, :]


@torch.no_grad()
def windowed_nll(model: torch.nn.Module, ids: Tensor, *, window: int | None, n_sink: int = 0) -> float:
    """Mean next-token negative log-likelihood (nats) of a causal LM when each token sees only a window of context.

    One forward pass over the whole sequence with a custom 4-D bool attention mask (`window_mask`): token `t`
    attends to tokens `t - window + 1 .. t` and to the first `n_sink` tokens (attention sinks, Xiao et al. 2023).
    Tokens keep their absolute positions (with RoPE, a sink at position 0 seen from position 1000 is 1000 positions
    away, as in the full-attention model); StreamingLLM instead re-numbers positions inside its rolling cache.
    The model still *runs* dense attention (cost unchanged): this measures what the window does to quality.
    Tested for transformers' Llama (SmolLM2) with the SDPA (default) and eager attention implementations: a
    4-D mask equal to the causal one gives exactly the logits of no mask.

    Args:
        model: a transformers causal LM accepting `attention_mask` of shape `(B, 1, T, T)` (bool, True = attend).
        ids: token ids, shape `(T,)` or `(B, T)` (B sequences of the same length, no padding).
        window: keys per token, itself included (>= 1); None = full causal attention (no custom mask).
        n_sink: sink tokens (>= 0).

    Returns:
        The mean NLL over the `B * (T - 1)` predicted tokens; `exp` of it is the perplexity.

    Raises:
        TypeError, ValueError: on a bad `ids` shape or bad window / sink sizes.
    """
    if not isinstance(ids, Tensor) or ids.is_floating_point():
        raise TypeError("ids must be an integer tensor of token ids")
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must have shape (T,) or (B, T) with T >= 2, got {tuple(ids.shape)}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.shape[1]
    if window is None:
        _check_size("n_sink", n_sink, minimum=0)
        logits = model(input_ids=ids).logits
    else:
        mask = window_mask(T, window=window, n_sink=n_sink, device=device)[None, None]  # (1, 1, T, T)
        logits = model(input_ids=ids, attention_mask=_as_model_mask(model, mask)).logits
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()))


def _as_model_mask(model: torch.nn.Module, mask: Tensor) -> Tensor:
    """A custom 4-D bool mask in the form the model's attention implementation takes as is (transformers 5).

    transformers passes a 4-D mask through unchanged (`masking_utils`): SDPA wants bool (True = attend), the
    eager implementation *adds* the mask to the scores, so it needs 0 / large negative floats.
    """
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
    if impl == "sdpa":
        return mask
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    raise ValueError(
        f"windowed_nll supports the 'sdpa' and 'eager' attention implementations, the model uses {impl!r}; "
        "load it with attn_implementation='sdpa'"
    )
