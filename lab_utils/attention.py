"""Scaled dot-product and multi-head attention, written out (Vaswani et al. 2017, §3.2).

Chapter "Encoders and decoders" (chapters/01_transformers): one `MultiHeadAttention` serves as encoder
self-attention, decoder (causal) self-attention and cross-attention; only the mask and the source of the
keys/values change. Masks are bool, True = may attend (see `lab_utils.masks`); shapes `(B, n_heads, T, head_dim)`.
A query whose keys are all masked gets zero weights and a zero output, as `F.scaled_dot_product_attention` does.
Chapter "Efficient attention": grouped-query attention (Ainslie et al. 2023; `n_kv_heads` key/value heads, each
shared by `group_size = n_heads // n_kv_heads` query heads; multi-query attention, Shazeer 2019, is `n_kv_heads=1`)
and a KV cache (`lab_utils.kv_cache.KVCache`) are arguments of the same `MultiHeadAttention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lab_utils.kv_cache import KVCache
from lab_utils.masks import _check_size

__all__ = ["MultiHeadAttention", "attention_weights", "repeat_kv", "scaled_dot_product_attention"]


def _check_mask(mask: Tensor | None, T_q: int, T_k: int) -> None:
    """Raise if `mask` is not a bool tensor whose last two dims broadcast to `(T_q, T_k)`."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        kind = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(
            f"mask must be a bool tensor (True = may attend), got {kind}; build it with lab_utils.masks "
            "or convert a 0/1 mask with `.bool()`"
        )
    if mask.ndim < 2 or mask.shape[-2] not in (1, T_q) or mask.shape[-1] not in (1, T_k):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to (..., T_q={T_q}, T_k={T_k})")


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention weights `softmax(q k^T / sqrt(d))` with masked keys removed.

    Args:
        q: queries, shape `(..., T_q, d)`.
        k: keys, shape `(..., T_k, d)`.
        mask: bool, broadcastable to `(..., T_q, T_k)`; True = may attend. `None` = attend everywhere.

    Returns:
        Weights of shape `(..., T_q, T_k)`; each row sums to 1, or is all zeros if every key of that row is masked
        (instead of the NaN a plain softmax over `-inf` would give).

    Raises:
        TypeError: if `mask` is not bool.
        ValueError: if shapes do not match.
    """
    if q.ndim < 2 or k.ndim < 2:
        raise ValueError(f"q and k need at least 2 dims (..., T, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim d, got {q.shape[-1]} and {k.shape[-1]}")
    _check_mask(mask, q.shape[-2], k.shape[-2])
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k); 1/sqrt(d) keeps var ~ 1 (§3.2.1)
    if mask is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: masked keys get weight 0
    weights = scores.softmax(dim=-1)  # a row of only -inf gives 0/0 = NaN ...
    return weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # ... so zero those rows


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """`softmax(q k^T / sqrt(d)) v`, the reference for `torch.nn.functional.scaled_dot_product_attention`.

    Args:
        q: queries, shape `(..., T_q, d)`.
        k: keys, shape `(..., T_k, d)`.
        v: values, shape `(..., T_k, d_v)`.
        mask: bool, broadcastable to `(..., T_q, T_k)`; True = may attend. `None` = attend everywhere.
        dropout_p: dropout probability on the weights (0 at evaluation time).

    Returns:
        `(out, weights)`: `out` of shape `(..., T_q, d_v)` (zeros for fully masked queries) and the weights
        `(..., T_q, T_k)` before dropout, ready to plot.

    Raises:
        TypeError: if `mask` is not bool.
        ValueError: if shapes do not match or `dropout_p` is outside [0, 1).
    """
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of keys T_k, got {k.shape[-2]} and {v.shape[-2]}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    weights = attention_weights(q, k, mask)  # (..., T_q, T_k)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def repeat_kv(x: Tensor, group_size: int) -> Tensor:
    """Repeat each key/value head `group_size` times, so that query head `h` meets KV head `h // group_size`.

    The same as `torch.repeat_interleave(x, group_size, dim=1)` and transformers' `repeat_kv`, and what
    `F.scaled_dot_product_attention(..., enable_gqa=True)` does internally.

    Args:
        x: keys or values, `(B, n_kv_heads, T, head_dim)`.
        group_size: query heads per KV head, `n_heads // n_kv_heads` (1 = multi-head attention: `x` itself).

    Returns:
        `(B, n_kv_heads * group_size, T, head_dim)`: heads `[0, 0, .., 1, 1, ..]` (each one `group_size` times).

    Raises:
        TypeError / ValueError: if `group_size` is not an int >= 1 or `x` is not 4-D.
    """
    _check_size("group_size", group_size)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, n_kv_heads, T, head_dim), got {tuple(x.shape)}")
    if group_size == 1:
        return x
    B, n_kv, T, hs = x.shape
    return x[:, :, None].expand(B, n_kv, group_size, T, hs).reshape(B, n_kv * group_size, T, hs)  # (B, nh, T, hs)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, §3.2.2): self-attention or cross-attention.

    Self-attention: `forward(x, mask=...)` (encoder: no mask or a padding mask; decoder: a causal mask).
    Cross-attention: `forward(x, context=enc_out, mask=...)`: queries from `x`, keys and values from `context`.
    Grouped-query attention: `n_kv_heads < n_heads` key/value heads, each serving `group_size` consecutive query
    heads (multi-query attention: `n_kv_heads=1`). Decoding with a cache: `forward(x_new, mask=..., cache=cache,
    layer_idx=i)` attends from the new tokens to every cached key (the mask is `(T_new, T_cached + T_new)`).

    Args:
        d_model: model width; must be divisible by `n_heads`.
        n_heads: number of query heads; each has `head_dim = d_model // n_heads`.
        n_kv_heads: number of key/value heads; `n_heads` must be divisible by it. None = `n_heads` (multi-head).
        bias: whether the four projections have a bias.
        dropout: dropout probability on the attention weights during training.

    Attributes:
        group_size: query heads per KV head, `n_heads // n_kv_heads`.
        attn_weights: `(B, n_heads, T_q, T_k)` weights of the last call with `need_weights=True`, else None.
    """

    def __init__(
        self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None, bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1:
            raise ValueError(f"d_model and n_heads must be >= 1, got d_model={d_model}, n_heads={n_heads}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        n_kv_heads = n_heads if n_kv_heads is None else _check_size("n_kv_heads", n_kv_heads)
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads}): each KV head "
                             f"serves group_size = n_heads // n_kv_heads query heads (n_kv_heads=1 is MQA)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.group_size = n_heads // n_kv_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)  # MHA: d_model -> d_model
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_weights: Tensor | None = None

    def _split_heads(self, x: Tensor, n_heads: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n_heads, self.head_dim).transpose(1, 2)  # (B, n_heads, T, hs)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        cache: KVCache | None = None,
        layer_idx: int | None = None,
    ) -> Tensor:
        """Attend from `x` to `context` (or to `x` itself when `context` is None).

        Args:
            x: queries' input, shape `(B, T_q, d_model)`.
            context: keys' and values' input, shape `(B, T_k, d_model)`; None for self-attention.
            mask: bool, True = may attend; shape `(T_q, T_k)`, `(B, 1, 1, T_k)` or `(B, 1 | n_heads, T_q, T_k)`.
                With a cache, `T_k` counts the cached keys too (e.g. `causal_mask(T_q, offset=cache.length)`).
            need_weights: store the attention weights in `self.attn_weights` (detached) for plotting.
            cache: a `lab_utils.kv_cache.KVCache` (self-attention only): the new keys and values are appended to
                layer `layer_idx`'s, and the queries attend to all of them.
            layer_idx: this layer's index in the cache; required with `cache`.

        Returns:
            Tensor of shape `(B, T_q, d_model)`.

        Raises:
            ValueError: if shapes do not match (a 3-D mask is refused: unsqueeze its head dim, `mask[:, None]`),
                or `cache` comes with a `context` or without a `layer_idx`.
            TypeError: if `mask` is not bool.
        """
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, d_model={self.d_model}), got {tuple(x.shape)}")
        context = x if context is None else context
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != self.d_model:
            raise ValueError(
                f"context must have shape (B={x.shape[0]}, T_k, d_model={self.d_model}), got {tuple(context.shape)}"
            )
        if mask is not None and mask.ndim not in (2, 4):
            # A (B, T_q, T_k) mask would silently broadcast B against the head dim.
            raise ValueError(f"mask must be 2-D (T_q, T_k) or 4-D (B, 1, T_q, T_k), got shape {tuple(mask.shape)}")
        if cache is not None and (context is not x or layer_idx is None):
            raise ValueError("a KV cache serves self-attention: pass cache= with layer_idx= and without context=")
        B, T_q, _ = x.shape
        q = self._split_heads(self.q_proj(x), self.n_heads)  # (B, nh, T_q, hs)
        k = self._split_heads(self.k_proj(context), self.n_kv_heads)  # (B, n_kv, T_k, hs)
        v = self._split_heads(self.v_proj(context), self.n_kv_heads)  # (B, n_kv, T_k, hs)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)  # (B, n_kv, T_cached + T_k, hs): the cache keeps n_kv heads only
        k, v = repeat_kv(k, self.group_size), repeat_kv(v, self.group_size)  # (B, nh, T_k, hs): one per query head
        p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # (B, nh, T_q, hs)
        self.attn_weights = weights.detach() if need_weights else None  # (B, nh, T_q, T_k)
        out = out.transpose(1, 2).reshape(B, T_q, self.d_model)  # (B, T_q, nh * hs): heads side by side
        return self.out_proj(out)  # (B, T_q, d_model)
