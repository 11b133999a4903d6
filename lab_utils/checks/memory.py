"""Exercise check for chapter "First look" (and the memory bill of fine-tuning): the size of a model's weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_model_mib"]

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1}


def check_model_mib(fn: Callable[[int, torch.dtype], float]) -> None:
    """Check ``fn(n_params, dtype) -> MiB`` against ``n_params * bytes_per_weight / 2**20``."""
    for dtype, nbytes in _BYTES.items():
        for n in (0, 1_000_000, 134_515_008):
            expected = n * nbytes / 2**20
            got = fn(n, dtype)
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                _fail(f"model_mib({n:,}, {dtype}) returned {got!r}; return a number of MiB (a float)")
            if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9):
                hint = (" Did you divide by 10**6 instead of 2**20 (a MiB is 1,048,576 bytes)?"
                        if math.isclose(got, n * nbytes / 1e6, rel_tol=1e-6) and n else
                        f" A {dtype} weight takes {nbytes} byte(s).")
                _fail(f"model_mib({n:,}, {dtype}) returned {got:.4g} MiB; expected {expected:.4g}.{hint}")
    try:
        fn(-1, torch.float32)
    except ValueError:
        pass
    else:
        _fail("model_mib(-1, torch.float32) should raise ValueError: a parameter count cannot be negative")
    _success("model_mib gives the right size for fp32, fp16, bf16 and int8, and rejects a negative count")
