"""Tests for lab_utils.sparse_attention: banded == dense masked attention, window masks, windowed LM loss."""

import pytest
import torch
import torch.nn.functional as F

from lab_utils.masks import causal_mask, sliding_window_mask
from lab_utils.sparse_attention import banded_attention, dense_window_attention, window_mask, windowed_nll


@pytest.mark.parametrize(
    ("T", "window"),
    [(12, 4), (13, 4), (10, 3), (7, 1), (5, 8), (6, 6), (1, 1), (1, 3), (33, 5), (64, 16)],
)
def test_banded_equals_dense_masked_attention(T, window):
    g = torch.Generator().manual_seed(T * 100 + window)
    q, k = torch.randn(2, 2, 3, T, 8, generator=g, dtype=torch.float64).unbind(0)
    v = torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64)  # d_v != d
    out = banded_attention(q, k, v, window=window)
    assert out.shape == (2, 3, T, 5)
    torch.testing.assert_close(out, dense_window_attention(q, k, v, window=window))
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(T, window=window))
    torch.testing.assert_close(out, sdpa)


def test_banded_with_window_at_least_t_is_causal_attention():
    q, k, v = torch.randn(3, 1, 10, 4, generator=torch.Generator().manual_seed(0)).unbind(0)
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(banded_attention(q, k, v, window=10), causal)
    torch.testing.assert_close(banded_attention(q, k, v, window=50), causal)


def test_banded_output_ignores_keys_outside_the_window():
    q, k, v = torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(1)).unbind(0)
    out = banded_attention(q, k, v, window=3)
    k2, v2 = k.clone(), v.clone()
    k2[:5], v2[:5] = 100.0, -100.0  # keys 0..4 are outside the window of queries 7..11
    torch.testing.assert_close(banded_attention(q, k2, v2, window=3)[7:], out[7:])
    assert not torch.allclose(banded_attention(q, k2, v2, window=3)[5], out[5])  # query 5 sees keys 3, 4, 5


def _tiny_llama(attn_implementation):
    import transformers
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attn_implementation,
        initializer_range=0.5,  # large weights: sharp attention, so the context (and the mask) matters
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_windowed_nll_full_window_equals_the_plain_model(attn_implementation):
    model = _tiny_llama(attn_implementation)
    ids = torch.randint(0, 50, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    plain = float(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))
    assert windowed_nll(model, ids, window=None) == pytest.approx(plain, abs=1e-6)
    assert windowed_nll(model, ids, window=24) == pytest.approx(plain, abs=1e-6)  # the 4-D mask == causal
    assert windowed_nll(model, ids, window=3) != pytest.approx(plain, abs=1e-3)  # a short window changes it
    assert windowed_nll(model, ids[0], window=3, n_sink=1) == pytest.approx(
        windowed_nll(model, ids[:1], window=3, n_sink=1)
    )  # (T,) is one sequence


def test_windowed_nll_sdpa_and_eager_agree_on_a_custom_mask():
    ids = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(1))
    sdpa = windowed_nll(_tiny_llama("sdpa"), ids, window=4, n_sink=2)
    eager = windowed_nll(_tiny_llama("eager"), ids, window=4, n_sink=2)
    assert sdpa == pytest.approx(eager, abs=1e-5)


def test_window_mask_is_window_or_sinks_and_causal():
    mask = window_mask(8, window=2, n_sink=2)
    assert mask[7].nonzero().flatten().tolist() == [0, 1, 6, 7]
    assert torch.equal(window_mask(8, window=8), causal_mask(8))
    assert torch.equal(window_mask(8, window=3, n_sink=0), sliding_window_mask(8, window=3))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: banded_attention(torch.ones(4, 2), torch.ones(4, 2), torch.ones(4, 2), window=0), ValueError,
         "window must be >= 1, got 0"),
        (lambda: banded_attention(torch.ones(4, 2), torch.ones(5, 2), torch.ones(5, 2), window=2), ValueError,
         "must share"),
        (lambda: banded_attention(torch.ones(4, 2), torch.ones(4, 3), torch.ones(4, 2), window=2), ValueError,
         "same last dim"),
        (lambda: banded_attention([1.0], torch.ones(4, 3), torch.ones(4, 2), window=2), TypeError, "q must be"),
        (lambda: window_mask(4, window=2, n_sink=-1), ValueError, "n_sink must be >= 0"),
        (lambda: windowed_nll(None, torch.ones(3), window=2), TypeError, "integer tensor"),
        (lambda: windowed_nll(None, torch.ones(1, 1, 3, dtype=torch.long), window=2), ValueError, "shape"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
