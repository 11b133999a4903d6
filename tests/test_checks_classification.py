"""Tests for lab_utils.checks.classification: check_wilson_interval passes right answers, names typical mistakes."""

import math

import pytest
import torch

from lab_utils.checks import check_wilson_interval


def wilson(k, n, z=1.96):  # as a student would write it, with the rounded quantile
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def my_wilson_interval(k, n):
    raise NotImplementedError  # your code here


def test_accepts_correct_answers(capsys):
    assert check_wilson_interval(wilson) is True
    assert check_wilson_interval(lambda k, n: list(wilson(k, n))) is True  # a list is fine
    assert check_wilson_interval(lambda k, n: tuple(torch.tensor(v) for v in wilson(k, n))) is True
    assert capsys.readouterr().out.count("✓ ") == 3


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_wilson_interval(my_wilson_interval) is False
    assert "✗ my_wilson_interval is not written yet" in capsys.readouterr().out


def wald(k, n, z=1.96):
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize(("fn", "match"), [
    (wald, r"returned \(0\.4020, 0\.5980\); expected \(0\.4038, 0\.5962\): that is the Wald interval"),
    (lambda k, n: tuple(min(1, max(0, v)) for v in wald(k, n)), "Wald"),  # equal to Wald at k=n/2: named Wald
    (lambda k, n: wilson(k, n, 1.645), "z = 1.645, the quantile of a 90% interval"),
    (lambda k, n: wilson(k, n, 2.576), r"z = 2\.576 \(99%\)"),
    (lambda k, n: tuple(100 * v for v in wilson(k, n)), "in percent"),
    (lambda k, n: wilson(k, n)[::-1], "swapped"),
])
def test_rejects_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_wilson_interval(fn)


def no_centre_shift(k, n, z=1.96):
    p = k / n
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p / (1 + z * z / n) - half, p / (1 + z * z / n) + half


def no_shrink(k, n, z=1.96):
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p + z * z / (2 * n) - half, p + z * z / (2 * n) + half


def no_z2_term(k, n, z=1.96):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n)
    return centre - half, centre + half


def failures(k, n):
    low, high = wilson(n - k, n)
    return low, high


@pytest.mark.parametrize(("fn", "match"), [
    (no_centre_shift, r"lacks \+ z²/2n"),
    (no_shrink, "did not divide by 1 \\+ z²/n"),
    (no_z2_term, "lacks the \\+ z²/4n² term"),
    (failures, r"\(0, 20\) returned .*interval of the failures"),
    (lambda k, n: (k / n, k / n), "centre = \\(p \\+ z²/2n\\)"),  # no named mistake: the rule
])
def test_rejects_formula_slips(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_wilson_interval(fn)


@pytest.mark.parametrize(("fn", "match"), [
    (lambda k, n: k / n, "return a pair"),
    (lambda k, n: (0.1, 0.2, 0.3), "return a pair"),
    (lambda k, n: ("0.4", "0.6"), "returned a str"),
])
def test_rejects_wrong_types(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_wilson_interval(fn)


def test_student_errors_propagate():
    def broken(k, n):
        return (k / (n - n), 1.0)

    with pytest.raises(ZeroDivisionError):
        check_wilson_interval(broken)
