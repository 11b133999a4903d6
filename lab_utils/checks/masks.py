"""Exercise check for chapter "Encoders and decoders": the causal mask (bool, True = may attend)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.masks import causal_mask

__all__ = ["check_causal_mask"]


def check_causal_mask(fn: Callable[[int], Tensor]) -> None:
    """Check `fn(T) -> (T, T)` bool causal mask (True = may attend) against `lab_utils.masks.causal_mask`.

    Raises:
        AssertionError: naming the first wrong row and, when recognisable, the mistake (transposed, inverted...).
    """
    sizes = (8, 5, 2, 1)  # largest first: at T = 1 an inverted mask and a missing diagonal look the same
    for T in sizes:
        got = fn(T)
        if not isinstance(got, Tensor):
            _fail(f"fn({T}) returned {type(got).__name__}; return a torch.Tensor")
        if got.dtype != torch.bool:
            _fail(f"fn({T}) has dtype {got.dtype}; return a bool mask (True = may attend), e.g. with `.bool()`")
        if tuple(got.shape) != (T, T):
            _fail(f"fn({T}) has shape {tuple(got.shape)}; expected ({T}, {T}): one row per query, one column per key")
        want = causal_mask(T)
        if torch.equal(got.cpu(), want):
            continue
        if T > 1 and torch.equal(got.cpu(), ~want):
            _fail("your mask is inverted: True must mean 'may attend' (PyTorch SDPA convention), not 'blocked'")
        if torch.equal(got.cpu(), want.T):
            _fail("your mask is transposed: row i is query i, and it may attend keys j <= i (lower triangle)")
        if not got.diagonal().all():
            _fail("the diagonal is not all True: a token must be allowed to attend to itself (use j <= i, not j < i)")
        i = int((got.cpu() != want).any(dim=1).nonzero()[0])
        leak = " (a True after position i lets the token see the future)" if got[i].cpu()[i + 1 :].any() else ""
        _fail(
            f"for T={T}, row {i} (query at position {i}) is {got[i].int().tolist()}; "
            f"expected {want[i].int().tolist()}: keys 0..{i} allowed, keys after {i} blocked{leak}"
        )
    _success(f"causal mask correct for T = {', '.join(map(str, sizes))}")
