"""Pre-training objectives: masked language modelling (MLM) and next-token prediction, as losses for `training.train`.

MLM masking follows BERT (Devlin et al. 2019, §3.1 and App. A.1): 15% of the ordinary tokens are selected; of
those 80% become [MASK], 10% a random token, 10% stay unchanged. Chapter "Encoders and decoders"
(chapters/01_transformers). Label convention for both objectives: `labels[b, t]` is the target of
`logits[b, t]` (already aligned, no shift inside the loss), and `IGNORE_INDEX = -100` marks positions without a target.
A loss function (`LossFn`) maps `(model, batch)` to `(mean loss over the batch's targets, number of targets)`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IGNORE_INDEX",
    "cross_entropy_loss",
    "mask_tokens",
    "masked_token_accuracy",
    "mlm_loss",
    "model_logits",
    "model_loss",
    "next_token_loss",
    "perplexity",
    "shift_for_next_token",
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
        generator: source of randomness, for reproducible masking (any device: the draws move to `input_ids`'s).

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

    # Randomness is drawn where the generator lives, then moved: a CPU generator masks CUDA batches too, and the
    # masks of a seed are the same on every device.
    rng_device = input_ids.device if generator is None else generator.device

    def draw() -> Tensor:  # uniform [0, 1) per token, from `generator`
        return torch.rand(input_ids.shape, generator=generator, device=rng_device).to(input_ids.device)

    selected = (draw() < mlm_probability) & ~special  # BERT: 15% of the (non-special) tokens
    labels = torch.where(selected, input_ids, IGNORE_INDEX)  # the loss only looks at selected positions
    to_mask = selected & (draw() < 0.8)  # 80% of selected -> [MASK]
    to_random = selected & ~to_mask & (draw() < 0.5)  # half of the remaining 20% -> random token
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=rng_device).to(input_ids.device)
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


Batch = Tensor | Mapping[str, Tensor]  # `(B, T)` ids, or a dict with "input_ids" and optionally "attention_mask"
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, int]]


def _ids_and_mask(batch: Batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Mapping):
        if "input_ids" not in batch:
            raise ValueError(f"a dict batch needs an 'input_ids' entry, got keys {sorted(batch)}")
        return batch["input_ids"], batch.get("attention_mask")
    return batch, None


def model_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, *, causal: bool) -> Tensor:
    """Logits `(B, T, V)` of a `TinyTransformer` (told `causal`) or a transformers model (causal by its class)."""
    if "causal" in inspect.signature(model.forward).parameters:  # lab_utils.models: the mask is an argument
        return model(input_ids, attention_mask=attention_mask, causal=causal)
    out = model(input_ids=input_ids, attention_mask=attention_mask)  # transformers: a ModelOutput with .logits
    return out.logits if hasattr(out, "logits") else out


def next_token_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
    """Next-token loss (a `LossFn`): the model sees `ids[:, :-1]` under its causal mask and predicts `ids[:, 1:]`.

    Args:
        model: a `TinyTransformer` (called with `causal=True`) or a transformers causal LM.
        batch: `(B, T)` ids or a dict with `"input_ids"` and optionally `"attention_mask"` (padding is not a target).

    Returns:
        `(loss, n)`: the mean NLL (nats) over the `n` targets, and `n`.
    """
    ids, att = _ids_and_mask(batch)
    inputs, labels = shift_for_next_token(ids, att)  # (B, T-1) each
    logits = model_logits(model, inputs, None if att is None else att[:, :-1], causal=True)  # (B, T-1, V)
    return cross_entropy_loss(logits.float(), labels), int((labels != IGNORE_INDEX).sum())


def model_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, int]:
    """The loss a transformers model with a task head computes itself (a `LossFn`), with its number of targets.

    Args:
        model: e.g. `AutoModelForSequenceClassification`, `...ForTokenClassification`, `...ForQuestionAnswering`.
        batch: the model's keyword arguments, targets included: `labels` (`(B,)` or `(B, T)` with `IGNORE_INDEX`
            where a token has no target) or `start_positions` and `end_positions` (`(B,)` each).

    Returns:
        `(loss, n)`: the model's mean loss and the number of targets it averaged over (labelled tokens, or examples).

    Raises:
        ValueError: the batch is not a dict, or has no targets.
    """
    if not isinstance(batch, Mapping):
        raise ValueError(f"model_loss needs a dict batch (the model's keyword arguments), got {type(batch).__name__}")
    if "labels" in batch:
        n = int((batch["labels"] != IGNORE_INDEX).sum())
    elif "start_positions" in batch and "end_positions" in batch:
        n = len(batch["start_positions"])
    else:
        raise ValueError(f"the batch has no targets ('labels', or 'start_positions' and 'end_positions'): "
                         f"keys {sorted(batch)}")
    out = model(**batch)
    return out.loss, n


def _mask_batch(ids: Tensor, att: Tensor | None, vocab_size: int, mask_token_id: int, special_ids: Sequence[int],
                mlm_probability: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """`mask_tokens` that never masks padding, drawn again until at least one token is selected."""
    pad = None if att is None else att == 0
    for _attempt in range(100):  # a tiny batch may get no selected token: draw again (0.85^(100 n) odds)
        inputs, labels = mask_tokens(ids, mask_token_id=mask_token_id, vocab_size=vocab_size, special_ids=special_ids,
                                     special_mask=pad, mlm_probability=mlm_probability, generator=generator)
        if (labels != IGNORE_INDEX).any():
            return inputs, labels
    raise ValueError("no token of a batch could be masked: are all its tokens special or padding?")


def mlm_loss(
    *,
    mask_token_id: int,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> LossFn:
    """A `LossFn` for masked language modelling: mask each batch with `mask_tokens`, predict the selected originals.

    The model is called bidirectionally (`causal=False` for a `TinyTransformer`); padding (`attention_mask == 0`)
    is never selected. Each call draws new masks from `generator`; for a reproducible held-out loss evaluate with
    a fresh `mlm_loss(..., generator=torch.Generator().manual_seed(s))`.

    Args:
        mask_token_id: id of `[MASK]`.
        special_ids: ids never selected (`[PAD]`, `[CLS]`, `[SEP]`, `[MASK]`, ...).
        mlm_probability: selection probability (BERT: 0.15).
        generator: randomness of the masks; it may live on another device than the batches (e.g. CPU).

    Returns:
        `loss_fn(model, batch) -> (loss, n)`; the vocabulary size is read from `model.config.vocab_size`.
    """
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        ids, att = _ids_and_mask(batch)
        inputs, labels = _mask_batch(ids, att, model.config.vocab_size, mask_token_id, special_ids, mlm_probability,
                                     generator)  # (B, T) each
        logits = model_logits(model, inputs, att, causal=False)  # (B, T, V)
        return cross_entropy_loss(logits.float(), labels), int((labels != IGNORE_INDEX).sum())

    return loss_fn


@torch.no_grad()
def masked_token_accuracy(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    mask_token_id: int,
    special_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    k: Sequence[int] = (1, 5),
    device: torch.device | str | None = None,
) -> dict[int, float]:
    """Top-k accuracy of an MLM's predictions at the selected positions (BERT masking, 15%).

    Args:
        model: a `TinyTransformer` or a transformers masked LM.
        batches: `(B, T)` ids or dicts with `"input_ids"` and optionally `"attention_mask"`.
        mask_token_id, special_ids: as in `mlm_loss`.
        generator: randomness of the masks; default a fresh generator seeded 0, so every call masks the same tokens.
        k: the k of each top-k accuracy.
        device: where to run; default where the model is.

    Returns:
        `{k: fraction of the selected tokens whose original id is among the k highest logits}`.

    Raises:
        ValueError: if a k is < 1 or `batches` hold no token to mask.
    """
    if not k or min(k) < 1:
        raise ValueError(f"k must be a non-empty sequence of ints >= 1, got {k}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    hits, count = dict.fromkeys(k, 0), 0
    try:
        for batch in batches:
            ids, att = _ids_and_mask(batch)
            ids, att = ids.to(device), None if att is None else att.to(device)
            inputs, labels = _mask_batch(ids, att, model.config.vocab_size, mask_token_id, special_ids, 0.15,
                                         generator)  # (B, T) each
            selected = labels != IGNORE_INDEX  # (B, T)
            logits = model_logits(model, inputs, att, causal=False)[selected]  # (n, V)
            top = logits.topk(max(k), dim=-1).indices  # (n, max k), best first
            for kk in k:
                hits[kk] += int((top[:, :kk] == labels[selected][:, None]).any(-1).sum())
            count += int(selected.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches is empty: there is no token to mask")
    return {kk: hits[kk] / count for kk in k}
