import numpy as np
import pytest

from lab_utils import tweets

MOJIBAKE = ("Ã", "Â", "Õ", "ä", "ô", "_Ñ_", "&amp;", "\r", "\ufffd")


@pytest.fixture(scope="module")
def clean():
    return tweets.clean_tweets()


def test_raw_corpus_has_the_documented_defects():
    raw = tweets.raw_tweets()
    assert len(raw) == 38_158
    assert raw["text"].duplicated().sum() == 915
    assert raw["text"].str.contains("|".join(MOJIBAKE)).sum() > 1000  # otherwise the next test is vacuous


def test_cleaning_removes_mojibake_and_duplicates(clean):
    assert not clean["text"].str.contains("|".join(MOJIBAKE)).any()
    assert clean["text"].map(str.isascii).all()
    assert not clean["text"].duplicated().any()
    assert (clean["text"].str.len() > 0).all()
    assert 36_000 < len(clean) < 38_158 - 915


@pytest.mark.parametrize("raw, expected", [
    ("I don\xd5\xa2_\x8a\xce_\x86\xa2t want it", "I don't want it"),  # debris in a contraction was an apostrophe
    ("cats &amp; dogs\r\rnow", "cats & dogs now"),
    ("Google car! \xd5\x82\x8f\xbe\xeb__\xd1_ http://t.co/x", "Google car! http://t.co/x"),
    ("@Rachel__Nichols hi", "@Rachel__Nichols hi"),  # underscores in handles survive
])
def test_clean_text_examples(raw, expected):
    assert tweets.clean_text(raw) == expected


def test_clean_text_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str"):
        tweets.clean_text(None)


def test_splits_are_disjoint_stratified_and_deterministic(clean):
    labels = clean["label"].to_numpy()
    split = tweets.stratified_split(labels, seed=0)
    assert sum(len(v) for v in split.values()) == len(labels)
    assert len(np.unique(np.concatenate(list(split.values())))) == len(labels)
    overall = np.bincount(labels) / len(labels)
    for name, idx in split.items():
        share = np.bincount(labels[idx], minlength=3) / len(idx)
        assert np.abs(share - overall).max() < 0.002, name  # per-class rounding moves a share by < 1/len(idx)
        assert abs(len(idx) / len(labels) - tweets.SPLIT_FRACTIONS[name]) < 0.001
    again = tweets.stratified_split(labels, seed=0)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["test"], tweets.stratified_split(labels, seed=1)["test"])


def test_dataset_dicts():
    three = tweets.load_tweets()
    two = tweets.load_tweets(binary=True)
    assert list(three) == ["train", "validation", "test"]
    assert three["train"].features["label"].names == list(tweets.LABELS)
    assert two["train"].features["label"].names == ["negative", "positive"]
    assert set(two["train"]["label"]) == {0, 1}
    for name in three:  # the binary view is the 3-class split without neutral tweets: no leakage across views
        kept = {t for t, y in zip(three[name]["text"], three[name]["label"], strict=True) if y != 1}
        assert set(two[name]["text"]) == kept
    assert not set(two["test"]["text"]) & set(three["train"]["text"])


def test_split_rejects_bad_labels():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        tweets.stratified_split(np.array([]))
