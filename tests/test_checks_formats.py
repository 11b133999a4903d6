"""Tests for lab_utils.checks.formats: check_float_value passes right answers and names the typical mistakes."""

import math

import pytest
import torch

from lab_utils.checks import check_float_value
from lab_utils.checks.formats import CASES
from lab_utils.formats import decode


def float_value(sign, exponent_bits, mantissa_bits, bias):  # as a student would write it
    e = int(exponent_bits, 2)
    fraction = int(mantissa_bits, 2) / 2 ** len(mantissa_bits)
    if e == 0:
        return (-1) ** sign * fraction * 2.0 ** (1 - bias)
    return (-1) ** sign * (1 + fraction) * 2.0 ** (e - bias)


def my_float_value(sign, exponent_bits, mantissa_bits, bias):
    raise NotImplementedError  # your code here


def test_cases_are_what_they_say():
    # each case's bits are those PyTorch stores for the value named (decode reads tensor.view(int))
    named = {"fp16 1.0": (1.0, "fp16"), "fp16 -2.5": (-2.5, "fp16"), "fp16 0.1 (rounded)": (0.1, "fp16"),
             "fp16's largest value": (65504.0, "fp16"), "fp16's smallest normal value": (2.0 ** -14, "fp16"),
             "fp16's smallest subnormal value": (2.0 ** -24, "fp16"), "bf16 1.5": (1.5, "bf16"),
             "bf16 -200.0": (-200.0, "bf16"), "fp32 pi": (math.pi, "fp32")}
    for fmt, sign, e_bits, m_bits, what in CASES:
        if what in named:
            value, name = named[what]
            assert name == fmt
            assert decode(value, fmt).bits == f"{sign} {e_bits} {m_bits}", what
    kinds = {decode(float_value(s, e, m, 15 if f == "fp16" else 127), f).kind for f, s, e, m, _ in CASES}
    assert kinds == {"normal", "subnormal", "zero"}


def test_accepts_correct_answers(capsys):
    assert check_float_value(float_value) is True
    assert check_float_value(lambda *args: torch.tensor(float_value(*args), dtype=torch.float64)) is True
    assert capsys.readouterr().out.count("✓ ") == 2


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_float_value(my_float_value) is False
    assert "✗ my_float_value is not written yet" in capsys.readouterr().out


def no_sign(s, e, m, bias):
    return abs(float_value(s, e, m, bias))


def subnormal_as_normal(s, e, m, bias):
    fraction = int(m, 2) / 2 ** len(m)
    return (-1) ** s * (1 + fraction) * 2.0 ** (int(e, 2) - bias)


def subnormal_exponent_minus_bias(s, e, m, bias):
    v = float_value(s, e, m, bias)
    return v / 2 if int(e, 2) == 0 else v


def no_implicit_one(s, e, m, bias):
    fraction = int(m, 2) / 2 ** len(m)
    return (-1) ** s * fraction * 2.0 ** (max(int(e, 2), 1) - bias)


def no_bias(s, e, m, bias):
    return float_value(s, e, m, 0)


def mantissa_as_integer(s, e, m, bias):
    lead = 0 if int(e, 2) == 0 else 1
    return (-1) ** s * (lead + int(m, 2)) * 2.0 ** (max(int(e, 2), 1) - bias)


@pytest.mark.parametrize(("fn", "match"), [
    (no_sign, r"fp16 -2\.5\) returned 2\.5; expected -2\.5: the sign bit is ignored"),
    (subnormal_as_normal, "all zeros means a subnormal"),
    (subnormal_exponent_minus_bias, "not 0 - bias"),
    (no_implicit_one, "implicit leading 1: its significand is 1 \\+ m"),
    (no_bias, "subtract the bias"),
    (mantissa_as_integer, "the mantissa bits are a fraction"),
    (lambda *args: 1.0, "value = \\(-1\\)\\*\\*sign"),  # no typical mistake: the rule
])
def test_rejects_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_float_value(fn)


def test_rejects_non_numbers():
    with pytest.raises(AssertionError, match="return one number"):
        check_float_value(lambda *args: "1.0")
    with pytest.raises(AssertionError, match="return one number"):
        check_float_value(lambda *args: torch.ones(2))


def test_student_errors_propagate():
    def broken(s, e, m, bias):
        return int(e) / 0

    with pytest.raises(ZeroDivisionError):
        check_float_value(broken)
