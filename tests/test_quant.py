"""lab_utils.quant: the lecture's worked example, round-trip errors within their derived bounds, exact points (0, block
maxima, grid values), dtype/shape, 4-bit packing, QuantState dicts, and NF4 against bitsandbytes on CPU.

Tolerances: FLOAT_SLACK = 1e-6 (relative to the group's absmax) covers the float32 rounding of x * s before
round(); the error bounds themselves are derived in the tests. NF4_TABLE_ATOL = 1e-6: nf4_code() takes the normal
quantiles at float64 probabilities, bitsandbytes at float32 ones (error ~3e-8 in p, times dppf/dp ~ 14 at p = 0.968,
divided by the max 1.85: ~2e-7).
"""

import io

import bitsandbytes.functional as bnbf
import pytest
import torch

from lab_utils.quant import (
    NF4_BITSANDBYTES,
    QuantState,
    bits_per_parameter,
    dequantize_absmax,
    dequantize_nf4,
    dequantize_zeropoint,
    nf4_code,
    pack_4bit,
    quantization_error,
    quantize_absmax,
    quantize_nf4,
    quantize_zeropoint,
    unpack_4bit,
)

FLOAT_SLACK = 1e-6
NF4_TABLE_ATOL = 1e-6
GROUPINGS = [{}, {"axis": 0}, {"axis": -1}, {"blocksize": 64}, {"blocksize": 7}]  # 480 values: partial last blocks


def sample(shape=(12, 40), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.linspace(0.1, 3.0, shape[-1])  # channels of different ranges
    return x.to(dtype)


def per_element(x, kwargs, stat):
    """stat(group) `(n_groups,)` broadcast back to every element of x, computed independently of lab_utils."""
    if "blocksize" in kwargs:
        bs = kwargs["blocksize"]
        flat = x.reshape(-1)
        n_last = flat.numel() % bs
        blocks = list(flat[: flat.numel() - n_last].view(-1, bs)) + ([flat[-n_last:]] if n_last else [])
        return torch.cat([stat(b).expand(b.numel()) for b in blocks]).view(x.shape)
    if "axis" in kwargs:
        moved = x.movedim(kwargs["axis"], 0)
        return torch.stack([stat(c).expand(c.shape) for c in moved]).movedim(0, kwargs["axis"])
    return stat(x).expand(x.shape)


# ----------------------------------------------------------------------------------------------------- absmax
def test_lecture_worked_example():
    x = torch.tensor([-5.4, -3.8, -1.2, 0.3, 6.4, 7.8])  # max|w| = 7.8, s = 127 / 7.8
    q, state = quantize_absmax(x)
    assert torch.equal(q, torch.tensor([-88, -62, -20, 5, 104, 127], dtype=torch.int8))
    assert state.scale.tolist() == [pytest.approx(7.8)]
    assert dequantize_absmax(q, state)[-1].item() == x[-1].item()  # the maximum comes back exactly
    q, _ = quantize_absmax(torch.tensor([7.77, 7.8]))  # 7.77 * 127 / 7.8 = 126.5 -> 127
    assert q.tolist() == [127, 127]


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
@pytest.mark.parametrize("kwargs", GROUPINGS)
def test_absmax_error_within_bound(bits, kwargs):
    # Bound: s = qmax / absmax with qmax = 2^(b-1) - 1, so |x s| <= qmax and q = round(x s) never needs the clamp:
    # |x s - q| <= 1/2, hence |x - q / s| <= 1 / (2 s) = absmax / (2 qmax), per group (tensor, channel or block).
    x = sample()
    q, state = quantize_absmax(x, bits, **kwargs)
    x_hat = dequantize_absmax(q, state)
    absmax = per_element(x, kwargs, lambda g: g.abs().max())
    bound = absmax / (2 * (2 ** (bits - 1) - 1))
    err = (x - x_hat).abs()
    assert (err <= bound + FLOAT_SLACK * absmax).all()
    assert (err / bound).max() > 0.4  # non-vacuous: rounding errors reach close to half a step somewhere


@pytest.mark.parametrize("kwargs", GROUPINGS)
def test_absmax_exact_points(kwargs):
    x = sample()
    x[3, 5] = 0.0
    q, state = quantize_absmax(x, **kwargs)
    x_hat = dequantize_absmax(q, state)
    assert x_hat[3, 5].item() == 0.0  # 0 -> q = 0 -> 0
    absmax = per_element(x, kwargs, lambda g: g.abs().max())
    at_max = x.abs() == absmax
    assert at_max.sum() >= state.scale.numel()
    assert torch.equal(x_hat[at_max], x[at_max])  # every group's maximum round-trips exactly
    q2, state2 = quantize_absmax(x_hat, **kwargs)  # values on the grid: same codes, same values
    assert torch.equal(q2, q) and torch.equal(dequantize_absmax(q2, state2), x_hat)
    y = torch.tensor([0.12405724078416824, -0.05])  # a float32 whose (absmax / 127) * 127 != absmax
    assert dequantize_absmax(*quantize_absmax(y))[0].item() == y[0].item()


def test_absmax_per_channel_beats_per_tensor_with_an_outlier():
    x = sample()
    x[0, 0] = 100.0  # one outlier ruins the per-tensor scale, not the other channels' scales
    err_tensor = quantization_error(x, dequantize_absmax(*quantize_absmax(x)))
    err_channel = quantization_error(x, dequantize_absmax(*quantize_absmax(x, axis=0)))
    assert err_channel["rmse"] < err_tensor["rmse"] / 3


# ------------------------------------------------------------------------------------------------- zero-point
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("kwargs", GROUPINGS)
def test_zeropoint_error_within_bound(bits, kwargs):
    # Bound: with z = round(-min s), x s + z lies in [-1/2, 2^b - 1 + 1/2] for min <= x <= max, so the nearest
    # integer in 0..2^b - 1 (round, then clamp) is within 1/2 of it: |x - (q - z) / s| <= 1 / (2 s).
    x = sample() + 0.7  # not centred on 0
    q, state = quantize_zeropoint(x, bits, **kwargs)
    x_hat = dequantize_zeropoint(q, state)
    s = per_element(x, kwargs, lambda g: (2**bits - 1) / (g.max() - g.min()))
    span = per_element(x, kwargs, lambda g: g.max() - g.min())
    err = (x - x_hat).abs()
    assert (err <= 1 / (2 * s) + FLOAT_SLACK * span).all()
    assert (err * 2 * s).max() > 0.4  # non-vacuous
    assert q.dtype == (torch.uint8 if bits <= 8 else torch.int32)
    assert q.min() >= 0 and q.max() <= 2**bits - 1


def test_zeropoint_min_max_zero():
    x = torch.tensor([-1.3, -0.2, 0.0, 0.45, 2.9])
    q, state = quantize_zeropoint(x, 8)
    assert state.scale.item() == pytest.approx(255 / 4.2)
    assert state.zero_point.dtype == torch.int32 and state.zero_point.item() == round(1.3 * 255 / 4.2)
    assert q[0] == 0 and q[-1] == 255  # min -> 0, max -> 2^b - 1
    assert dequantize_zeropoint(q, state)[2].item() == 0.0  # z is an integer, so 0 comes back exactly


def test_zeropoint_grid_values_and_constant_block():
    x = sample() + 0.7
    q, state = quantize_zeropoint(x, 4, blocksize=64)
    x_hat = dequantize_zeropoint(q, state)
    q2, state2 = quantize_zeropoint(x_hat, 4, blocksize=64)
    assert torch.equal(q2, q)  # codes exact; the scales may move by an ulp, so the values by ~1e-7
    torch.testing.assert_close(dequantize_zeropoint(q2, state2), x_hat, rtol=1e-6, atol=1e-6)
    for c in (2.5, -2.5, 0.0):  # max = min: no division by zero, the constant comes back
        const = torch.full((10,), c)
        torch.testing.assert_close(dequantize_zeropoint(*quantize_zeropoint(const)), const)


# ------------------------------------------------------------------------------------------- dtype and shape
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtype_and_shape_kept(dtype):
    x = sample((3, 5, 7), dtype=dtype)
    for quantize, dequantize, kwargs in [(quantize_absmax, dequantize_absmax, {"axis": 1}),
                                         (quantize_absmax, dequantize_absmax, {"bits": 12, "blocksize": 16}),
                                         (quantize_zeropoint, dequantize_zeropoint, {"axis": 2}),
                                         (quantize_nf4, dequantize_nf4, {}),
                                         (quantize_nf4, dequantize_nf4, {"double_quant": True})]:
        q, state = quantize(x, **kwargs)
        x_hat = dequantize(q, state)
        assert x_hat.dtype == dtype and x_hat.shape == x.shape and state.shape == x.shape
    assert quantize_absmax(x)[0].dtype == torch.int8 and quantize_absmax(x, 9)[0].dtype == torch.int16
    assert quantize_zeropoint(x)[0].dtype == torch.uint8 and quantize_zeropoint(x, 12)[0].dtype == torch.int16
    assert quantize_nf4(x)[0].shape == ((x.numel() + 1) // 2,)


# ------------------------------------------------------------------------------------------------ 4-bit pack
def test_pack_unpack():
    assert pack_4bit(torch.tensor([1, 2, 15], dtype=torch.uint8)).tolist() == [0x12, 0xF0]  # high nibble first
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 64):
        codes = torch.randint(0, 16, (n,), generator=g, dtype=torch.uint8)
        packed = pack_4bit(codes)
        assert packed.dtype == torch.uint8 and packed.shape == ((n + 1) // 2,)
        assert torch.equal(unpack_4bit(packed, n), codes)
    with pytest.raises(ValueError, match="0..15"):
        pack_4bit(torch.tensor([3, 16]))
    with pytest.raises(ValueError, match="fewer than n"):
        unpack_4bit(torch.zeros(2, dtype=torch.uint8), 5)


# --------------------------------------------------------------------------------------------- QuantState dict
def test_quant_state_dict_round_trip():
    x = sample()
    states = [quantize_absmax(x, axis=1)[1], quantize_zeropoint(x, 4, blocksize=32)[1],
              quantize_nf4(x.half())[1], quantize_nf4(x, double_quant=True, nested_blocksize=4)[1]]
    for state in states:
        d = state.to_dict()
        assert isinstance(d["dtype"], str) and isinstance(d["shape"], tuple)
        buffer = io.BytesIO()
        torch.save(d, buffer)
        buffer.seek(0)
        assert QuantState.from_dict(torch.load(buffer, weights_only=True)) == state
    nested = states[-1]
    assert nested.nested is not None and nested.to_dict()["nested"]["scheme"] == "absmax"
    other = QuantState.from_dict(nested.to_dict())
    other.nested.scale = other.nested.scale + 1  # non-vacuous: a difference deep inside is seen
    assert other != nested and states[0] != states[1]


# ------------------------------------------------------------------------------------------ NF4, bitsandbytes
def test_nf4_table():
    code = nf4_code()
    bnb_code = bnbf.get_4bit_type("nf4", device="cpu")
    torch.testing.assert_close(code, bnb_code, atol=NF4_TABLE_ATOL, rtol=0)
    assert torch.equal(NF4_BITSANDBYTES, bnb_code)  # the copy in quant.py is the library's table
    assert code.dtype == torch.float32 and code.shape == (16,) and torch.all(code[1:] > code[:-1])
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7 and (code == 0).sum() == 1  # asymmetric, exact 0
    assert code[0] == -1 and code[-1] == 1


SHAPES = [(64, 33), (7, 5), (1000,), (3, 50)]  # full blocks, odd count, partial last block


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("blocksize", [32, 64, 128])
def test_nf4_matches_bitsandbytes(dtype, blocksize):
    for i, shape in enumerate(SHAPES):
        x = sample(shape, seed=i, dtype=dtype)
        packed_bnb, state_bnb = bnbf.quantize_4bit(x, blocksize=blocksize, quant_type="nf4")
        packed, state = quantize_nf4(x, blocksize)
        assert torch.equal(packed, packed_bnb.reshape(-1))  # same codes, same nibble order, same odd-count padding
        assert torch.equal(state.scale, state_bnb.absmax)
        x_hat_bnb = bnbf.dequantize_4bit(packed_bnb, state_bnb, quant_type="nf4")
        # bitsandbytes 0.50 on CPU returns a 1-D input as (1, n); the values are the same
        assert torch.equal(dequantize_nf4(packed, state), x_hat_bnb.reshape(shape))


def test_nf4_error_bound_and_exact_points():
    # Bound: x / absmax in [-1, 1] goes to the nearest table value, at most half the widest gap away (between
    # 0.723 and 1.0), so |x - x_hat| <= absmax * max_gap / 2 per block.
    x = sample((6, 64))
    x[2, 3] = 0.0
    packed, state = quantize_nf4(x, 64)
    x_hat = dequantize_nf4(packed, state)
    absmax = x.abs().amax(dim=1, keepdim=True)  # blocks of 64 = rows here
    max_gap = (NF4_BITSANDBYTES[1:] - NF4_BITSANDBYTES[:-1]).max()
    err = (x - x_hat).abs()
    assert (err <= absmax * (max_gap / 2 + FLOAT_SLACK)).all() and err.max() > 0
    assert x_hat[2, 3].item() == 0.0
    at_max = x.abs() == absmax
    assert torch.equal(x_hat[at_max], x[at_max])  # the table holds -1 and 1: each block's maximum is exact
    packed2, _ = quantize_nf4(x_hat, 64)
    assert torch.equal(packed2, packed)  # grid values keep their codes


def test_double_quant_against_bitsandbytes():
    x = sample((64, 80), seed=3)  # 80 blocks of 64
    packed_bnb, state_bnb = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    packed, state = quantize_nf4(x, 64, double_quant=True, nested_blocksize=16)  # 5 second-level blocks
    assert torch.equal(packed, packed_bnb.reshape(-1))  # codes come from the exact absmax in both
    assert state.offset == pytest.approx(state_bnb.offset.item(), abs=0)  # the same mean absmax
    assert state.scale.dtype == torch.int8 and state.nested.blocksize == 16
    absmax = x.reshape(-1, 64).abs().amax(dim=1)
    # Ours: linear int8 absmax of (absmax - offset) per nested block: error <= max|absmax - offset| / (2 * 127).
    # bitsandbytes: its 8-bit dynamic code, error <= max|absmax - offset| * (widest gap of that code) / 2.
    centred_max = (absmax - state.offset).abs().max()
    ours = dequantize_absmax(state.scale, state.nested) + state.offset
    theirs = bnbf.dequantize_blockwise(state_bnb.absmax, state_bnb.state2) + state_bnb.offset
    dynamic = bnbf.create_dynamic_map()
    bound_ours, bound_theirs = centred_max / 254, centred_max * (dynamic[1:] - dynamic[:-1]).max() / 2
    assert (ours - absmax).abs().max() <= bound_ours * (1 + FLOAT_SLACK)
    assert (theirs - absmax).abs().max() <= bound_theirs * (1 + FLOAT_SLACK)
    assert not torch.equal(ours, absmax)  # double quantization does lose something
    # x_hat = code * absmax with |code| <= 1: the two dequantizations differ by at most the two absmax errors
    diff = (dequantize_nf4(packed, state) - bnbf.dequantize_4bit(packed_bnb, state_bnb, quant_type="nf4")).abs()
    assert diff.max() <= (bound_ours + bound_theirs) * (1 + FLOAT_SLACK)
    single = (x - dequantize_nf4(*quantize_nf4(x, 64))).pow(2).mean()
    assert (x - dequantize_nf4(packed, state)).pow(2).mean() < 1.05 * single  # DQ costs little accuracy


# ------------------------------------------------------------------------------------------- bits, error
def test_bits_per_parameter():
    assert bits_per_parameter(64) == 4.5
    assert bits_per_parameter(64, double_quant=True) == 4 + 8 / 64 + 32 / (64 * 256)
    assert round(bits_per_parameter(64, double_quant=True), 3) == 4.127
    assert bits_per_parameter(128, bits=8, scale_bits=16) == 8.125
    with pytest.raises(ValueError, match="blocksize"):
        bits_per_parameter(0)


def test_quantization_error():
    e = quantization_error(torch.tensor([3.0, -4.0]), torch.tensor([3.0, -3.0]))
    assert e["max_abs"] == 1.0 and e["rmse"] == pytest.approx(0.5 ** 0.5)
    assert e["rel_rmse"] == pytest.approx(0.5 ** 0.5 / 12.5 ** 0.5)
    assert quantization_error(torch.zeros(3), torch.zeros(3))["rel_rmse"] == 0.0


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("call, error, match", [
    (lambda x: quantize_absmax(x, 1), ValueError, "bits must be in 2..16, got 1"),
    (lambda x: quantize_absmax(x, 17), ValueError, "bits must be in 2..16"),
    (lambda x: quantize_zeropoint(x, 8.0), TypeError, "bits must be an int"),
    (lambda x: quantize_absmax(x, True), TypeError, "bits must be an int"),
    (lambda x: quantize_absmax(x, blocksize=0), ValueError, "blocksize must be >= 1, got 0"),
    (lambda x: quantize_zeropoint(x, blocksize=-3), ValueError, "blocksize must be >= 1"),
    (lambda x: quantize_nf4(x, 0), ValueError, "blocksize must be >= 1"),
    (lambda x: quantize_nf4(x, None), TypeError, "blocksize must be an int"),
    (lambda x: quantize_nf4(x, double_quant=True, nested_blocksize=0), ValueError, "nested_blocksize"),
    (lambda x: quantize_absmax(x, axis=0, blocksize=8), ValueError, "not both"),
    (lambda x: quantize_absmax(x, axis=2), ValueError, "axis must be an int in -2..1"),
    (lambda x: quantize_absmax(x.long()), TypeError, "floating-point"),
    (lambda x: quantize_absmax(torch.tensor([1.0, float("nan")])), ValueError, "inf or nan"),
    (lambda x: quantize_nf4(torch.empty(0)), ValueError, "empty"),
    (lambda x: dequantize_zeropoint(*quantize_absmax(x)), ValueError, "use dequantize_absmax"),
    (lambda x: dequantize_absmax(torch.zeros(3, dtype=torch.int8), quantize_absmax(x)[1]), ValueError, "shape"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(sample((4, 6)))
