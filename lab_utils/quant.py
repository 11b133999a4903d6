"""Quantization: absmax (symmetric) and zero-point (asymmetric) integers, NF4, 4-bit packing, double quantization.

Follows bitsandbytes' API: ``quantize_*(x, ...) -> (q, QuantState)`` and ``dequantize_*(q, state) -> x_hat``.
Absmax and zero-point work per tensor, per channel (``axis``) or block-wise (``blocksize``, on the flattened tensor,
the last block padded); NF4 is QLoRA's 4-bit NormalFloat (Dettmers et al. 2023), laid out as
``bitsandbytes.functional.quantize_4bit`` does (blocks of 64, two codes per byte, high nibble first).
Chapter "Quantization". Needs only torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NF4_BITSANDBYTES", "QuantState", "bits_per_parameter", "dequantize_absmax", "dequantize_nf4",
           "dequantize_zeropoint", "nf4_code", "pack_4bit", "quantization_error", "quantize_absmax", "quantize_nf4",
           "quantize_zeropoint", "unpack_4bit"]

# The table bitsandbytes 0.50 hard-codes in `functional.get_4bit_type("nf4")` (its create_normal_map(0.9677083));
# tests compare it with the installed library. nf4_code() rebuilds it from normal quantiles.
NF4_BITSANDBYTES = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
    0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
_NF4_OFFSET = 0.9677083  # QLoRA's outermost quantile: mean of the quantiles 1 - 1/(2*15) and 1 - 1/(2*16)
_SCHEMES = ("absmax", "zeropoint", "nf4")


@dataclass(eq=False)
class QuantState:
    """Everything `dequantize_*` needs besides the integer codes (bitsandbytes' QuantState, with plain names).

    Attributes:
        scheme: "absmax", "zeropoint" or "nf4".
        bits: bits per code.
        shape, dtype: shape and dtype of the original tensor (dequantization restores both).
        blocksize: values per block (block-wise), or None.
        axis: the channel axis (per channel), or None. Both None: one scale for the whole tensor.
        scale: absmax: the max |x| per tensor/channel/block `(n_scales,)`; nf4: the same absmax per block, or, with
            double quantization, those absmaxes minus `offset` quantized to int8 (bitsandbytes stores them the
            same way); zeropoint: the factor s = (2^b - 1) / (max - min) per tensor/channel/block `(n_scales,)`.
        zero_point: zeropoint only: the integer z = round(-min * s) per scale `(n_scales,)` int32.
        code: nf4 only: the 16-value table `(16,)` the 4-bit codes index.
        nested: double quantization: the state that dequantizes `scale` (absmax int8, blocks of 256), else None.
        offset: double quantization: the mean absmax, subtracted before quantizing them (as bitsandbytes), else None.
    """

    scheme: str
    bits: int
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int | None
    axis: int | None
    scale: Tensor
    zero_point: Tensor | None = None
    code: Tensor | None = None
    nested: QuantState | None = None
    offset: float | None = None

    def to_dict(self) -> dict:
        """Plain values and tensors (dtype as its name, shape as a tuple, nested as a dict), e.g. for torch.save."""
        d = {f: getattr(self, f) for f in ("scheme", "bits", "blocksize", "axis", "scale", "zero_point", "code",
                                           "offset")}
        d.update(shape=tuple(self.shape), dtype=str(self.dtype).removeprefix("torch."),
                 nested=None if self.nested is None else self.nested.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantState:
        """Rebuild the state `to_dict` produced."""
        d = dict(d)
        d["shape"], d["dtype"] = torch.Size(d["shape"]), getattr(torch, d["dtype"])
        d["nested"] = None if d.get("nested") is None else cls.from_dict(d["nested"])
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantState):
            return NotImplemented
        for f in ("scheme", "bits", "shape", "dtype", "blocksize", "axis", "offset", "nested"):
            if getattr(self, f) != getattr(other, f):
                return False
        for f in ("scale", "zero_point", "code"):
            a, b = getattr(self, f), getattr(other, f)
            if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
                return False
        return True


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}".rstrip())
    if x.numel() == 0:
        raise ValueError("x is empty: there is nothing to quantize")
    if not torch.isfinite(x).all():
        raise ValueError("x contains inf or nan: their scale would be meaningless; clean the tensor first")
    return x


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    # bool is a subclass of int: `bits=True` is a mistake, not 1 bit.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}" if hi else f"{name} must be >= {lo}, got {value}")
    return value


def _groups(x: Tensor, axis: int | None, blocksize: int | None) -> tuple[Tensor, int | None]:
    """x as `(n_scales, group)` float rows, one row per scale, and the normalised axis (padding: zeros)."""
    if axis is not None and blocksize is not None:
        raise ValueError("give axis (per channel) or blocksize (block-wise), not both")
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    if blocksize is not None:
        _check_int("blocksize", blocksize, 1)
        flat = xf.reshape(-1)
        pad = -flat.numel() % blocksize  # zeros leave every block's max |x| unchanged
        return torch.nn.functional.pad(flat, (0, pad)).view(-1, blocksize), None  # (n_blocks, blocksize)
    if axis is None:
        return xf.reshape(1, -1), None  # (1, numel)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis must be an int in {-x.dim()}..{x.dim() - 1} for a tensor of shape "
                         f"{tuple(x.shape)}, got {axis!r}")
    axis %= x.dim()
    return xf.movedim(axis, 0).reshape(x.shape[axis], -1), axis  # (channels, rest)


def _ungroup(rows: Tensor, state: QuantState) -> Tensor:
    """Inverse of `_groups`: rows `(n_scales, group)` back to `state.shape`."""
    shape = state.shape
    if state.blocksize is not None:
        return rows.reshape(-1)[:math.prod(shape)].view(shape)
    if state.axis is None:
        return rows.view(shape)
    moved = (shape[state.axis], *shape[:state.axis], *shape[state.axis + 1:])
    return rows.view(moved).movedim(0, state.axis)


def _check_state(q: Tensor, state: QuantState, scheme: str) -> None:
    if not isinstance(state, QuantState) or state.scheme != scheme:
        got = state.scheme if isinstance(state, QuantState) else type(state).__name__
        raise ValueError(f"this state comes from quantize_{got}, not quantize_{scheme}: use dequantize_{got}")
    if scheme != "nf4" and q.shape != state.shape:
        raise ValueError(f"q has shape {tuple(q.shape)} but the state was made for {tuple(state.shape)}")


def quantize_absmax(x: Tensor, bits: int = 8, *, axis: int | None = None,
                    blocksize: int | None = None) -> tuple[Tensor, QuantState]:
    """Symmetric (absmax) quantization: s = (2^(b-1) - 1) / max|x|, q = round(x * s).

    Args:
        x: floating-point tensor, any shape.
        bits: b, 2..16 (codes in -(2^(b-1) - 1)..2^(b-1) - 1; 8 bits: -127..127).
        axis: per channel: one absmax per index of this axis (max over all other dims).
        blocksize: block-wise: one absmax per `blocksize` consecutive values of the flattened tensor.

    Returns:
        q: same shape as x, int8 (int16 when bits > 8); state: scale = the absmaxes `(n_scales,)`.

    Raises:
        TypeError, ValueError: bad x, bits, axis or blocksize (the message says which).
    """
    x, bits = _check_x(x), _check_int("bits", bits, 2, 16)
    rows, axis = _groups(x, axis, blocksize)  # (n_scales, group)
    qmax = 2 ** (bits - 1) - 1
    absmax = rows.abs().amax(dim=1)  # (n_scales,)
    s = qmax / absmax.clamp(min=torch.finfo(absmax.dtype).tiny)  # an all-zero group gets q = 0
    q = torch.round(rows * s[:, None]).clamp(-qmax, qmax)  # round half to even, as torch.round
    state = QuantState("absmax", bits, x.shape, x.dtype, blocksize, axis, absmax.float())
    return _ungroup(q, state).to(torch.int8 if bits <= 8 else torch.int16), state


def dequantize_absmax(q: Tensor, state: QuantState) -> Tensor:
    """x_hat = q / s = q / (2^(b-1) - 1) * absmax, in `state.dtype` and `state.shape` (the absmax comes back exact)."""
    _check_state(q, state, "absmax")
    qmax = 2 ** (state.bits - 1) - 1
    rows, _ = _groups(q.float(), state.axis, state.blocksize)
    # q / qmax first: the block maximum (q = qmax) is then 1.0 * absmax, exact
    return _ungroup(rows / qmax * state.scale[:, None], state).to(state.dtype)


def quantize_zeropoint(x: Tensor, bits: int = 8, *, axis: int | None = None,
                       blocksize: int | None = None) -> tuple[Tensor, QuantState]:
    """Asymmetric (zero-point) quantization: s = (2^b - 1)/(max - min), z = round(-min * s), q = round(x * s) + z.

    q is clamped to 0..2^b - 1, so min -> 0 and max -> 2^b - 1. z is an integer, so 0 (when min <= 0 <= max) maps
    to q = z and back to exactly 0. A constant group (max = min = c) uses max - min = |c| (1 if c = 0).

    Args:
        x: floating-point tensor, any shape.
        bits: b, 2..16.
        axis, blocksize: per channel or block-wise, as in `quantize_absmax`.

    Returns:
        q: same shape as x, uint8 (int16 for 9..15 bits, int32 for 16); state: scale = s and zero_point = z,
        both `(n_scales,)`.

    Raises:
        TypeError, ValueError: bad x, bits, axis or blocksize.
    """
    x, bits = _check_x(x), _check_int("bits", bits, 2, 16)
    rows, axis = _groups(x, axis, blocksize)  # (n_scales, group)
    if blocksize is not None and x.numel() % blocksize:  # pad the last block with its own first value, not 0
        n_last = x.numel() % blocksize
        rows[-1, n_last:] = rows[-1, 0]
    qmax = 2 ** bits - 1
    lo, hi = rows.amin(dim=1), rows.amax(dim=1)  # (n_scales,)
    span = torch.where(hi > lo, hi - lo, hi.abs())
    span = torch.where(span > 0, span, torch.ones_like(span))
    s = qmax / span
    z = torch.round(-lo * s)
    q = (torch.round(rows * s[:, None]) + z[:, None]).clamp(0, qmax)
    state = QuantState("zeropoint", bits, x.shape, x.dtype, blocksize, axis, s.float(), zero_point=z.to(torch.int32))
    dtype = torch.uint8 if bits <= 8 else torch.int16 if bits <= 15 else torch.int32
    return _ungroup(q, state).to(dtype), state


def dequantize_zeropoint(q: Tensor, state: QuantState) -> Tensor:
    """x_hat = (q - z) / s, in `state.dtype` and `state.shape`."""
    _check_state(q, state, "zeropoint")
    rows, _ = _groups(q.float(), state.axis, state.blocksize)
    return _ungroup((rows - state.zero_point[:, None]) / state.scale[:, None], state).to(state.dtype)


def nf4_code() -> Tensor:
    """QLoRA's NF4 table `(16,)` float32 in [-1, 1], built from quantiles of the standard normal.

    8 positive values: the N(0, 1) quantiles at 8 evenly spaced probabilities from 0.5 (excluded) to `offset`
    = 0.9677083; 7 negative ones: minus the quantiles at 7 such probabilities; and an exact 0, so each half of the
    table has about equal probability mass per value and zero (padding, ReLU outputs) is represented exactly.
    Divided by the largest, so the table spans [-1, 1]. Same as bitsandbytes' table to ~1e-7 (it takes the
    probabilities in float32; here in float64).
    """
    def quantiles(n: int) -> Tensor:
        return torch.special.ndtri(torch.linspace(_NF4_OFFSET, 0.5, n + 1, dtype=torch.float64)[:-1])
    v = torch.cat([-quantiles(7), torch.zeros(1, dtype=torch.float64), quantiles(8)]).sort().values
    return (v / v.max()).float()


def pack_4bit(codes: Tensor) -> Tensor:
    """Two 4-bit codes per byte, the first in the high nibble (bitsandbytes' order): `(N,)` -> `(ceil(N/2),)` uint8.

    An odd N is padded with a 0 code.
    """
    if not isinstance(codes, Tensor) or codes.dim() != 1:
        raise ValueError("codes must be a 1-D tensor of 4-bit codes (values 0..15)")
    if codes.numel() and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"codes must lie in 0..15, got min {int(codes.min())} and max {int(codes.max())}")
    c = torch.nn.functional.pad(codes.to(torch.uint8), (0, codes.numel() % 2))  # (2 * ceil(N/2),)
    return (c[0::2] << 4) | c[1::2]


def unpack_4bit(packed: Tensor, n: int) -> Tensor:
    """Inverse of `pack_4bit`: `(ceil(n/2),)` uint8 -> the first n codes `(n,)` uint8 (high nibble first)."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    _check_int("n", n, 0)
    if packed.numel() < (n + 1) // 2:
        raise ValueError(f"{packed.numel()} bytes hold {2 * packed.numel()} codes, fewer than n = {n}")
    p = packed.reshape(-1)
    return torch.stack([p >> 4, p & 0xF], dim=1).reshape(-1)[:n]


def quantize_nf4(x: Tensor, blocksize: int = 64, *, double_quant: bool = False,
                 nested_blocksize: int = 256) -> tuple[Tensor, QuantState]:
    """Block-wise NF4 as `bitsandbytes.functional.quantize_4bit(x, blocksize, quant_type="nf4")` on CPU.

    Each block of the flattened x is divided by its absmax and mapped to the nearest value of bitsandbytes' NF4
    table (`NF4_BITSANDBYTES`; ties go to the lower code, as bitsandbytes' bucketize); codes are packed two per byte.
    double_quant: the block absmaxes, minus their mean (`offset`), are themselves quantized (absmax int8, blocks of
    `nested_blocksize`). bitsandbytes does the same with its 8-bit "dynamic" code instead of linear int8, so the
    recovered absmaxes (and dequantized values) differ slightly; the 4-bit codes are identical.

    Args:
        x: floating-point tensor, any shape.
        blocksize: values per block (bitsandbytes accepts 32..4096, powers of 2; any int >= 1 works here).
        double_quant: quantize the absmaxes too (bitsandbytes' compress_statistics=True).
        nested_blocksize: absmaxes per second-level block (256 in bitsandbytes).

    Returns:
        packed: `(ceil(numel/2),)` uint8; state: scale = absmax per block `(n_blocks,)` (int8 with double_quant).
    """
    x, blocksize = _check_x(x), _check_int("blocksize", blocksize, 1)
    rows, _ = _groups(x, None, blocksize)  # (n_blocks, blocksize)
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant must be True or False, got {double_quant!r}")
    absmax = rows.abs().amax(dim=1).float()  # (n_blocks,)
    scaled = (rows.float() * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1)  # same float ops as bitsandbytes
    code = NF4_BITSANDBYTES.clone()
    # an odd count gets one padding value 0 (its code, 7, fills the last low nibble, as in bitsandbytes)
    kept = torch.nn.functional.pad(scaled.reshape(-1)[:x.numel()], (0, x.numel() % 2))  # (2 * ceil(numel/2),)
    codes = torch.bucketize(kept, (code[:-1] + code[1:]) / 2)  # index of the nearest table value
    state = QuantState("nf4", 4, x.shape, x.dtype, blocksize, None, absmax, code=code)
    if double_quant:
        _check_int("nested_blocksize", nested_blocksize, 1)
        state.offset = absmax.mean().item()
        state.scale, state.nested = quantize_absmax(absmax - state.offset, 8, blocksize=nested_blocksize)
    return pack_4bit(codes), state


def dequantize_nf4(packed: Tensor, state: QuantState) -> Tensor:
    """x_hat = code[q] * absmax of its block, in `state.dtype` and `state.shape`."""
    _check_state(packed, state, "nf4")
    absmax = state.scale
    if state.nested is not None:
        absmax = dequantize_absmax(state.scale, state.nested).float() + state.offset  # (n_blocks,)
    n = math.prod(state.shape)
    values = state.code[unpack_4bit(packed, n).long()]  # (n,)
    rows, _ = _groups(values, None, state.blocksize)  # (n_blocks, blocksize)
    return _ungroup(rows * absmax[:, None], state).to(state.dtype)


def bits_per_parameter(blocksize: int, *, double_quant: bool = False, nested_blocksize: int = 256, bits: int = 4,
                       scale_bits: int = 32, nested_scale_bits: int = 8) -> float:
    """Storage per weight of block-wise quantization: b + scale_bits / blocksize.

    With double quantization each block's scale takes `nested_scale_bits`, plus one `scale_bits` scale per
    `nested_blocksize` blocks: b + 8/64 + 32/(64 * 256) = 4.127 for NF4 (QLoRA §3); without, 4 + 32/64 = 4.5.
    The single `offset` per tensor is left out (negligible).
    """
    for name, v in (("blocksize", blocksize), ("nested_blocksize", nested_blocksize), ("bits", bits),
                    ("scale_bits", scale_bits), ("nested_scale_bits", nested_scale_bits)):
        _check_int(name, v, 1)
    if not double_quant:
        return bits + scale_bits / blocksize
    return bits + nested_scale_bits / blocksize + scale_bits / (blocksize * nested_blocksize)


def quantization_error(x: Tensor, x_hat: Tensor) -> dict[str, float]:
    """max_abs = max|x - x_hat|, rmse, rel_rmse = rmse / rms(x) (0 if x is all zeros and x_hat equals it)."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    err = x.double() - x_hat.double()
    rmse, rms = err.pow(2).mean().sqrt().item(), x.double().pow(2).mean().sqrt().item()
    rel = rmse / rms if rms > 0 else (0.0 if rmse == 0 else math.inf)
    return {"max_abs": err.abs().max().item(), "rmse": rmse, "rel_rmse": rel}
