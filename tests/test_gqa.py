"""Tests for lab_utils.gqa: mean-pooling a transformers Llama's KV heads (identity, equivalence with an explicit
grouped model, transformers' forward and cache after conversion) and the cache size of a config."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lab_utils.generation import generate
from lab_utils.gqa import kv_heads_attention_modules, mean_pool_kv_heads, model_kv_cache_bytes
from lab_utils.kv_cache import kv_cache_bytes


def llama(n_heads=8, n_kv_heads=4, attention_bias=False, seed=0):
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, max_position_embeddings=64,
                         attention_bias=attention_bias, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


IDS = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_pooling_to_the_current_number_of_kv_heads_is_the_identity():
    model = llama()
    before = logits(model)
    mean_pool_kv_heads(model, 4)
    assert torch.equal(logits(model), before)
    assert model.config.num_key_value_heads == 4


@pytest.mark.parametrize("attention_bias", [False, True])
@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_pooled_model_equals_a_model_built_with_fewer_kv_heads(n_kv_heads, attention_bias):
    # Reference: a fresh transformers model configured with n_kv_heads, given the group means by hand.
    model = llama(attention_bias=attention_bias)
    ref = llama(n_kv_heads=n_kv_heads, attention_bias=attention_bias, seed=1)
    state = {}
    r, hd = 4 // n_kv_heads, 8  # old heads per new head; head_dim = 64 // 8
    for name, t in model.state_dict().items():
        if ".k_proj." in name or ".v_proj." in name:
            t = t.view(n_kv_heads, r, hd, *t.shape[1:]).mean(1).reshape(n_kv_heads * hd, *t.shape[1:])
        state[name] = t
    ref.load_state_dict(state)
    mean_pool_kv_heads(model, n_kv_heads)
    torch.testing.assert_close(logits(model), logits(ref), rtol=1e-5, atol=1e-5)
    assert model.config.num_key_value_heads == n_kv_heads
    assert all(m.num_key_value_groups == 8 // n_kv_heads for m in kv_heads_attention_modules(model))
    assert not torch.allclose(logits(model), logits(llama()), atol=1e-3)  # non-vacuity: pooling changed the model


def test_pooled_model_generates_the_same_with_and_without_cache():
    model = mean_pool_kv_heads(llama(), 1)
    ids = IDS[:1, :5]
    assert torch.equal(generate(model, ids, max_new_tokens=8), generate(model, ids, max_new_tokens=8,
                                                                          use_cache=False))
    want = model.generate(ids, do_sample=False, max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(model, ids, max_new_tokens=8), want)  # transformers' own generate and cache


def test_pooling_some_layers_only():
    model, full = llama(), llama()
    mean_pool_kv_heads(model, 1, layers=[1])
    mods = kv_heads_attention_modules(model)
    assert mods[0].k_proj.out_features == 4 * 8 and mods[1].k_proj.out_features == 8
    assert model.config.num_key_value_heads == 4  # the config describes the unpooled layers
    mean_pool_kv_heads(full, 1)
    assert not torch.allclose(logits(model), logits(full), atol=1e-3)
    ids = IDS[:1, :5]
    assert torch.equal(generate(model, ids, max_new_tokens=6), generate(model, ids, max_new_tokens=6,
                                                                          use_cache=False))


def test_model_kv_cache_bytes_reads_the_config():
    model = llama()
    assert model_kv_cache_bytes(model.config, tokens=100, batch=3) == kv_cache_bytes(
        n_layers=2, n_kv_heads=4, head_dim=8, tokens=100, batch=3, bytes_per_value=2)
    mean_pool_kv_heads(model, 1)
    assert model_kv_cache_bytes(model.config, tokens=100, batch=3) * 4 == kv_cache_bytes(
        n_layers=2, n_kv_heads=4, head_dim=8, tokens=100, batch=3, bytes_per_value=2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mean_pool_kv_heads(llama(), 3), ValueError, r"must divide .* \(4\).*\[1, 2, 4\]"),
        (lambda: mean_pool_kv_heads(llama(), 8), ValueError, "must divide"),
        (lambda: mean_pool_kv_heads(llama(), 0), ValueError, "n_kv_heads must be >= 1"),
        (lambda: mean_pool_kv_heads(llama(), 2, layers=[2]), ValueError, r"layers must be indices in \[0, 2\)"),
        (lambda: mean_pool_kv_heads(torch.nn.Linear(2, 2), 1), TypeError, "transformers model with a config"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_no_attention_modules_raises():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.config = llama().config
    with pytest.raises(ValueError, match="no Llama-style attention modules"):
        mean_pool_kv_heads(model, 1)


@pytest.fixture(scope="module")
def smollm2():
    from lab_utils.assets import load_smollm2

    return load_smollm2()


def test_smollm2_pooling_3_kv_heads_to_3_is_the_identity_and_to_1_is_mqa(smollm2):
    assert (smollm2.config.num_attention_heads, smollm2.config.num_key_value_heads) == (9, 3)
    ids = torch.arange(200, 216)[None]
    before = logits(smollm2, ids)
    same = mean_pool_kv_heads(copy.deepcopy(smollm2), 3)
    assert torch.equal(logits(same, ids), before)
    mqa = mean_pool_kv_heads(copy.deepcopy(smollm2), 1)
    assert all(m.k_proj.out_features == 64 and m.num_key_value_groups == 9 for m in kv_heads_attention_modules(mqa))
    assert not torch.allclose(logits(mqa, ids), before, atol=1e-2)
