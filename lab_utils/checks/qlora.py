"""Exercise check for chapter "Quantization" (qlora): the memory bill of QLoRA training, in bytes.

The bill has three parts: the frozen linear weights in 4-bit NF4 with their block constants (one fp32 absmax per
block of ``blocksize`` weights, 4 + 32/64 = 4.5 bits per weight; with double quantization an 8-bit absmax per block
and one fp32 constant per ``nested_blocksize`` blocks, 4 + 8/64 + 32/(64 * 256) ~ 4.127 bits), the other frozen
weights (embeddings, norms, biases) unquantized at ``other_bytes`` each, and every trained parameter with its fp32
weight, fp32 gradient and AdamW's two fp32 moments: 4 + 4 + 8 = 16 bytes. Activations are not part of it.
"""

from __future__ import annotations

import math

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_qlora_bytes", "qlora_bytes"]

TRAINED_BYTES = 16  # fp32 weight + fp32 gradient + AdamW's two fp32 moments
_RTOL = 1e-6  # ceil(n / blocksize) vs n / blocksize, float order of operations

# (what, n_quantized, n_other, n_trained, keyword arguments; None = call with the defaults)
_CASES: list[tuple[str, int, int, int, dict | None]] = [
    # LLaMA-65B: 80 layers of 4 attention (8192 x 8192) and 3 MLP (8192 x 22016) linears quantized; the embedding
    # and output tables (2 x 32000 x 8192) and the RMSNorms in 16 bits; LoRA r = 64 on all 7 linears of every layer
    ("the paper's 65B model (LLaMA-65B, LoRA r = 64 on every linear layer)",
     80 * (4 * 8192 * 8192 + 3 * 8192 * 22016), 2 * 32000 * 8192 + 161 * 8192,
     80 * 64 * (4 * 2 * 8192 + 3 * (8192 + 22016)), None),
    # MiniLM on this page: 36 linears quantized, embeddings/norms/biases/frozen head in fp32, LoRA r = 16 + head
    ("MiniLM with NF4 + DQ (this page's model)", 10_616_832, 12_097_154, 443_522,
     {"double_quant": True, "blocksize": 64, "nested_blocksize": 256, "other_bytes": 4}),
    ("MiniLM with NF4, no double quantization", 10_616_832, 12_097_154, 443_522,
     {"double_quant": False, "blocksize": 64, "nested_blocksize": 256, "other_bytes": 4}),
    # Llama-2-7B's shapes, LoRA r = 16 on all 7 linears of its 32 layers
    ("a 7B model, blocks of 128, nested blocks of 512", 6_476_005_376, 262_410_240, 39_976_960,
     {"double_quant": True, "blocksize": 128, "nested_blocksize": 512, "other_bytes": 2}),
]


def _bits(double_quant: bool, blocksize: int, nested_blocksize: int) -> float:
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * nested_blocksize)
    return 4 + 32 / blocksize


def qlora_bytes(
    n_quantized: int,
    n_other: int,
    n_trained: int,
    *,
    double_quant: bool = True,
    blocksize: int = 64,
    nested_blocksize: int = 256,
    other_bytes: float = 2,
) -> float:
    """Reference: bytes of weights, gradients and optimizer state for QLoRA training (activations left out).

    Args:
        n_quantized: number of frozen weights stored in 4-bit NF4 (the linear layers' weight matrices).
        n_other: number of other frozen weights, stored unquantized at ``other_bytes`` each.
        n_trained: number of trained parameters (LoRA, head), each with fp32 weight, gradient and two AdamW moments.
        double_quant: whether the absmax constants are themselves quantized (8 bits, fp32 per nested block).
        blocksize: weights per absmax constant.
        nested_blocksize: absmax constants per fp32 second-level constant (double quantization only).
        other_bytes: bytes per unquantized frozen weight (2 for 16-bit, 4 for fp32).

    Returns:
        The number of bytes (a float: the block constants are fractions of a byte per weight).
    """
    frozen_4bit = n_quantized * _bits(double_quant, blocksize, nested_blocksize) / 8
    return frozen_4bit + n_other * other_bytes + n_trained * TRAINED_BYTES


def _mistakes(nq: int, no: int, nt: int, dq: bool, bs: int, nbs: int, ob: float) -> list[tuple[float, str]]:
    bits = _bits(dq, bs, nbs)
    rest = no * ob + nt * TRAINED_BYTES

    def with_bits(b: float) -> float:
        return nq * b / 8 + rest

    def with_trained(per: float) -> float:
        return nq * bits / 8 + no * ob + nt * per

    out = [(with_bits(4.0), f"each block of {bs} weights also stores its absmax constant: 4 bits per weight is "
                            "only the codes; add the constants' bits / blocksize")]
    if dq:
        out += [
            (with_bits(_bits(False, bs, nbs)), f"with double_quant=True the absmax constants are 8-bit: "
                                               f"4 + 8/{bs} + 32/({bs}*{nbs}) bits, not 4 + 32/{bs}"),
            (with_bits(4 + 8 / bs), f"the 8-bit constants need their own fp32 constant, one per {nbs} blocks: "
                                    f"add 32 / ({bs} * {nbs}) bits per weight"),
            (with_bits(4 + 8 / bs + 32 / nbs), f"one fp32 second-level constant serves {nbs} blocks, i.e. "
                                               f"{bs} * {nbs} weights: 32 / ({bs} * {nbs}), not 32 / {nbs}"),
        ]
    else:
        out.append((with_bits(_bits(True, bs, nbs)), f"with double_quant=False the absmax constants stay fp32: "
                                                     f"4 + 32/{bs} bits, no nested constants"))
    out += [
        (nq * bits + rest, "the 4-bit part is in bits: divide n_quantized * bits per weight by 8 for bytes"),
        (nq * bits + (no * ob + nt * TRAINED_BYTES) * 8, "that is the whole bill in bits: return bytes"),
        (with_trained(4), "a trained parameter costs more than its fp32 weight: add its gradient (4 bytes) and "
                          "AdamW's two moments (8 bytes), 16 bytes in all"),
        (with_trained(12), "12 bytes per trained parameter: fp32 weight (4) + fp32 gradient (4) + AdamW's two "
                           "fp32 moments (8) make 16 (is the gradient missing, or the weights in 16 bits?)"),
        (with_trained(8), "the trained parameters are not 16-bit: fp32 weight, gradient and two AdamW moments, "
                          "4 bytes each"),
        ((nq + no) * bits / 8 + nt * TRAINED_BYTES, "only the linear layers are quantized: the other frozen "
                                                    "weights stay unquantized at other_bytes each"),
        (nq * bits / 8 + nt * TRAINED_BYTES, "the other frozen weights (embeddings, norms) count too: "
                                             "n_other * other_bytes"),
        (nq * bits / 8 + no * ob, "the trained parameters count too: 16 bytes each"),
    ]
    if ob != 2:
        out.append((nq * bits / 8 + no * 2 + nt * TRAINED_BYTES, "use other_bytes for the other frozen weights, "
                                                                  "not 2"))
    return out


@exercise_check
def check_qlora_bytes(fn: StudentFunction) -> None:
    """Check ``fn(n_quantized, n_other, n_trained, *, double_quant=True, blocksize=64, nested_blocksize=256,
    other_bytes=2) -> bytes``: the memory of weights, gradients and optimizer state in QLoRA training.

    ``n_quantized * bits / 8 + n_other * other_bytes + n_trained * 16`` with ``bits = 4 + 8 / blocksize +
    32 / (blocksize * nested_blocksize)`` (double quantization) or ``4 + 32 / blocksize``. Checked on the paper's
    65B model (with the defaults), on MiniLM as this page builds it, and on other block sizes.
    """
    for what, nq, no, nt, kwargs in _CASES:
        if kwargs is None:
            call = f"{fn.name}({nq:,}, {no:,}, {nt:,})"
            got = as_number(fn(nq, no, nt), f"{fn.name} on {what}")
            dq, bs, nbs, ob = True, 64, 256, 2
        else:
            shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            call = f"{fn.name}({nq:,}, {no:,}, {nt:,}, {shown})"
            got = as_number(fn(nq, no, nt, **kwargs), f"{fn.name} on {what}")
            dq, bs, nbs, ob = kwargs["double_quant"], kwargs["blocksize"], kwargs["nested_blocksize"], \
                kwargs["other_bytes"]
        want = qlora_bytes(nq, no, nt, double_quant=dq, blocksize=bs, nested_blocksize=nbs, other_bytes=ob)
        if math.isclose(got, want, rel_tol=_RTOL):
            continue
        rule = "n_quantized * bits / 8 + n_other * other_bytes + n_trained * 16"
        hint = name_mistake(got, _mistakes(nq, no, nt, dq, bs, nbs, ob), rule, rel_tol=_RTOL)
        _fail(f"{call} ({what}) returned {got:,.0f}; expected {want:,.0f} bytes: {hint}")
    gb = qlora_bytes(*_CASES[0][1:4]) / 1e9
    _success(f"QLoRA's memory bill right: 4 + 8/64 + 32/(64*256) bits per quantized weight, other frozen weights "
             f"unquantized, 16 bytes per trained parameter (the 65B model: {gb:.1f} GB before activations)")
