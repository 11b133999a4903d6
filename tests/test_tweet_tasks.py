"""Tests for lab_utils.tweet_tasks: entities found by rule, BIO labels aligned with WordPiece tokens, span examples
whose positions decode back to the hashtag, the scores, and bad inputs. Uses the real MiniLM tokenizer (offline)."""

import pytest
import torch

from lab_utils import assets
from lab_utils.objectives import IGNORE_INDEX
from lab_utils.tweet_tasks import (
    ENTITY_LABELS,
    ENTITY_TYPES,
    ID2LABEL,
    LABEL2ID,
    bio_entities,
    find_entities,
    span_examples,
    tag_tokens,
    tagging_scores,
)


@pytest.fixture(scope="module")
def tok():
    return assets.load_minilm_tokenizer()


def texts_of(text):
    return [(text[s:e], kind) for s, e, kind in find_entities(text)]


# ---------------------------------------------------------------- find_entities


def test_labels_are_bio_over_the_three_types():
    assert ENTITY_LABELS == ("O", "B-MENTION", "I-MENTION", "B-HASHTAG", "I-HASHTAG", "B-URL", "I-URL")
    assert ENTITY_TYPES == ("MENTION", "HASHTAG", "URL")
    assert all(ID2LABEL[LABEL2ID[label]] == label for label in ENTITY_LABELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@united_air lost my bag", [("@united_air", "MENTION")]),  # underscores belong to the handle
        ("RT @JetBlue: thanks!", [("@JetBlue", "MENTION")]),  # the colon does not
        (".@united, why?", [("@united", "MENTION")]),  # the "dot-mention" of replies
        ("mail me@example.com", []),  # an e-mail address is no mention
        ("#DeflateGate's fault", [("#DeflateGate", "HASHTAG")]),  # apostrophe ends the hashtag
        ("#Coachella2015 #ACDC!", [("#Coachella2015", "HASHTAG"), ("#ACDC", "HASHTAG")]),
        ("gate #22 then flight #1589", []),  # numbers are not hashtags (Twitter needs a letter)
        ("a#b and # alone", []),
        ("see http://t.co/xRlXMonUnd.", [("http://t.co/xRlXMonUnd", "URL")]),  # trailing period excluded
        ("HTTPS://t.co/AbC?", [("HTTPS://t.co/AbC", "URL")]),
        ("[http://t.co/6X1RQ3qWK2] yes", [("http://t.co/6X1RQ3qWK2", "URL")]),  # brackets excluded
        ("...http://t.co/x1", [("http://t.co/x1", "URL")]),
        ("link http://t.co/a#b@c", [("http://t.co/a#b@c", "URL")]),  # '#' and '@' inside a link are the link's
        ("cut short by the limit http:/", [("http:/", "URL")]),  # truncated links
        ("cut short by the limit http://t.", [("http://t", "URL")]),
        ("cut short by the limit #tombrady htt", [("#tombrady", "HASHTAG"), ("htt", "URL")]),
        ("cut short http: ", [("http", "URL")]),
        ("matt and http are words", []),  # "http" mid-tweet without a colon is just a word
        ("", []),
    ],
)
def test_find_entities_on_hand_written_tweets(text, expected):
    assert texts_of(text) == expected


def test_find_entities_returns_sorted_character_spans():
    text = "#fail by @united http://t.co/x #again"
    spans = find_entities(text)
    assert spans == sorted(spans)
    assert [kind for *_, kind in spans] == ["HASHTAG", "MENTION", "URL", "HASHTAG"]
    assert all(text[s:e] and not text[s:e][0].isspace() for s, e, _ in spans)


def test_find_entities_rejects_a_non_string():
    with pytest.raises(TypeError, match="text must be a str"):
        find_entities(["@united"])


# ---------------------------------------------------------------- tag_tokens


def labelled(enc, tok, b=0):
    """(token, label) for the tokens of row b, '-' where the label is IGNORE_INDEX."""
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][b])
    return [(t, ID2LABEL.get(int(y), "-")) for t, y in zip(tokens, enc["labels"][b], strict=True)]


def test_tag_tokens_bio_on_word_pieces(tok):
    enc = tag_tokens(["@united_air ok #DeflateGate"], tok, max_length=32)
    assert labelled(enc, tok) == [
        ("[CLS]", "-"),
        ("@", "B-MENTION"), ("united", "I-MENTION"), ("_", "I-MENTION"), ("air", "I-MENTION"),
        ("ok", "O"),
        ("#", "B-HASHTAG"), ("def", "I-HASHTAG"), ("##late", "I-HASHTAG"), ("##gate", "I-HASHTAG"),
        ("[SEP]", "-"),
    ]


def test_continuation_pieces_can_be_ignored(tok):
    enc = tag_tokens(["@united_air ok #DeflateGate"], tok, max_length=32, continuation="ignore")
    got = labelled(enc, tok)
    assert got[7:10] == [("def", "I-HASHTAG"), ("##late", "-"), ("##gate", "-")]  # first piece kept, ## ignored
    assert got[1:5] == [("@", "B-MENTION"), ("united", "I-MENTION"), ("_", "I-MENTION"), ("air", "I-MENTION")]


def test_adjacent_entities_each_start_with_b(tok):
    enc = tag_tokens(["#a #b"], tok, max_length=16)
    assert [y for _, y in labelled(enc, tok)[1:-1]] == ["B-HASHTAG", "I-HASHTAG", "B-HASHTAG", "I-HASHTAG"]


def test_url_tokens_and_trailing_punctuation(tok):
    enc = tag_tokens(["go http://t.co/ab."], tok, max_length=32)
    got = labelled(enc, tok)
    assert got[2] == ("http", "B-URL")
    assert got[-2] == (".", "O")  # the sentence's period, not the link's
    assert {y for _, y in got[3:-2]} == {"I-URL"}


def test_special_tokens_and_padding_are_ignored(tok):
    texts = ["@a hello there my friend #b", "hi"]
    enc = tag_tokens(texts, tok, max_length=32)
    B, T = enc["input_ids"].shape
    assert enc["labels"].shape == enc["attention_mask"].shape == (B, T) == (2, T)
    special = torch.isin(enc["input_ids"], torch.tensor(tok.all_special_ids))  # [CLS], [SEP], [PAD]
    assert special.any() and (enc["attention_mask"] == 0).any()  # non-vacuity: the batch has padding
    assert (enc["labels"][special] == IGNORE_INDEX).all()
    assert (enc["labels"][~special] != IGNORE_INDEX).all()  # every real token has a label (continuation="I")
    assert enc["labels"].dtype == torch.long


def test_truncation_keeps_labels_aligned(tok):
    text = "a b c d e @someone f"
    full = tag_tokens([text], tok, max_length=64)
    cut = tag_tokens([text], tok, max_length=8)  # [CLS] a b c d e @ [SEP]
    assert cut["input_ids"].shape[1] == 8
    assert torch.equal(cut["labels"][0, :-1], full["labels"][0, :7])
    assert labelled(cut, tok)[-2] == ("@", "B-MENTION")


def test_labels_agree_with_find_entities_on_real_tweets(tok):
    texts = ["RT @ainissaramirez: the science behind #DeflateGate in this @TIME video http://t.co/m15fwlWoNt. Can",
             "@SouthwestAir crew on flight 206 is awesome! #canthurtasking", "no entity here at all"]
    enc = tag_tokens(texts, tok, max_length=64)
    for b, text in enumerate(texts):
        starts = [int(y) for y in enc["labels"][b] if y != IGNORE_INDEX and ID2LABEL[int(y)].startswith("B-")]
        assert [ID2LABEL[y][2:] for y in starts] == [kind for *_, kind in find_entities(text)]


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ("@united hi", {}, TypeError, "list of str"),
        ([], {}, ValueError, "texts is empty"),
        (["ok", 3], {}, TypeError, "every text must be a str"),
        (["ok"], {"max_length": 2}, ValueError, "max_length must be an int >= 3"),
        (["ok"], {"max_length": 8.0}, ValueError, "max_length must be an int"),
        (["ok"], {"continuation": "B"}, ValueError, "continuation must be one of"),
    ],
)
def test_tag_tokens_bad_inputs(tok, texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        tag_tokens(texts, tok, **{"max_length": 16, **kwargs})


def test_any_iterable_of_texts_is_accepted(tok):
    texts = ["@a #b", "http://t.co/x"]
    ref = tag_tokens(texts, tok, max_length=16)
    for other in (tuple(texts), iter(texts)):
        got = tag_tokens(other, tok, max_length=16)
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert span_examples(iter(texts), tok, max_length=32)["input_ids"].shape[0] == 1


def test_tag_tokens_needs_a_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        tag_tokens(["ok"], Slow(), max_length=8)


# ---------------------------------------------------------------- span_examples


TWEETS = [
    "Can the #Patriots lose? #DeflateGate",  # two hashtags: the first one is the answer
    "@united no hashtag here",  # dropped
    "Ok I take it back #CoachellaLineup's bands",
    "flight #1589 is late",  # a number, no hashtag: dropped
]


def test_span_positions_decode_back_to_the_hashtag(tok):
    ex = span_examples(TWEETS, tok, max_length=48, return_offsets=True)
    assert ex["example_index"].tolist() == [0, 2]
    for n, i in enumerate(ex["example_index"].tolist()):
        start, end = int(ex["start_positions"][n]), int(ex["end_positions"][n])
        assert 0 < start <= end
        first = next(TWEETS[i][s:e] for s, e, kind in find_entities(TWEETS[i]) if kind == "HASHTAG")
        offsets = ex["offset_mapping"][n]
        assert TWEETS[i][offsets[start, 0]:offsets[end, 1]] == first
        assert tok.decode(ex["input_ids"][n, start:end + 1]).replace(" ", "") == first.lower()
        assert (ex["token_type_ids"][n, start:end + 1] == 1).all()  # the answer lies in the tweet segment


def test_span_examples_layout_question_then_tweet(tok):
    ex = span_examples(TWEETS[:1], tok, max_length=48)
    assert set(ex) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    text = tok.decode(ex["input_ids"][0])
    assert text.startswith("[CLS] which hashtag is in the tweet? [SEP] can the # patriots")
    n_question = len(tok("Which hashtag is in the tweet?", add_special_tokens=False)["input_ids"])
    assert (ex["token_type_ids"][0, :n_question + 2] == 0).all()  # [CLS] question [SEP]
    assert ex["start_positions"].shape == ex["end_positions"].shape == (1,)
    assert ex["start_positions"].dtype == torch.long


def test_other_entity_and_question(tok):
    ex = span_examples(["thanks @JetBlue and @united"], tok, max_length=32, entity="MENTION",
                       question="Who is addressed?", return_offsets=True)
    start, end = int(ex["start_positions"][0]), int(ex["end_positions"][0])
    o = ex["offset_mapping"][0]
    assert "thanks @JetBlue and @united"[o[start, 0]:o[end, 1]] == "@JetBlue"


def test_truncated_answers_are_dropped(tok):
    text = "one two three four five six seven eight nine ten #late"
    assert len(span_examples([text], tok, max_length=64)["input_ids"]) == 1
    with pytest.raises(ValueError, match="truncation .* cut every answer"):
        span_examples([text], tok, max_length=20)


def test_offsets_outside_the_tweet_are_zero(tok):
    ex = span_examples(TWEETS, tok, max_length=48, return_offsets=True)
    outside = ex["token_type_ids"] == 0
    assert (ex["offset_mapping"][outside] == 0).all()
    assert (ex["offset_mapping"][~outside & (ex["attention_mask"] == 1)].sum(-1) > 0).any()


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        (["no answer", "@only"], {}, ValueError, "no text contains a HASHTAG"),
        ("#solo", {}, TypeError, "list of str"),
        (["#ok"], {"entity": "EMOJI"}, ValueError, "entity must be one of"),
        (["#ok"], {"question": ""}, ValueError, "question must be a non-empty str"),
        (["#ok"], {"max_length": 10}, ValueError, r"max_length must be an int >= 14 \(the question's 10 tokens"),
    ],
)
def test_span_examples_bad_inputs(tok, texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        span_examples(texts, tok, **{"max_length": 32, **kwargs})


# ---------------------------------------------------------------- bio_entities and tagging_scores


def ids(*labels):
    return [IGNORE_INDEX if y == "-" else LABEL2ID[y] for y in labels]


def test_bio_entities_spans():
    assert bio_entities(ids("-", "B-MENTION", "I-MENTION", "O", "B-URL", "-", "I-URL", "-")) == [
        (1, 3, "MENTION"), (4, 7, "URL")]
    assert bio_entities(ids("B-HASHTAG", "B-HASHTAG", "I-HASHTAG")) == [(0, 1, "HASHTAG"), (1, 3, "HASHTAG")]
    assert bio_entities(ids("O", "I-URL", "I-URL", "I-HASHTAG")) == [(1, 3, "URL"), (3, 4, "HASHTAG")]  # lenient
    assert bio_entities(ids("O", "O")) == []


def test_tagging_scores_perfect_and_partial():
    gold = torch.tensor([ids("-", "B-MENTION", "I-MENTION", "O", "B-HASHTAG", "I-HASHTAG", "-")])
    perfect = tagging_scores(gold.clamp(min=0), gold)  # predictions at ignored positions do not count
    assert perfect["token_f1"] == perfect["entity_f1"] == perfect["MENTION_f1"] == 1.0
    assert perfect["n_entities"] == 2
    pred = torch.tensor([ids("O", "B-MENTION", "O", "O", "B-HASHTAG", "I-HASHTAG", "O")])  # mention cut short
    s = tagging_scores(pred, gold)
    assert s["token_precision"] == 1.0 and s["token_recall"] == 3 / 4
    assert s["entity_precision"] == s["entity_recall"] == 1 / 2
    assert s["MENTION_f1"] == 0.0 and s["HASHTAG_f1"] == 1.0 and s["URL_f1"] == 0.0
    assert s["token_f1"] == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_tagging_scores_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        tagging_scores(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
