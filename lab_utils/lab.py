"""From the course's bench to ``transformers.Trainer``: the hands-on lab "LoRA by hand" (chapters/07_lora_lab).

The lab trains MiniLM on binary tweet sentiment three ways (hand-made LoRA, PEFT's LoRA, bottleneck adapters) with
``Trainer``, on the very splits of ``lab_utils.adaptation.load_sentiment`` so that its numbers sit beside the PEFT
chapter's. ``load_sentiment`` gives padded batches, ``Trainer`` wants one unpadded example per item:
:func:`examples_from_batches` undoes the batching. :func:`evaluation_table` is the lecture's table (step, training
loss, validation loss, accuracy) read from ``trainer.state.log_history``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from lab_utils.classification import TokenizedSplit

__all__ = ["evaluation_table", "examples_from_batches"]


def examples_from_batches(batches: Sequence[Mapping[str, Tensor]]) -> TokenizedSplit:
    """The examples of right-padded batches, unpadded, in order: a dataset for ``Trainer``.

    Args:
        batches: dicts with ``input_ids`` and ``attention_mask`` of shape (B, T) and ``labels`` of shape (B,), padded
            on the right (as ``adaptation.load_sentiment`` makes them); B and T may differ between batches.

    Returns:
        A ``classification.TokenizedSplit``: item i is ``{"input_ids": [...], "attention_mask": [1, ...],
        "labels": y}`` with the padding removed; pad it again with ``transformers.DataCollatorWithPadding``.

    Raises:
        ValueError: no batch, a batch without one of the three keys, mismatched shapes, or a mask that is not
            right padding (ones, then zeros).
    """
    if isinstance(batches, Mapping) or not isinstance(batches, Sequence) or not batches:
        raise ValueError("batches must be a non-empty list of batches, e.g. data.train from load_sentiment")
    input_ids, masks, labels = [], [], []
    for i, batch in enumerate(batches):
        missing = {"input_ids", "attention_mask", "labels"} - set(batch)
        if missing:
            raise ValueError(f"batch {i} has no {', '.join(sorted(missing))}: pass batches from load_sentiment")
        ids, mask, y = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if ids.ndim != 2 or ids.shape != mask.shape or y.shape != ids.shape[:1]:
            raise ValueError(f"batch {i}: input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} must "
                             f"be the same (B, T) and labels {tuple(y.shape)} of shape (B,)")
        lengths = mask.sum(dim=1)  # (B,)
        positions = torch.arange(mask.shape[1])  # (T,)
        if not torch.equal(mask.bool(), positions[None, :] < lengths[:, None]):
            raise ValueError(f"batch {i}: attention_mask is not right padding (ones, then zeros); "
                             "examples_from_batches cannot tell the tokens from the padding")
        for row, n in enumerate(lengths.tolist()):
            input_ids.append(ids[row, :n].tolist())
            masks.append([1] * n)
            labels.append(int(y[row]))
    return TokenizedSplit(input_ids, masks, labels)


def evaluation_table(log_history: Sequence[Mapping], metric: str = "accuracy") -> pd.DataFrame:
    """The lecture's evaluation table: one row per evaluation of a ``Trainer`` run.

    Args:
        log_history: ``trainer.state.log_history``; entries with ``"eval_loss"`` are evaluations, entries with
            ``"loss"`` the training loss averaged since the previous log.
        metric: the ``compute_metrics`` key to show (logged as ``"eval_" + metric``).

    Returns:
        A DataFrame indexed by "Step" with columns "Training Loss" (the latest logged at or before that step, NaN
        before the first log, as Trainer prints "No log"), "Validation Loss" and the metric's name capitalised.

    Raises:
        ValueError: if the history holds no evaluation (train with ``eval_strategy="steps"``) or lacks the metric.
    """
    evaluations = [e for e in log_history if "eval_loss" in e]
    if not evaluations:
        raise ValueError("log_history holds no evaluation: train with eval_strategy='steps' and an eval_dataset")
    key = f"eval_{metric}"
    if any(key not in e for e in evaluations):
        found = sorted({k for e in evaluations for k in e if k.startswith("eval_")})
        raise ValueError(f"the evaluations have no {key!r}; they hold {found} (pass compute_metrics to Trainer)")
    losses = sorted((e["step"], e["loss"]) for e in log_history if "loss" in e)
    rows = []
    for e in evaluations:
        logged = [loss for step, loss in losses if step <= e["step"]]
        rows.append({"Step": e["step"], "Training Loss": logged[-1] if logged else float("nan"),
                     "Validation Loss": e["eval_loss"], metric.capitalize(): e[key]})
    return pd.DataFrame(rows).set_index("Step")
