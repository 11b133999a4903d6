"""Exercise check for chapter "Encoders and decoders": scaled dot-product attention, ``softmax(q k^T / sqrt(d)) v``.

The student's ``fn(q, k, v, mask=None)`` is compared with ``torch.nn.functional.scaled_dot_product_attention`` on
cases whose sizes all differ (B, heads, T_q, T_k, d, d_v), so a wrong transpose is a shape error rather than a silent
coincidence. Masks are bool, True = may attend (SDPA's convention); no query has all its keys masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.masks import causal_mask

__all__ = ["check_attention"]

ATOL, RTOL = 1e-5, 1e-4  # float32 softmax and matmuls over <= 11 keys: errors ~1e-6; mistakes change outputs by > 1e-2

_Case = tuple[str, Tensor, Tensor, Tensor, Tensor | None]


def _cases() -> list[_Case]:
    """(name, q, k, v, mask) from a local generator, simplest first so the first failure is the clearest."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 2  # * 2: scores large enough that a missing 1/sqrt(d) shows

    lengths = torch.tensor([7, 4])  # (B,) real keys per sequence: the second one has 3 padding keys
    padding = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T_k): True = real key
    return [
        ("self-attention, no mask", randn(5, 8), randn(5, 8), randn(5, 3), None),
        ("batched heads, no mask", randn(2, 3, 5, 8), randn(2, 3, 5, 8), randn(2, 3, 5, 4), None),
        ("cross-attention (T_q != T_k)", randn(2, 3, 5, 8), randn(2, 3, 7, 8), randn(2, 3, 7, 6), None),
        ("causal mask (T, T)", randn(2, 3, 6, 8), randn(2, 3, 6, 8), randn(2, 3, 6, 4), causal_mask(6)),
        ("padding mask (B, 1, 1, T_k)", randn(2, 3, 5, 9), randn(2, 3, 7, 9), randn(2, 3, 7, 4), padding),
        ("causal and padding masks", randn(2, 3, 7, 8), randn(2, 3, 7, 8), randn(2, 3, 7, 6), padding & causal_mask(7)),
    ]


def _softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, scale: float, dim: int = -1,
                       fill: float = float("-inf"), after: bool = False) -> Tensor:  # fmt: skip
    """Attention with one knob per typical mistake: the scale, the softmax dim, the fill value, masking after."""
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    if mask is not None and not after:
        scores = scores.masked_fill(~mask, fill)
    weights = scores.softmax(dim=dim)
    if mask is not None and after:
        weights = weights * mask  # zeroed but not renormalised
    return weights @ v  # (..., T_q, d_v)


def _mistakes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> dict[str, Callable[[], Tensor]]:
    """Typical wrong answers for these inputs, each named by its mistake (computed lazily, in this order)."""
    d, s = q.shape[-1], 1 / math.sqrt(q.shape[-1])
    wrong: dict[str, Callable[[], Tensor]] = {
        "the scores are not scaled: divide q @ k^T by sqrt(d), d = q.shape[-1]": lambda: _softmax_attention(
            q, k, v, mask, scale=1.0),
        "the scores are divided by d; divide by sqrt(d) (Vaswani et al. 2017, §3.2.1)": lambda: _softmax_attention(
            q, k, v, mask, scale=1 / d),
        "the scores are divided by sqrt(d_v); divide by sqrt(d) = sqrt(q.shape[-1]), the size of the dot products":
            lambda: _softmax_attention(q, k, v, mask, scale=1 / math.sqrt(v.shape[-1])),
        "the softmax runs over the queries (dim=-2): run it over the keys (dim=-1), so each query's weights sum to 1":
            lambda: _softmax_attention(q, k, v, mask, scale=s, dim=-2),
    }  # fmt: skip
    if mask is not None:
        wrong |= {
            "the mask is ignored: set the scores of masked keys (mask == False) to -inf before the softmax":
                lambda: _softmax_attention(q, k, v, None, scale=s),
            "the mask is inverted: True means 'may attend', so fill where the mask is False: "
            "scores.masked_fill(~mask, float('-inf'))": lambda: _softmax_attention(q, k, v, ~mask, scale=s),
            "the mask is applied after the softmax, so the remaining weights no longer sum to 1: set the masked "
            "scores to -inf before the softmax": lambda: _softmax_attention(q, k, v, mask, scale=s, after=True),
            "masked scores are set to 0, which still gives them weight: set them to -inf":
                lambda: _softmax_attention(q, k, v, mask, scale=s, fill=0.0),
        }  # fmt: skip
    return wrong


def _shapes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> str:
    shown = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    return shown + (f", mask {tuple(mask.shape)}" if mask is not None else "")


@exercise_check
def check_attention(fn: StudentFunction) -> None:
    """Check ``fn(q, k, v, mask=None) -> (..., T_q, d_v)`` against ``F.scaled_dot_product_attention``.

    Args:
        fn: the student's function, e.g. ``my_attention``; ``mask`` is bool, True = may attend, broadcastable to
            ``(..., T_q, T_k)``.

    Returns:
        True when every case matches; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first case that differs and, when recognisable, the mistake.
    """
    for name, q, k, v, mask in _cases():
        args = (q, k, v) if mask is None else (q, k, v, mask)
        copies = [t.clone() for t in args]
        try:
            got = fn(*copies)
        except RuntimeError as e:  # a shape error inside the student's code: keep its traceback, add a hint
            if hasattr(e, "add_note"):
                e.add_note(f"Case '{name}': {_shapes(q, k, v, mask)}. The scores are q @ k^T, (..., T_q, d) @ "
                           "(..., d, T_k): transpose the last two dims of k with k.transpose(-2, -1).")  # fmt: skip
            raise
        if any(not torch.equal(a, b) for a, b in zip(args, copies, strict=True)):
            _fail(f"{fn.name} modified its inputs in place (case '{name}'); compute new tensors instead")
        where = f"case '{name}' ({_shapes(q, k, v, mask)})"
        if isinstance(got, tuple):
            _fail(f"{fn.name} returned a tuple; return only the output tensor (..., T_q, d_v) ({where})")
        if not isinstance(got, Tensor):
            _fail(f"{fn.name} returned {type(got).__name__}; return a tensor (..., T_q, d_v) ({where})")
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (..., T_q, d_v)
        if got.shape != want.shape:
            weights_shape = (*want.shape[:-1], k.shape[-2])
            hint = (
                "you returned the attention weights (..., T_q, T_k); return weights @ v"
                if tuple(got.shape) == weights_shape
                else "the output has one row per query and d_v columns"
            )
            _fail(f"{fn.name} returned shape {tuple(got.shape)}, expected {tuple(want.shape)} in {where}: {hint}")
        got = got.detach().float()
        if torch.allclose(got, want, atol=ATOL, rtol=RTOL):
            continue
        hint = next((h for h, make in _mistakes(q, k, v, mask).items()
                     if torch.allclose(got, make(), atol=ATOL, rtol=RTOL, equal_nan=True)), None)  # fmt: skip
        if hint is None and got.isnan().any():
            hint = ("the output has NaN: a query whose keys are all masked; is your mask inverted? True = may "
                    "attend, so use scores.masked_fill(~mask, float('-inf'))")  # fmt: skip
        if hint is None:
            hint = "output = softmax(q @ k^T / sqrt(d), over the keys, masked scores = -inf) @ v"
        err = (got - want).abs().nan_to_num(nan=float("inf")).max().item()
        _fail(f"{fn.name} differs from F.scaled_dot_product_attention by up to {err:.3g} in {where}: {hint}")
    _success("attention matches F.scaled_dot_product_attention: batched heads, cross-attention, causal and padding "
             "masks, d != d_v")  # fmt: skip
