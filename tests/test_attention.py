"""Tests for lab_utils.attention: equivalence with PyTorch's SDPA and nn.MultiheadAttention, and mask properties."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab_utils.attention import MultiHeadAttention, attention_weights, scaled_dot_product_attention
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
