"""Tests for lab_utils.prompting: prompt builder (the lecture's layout, chat template), drawing shots (k, balance,
counts, order, reproducibility), label-word scoring (rows sum to 1, the shared-prefix cache changes nothing, the
ordering SmolLM2 gives on an obvious prompt) and bad inputs."""

from collections import Counter

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lab_utils.assets import load_smollm2, load_smollm2_tokenizer
from lab_utils.prompting import (
    build_few_shot_prompt,
    draw_shots,
    label_probs_from_logits,
    label_token_ids,
    label_word_scores,
    shared_prefix,
    token_ids_containing,
)

LECTURE = [("sea otter", "loutre de mer"), ("peppermint", "menthe poivrée"), ("plush girafe", "girafe peluche")]


@pytest.fixture(scope="module")
def tokenizer():
    return load_smollm2_tokenizer()


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    """A random 2-layer Llama over SmolLM2's vocabulary: float32, fast, and with a KV cache like the real one."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


# --- build_few_shot_prompt --------------------------------------------------------------------------------------------
def test_lecture_layout_exactly():
    got = build_few_shot_prompt("Translate English to French:", LECTURE, "cheese")
    assert got == ("Translate English to French:\nsea otter => loutre de mer\npeppermint => menthe poivrée\n"
                   "plush girafe => girafe peluche\ncheese =>")


def test_zero_shot_and_template_and_separator():
    assert build_few_shot_prompt("Task.", [], "x") == "Task.\nx =>"
    got = build_few_shot_prompt("", [("good day", "positive")], "bad day", template="Tweet: {input}\nSentiment: "
                                "{output}", separator="\n\n")
    assert got == "Tweet: good day\nSentiment: positive\n\nTweet: bad day\nSentiment:"
    assert got.count("Tweet:") == 2


def test_chat_template_wraps_the_text_as_the_user_turn(tokenizer):
    text = build_few_shot_prompt("Translate English to French:", LECTURE[:1], "cheese")
    got = build_few_shot_prompt("Translate English to French:", LECTURE[:1], "cheese", chat_tokenizer=tokenizer)
    assert got == tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=False)
    assert text in got and got.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("template", ["{input} only", "{output} only", "{input} {label} {output}", "{0} {input}"])
def test_bad_template(template):
    with pytest.raises(ValueError, match="template"):
        build_few_shot_prompt("", [], "x", template=template)


@pytest.mark.parametrize("example", [("text", 1), ("only one",), "ab"])
def test_bad_example(example):
    with pytest.raises(TypeError, match=r"examples\[0\]"):
        build_few_shot_prompt("", [example], "x")


# --- draw_shots -------------------------------------------------------------------------------------------------------
TEXTS = [f"t{i}" for i in range(30)]
LABELS = [0] * 20 + [1] * 10  # imbalanced pool, 2:1


@pytest.mark.parametrize("k", [0, 1, 2, 5, 8])
def test_balanced_draw_counts_and_membership(k):
    shots = draw_shots(TEXTS, LABELS, k, balance=True, seed=3)
    assert len(shots) == k and len({t for t, _ in shots}) == k
    assert all(LABELS[TEXTS.index(t)] == y for t, y in shots)
    counts = Counter(y for _, y in shots)
    assert abs(counts[0] - counts[1]) <= 1


def test_unbalanced_draw_follows_the_pool():
    # 200 draws of 6 from a 2:1 pool: about 4 zeros per draw; a balanced draw would give exactly 3.
    zeros = sum(sum(y == 0 for _, y in draw_shots(TEXTS, LABELS, 6, balance=False, seed=s)) for s in range(200))
    assert 3.6 < zeros / 200 < 4.4


def test_counts_are_exact():
    shots = draw_shots(TEXTS, LABELS, 4, counts={0: 4, 1: 0}, seed=1)
    assert [y for _, y in shots] == [0, 0, 0, 0]
    assert Counter(y for _, y in draw_shots(TEXTS, LABELS, 5, counts={1: 5})) == {1: 5}


def test_orders():
    grouped = [y for _, y in draw_shots(TEXTS, LABELS, 6, order="grouped", seed=2)]
    assert grouped == [0, 0, 0, 1, 1, 1]
    inter = [y for _, y in draw_shots(TEXTS, LABELS, 6, order="interleaved", seed=2)]
    assert inter == [0, 1, 0, 1, 0, 1]
    uneven = [y for _, y in draw_shots(TEXTS, LABELS, 5, counts={0: 3, 1: 2}, order="interleaved")]
    assert uneven == [0, 1, 0, 1, 0]
    # the same examples whatever the order; random order differs from grouped for some seed
    same = {t for t, _ in draw_shots(TEXTS, LABELS, 6, order="random", seed=2)}
    assert same == {t for t, _ in draw_shots(TEXTS, LABELS, 6, order="grouped", seed=2)}
    assert any([y for _, y in draw_shots(TEXTS, LABELS, 6, seed=s)] != grouped for s in range(5))


def test_reproducible_and_seed_dependent():
    assert draw_shots(TEXTS, LABELS, 4, seed=7) == draw_shots(TEXTS, LABELS, 4, seed=7)
    assert any(draw_shots(TEXTS, LABELS, 4, seed=s) != draw_shots(TEXTS, LABELS, 4, seed=7) for s in range(3))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": -1}, "k must be"), ({"k": 31}, "k must be"), ({"k": 2.0}, "k must be"),
    ({"k": 2, "order": "sorted"}, "order"), ({"k": 3, "counts": {0: 1, 1: 1}}, "add up"),
    ({"k": 2, "counts": {2: 2}}, "not in the pool"), ({"k": 12, "counts": {1: 12}}, "has 10 examples"),
])
def test_draw_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_shots(TEXTS, LABELS, **kwargs)


def test_draw_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        draw_shots(TEXTS, LABELS[:-1], 2)


# --- label ids, logits to probabilities, shared prefix ----------------------------------------------------------------
def test_label_token_ids(tokenizer):
    assert label_token_ids(tokenizer, [" negative", " positive"]) == [tokenizer.encode(" negative")[0],
                                                                       tokenizer.encode(" positive")[0]]
    with pytest.raises(ValueError, match="same tokens"):
        label_token_ids(tokenizer, [" positive", " positive!"])
    with pytest.raises(ValueError, match="at least two"):
        label_token_ids(tokenizer, " positive")


def test_label_probs_from_logits_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = label_probs_from_logits(logits, mask, [5, 1])
    want = torch.stack([logits[0, 3, [5, 1]].softmax(-1), logits[1, 1, [5, 1]].softmax(-1)])
    torch.testing.assert_close(got, want)
    raw = label_probs_from_logits(logits, mask, [5, 1], renormalize=False)
    torch.testing.assert_close(raw[1], logits[1, 1].softmax(-1)[[5, 1]])
    assert (raw.sum(-1) < 1).all()
    torch.testing.assert_close(raw / raw.sum(-1, keepdim=True), got)  # renormalising = softmax over the labels
    with pytest.raises(ValueError, match="no real token"):
        label_probs_from_logits(logits, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), [5, 1])


def test_shared_prefix():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps one token to run
    assert shared_prefix([[1, 2], [3, 2]]) == 0
    assert shared_prefix([[7]]) == 0


def test_token_ids_containing(tokenizer):
    ids = token_ids_containing(tokenizer, "\n")
    assert tokenizer.encode("\n")[0] in ids and tokenizer.encode("\n\n")[0] in ids
    assert all("\n" in tokenizer.decode([i]) for i in ids) and tokenizer.encode(" the")[0] not in ids


# --- label_word_scores ------------------------------------------------------------------------------------------------
def _prompts(tokenizer=None):
    shots = [("what a lovely morning", "positive"), ("my flight was cancelled again", "negative")]
    queries = ["I love this", "worst service ever, never again", "ok", "thanks for the quick help!"]
    return [build_few_shot_prompt("Classify the sentiment.", shots, q, template="Tweet: {input}\nSentiment: {output}",
                                  separator="\n\n", chat_tokenizer=tokenizer) for q in queries]


def test_scores_sum_to_one_and_reusing_the_prefix_changes_nothing(tiny_llama, tokenizer):
    words = [" negative", " positive", " neutral"]
    tokens = [tokenizer.encode(p, add_special_tokens=False) for p in _prompts()]
    assert 20 < shared_prefix(tokens) < min(map(len, tokens))  # non-vacuity: the cached path does run
    for batch_size in (1, 3):  # 3: a batch of 3 and a batch of 1, each padded differently
        reused = label_word_scores(tiny_llama, tokenizer, _prompts(), words, batch_size=batch_size)
        whole = label_word_scores(tiny_llama, tokenizer, _prompts(), words, batch_size=batch_size, reuse_prefix=False)
        assert reused.shape == (4, 3)
        torch.testing.assert_close(reused.sum(-1), torch.ones(4))
        torch.testing.assert_close(reused, whole, rtol=1e-4, atol=1e-5)  # float32, a different order of sums
    # one prompt at a time, no padding, no prefix: the same again
    alone = torch.cat([label_word_scores(tiny_llama, tokenizer, [p], words, reuse_prefix=False) for p in _prompts()])
    torch.testing.assert_close(reused, alone, rtol=1e-4, atol=1e-5)


def test_scores_equal_a_plain_forward(tiny_llama, tokenizer):
    prompt = _prompts()[1]
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
    with torch.no_grad():
        want = tiny_llama(input_ids=ids).logits[0, -1].softmax(-1)
    label_ids = label_token_ids(tokenizer, [" negative", " positive"])
    raw = label_word_scores(tiny_llama, tokenizer, [prompt, prompt], [" negative", " positive"], renormalize=False)
    torch.testing.assert_close(raw[0], want[label_ids], rtol=1e-4, atol=1e-7)


def test_scores_restore_training_mode(tiny_llama, tokenizer):
    tiny_llama.train()
    label_word_scores(tiny_llama, tokenizer, _prompts()[:2], [" no", " yes"])
    assert tiny_llama.training
    tiny_llama.eval()


def test_smollm2_prefers_the_obvious_label(tokenizer):
    model = load_smollm2()
    prompts = _prompts()[:2]  # "I love this", "worst service ever, never again"
    scores = label_word_scores(model, tokenizer, prompts, [" negative", " positive"])
    assert scores[0, 1] > 0.5 > scores[1, 1]
    raw = label_word_scores(model, tokenizer, prompts, [" negative", " positive"], renormalize=False)
    assert ((raw.sum(-1) > 0.5) & (raw.sum(-1) <= 1)).all()  # the labels get most of the mass after "Sentiment:"


@pytest.mark.parametrize(("prompts", "kwargs", "match"), [
    ([], {}, "non-empty"), ("one string", {}, "non-empty"), (["x", ""], {}, "empty"),
    (["x"], {"batch_size": 0}, "batch_size"),
])
def test_scores_bad_inputs(tiny_llama, tokenizer, prompts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_word_scores(tiny_llama, tokenizer, prompts, [" a", " b"], **kwargs)
