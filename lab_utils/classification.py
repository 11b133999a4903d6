"""Evaluating a classifier honestly, without scikit-learn: metrics, a confidence interval, a baseline.

Labels are integers ``0 .. n_classes-1``. The confusion matrix has one row per *true* class and one column per
*predicted* class (scikit-learn's convention). F1 follows the usual definition 2TP / (2TP + FP + FN), 0 for a class
that is neither present nor predicted; the interval is Wilson's score interval (Wilson 1927). Used in chapter
"Fine-tuning and its memory bill" (full fine-tuning with ``transformers.Trainer``); needs only NumPy and torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

__all__ = ["TokenizedSplit", "accuracy", "compute_metrics", "confusion_matrix", "f1_scores", "majority_baseline",
           "tokenize_split", "wilson_interval"]


def _labels(values: Any, name: str) -> np.ndarray:
    """``values`` (list, array, tensor) as a 1-D int64 array of non-negative labels, or a clear error."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per example), got shape {arr.shape}; "
                         "for logits of shape (N, n_classes) take .argmax(-1) first")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {arr.min()} (-100 marks ignored tokens, not classes)")
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred must have the same length, got {len(t)} and {len(p)}")
    if len(t) == 0:
        raise ValueError("y_true and y_pred are empty; pass at least one example")
    return t, p


def _check_n_classes(n_classes: int, *arrays: np.ndarray) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be an int >= 1, got {n_classes!r}")
    for arr in arrays:
        if arr.max() >= n_classes:
            raise ValueError(f"a label is {arr.max()} but n_classes is {n_classes}: labels must be in "
                             f"0..{n_classes - 1}; pass the number of classes of the task")


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of examples whose predicted label equals the true one.

    Args:
        y_true: true labels, shape (N,) (list, NumPy array or tensor).
        y_pred: predicted labels, shape (N,).

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: shapes differ, are not 1-D, or are empty; a label is negative.
        TypeError: labels are not integers.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: ``cm[i, j]`` = examples of true class i predicted as j.

    Args:
        y_true: true labels, shape (N,), in ``0..n_classes-1``.
        y_pred: predicted labels, shape (N,).
        n_classes: number of classes C (classes absent from both arrays still get a row and a column).

    Returns:
        int64 array of shape (C, C); rows = true class, columns = predicted class; it sums to N, its
        diagonal holds the correct predictions.
    """
    t, p = _pair(y_true, y_pred)
    _check_n_classes(n_classes, t, p)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_scores(y_true: Any, y_pred: Any, n_classes: int) -> dict:
    """F1 of each class (one-vs-rest) and their unweighted mean, the macro-F1.

    F1 = 2 precision recall / (precision + recall) = 2TP / (2TP + FP + FN). A class that occurs but is never
    predicted gets 0 (no true positive); a class neither present nor predicted also gets 0 and still counts in
    the macro mean (scikit-learn's ``zero_division=0``), so a metric over C classes never silently becomes one
    over fewer.

    Args:
        y_true: true labels, shape (N,).
        y_pred: predicted labels, shape (N,).
        n_classes: number of classes C.

    Returns:
        ``{0: f1_0, ..., C-1: f1_{C-1}, "macro": mean}``, floats in [0, 1].
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp  # predicted as the class, but another class
    fn = cm.sum(axis=1) - tp  # of the class, predicted as another
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    scores: dict = {c: float(f1[c]) for c in range(n_classes)}
    scores["macro"] = float(f1.mean())
    return scores


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (e.g. an accuracy: k correct out of n test examples).

    With p = k/n and z the two-sided normal quantile (1.96 for 95%):
    centre = (p + z²/2n) / (1 + z²/n), half width = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²).
    Unlike the textbook p ± z sqrt(p(1-p)/n) (Wald), it stays inside [0, 1] and does not shrink to a point
    when k = 0 or k = n (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it).

    Args:
        k: number of successes, 0 <= k <= n.
        n: number of trials, >= 1.
        confidence: coverage in (0, 1), default 0.95.

    Returns:
        ``(low, high)`` with 0 <= low <= k/n <= high <= 1 (low = 0 exactly when k = 0, high = 1 when k = n).

    Raises:
        ValueError: k or n not integers, n < 1, k outside 0..n, confidence outside (0, 1).
    """
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int (a count), got {value!r}; for an accuracy pass "
                             "k = number correct, n = number of examples")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in 0..n = 0..{n}, got {k}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends, not 1e-17 off
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def majority_baseline(train_labels: Any, test_labels: Any) -> tuple[int, float]:
    """The classifier that always answers the most frequent *training* label, scored on the test labels.

    Args:
        train_labels: labels of the training split, shape (N_train,) (ties go to the smallest label).
        test_labels: labels it is scored on, shape (N_test,).

    Returns:
        ``(label, accuracy)``: the constant answer and its accuracy on ``test_labels``.
    """
    train = _labels(train_labels, "train_labels")
    test = _labels(test_labels, "test_labels")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"train_labels and test_labels must be non-empty, got {len(train)} and {len(test)}")
    label = int(np.argmax(np.bincount(train)))  # argmax takes the first maximum: the smallest label
    return label, float(np.mean(test == label))


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 from logits, for ``transformers.Trainer(compute_metrics=compute_metrics)``.

    Args:
        eval_pred: a ``transformers.EvalPrediction`` (or a ``(predictions, label_ids)`` pair) with logits of
            shape (N, C) (a tuple of outputs is fine: the first element is used) and labels of shape (N,).

    Returns:
        ``{"accuracy": ..., "f1": macro-F1}``; the Trainer logs them as ``eval_accuracy`` and ``eval_f1``.
    """
    if hasattr(eval_pred, "predictions"):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        logits, labels = eval_pred
    if isinstance(logits, (tuple, list)):
        logits = logits[0]  # models that also return hidden states: the logits come first
    logits = np.asarray(logits.float().cpu() if isinstance(logits, torch.Tensor) else logits)
    if logits.ndim != 2:
        raise ValueError(f"predictions must be logits of shape (N, n_classes), got shape {logits.shape}")
    predicted = logits.argmax(-1)
    return {"accuracy": accuracy(labels, predicted), "f1": f1_scores(labels, predicted, logits.shape[1])["macro"]}


class TokenizedSplit(torch.utils.data.Dataset):
    """Tokenized texts and their labels: item i is ``{"input_ids": [...], "attention_mask": [...], "labels": y}``.

    Items are unpadded lists of different lengths; a ``transformers.DataCollatorWithPadding`` pads each batch to
    its longest text (for ``Trainer``, or for ``lab_utils.training`` through a ``DataLoader(..., collate_fn=)``).
    """

    def __init__(self, input_ids: list[list[int]], attention_mask: list[list[int]], labels: Sequence[int]):
        if not len(input_ids) == len(attention_mask) == len(labels):
            raise ValueError(f"input_ids, attention_mask and labels differ in length: {len(input_ids)}, "
                             f"{len(attention_mask)}, {len(labels)}")
        self.input_ids, self.attention_mask, self.labels = input_ids, attention_mask, [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}


def tokenize_split(dataset: Any, tokenizer: Any, *, max_length: int) -> TokenizedSplit:
    """Tokenize one split of a labelled text data set (e.g. ``load_tweets()["train"]``) for a classifier.

    Args:
        dataset: anything with columns ``dataset["text"]`` (strings) and ``dataset["label"]`` (ints), such as a
            ``datasets.Dataset``.
        tokenizer: a transformers tokenizer (``[CLS] text [SEP]`` for BERT-like models).
        max_length: longest sequence in tokens, special tokens included; longer texts are truncated.

    Returns:
        A :class:`TokenizedSplit` (a torch ``Dataset``), one unpadded item per text.

    Raises:
        ValueError: no ``text``/``label`` column, empty data set, or ``max_length`` < 2.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 ([CLS] and [SEP] take two tokens), got {max_length!r}")
    try:
        texts, labels = list(dataset["text"]), list(dataset["label"])
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError("dataset must have a 'text' and a 'label' column, e.g. load_tweets()['train']") from e
    if not texts:
        raise ValueError("dataset is empty; pass a split with at least one example")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("dataset['text'] must hold strings")
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return TokenizedSplit(enc["input_ids"], enc["attention_mask"], labels)
