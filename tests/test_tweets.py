import numpy as np
import pandas as pd
import pytest

from lab_utils import tweets

MOJIBAKE = ("Ã", "Â", "Õ", "ä", "ô", "_Ñ_", "&amp;", "\r", "\ufffd")


@pytest.fixture(scope="module")
def clean():
    return tweets.clean_tweets()


def test_raw_corpus_has_the_documented_defects():
    raw = tweets.raw_tweets()
    assert len(raw) == 38_158
    assert raw["text"].duplicated().sum() == 915  # extra copies...
    assert (raw["text"].value_counts() > 1).sum() == 276  # ...of this many distinct texts (the docstring says so)
    assert raw["text"].str.contains("|".join(MOJIBAKE)).sum() > 1000  # otherwise the next test is vacuous


def test_cleaning_removes_mojibake_and_duplicates(clean):
    assert not clean["text"].str.contains("|".join(MOJIBAKE)).any()
    assert clean["text"].map(str.isascii).all()
    assert not clean["text"].duplicated().any()
    assert not clean["text"].map(tweets.normalise_key).duplicated().any()
    assert (clean["text"].str.len() > 0).all()
    assert list(clean.columns) == ["text", "label", "confidence"]


def test_dedup_report_adds_up(clean):
    report = tweets.dedup_report()
    raw = tweets.raw_tweets()
    assert report["raw rows"] == len(raw)
    assert (report["extra exact copies"], report["distinct texts repeated"]) == (915, 276)
    removed = report["empty after cleaning"] + report[report.index.str.startswith("removed:")].sum()
    assert report["raw rows"] - removed == report["final rows"] == len(clean)
    # Each step does something on the real data, or the report (and the dedup) would be vacuous.
    assert (report[["removed: same cleaned text", "removed: same normalised key", "removed: truncated copy",
                    "copies with conflicting labels"]] > 100).all()


@pytest.mark.parametrize("text, key", [
    ("RT @user_1: Great Flight!! http://t.co/AbC123", "greatflight"),
    ("@united @annricord Great   flight... #united", "greatflightunited"),
    ("Great flight http://t.", "greatflight"),  # a link cut after the colon
    ("#tombrady figure $24.99 htt", "tombradyfigure2499"),  # a retweet cut inside the scheme
    ("I'm at http://t.co/x?a=@b, ugh", "imatugh"),  # "@" inside a link is not a mention; "ugh" keeps its "h"
    ("via @nyc_oz: Wicked.", "viawicked"),
])
def test_normalise_key_examples(text, key):
    assert tweets.normalise_key(text) == key


def test_normalise_key_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str"):
        tweets.normalise_key(3)


def _frame(rows):
    return pd.DataFrame(rows, columns=["sentiment", "confidence", "text"])


def test_copies_are_settled_by_vote_then_confidence():
    clean = tweets.clean_tweets(_frame([
        ("negative", 0.6, "@a the flight was late"),  # majority label wins over the most confident copy
        ("positive", 1.0, "RT @b: The flight was LATE!"),
        ("negative", 0.7, "@c the flight was late http://t.co/x"),
        ("negative", 0.5, "lost my bag"),  # a tie in votes: the most confident copy decides
        ("neutral", 0.9, "@d Lost my bag."),
        ("positive", float("nan"), "nice crew"),  # a missing confidence ranks last
        ("neutral", 0.4, "Nice crew!"),
    ]))
    assert clean["text"].tolist() == ["@c the flight was late http://t.co/x", "@d Lost my bag.", "Nice crew!"]
    assert clean["label"].tolist() == [0, 1, 1]
    assert clean.index.tolist() == [0, 1, 2]


def test_truncated_copies_join_the_full_tweet():
    full = "Today's schedule: internship training, then hours in an online waiting room for #Coachella2015"
    cut = "RT @alexafayee: " + full[:90]
    assert len(tweets.normalise_key(cut)) >= tweets.MIN_PREFIX
    clean = tweets.clean_tweets(_frame([("negative", 1.0, full), ("negative", 0.5, cut),
                                        ("neutral", 1.0, "Today's schedule"), ("neutral", 1.0, "Today")]))
    assert clean["text"].tolist() == [full, "Today's schedule", "Today"]  # short prefixes are different tweets


def test_clean_tweets_names_missing_columns():
    with pytest.raises(ValueError, match="missing \\['confidence'\\]"):
        tweets.clean_tweets(pd.DataFrame({"sentiment": ["neutral"], "text": ["hi"]}))


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


def _keys(split):
    return {tweets.normalise_key(t) for t in split["text"]}


@pytest.mark.parametrize("binary", [False, True], ids=["3-class", "binary"])
def test_no_normalised_key_in_two_splits(binary):
    data = tweets.load_tweets(binary=binary)
    keys = {name: _keys(part) for name, part in data.items()}
    assert sum(map(len, keys.values())) == sum(map(len, data.values()))  # one row per key within a split, too
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not keys[a] & keys[b], (a, b)
    other = tweets.load_tweets(binary=not binary)  # across views: a binary test tweet is no 3-class train tweet
    assert not keys["test"] & _keys(other["train"])


def test_splitting_before_dedup_would_leak():
    # Non-vacuity of the test above: split the rows without de-duplication and keys do straddle splits.
    rows = tweets._cleaned(None)
    split = tweets.stratified_split(rows["label"].to_numpy(), seed=0)
    train, val = (set(rows["key"].iloc[split[name]]) for name in ("train", "validation"))
    assert len(train & val) > 100


def test_split_rejects_bad_labels():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        tweets.stratified_split(np.array([]))
