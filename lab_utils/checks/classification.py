"""Exercise check for chapter "Fine-tuning and its memory bill": the 95% Wilson interval of an accuracy.

The reference is ``lab_utils.classification.wilson_interval``; the check names the usual mistakes (the Wald
interval p ± z sqrt(p(1-p)/n), the 90% quantile, percentages, a forgotten term, swapped ends).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.classification import wilson_interval

__all__ = ["check_wilson_interval"]

Z95 = 1.959963984540054  # NormalDist().inv_cdf(0.975)
_TOL = 1e-4  # absolute and relative; z = 1.96 instead of 1.95996... moves the ends by < 1e-5: accepted;
# every mistake below moves some end by > 1e-3 in some case
# (k, n): the known value (50, 100) -> (0.4038, 0.5962), both ends (k = 0, k = n), skewed and large samples
CASES = ((50, 100), (0, 20), (20, 20), (3, 10), (1_815, 2_116), (1, 1))


def _wald(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _wilson_parts(k: int, n: int, z: float = Z95, *, centre_shift: bool = True, shrink: bool = True,
                  z2_term: bool = True) -> tuple[float, float]:
    p, z2 = k / n, z * z
    denominator = 1 + z2 / n if shrink else 1.0
    centre = (p + (z2 / (2 * n) if centre_shift else 0.0)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + (z2 / (4 * n * n) if z2_term else 0.0))
    return centre - half, centre + half


def _mistakes(k: int, n: int) -> dict[str, Callable[[], tuple[float, float]]]:
    """Wrong intervals, each with the message that names its mistake (checked in this order)."""
    low, high = wilson_interval(k, n)
    return {
        "that is the Wald interval p ± z·sqrt(p(1-p)/n): Wilson's centre moves towards 1/2 by z²/2n and its "
        "half width has the extra z²/4n² term, which is why it never collapses to a point at k = 0 or k = n":
            lambda: _wald(k, n),
        "that is the Wald interval clipped to [0, 1]; Wilson's has a different centre and width":
            lambda: tuple(min(1.0, max(0.0, v)) for v in _wald(k, n)),
        "you used z = 1.645, the quantile of a 90% interval; a two-sided 95% interval uses z = 1.96":
            lambda: wilson_interval(k, n, 0.90),
        "you used z = 2.576 (99%); a two-sided 95% interval uses z = 1.96": lambda: wilson_interval(k, n, 0.99),
        "the ends are in percent; return shares in [0, 1]": lambda: (100 * low, 100 * high),
        "the ends are swapped: return (low, high)": lambda: (high, low),
        "the centre lacks + z²/2n: centre = (p + z²/2n) / (1 + z²/n)":
            lambda: _wilson_parts(k, n, centre_shift=False),
        "you did not divide by 1 + z²/n (centre and half width are both divided by it)":
            lambda: _wilson_parts(k, n, shrink=False),
        "the half width lacks the + z²/4n² term under the square root":
            lambda: _wilson_parts(k, n, z2_term=False),
        "that is the interval of the failures (n - k): use k, the number of successes":
            lambda: (1 - high, 1 - low),
    }


def _close(got: tuple[float, float], expected: tuple[float, float], tol: float = _TOL) -> bool:
    return all(math.isclose(g, e, rel_tol=tol, abs_tol=tol) for g, e in zip(got, expected, strict=True))


@exercise_check
def check_wilson_interval(fn: StudentFunction) -> None:
    """Check ``fn(k, n) -> (low, high)``, the 95% Wilson interval of k successes out of n, on several (k, n).

    Args:
        fn: the student's function, e.g. ``my_wilson_interval``.

    Returns:
        True when every interval is right to 1e-4; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong interval and the likely mistake.
    """
    for k, n in CASES:
        call = f"{fn.name}({k}, {n})"
        got = fn(k, n)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail(f"{call} returned {got!r}; return a pair (low, high)")
        got = (as_number(got[0], call + "[0]"), as_number(got[1], call + "[1]"))
        expected = wilson_interval(k, n)
        if _close(got, expected):
            continue
        shown = f"{call} returned ({got[0]:.4f}, {got[1]:.4f}); expected ({expected[0]:.4f}, {expected[1]:.4f})"
        for hint, wrong in _mistakes(k, n).items():
            if not _close(wrong(), expected) and _close(got, wrong()):  # a mistake visible in this case
                _fail(f"{shown}: {hint}")
        _fail(f"{shown}: with p = k/n and z = 1.96, centre = (p + z²/2n) / (1 + z²/n) and half width = "
              "z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)")
    _success(f"{fn.name} gives the 95% Wilson interval, including k = 0 and k = n")
