"""Exercise checks for chapter "Quantization" (quant): int8 absmax, asymmetric (zero-point) quantization, the bits a
4-bit weight really costs, and choosing a block size under an error budget.

Conventions as ``lab_utils.quant`` (bitsandbytes-style) and the lecture: absmax ``s = (2^(b-1) - 1) / max|x|``,
``q = round(x * s)`` (the lecture's example: max|x| = 7.8 -> s = 127 / 7.8, 7.8 -> 127, -5.4 -> -88); zero-point
``s = (2^b - 1) / (max - min)``, ``z = round(-min * s)``, ``q = clamp(round(x * s) + z, 0, 2^b - 1)``. The references
are a few lines of torch here, so that a check depends on nothing but these formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_absmax_int8", "check_bits_per_param", "check_block_size", "check_zeropoint"]

LECTURE_X = (-5.4, -3.8, -1.2, 0.3, 6.4, 7.8)  # the lecture's worked example, max|x| = 7.8
LECTURE_Q = (-88, -62, -20, 5, 104, 127)
_RTOL = 1e-5  # float32 scales computed as 127 / m or 1 / (m / 127) agree to a few ulps
_TIE = 1e-4  # x * s this close to a .5 may round either way (float32 order of operations, half-even vs half-up)


def _rounds_to(q: Tensor, exact: Tensor) -> Tensor:
    """Where integer ``q`` rounds float ``exact`` correctly (either neighbour at a near-tie); bool, q's shape."""
    ref = torch.round(exact)
    near_tie = ((exact - exact.floor()) - 0.5).abs() < _TIE
    return (q == ref) | (near_tie & ((q - exact).abs() <= 0.5 + _TIE))


def _first_wrong(q: Tensor, ok: Tensor, x: Tensor, want: Tensor) -> str:
    i = int((~ok).flatten().nonzero()[0])
    return f"x = {x.flatten()[i].item():.4g} -> {int(q.flatten()[i])}, expected {int(want.flatten()[i])}"


def _unpack(got: object, call: str, n: int, names: str) -> tuple:
    if not isinstance(got, (tuple, list)) or len(got) != n:
        _fail(f"{call} returned a {type(got).__name__}; return a tuple ({names})")
    return tuple(got)


def _int_tensor(q: object, call: str, x: Tensor) -> Tensor:
    if not isinstance(q, Tensor):
        _fail(f"{call} returned q as a {type(q).__name__}; return q as a tensor of x's shape {tuple(x.shape)}")
    if q.shape != x.shape:
        _fail(f"{call} returned q of shape {tuple(q.shape)}; expected x's shape {tuple(x.shape)}")
    return q


# --- absmax int8 ------------------------------------------------------------------------------------------------------
def _absmax_cases() -> list[tuple[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 8, generator=g)
    w[2, 5] = -3.0 * w.abs().max()  # the largest magnitude is negative: x.max() is not max|x|
    return [("the lecture's example", torch.tensor(LECTURE_X)), ("a 4 x 8 weight with a large negative entry", w)]


@exercise_check
def check_absmax_int8(fn: StudentFunction) -> None:
    """Check ``fn(x) -> (q, scale)``: symmetric int8 absmax quantization of a whole tensor.

    ``scale = 127 / max|x|`` (a float), ``q = round(x * scale)`` as ``torch.int8`` of x's shape. Checked on the
    lecture's example (-> [-88, -62, -20, 5, 104, 127]) and on a weight whose largest magnitude is negative.
    """
    for what, x in _absmax_cases():
        call = f"{fn.name}(x) on {what}"
        q, scale = _unpack(fn(x.clone()), call, 2, "q, scale")
        q = _int_tensor(q, call, x)
        absmax = x.abs().max().item()
        want_s = 127 / absmax
        if q.is_floating_point():
            if torch.allclose(q.detach(), x * want_s, rtol=_RTOL):
                _fail(f"{call}: q is x * scale, not rounded: q = torch.round(x * scale).to(torch.int8)")
            _fail(f"{call} returned q as {q.dtype}; cast the rounded values to torch.int8 (1 byte each)")
        if q.dtype != torch.int8:
            _fail(f"{call} returned q as {q.dtype}; return torch.int8 (1 byte per value, the point of int8)")
        s = as_number(scale, call + "'s scale")
        if not math.isclose(s, want_s, rel_tol=_RTOL):
            hint = name_mistake(s, [
                (128 / absmax, "128 / max|x| puts max|x| at 128, outside int8's [-127, 127]: use 127 / max|x|"),
                (255 / absmax, "255 = 2^8 - 1 is the unsigned range; symmetric int8 uses 2^(8-1) - 1 = 127"),
                (absmax / 127, "that is the step size max|x| / 127; return the factor that multiplies x, "
                               "127 / max|x|"),
                (127 / x.max().item(), "absmax is max|x|: take x.abs().max(); x.max() misses a larger negative "
                                       "value"),
                (127 / x.abs().mean().item(), "absmax is the largest |x|, not the mean"),
            ], "absmax scaling is 127 / x.abs().max()", rel_tol=_RTOL)
            _fail(f"{call} returned scale {s:.6g}; expected {want_s:.6g}: {hint}")
        exact = x * want_s
        qi = q.to(torch.int64)
        ok = _rounds_to(qi, exact)
        if not ok.all():
            if torch.equal(qi, exact.trunc().long()):
                hint = "round to the nearest integer (torch.round), do not truncate (.to(torch.int8) cuts toward 0)"
            elif torch.equal(qi, exact.floor().long()):
                hint = "round to the nearest integer (torch.round), not down (floor)"
            elif (qi.abs() > 127).any() or (exact.abs() > 127.5).any():
                hint = "every |q| must be <= 127"
            else:
                hint = "q = round(x * scale)"
            _fail(f"{call}: {_first_wrong(qi, ok, x, torch.round(exact))}: {hint}")
    _success("absmax int8 right: scale = 127 / max|x|, q = round(x * scale), the lecture's 7.8 -> 127, -5.4 -> -88")


# --- zero-point (asymmetric) ------------------------------------------------------------------------------------------
def _zeropoint_cases() -> list[tuple[str, Tensor, int]]:
    g = torch.Generator().manual_seed(1)
    act = torch.randn(3, 7, generator=g).abs() * 2 - 0.4  # skewed like post-GELU activations: min ~-0.4, max ~5
    act[1, 3] = 0.0  # an exact 0 must come back as exactly 0
    return [
        ("8-bit activations with a 0", act, 8),
        ("x = [-1.2, 0.0, 0.5, 3.1, 6.4] in 4 bits", torch.tensor([-1.2, 0.0, 0.5, 3.1, 6.4]), 4),
        # s = 3 / 3 = 1, z = round(1.5) = 2, round(1.5) + 2 = 4 > 3: rounding x * s and z separately overshoots
        ("x = [-1.5, 0.0, 1.5] in 2 bits", torch.tensor([-1.5, 0.0, 1.5]), 2),
    ]


@exercise_check
def check_zeropoint(fn: StudentFunction) -> None:
    """Check ``fn(x, bits) -> (q, scale, zero_point)``: asymmetric quantization of a whole tensor.

    ``scale = (2^b - 1) / (max - min)``, ``zero_point = round(-min * scale)`` (an integer, so that 0 maps to it and
    back to exactly 0), ``q = clamp(round(x * scale) + zero_point, 0, 2^b - 1)`` as an integer tensor of x's shape.
    """
    for what, x, bits in _zeropoint_cases():
        call = f"{fn.name}(x, bits={bits}) on {what}"
        q, scale, zero_point = _unpack(fn(x.clone(), bits), call, 3, "q, scale, zero_point")
        q = _int_tensor(q, call, x)
        lo, hi, top = x.min().item(), x.max().item(), 2**bits - 1
        want_s = top / (hi - lo)
        s = as_number(scale, call + "'s scale")
        if not math.isclose(s, want_s, rel_tol=_RTOL):
            hint = name_mistake(s, [
                ((top + 1) / (hi - lo), f"{bits} bits give levels 0..2^b - 1 = {top}, i.e. 2^b - 1 steps from min "
                                        "to max: use 2^b - 1, not 2^b"),
                ((hi - lo) / top, "that is the step size (max - min) / (2^b - 1); return the factor that "
                                  "multiplies x"),
                ((2 ** (bits - 1) - 1) / max(abs(lo), abs(hi)), "that is the symmetric absmax scale; the "
                                                                "asymmetric one spans max - min"),
                (top / hi, "the range is max - min, not max alone"),
            ], "scale = (2^b - 1) / (max - min)", rel_tol=_RTOL)
            _fail(f"{call} returned scale {s:.6g}; expected {want_s:.6g}: {hint}")
        z = as_number(zero_point, call + "'s zero_point")
        exact_z = -lo * want_s
        if abs(z - round(z)) > 1e-6:
            _fail(f"{call} returned zero_point {z:.6g}: round it (z = round(-min * scale)); an integer zero point "
                  "is what makes 0 map back to exactly 0")
        if not _rounds_to(torch.tensor(z), torch.tensor(exact_z)):
            if _rounds_to(torch.tensor(z), torch.tensor(-exact_z)):
                hint = "the sign is off: z = round(-min * scale), positive when min < 0"
            else:
                hint = "z = round(-min * scale), so that min maps to 0"
            _fail(f"{call} returned zero_point {z:g}; expected {round(exact_z)}: {hint}")
        if q.is_floating_point():
            if torch.allclose(q.detach(), (x * want_s + z).clamp(0, top), rtol=_RTOL, atol=_TIE):
                _fail(f"{call}: q is x * scale + zero_point, not rounded: round it and cast to an integer dtype")
            _fail(f"{call} returned q as {q.dtype}; return integers (torch.uint8 for 8 bits)")
        qi = q.to(torch.int64)
        if qi.min() < 0 or qi.max() > top:
            _fail(f"{call}: q holds {int(qi.min())}..{int(qi.max())}, outside [0, 2^b - 1 = {top}]: clamp q "
                  "(rounding x * scale and z separately can overshoot by one)")
        exact = x * want_s
        ok = _rounds_to(qi - int(round(z)), exact) | (qi == top) & (exact + z > top - 0.5 - _TIE) | (qi == 0) & (
            exact + z < 0.5 + _TIE)  # the clamped ends
        if not ok.all():
            if int(qi.flatten()[x.argmin()]) != 0:
                hint = "the minimum must map to 0"
            elif (x == 0).any() and int(qi[x == 0][0]) != z:
                hint = f"0 must map to the zero point {z:g}, so that it comes back as exactly 0"
            else:
                hint = "q = clamp(round(x * scale) + zero_point, 0, 2^b - 1)"
            want = (torch.round(exact) + z).clamp(0, top)
            _fail(f"{call}: {_first_wrong(qi, ok, x, want)}: {hint}")
    _success("zero-point quantization right: min -> 0, max -> 2^b - 1, 0 -> the integer zero point and back to 0")


# --- bits per parameter -----------------------------------------------------------------------------------------------
def _bits(blocksize: int, double_quant: bool, scale_bits: int = 32, nested_bits: int = 8, nested: int = 256) -> float:
    """4-bit codes + one scale per block; with double quantization 8-bit scales + one fp32 scale per 256 of them."""
    if not double_quant:
        return 4 + scale_bits / blocksize
    return 4 + nested_bits / blocksize + scale_bits / (blocksize * nested)


@exercise_check
def check_bits_per_param(fn: StudentFunction) -> None:
    """Check ``fn(blocksize, double_quant) -> float``: storage bits per weight of block-wise 4-bit (NF4) quantization.

    Without double quantization: ``4 + 32 / blocksize`` (one fp32 absmax per block; 4.5 for 64). With it (QLoRA):
    ``4 + 8 / blocksize + 32 / (blocksize * 256)`` (8-bit scales, one fp32 scale per 256 of them; ~4.127 for 64).
    """
    for blocksize, dq in ((64, False), (64, True), (128, False), (32, True), (256, True)):
        call = f"{fn.name}(blocksize={blocksize}, double_quant={dq})"
        got = as_number(fn(blocksize, dq), call)
        want = _bits(blocksize, dq)
        if math.isclose(got, want, rel_tol=1e-6):
            continue
        mistakes = [(4.0, f"each block of {blocksize} weights also stores its absmax scale: add its bits / "
                          "blocksize")]
        if dq:
            mistakes += [
                (4 + 8 / blocksize, "the 8-bit scales are themselves quantized in blocks of 256, each with an fp32 "
                                    "scale: add 32 / (blocksize * 256)"),
                (_bits(blocksize, False), "double quantization stores the scales in 8 bits: 8 / blocksize, not "
                                          "32 / blocksize"),
                (4 + 8 / blocksize + 32 / 256, "one fp32 second-level scale serves 256 scales, i.e. blocksize * 256 "
                                               "weights: 32 / (blocksize * 256)"),
                (_bits(blocksize, True, scale_bits=16), "the second-level scales are fp32 (32 bits), not 16"),
            ]
        else:
            mistakes += [(_bits(blocksize, False, scale_bits=16), "the absmax scales are fp32 (32 bits), not 16"),
                         (4 + 8 / blocksize, "without double quantization the scales stay fp32: 32 / blocksize")]
        mistakes.append((want / 8, "the answer is in bits, not bytes"))
        rule = "4 + 8 / blocksize + 32 / (blocksize * 256)" if dq else "4 + 32 / blocksize"
        _fail(f"{call} returned {got:.6g}; expected {want:.6g}: {name_mistake(got, mistakes, rule, rel_tol=1e-6)}")
    _success("bits per parameter right: 4 + 32/64 = 4.5, with double quantization 4 + 8/64 + 32/(64*256) ≈ 4.127")


# --- block size under an error budget ---------------------------------------------------------------------------------
def blockwise_absmax_errors(x: Tensor, blocksize: int) -> tuple[float, float]:
    """(max abs error, rmse) of int8 absmax quantization of ``x`` flattened into blocks of ``blocksize`` values.

    ``x.numel()`` must be a multiple of ``blocksize``.
    """
    blocks = x.detach().float().reshape(-1, blocksize)  # (n_blocks, blocksize)
    s = 127 / blocks.abs().amax(dim=1, keepdim=True)  # (n_blocks, 1)
    err = blocks - torch.round(blocks * s) / s
    return err.abs().max().item(), err.pow(2).mean().sqrt().item()


def _largest(candidates: Sequence[int], errors: dict[int, float], budget: float) -> int | None:
    ok = [b for b in candidates if errors[b] <= budget]
    return max(ok) if ok else None


def _block_cases() -> list[tuple[str, Tensor, float, list[int]]]:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4096, generator=g)
    w[torch.randperm(4096, generator=g)[:6]] *= 12  # a few outliers: a block holding one has a coarse grid
    cands = [16, 32, 64, 128, 256, 1024]
    rmse = {b: blockwise_absmax_errors(w, b)[1] for b in cands}
    mid = math.sqrt(rmse[64] * rmse[128])  # between two candidates' errors: robust to float rounding
    return [
        ("4096 weights with outliers", w, mid, cands),
        ("the same, candidates unsorted", w, mid, [256, 64, 1024, 16, 128, 32]),
        ("the same, a budget no candidate meets", w, 0.5 * rmse[16], cands),
    ]


@exercise_check
def check_block_size(fn: StudentFunction) -> None:
    """Check ``fn(x, error_budget, candidates) -> int | None``: the largest block size in ``candidates`` whose
    block-wise int8 absmax quantization keeps the rmse ``sqrt(mean((x - dequantize(quantize(x)))**2)) <=
    error_budget`` (fewer blocks, fewer scales to store); None if no candidate does. ``x.numel()`` is a multiple of
    every candidate.

    The budget is on the rmse, not the max abs error, on purpose: the max error is half a step of the block that holds
    max|x|, about max|x| / 254 whatever the block size, so it cannot tell block sizes apart; the rmse shows how
    smaller blocks give most weights a finer grid.
    """
    for what, x, budget, cands in _block_cases():
        call = f"{fn.name}(x, error_budget={budget:.4g}, candidates={cands}) on {what}"
        got = fn(x.clone(), budget, list(cands))
        errors = {b: blockwise_absmax_errors(x, b) for b in cands}  # b -> (max abs error, rmse)
        rmse = {b: e[1] for b, e in errors.items()}
        want = _largest(cands, rmse, budget)
        by_max = _largest(cands, {b: e[0] for b, e in errors.items()}, budget)
        if got is None or want is None:
            if got is want:
                continue
            if got is None:
                hint = (" (the budget bounds the rmse, not the max abs error: the max error is about max|x| / 254 "
                        f"for every block size, {errors[want][0]:.3g} here)" if by_max is None else "")
                _fail(f"{call} returned None; expected {want}: block size {want} keeps the rmse at "
                      f"{rmse[want]:.4g} <= {budget:.4g}{hint}")
        if isinstance(got, bool) or isinstance(got, Tensor) and got.numel() != 1:
            _fail(f"{call} returned {got!r}; return one block size from candidates, or None")
        if isinstance(got, (list, tuple)):
            _fail(f"{call} returned a {type(got).__name__}; return one block size from candidates, or None")
        g = as_number(got, call)
        if g not in cands:
            _fail(f"{call} returned {g:g}, which is not one of the candidates {cands}; return a candidate or None")
        g = int(g)
        if want is None:
            _fail(f"{call} returned {g}; expected None: even block size {min(cands)} has rmse "
                  f"{rmse[min(cands)]:.4g} > {budget:.4g}")
        if g == want:
            continue
        passing = [b for b in cands if rmse[b] <= budget]
        if g == min(passing):
            hint = "return the largest block size that meets the budget (fewer scales to store), not the smallest"
        elif g == by_max:
            hint = f"the budget bounds the rmse, not the max abs error (block size {g}: rmse {rmse[g]:.3g})"
        elif rmse[g] > budget:
            hint = f"block size {g} has rmse {rmse[g]:.4g} > {budget:.4g}"
        else:
            hint = f"a larger one, {want}, meets it too (rmse {rmse[want]:.4g})"
        _fail(f"{call} returned {g}; expected {want}: {hint}")
    _success("block size right: the largest block whose int8 absmax rmse fits the budget, None if none does")
