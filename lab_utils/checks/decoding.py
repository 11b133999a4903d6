"""Exercise check for chapter "Efficient attention" (kv_cache): the memory roofline of a decode step, in tokens/s.

One decode step of ``batch`` sequences reads every weight once (the batch shares them) and each sequence's own KV
cache of ``context`` tokens. If reading memory were all it cost, a step would take ``(weight_bytes + batch * context
* cache_bytes_per_token) / bandwidth`` seconds and make ``batch`` tokens.
"""

from __future__ import annotations

import math

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_memory_roofline", "memory_roofline_tokens_per_s"]

_RTOL = 1e-6
# (what, keyword arguments): SmolLM2 in bf16 (134,515,008 weights; 3 KV heads of 64 in 30 layers) and Mistral 7B's
# shapes (7,241,732,096 weights; 8 KV heads of 128 in 32 layers)
_CASES: list[tuple[str, dict]] = [
    ("SmolLM2-135M in bf16, one sequence, 1,000 tokens of context, 4.8 TB/s",
     {"weight_bytes": 269_030_016, "cache_bytes_per_token": 23_040, "context": 1000, "batch": 1,
      "bandwidth": 4.8e12}),
    ("SmolLM2-135M in bf16, 64 sequences of 2,048 tokens, 4.8 TB/s",
     {"weight_bytes": 269_030_016, "cache_bytes_per_token": 23_040, "context": 2048, "batch": 64,
      "bandwidth": 4.8e12}),
    ("a 7B model in bf16 with 8 KV heads of 128 in 32 layers, 16 sequences of 4,096 tokens, 3.35 TB/s",
     {"weight_bytes": 14_483_464_192, "cache_bytes_per_token": 131_072, "context": 4096, "batch": 16,
      "bandwidth": 3.35e12}),
]


def memory_roofline_tokens_per_s(*, weight_bytes: float, cache_bytes_per_token: float, context: int, batch: int,
                                 bandwidth: float) -> float:
    """Reference: ``batch * bandwidth / (weight_bytes + batch * context * cache_bytes_per_token)`` tokens/s."""
    return batch * bandwidth / (weight_bytes + batch * context * cache_bytes_per_token)


def _mistakes(w: float, c: float, t: int, b: int, bw: float) -> list[tuple[float, str]]:
    step = w + b * t * c
    return [
        (bw / step, "that is steps per second: each step makes one token for each of the batch's sequences, "
                    "multiply by batch"),
        (step / (b * bw), "that is seconds per token: invert it"),
        (b * bw / w, "the KV cache is read too: each sequence's cache of context * cache_bytes_per_token bytes"),
        (b * bw / (w + t * c), "every sequence has its own cache: batch * context * cache_bytes_per_token bytes"),
        (b * bw / (b * w + b * t * c), "the weights are read once per step and shared by the whole batch: "
                                       "weight_bytes, not batch * weight_bytes"),
        (b * bw / (8 * step), "bandwidth and sizes are both in bytes: no factor 8"),
        (b * bw / (w + b * t * c / 2), "cache_bytes_per_token already counts keys and values: do not halve it"),
        (b * bw / (w + 2 * b * t * c), "cache_bytes_per_token already counts keys and values: do not double it"),
    ]


@exercise_check
def check_memory_roofline(fn: StudentFunction) -> None:
    """Check ``fn(*, weight_bytes, cache_bytes_per_token, context, batch, bandwidth) -> tokens/s``: the most tokens
    per second that decoding could reach if reading memory were its only cost."""
    for what, kwargs in _CASES:
        got = as_number(fn(**kwargs), f"{fn.name} on {what}")
        want = memory_roofline_tokens_per_s(**kwargs)
        if math.isclose(got, want, rel_tol=_RTOL):
            continue
        shown = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:g}" for k, v in kwargs.items())
        rule = "batch * bandwidth / (weight_bytes + batch * context * cache_bytes_per_token)"
        hint = name_mistake(got, _mistakes(*kwargs.values()), rule, rel_tol=_RTOL)
        _fail(f"{fn.name}({shown}) ({what}) returned {got:,.1f}; expected {want:,.1f} tokens/s: {hint}")
    one = memory_roofline_tokens_per_s(**_CASES[0][1])
    _success(f"memory roofline right: the batch shares one read of the weights, each sequence reads its own cache "
             f"(SmolLM2 at batch 1: at most {one:,.0f} tokens/s at 4.8 TB/s)")
