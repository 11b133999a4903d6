"""Token- and span-level tasks built from the tweets, for BERT's token-classification and question-answering heads.

Entities are found by rule (:func:`find_entities`): @mentions, #hashtags and links. :func:`tag_tokens` turns them
into BIO labels aligned with WordPiece tokens (the CoNLL-2003 NER setting of Devlin et al. 2019, §5.3), and
:func:`span_examples` into SQuAD-style questions "which #hashtag is in this tweet?" with start/end token positions
(§4.2). Chapter "Fine-tuning and its memory bill" (task_heads). Conventions: character spans are ``[start, end)``;
labels are ids into ``ENTITY_LABELS``, with ``objectives.IGNORE_INDEX`` (-100) where a token has no target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from lab_utils.objectives import IGNORE_INDEX

__all__ = [
    "CONTINUATIONS",
    "DEFAULT_QUESTION",
    "ENTITY_LABELS",
    "ENTITY_TYPES",
    "ID2LABEL",
    "LABEL2ID",
    "bio_entities",
    "find_entities",
    "span_examples",
    "tag_tokens",
    "tagging_scores",
]

ENTITY_TYPES = ("MENTION", "HASHTAG", "URL")
ENTITY_LABELS = ("O",) + tuple(f"{bio}-{kind}" for kind in ENTITY_TYPES for bio in ("B", "I"))
LABEL2ID = {label: i for i, label in enumerate(ENTITY_LABELS)}
ID2LABEL = dict(enumerate(ENTITY_LABELS))
CONTINUATIONS = ("I", "ignore")  # how tag_tokens labels the continuation pieces (##...) of a word
DEFAULT_QUESTION = "Which hashtag is in the tweet?"

# A link: "http(s):" and everything up to the next space (t.co links, and ones the 140-character limit cut after
# the colon: "http:/", "http://t."), or a scheme cut short at the very end of the tweet ("... #tombrady htt").
_URL = re.compile(r"\bhttps?:\S*|\b(?:https?|htt)\s*$", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}'\""  # punctuation after a link belongs to the sentence: "see http://t.co/x."
# Twitter's rules: a handle is letters, digits and underscores; a hashtag needs a letter ("#1" is not one).
# Neither may follow a word character: "me@mail.com" holds no mention, "a#b" no hashtag.
_MENTION = re.compile(r"(?<!\w)@[A-Za-z0-9_]+")
_HASHTAG = re.compile(r"(?<![\w&#])#\w*[^\W\d_]\w*")


def find_entities(text: str) -> list[tuple[int, int, str]]:
    """The @mentions, #hashtags and links of a text, as character spans sorted by start.

    Links are found first (trailing punctuation excluded); a mention or hashtag inside a link is not counted.

    >>> find_entities("@united_air lost my bag #fail http://t.co/x1.")
    [(0, 11, 'MENTION'), (24, 29, 'HASHTAG'), (30, 44, 'URL')]

    Args:
        text: one tweet.

    Returns:
        ``[(start, end, type), ...]``: ``text[start:end]`` is the entity, ``type`` one of ``ENTITY_TYPES``.

    Raises:
        TypeError: if ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (one tweet), got {type(text).__name__}")
    spans = []
    for m in _URL.finditer(text):
        url = m.group().rstrip()
        while len(url) > 4 and url[-1] in _URL_TRAILING:  # keep at least "http"
            url = url[:-1]
        spans.append((m.start(), m.start() + len(url), "URL"))
    for kind, pattern in (("MENTION", _MENTION), ("HASHTAG", _HASHTAG)):
        for m in pattern.finditer(text):
            if not any(s < m.end() and m.start() < e for s, e, _ in spans):  # not inside a link
                spans.append((m.start(), m.end(), kind))
    return sorted(spans)


def _check_texts(texts: Iterable[str], tokenizer, max_length: int, min_length: int, why: str) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of str (a batch of tweets), got {type(texts).__name__}")
    texts = list(texts)  # e.g. a datasets Column
    if len(texts) == 0:
        raise ValueError("texts is empty: give at least one tweet")
    if bad := [type(t).__name__ for t in texts if not isinstance(t, str)]:
        raise TypeError(f"every text must be a str, got {bad[0]}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the tokenizer must be a fast (Rust) tokenizer: labels are aligned with its offset "
                         "mapping; load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < min_length:
        raise ValueError(f"max_length must be an int >= {min_length} ({why}), got {max_length!r}")
    return texts


def _entity_of(start: int, end: int, entities: list[tuple[int, int, str]]) -> int | None:
    """Index of the entity whose characters overlap the token's ``[start, end)``, or None."""
    for i, (s, e, _) in enumerate(entities):
        if start < e and s < end:
            return i
    return None


def tag_tokens(texts: Iterable[str], tokenizer, *, max_length: int, continuation: str = "I") -> dict[str, Tensor]:
    """Tokenize tweets and label each WordPiece token with its BIO entity label (``ENTITY_LABELS`` ids).

    The first token of an entity gets ``B-type``; its other tokens ``I-type``; tokens outside entities ``O``.
    BERT's pre-tokenizer splits at punctuation, so an entity spans several words: ``@united_air`` is ``@``
    (B-MENTION), ``united``, ``_``, ``air`` (I-MENTION). A word's continuation pieces (``def ##late ##gate``: the
    ``##`` pieces) get ``I-type`` (or ``O``) like the rest with ``continuation="I"``, or ``IGNORE_INDEX`` with
    ``continuation="ignore"`` (only the first piece of each word is scored, as in the BERT paper's NER, §5.3);
    an entity's first token is always labelled. ``[CLS]``, ``[SEP]`` and padding get ``IGNORE_INDEX``.

    Args:
        texts: the tweets, a list (or other iterable, e.g. a datasets column) of B str.
        tokenizer: a fast tokenizer (offset mappings), e.g. ``assets.load_minilm_tokenizer()``.
        max_length: tokens per tweet at most, special tokens included (longer tweets are truncated).
        continuation: ``"I"`` or ``"ignore"``, see above.

    Returns:
        ``input_ids``, ``attention_mask``, ``labels``: long tensors ``(B, T)``, padded to the longest tweet.

    Raises:
        TypeError: if ``texts`` is not a list of str.
        ValueError: if ``texts`` is empty, the tokenizer is not fast, ``max_length < 3`` or an unknown
            ``continuation``.
    """
    texts = _check_texts(texts, tokenizer, max_length, min_length=3, why="[CLS], one token, [SEP]")
    if continuation not in CONTINUATIONS:
        raise ValueError(f"continuation must be one of {CONTINUATIONS}, got {continuation!r}")
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_offsets_mapping=True,
                    return_tensors="pt")
    labels = torch.full_like(enc["input_ids"], IGNORE_INDEX)  # (B, T)
    for b, text in enumerate(texts):
        entities = find_entities(text)
        previous_word, previous_entity = None, None
        for t, word in enumerate(enc.word_ids(b)):
            if word is None:  # [CLS], [SEP], padding
                continue
            start, end = enc["offset_mapping"][b, t].tolist()
            entity = _entity_of(start, end, entities)
            if entity is None:
                label = "O"
            else:
                label = ("I-" if entity == previous_entity else "B-") + entities[entity][2]
            if continuation == "ignore" and word == previous_word and not label.startswith("B-"):
                labels[b, t] = IGNORE_INDEX
            else:
                labels[b, t] = LABEL2ID[label]
            previous_word, previous_entity = word, entity
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def span_examples(texts: Iterable[str], tokenizer, *, question: str = DEFAULT_QUESTION, entity: str = "HASHTAG",
                  max_length: int, return_offsets: bool = False) -> dict[str, Tensor]:
    """Extractive question answering from tweets: "[CLS] question [SEP] tweet [SEP]" -> the span of the first entity.

    The answer is the first entity of type ``entity`` in the tweet (``find_entities``), ``#`` or ``@`` included.
    Tweets without one are dropped, and so are tweets whose answer truncation cuts (only the tweet is truncated,
    never the question): every example has an answer, as in SQuAD 1.1.

    Args:
        texts: the tweets, a list (or other iterable, e.g. a datasets column) of str.
        tokenizer: a fast tokenizer (offset mappings), e.g. ``assets.load_minilm_tokenizer()``.
        question: the question, first segment (``token_type_ids`` 0); the tweet is the second (1).
        entity: which entity type answers, one of ``ENTITY_TYPES``.
        max_length: tokens per example at most, the question and three special tokens included.
        return_offsets: also return ``offset_mapping`` (N, T, 2), character spans in the tweet ((0, 0) outside
            it), and ``example_index`` (N,), the index in ``texts`` of each example: pop them before calling the
            model.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` long ``(N, T)``; ``start_positions`` and
        ``end_positions`` long ``(N,)``: indices of the answer's first and last tokens (inclusive), so
        ``text[offset_mapping[n, start][0]:offset_mapping[n, end][1]]`` is the entity. N <= len(texts).

    Raises:
        TypeError: if ``texts`` is not a list of str.
        ValueError: empty ``texts``, slow tokenizer, unknown ``entity``, ``max_length`` too short for the question,
            or no tweet with an answer.
    """
    if entity not in ENTITY_TYPES:
        raise ValueError(f"entity must be one of {ENTITY_TYPES}, got {entity!r}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty str, got {question!r}")
    n_question = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    texts = _check_texts(texts, tokenizer, max_length, min_length=n_question + 4,
                         why=f"the question's {n_question} tokens, [CLS], [SEP], one tweet token, [SEP]")
    answers = {i: next((s, e) for s, e, kind in find_entities(t) if kind == entity)
               for i, t in enumerate(texts) if any(kind == entity for *_, kind in find_entities(t))}
    if not answers:
        raise ValueError(f"no text contains a {entity}: nothing to ask about")
    index = list(answers)
    enc = tokenizer([question] * len(index), [texts[i] for i in index], truncation="only_second",
                    max_length=max_length, padding=True, return_offsets_mapping=True, return_tensors="pt")
    keep, starts, ends = [], [], []
    for n, i in enumerate(index):
        s, e = answers[i]
        in_tweet = [t for t, seq in enumerate(enc.sequence_ids(n)) if seq == 1]
        offsets = enc["offset_mapping"][n].tolist()
        covering = [t for t in in_tweet if offsets[t][0] < e and s < offsets[t][1]]
        if covering and offsets[in_tweet[-1]][1] >= e:  # the whole answer survived truncation
            keep.append(n)
            starts.append(covering[0])
            ends.append(covering[-1])
    if not keep:
        raise ValueError(f"truncation to max_length={max_length} cut every answer: raise max_length")
    rows = torch.tensor(keep)
    out = {k: enc[k][rows] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["start_positions"], out["end_positions"] = torch.tensor(starts), torch.tensor(ends)
    if return_offsets:
        is_tweet = enc["token_type_ids"][rows].unsqueeze(-1) == 1  # the question's offsets point into it: zero them
        out["offset_mapping"] = enc["offset_mapping"][rows] * is_tweet  # (N, T, 2)
        out["example_index"] = torch.tensor([index[n] for n in keep])
    return out


def bio_entities(label_ids: Sequence[int]) -> list[tuple[int, int, str]]:
    """The entities of one BIO sequence of ``ENTITY_LABELS`` ids, as token spans ``(start, end, type)``, end
    exclusive. Positions labelled ``IGNORE_INDEX`` are skipped (they continue what precedes them). As conlleval
    and seqeval (default mode): an ``I-type`` that does not follow its own type starts an entity."""
    entities, start, kind, last = [], None, None, None
    for t, i in enumerate(int(x) for x in label_ids):
        if i == IGNORE_INDEX:
            continue
        label = ID2LABEL[i]
        if kind is not None and label != f"I-{kind}":  # the open entity ends before t
            entities.append((start, last + 1, kind))
            kind = None
        if label != "O" and kind is None:
            start, kind = t, label[2:]
        last = t
    if kind is not None:
        entities.append((start, last + 1, kind))
    return entities


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p, r = tp / n_pred if n_pred else 0.0, tp / n_gold if n_gold else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def tagging_scores(predictions: Tensor, labels: Tensor) -> dict[str, float]:
    """Token-level and entity-level scores of BIO predictions, over the positions ``labels`` scores.

    Token level: micro precision/recall/F1 of the entity labels (every label but ``O``; a token counts as right
    when its predicted label equals the gold one). Entity level: an entity is right when its token span and type
    both match exactly (CoNLL's measure); F1 per type too.

    Args:
        predictions: predicted label ids ``(B, T)`` (e.g. ``logits.argmax(-1)``).
        labels: gold ids ``(B, T)`` with ``IGNORE_INDEX`` at unscored positions (special tokens, padding).

    Returns:
        ``token_precision``, ``token_recall``, ``token_f1``, ``entity_precision``, ``entity_recall``,
        ``entity_f1``, ``{type}_f1`` for each of ``ENTITY_TYPES``, ``n_entities`` (gold entities).

    Raises:
        ValueError: if the shapes differ.
    """
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} must have the "
                         "same shape (B, T)")
    scored = labels != IGNORE_INDEX
    pred, gold = predictions[scored].cpu(), labels[scored].cpu()
    o = LABEL2ID["O"]
    scores = dict(zip(("token_precision", "token_recall", "token_f1"),
                      _prf(int(((pred == gold) & (gold != o)).sum()), int((pred != o).sum()), int((gold != o).sum())),
                      strict=True))
    predictions = predictions.masked_fill(~scored, IGNORE_INDEX)  # read predictions where labels are scored only
    pairs = [(set(bio_entities(p)), set(bio_entities(g))) for p, g in zip(predictions.tolist(), labels.tolist(),
                                                                          strict=True)]
    for kind in (None, *ENTITY_TYPES):
        def keep(spans, kind=kind):
            return {s for s in spans if kind is None or s[2] == kind}

        tp = sum(len(keep(p) & keep(g)) for p, g in pairs)
        prf = _prf(tp, sum(len(keep(p)) for p, _ in pairs), sum(len(keep(g)) for _, g in pairs))
        if kind is None:
            scores.update(entity_precision=prf[0], entity_recall=prf[1], entity_f1=prf[2])
        else:
            scores[f"{kind}_f1"] = prf[2]
    scores["n_entities"] = sum(len(g) for _, g in pairs)
    return scores
