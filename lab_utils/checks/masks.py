"""Exercise check for chapter "Encoders and decoders": the causal mask (bool, True = may attend).

Besides fixed small sizes, each call also tries two sizes drawn afresh (from a private ``random.Random`` seeded by the
OS, never the global RNG), so a mask hard-coded for the sizes a previous run showed cannot pass.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.masks import causal_mask

__all__ = ["check_causal_mask"]

_SIZE_RNG = random.Random()  # private, OS-seeded: the drawn sizes change from call to call
_DRAWN_RANGES = ((9, 64), (65, 160))  # above any "hard-coded 8 x 8" and beyond a typical context length of a demo


def _sizes() -> tuple[int, ...]:
    """Sizes to test, largest fixed one first: at T = 1 an inverted mask and a missing diagonal look the same."""
    drawn = tuple(_SIZE_RNG.randint(lo, hi) for lo, hi in _DRAWN_RANGES)
    return (8, 5, *drawn, 2, 1)


@exercise_check
def check_causal_mask(fn: StudentFunction) -> None:
    """Check ``fn(T) -> (T, T)`` bool causal mask (True = may attend) against ``lab_utils.masks.causal_mask``.

    Args:
        fn: the student's function, e.g. ``my_causal_mask``.

    Returns:
        True when the mask is right for every size tried; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first wrong size or row and, when recognisable, the mistake (transposed,
            inverted, no diagonal, a size hard-coded).
    """
    sizes = _sizes()
    for T in sizes:
        got = fn(T)
        call = f"{fn.name}({T})"
        if not isinstance(got, Tensor):
            _fail(f"{call} returned {type(got).__name__}; return a torch.Tensor")
        if tuple(got.shape) != (T, T):
            hint = " (is a size hard-coded? build the mask from T)" if got.ndim == 2 and got.shape[0] != T else ""
            _fail(f"{call} has shape {tuple(got.shape)}; expected ({T}, {T}): one row per query, one column per key"
                  f"{hint}")  # fmt: skip
        if got.dtype != torch.bool:
            _fail(f"{call} has dtype {got.dtype}; return a bool mask (True = may attend), e.g. with `.bool()`")
        got = got.cpu()
        want = causal_mask(T)
        if torch.equal(got, want):
            continue
        if T > 1 and torch.equal(got, ~want):
            _fail("your mask is inverted: True must mean 'may attend' (PyTorch SDPA convention), not 'blocked'")
        if torch.equal(got, want.T):
            _fail("your mask is transposed: row i is query i, and it may attend keys j <= i (lower triangle)")
        if not got.diagonal().all():
            _fail("the diagonal is not all True: a token must be allowed to attend to itself (use j <= i, not j < i)")
        i = int((got != want).any(dim=1).nonzero()[0])
        leak = " (a True after position i lets the token see the future)" if got[i, i + 1 :].any() else ""
        row, expected = got[i].int().tolist(), want[i].int().tolist()
        if T > 12:  # long rows: show only the wrong part
            j = int((got[i] != want[i]).nonzero()[0])
            row, expected = f"[..., {got[i, j].item()} at key {j}, ...]", f"keys 0..{i} True, the rest False"
        _fail(f"for T={T}, row {i} (query at position {i}) is {row}; expected {expected}: keys 0..{i} allowed, "
              f"keys after {i} blocked{leak}")  # fmt: skip
    _success(f"causal mask correct for {len(sizes)} sizes from T = 1 to T = {max(sizes)}")
