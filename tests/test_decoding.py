"""lab_utils.decoding: the timed bare decoding loop gives the same tokens with and without a KV cache (and the same as
lab_utils.generation and transformers' generate, dynamic or static cache), the cache holds what kv_cache_bytes says,
the roofline arithmetic and its bound, the timers, and bad inputs.

On the randomly initialised 2-layer tiny Llama of conftest.py (CPU, fp32): greedy argmax ties are unlikely but
possible in principle; the seed is fixed, so the comparisons are deterministic.
"""

import pytest
import torch

from lab_utils import generation
from lab_utils.decoding import (
    Roofline,
    StaticGreedyDecoder,
    best_time,
    cache_nbytes,
    decode_roofline,
    greedy_step_times,
    measure_bandwidth,
    measure_matmul_flops,
)
from lab_utils.kv_cache import KVCache, kv_cache_bytes

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21], [1, 7, 11, 3, 30, 40]])


def test_cached_and_uncached_loops_give_the_same_tokens(tiny_llama):
    cached, seconds, cache = greedy_step_times(tiny_llama, PROMPT, max_new_tokens=12, use_cache=True)
    uncached, seconds_nc, none = greedy_step_times(tiny_llama, PROMPT, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 6 + 12) and torch.equal(cached[:, :6], PROMPT)
    assert len(seconds) == len(seconds_nc) == 12 and all(s > 0 for s in seconds + seconds_nc)
    assert none is None
    assert cache.get_seq_length() == 6 + 11  # the last token is generated, not yet fed


def test_the_loop_agrees_with_generation_and_transformers_generate(tiny_llama):
    ids, _, _ = greedy_step_times(tiny_llama, PROMPT[:1], max_new_tokens=10)
    ours = generation.generate(tiny_llama, PROMPT[:1], max_new_tokens=10)
    assert torch.equal(ids, ours)
    settings = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(ids, tiny_llama.generate(PROMPT[:1], **settings))
    static = tiny_llama.generate(PROMPT[:1], cache_implementation="static", **settings)  # the page's fast path
    assert torch.equal(ids, static)


def test_cache_bytes_follow_the_formula(tiny_llama):
    _, _, cache = greedy_step_times(tiny_llama, PROMPT, max_new_tokens=5)
    cfg = tiny_llama.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert cache_nbytes(cache) == kv_cache_bytes(n_layers=cfg.num_hidden_layers, n_kv_heads=cfg.num_key_value_heads,
                                                 head_dim=head_dim, tokens=6 + 4, batch=2, bytes_per_value=4)
    ours = KVCache(n_layers=1)
    ours.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    assert cache_nbytes(ours) == ours.nbytes() == 2 * 2 * 3 * 4 * 4
    with pytest.raises(TypeError, match="Cache"):
        cache_nbytes(object())


def test_roofline_is_the_slower_of_memory_and_compute():
    memory = decode_roofline(weight_bytes=1e9, cache_bytes_per_token=1e3, context=1000, batch=1,
                             flops_per_token=1e9, bandwidth=1e12, peak_flops=1e15)
    assert isinstance(memory, Roofline) and memory.bound == "memory"
    assert memory.memory_s == pytest.approx((1e9 + 1e6) / 1e12)
    assert memory.tokens_per_s == pytest.approx(1 / memory.memory_s)
    # a large batch shares the weights: the step's bytes grow only by the caches, its arithmetic by the batch
    compute = decode_roofline(weight_bytes=1e9, cache_bytes_per_token=0, context=0, batch=4096,
                              flops_per_token=1e9, bandwidth=1e12, peak_flops=1e15)
    assert compute.bound == "compute"
    assert compute.tokens_per_s == pytest.approx(1e15 / 1e9)  # peak / flops per token, whatever the batch
    more = decode_roofline(weight_bytes=1e9, cache_bytes_per_token=0, context=0, batch=8,
                           flops_per_token=1e9, bandwidth=1e12, peak_flops=1e15)
    assert more.tokens_per_s == pytest.approx(8 * memory.tokens_per_s * (1e9 + 1e6) / 1e9)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"batch": 0}, ValueError, "batch must be >= 1"),
    ({"context": -1}, ValueError, "context must be >= 0"),
    ({"bandwidth": 0.0}, ValueError, "bandwidth must be > 0"),
    ({"weight_bytes": -1.0}, ValueError, "weight_bytes must be >= 0"),
    ({"batch": 2.5}, TypeError, "batch must be an int"),
])
def test_roofline_refuses_bad_inputs(kwargs, error, match):
    args = {"weight_bytes": 1.0, "cache_bytes_per_token": 1.0, "context": 1, "batch": 1, "flops_per_token": 1.0,
            "bandwidth": 1.0, "peak_flops": 1.0} | kwargs
    with pytest.raises(error, match=match):
        decode_roofline(**args)


def test_best_time_takes_the_fastest_run_and_returns_the_result():
    calls = []
    seconds, result = best_time(lambda: calls.append(1) or len(calls), device="cpu", repeats=3, warmup=2)
    assert len(calls) == 5 and result == 5 and 0 <= seconds < 1


def test_measurements_are_positive_and_plausible():
    assert 1e8 < measure_bandwidth("cpu", nbytes=2**22, repeats=2) < 1e13  # 0.1 GB/s .. 10 TB/s
    assert 1e7 < measure_matmul_flops("cpu", torch.float32, n=128, repeats=2) < 1e15


def test_bad_loop_inputs(tiny_llama):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        greedy_step_times(tiny_llama, PROMPT, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"\(B, T\) tensor"):
        greedy_step_times(tiny_llama, PROMPT[0], max_new_tokens=1)
    with pytest.raises(ValueError, match="takes no KV cache"):
        greedy_step_times(torch.nn.Linear(2, 2), PROMPT, max_new_tokens=1)


def test_static_decoder_gives_the_dynamic_loops_tokens_and_can_be_reused(tiny_llama):
    reference, _, _ = greedy_step_times(tiny_llama, PROMPT, max_new_tokens=12)
    decode = StaticGreedyDecoder(tiny_llama, max_len=6 + 12)
    assert not decode.compiled  # CUDA graphs need a GPU: the same step runs eagerly on the CPU
    assert torch.equal(decode(PROMPT, max_new_tokens=12), reference)
    assert torch.equal(decode(PROMPT, max_new_tokens=5), reference[:, :6 + 5])  # the cache is reset per call
    assert torch.equal(decode(PROMPT, max_new_tokens=12), reference)
    single = StaticGreedyDecoder(tiny_llama, max_len=6 + 12)
    assert torch.equal(single(PROMPT[1:], max_new_tokens=12), reference[1:])


def test_static_decoder_is_not_vacuous(tiny_llama):
    decode = StaticGreedyDecoder(tiny_llama, max_len=20)
    out = decode(PROMPT, max_new_tokens=8)
    other = decode(torch.tensor([[1, 60, 61, 62, 63, 59], [1, 2, 3, 4, 5, 6]]), max_new_tokens=8)
    assert not torch.equal(out[:, 6:], other[:, 6:])  # the new tokens depend on the prompt
    assert decode.cache.get_seq_length() > 0  # the static cache is what the steps read


def test_static_decoder_refuses_bad_inputs(tiny_llama):
    decode = StaticGreedyDecoder(tiny_llama, max_len=10)
    with pytest.raises(ValueError, match="exceed max_len=10"):
        decode(PROMPT, max_new_tokens=5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        decode(PROMPT, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"\(B, T\) tensor"):
        decode(PROMPT[0], max_new_tokens=1)
    decode(PROMPT, max_new_tokens=1)
    with pytest.raises(ValueError, match="holds 2 sequences, got 1"):
        decode(PROMPT[:1], max_new_tokens=1)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        StaticGreedyDecoder(tiny_llama, max_len=0)
    with pytest.raises(ValueError, match="takes no KV cache"):
        StaticGreedyDecoder(torch.nn.Linear(2, 2), max_len=4)
