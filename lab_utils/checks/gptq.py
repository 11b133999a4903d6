"""Exercise check for chapter "Quantization" (gptq): the core step of GPTQ / Optimal Brain Surgeon.

Round column ``j`` of a weight ``W`` `(out, in)` to the grid ``step * round(w / step)`` and push its rounding error
onto the columns not yet quantized (those after ``j``), with the inverse Hessian ``Hinv`` `(in, in)`:
``err = W[:, j] - q_j``, ``W[:, j+1:] -= outer(err, Hinv[j, j+1:]) / Hinv[j, j]``. Columns before ``j`` (already
quantized) stay as they are; ``W`` itself is not modified. The reference is a few lines of torch here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_quantize_column", "quantize_column"]

_ATOL = 1e-9  # float64 throughout: the same few operations in another order differ by ~1e-15


def quantize_column(W: Tensor, Hinv: Tensor, j: int, step: float | Tensor) -> Tensor:
    """The reference: a new `(out, in)` tensor, column j on the grid and its error compensated by the later columns.

    Args:
        W: `(out, in)` weights (not modified). Hinv: `(in, in)` inverse Hessian. j: the column to quantize.
        step: grid step, a number or `(out,)` (one step per row).
    """
    W = W.clone()
    q = step * torch.round(W[:, j] / step)  # (out,)
    err = W[:, j] - q
    W[:, j] = q
    W[:, j + 1:] -= torch.outer(err, Hinv[j, j + 1:]) / Hinv[j, j]
    return W


def _cases() -> list[tuple[Tensor, Tensor, int, float]]:
    g = torch.Generator().manual_seed(0)
    n_out, n_in = 5, 7
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    X = torch.randn(40, n_in, generator=g, dtype=torch.float64)
    X[:, 1:] += 0.8 * X[:, :-1]  # correlated inputs: the off-diagonal of Hinv matters
    H = 2 * X.T @ X + 0.5 * torch.eye(n_in, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    Hinv = (Hinv + Hinv.T) / 2
    # a middle column first: it has earlier and later columns, so every mistake shows there
    return [(W, Hinv, 3, 0.25), (W, Hinv, 0, 0.25), (W, Hinv, n_in - 1, 0.25), (W * 3, Hinv, 5, 0.5)]


def _mistakes(W: Tensor, Hinv: Tensor, j: int, step: float) -> list[tuple[Tensor, str]]:
    q = step * torch.round(W[:, j] / step)
    err = W[:, j] - q
    ref = quantize_column(W, Hinv, j, step)
    no_div = ref.clone()
    no_div[:, j + 1:] = W[:, j + 1:] - torch.outer(err, Hinv[j, j + 1:])
    every = W - torch.outer(err, Hinv[j]) / Hinv[j, j]
    every[:, j] = q
    flipped = ref.clone()
    flipped[:, j + 1:] = W[:, j + 1:] + torch.outer(err, Hinv[j, j + 1:]) / Hinv[j, j]
    with_h = quantize_column(W, torch.linalg.inv(Hinv), j, step)
    unrounded = ref.clone()
    unrounded[:, j] = W[:, j]
    return [
        (no_div, "the update must be divided by Hinv[j, j]: W[:, j+1:] -= outer(err, Hinv[j, j+1:]) / Hinv[j, j]"),
        (every, "only the later columns j+1, j+2, ... move: the earlier ones are already quantized, and column j "
                "is q_j; update W[:, j+1:] only"),
        (flipped, "the sign is flipped: with err = W[:, j] - q_j, subtract: W[:, j+1:] -= outer(err, ...) / "
                  "Hinv[j, j]"),
        (with_h, "that is the update with H, not its inverse: use the inverse Hessian Hinv passed in "
                 "(H^-1 says how the other columns can absorb column j's error)"),
        (unrounded, "the later columns are right but column j itself is not quantized: set W[:, j] = q_j = "
                    "step * round(W[:, j] / step)"),
    ]


@exercise_check
def check_quantize_column(fn: StudentFunction) -> None:
    """Check ``fn(W, Hinv, j, step) -> W_new``: one GPTQ / OBS step on a float64 weight `(out, in)`.

    ``W_new`` is a new tensor: ``W_new[:, :j] = W[:, :j]``; ``W_new[:, j] = q_j = step * round(W[:, j] / step)``;
    ``W_new[:, j+1:] = W[:, j+1:] - outer(err, Hinv[j, j+1:]) / Hinv[j, j]`` with ``err = W[:, j] - q_j``.
    ``W`` and ``Hinv`` must not be modified. Checked for a middle, the first and the last column.
    """
    for W0, Hinv0, j, step in _cases():
        W, Hinv = W0.clone(), Hinv0.clone()
        call = f"{fn.name}(W, Hinv, j={j}, step={step}) with W {tuple(W.shape)}"
        got = fn(W, Hinv, j, step)
        if not torch.equal(W, W0) or not torch.equal(Hinv, Hinv0):
            what = "W" if not torch.equal(W, W0) else "Hinv"
            _fail(f"{call} modified {what} in place: work on a copy (W = W.clone()) and return the new tensor")
        if not isinstance(got, Tensor):
            _fail(f"{call} returned a {type(got).__name__}; return the new weight tensor of W's shape")
        if got.shape != W.shape:
            _fail(f"{call} returned shape {tuple(got.shape)}; expected W's shape {tuple(W.shape)}")
        got = got.detach().double()
        want = quantize_column(W0, Hinv0, j, step)
        if torch.allclose(got, want, rtol=0, atol=_ATOL):
            continue
        for wrong, hint in _mistakes(W0, Hinv0, j, step):
            if torch.allclose(got, wrong, rtol=0, atol=_ATOL):
                _fail(f"{call}: {hint}")
        if not torch.allclose(got[:, :j], W0[:, :j], rtol=0, atol=_ATOL):
            _fail(f"{call} changed columns before j: they are already quantized, leave them as they are")
        if not torch.allclose(got[:, j], want[:, j], rtol=0, atol=_ATOL):
            if torch.allclose(got[:, j], W0[:, j], rtol=0, atol=_ATOL):
                _fail(f"{call} left column j unchanged: set it to q_j = step * round(W[:, j] / step)")
            _fail(f"{call}: column j must be q_j = step * round(W[:, j] / step) (the nearest grid point)")
        _fail(f"{call}: the later columns are off: W[:, j+1:] -= outer(err, Hinv[j, j+1:]) / Hinv[j, j] with "
              "err = W[:, j] - q_j (the error before rounding minus after)")
    _success("GPTQ step right: column j rounded, its error pushed onto the later columns through Hinv, earlier "
             "columns and W untouched")
