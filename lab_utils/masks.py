"""Boolean attention masks: causal (decoder), bidirectional (encoder) and padding.

Chapter "Encoders and decoders" (chapters/01_transformers): an encoder and a decoder differ by their mask
alone (Vaswani et al. 2017, §3.2.3; Devlin et al. 2019; Radford et al. 2018). Convention: masks are `bool`,
**True = may attend** (PyTorch SDPA), shape `(T_q, T_k)` or broadcastable to `(B, n_heads, T_q, T_k)`.
Masks are built from absolute positions, so KV-cache decoding reuses `causal_mask` with an `offset`.

Chapter "Efficient attention" (chapters/05_efficient_attention) adds the sparse patterns: local
(`sliding_window_mask`), dilated (`dilated_window_mask`), global tokens, BigBird's random blocks and attention
sinks, combined by `union_masks` (OR) into `longformer_mask` and `bigbird_mask` (Beltagy et al. 2020;
Zaheer et al. 2020; Xiao et al. 2023). `lab_utils.receptive_field` propagates them through layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "bidirectional_mask",
    "bigbird_mask",
    "causal_mask",
    "combine_masks",
    "dilated_window_mask",
    "global_tokens_mask",
    "longformer_mask",
    "padding_mask",
    "random_block_choice",
    "random_blocks_mask",
    "sink_mask",
    "sliding_window_mask",
    "union_masks",
]


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


# ---------------------------------------------------------------------------------------------------------------
# Sparse masks (chapter "Efficient attention", chapters/05_efficient_attention): local (sliding-window), dilated,
# global tokens, random blocks and attention sinks, and their unions (Longformer, BigBird, StreamingLLM).
# ---------------------------------------------------------------------------------------------------------------

def _positions(T_q: int, T_k: int | None, offset: int, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """Validated absolute query positions `(T_q, 1)` and key positions `(1, T_k)`; `T_k` defaults to offset + T_q."""
    _check_size("T_q", T_q)
    _check_size("offset", offset, minimum=0)
    T_k = offset + T_q if T_k is None else _check_size("T_k", T_k)
    q_pos = torch.arange(offset, offset + T_q, device=device)[:, None]  # (T_q, 1)
    k_pos = torch.arange(T_k, device=device)[None, :]  # (1, T_k)
    return q_pos, k_pos


def sliding_window_mask(
    T_q: int,
    T_k: int | None = None,
    *,
    window: int,
    offset: int = 0,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """Local (sliding-window) mask: each query attends only to the `window` keys nearest to it (Beltagy et al. 2020).

    Query `i` sits at absolute position `q = offset + i`, key `j` at position `j`.

    - `causal=True` (decoder): key `j` is allowed iff `q - window < j <= q`, i.e. the query itself and the
      `window - 1` tokens before it. Row `i` has `min(offset + i + 1, window)` True entries (fewer near the start).
      With `window >= T_k` this is exactly `causal_mask`.
    - `causal=False` (encoder): key `j` is allowed iff `|q - j| <= window // 2`, a band centred on the query with
      `window // 2` keys on each side: `window` keys for an odd window, `window + 1` for an even one (the band is
      kept symmetric, as in Longformer's `w/2` on each side), fewer at the edges.

    Args:
        T_q: number of queries (>= 1).
        T_k: number of keys (>= 1); defaults to `offset + T_q`.
        window: number of keys a query may see, itself included (>= 1). `window = 1`: each token sees only itself.
        offset: absolute position of the first query (>= 0), e.g. the number of cached tokens.
        causal: if True (default) the window looks back only; if False it is centred on the query.
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T_q, T_k)`, True = may attend.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if `window` < 1, a size is < 1 or `offset` is negative.
    """
    _check_size("window", window)
    q_pos, k_pos = _positions(T_q, T_k, offset, device)
    # Compared position against position (bool results only): an int64 matrix of distances q - j would take
    # 8 bytes per cell, 8 GiB at T = 32k.
    if causal:
        return (k_pos <= q_pos) & (k_pos > q_pos - window)  # (T_q, T_k): 0 <= q - j < window
    half = window // 2
    return (k_pos >= q_pos - half) & (k_pos <= q_pos + half)  # |q - j| <= window // 2


def dilated_window_mask(
    T_q: int,
    T_k: int | None = None,
    *,
    window: int,
    dilation: int,
    offset: int = 0,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """Dilated sliding window: `window` keys spaced `dilation` apart, reaching `dilation` times further back.

    Query `i` sits at absolute position `q = offset + i`.

    - `causal=True`: the keys are `j = q - k * dilation` for `k = 0, ..., window - 1` (those with `j >= 0`):
      the query itself, then every `dilation`-th token before it. The window spans `(window - 1) * dilation + 1`
      positions while holding only `window` keys.
    - `causal=False`: `j = q + k * dilation` for `-(window // 2) <= k <= window // 2` (centred, as in
      `sliding_window_mask`).

    `dilation = 1` gives `sliding_window_mask` exactly.

    Args:
        T_q: number of queries (>= 1).
        T_k: number of keys (>= 1); defaults to `offset + T_q`.
        window: number of keys a query may see, itself included (>= 1).
        dilation: gap between consecutive keys (>= 1; 1 = no gap).
        offset: absolute position of the first query (>= 0).
        causal: look back only (True, default) or both ways (False).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T_q, T_k)`, True = may attend.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if `window` or `dilation` is < 1, a size is < 1 or `offset` is negative.
    """
    _check_size("window", window)
    _check_size("dilation", dilation)
    q_pos, k_pos = _positions(T_q, T_k, offset, device)
    dist = q_pos - k_pos  # (T_q, T_k)
    on_grid = dist.remainder(dilation) == 0  # j lands on one of the dilated positions
    steps = dist.div(dilation, rounding_mode="floor")  # k in j = q - k * dilation (exact where on_grid)
    if causal:
        return on_grid & (steps >= 0) & (steps < window)
    return on_grid & (steps.abs() <= window // 2)


def _check_positions(name: str, positions: object, T: int) -> list[int]:
    """`positions` (ints or a 1-D integer tensor) as a list of ints in `[0, T)`, else a clear error."""
    if isinstance(positions, Tensor):
        if positions.is_floating_point() or positions.dtype == torch.bool or positions.ndim > 1:
            raise TypeError(f"{name} must be a sequence of int positions, got a {positions.dtype} tensor of shape "
                            f"{tuple(positions.shape)}")  # fmt: skip
        positions = positions.tolist()
    if isinstance(positions, int):
        raise TypeError(f"{name} must be a sequence of positions, e.g. [0] rather than 0")
    try:
        values = list(positions)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of int positions, got {type(positions).__name__}") from err
    for p in values:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"{name} must hold ints, got {type(p).__name__} ({p!r})")
        if not 0 <= p < T:
            raise ValueError(f"{name} must lie in [0, T) = [0, {T}), got {p}")
    return values


def global_tokens_mask(
    T: int, global_positions: Sequence[int] | Tensor, *, device: torch.device | str | None = None
) -> Tensor:
    """Global tokens: a global token attends to every token and every token attends to it (Beltagy et al. 2020).

    Rows and columns of the global positions are all True, everything else False; combine it with a local mask
    by `union_masks` (and with `causal_mask` by `combine_masks` for a decoder, which keeps only the past part of a
    global token's row). Typical global tokens: `[CLS]` (position 0) or the question tokens in QA.

    Args:
        T: sequence length (>= 1); the mask is square.
        global_positions: positions of the global tokens, each in `[0, T)` (may be empty).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T, T)`, True = may attend.

    Raises:
        TypeError: if `T` is not an int or a position is not an int.
        ValueError: if `T` < 1 or a position is outside `[0, T)`.
    """
    _check_size("T", T)
    positions = _check_positions("global_positions", global_positions, T)
    is_global = torch.zeros(T, dtype=torch.bool, device=device)
    is_global[positions] = True
    return is_global[:, None] | is_global[None, :]  # (T, T): global rows | global columns


def random_block_choice(
    T: int, *, block_size: int, n_random: int, generator: torch.Generator | None = None, causal: bool = False
) -> list[list[int]]:
    """The random key blocks each query block attends to in BigBird's random attention (Zaheer et al. 2020).

    The sequence is cut into `ceil(T / block_size)` blocks (the last one may be shorter). Each query block draws
    `n_random` distinct key blocks among the *other* blocks (with `causal=True`, among the earlier blocks only);
    when fewer are available it takes all of them. Exposed separately from `random_blocks_mask` so that a
    visualisation can reuse the very same draw.

    Args:
        T: sequence length (>= 1).
        block_size: tokens per block (>= 1).
        n_random: random key blocks per query block (>= 0).
        generator: torch RNG to draw from (pass a seeded one for a reproducible mask); None = torch's global RNG.
        causal: draw only among earlier blocks.

    Returns:
        One sorted list of key-block indices per query block.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if `T` or `block_size` is < 1 or `n_random` is negative.
    """
    _check_size("T", T)
    _check_size("block_size", block_size)
    _check_size("n_random", n_random, minimum=0)
    n_blocks = -(-T // block_size)  # ceil
    chosen = []
    for b in range(n_blocks):
        candidates = list(range(b)) if causal else [c for c in range(n_blocks) if c != b]
        order = torch.randperm(len(candidates), generator=generator).tolist() if candidates else []
        chosen.append(sorted(candidates[o] for o in order[:n_random]))
    return chosen


def random_blocks_mask(
    T: int,
    *,
    block_size: int,
    n_random: int,
    generator: torch.Generator | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """BigBird-style random attention: every query block attends to `n_random` randomly drawn key blocks.

    Blocks are drawn by `random_block_choice` (other blocks only, earlier ones with `causal=True`, so the result
    never looks into the future). The query block's own block is not included: add a local mask for that.

    Args:
        T: sequence length (>= 1); the mask is square.
        block_size: tokens per block (>= 1).
        n_random: random key blocks per query block (>= 0; clipped to the blocks available).
        generator: seeded `torch.Generator` for a reproducible mask; None = torch's global RNG.
        causal: draw only among earlier blocks.
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T, T)`, True = may attend.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if `T` or `block_size` is < 1 or `n_random` is negative.
    """
    choice = random_block_choice(T, block_size=block_size, n_random=n_random, generator=generator, causal=causal)
    n_blocks = len(choice)
    blocks = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    for b, keys in enumerate(choice):
        blocks[b, keys] = True
    token_block = torch.arange(T) // block_size  # (T,) block index of every token
    return blocks[token_block][:, token_block].to(device)  # (T, T)


def sink_mask(
    T_q: int,
    T_k: int | None = None,
    *,
    n_sink: int,
    offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Attention sinks: every query may attend to the first `n_sink` tokens (Xiao et al. 2023, StreamingLLM).

    Keys `j < n_sink` are allowed for every query, nothing else. For a decoder combine it with a window and the
    causal mask: `combine_masks(union_masks(sink_mask(...), sliding_window_mask(...)), causal_mask(...))`; the AND
    with `causal_mask` hides sink tokens from the queries that come before them.

    Args:
        T_q: number of queries (>= 1).
        T_k: number of keys (>= 1); defaults to `offset + T_q`.
        n_sink: number of sink tokens at the start of the sequence (>= 0; 0 gives an all-False mask).
        offset: absolute position of the first query (>= 0).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T_q, T_k)`, True = may attend.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if a size is < 1 or `n_sink` / `offset` is negative.
    """
    _check_size("n_sink", n_sink, minimum=0)
    q_pos, k_pos = _positions(T_q, T_k, offset, device)
    return (k_pos < n_sink).expand(q_pos.shape[0], -1)  # (T_q, T_k), the same row for every query


def union_masks(*masks: Tensor) -> Tensor:
    """Combine masks with logical OR (a key is visible if any mask allows it), with broadcasting.

    The sparse patterns are unions: Longformer = local | dilated | global, BigBird = random | local | global,
    attention sinks = sink | sliding window. For a decoder, AND the union with `causal_mask` (`combine_masks`).

    Args:
        *masks: one or more bool tensors with broadcastable shapes.

    Returns:
        The broadcast OR of the masks.

    Raises:
        TypeError: if no mask is given or an entry is not a bool tensor (None is refused: in an OR, "no mask"
            would mean "attend everywhere" and silently cancel the others).
        ValueError: if the shapes do not broadcast.
    """
    if not masks:
        raise TypeError("union_masks needs at least one mask")
    for i, m in enumerate(masks):
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            kind = m.dtype if isinstance(m, Tensor) else type(m).__name__
            raise TypeError(f"every mask must be a bool tensor (True = may attend), mask {i} is {kind}")
    try:
        torch.broadcast_shapes(*(m.shape for m in masks))
    except RuntimeError as err:
        shapes = ", ".join(str(tuple(m.shape)) for m in masks)
        raise ValueError(f"mask shapes do not broadcast: {shapes}") from err
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def longformer_mask(
    T: int,
    *,
    window: int,
    dilation: int = 2,
    global_positions: Sequence[int] | Tensor = (0,),
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Longformer-style pattern: local window | dilated window | global tokens (Beltagy et al. 2020).

    In Longformer different heads and layers use different windows and dilations; this single-mask version
    shows the three ingredients together: `sliding_window_mask(window)`, `dilated_window_mask(window, dilation)`
    and `global_tokens_mask(global_positions)`. With `causal=True` the windows look back and the union is ANDed
    with `causal_mask` (a global token then sees only its past, but every later token sees it).

    Args:
        T: sequence length (>= 1); the mask is square.
        window: keys per local / dilated window (>= 1).
        dilation: gap of the dilated window (>= 1).
        global_positions: positions of the global tokens (default: the first token).
        causal: decoder (True) or encoder (False, default, as in the paper).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T, T)`, True = may attend.

    Raises:
        TypeError, ValueError: as the masks it combines.
    """
    local = sliding_window_mask(T, window=window, causal=causal, device=device)
    dilated = dilated_window_mask(T, window=window, dilation=dilation, causal=causal, device=device)
    mask = union_masks(local, dilated, global_tokens_mask(T, global_positions, device=device))
    return mask & causal_mask(T, device=device) if causal else mask


def bigbird_mask(
    T: int,
    *,
    window: int,
    block_size: int,
    n_random: int,
    global_positions: Sequence[int] | Tensor = (0,),
    generator: torch.Generator | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """BigBird-style pattern: random blocks | local window | global tokens (Zaheer et al. 2020).

    Token-level simplification of BigBird (which slides its window block by block): `random_blocks_mask`,
    `sliding_window_mask(window)` and `global_tokens_mask(global_positions)`. With `causal=True` the window
    looks back, random blocks come from the past only and the union is ANDed with `causal_mask`.

    Args:
        T: sequence length (>= 1); the mask is square.
        window: keys per local window (>= 1).
        block_size: tokens per random block (>= 1).
        n_random: random key blocks per query block (>= 0).
        global_positions: positions of the global tokens (default: the first token).
        generator: seeded `torch.Generator` for a reproducible mask.
        causal: decoder (True) or encoder (False, default, as in the paper).
        device: device of the returned mask.

    Returns:
        Bool tensor of shape `(T, T)`, True = may attend.

    Raises:
        TypeError, ValueError: as the masks it combines.
    """
    rand = random_blocks_mask(
        T, block_size=block_size, n_random=n_random, generator=generator, causal=causal, device=device
    )
    local = sliding_window_mask(T, window=window, causal=causal, device=device)
    mask = union_masks(rand, local, global_tokens_mask(T, global_positions, device=device))
    return mask & causal_mask(T, device=device) if causal else mask
