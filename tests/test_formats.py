"""lab_utils.formats: decoding agrees with the stored bits and with independent decoders of them, encode inverts
decode, the table agrees with torch.finfo, rounding and underflow behave as the lecture says, and bad inputs raise.

Oracles independent of torch's own float printing: NumPy's float16 (`view(np.uint16)`) for fp16, `struct`'s IEEE
binary32 for fp32, and for bf16 the fact that a bfloat16 is the top 16 bits of the float32 with the same value. All
comparisons are exact: every fp32/fp16/bf16 value is a double, so no tolerance is needed.
"""

import math
import struct

import numpy as np
import pytest
import torch

from lab_utils.formats import (
    FORMATS,
    Decoded,
    FloatFormat,
    decode,
    encode,
    format_table,
    get_format,
    round_to,
    underflow_fraction,
)

INT_VIEW = {32: torch.int32, 16: torch.int16}


def stored_bits(t, f):
    """The unsigned bit pattern PyTorch stores for the 0-d/1-element tensor `t` of format `f`."""
    return int(t.reshape(1).view(INT_VIEW[f.bits]).item()) & ((1 << f.bits) - 1)


def from_bits(p, f):
    """The 1-element tensor of `f.dtype` whose bits are the unsigned integer `p`."""
    signed = p - (1 << f.bits) if p >= 1 << (f.bits - 1) else p
    return torch.tensor([signed], dtype=INT_VIEW[f.bits]).view(f.dtype)


def oracle_value(p, f):
    """The value of bit pattern `p`, decoded without torch."""
    if f.name == "fp16":
        return float(np.array([p], dtype=np.uint16).view(np.float16)[0])
    if f.name == "bf16":  # bf16 = fp32's sign, exponent and the top 7 fraction bits
        return struct.unpack(">f", (p << 16).to_bytes(4, "big"))[0]
    return struct.unpack(">f", p.to_bytes(4, "big"))[0]


def same(a, b):
    """Equal as floats, nan equal to nan, -0.0 different from 0.0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def sample_values(f):
    """Many values of `f`: random across ~all exponents, subnormals, zeros, infs, nan, the extremes."""
    g = torch.Generator().manual_seed(0)
    mags = torch.exp2(torch.empty(300, dtype=torch.float64).uniform_(-150, 130, generator=g))
    signs = torch.where(torch.rand(300, generator=g) < 0.5, -1.0, 1.0).double()
    vals = [float(v) for v in signs * mags]
    sub = f.smallest_subnormal
    vals += [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -2.0, 0.1, 1 / 3, f.max, -f.max, f.smallest_normal,
             sub, -sub, 3 * sub, f.smallest_normal - sub, f.smallest_normal * (1 + f.eps), 1 + f.eps]
    return vals


@pytest.mark.parametrize("name", list(FORMATS))
def test_decode_matches_the_stored_bits_and_an_independent_decoder(name):
    f = FORMATS[name]
    kinds = set()
    for x in sample_values(f):
        d = decode(x, name)
        t = torch.tensor(x, dtype=torch.float64).to(f.dtype)
        p = stored_bits(t, f)
        assert len(d.exponent_bits) == f.exponent_bits and len(d.mantissa_bits) == f.mantissa_bits
        assert int(f"{d.sign}{d.exponent_bits}{d.mantissa_bits}", 2) == p, (name, x, d)
        # the value rebuilt from the fields (sign, exponent, mantissa_value) equals the one NumPy/struct read
        assert same(d.value, oracle_value(p, f)), (name, x, d)
        assert same(d.value, float(t)), (name, x, d)
        kinds.add(d.kind)
        expected_kind = ("nan" if math.isnan(d.value) else "inf" if math.isinf(d.value) else "zero" if d.value == 0
                         else "subnormal" if abs(d.value) < f.smallest_normal else "normal")
        assert d.kind == expected_kind, (name, x, d)
        if d.kind in ("normal", "subnormal", "zero"):
            assert d.value == (-1) ** d.sign * d.mantissa_value * 2.0 ** d.exponent
            assert (1 <= d.mantissa_value < 2) if d.kind == "normal" else (0 <= d.mantissa_value < 1)
    assert kinds == {"normal", "subnormal", "zero", "inf", "nan"}  # the sample reached every kind


@pytest.mark.parametrize("name, step", [("fp16", 5), ("bf16", 5), ("fp32", 65537 * 13)])
def test_bit_patterns_decode_like_numpy_and_encode_back(name, step):
    # A stride through all 2^16 patterns (2^32 for fp32, plus the edges): decode splits the fields right
    # and encode puts them back, nan payloads and -0 included.
    f = FORMATS[name]
    top = (1 << f.bits) - 1
    patterns = list(range(0, top + 1, step)) + [1, top, 1 << (f.bits - 1), (1 << (f.bits - 1)) - 1]
    for p in patterns:
        d = decode(from_bits(p, f), name)
        assert int(f"{d.sign}{d.exponent_bits}{d.mantissa_bits}", 2) == p
        assert same(d.value, oracle_value(p, f)), (name, p, d)
        back = encode(d.sign, d.exponent_bits, d.mantissa_bits, name)
        assert stored_bits(torch.tensor([back], dtype=torch.float64).to(f.dtype), f) == p or math.isnan(back)
        assert same(back, d.value)


@pytest.mark.parametrize("name", list(FORMATS))
def test_encode_inverts_decode(name):
    f = FORMATS[name]
    for x in sample_values(f):
        d = decode(x, name)
        assert same(encode(d.sign, d.exponent_bits, d.mantissa_bits, name), d.value)
        assert same(encode(d.sign, d.exponent_bits, d.mantissa_bits, f), float(round_to(torch.tensor([x]), f)))


def test_known_layouts():
    # Hand-checked patterns: they pin the bit order (most significant first) and the bias.
    assert decode(1.0).bits == "0 01111111 " + "0" * 23
    assert decode(-2.0, "fp16").bits == "1 10000 0000000000"
    assert decode(1.5, "bf16").bits == "0 01111111 1000000"
    d = decode(0.1, "fp16")
    assert (d.exponent_bits, d.mantissa_bits, d.exponent, d.value) == ("01011", "1001100110", -4, 0.0999755859375)
    assert encode(0, "11110", "1111111111", "fp16") == 65504.0  # fp16's max
    assert encode(0, "00000", "0000000001", "fp16") == 2.0 ** -24  # fp16's smallest subnormal
    assert encode(0, "11111111", "0000000", "bf16") == math.inf
    assert math.isnan(encode(1, "11111", "0000000001", "fp16"))
    assert decode(torch.tensor([0.5], dtype=torch.bfloat16), "bf16").exponent == -1  # a tensor scalar works
    assert decode(1e-40, "fp32").kind == "subnormal" and decode(1e-40, "fp16").kind == "zero"


def test_format_table_matches_torch_finfo():
    table = format_table()
    assert list(table.index) == list(FORMATS)
    for name, f in FORMATS.items():
        info, row = torch.finfo(f.dtype), table.loc[name]
        assert row["bits"] == info.bits == f.bits
        assert row["bias"] == 2 ** (f.exponent_bits - 1) - 1
        assert row["max"] == info.max
        assert row["smallest_normal"] == info.smallest_normal == info.tiny
        assert row["eps"] == info.eps
        one = torch.ones((), dtype=f.dtype)
        assert row["smallest_subnormal"] == float(torch.nextafter(0 * one, one))
        assert row["eps"] == float(torch.nextafter(one, 2 * one)) - 1
        # finfo.resolution = 10^-floor(mantissa_bits * log10 2): the digits always right; ours adds the implicit bit
        assert 10.0 ** -math.floor(f.mantissa_bits * math.log10(2)) == pytest.approx(info.resolution)
        assert row["decimal_digits"] == pytest.approx((f.mantissa_bits + 1) * math.log10(2))
        assert -math.log10(info.resolution) <= row["decimal_digits"] < -math.log10(info.resolution) + 1.5
    # the lecture's claims: fp16 has ~3-4 decimal digits; bf16 has fp32's range but less precision than fp16
    assert 3 < table.loc["fp16", "decimal_digits"] < 4
    assert table.loc["bf16", "max"] > 1e38 > table.loc["fp16", "max"]
    assert table.loc["bf16", "eps"] > table.loc["fp16", "eps"]


def test_round_to():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=torch.float64)
    for name, f in FORMATS.items():
        r = round_to(x, name)
        assert r.dtype == torch.float32 and r.shape == x.shape
        assert torch.equal(r, x.to(f.dtype).float())
        assert torch.equal(round_to(r, name), r)  # values of fmt stay put
        assert not torch.equal(r.double(), x)  # non-vacuous: rounding changed something
        assert ((r.double() - x).abs() <= x.abs() * f.eps / 2).all()  # round to nearest: relative error <= eps/2
    big_small = torch.tensor([70000.0, 1e-8])
    assert torch.equal(round_to(big_small, "fp16"), torch.tensor([math.inf, 0.0]))  # overflow and underflow
    assert (round_to(big_small, "bf16") > 0).all() and round_to(big_small, "bf16")[0].isfinite()


def test_underflow_fraction():
    g = torch.tensor([1e-3, -1e-5, 1e-7, 0.0])
    # lr * g = 1e-6 (an fp16 subnormal), -1e-8, 1e-10 (both below half of fp16's 2^-24 ~ 6e-8: they become 0)
    assert underflow_fraction(g, 1e-3, "fp16") == pytest.approx(2 / 3)
    assert underflow_fraction(g, 1e-3, "bf16") == 0.0 == underflow_fraction(g, 1e-3, "fp32")
    assert underflow_fraction([0.0, 0.0], 1e-3, "fp16") == 0.0
    # against torch's own fp16 arithmetic on gradients of realistic sizes, and monotone in lr
    grads = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 1e-4
    half = grads.half()
    half = half[half != 0]  # the few gradients already 0 in fp16 are not counted: they had nothing to lose
    for lr in (1e-2, 1e-3, 1e-4):
        expected = ((half * lr) == 0).float().mean().item()  # fp16 tensor * Python float, torch's way
        assert underflow_fraction(half, lr, "fp16") == pytest.approx(expected, abs=1e-6)
    fractions = [underflow_fraction(grads, lr, "fp16") for lr in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 0.05 < 0.95 < fractions[2]


@pytest.mark.parametrize("call", [lambda fmt: decode(1.0, fmt), lambda fmt: encode(0, "0", "0", fmt),
                                  lambda fmt: round_to(torch.ones(2), fmt),
                                  lambda fmt: underflow_fraction([1.0], 1e-3, fmt), get_format])
def test_unknown_format_lists_the_known_ones(call):
    with pytest.raises(ValueError, match=r"fp32.*fp16.*bf16"):
        call("fp8")
    with pytest.raises(ValueError, match="FORMATS"):
        call(torch.float64)


def test_bad_inputs():
    assert get_format(torch.bfloat16) is FORMATS["bf16"] and get_format(FORMATS["fp16"]) is FORMATS["fp16"]
    assert isinstance(FORMATS["fp16"], FloatFormat) and isinstance(decode(1.0), Decoded)
    with pytest.raises(TypeError, match="fmt"):
        get_format(16)
    with pytest.raises(ValueError, match="one value"):
        decode(torch.ones(2))
    with pytest.raises(TypeError, match="float or a one-element tensor"):
        decode("1.0")
    with pytest.raises(ValueError, match="5 characters"):
        encode(0, "0111", "0" * 10, "fp16")
    with pytest.raises(ValueError, match="mantissa_bits"):
        encode(0, "01111", "0" * 9 + "2", "fp16")
    with pytest.raises(ValueError, match="sign"):
        encode(2, "01111", "0" * 10, "fp16")
    with pytest.raises(TypeError, match="floating-point tensor"):
        round_to(torch.ones(2, dtype=torch.int64), "fp16")
    with pytest.raises(ValueError, match="lr"):
        underflow_fraction([1.0], 0.0, "fp16")
    with pytest.raises(ValueError, match="empty"):
        underflow_fraction([], 1e-3, "fp16")
