"""One bench for every way of adapting a model: the same task, batches, training loop, clocks and scores.

Chapter "Parameter-efficient fine-tuning" (chapters/03_peft) compares full fine-tuning, last layers, adapters,
LoRA and prompt tuning. A comparison is only fair if everything but the method is the same, so every notebook of
the chapter goes through this module: binary tweet sentiment (:func:`load_sentiment`), MiniLM with a fresh head
(:func:`new_classifier`), :func:`fit` (``lab_utils.training.train`` with ``objectives.model_loss``, then
validation accuracy, time per step and peak GPU memory), :func:`inference_latency`, and :func:`test_report`, the
one look at the test split per method (accuracy, Wilson interval, majority baseline).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from lab_utils import assets, profile, tweets
from lab_utils.classification import majority_baseline, wilson_interval
from lab_utils.memory import MIB, count_parameters, peak_memory
from lab_utils.objectives import model_loss
from lab_utils.training import History, to_device, train

__all__ = ["MAX_LENGTH", "FitResult", "SentimentData", "accuracy_on", "fit", "format_trainable", "logits",
           "inference_latency", "load_sentiment", "new_classifier", "predict", "test_report", "trainable_summary"]

MAX_LENGTH = 64  # tokens per tweet, [CLS] and [SEP] included: nearly every tweet fits
Batch = dict[str, Tensor]


@dataclass
class SentimentData:
    """Tokenized binary tweet sentiment, cut into batches of ``{"input_ids", "attention_mask", "labels"}``.

    Each batch is padded to its own longest tweet (shape (B, T_batch), T_batch <= ``max_length``). ``train`` was
    shuffled once with the seed; ``validation`` and ``test`` keep one fixed order. ``train_labels`` (all of the
    training split used) gives the majority baseline.
    """

    train: list[Batch]
    validation: list[Batch]
    test: list[Batch]
    label_names: list[str]
    train_labels: np.ndarray
    batch_size: int
    max_length: int
    sizes: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: tweets per split, batch size, maximum length."""
        counts = ", ".join(f"{n:,} {split}" for split, n in self.sizes.items())
        return (f"binary tweet sentiment ({' / '.join(self.label_names)}): {counts} tweets; "
                f"batches of {self.batch_size}, at most {self.max_length} tokens")


def _count(value: int | None, name: str, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None (the whole split), got {value!r}")
    return min(value, available)


def _batches(input_ids: Sequence[Sequence[int]], labels: Sequence[int], order: Sequence[int], batch_size: int,
             pad_id: int) -> list[Batch]:
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(input_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(input_ids[i])] = torch.tensor(input_ids[i])
            mask[r, :len(input_ids[i])] = 1
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.tensor([labels[i] for i in rows], dtype=torch.long)})
    return out


def load_sentiment(*, batch_size: int, n_train: int | None = None, n_val: int | None = None,
                   n_test: int | None = None, max_length: int = MAX_LENGTH, seed: int = 0) -> SentimentData:
    """Binary tweet sentiment (``tweets.load_tweets(binary=True)``), tokenized for MiniLM and batched.

    Args:
        batch_size: tweets per batch (the last batch of a split may be smaller).
        n_train, n_val, n_test: how many tweets of each split to use, a random sample drawn with ``seed``
            (None = the whole split: 16,927 / 2,116 / 2,116).
        max_length: longest sequence in tokens; longer tweets are truncated.
        seed: seed of the sampling and of the training order.

    Returns:
        A :class:`SentimentData`.

    Raises:
        ValueError: on a non-positive size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length must be an int >= 3 ([CLS], one token, [SEP]), got {max_length!r}")
    data = tweets.load_tweets(binary=True)
    tokenizer = assets.load_minilm_tokenizer()
    wanted = {"train": n_train, "validation": n_val, "test": n_test}
    splits, sizes, train_labels = {}, {}, None
    for i, (split, n) in enumerate(wanted.items()):
        part = data[split].shuffle(seed=seed + i)  # a random sample; the split itself is fixed by load_tweets
        part = part.select(range(_count(n, f"n_{'val' if split == 'validation' else split}", len(part))))
        ids = tokenizer(list(part["text"]), truncation=True, max_length=max_length)["input_ids"]
        labels = list(part["label"])
        order = list(range(len(ids)))  # already shuffled with the seed: training order = this order
        splits[split] = _batches(ids, labels, order, batch_size, tokenizer.pad_token_id)
        sizes[split] = len(ids)
        if split == "train":
            train_labels = np.asarray(labels)
    return SentimentData(train=splits["train"], validation=splits["validation"], test=splits["test"],
                         label_names=list(data["train"].features["label"].names), train_labels=train_labels,
                         batch_size=batch_size, max_length=max_length, sizes=sizes)


def new_classifier(seed: int = 0) -> nn.Module:
    """MiniLM (all-MiniLM-L6-v2) with a fresh two-label head, drawn with ``seed``: every method starts here.

    Returns:
        A ``BertForSequenceClassification`` in eval mode, on the CPU, all parameters trainable.
    """
    from transformers import AutoModelForSequenceClassification

    names = list(tweets.BINARY_LABELS)
    torch.manual_seed(seed)  # the head is the only random part
    return assets.load_minilm(AutoModelForSequenceClassification, num_labels=len(names),
                              id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def _device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return profile.current().device


@torch.no_grad()
def logits(model: nn.Module, batches: Sequence[Batch], *, device: torch.device | str | None = None) -> Tensor:
    """The model's logits over ``batches``, in eval mode, as one float32 tensor on the CPU.

    Returns:
        Logits of shape (N, num_labels), N the number of examples in ``batches``. The model ends in the mode it
        started in.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    device = _device(device)
    was_training = model.to(device).training
    model.eval()
    scores = []
    try:
        for batch in batches:
            inputs = {k: v for k, v in to_device(batch, device).items() if k != "labels"}
            scores.append(model(**inputs).logits.float().cpu())
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("batches is empty: nothing to predict")
    return torch.cat(scores)


def predict(model: nn.Module, batches: Sequence[Batch], *,
            device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted labels (argmax of the logits) over ``batches``, in eval mode.

    Returns:
        ``(y_true, y_pred)``, two int arrays of shape (N,). The model ends in the mode it started in.
    """
    y_pred = logits(model, batches, device=device).argmax(-1)
    y_true = torch.cat([batch["labels"].cpu() for batch in batches])
    return y_true.numpy(), y_pred.numpy()


def accuracy_on(model: nn.Module, batches: Sequence[Batch], *, device: torch.device | str | None = None) -> float:
    """Fraction of the examples in ``batches`` whose predicted label is right."""
    y_true, y_pred = predict(model, batches, device=device)
    return float(np.mean(y_true == y_pred))


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """``{"trainable", "total", "percent"}``: parameters that receive gradients, all parameters (shared counted
    once), and the first as a percentage of the second."""
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    return {"trainable": trainable, "total": total, "percent": 100 * trainable / total if total else 0.0}


def format_trainable(model: nn.Module) -> str:
    """The line PEFT's ``print_trainable_parameters`` prints, for any model."""
    s = trainable_summary(model)
    return f"trainable params: {s['trainable']:,} || all params: {s['total']:,} || trainable%: {s['percent']:.4f}"


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        history: the training loop's record (loss and learning rate per step).
        val_accuracy: accuracy on ``data.validation`` after training.
        seconds_per_step: median wall time of one update (forward, backward, optimizer step).
        peak_mib: CUDA only (None elsewhere): the model's own parameters and buffers plus the most memory that
            training allocated on top of what was allocated before it (gradients, optimizer state, activations).
        trainable, total: parameter counts (:func:`trainable_summary`).
    """

    history: History
    val_accuracy: float
    seconds_per_step: float
    peak_mib: float | None
    trainable: int
    total: int

    def row(self) -> dict[str, float | None]:
        """The scalars, for a table row."""
        return {"trainable": self.trainable, "total": self.total, "val_accuracy": self.val_accuracy,
                "seconds_per_step": self.seconds_per_step, "peak_mib": self.peak_mib}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(model: nn.Module, data: SentimentData, *, steps: int, lr: float, warmup: float = 0.1,
        schedule: str = "linear", eval_every: int | None = None, device: torch.device | str | None = None,
        desc: str = "train", progress: bool = True) -> FitResult:
    """Train ``model`` on ``data.train`` with AdamW (only parameters with ``requires_grad``), then score validation.

    Args:
        model: a classifier taking ``input_ids``, ``attention_mask`` and ``labels`` (any adapted MiniLM).
        data: from :func:`load_sentiment`; training batches are cycled when ``steps`` exceeds one epoch.
        steps: optimizer updates.
        lr: peak learning rate; ``warmup``: fraction of ``steps`` of linear warmup; ``schedule``: what follows.
        eval_every: also record the validation loss every so many steps (in ``history``).
        device: where to train; default the active profile's device.
        desc, progress: the progress bar's label, and whether to show it.

    Returns:
        A :class:`FitResult`.
    """
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
    device = _device(device)
    model.to(device)
    stamps: list[float] = []

    def clock(step: int, _model: nn.Module, _loss: float) -> None:
        _synchronize(device)
        stamps.append(time.perf_counter())

    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    with peak_memory(device) as peak:
        history = train(model, data.train, model_loss, steps=steps, lr=lr, warmup_steps=int(warmup * steps),
                        schedule=schedule, val_batches=data.validation if eval_every else None,
                        eval_every=eval_every, device=device, callback=clock, progress=progress, desc=desc)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    per_step = statistics.median(gaps) if gaps else float("nan")  # the median ignores validation pauses
    summary = trainable_summary(model)
    return FitResult(history=history, val_accuracy=accuracy_on(model, data.validation, device=device),
                     seconds_per_step=per_step,
                     peak_mib=None if peak.bytes is None else (weights + peak.bytes) / MIB,
                     trainable=summary["trainable"], total=summary["total"])


@torch.no_grad()
def inference_latency(model: nn.Module, batch: Mapping[str, Tensor], *, repeats: int = 30, warmup: int = 5,
                      device: torch.device | str | None = None) -> float:
    """Median seconds of one forward pass on ``batch`` (eval mode, no gradients, GPU work waited for).

    Args:
        batch: model inputs, e.g. ``data.validation[0]`` (its ``labels`` are dropped).
        repeats: timed forward passes; ``warmup``: untimed ones first (kernel selection, caches).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = _device(device)
    was_training = model.to(device).training
    model.eval()
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    times = []
    try:
        for i in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            model(**inputs)
            _synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times)


def test_report(model: nn.Module, data: SentimentData, *, device: torch.device | str | None = None) -> dict:
    """The one look at the test split: accuracy, its 95% Wilson interval, and the majority baseline.

    Call it once per method, after every choice was made on validation.

    Returns:
        ``{"accuracy", "ci_low", "ci_high", "n", "majority_accuracy"}`` (the baseline always answers the most
        frequent training label).
    """
    y_true, y_pred = predict(model, data.test, device=device)
    correct = int(np.sum(y_true == y_pred))
    low, high = wilson_interval(correct, len(y_true))
    _, majority = majority_baseline(data.train_labels, y_true)
    return {"accuracy": correct / len(y_true), "ci_low": low, "ci_high": high, "n": len(y_true),
            "majority_accuracy": majority}
