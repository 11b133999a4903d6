"""Tests for lab_utils.models: one set of weights is an encoder or a decoder by its mask alone."""

import pytest
import torch
from torch import nn

from lab_utils.kv_cache import KVCache, kv_cache_bytes
from lab_utils.masks import causal_mask, padding_mask
from lab_utils.models import TinyEncoderDecoder, TinyTransformer, TransformerBlock, TransformerConfig

# float32 through 2 tiny layers: identical computations on identical inputs agree to rounding (~1e-7); 1e-5 / 1e-6
# also absorbs the different reduction order of a shorter sequence, while a leak from the future moves logits ~1e-2.
RTOL, ATOL = 1e-5, 1e-6

CFG = TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_layers=2, n_heads=4, d_ff=64)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyTransformer(CFG).eval()


def ids(B=2, T=8, seed=0):
    return torch.randint(1, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_tied_head(model):
    assert model(ids()).shape == (2, 8, CFG.vocab_size)
    assert model.lm_head.weight is model.embeddings.tok_emb.weight  # tied: no separate output matrix


def test_encoder_and_decoder_differ_with_the_same_weights(model):
    x = ids()
    enc, dec = model(x, causal=False), model(x, causal=True)
    assert not torch.allclose(enc[:, 0], dec[:, 0], rtol=RTOL, atol=ATOL)  # position 0: all keys vs itself only
    # Even the last position, whose causal row allows every key, differs with 2 layers: its layer-2 keys and values
    # come from earlier positions, which the causal mask changed in layer 1.
    assert not torch.allclose(enc[:, -1], dec[:, -1], rtol=RTOL, atol=ATOL)


def test_one_layer_last_position_is_the_same_for_encoder_and_decoder():
    # With one layer, keys and values are embeddings, identical under both masks, and the last query sees all of them.
    torch.manual_seed(0)
    one_layer = TinyTransformer(TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_layers=1, n_heads=4)).eval()
    x = ids()
    enc, dec = one_layer(x, causal=False), one_layer(x, causal=True)
    torch.testing.assert_close(dec[:, -1], enc[:, -1], rtol=RTOL, atol=ATOL)
    assert not torch.allclose(dec[:, :-1], enc[:, :-1], rtol=RTOL, atol=ATOL)  # the other positions do not


def test_first_position_of_decoder_equals_model_on_first_token_alone(model):
    x = ids()
    torch.testing.assert_close(model(x, causal=True)[:, :1], model(x[:, :1], causal=True), rtol=RTOL, atol=ATOL)


def test_decoder_does_not_see_the_future(model):
    x, t = ids(), 4
    y = x.clone()
    y[:, t + 1 :] = (y[:, t + 1 :] + 7) % CFG.vocab_size  # change every token after t
    dec_x, dec_y = model(x, causal=True), model(y, causal=True)
    torch.testing.assert_close(dec_y[:, : t + 1], dec_x[:, : t + 1], rtol=RTOL, atol=ATOL)
    assert not torch.allclose(dec_y[:, t + 1 :], dec_x[:, t + 1 :], rtol=RTOL, atol=ATOL)
    # Non-vacuity: the encoder does see the future, so its outputs at <= t change.
    assert not torch.allclose(model(y)[:, : t + 1], model(x)[:, : t + 1], rtol=RTOL, atol=ATOL)


def test_decoder_prefix_equals_full_forward(model):
    x = ids()
    torch.testing.assert_close(model(x[:, :5], causal=True), model(x, causal=True)[:, :5], rtol=RTOL, atol=ATOL)


def copy_into_torch_layer(block: TransformerBlock) -> nn.TransformerEncoderLayer:
    """PyTorch's pre-LN encoder layer holding the block's weights (q, k, v stacked into in_proj)."""
    ref = nn.TransformerEncoderLayer(CFG.d_model, CFG.n_heads, dim_feedforward=CFG.d_ff, dropout=0.0,
                                     activation="gelu", batch_first=True, norm_first=True)
    attn = block.attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        ref.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.fc1.state_dict())
        ref.linear2.load_state_dict(block.mlp.fc2.state_dict())
        ref.norm1.load_state_dict(block.ln_1.state_dict())
        ref.norm2.load_state_dict(block.ln_2.state_dict())
    return ref.eval()


@pytest.mark.parametrize("kind", ["none", "causal", "padding"])
def test_block_matches_torch_transformer_encoder_layer(kind):
    # x + attn(ln_1(x)), then x + mlp(ln_2(x)): PyTorch's norm_first layer is the same computation. Catches a block
    # that drops a residual or a LayerNorm, or swaps their order. Random non-zero biases and norms, so none is a no-op.
    torch.manual_seed(0)
    block = TransformerBlock(CFG).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = copy_into_torch_layer(block)
    x = torch.randn(2, 6, CFG.d_model)
    am = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    if kind == "none":
        ours, want = block(x), ref(x)
    elif kind == "causal":
        ours, want = block(x, causal_mask(6)), ref(x, src_mask=~causal_mask(6))  # PyTorch: True = blocked
    else:
        ours, want = block(x, padding_mask(am)), ref(x, src_key_padding_mask=am == 0)
        ours, want = ours[am.bool()], want[am.bool()]  # PyTorch's fast path zeroes the padded positions' outputs
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-5)  # float32 through ~5 matmuls, errors ~1e-6


def test_decoder_hides_left_padding(model):
    # Left padding (as for batched generation): the padded keys come before the real tokens, so only the padding
    # mask hides them. (Right padding proves nothing for a decoder: its causal mask already hides later keys.)
    x = ids(B=2, T=8)
    am = torch.tensor([[0, 0, 0] + [1] * 5, [1] * 8])
    other = x.clone()
    other[0, :3] = (other[0, :3] + 13) % CFG.vocab_size  # other ids in the padded slots
    out, out_other = (model(z, attention_mask=am, causal=True) for z in (x, other))
    torch.testing.assert_close(out_other[0, 3:], out[0, 3:], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out_other[1], out[1], rtol=RTOL, atol=ATOL)
    # Non-vacuity: without the mask the real positions attend to the padded ids, and change with them.
    assert not torch.allclose(model(other, causal=True)[0, 3:], model(x, causal=True)[0, 3:], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_real_positions(model, causal):
    # Right padding: for causal=True this holds even without a padding mask (the causal mask hides later keys);
    # test_decoder_hides_left_padding covers the decoder's padding mask.
    x = ids(B=1, T=5)
    padded = torch.cat([x, torch.full((1, 3), CFG.pad_token_id)], dim=1)  # right padding
    am = torch.tensor([[1] * 5 + [0] * 3])
    out = model(padded, attention_mask=am, causal=causal)[:, :5]
    torch.testing.assert_close(out, model(x, causal=causal), rtol=RTOL, atol=ATOL)
    if not causal:  # non-vacuity: without the mask the encoder attends to the padding
        assert not torch.allclose(model(padded)[:, :5], model(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cls", [TinyTransformer, TinyEncoderDecoder])
def test_every_parameter_gets_a_gradient(cls):
    # Catches a sub-layer that is built but never called (e.g. a block that drops its MLP). A dropped residual
    # still leaves every gradient non-zero: test_block_matches_torch_transformer_encoder_layer catches that.
    torch.manual_seed(0)
    model = cls(CFG)
    logits = model(ids(), causal=True) if cls is TinyTransformer else model(ids(), ids(T=5, seed=1))
    logits.logsumexp(-1).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not unused, f"parameters without gradient: {unused}"


def test_attention_weights_for_plotting(model):
    model(ids(B=1, T=6), causal=True, need_weights=True)
    weights = model.attention_weights()
    assert len(weights) == CFG.n_layers and weights[0].shape == (1, CFG.n_heads, 6, 6)
    assert torch.equal(weights[0].triu(diagonal=1), torch.zeros(1, CFG.n_heads, 6, 6))  # no weight on the future
    model(ids())
    with pytest.raises(RuntimeError, match="need_weights=True"):
        model.attention_weights()


def test_encoder_decoder_shapes_and_cross_attention():
    torch.manual_seed(0)
    model = TinyEncoderDecoder(CFG).eval()
    src, tgt = ids(T=7), ids(T=4, seed=1)
    am = torch.tensor([[1] * 5 + [0] * 2, [1] * 7])
    logits = model(src, tgt, attention_mask=am, need_weights=True)
    assert logits.shape == (2, 4, CFG.vocab_size)
    cross = model.decoder_blocks[0].cross_attn.attn_weights
    assert cross.shape == (2, CFG.n_heads, 4, 7)  # (B, nh, T_dec, T_enc)
    assert torch.equal(cross[0, :, :, 5:], torch.zeros(CFG.n_heads, 4, 2))  # padded source tokens ignored
    # The decoder is causal: changing the last target token leaves earlier logits unchanged.
    tgt2 = tgt.clone()
    tgt2[:, -1] = (tgt2[:, -1] + 1) % CFG.vocab_size
    torch.testing.assert_close(model(src, tgt2, attention_mask=am)[:, :3], logits[:, :3], rtol=RTOL, atol=ATOL)
    # Cross-attention is used: a different source changes every target position.
    src2 = (src + 1) % CFG.vocab_size
    assert not torch.allclose(model(src2, tgt, attention_mask=am), logits, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m(ids().float()), TypeError, "integer"),
        (lambda m: m(ids()[0]), ValueError, r"shape \(B, T\)"),
        (lambda m: m(ids(T=17)), ValueError, "max_len=16"),
        (lambda m: m(ids() + CFG.vocab_size), ValueError, r"token ids must be in \[0, vocab_size=50\)"),
        (lambda m: m(ids(), attention_mask=torch.ones(2, 5)), ValueError, "attention_mask shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, call, error, match):
    with pytest.raises(error, match=match):
        call(model)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        TransformerConfig(vocab_size=10, max_len=8, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="pad_token_id"):
        TransformerConfig(vocab_size=10, max_len=8, pad_token_id=10)


# KV cache and grouped-query attention (chapter "Efficient attention"): arguments of the same model, not a copy.

GQA_CFG = TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_kv_heads=2)


@pytest.mark.parametrize("config", [CFG, GQA_CFG], ids=["mha", "gqa"])
@pytest.mark.parametrize("prefill", [1, 5])
def test_decoding_with_a_cache_equals_the_full_forward(config, prefill):
    torch.manual_seed(0)
    model = TinyTransformer(config).eval()
    x = ids(T=10)
    full = model(x, causal=True)  # (B, 10, V)
    cache = KVCache(config.n_layers)
    steps = [model(x[:, :prefill], causal=True, cache=cache)]
    for t in range(prefill, 10):  # one new token per step, positions from cache.length
        assert cache.length == t
        steps.append(model(x[:, t : t + 1], causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=RTOL, atol=ATOL)
    n_kv = config.n_kv_heads or config.n_heads
    hs = config.d_model // config.n_heads
    assert cache.nbytes() == kv_cache_bytes(n_layers=2, n_kv_heads=n_kv, head_dim=hs, tokens=10, batch=2,
                                            bytes_per_value=4)


def test_the_cache_offsets_positions(model):
    # Without the offset, a token fed after a cached prefix would get position 0 again: the result must differ.
    x = ids(T=6)
    cache = KVCache(CFG.n_layers)
    model(x[:, :5], causal=True, cache=cache)
    with_cache = model(x[:, 5:], causal=True, cache=cache)[:, 0]
    torch.testing.assert_close(with_cache, model(x, causal=True)[:, 5], rtol=RTOL, atol=ATOL)
    fresh = model(x[:, 5:], causal=True)[:, 0]  # position 0, no context
    assert not torch.allclose(with_cache, fresh, rtol=RTOL, atol=ATOL)


def test_a_padded_batch_decodes_with_a_cache(model):
    x = ids(T=8)
    am = torch.ones(2, 8, dtype=torch.long)
    am[0, 5:] = 0  # row 0 has 3 padded keys at the end of its prompt
    full = model(x, attention_mask=am, causal=True)
    cache = KVCache(CFG.n_layers)
    first = model(x[:, :6], attention_mask=am[:, :6], causal=True, cache=cache)
    rest = model(x[:, 6:], attention_mask=am, causal=True, cache=cache)  # the mask covers cached keys too
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=RTOL, atol=ATOL)


def test_n_kv_heads_none_keeps_chapter_1_checkpoints_loading(model):
    mha_state = model.state_dict()
    gqa_as_mha = TinyTransformer(TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_layers=2, n_heads=4,
                                                   d_ff=64, n_kv_heads=4)).eval()
    gqa_as_mha.load_state_dict(mha_state)  # n_kv_heads = n_heads: the same shapes
    x = ids()
    assert torch.equal(gqa_as_mha(x, causal=True), model(x, causal=True))
    with pytest.raises(RuntimeError, match="size mismatch"):  # non-vacuity: 2 KV heads have smaller k_proj/v_proj
        TinyTransformer(GQA_CFG).load_state_dict(mha_state)


def test_gqa_model_has_fewer_parameters_in_k_and_v():
    mha, gqa = TinyTransformer(CFG), TinyTransformer(GQA_CFG)
    n = sum(p.numel() for p in mha.parameters()) - sum(p.numel() for p in gqa.parameters())
    # per layer, k_proj and v_proj lose (n_heads - n_kv_heads) * head_dim outputs: weights d_model each, and biases
    assert n == CFG.n_layers * 2 * (4 - 2) * 8 * (32 + 1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m(ids(), cache=KVCache(2)), "needs causal=True"),
        (lambda m: m(ids(), causal=True, cache=KVCache(3)), r"KVCache\(n_layers=2\)"),
        (lambda m: [m(ids(T=3), causal=True, cache=(c := KVCache(2))), m(ids(B=1, T=1), causal=True, cache=c)],
         "same batch, heads and head size"),
        (lambda m: [m(ids(T=12), causal=True, cache=(c := KVCache(2))), m(ids(T=5), causal=True, cache=c)],
         r"positions 12..16 exceed max_len=16"),
        (lambda m: [m(ids(T=3), causal=True, cache=(c := KVCache(2))),
                    m(ids(T=1), attention_mask=torch.ones(2, 1), causal=True, cache=c)], "plus the 3 cached"),
    ],
)
def test_cache_bad_inputs_raise_clear_errors(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model)


def test_gqa_config_must_divide_n_heads():
    with pytest.raises(ValueError, match=r"n_kv_heads must be >= 1 and divide n_heads \(4\), got 3"):
        TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_heads=4, n_kv_heads=3)
