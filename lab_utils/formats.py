"""Floating-point formats bit by bit: the sign, exponent and mantissa fields of fp32, fp16 and bf16.

IEEE 754 binary32/binary16 and Google's bfloat16: value = (-1)^sign * 1.mantissa * 2^(exponent - bias) for a normal
number, (-1)^sign * 0.mantissa * 2^(1 - bias) when the exponent field is all zeros (subnormals and zero), inf/nan
when it is all ones. Decoding reads the bits PyTorch actually stores (`tensor.view(int16/int32)`), so every figure
here is the hardware's, not a re-derivation. Chapter "Quantization" (number formats and mixed precision). Bit
strings are written most significant bit first. Needs only torch (pandas for `format_table`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pandas is imported where the table is built: the rest of the module needs only torch
    import pandas

__all__ = ["FORMATS", "Decoded", "FloatFormat", "decode", "encode", "format_table", "get_format", "round_to",
           "underflow_fraction"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, `exponent_bits`, `mantissa_bits` (the stored fraction).

    Attributes:
        name: "fp32", "fp16" or "bf16" (the keys of :data:`FORMATS`).
        exponent_bits: width of the exponent field (8, 5, 8).
        mantissa_bits: width of the stored fraction, without the implicit leading 1 (23, 10, 7).
        bias: subtracted from the exponent field, `2^(exponent_bits - 1) - 1` (127, 15, 127).
        dtype: the torch dtype that stores it.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    dtype: torch.dtype

    @property
    def bits(self) -> int:
        """Total width: 1 + exponent_bits + mantissa_bits."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def max(self) -> float:
        """Largest finite value: 1.11...1 (binary) * 2^(largest non-special exponent field - bias)."""
        return (2.0 - 2.0 ** -self.mantissa_bits) * 2.0 ** (2 ** self.exponent_bits - 2 - self.bias)

    @property
    def smallest_normal(self) -> float:
        """Smallest positive normal value, 1.0 * 2^(1 - bias) (torch.finfo's `smallest_normal`/`tiny`)."""
        return 2.0 ** (1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value, 0.00...1 (binary) * 2^(1 - bias): below it everything rounds to zero."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1.0 and the next value, 2^-mantissa_bits (torch.finfo's `eps`)."""
        return 2.0 ** -self.mantissa_bits

    @property
    def decimal_digits(self) -> float:
        """Significant decimal digits: (mantissa_bits + 1) * log10(2).

        The significand has mantissa_bits + 1 binary digits (the implicit leading 1 counts), and a number with
        p binary digits carries as much information as p * log10(2) decimal ones: fp32 7.2, fp16 3.3 (the
        lecture's "about 4 decimal digits" for half precision), bf16 2.4. torch.finfo's `resolution` rounds the
        other way, 10^-floor(mantissa_bits * log10(2)): the digits that are *always* right.
        """
        return (self.mantissa_bits + 1) * math.log10(2)


FORMATS: dict[str, FloatFormat] = {
    "fp32": FloatFormat("fp32", 8, 23, 127, torch.float32),
    "fp16": FloatFormat("fp16", 5, 10, 15, torch.float16),
    "bf16": FloatFormat("bf16", 8, 7, 127, torch.bfloat16),  # fp32's exponent, a 7-bit fraction
}
_INT_VIEW = {32: torch.int32, 16: torch.int16}  # the integer dtype of the same width, for tensor.view


def get_format(fmt: str | FloatFormat | torch.dtype) -> FloatFormat:
    """The :class:`FloatFormat` for a name of :data:`FORMATS`, a torch dtype, or a FloatFormat (returned as is).

    Raises:
        ValueError: for an unknown name or dtype (the message lists the known ones).
        TypeError: for anything else.
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, torch.dtype):
        for f in FORMATS.values():
            if f.dtype == fmt:
                return f
        raise ValueError(f"no format for dtype {fmt}; use one of {[f.dtype for f in FORMATS.values()]} "
                         f"or a name of FORMATS: {list(FORMATS)}")
    if isinstance(fmt, str):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: use one of FORMATS: {list(FORMATS)}")
        return FORMATS[fmt]
    raise TypeError(f"fmt must be a name of FORMATS {list(FORMATS)}, a torch dtype or a FloatFormat, "
                    f"got {type(fmt).__name__}")


@dataclass(frozen=True)
class Decoded:
    """The fields of one value, as stored.

    Attributes:
        sign: 0 (positive) or 1 (negative).
        exponent_bits: the exponent field, e.g. "01111111" (most significant bit first).
        mantissa_bits: the stored fraction, e.g. "1000000" for bf16's 1.5.
        exponent: the unbiased exponent: field - bias for normals, 1 - bias for subnormals and zero (their
            exponent field 0 stands for 1 - bias), field - bias (= bias + 1) for inf and nan.
        mantissa_value: the significand: 1 + fraction for normals, 0 + fraction for subnormals and zero (no
            implicit 1), the bare fraction for inf/nan (0 for inf, non-zero for nan).
        value: the number itself: (-1)^sign * mantissa_value * 2^exponent when finite.
        kind: "normal", "subnormal", "zero", "inf" or "nan".
        fmt: the format's name.
    """

    sign: int
    exponent_bits: str
    mantissa_bits: str
    exponent: int
    mantissa_value: float
    value: float
    kind: str
    fmt: str

    @property
    def bits(self) -> str:
        """All the bits, fields separated: "sign exponent mantissa", e.g. "0 01111 0000000000" for fp16 1.0."""
        return f"{self.sign} {self.exponent_bits} {self.mantissa_bits}"


def _as_scalar(x: float | Tensor, f: FloatFormat) -> Tensor:
    """`x` rounded to `f`, a 0-d tensor of `f.dtype`."""
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"decode takes one value, got a tensor of shape {tuple(x.shape)}; pass x[i] or x.item()")
        return x.detach().reshape(()).to(f.dtype)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"x must be a float or a one-element tensor, got {type(x).__name__}")
    # A Python float is a double: convert from float64 so the value is rounded once, straight to f.
    return torch.tensor(x, dtype=torch.float64).to(f.dtype)


def decode(x: float | Tensor, fmt: str | FloatFormat | torch.dtype = "fp32") -> Decoded:
    """The sign, exponent and mantissa of `x` in `fmt`, read from the bits PyTorch stores.

    `x` is first rounded to `fmt` (round to nearest even, as `tensor.to(dtype)`): `decode(0.1, "fp16")` shows the
    fp16 value nearest 0.1, whose `value` is 0.0999755859375.

    Args:
        x: a Python number or a one-element tensor (any float dtype).
        fmt: a name of :data:`FORMATS` ("fp32", "fp16", "bf16"), a torch dtype, or a :class:`FloatFormat`.

    Returns:
        A :class:`Decoded` with the fields as bit strings, their meaning and the value.

    Raises:
        ValueError: for an unknown format or a tensor with more than one element.
        TypeError: if `x` is not a number or a tensor.
    """
    f = get_format(fmt)
    t = _as_scalar(x, f)  # ()
    # view as the signed integer of the same width, then mask to read it as unsigned bits
    raw = int(t.reshape(1).view(_INT_VIEW[f.bits]).item()) & ((1 << f.bits) - 1)
    sign = raw >> (f.bits - 1)
    e_field = (raw >> f.mantissa_bits) & ((1 << f.exponent_bits) - 1)
    m_field = raw & ((1 << f.mantissa_bits) - 1)
    fraction = m_field / 2 ** f.mantissa_bits
    if e_field == (1 << f.exponent_bits) - 1:  # all ones: inf (fraction 0) or nan
        kind = "nan" if m_field else "inf"
        exponent, mantissa_value = e_field - f.bias, fraction
        value = math.nan if m_field else (-math.inf if sign else math.inf)
    else:
        if e_field == 0:  # all zeros: no implicit 1, exponent 1 - bias (not 0 - bias): subnormals continue normals
            kind = "subnormal" if m_field else "zero"
            exponent, mantissa_value = 1 - f.bias, fraction
        else:
            kind = "normal"
            exponent, mantissa_value = e_field - f.bias, 1.0 + fraction
        value = (-1.0) ** sign * math.ldexp(mantissa_value, exponent)  # exact in float64 for all three formats
    return Decoded(sign=sign, exponent_bits=format(e_field, f"0{f.exponent_bits}b"),
                   mantissa_bits=format(m_field, f"0{f.mantissa_bits}b"), exponent=exponent,
                   mantissa_value=mantissa_value, value=value, kind=kind, fmt=f.name)


def _check_bits(name: str, bits: str, width: int, fmt_name: str) -> None:
    if not isinstance(bits, str):
        raise TypeError(f"{name} must be a string of '0'/'1', got {type(bits).__name__}")
    if len(bits) != width or set(bits) - {"0", "1"}:
        raise ValueError(f"{name} must be {width} characters '0'/'1' for {fmt_name}, got {bits!r}")


def encode(sign: int, exponent_bits: str, mantissa_bits: str, fmt: str | FloatFormat | torch.dtype = "fp32") -> float:
    """The value stored by these bits in `fmt` (the inverse of :func:`decode`).

    Args:
        sign: 0 or 1.
        exponent_bits: the exponent field, `fmt.exponent_bits` characters '0'/'1', most significant first.
        mantissa_bits: the stored fraction, `fmt.mantissa_bits` characters '0'/'1'.
        fmt: a name of :data:`FORMATS`, a torch dtype or a :class:`FloatFormat`.

    Returns:
        The value as a Python float (exact: every fp32/fp16/bf16 value is a double); inf or nan for an exponent
        field of all ones.

    Raises:
        ValueError: for an unknown format, a sign other than 0/1 or fields of the wrong length or characters.
    """
    f = get_format(fmt)
    if isinstance(sign, bool) or sign not in (0, 1):
        raise ValueError(f"sign must be 0 (positive) or 1 (negative), got {sign!r}")
    _check_bits("exponent_bits", exponent_bits, f.exponent_bits, f.name)
    _check_bits("mantissa_bits", mantissa_bits, f.mantissa_bits, f.name)
    raw = int(f"{sign}{exponent_bits}{mantissa_bits}", 2)
    if raw >= 1 << (f.bits - 1):  # the signed integer with the same bits (two's complement)
        raw -= 1 << f.bits
    return float(torch.tensor([raw], dtype=_INT_VIEW[f.bits]).view(f.dtype).item())


def format_table() -> pandas.DataFrame:
    """One row per format of :data:`FORMATS`: widths, range, precision.

    Columns: "bits", "exponent_bits", "mantissa_bits", "bias", "max", "smallest_normal", "smallest_subnormal",
    "eps" (machine epsilon) and "decimal_digits" ((mantissa_bits + 1) * log10(2), see
    :attr:`FloatFormat.decimal_digits`). Index: "fp32", "fp16", "bf16". Computed from the widths; the tests
    check every figure against `torch.finfo`.
    """
    import pandas as pd

    rows = {name: {"bits": f.bits, "exponent_bits": f.exponent_bits, "mantissa_bits": f.mantissa_bits,
                   "bias": f.bias, "max": f.max, "smallest_normal": f.smallest_normal,
                   "smallest_subnormal": f.smallest_subnormal, "eps": f.eps, "decimal_digits": f.decimal_digits}
            for name, f in FORMATS.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def round_to(x: Tensor, fmt: str | FloatFormat | torch.dtype) -> Tensor:
    """`x` rounded to the nearest values of `fmt`, returned as float32 so formats compare side by side.

    Args:
        x: a floating-point tensor, any shape.
        fmt: a name of :data:`FORMATS`, a torch dtype or a :class:`FloatFormat`.

    Returns:
        float32, shape of `x`: `x.to(fmt.dtype).float()` (values too large become inf, too small 0).

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: for an unknown format.
    """
    f = get_format(fmt)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""))
    return x.detach().to(f.dtype).float()


def underflow_fraction(values: Tensor | Sequence[float], lr: float, fmt: str | FloatFormat | torch.dtype) -> float:
    """The fraction of the non-zero updates `lr * g` that become exactly 0 in `fmt`.

    Micikevicius et al. 2018 (the lecture's quote): in fp16 "small valued gradients would become zero in the
    optimizer when multiplied with the learning rate". The product is computed in float64 and rounded once to
    `fmt`, as a half-precision tensor times a Python float is (computed wider, rounded on storing).

    Args:
        values: gradients, any shape (a tensor or a sequence of numbers).
        lr: the learning rate, > 0.
        fmt: a name of :data:`FORMATS`, a torch dtype or a :class:`FloatFormat`.

    Returns:
        In [0, 1]: #(g != 0 and round(lr * g) == 0) / #(g != 0); 0.0 if every value is 0 (nothing could vanish).

    Raises:
        ValueError: for an unknown format, lr <= 0 or non-finite, or no values.
    """
    f = get_format(fmt)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    g = values.detach().double() if isinstance(values, Tensor) else torch.as_tensor(values, dtype=torch.float64)
    if g.numel() == 0:
        raise ValueError("values is empty: pass the gradients whose updates you want to test")
    nonzero = g != 0
    n = int(nonzero.sum())
    if n == 0:
        return 0.0
    vanished = nonzero & ((g * lr).to(f.dtype) == 0)
    return int(vanished.sum()) / n
