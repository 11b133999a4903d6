"""Tests for lab_utils.kv_cache: the cache's bookkeeping, its size formula against published numbers and measured
bytes, and cached generation == uncached on SmolLM2 (the tiny model's are in test_models and test_generation)."""

import inspect

import pytest
import torch

from lab_utils.generation import generate
from lab_utils.kv_cache import KVCache, kv_cache_bytes
from lab_utils.models import TinyTransformer, TransformerConfig


def kv(B=2, n_kv=3, T=4, hs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n_kv, T, hs, generator=g), torch.randn(B, n_kv, T, hs, generator=g)


def test_update_appends_along_the_token_dim_and_returns_everything():
    cache = KVCache(n_layers=2)
    assert cache.length == 0 and cache.nbytes() == 0
    k1, v1 = kv(T=4, seed=1)
    k2, v2 = kv(T=1, seed=2)
    cache.update(0, k1, v1)
    assert cache.length == 4
    k_all, v_all = cache.update(0, k2, v2)
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2)) and torch.equal(v_all, torch.cat([v1, v2], dim=2))
    assert cache.length == 5 and cache.keys[1] is None  # layers are separate
    cache.reset()
    assert cache.length == 0 and cache.nbytes() == 0


def test_nbytes_counts_keys_and_values_of_every_layer():
    cache = KVCache(n_layers=3)
    for layer in range(3):
        cache.update(layer, *kv(T=5))
    assert cache.nbytes() == kv_cache_bytes(n_layers=3, n_kv_heads=3, head_dim=8, tokens=5, batch=2,
                                            bytes_per_value=4)  # float32
    cache.reset()
    for layer in range(3):
        cache.update(layer, *(t.bfloat16() for t in kv(T=5)))
    assert cache.nbytes() == kv_cache_bytes(n_layers=3, n_kv_heads=3, head_dim=8, tokens=5, batch=2)  # bf16


def test_kv_cache_bytes_matches_the_published_numbers():
    # 32 layers, d_model 4096 = 32 heads of 128 (Llama 2 7B; Mistral 7B has 8 KV heads), 32k context, bf16:
    # 2 * 32 * 32 * 128 * 32768 * 2 = 17,179,869,184 bytes = 17.18 GB (1e9); 8 KV heads: a quarter, 4.29 GB.
    mha = kv_cache_bytes(n_layers=32, n_kv_heads=32, head_dim=128, tokens=32768, bytes_per_value=2)
    gqa = kv_cache_bytes(n_layers=32, n_kv_heads=8, head_dim=128, tokens=32768, bytes_per_value=2)
    assert mha == 17_179_869_184 and round(mha / 1e9, 2) == 17.18
    assert round(gqa / 1e9, 2) == 4.29 and mha == 4 * gqa
    assert kv_cache_bytes(n_layers=32, n_kv_heads=1, head_dim=128, tokens=32768) * 32 == mha  # MQA
    assert kv_cache_bytes(n_layers=1, n_kv_heads=1, head_dim=1, tokens=3, batch=5, bytes_per_value=4) == 2 * 3 * 5 * 4


def test_cache_nbytes_equals_kv_cache_bytes_for_the_tiny_model():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=50, max_len=32, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2)
    model = TinyTransformer(config).eval()
    cache = KVCache(config.n_layers)
    with torch.no_grad():
        model(torch.randint(0, 50, (3, 7)), causal=True, cache=cache)
        model(torch.randint(0, 50, (3, 1)), causal=True, cache=cache)
    assert cache.length == 8
    assert cache.nbytes() == kv_cache_bytes(n_layers=3, n_kv_heads=2, head_dim=8, tokens=8, batch=3,
                                            bytes_per_value=4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: KVCache(0), ValueError, "n_layers must be >= 1"),
        (lambda: KVCache(2).update(2, *kv()), ValueError, r"layer_idx must be an int in \[0, n_layers=2\)"),
        (lambda: KVCache(2).update(0, torch.randn(2, 3, 8), torch.randn(2, 3, 8)), ValueError, "n_kv_heads"),
        (lambda: (c := KVCache(1)).update(0, *kv(n_kv=3)) and c.update(0, *kv(n_kv=2)), ValueError,
         "same batch, heads and head size"),
        (lambda: kv_cache_bytes(n_layers=32, n_kv_heads=0, head_dim=128, tokens=8), ValueError, "n_kv_heads"),
        (lambda: kv_cache_bytes(n_layers=32, n_kv_heads=8, head_dim=128, tokens=-1), ValueError, "tokens"),
        (lambda: kv_cache_bytes(n_layers=32, n_kv_heads=8, head_dim=128, tokens=8, bytes_per_value=0.5), TypeError,
         "bytes_per_value must be an int"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.fixture(scope="module")
def smollm2():
    from lab_utils.assets import load_smollm2

    return load_smollm2()  # float32 on the CPU; ~5 s to load


def test_smollm2_cached_generation_equals_uncached(smollm2):
    from lab_utils.assets import load_smollm2_tokenizer

    ids = load_smollm2_tokenizer()("The capital of France is Paris. The capital of", return_tensors="pt").input_ids
    cached = generate(smollm2, ids, max_new_tokens=8, use_cache=True)
    uncached = generate(smollm2, ids, max_new_tokens=8, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (1, ids.shape[1] + 8)


def test_smollm2_dynamic_cache_holds_kv_cache_bytes(smollm2):
    from transformers import DynamicCache

    cache = DynamicCache(config=smollm2.config)
    key = "cache" if "cache" in inspect.signature(smollm2.forward).parameters else "past_key_values"  # < 5.24
    with torch.no_grad():
        smollm2(input_ids=torch.arange(100, 113)[None], use_cache=True, **{key: cache})
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    c = smollm2.config
    assert held == kv_cache_bytes(n_layers=c.num_hidden_layers, n_kv_heads=c.num_key_value_heads,
                                  head_dim=c.head_dim, tokens=13, bytes_per_value=4)  # 3 KV heads of 64, not 9
