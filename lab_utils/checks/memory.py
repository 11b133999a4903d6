"""Exercise checks on memory: the size of a model's weights (chapter "First look"), the memory of full fine-tuning
and the largest batch that fits a budget (chapter "Fine-tuning and its memory bill").

A MiB is 2**20 bytes; fp32 takes 4 bytes per weight, fp16 and bf16 2, int8 1 (``torch.finfo/iinfo(dtype).bits / 8``).
Training in fp32 keeps the weights, their gradients and the optimizer's state: no copy for SGD, one (the velocity) for
SGD with momentum, two (first and second moments) for Adam, so 2, 3 and 4 copies of 4 bytes per parameter.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import torch

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_max_batch", "check_model_mib", "check_training_mib"]

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
    return name_mistake(got, wrong, "size = n_params * bytes per weight / 2**20", rel_tol=1e-6)


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


# --- full fine-tuning in fp32: weights + gradients + optimizer state -------------------------------------------------
_COPIES = {"sgd": 2, "momentum": 3, "adam": 4}  # fp32 copies of the weights held while training, per optimizer
# Copies per optimizer (sgd, momentum, adam) that a typical wrong answer counts, and what it got wrong.
_WRONG_COPIES = {
    (1, 2, 3): "the gradients are missing: every trainable weight gets one fp32 gradient",
    (2, 2, 2): "the optimizer state is missing: SGD keeps none, momentum one copy, Adam two",
    (2, 3, 3): "Adam keeps two moments per weight (m and v), not one",
    (2, 4, 4): "SGD with momentum keeps one copy (the velocity), not two; Adam keeps two",
    (1, 1, 1): "that is the weights alone; training adds the gradients and the optimizer state",
    (3, 4, 5): "plain SGD keeps no state: weights + gradients only (2 copies), then +1 for momentum, +2 for Adam",
}
# Units a typical wrong answer uses: (what one unit is in bytes, bytes per value) -> the mistake.
_WRONG_UNITS = {
    (10**6, 4): "you divided by 10**6 (a MB); a MiB is 2**20 = 1,048,576 bytes",
    (2**30, 4): "that is GiB (2**30 bytes); a MiB is 2**20 bytes",
    (1, 4): "that is a number of bytes; divide by 2**20 to get MiB",
    (2**20, 32): "you counted bits, not bytes: fp32 is 4 bytes per value",
    (2**20, 2): "you used 2 bytes per value (fp16); full fine-tuning here is in fp32: 4 bytes",
    (2**20, 1): "you counted one byte per value; fp32 is 4 bytes",
}


def _training_hint(got: dict[str, float], n: int) -> str | None:
    """Name the unit and/or counting mistake that explains all of ``got`` (optimizer -> MiB for ``n`` params)."""
    units = {(2**20, 4): None, **_WRONG_UNITS}
    patterns = {tuple(_COPIES.values()): None, **_WRONG_COPIES}
    for (unit, nbytes), unit_hint in units.items():
        for copies, copies_hint in patterns.items():
            if unit_hint is None and copies_hint is None:
                continue  # the right answer
            predicted = (n * nbytes * c / unit for c in copies)
            if all(math.isclose(got[o], p, rel_tol=1e-6) for o, p in zip(_COPIES, predicted, strict=True)):
                return "; ".join(h for h in (copies_hint, unit_hint) if h)
    return None


@exercise_check
def check_training_mib(fn: StudentFunction) -> None:
    """Check ``fn(n_params, optimizer) -> MiB`` of full fine-tuning in fp32 (weights + gradients + optimizer state).

    Expected: ``n_params * 4 * copies / 2**20`` with 2 copies for "sgd", 3 for "momentum", 4 for "adam".

    Args:
        fn: the student's function, e.g. ``training_mib``.

    Returns:
        True when every size is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong size and the likely mistake (gradients or state forgotten, one Adam
            moment, MB instead of MiB, bits...). The diagnosis looks at all three optimizers together: forgetting
            the gradients and counting one Adam moment give the same Adam number.
    """
    for n in (109_482_240, 1_000_000, 0):  # BERT-base (bert-base-uncased counted from its config), a round one, 0
        calls = {o: f"{fn.name}({n:_}, {o!r})" for o in _COPIES}
        got = {o: as_number(fn(n, o), call) for o, call in calls.items()}
        hint = _training_hint(got, n) if n else None
        for optimizer, copies in _COPIES.items():
            expected = n * 4 * copies / 2**20
            if not math.isclose(got[optimizer], expected, rel_tol=_REL_TOL, abs_tol=1e-9):
                rule = f"{copies} fp32 copies x 4 bytes x n_params / 2**20 for {optimizer}"
                _fail(f"{calls[optimizer]} returned {got[optimizer]:.6g} MiB; expected {expected:.6g}: {hint or rule}")
    _success("training_mib gives the memory of full fine-tuning with SGD (2 copies), momentum (3) and Adam (4)")


# --- the largest batch that fits a memory budget ----------------------------------------------------------------------
# (budget_mib, fixed_mib, per_example_mib): integers and halves, so float arithmetic on them is exact and the answer
# unambiguous. Order: a fraction < .5 (catches ceil), one > .5 (catches round), an exact fit (off by one), none fits.
_BATCH_CASES = (
    (15360, 2048, 300),  # 13312 / 300 = 44.37 -> 44
    (15360, 2048, 320.5),  # 41.53 -> 41
    (15360, 2048, 416),  # exactly 32: 2048 + 32 * 416 == 15360 fits
    (16384, 16000, 512),  # 0.75 -> 0
    (1000, 1200, 10),  # the fixed cost alone exceeds the budget -> 0
    (1000, 1010, 12.5),  # -0.8 -> 0 (int() truncates to 0 here, floor gives -1)
    (24576, 24576, 64),  # the fixed cost fills the budget exactly -> 0
)


def _batch_hint(got: int, budget: float, fixed: float, per: float, expected: int) -> str:
    """Name the mistake that explains batch ``got`` for this budget, or give the rule."""
    exact = Fraction(budget - fixed) / Fraction(per)
    if got < 0:
        return "nothing fits: return 0, not a negative batch size (e.g. max(0, ...))"
    if got == math.floor(Fraction(budget) / Fraction(per)) and got != expected:
        return (f"you ignored the fixed cost: the weights, gradients and optimizer state ({fixed} MiB) are "
                "there before the first example")
    if exact == expected and got == expected - 1:
        return (f"at an exact fit ({fixed} + {expected} * {per} == {budget}) the batch still fits: use <=, "
                "not <")
    if got == expected + 1 and got == round(exact):
        return (f"you rounded to the nearest: {budget - fixed} / {per} = {float(exact):.4g}, and {got} examples "
                f"need {fixed + got * per} MiB > {budget}; round down (// or math.floor)")
    if got == expected + 1 and got == math.ceil(exact):
        return (f"you rounded up: {budget - fixed} / {per} = {float(exact):.4g}, and {got} examples need "
                f"{fixed + got * per} MiB > {budget}; round down (// or math.floor)")
    if got == expected + 1:
        return f"one too many: {got} examples need {fixed + got * per} MiB > {budget}"
    return "the largest b with fixed_mib + b * per_example_mib <= budget_mib, or 0 if none fits"


@exercise_check
def check_max_batch(fn: StudentFunction) -> None:
    """Check ``fn(budget_mib, fixed_mib, per_example_mib) -> int``: the largest batch that fits the budget.

    Expected: the largest integer ``b >= 0`` with ``fixed_mib + b * per_example_mib <= budget_mib``; 0 when even
    one example does not fit.

    Args:
        fn: the student's function, e.g. ``max_batch``.

    Returns:
        True when every batch size is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong batch size and the likely mistake (rounding up or to the nearest,
            ignoring the fixed cost, a float, a negative size, off by one at an exact fit).
    """
    for budget, fixed, per in _BATCH_CASES:
        call = f"{fn.name}({budget}, {fixed}, {per})"
        got = fn(budget, fixed, per)
        expected = max(0, math.floor(Fraction(budget - fixed) / Fraction(per)))  # exact rational arithmetic
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = got.item()
        is_int = isinstance(got, numbers.Integral) and not isinstance(got, bool)
        value = got if is_int else as_number(got, call)
        if value != expected:
            hint = _batch_hint(math.floor(value), budget, fixed, per, expected)
            _fail(f"{call} returned {got!r}; expected {expected}: {hint}")
        if not is_int:
            _fail(f"{call} returned {got!r} (a {type(got).__name__}); a batch size is a whole number: return an int "
                  "(use // or int(...))")
    _success("max_batch finds the largest batch that fits, and 0 when none does")
