"""Tests for lab_utils.generation: greedy decoding vs transformers' generate, sampling, scoring vs a per-text loop."""

import functools

import pytest
import torch

from lab_utils.generation import causal_logits, generate, score_texts
from lab_utils.models import TinyTransformer, TransformerConfig


def prompt(T=5, seed=0, V=64):
    return torch.randint(3, V, (1, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tiny_decoder():
    torch.manual_seed(0)
    return TinyTransformer(TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_layers=2, n_heads=4)).eval()


def test_greedy_equals_transformers_generate(tiny_llama):
    ids = prompt()
    want = tiny_llama.generate(ids, do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=0)
    got = generate(tiny_llama, ids, max_new_tokens=12)
    assert torch.equal(got, want)
    assert len(set(got[0, 5:].tolist())) > 1  # non-vacuity: not one token repeated


def test_stop_ids_end_generation_as_transformers_eos(tiny_llama):
    ids = prompt()
    full = generate(tiny_llama, ids, max_new_tokens=12)[0, 5:].tolist()
    stop = next(t for i, t in enumerate(full) if i >= 2 and t not in full[:i])  # first new token seen at i >= 2
    want = tiny_llama.generate(ids, do_sample=False, max_new_tokens=12, eos_token_id=stop, pad_token_id=0)
    got = generate(tiny_llama, ids, max_new_tokens=12, stop_ids=[stop])
    assert torch.equal(got, want) and got[0, -1] == stop and got.shape[1] < 5 + 12


def test_banned_ids_are_never_generated(tiny_llama):
    ids = prompt()
    first = int(generate(tiny_llama, ids, max_new_tokens=1)[0, -1])
    out = generate(tiny_llama, ids, max_new_tokens=10, banned_ids=[first, 2])
    assert first not in out[0, 5:].tolist() and 2 not in out[0, 5:].tolist()


def test_sampling_is_reproducible_with_a_generator(tiny_llama):
    def sample(seed):
        return generate(tiny_llama, prompt(), max_new_tokens=15, temperature=2.0,
                        generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))  # non-vacuity: another seed, another text


def test_top_p_samples_only_from_the_nucleus(tiny_llama):
    ids = prompt()
    with torch.no_grad():
        probs = (tiny_llama(ids).logits[0, -1] / 3.0).softmax(-1)  # temperature 3: a flat distribution
    p, order = probs.sort(descending=True)
    nucleus = set(order[(p.cumsum(0) - p) < 0.5].tolist())  # smallest top set with mass >= 0.5
    g = torch.Generator().manual_seed(0)

    def first_tokens(**kwargs):
        return {int(generate(tiny_llama, ids, max_new_tokens=1, temperature=3.0, generator=g, **kwargs)[0, -1])
                for _ in range(60)}

    assert first_tokens(top_p=0.5) <= nucleus
    assert not first_tokens() <= nucleus  # non-vacuity: without top-p, tokens outside the nucleus come up
    # A tiny top_p keeps only the most likely token: sampling becomes greedy.
    greedy = generate(tiny_llama, ids, max_new_tokens=8)
    assert torch.equal(generate(tiny_llama, ids, max_new_tokens=8, temperature=1.0, top_p=1e-6, generator=g), greedy)


def test_tiny_transformer_generates_past_max_len_with_a_sliding_context(tiny_decoder):
    out = generate(tiny_decoder, prompt(14, V=50), max_new_tokens=6)  # 20 tokens > max_len = 16
    assert out.shape == (1, 20)
    # With a context of 4, tokens older than the last 4 cannot matter: change them, the continuation is the same.
    a, b = prompt(10, seed=1, V=50), prompt(10, seed=1, V=50)
    b[0, :6] = (b[0, :6] + 11) % 50
    new_a, new_b = (generate(tiny_decoder, x, max_new_tokens=5, context_len=4)[0, 10:] for x in (a, b))
    assert torch.equal(new_a, new_b)
    full_a, full_b = (generate(tiny_decoder, x, max_new_tokens=5)[0, 10:] for x in (a, b))
    assert not torch.equal(full_a, full_b)  # non-vacuity: with the whole context they do matter


def test_score_texts_equals_a_per_text_loop(tiny_llama):
    texts = [prompt(T, seed=T)[0].tolist() for T in (2, 7, 4, 9, 5)]
    total, count = score_texts(tiny_llama, texts, batch_size=2)  # padded batches of unequal lengths
    with torch.no_grad():  # transformers' own loss, one unpadded text at a time: mean over len - 1 targets
        want = sum(tiny_llama(torch.tensor([t]), labels=torch.tensor([t])).loss.item() * (len(t) - 1) for t in texts)
    assert count == sum(len(t) - 1 for t in texts) == 22
    assert total == pytest.approx(want, rel=1e-5)
    assert tiny_llama.training is False


def test_score_texts_works_for_a_tiny_transformer(tiny_decoder):
    texts = [prompt(T, seed=T, V=50)[0].tolist() for T in (3, 8, 5)]
    one_by_one = [score_texts(tiny_decoder, [t]) for t in texts]
    total, count = score_texts(tiny_decoder, texts, batch_size=3, pad_id=7)
    assert count == sum(c for _, c in one_by_one)
    assert total == pytest.approx(sum(s for s, _ in one_by_one), rel=1e-5)


def test_causal_logits_of_both_model_kinds(tiny_llama, tiny_decoder):
    ids = prompt(6, V=50)
    torch.testing.assert_close(causal_logits(tiny_decoder, ids), tiny_decoder(ids, causal=True))
    torch.testing.assert_close(causal_logits(tiny_llama, ids), tiny_llama(ids).logits)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: generate(m, prompt()[0], max_new_tokens=2), r"shape \(B, T\)"),
        (lambda m: generate(m, prompt().repeat(2, 1), max_new_tokens=2), r"must be \(1, T\)"),
        (lambda m: generate(m, prompt(), max_new_tokens=0), "max_new_tokens must be >= 1"),
        (lambda m: generate(m, prompt(), max_new_tokens=2, temperature=0), "temperature must be > 0"),
        (lambda m: generate(m, prompt(), max_new_tokens=2, top_p=0.9), "needs a temperature"),
        (lambda m: generate(m, prompt(), max_new_tokens=2, context_len=0), "context_len must be >= 1"),
        (lambda m: score_texts(m, []), "token_lists is empty"),
        (lambda m: score_texts(m, [[1, 2], [1]]), "at least one token to score"),
        (lambda m: score_texts(m, [[1, 2]], batch_size=0), "batch_size must be >= 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_llama, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_llama)
    with pytest.raises(TypeError, match="integer tensor"):
        generate(tiny_llama, prompt().float(), max_new_tokens=1)


# KV cache (chapter "Efficient attention"): the same tokens with and without it.


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
def test_cached_generation_equals_uncached_for_the_tiny_model(n_kv_heads):
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=50, max_len=32, d_model=32, n_layers=2, n_heads=4,
                                              n_kv_heads=n_kv_heads)).eval()
    ids = prompt(4, V=50)
    assert torch.equal(generate(model, ids, max_new_tokens=20, use_cache=True),
                       generate(model, ids, max_new_tokens=20, use_cache=False))
    # Greedy decoding of a random model may repeat one token; sampling with one seed must agree too, and varies.
    cached, uncached = (generate(model, ids, max_new_tokens=20, temperature=1.0, use_cache=c,
                                 generator=torch.Generator().manual_seed(0)) for c in (True, False))
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, 4:].tolist())) > 1  # non-vacuity: not one token repeated


def test_cached_generation_equals_uncached_for_transformers(tiny_llama):
    ids = prompt()
    cached = generate(tiny_llama, ids, max_new_tokens=12, use_cache=True)
    assert torch.equal(cached, generate(tiny_llama, ids, max_new_tokens=12, use_cache=False))
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    sampled = [generate(tiny_llama, ids, max_new_tokens=12, temperature=1.5, generator=g[i], use_cache=c)
               for i, c in enumerate((True, False))]
    assert torch.equal(*sampled)


def test_cached_generation_equals_uncached_when_the_context_window_slides(tiny_decoder):
    ids = prompt(10, V=50)  # max_len 16: the window slides after 6 new tokens, and with context_len=4 at once
    for context_len in (None, 4):
        cached = generate(tiny_decoder, ids, max_new_tokens=12, context_len=context_len)
        assert torch.equal(cached, generate(tiny_decoder, ids, max_new_tokens=12, context_len=context_len,
                                            use_cache=False))
        assert cached.shape == (1, 22)


def test_generate_with_a_cache_feeds_one_token_per_step(tiny_decoder, monkeypatch):
    lengths = []
    forward = tiny_decoder.forward

    @functools.wraps(forward)  # keeps the signature: generate sees a model that takes a cache
    def spy(input_ids, *args, **kwargs):
        lengths.append(input_ids.shape[1])
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(tiny_decoder, "forward", spy)
    generate(tiny_decoder, prompt(5, V=50), max_new_tokens=4)
    assert lengths == [5, 1, 1, 1]
    lengths.clear()
    generate(tiny_decoder, prompt(5, V=50), max_new_tokens=4, use_cache=False)
    assert lengths == [5, 6, 7, 8]
