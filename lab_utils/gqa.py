"""Grouped-query attention in a pretrained model: its KV-cache size, and converting it to fewer KV heads.

Chapter "Efficient attention" (chapters/05_efficient_attention). Ainslie et al. (2023, §2.1) turn a multi-head
checkpoint into a grouped-query one by mean-pooling the key and value heads of each group, then train a little
more ("uptraining"); `mean_pool_kv_heads` does the pooling, in place, on a transformers Llama-family model
(SmolLM2). Query head `h` uses KV head `h // group_size`, `group_size = n_heads // n_kv_heads`, as in transformers'
`repeat_kv`. Sizes are read from a transformers config: `num_hidden_layers`, `num_attention_heads`,
`num_key_value_heads`, `head_dim`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lab_utils.kv_cache import kv_cache_bytes
from lab_utils.masks import _check_size

__all__ = ["kv_cache_bytes", "kv_heads_attention_modules", "mean_pool_kv_heads", "model_kv_cache_bytes"]


def _head_dim(config: object) -> int:
    head_dim = getattr(config, "head_dim", None)  # may differ from hidden_size // num_attention_heads (Gemma)
    return head_dim if head_dim is not None else config.hidden_size // config.num_attention_heads


def model_kv_cache_bytes(config: object, *, tokens: int, batch: int = 1, bytes_per_value: int = 2) -> int:
    """`kv_cache_bytes` with the sizes of a transformers config (e.g. `model.config`).

    Args:
        config: a transformers config with `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads` and
            `head_dim` (or `hidden_size`).
        tokens: cached positions per sequence.
        batch: sequences.
        bytes_per_value: 2 for bf16/fp16, 4 for fp32.

    Returns:
        `2 * num_hidden_layers * num_key_value_heads * head_dim * tokens * batch * bytes_per_value`.
    """
    n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads  # None in old configs = MHA
    return kv_cache_bytes(n_layers=config.num_hidden_layers, n_kv_heads=n_kv, head_dim=_head_dim(config),
                          tokens=tokens, batch=batch, bytes_per_value=bytes_per_value)


def kv_heads_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules of a transformers Llama-family model, in layer order (those with `k_proj`, `v_proj`
    and `num_key_value_groups`, as `LlamaAttention` has)."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "k_proj", None), nn.Linear) and isinstance(getattr(m, "v_proj", None), nn.Linear)
            and hasattr(m, "num_key_value_groups")]  # fmt: skip


def _pool_linear(linear: nn.Linear, n_old: int, n_new: int, head_dim: int) -> nn.Linear:
    """A new linear whose output heads are the means of groups of `n_old // n_new` consecutive heads of `linear`."""
    r = n_old // n_new  # old KV heads merged into one
    pooled = nn.Linear(linear.in_features, n_new * head_dim, bias=linear.bias is not None,
                       device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        w = linear.weight.float().view(n_new, r, head_dim, linear.in_features).mean(1)  # (n_new, hd, in)
        pooled.weight.copy_(w.reshape(n_new * head_dim, linear.in_features))
        if linear.bias is not None:
            pooled.bias.copy_(linear.bias.float().view(n_new, r, head_dim).mean(1).reshape(-1))
    pooled.weight.requires_grad_(linear.weight.requires_grad)
    return pooled


@torch.no_grad()
def mean_pool_kv_heads(model: nn.Module, n_kv_heads: int, *, layers: Sequence[int] | None = None) -> nn.Module:
    """Convert a transformers Llama-family model to `n_kv_heads` KV heads per layer by mean-pooling, in place.

    Each group of `r = num_key_value_heads // n_kv_heads` consecutive KV heads is replaced by its mean: the rows of
    `k_proj` and `v_proj` (weight and bias) of those heads are averaged. Query head `h`, which used old KV head
    `h // old_group_size`, now uses the mean of the group that contains it, `h // (old_group_size * r)`. The
    rotary embedding is applied after `k_proj` and rotates every head alike, so pooling the projections pools the
    keys exactly. Updated: every attention module's `k_proj`, `v_proj` and `num_key_value_groups`, and
    `config.num_key_value_heads` (what transformers' caches read).

    With `layers`, only those layers are pooled, to see where pooling hurts. The layers then differ in their number
    of KV heads, which one config value cannot describe: `config.num_key_value_heads` is left as it was, which
    transformers' default `DynamicCache` does not read, but a static cache (sized from the config) would.

    Args:
        model: e.g. `lab_utils.assets.load_smollm2()` (9 query heads, 3 KV heads per layer).
        n_kv_heads: the new number of KV heads: it must divide the current number (pooling merges whole heads);
            1 = multi-query attention, the current number = no change.
        layers: indices of the layers to pool (default: all).

    Returns:
        `model` itself, converted (copy it first, `copy.deepcopy(model)`, to keep the original).

    Raises:
        TypeError / ValueError: if the model has no Llama-style attention modules or `n_kv_heads` does not divide
            the current number of KV heads.
    """
    _check_size("n_kv_heads", n_kv_heads)
    config = getattr(model, "config", None)
    if not hasattr(config, "num_attention_heads"):
        raise TypeError(f"model must be a transformers model with a config (num_attention_heads, "
                        f"num_key_value_heads), got {type(model).__name__}")
    modules = kv_heads_attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no Llama-style attention modules (k_proj, v_proj, "
                         "num_key_value_groups); mean_pool_kv_heads converts transformers Llama-family models")
    n_heads = config.num_attention_heads
    n_old = getattr(config, "num_key_value_heads", None) or n_heads
    if n_old % n_kv_heads != 0:
        raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide the model's current num_key_value_heads ({n_old}): "
                         f"mean-pooling merges whole heads, so choose among "
                         f"{[d for d in range(1, n_old + 1) if n_old % d == 0]}")
    head_dim = _head_dim(config)
    chosen = range(len(modules)) if layers is None else list(layers)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(modules) for i in chosen):
        raise ValueError(f"layers must be indices in [0, {len(modules)}), got {list(chosen)}")
    for attn in (modules[i] for i in sorted(set(chosen))):
        if attn.k_proj.out_features != n_old * head_dim:
            raise ValueError(f"an attention module has k_proj.out_features={attn.k_proj.out_features}, expected "
                             f"num_key_value_heads * head_dim = {n_old} * {head_dim}: was it converted already?")
        attn.k_proj = _pool_linear(attn.k_proj, n_old, n_kv_heads, head_dim)  # (n_kv_heads * hd, hidden)
        attn.v_proj = _pool_linear(attn.v_proj, n_old, n_kv_heads, head_dim)
        attn.num_key_value_groups = n_heads // n_kv_heads  # what repeat_kv / SDPA's enable_gqa read
    if len(set(chosen)) == len(modules):
        config.num_key_value_heads = n_kv_heads  # one config object is shared by the model and its layers
    return model
