"""A key-value cache for decoding, and what it costs in memory.

Chapter "Efficient attention" (chapters/05_efficient_attention). During generation token t's keys and values never
change once computed (a causal model: later tokens do not affect them), so each layer keeps them and the next step
computes only the new token's. `KVCache` is that store for `lab_utils.models.TinyTransformer` (its attention layers
call `update`); `kv_cache_bytes` is its size, `2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes`.
Shapes: keys and values `(B, n_kv_heads, T, head_dim)`, appended along T (dim -2), as in transformers' DynamicCache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lab_utils.masks import _check_size

__all__ = ["KVCache", "kv_cache_bytes"]


def kv_cache_bytes(
    *, n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, batch: int = 1, bytes_per_value: int = 2
) -> int:
    """Bytes of a KV cache: a key and a value vector per KV head, per layer, per token, per sequence.

    `2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes_per_value`. With multi-head attention
    `n_kv_heads = n_heads`; grouped-query attention (Ainslie et al. 2023) shares each KV head among
    `group_size = n_heads // n_kv_heads` query heads, multi-query attention (Shazeer 2019) has `n_kv_heads = 1`.
    Example: 32 layers, 32 heads of 128, 32,768 tokens in bf16: 17.18 GB; with 8 KV heads 4.29 GB.

    Args:
        n_layers: attention layers (each keeps its own keys and values).
        n_kv_heads: key/value heads per layer (not query heads).
        head_dim: size of one head's key (and value) vector.
        tokens: cached positions per sequence (prompt + generated).
        batch: sequences decoded together.
        bytes_per_value: 2 for bf16/fp16, 4 for fp32, 1 for an 8-bit cache.

    Returns:
        The size in bytes (divide by 1e9 for GB, by 2**30 for GiB).

    Raises:
        TypeError / ValueError: if an argument is not an int >= 1 (`tokens` may be 0).
    """
    for name, value in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                        ("batch", batch), ("bytes_per_value", bytes_per_value)):  # fmt: skip
        _check_size(name, value)
    _check_size("tokens", tokens, minimum=0)
    return 2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes_per_value  # 2: one K and one V


class KVCache:
    """Per-layer keys and values of the tokens seen so far, grown by `update` (one call per layer per step).

    A model that takes a cache reads `length` (the position of its first new token) before its layers run, then each
    attention layer calls `update(layer_idx, k, v)` with its new keys and values and attends to what it returns.

    Args:
        n_layers: number of attention layers of the model it serves.

    Example:
        >>> cache = KVCache(n_layers=2)
        >>> logits = model(prompt_ids, causal=True, cache=cache)   # prefill: every prompt token
        >>> logits = model(next_id, causal=True, cache=cache)      # decode: one token, positions from cache.length
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = _check_size("n_layers", n_layers)
        self.keys: list[Tensor | None] = [None] * n_layers  # each (B, n_kv_heads, T, head_dim)
        self.values: list[Tensor | None] = [None] * n_layers

    def _check_layer(self, layer_idx: int) -> None:
        if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx < self.n_layers:
            raise ValueError(f"layer_idx must be an int in [0, n_layers={self.n_layers}), got {layer_idx!r}")

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new keys and values of layer `layer_idx` and return all of that layer's.

        Args:
            layer_idx: which layer, `0 <= layer_idx < n_layers`.
            k: new keys `(B, n_kv_heads, T_new, head_dim)`.
            v: new values `(B, n_kv_heads, T_new, head_dim_v)`.

        Returns:
            `(k_all, v_all)`: `(B, n_kv_heads, T_cached + T_new, head_dim)` each, the old tokens first.

        Raises:
            ValueError: on a bad `layer_idx`, or keys/values whose batch, heads or head size differ from those cached.
        """
        self._check_layer(layer_idx)
        if k.ndim != 4 or v.ndim != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k and v must be (B, n_kv_heads, T_new, head_dim) with the same B, heads and T_new, "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k is None:
            self.keys[layer_idx], self.values[layer_idx] = k, v
        else:
            if old_k.shape[:2] != k.shape[:2] or old_k.shape[-1] != k.shape[-1] or old_v.shape[-1] != v.shape[-1]:
                raise ValueError(f"layer {layer_idx} caches keys {tuple(old_k.shape)}; new keys {tuple(k.shape)} "
                                 "must have the same batch, heads and head size (call reset() for a new batch)")
            self.keys[layer_idx] = torch.cat([old_k, k], dim=-2)  # (B, n_kv_heads, T_cached + T_new, head_dim)
            self.values[layer_idx] = torch.cat([old_v, v], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    @property
    def length(self) -> int:
        """Tokens cached (in layer 0, which a forward pass updates first): the position of the next new token."""
        k = self.keys[0]
        return 0 if k is None else k.shape[-2]

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values of all layers (equals `kv_cache_bytes` of the same sizes)."""
        tensors = [t for t in (*self.keys, *self.values) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def reset(self) -> None:
        """Forget every cached token (e.g. before a new prompt)."""
        self.keys = [None] * self.n_layers
        self.values = [None] * self.n_layers

    def __repr__(self) -> str:
        return f"KVCache(n_layers={self.n_layers}, length={self.length}, nbytes={self.nbytes():,})"
