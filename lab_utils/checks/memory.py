"""Exercise check for chapter "First look" (and the memory bill of fine-tuning): the size of a model's weights.

A MiB is 2**20 bytes; fp32 takes 4 bytes per weight, fp16 and bf16 2, int8 1 (``torch.finfo/iinfo(dtype).bits / 8``).
"""

from __future__ import annotations

import math

import torch

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_model_mib"]

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1}
_REL_TOL = 1e-9  # the answer is one multiplication and one division in float64: exact up to rounding


def _hint(got: float, n: int, nbytes: int) -> str:
    """Name the mistake that explains ``got`` for ``n`` weights of ``nbytes`` bytes, or give the rule."""
    wrong = {
        n * nbytes / 1e6: "you divided by 10**6 (a MB); a MiB is 2**20 = 1,048,576 bytes",
        n * nbytes: "that is a number of bytes; divide by 2**20 to get MiB",
        n * nbytes / 2**30: "that is GiB (2**30 bytes); a MiB is 2**20 bytes",
        n * nbytes * 8 / 2**20: "you counted bits, not bytes: divide the number of bits by 8",
        n / 2**20: "you counted one byte per weight whatever the dtype",
        n * 4 / 2**20: "you used 4 bytes (fp32) for every dtype",
    }
    for value, hint in wrong.items():
        if math.isclose(got, value, rel_tol=1e-6):
            return hint
    return "size = n_params * bytes per weight / 2**20"


@exercise_check
def check_model_mib(fn: StudentFunction) -> None:
    """Check ``fn(n_params, dtype) -> MiB`` against ``n_params * bytes_per_weight / 2**20``.

    Args:
        fn: the student's function, e.g. ``model_mib``.

    Returns:
        True when every size is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong size and the likely mistake (MB instead of MiB, bits, bytes...).
    """
    for n in (134_515_008, 1_000_000, 0):
        for dtype, nbytes in _BYTES.items():
            call = f"{fn.name}({n:_}, {dtype})"
            got = as_number(fn(n, dtype), call)
            expected = n * nbytes / 2**20
            if not math.isclose(got, expected, rel_tol=_REL_TOL, abs_tol=1e-9):
                _fail(f"{call} returned {got:.6g} MiB; expected {expected:.6g}: {_hint(got, n, nbytes)}")
    _success("model_mib gives the right size in MiB for fp32, fp16, bf16 and int8")
