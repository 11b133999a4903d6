"""Tests for lab_utils.checks.quant (absmax int8, zero-point, bits per parameter, block size under a budget): the
reference answers pass, each typical mistake fails with a message naming it, the stubs say "not written yet"."""

import math

import pytest
import torch

from lab_utils.checks import check_absmax_int8, check_bits_per_param, check_block_size, check_zeropoint
from lab_utils.checks.quant import LECTURE_Q, LECTURE_X, _block_cases, blockwise_absmax_errors


def stub(*args):
    raise NotImplementedError  # your code here


@pytest.mark.parametrize("check", [check_absmax_int8, check_zeropoint, check_bits_per_param, check_block_size])
def test_stubs_say_not_written(check, capsys):
    assert check(stub) is False
    assert "✗ stub is not written yet" in capsys.readouterr().out


# --- absmax int8 ------------------------------------------------------------------------------------------------------
def absmax_int8(x):
    scale = 127 / x.abs().max()
    return torch.round(x * scale).to(torch.int8), scale.item()


def test_absmax_reference_passes_and_is_the_lecture_example(capsys):
    assert check_absmax_int8(absmax_int8) is True
    assert "✓ absmax int8 right" in capsys.readouterr().out
    q, s = absmax_int8(torch.tensor(LECTURE_X))
    assert q.tolist() == list(LECTURE_Q) and s == pytest.approx(127 / 7.8)
    assert absmax_int8(torch.tensor([7.77, 7.8]))[0].tolist() == [127, 127]  # 7.77 * s = 126.5 -> 127


def test_absmax_other_correct_forms_pass():
    def with_step(x):  # divide by the step size, as bitsandbytes stores absmax, and a 0-d tensor scale
        absmax = x.abs().amax()
        return torch.round(x / (absmax / 127)).clamp(-127, 127).to(torch.int8), 127 / absmax

    assert check_absmax_int8(with_step) is True


def q_with(scale_fn, cast=lambda t: torch.round(t).to(torch.int8)):
    def fn(x):
        s = scale_fn(x)
        return cast(x * s), float(s)
    return fn


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (q_with(lambda x: 128 / x.abs().max()), r"128 / max\|x\| puts max\|x\| at 128"),
        (q_with(lambda x: 255 / x.abs().max()), r"255 = 2\^8 - 1 is the unsigned range"),
        (q_with(lambda x: 127 / x.max()), r"x.max\(\) misses a larger negative value"),
        (q_with(lambda x: 127 / x.abs().max(), cast=lambda t: t.to(torch.int8)), "do not truncate"),
        (q_with(lambda x: 127 / x.abs().max(), cast=lambda t: t.floor().to(torch.int8)), r"not down \(floor\)"),
        (q_with(lambda x: 127 / x.abs().max(), cast=lambda t: t), "not rounded"),
        (q_with(lambda x: 127 / x.abs().max(), cast=torch.round), "cast the rounded values to torch.int8"),
        (q_with(lambda x: 127 / x.abs().max(), cast=lambda t: torch.round(t).int()), "return torch.int8"),
        (lambda x: (absmax_int8(x)[0], x.abs().max().item() / 127), "that is the step size"),
        (lambda x: absmax_int8(x)[0], "return a tuple"),
        (lambda x: (absmax_int8(x)[0].flatten()[:-1], 1.0), "returned q of shape"),
        (lambda x: (absmax_int8(x)[0].tolist(), 1.0), "returned q as a list"),
        (lambda x: (absmax_int8(x)[0], [1.0, 2.0]), "return one number"),
    ],
)
def test_absmax_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_absmax_int8(wrong)


def test_absmax_cases_are_not_vacuous():
    # The weight case must tell x.max() from x.abs().max(), and some x * s must be off-integer by more than the
    # near-tie tolerance in the direction truncation gets wrong (else truncation would pass).
    from lab_utils.checks.quant import _absmax_cases

    (_, lecture), (_, w) = _absmax_cases()
    assert w.max() < w.abs().max()
    scaled = lecture * 127 / 7.8
    assert not torch.equal(scaled.trunc(), torch.round(scaled))


# --- zero-point -------------------------------------------------------------------------------------------------------
def zeropoint(x, bits):
    top = 2**bits - 1
    scale = top / (x.max() - x.min())
    zero_point = torch.round(-x.min() * scale)
    q = (torch.round(x * scale) + zero_point).clamp(0, top).to(torch.uint8)
    return q, scale.item(), int(zero_point)


def test_zeropoint_reference_passes_and_maps_0_to_0(capsys):
    assert check_zeropoint(zeropoint) is True
    assert "✓ zero-point quantization right" in capsys.readouterr().out
    x = torch.tensor([-1.2, 0.0, 0.5, 3.1, 6.4])
    q, s, z = zeropoint(x, 8)
    assert q[0] == 0 and q[-1] == 255 and q[1] == z  # min -> 0, max -> 2^b - 1, 0 -> z ...
    assert (q[1].item() - z) / s == 0.0  # ... and back to exactly 0


def test_zeropoint_with_min_clamped_to_0_passes():
    # PyTorch's observers widen the range to include 0 (min(x.min(), 0)); every check case has min < 0 < max.
    def observer_style(x, bits):
        lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
        s = (2**bits - 1) / (hi - lo)
        z = round(-lo * s)
        return torch.clamp(torch.round(x * s) + z, 0, 2**bits - 1).to(torch.int16), s, z

    assert check_zeropoint(observer_style) is True


def zp_with(*, top=lambda b: 2**b - 1, z=lambda lo, s: torch.round(-lo * s), clamp=True, rnd=torch.round,
            dtype=torch.uint8):
    def fn(x, bits):
        s = top(bits) / (x.max() - x.min())
        zp = z(x.min(), s)
        q = rnd(x * s) + zp
        if clamp:
            q = q.clamp(0, 2**bits - 1)
        return (q if dtype is None else q.to(dtype)), s.item(), zp.item()
    return fn


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (zp_with(z=lambda lo, s: -lo * s, rnd=lambda t: t, dtype=None), "returned zero_point .*: round it"),
        (zp_with(top=lambda b: 2**b), r"use 2\^b - 1, not 2\^b"),
        (zp_with(z=lambda lo, s: torch.round(lo * s)), "the sign is off"),
        (zp_with(z=lambda lo, s: torch.zeros(())), "so that min maps to 0"),
        (zp_with(clamp=False), r"outside \[0, 2\^b - 1 = 3\]: clamp q"),
        (zp_with(dtype=None, rnd=lambda t: t), "not rounded"),
        (zp_with(dtype=None), r"return integers \(torch.uint8 for 8 bits\)"),
        (zp_with(rnd=torch.trunc), "q = clamp"),
        (lambda x, bits: zeropoint(x, bits)[:2], "return a tuple"),
        (lambda x, bits: (zeropoint(x, bits)[0], (x.max() - x.min()).item() / (2**bits - 1), 0), "step size"),
    ],
)
def test_zeropoint_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_zeropoint(wrong)


def test_zeropoint_q_without_the_zero_point_is_named():
    def no_shift(x, bits):  # z returned but not added: every negative x clamps to 0, and 0 no longer maps to z
        q, s, z = zeropoint(x, bits)
        return torch.round(x * s).clamp(0, 2**bits - 1).to(torch.uint8), s, z

    with pytest.raises(AssertionError, match="the minimum must map to 0|0 must map to the zero point"):
        check_zeropoint(no_shift)


# --- bits per parameter -----------------------------------------------------------------------------------------------
def bits_per_param(blocksize, double_quant):
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * 256)
    return 4 + 32 / blocksize


def test_bits_reference_passes_with_the_qlora_numbers(capsys):
    assert check_bits_per_param(bits_per_param) is True
    assert "✓ bits per parameter right" in capsys.readouterr().out
    assert bits_per_param(64, False) == 4.5
    assert bits_per_param(64, True) == pytest.approx(4.127, abs=1e-3)  # QLoRA: 0.127 bits per parameter of scales


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda b, dq: 4, "also stores its absmax scale"),
        (lambda b, dq: 4 + 16 / b, r"fp32 \(32 bits\), not 16"),
        (lambda b, dq: 4 + 8 / b if dq else 4 + 32 / b, r"add 32 / \(blocksize \* 256\)"),
        (lambda b, dq: 4 + 32 / b, "double quantization stores the scales in 8 bits"),
        (lambda b, dq: bits_per_param(b, dq) if not dq else 4 + 8 / b + 32 / 256, r"blocksize \* 256 weights"),
        (lambda b, dq: bits_per_param(b, dq) if not dq else 4 + 8 / b + 16 / (b * 256), r"not 16"),
        (lambda b, dq: bits_per_param(b, dq) / 8, "in bits, not bytes"),
        (lambda b, dq: 4 + 8 / b, "without double quantization the scales stay fp32"),
        (lambda b, dq: 5.0, r"expected 4.5: 4 \+ 32 / blocksize"),
        (lambda b, dq: [4.5], "return one number"),
    ],
)
def test_bits_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_bits_per_param(wrong)


# --- block size under an error budget ---------------------------------------------------------------------------------
def errors_of(x, blocksize):
    """(max abs error, rmse), computed in another order of operations than the check's."""
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    err = blocks - torch.round(blocks / absmax * 127) * absmax / 127
    return err.abs().max().item(), err.pow(2).mean().sqrt().item()


def block_size(x, error_budget, candidates):
    fits = [b for b in candidates if errors_of(x, b)[1] <= error_budget]
    return max(fits) if fits else None


def rmse(x, b):
    return errors_of(x, b)[1]


def test_block_size_reference_passes(capsys):
    assert check_block_size(block_size) is True
    assert "✓ block size right" in capsys.readouterr().out


def test_block_size_cases_tell_the_mistakes_apart():
    # Non-vacuity: in the first case the answer and the smallest fitting size differ, the max-error answer differs
    # too (None: the max error is ~max|x|/254 for every block size), and the budget lies well away from every
    # candidate's rmse (float order of operations cannot flip a comparison).
    (_, x, budget, cands), _, (_, _, tight, _) = _block_cases()
    errors = {b: blockwise_absmax_errors(x, b) for b in cands}
    fits = [b for b in cands if errors[b][1] <= budget]
    assert max(fits) == 64 and min(fits) == 16
    assert not [b for b in cands if errors[b][0] <= budget]
    assert min(abs(e[1] - budget) for e in errors.values()) > 1e-3 * budget
    assert all(e[1] > tight for e in errors.values())
    assert rmse(x, 64) == pytest.approx(errors[64][1], rel=1e-5)
    # the max error is bounded by half a step of the block holding max|x|: max|x| / 254 (rounding error <= 1/2)
    assert all(e[0] <= x.abs().max().item() / 254 * (1 + 1e-5) for e in errors.values())


def by_max(x, error_budget, candidates):
    fits = [b for b in candidates if errors_of(x, b)[0] <= error_budget]
    return max(fits) if fits else None


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda x, e, c: min(b for b in c if rmse(x, b) <= e), "not the smallest"),
        (by_max, "not the max abs error"),
        # the first fitting size in the given order: in the sorted case that is the smallest
        (lambda x, e, c: next((b for b in c if rmse(x, b) <= e), None), "not the smallest"),
        (lambda x, e, c: 32, "a larger one, 64, meets it too"),
        # the last fitting size in the given order: right only while the candidates come sorted
        (lambda x, e, c: [b for b in c if rmse(x, b) <= e][-1], "candidates unsorted.*a larger one, 64"),
        (lambda x, e, c: block_size(x, e, c) or 0, "not one of the candidates"),
        (lambda x, e, c: block_size(x, e, c) or min(c), "expected None"),
        (lambda x, e, c: max(c), "block size 1024 has rmse"),
        (lambda x, e, c: 128, "block size 128 has rmse"),
        (lambda x, e, c: None, "returned None; expected 64"),
        (lambda x, e, c: [b for b in c if rmse(x, b) <= e], "return one block size"),
    ],
)
def test_block_size_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_block_size(wrong)


def test_checks_keep_the_global_rng():
    torch.manual_seed(0)
    want = torch.rand(1)
    torch.manual_seed(0)
    assert check_block_size(block_size) and check_zeropoint(zeropoint)
    assert torch.equal(torch.rand(1), want)
    assert not math.isnan(want.item())


# --- the checks' references agree with lab_utils.quant ----------------------------------------------------------------
def test_references_agree_with_lab_utils_quant():
    from lab_utils import quant
    from lab_utils.checks.quant import _absmax_cases, _bits, _zeropoint_cases

    for _, x in _absmax_cases():
        assert torch.equal(quant.quantize_absmax(x)[0].long(), absmax_int8(x)[0].long())
    for _, x, bits in _zeropoint_cases():
        assert torch.equal(quant.quantize_zeropoint(x, bits)[0].long(), zeropoint(x, bits)[0].long())
    (_, x, _, cands), *_ = _block_cases()
    for b in cands:
        x_hat = quant.dequantize_absmax(*quant.quantize_absmax(x, blocksize=b))
        assert quant.quantization_error(x, x_hat)["max_abs"] == pytest.approx(blockwise_absmax_errors(x, b)[0],
                                                                              rel=1e-5)
    for b, dq in ((64, False), (64, True), (32, True), (256, False)):
        assert quant.bits_per_parameter(b, double_quant=dq) == pytest.approx(_bits(b, dq), rel=1e-12)
