"""Exercise check for chapter "Efficient attention": the KV-cache memory of a model, from its transformers config.

Every layer keeps one key and one value vector per KV head for every cached token of every sequence:
``2 * num_hidden_layers * num_key_value_heads * head_dim * tokens * batch * bytes_per_value`` bytes. The check
runs the student's function on the configurations of SmolLM2-135M, a 7B model with multi-head, grouped-query
(8 KV heads) and multi-query attention, and a model whose ``head_dim`` is not ``hidden_size // num_attention_heads``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.kv_cache import kv_cache_bytes

__all__ = ["check_cache_bytes"]


def _config(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int) -> SimpleNamespace:
    """The fields of a transformers LlamaConfig that size the cache (what `model.config` has)."""
    return SimpleNamespace(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                           num_key_value_heads=kv_heads, head_dim=head_dim)


# (what, config, tokens, batch, bytes_per_value)
_CASES = [
    ("SmolLM2-135M (30 layers, 9 query / 3 KV heads of 64), 2,048 tokens in fp32",
     _config(30, 576, 9, 3, 64), 2048, 1, 4),
    ("a 7B model with multi-head attention (32 layers, 32 heads of 128), 32,768 tokens in bf16",
     _config(32, 4096, 32, 32, 128), 32768, 1, 2),
    ("the same 7B model with grouped-query attention, 8 KV heads", _config(32, 4096, 32, 8, 128), 32768, 1, 2),
    ("the same 7B model with multi-query attention, batch of 16 sequences of 4,096 tokens",
     _config(32, 4096, 32, 1, 128), 4096, 16, 2),
    ("a model whose head_dim (256) is not hidden_size // num_attention_heads (3072 // 16 = 192), 8 KV heads",
     _config(28, 3072, 16, 8, 256), 8192, 2, 2),
]


def _reference(c: SimpleNamespace, tokens: int, batch: int, bytes_per_value: int) -> int:
    return kv_cache_bytes(n_layers=c.num_hidden_layers, n_kv_heads=c.num_key_value_heads, head_dim=c.head_dim,
                          tokens=tokens, batch=batch, bytes_per_value=bytes_per_value)


def _mistakes(c: SimpleNamespace, tokens: int, batch: int, b: int) -> list[tuple[float, str]]:
    L, nh, nkv, hd, d = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
    want = 2 * L * nkv * hd * tokens * batch * b
    out = [
        (want / 2, "keys AND values are cached: multiply by 2"),
        (2 * L * nh * hd * tokens * batch * b, "count the KV heads (num_key_value_heads), not the query heads: in "
                                               "grouped-query attention a group of query heads shares one KV head "
                                               "(hidden_size = num_attention_heads * head_dim is the queries' width "
                                               "too)"),
        (2 * L * d * tokens * batch * b, "hidden_size is num_attention_heads * head_dim, the queries' width; the "
                                         "keys are num_key_value_heads * head_dim wide"),
        (2 * L * nkv * (d // nh) * tokens * batch * b, "read config.head_dim: it need not equal hidden_size // "
                                                       "num_attention_heads"),
        (2 * L * (nh // nkv) * hd * tokens * batch * b, "num_attention_heads // num_key_value_heads is the group size "
                                                        "(query heads per KV head), not the number of KV heads"),
        (want / b, "that is a count of values: multiply by bytes_per_value for bytes"),
        (want * 8, "that is bits: return bytes"),
        (want / L, "every layer keeps its own keys and values: multiply by num_hidden_layers"),
        (want / 1e9, "return bytes, not GB"),
        (want / 2**30, "return bytes, not GiB"),
    ]
    if batch > 1:
        out.append((want / batch, "each sequence of the batch has its own cache: multiply by batch"))
    return out


@exercise_check
def check_cache_bytes(fn: StudentFunction) -> None:
    """Check ``fn(config, *, tokens, batch=1, bytes_per_value=2) -> bytes``, the KV-cache size of a model.

    ``config`` has the fields of a transformers config (``num_hidden_layers``, ``hidden_size``,
    ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``); the answer is
    ``2 * num_hidden_layers * num_key_value_heads * head_dim * tokens * batch * bytes_per_value``.
    """
    for what, config, tokens, batch, b in _CASES:
        call = f"{fn.name}(config, tokens={tokens:,}, batch={batch}, bytes_per_value={b})"
        got = as_number(fn(config, tokens=tokens, batch=batch, bytes_per_value=b), f"{call} on {what}")
        want = _reference(config, tokens, batch, b)
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        rule = "2 * num_hidden_layers * num_key_value_heads * head_dim * tokens * batch * bytes_per_value"
        hint = name_mistake(got, _mistakes(config, tokens, batch, b), rule)
        _fail(f"{call} on {what} returned {got:,.0f}; expected {want:,} bytes: {hint}")
    mha, gqa = (_reference(c, t, bt, b) / 1e9 for _, c, t, bt, b in _CASES[1:3])
    _success(f"KV-cache sizes right for {len(_CASES)} models (the 7B model at 32k tokens: {mha:.2f} GB with "
             f"multi-head attention, {gqa:.2f} GB with 8 KV heads)")
