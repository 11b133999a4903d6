"""Boolean attention masks: causal (decoder), bidirectional (encoder) and padding.

Chapter "Encoders and decoders" (chapters/01_transformers): an encoder and a decoder differ by their mask
alone (Vaswani et al. 2017, §3.2.3; Devlin et al. 2019; Radford et al. 2018). Convention: masks are `bool`,
**True = may attend** (PyTorch SDPA), shape `(T_q, T_k)` or broadcastable to `(B, n_heads, T_q, T_k)`.
Masks are built from absolute positions, so KV-cache decoding reuses `causal_mask` with an `offset`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bidirectional_mask", "causal_mask", "combine_masks", "padding_mask"]


def _check_size(name: str, value: object, *, minimum: int = 1) -> int:
    """Return `value` if it is an int >= `minimum`, else raise a message naming the argument."""
    # bool is a subclass of int: `causal_mask(True)` is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def causal_mask(
    T_q: int, T_k: int | None = None, *, offset: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """Causal (decoder) mask: each query may attend to its own position and the ones before it.

    Query `i` sits at absolute position `offset + i`, key `j` at position `j`; query `i` may attend key `j`
    iff `j <= offset + i`. With a KV cache holding `offset` earlier tokens, pass `T_k = offset + T_q`.

    Args:
        T_q: number of queries (>= 1).
        T_k: number of keys (>= 1); defaults to `offset + T_q`.
        offset: absolute position of the first query (>= 0), i.e. how many tokens came before it.
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T_q, T_k)`, True = may attend. Row `i` has `min(offset + i + 1, T_k)` True entries.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if `T_q` or `T_k` is < 1 or `offset` is negative.
    """
    _check_size("T_q", T_q)
    _check_size("offset", offset, minimum=0)
    T_k = offset + T_q if T_k is None else _check_size("T_k", T_k)
    q_pos = torch.arange(offset, offset + T_q, device=device)  # (T_q,) absolute query positions
    k_pos = torch.arange(T_k, device=device)  # (T_k,) absolute key positions
    return k_pos[None, :] <= q_pos[:, None]  # (T_q, T_k)


def bidirectional_mask(T_q: int, T_k: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Bidirectional (encoder) mask: every query may attend to every key.

    Equivalent to passing no mask at all; it exists so that an encoder and a decoder can be written
    with the same code path, differing only in which mask they build.

    Args:
        T_q: number of queries (>= 1).
        T_k: number of keys (>= 1); defaults to `T_q`.
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T_q, T_k)`, all True.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if a size is < 1.
    """
    _check_size("T_q", T_q)
    T_k = T_q if T_k is None else _check_size("T_k", T_k)
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device)  # (T_q, T_k)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Key mask from a tokenizer's `attention_mask` (1 = real token, 0 = padding).

    Args:
        attention_mask: `(B, T)` tensor of 0/1 integers or bools, as returned by a Hugging Face tokenizer.

    Returns:
        Bool tensor of shape `(B, 1, 1, T)`, True where the key is a real token. It broadcasts against
        attention scores `(B, n_heads, T_q, T)`: padded *keys* are hidden from every query.

    Raises:
        TypeError: if `attention_mask` is not a tensor or has a floating-point dtype.
        ValueError: if it is not 2-D or holds values other than 0 and 1.
    """
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError(
            f"attention_mask must hold 0/1 integers or bools, got dtype {attention_mask.dtype}; "
            "floating-point masks are additive (0 / -inf) in some libraries, so they are refused here"
        )
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got shape {tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool:
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must contain only 0 (padding) and 1 (real token)")
        attention_mask = attention_mask.bool()
    return attention_mask[:, None, None, :]  # (B, 1, 1, T)


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Combine masks with logical AND (a key is visible only if every mask allows it), with broadcasting.

    Example: `combine_masks(causal_mask(T), padding_mask(am))` has shape `(B, 1, T, T)`.

    Args:
        *masks: bool tensors with broadcastable shapes; `None` entries (no mask) are skipped.

    Returns:
        The broadcast AND of the masks, or `None` if every entry is `None`.

    Raises:
        TypeError: if an entry is not a bool tensor.
        ValueError: if the shapes do not broadcast.
    """
    present = [m for m in masks if m is not None]
    for i, m in enumerate(present):
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            kind = m.dtype if isinstance(m, Tensor) else type(m).__name__
            raise TypeError(f"every mask must be a bool tensor (True = may attend), mask {i} is {kind}")
    if not present:
        return None
    try:
        torch.broadcast_shapes(*(m.shape for m in present))
    except RuntimeError as err:
        shapes = ", ".join(str(tuple(m.shape)) for m in present)
        raise ValueError(f"mask shapes do not broadcast: {shapes}") from err
    out = present[0]
    for m in present[1:]:
        out = out & m  # broadcasts, e.g. (T, T) & (B, 1, 1, T) -> (B, 1, T, T)
    return out
