"""Exercise check for chapter "Quantization" (number formats): the value a float's sign, exponent and mantissa bits
store.

The reference is ``lab_utils.formats.encode`` (PyTorch's own bits, reinterpreted). The student writes the IEEE 754
formula for finite values: ``(-1)^s * 1.m * 2^(e - bias)`` for a normal number, ``(-1)^s * 0.m * 2^(1 - bias)``
when the exponent field is all zeros (subnormals and zero). The check names the usual mistakes: a forgotten bias,
sign or implicit 1, the mantissa read as an integer, and subnormals given the exponent ``-bias`` or an implicit 1.
"""

from __future__ import annotations

import math

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.formats import FORMATS, encode

__all__ = ["check_float_value"]

# (format, sign, exponent field, mantissa field, what it is): normals, the extremes, subnormals, zero, negatives
CASES = (
    ("fp16", 0, "01111", "0000000000", "fp16 1.0"),
    ("fp16", 1, "10000", "0100000000", "fp16 -2.5"),
    ("fp16", 0, "01011", "1001100110", "fp16 0.1 (rounded)"),
    ("fp16", 0, "11110", "1111111111", "fp16's largest value"),
    ("fp16", 0, "00001", "0000000000", "fp16's smallest normal value"),
    ("fp16", 0, "00000", "0000000001", "fp16's smallest subnormal value"),
    ("fp16", 1, "00000", "1000000000", "an fp16 subnormal"),
    ("fp16", 0, "00000", "0000000000", "zero"),
    ("bf16", 0, "01111111", "1000000", "bf16 1.5"),
    ("bf16", 1, "10000110", "1001000", "bf16 -200.0"),
    ("bf16", 0, "00000000", "0100000", "a bf16 subnormal"),
    ("fp32", 0, "10000000", "10010010000111111011011", "fp32 pi"),
)


def _wrong_values(sign: int, e_bits: str, m_bits: str, bias: int) -> list[tuple[float, str]]:
    """What typical mistakes return for these bits, each with the hint that names it (tried in order)."""
    e, m = int(e_bits, 2), int(m_bits, 2)
    frac = m / 2 ** len(m_bits)
    s = (-1.0) ** sign
    sub = e == 0
    lead = 0.0 if sub else 1.0
    exp = 1 - bias if sub else e - bias
    common = [(math.ldexp(lead + frac, exp), "the sign bit is ignored: multiply by (-1)**sign")]
    if sub:  # mistakes only a subnormal (exponent field all zeros) shows
        common += [
            (s * math.ldexp(1.0 + frac, e - bias),
             "an exponent field of all zeros means a subnormal: no implicit 1, and exponent 1 - bias"),
            (s * math.ldexp(frac, -bias), "a subnormal's exponent is 1 - bias, not 0 - bias (so subnormals "
                                          "continue where the normals stop)"),
            (s * math.ldexp(1.0 + frac, 1 - bias), "a subnormal has no implicit leading 1: its significand is 0.m"),
        ]
    else:
        common += [(s * math.ldexp(frac, exp),
                    "a normal number has an implicit leading 1: its significand is 1 + m / 2**len(m)")]
    return common + [
        (s * math.ldexp(lead + frac, e), "subtract the bias from the exponent field (15 for fp16, 127 for fp32/bf16)"),
        (s * math.ldexp(lead + m, exp), "the mantissa bits are a fraction: m / 2**len(mantissa_bits), not the integer"),
        (s * math.ldexp(lead + frac, exp + 1), "the exponent is off by one: e - bias for normals"),
    ]


@exercise_check
def check_float_value(fn: StudentFunction) -> None:
    """Check ``fn(sign, exponent_bits, mantissa_bits, bias) -> float`` on finite fp16, bf16 and fp32 values.

    ``sign`` is 0 or 1, ``exponent_bits`` and ``mantissa_bits`` strings of '0'/'1' (most significant first; never
    all ones), ``bias`` the format's (15 for fp16, 127 for fp32 and bf16). Checked against
    ``lab_utils.formats.encode`` on normal numbers, fp16's largest, smallest normal and smallest subnormal values,
    subnormals, zero and negatives; every value is exact in a Python float, so the answer must be exact too.
    """
    for name, sign, e_bits, m_bits, what in CASES:
        bias = FORMATS[name].bias
        call = f"{fn.name}({sign}, {e_bits!r}, {m_bits!r}, {bias})"
        got = as_number(fn(sign, e_bits, m_bits, bias), f"{call} ({what})")
        want = encode(sign, e_bits, m_bits, name)
        if got == want:
            continue
        wrong = [(v, hint) for v, hint in _wrong_values(sign, e_bits, m_bits, bias) if v != want]
        hint = name_mistake(got, wrong, "value = (-1)**sign * 1.m * 2**(e - bias) for a normal number, "
                                        "(-1)**sign * 0.m * 2**(1 - bias) when the exponent field is all zeros",
                            rel_tol=1e-12)
        _fail(f"{call} ({what}) returned {got!r}; expected {want!r}: {hint}")
    _success("the value of the bits right: normals with the implicit 1 and the bias, subnormals with 0.m * "
             "2**(1 - bias), zero and the sign")
