"""Tests for lab_utils.attention: equivalence with PyTorch's SDPA (with enable_gqa for grouped-query attention) and
nn.MultiheadAttention, mask properties, and attention through a KV cache."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab_utils.attention import MultiHeadAttention, attention_weights, repeat_kv, scaled_dot_product_attention
from lab_utils.kv_cache import KVCache
from lab_utils.masks import causal_mask, combine_masks, padding_mask

# float32, d <= 16: our matmul/softmax and PyTorch's fused kernels differ only by rounding, ~1e-7 relative.
# 1e-5 / 1e-6 leaves room for accumulation order and stays ~1000x below any real bug (errors of order 0.1).
RTOL, ATOL = 1e-5, 1e-6

B, H, T, D = 2, 3, 5, 8


def qkv(T_q=T, T_k=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, D, generator=g)
    k = torch.randn(B, H, T_k, D, generator=g)
    v = torch.randn(B, H, T_k, D, generator=g)
    return q, k, v


AM = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])  # (B, T): row 0 has two padded keys

MASKS = {
    "none": None,
    "causal": causal_mask(T),
    "padding": padding_mask(AM),
    "causal+padding": combine_masks(causal_mask(T), padding_mask(AM)),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_sdpa_matches_torch(name):
    q, k, v = qkv()
    mask = MASKS[name]
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T), rtol=RTOL, atol=ATOL)


def test_sdpa_cross_attention_t_q_differs_from_t_k():
    q, k, v = qkv(T_q=3, T_k=7)
    am = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    mask = padding_mask(am)  # (B, 1, 1, 7)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert out.shape == (B, H, 3, D) and weights.shape == (B, H, 3, 7)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=RTOL, atol=ATOL)


def test_causal_with_offset_matches_torch_is_causal_on_full_sequence():
    # Last 2 queries of a length-5 sequence against all 5 keys == rows 3, 4 of full causal attention.
    q, k, v = qkv()
    out, _ = scaled_dot_product_attention(q[:, :, 3:], k, v, causal_mask(2, offset=3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, full[:, :, 3:], rtol=RTOL, atol=ATOL)


def test_padding_keys_get_zero_weight_and_their_values_do_not_matter():
    q, k, v = qkv()
    mask = padding_mask(AM)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(weights[0, :, :, 3:], torch.zeros(H, T, 2))  # exactly zero, not just small
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 3:] += 100.0
    v2[0, :, 3:] = torch.randn(H, 2, D) * 100
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask)
    torch.testing.assert_close(out2, out, rtol=RTOL, atol=ATOL)
    out3, _ = scaled_dot_product_attention(q, k2, v2)  # non-vacuity: without the mask the change shows
    assert not torch.allclose(out3[0], out[0], rtol=RTOL, atol=ATOL)


def test_fully_masked_row_gives_zeros_not_nan_like_torch():
    q, k, v = qkv()
    mask = torch.ones(T, T, dtype=torch.bool)
    mask[2] = False  # query 2 may attend nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert not out.isnan().any()
    assert torch.equal(weights[:, :, 2], torch.zeros(B, H, T)) and torch.equal(out[:, :, 2], torch.zeros(B, H, D))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(MASKS))
def test_attention_weights_match_torch(name):
    # PyTorch's SDPA does not return its weights, but with v = identity its output *is* the weight matrix.
    q, k, _ = qkv()
    mask = MASKS[name]
    weights = attention_weights(q, k, mask)
    eye = torch.eye(T).expand(B, H, T, T)
    torch.testing.assert_close(weights, F.scaled_dot_product_attention(q, k, eye, attn_mask=mask), rtol=RTOL, atol=ATOL)
    if name == "causal":
        assert torch.equal(weights[..., 0, 1:], torch.zeros(B, H, T - 1))  # first token sees only itself


def copy_into_torch_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(mha.d_model, mha.n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("kind", ["self", "causal", "padding", "cross"])
def test_multihead_attention_matches_torch_with_copied_weights(kind):
    torch.manual_seed(0)
    d_model, n_heads = 16, 4
    mha = MultiHeadAttention(d_model, n_heads).eval()
    ref = copy_into_torch_mha(mha)
    x = torch.randn(B, T, d_model)
    context = torch.randn(B, 7, d_model) if kind == "cross" else None
    kv = x if context is None else context
    ours_mask, ref_kwargs = None, {}
    if kind == "causal":
        ours_mask = causal_mask(T)
        ref_kwargs = {"attn_mask": ~ours_mask}  # nn.MultiheadAttention's bool masks mean True = *blocked*
    elif kind == "padding":
        ours_mask = padding_mask(AM)
        ref_kwargs = {"key_padding_mask": AM == 0}
    out = mha(x, context=context, mask=ours_mask, need_weights=True)
    want, want_w = ref(x, kv, kv, need_weights=True, average_attn_weights=False, **ref_kwargs)
    torch.testing.assert_close(out, want, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(mha.attn_weights, want_w, rtol=RTOL, atol=ATOL)
    assert mha.attn_weights.shape == (B, n_heads, T, kv.shape[1])


def test_multihead_attention_stores_weights_only_when_asked():
    mha = MultiHeadAttention(16, 4)
    x = torch.randn(1, 3, 16)
    mha(x, need_weights=True)
    assert mha.attn_weights is not None
    mha(x)
    assert mha.attn_weights is None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: MultiHeadAttention(10, 3), ValueError, r"d_model \(10\) must be divisible by n_heads \(3\)"),
        (lambda: MultiHeadAttention(8, 2, dropout=1.0), ValueError, "dropout must be in"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 6)), ValueError, "d_model=8"),
        (
            lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), mask=torch.ones(2, 3, 3, dtype=torch.bool)),
            ValueError,
            "2-D .* or 4-D",
        ),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), context=torch.randn(1, 4, 8)), ValueError, "context"),
        (lambda: scaled_dot_product_attention(*qkv(), mask=torch.ones(T, T)), TypeError, "bool tensor"),
        (lambda: scaled_dot_product_attention(*qkv(), mask=causal_mask(4)), ValueError, "does not broadcast"),
        (lambda: scaled_dot_product_attention(*qkv(), dropout_p=1.5), ValueError, "dropout_p"),
        (lambda: attention_weights(torch.randn(2, 4), torch.randn(2, 5)), ValueError, "same last dim"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# Grouped-query attention (chapter "Efficient attention"): n_kv_heads key/value heads, group_size query heads each.


def gqa_inputs(n_heads=6, n_kv_heads=2, T_q=T, T_k=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, n_heads, T_q, D, generator=g)
    k = torch.randn(B, n_kv_heads, T_k, D, generator=g)
    v = torch.randn(B, n_kv_heads, T_k, D, generator=g)
    return q, k, v


@pytest.mark.parametrize("n_kv_heads", [1, 2, 3, 6])
def test_repeat_kv_equals_repeat_interleave(n_kv_heads):
    _, k, _ = gqa_inputs(n_kv_heads=n_kv_heads)
    group_size = 6 // n_kv_heads
    assert torch.equal(repeat_kv(k, group_size), k.repeat_interleave(group_size, dim=1))


@pytest.mark.parametrize("name", ["none", "causal", "padding"])
@pytest.mark.parametrize("n_kv_heads", [1, 2, 3])
def test_own_gqa_equals_torch_sdpa_with_enable_gqa(n_kv_heads, name):
    q, k, v = gqa_inputs(n_kv_heads=n_kv_heads)
    mask = MASKS[name]
    group_size = 6 // n_kv_heads
    out, _ = scaled_dot_product_attention(q, repeat_kv(k, group_size), repeat_kv(v, group_size), mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(out, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_gqa_module_equals_torch_sdpa_with_enable_gqa_on_its_projections(n_kv_heads):
    torch.manual_seed(0)
    d_model, n_heads, hs = 16, 4, 4
    mha = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv_heads).eval()
    assert mha.group_size == n_heads // n_kv_heads and mha.k_proj.out_features == n_kv_heads * hs
    x = torch.randn(B, T, d_model)
    q = mha.q_proj(x).view(B, T, n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = mha.k_proj(x).view(B, T, n_kv_heads, hs).transpose(1, 2)  # (B, n_kv, T, hs)
    v = mha.v_proj(x).view(B, T, n_kv_heads, hs).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, nh, T, hs)
    want = mha.out_proj(ref.transpose(1, 2).reshape(B, T, d_model))
    torch.testing.assert_close(mha(x, mask=causal_mask(T)), want, rtol=RTOL, atol=ATOL)


def test_gqa_with_n_kv_heads_equal_to_n_heads_is_multi_head_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    torch.manual_seed(0)
    gqa = MultiHeadAttention(16, 4, n_kv_heads=4).eval()
    assert gqa.group_size == 1
    gqa.load_state_dict(mha.state_dict())  # same parameter names and shapes: MHA checkpoints load
    x = torch.randn(B, T, 16)
    assert torch.equal(gqa(x, mask=causal_mask(T)), mha(x, mask=causal_mask(T)))


def test_gqa_shares_each_kv_head_with_its_group():
    # With 2 KV heads for 4 query heads, query heads 0, 1 use KV head 0 and 2, 3 use KV head 1: if query heads 0 and
    # 1 have the same projection, their weights are equal, while heads 1 and 2 (other KV heads) differ.
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, n_kv_heads=2).eval()
    with torch.no_grad():
        w, b = mha.q_proj.weight.view(4, 4, 16), mha.q_proj.bias.view(4, 4)  # (nh, hs, d_model), (nh, hs)
        w[1:3], b[1:3] = w[0], b[0]  # query heads 1 and 2 are copies of head 0
    mha(torch.randn(1, T, 16), mask=causal_mask(T), need_weights=True)
    weights = mha.attn_weights[0]  # (nh, T, T)
    torch.testing.assert_close(weights[1], weights[0])
    assert not torch.allclose(weights[2], weights[1])  # same query, other KV head


def test_attention_with_a_cache_equals_attention_over_the_whole_sequence():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, n_kv_heads=2).eval()
    x = torch.randn(B, 7, 16)
    full = mha(x, mask=causal_mask(7))
    cache = KVCache(n_layers=1)
    parts = [mha(x[:, :4], mask=causal_mask(4), cache=cache, layer_idx=0)]  # prefill 4 tokens
    for t in range(4, 7):  # then one token at a time
        parts.append(mha(x[:, t : t + 1], mask=causal_mask(1, offset=t), cache=cache, layer_idx=0))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=RTOL, atol=ATOL)
    assert cache.keys[0].shape == (B, 2, 7, 4)  # the cache keeps the 2 KV heads, not 4


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: MultiHeadAttention(24, 6, n_kv_heads=4), ValueError,
         r"n_heads \(6\) must be divisible by n_kv_heads \(4\)"),
        (lambda: MultiHeadAttention(24, 6, n_kv_heads=0), ValueError, "n_kv_heads must be >= 1"),
        (lambda: MultiHeadAttention(24, 6, n_kv_heads=2.0), TypeError, "n_kv_heads must be an int"),
        (lambda: repeat_kv(torch.randn(2, 3, 4), 2), ValueError, r"\(B, n_kv_heads, T, head_dim\)"),
        (lambda: repeat_kv(torch.randn(2, 3, 4, 5), 0), ValueError, "group_size must be >= 1"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(1, 3, 8), cache=KVCache(1)), ValueError, "layer_idx"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(1, 3, 8), context=torch.randn(1, 4, 8), cache=KVCache(1),
                                          layer_idx=0), ValueError, "self-attention"),
    ],
)
def test_gqa_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
