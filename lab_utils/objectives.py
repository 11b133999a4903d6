"""Pre-training objectives: masked language modelling (MLM) and next-token prediction; training and evaluation.

MLM masking follows BERT (Devlin et al. 2019, §3.1 and App. A.1): 15% of the ordinary tokens are selected; of
those 80% become [MASK], 10% a random token, 10% stay unchanged. Chapter "Encoders and decoders"
(chapters/01_transformers). Label convention for both objectives: `labels[b, t]` is the target of
`logits[b, t]` (already aligned, no shift inside the loss), and `IGNORE_INDEX = -100` marks positions without a target.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "IGNORE_INDEX",
    "cross_entropy_loss",
    "evaluate_loss",
    "mask_tokens",
    "perplexity",
    "shift_for_next_token",
    "train",
]

IGNORE_INDEX = -100  # default ignore_index of torch.nn.CrossEntropyLoss, also used by Hugging Face labels


def _check_ids(input_ids: Tensor, name: str = "input_ids") -> None:
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        kind = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids, got {kind}")


def mask_tokens(
    input_ids: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    special_mask: Tensor | None = None,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking for MLM: select tokens, corrupt the inputs, keep the originals as labels.

    Each token that is not special is selected with probability `mlm_probability`. A selected token is
    replaced by `mask_token_id` (80%), by a token drawn uniformly from `[0, vocab_size)` (10%, as in BERT's
    and Hugging Face's code, so it may occasionally equal the original), or left unchanged (10%).

    Args:
        input_ids: token ids, any shape, e.g. `(B, T)`. Not modified.
        mask_token_id: id of `[MASK]`.
        vocab_size: number of token ids, for the random replacements.
        special_ids: ids never selected: include `[PAD]`, `[CLS]`, `[SEP]`, `[MASK]`.
        special_mask: optional bool tensor shaped like `input_ids`, True = never select (e.g. padding).
        mlm_probability: selection probability (BERT: 0.15).
        generator: source of randomness, for reproducible masking.

    Returns:
        `(inputs, labels)`, both shaped like `input_ids`: the corrupted inputs, and the original ids at
        selected positions with `IGNORE_INDEX` (-100) elsewhere.

    Raises:
        TypeError: if `input_ids` is not integer or `special_mask` not bool.
        ValueError: on out-of-range ids or probabilities, or a `special_mask` of another shape.
    """
    _check_ids(input_ids)
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    if vocab_size < 1 or not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id must be in [0, vocab_size={vocab_size}), got {mask_token_id}")
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    if special_mask is not None:
        if not isinstance(special_mask, Tensor) or special_mask.dtype != torch.bool:
            raise TypeError("special_mask must be a bool tensor (True = never mask), e.g. attention_mask == 0")
        if special_mask.shape != input_ids.shape:
            raise ValueError(
                f"special_mask shape {tuple(special_mask.shape)} must equal input_ids shape {tuple(input_ids.shape)}"
            )
        special = special | special_mask

    def draw() -> Tensor:  # uniform [0, 1) per token, from `generator`
        return torch.rand(input_ids.shape, generator=generator, device=input_ids.device)

    selected = (draw() < mlm_probability) & ~special  # BERT: 15% of the (non-special) tokens
    labels = torch.where(selected, input_ids, IGNORE_INDEX)  # the loss only looks at selected positions
    to_mask = selected & (draw() < 0.8)  # 80% of selected -> [MASK]
    to_random = selected & ~to_mask & (draw() < 0.5)  # half of the remaining 20% -> random token
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    inputs = torch.where(to_mask, mask_token_id, input_ids)
    inputs = torch.where(to_random, random_ids.to(input_ids.dtype), inputs)  # the last 10% stay unchanged
    return inputs, labels


def shift_for_next_token(input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and aligned labels for next-token prediction: position t predicts token t + 1.

    Convention: the shift happens here, so `labels[b, t]` is the target of `logits[b, t]` and the loss is a
    plain cross-entropy, the same as for MLM. (Hugging Face instead takes `labels = input_ids` and shifts
    inside the model's loss; both give the same loss.)

    Args:
        input_ids: `(B, T)` token ids, `T >= 2`.
        attention_mask: optional `(B, T)` 0/1 or bool, 1 = real token; padded targets get `IGNORE_INDEX`.
            The model's mask for `inputs` is then `attention_mask[:, :-1]`.

    Returns:
        `(inputs, labels)`, both `(B, T - 1)`: `inputs = input_ids[:, :-1]`, `labels = input_ids[:, 1:]`
        with -100 where the target is padding.

    Raises:
        TypeError: if `input_ids` is not integer.
        ValueError: if it is not 2-D with `T >= 2`, or `attention_mask` has another shape.
    """
    _check_ids(input_ids)
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        shape = tuple(input_ids.shape)
        raise ValueError(f"input_ids must have shape (B, T) with T >= 2 to have a next token, got {shape}")
    inputs = input_ids[:, :-1]  # (B, T-1): tokens 0 .. T-2
    labels = input_ids[:, 1:].clone()  # (B, T-1): tokens 1 .. T-1, the next token of each input
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        labels[attention_mask[:, 1:] == 0] = IGNORE_INDEX  # no target where the next token is padding
    return inputs, labels


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of the labelled positions (labels aligned with logits, -100 = ignore).

    Args:
        logits: `(B, T, V)`.
        labels: `(B, T)` target ids or `IGNORE_INDEX`.

    Returns:
        Scalar loss in nats.

    Raises:
        ValueError: if shapes disagree or no position has a label (the mean would be 0/0).
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        shapes = f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        raise ValueError(f"logits must be (B, T, V) and labels (B, T) with the same B, T; got {shapes}")
    if not (labels != IGNORE_INDEX).any():
        raise ValueError("every label is -100: there is no position to compute the loss on")
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)  # (B*T, V) vs (B*T,)


def perplexity(loss: float | Tensor) -> float | Tensor:
    """Perplexity `exp(mean NLL)`: the number of equally likely tokens the model is choosing between.

    Args:
        loss: mean negative log-likelihood in nats (natural log, as `F.cross_entropy` returns), >= 0.

    Returns:
        `exp(loss)`, a float for a float and a tensor for a tensor; `inf` if it overflows.

    Raises:
        ValueError: if `loss` is negative or NaN (a mean NLL cannot be).
    """
    value = loss.detach() if isinstance(loss, Tensor) else loss
    if isinstance(value, Tensor) and value.is_floating_point():
        bad = bool(torch.isnan(value).any() | (value < 0).any())
    else:
        bad = math.isnan(float(value)) or float(value) < 0
    if bad:
        raise ValueError(f"loss must be a mean negative log-likelihood >= 0, got {loss}")
    if isinstance(loss, Tensor):
        return torch.exp(loss)
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _inputs_and_labels(
    batch: Tensor | Mapping[str, Tensor],
    objective: str,
    mask_token_id: int | None,
    vocab_size: int,
    special_ids: Sequence[int],
    mlm_probability: float,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One batch -> `(inputs, labels, attention_mask)` on `device` for `objective` (shared by train and eval)."""
    ids = batch["input_ids"] if isinstance(batch, Mapping) else batch  # (B, T)
    att = batch.get("attention_mask") if isinstance(batch, Mapping) else None  # (B, T) or None
    if objective == "mlm":
        pad = None if att is None else att == 0
        for _attempt in range(100):  # a tiny batch may get no selected token: draw again (0.85^(100 n) odds)
            inputs, labels = mask_tokens(
                ids,
                mask_token_id=mask_token_id,
                vocab_size=vocab_size,
                special_ids=special_ids,
                special_mask=pad,
                mlm_probability=mlm_probability,
                generator=generator,
            )
            if (labels != IGNORE_INDEX).any():
                break
        else:
            raise ValueError("no token of a batch could be masked: are all its tokens special or padding?")
    else:
        inputs, labels = shift_for_next_token(ids, att)  # (B, T-1) each
        att = None if att is None else att[:, :-1]
    return inputs.to(device), labels.to(device), None if att is None else att.to(device)


def _check_objective(objective: str, mask_token_id: int | None) -> None:
    if objective not in ("mlm", "causal"):
        raise ValueError(f"objective must be 'mlm' or 'causal', got {objective!r}")
    if objective == "mlm" and mask_token_id is None:
        raise ValueError("objective='mlm' needs mask_token_id (the id of [MASK])")


def train(
    model: nn.Module,
    batches: Iterable[Tensor | Mapping[str, Tensor]],
    *,
    objective: Literal["mlm", "causal"],
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    mask_token_id: int | None = None,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[float]:
    """Train `model` with AdamW on MLM or next-token prediction; the batches are cycled until `steps`.

    Args:
        model: a `TinyTransformer` (or any module with `forward(ids, attention_mask=, causal=) -> (B, T, V)`
            and `config.vocab_size`).
        batches: `(B, T)` id tensors, or dicts with `"input_ids"` and optionally `"attention_mask"`.
        objective: `"mlm"` (bidirectional, `mask_tokens`) or `"causal"` (causal mask, `shift_for_next_token`).
        steps: number of optimizer steps.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        mask_token_id: `[MASK]` id, required for `"mlm"`.
        special_ids: ids never masked for `"mlm"` (padding is never masked when an attention mask is given).
        mlm_probability: MLM selection probability.
        generator: randomness of the MLM masking (CPU batches).
        device: where to train.
        progress: show a tqdm progress bar.

    Returns:
        The loss (nats) at each step.

    Raises:
        ValueError: on an unknown objective, `steps < 1`, a missing `mask_token_id` or no batches.
    """
    _check_objective(objective, mask_token_id)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    stream = itertools.cycle(batches)  # reuse the batches when there are fewer than `steps`
    bar = tqdm(range(steps), desc=f"train ({objective})", disable=not progress)
    for _ in bar:
        batch = next(stream, None)
        if batch is None:
            raise ValueError("batches is empty")
        inputs, labels, att = _inputs_and_labels(
            batch, objective, mask_token_id, model.config.vocab_size, special_ids, mlm_probability, generator, device
        )
        logits = model(inputs, attention_mask=att, causal=objective == "causal")  # (B, T', V)
        loss = cross_entropy_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # nanoGPT's grad_clip = 1.0
        optimizer.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    return history


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    batches: Iterable[Tensor | Mapping[str, Tensor]],
    *,
    objective: Literal["mlm", "causal"],
    mask_token_id: int | None = None,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """Held-out loss: mean NLL (nats) per labelled token over all `batches`, with dropout off.

    The mean is weighted by tokens (total NLL / number of labelled positions), not a mean of batch means, so
    batches with more targets count more. Pass a seeded `generator` for MLM so that every call masks the same
    positions. The model's train/eval mode is restored afterwards.

    Args:
        model, batches, objective, mask_token_id, special_ids, mlm_probability, generator, device: as in `train`
            (one pass over `batches`, no cycling).

    Returns:
        The mean NLL per predicted token; `perplexity(...)` of it is the held-out perplexity.

    Raises:
        ValueError: on an unknown objective, a missing `mask_token_id`, or no labelled token in `batches`.
    """
    _check_objective(objective, mask_token_id)
    was_training = model.training
    model.to(device).eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            inputs, labels, att = _inputs_and_labels(
                batch, objective, mask_token_id, model.config.vocab_size, special_ids, mlm_probability, generator,
                device,
            )  # fmt: skip
            logits = model(inputs, attention_mask=att, causal=objective == "causal")  # (B, T', V)
            nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                                  reduction="sum")  # fmt: skip
            total += nll.item()
            count += int((labels != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches hold no labelled token: is it empty, or all padding?")
    return total / count
