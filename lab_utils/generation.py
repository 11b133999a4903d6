"""Decoding and scoring with a causal language model: greedy or sampled generation, total NLL of texts.

Works for a `lab_utils.models.TinyTransformer` (called with `causal=True`) and for a transformers causal LM (its
`.logits`). Sampling: temperature (Ackley et al. 1985) and nucleus / top-p (Holtzman et al. 2020), as in
transformers' `generate`. Chapter "Encoders and decoders" and the later chapters that score SmolLM2. Shapes:
ids `(B, T)`, logits `(B, T, V)`. `generate` keeps a KV cache by default (chapter "Efficient attention"): the prompt
is read once, then each step feeds only the newest token; `use_cache=False` re-reads the whole context every step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lab_utils.kv_cache import KVCache
from lab_utils.objectives import IGNORE_INDEX, model_logits

__all__ = ["cache_argument", "causal_logits", "generate", "score_texts"]


def _check_ids(input_ids: Tensor) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        kind = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise TypeError(f"input_ids must be an integer tensor of token ids, got {kind}")
    if input_ids.ndim != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got {tuple(input_ids.shape)}; "
                         "add a batch dim with ids[None]")


def causal_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Next-token logits at every position, `(B, T, V)`: position t scores token t + 1 from tokens <= t.

    Args:
        model: a `TinyTransformer` or a transformers causal LM.
        input_ids: `(B, T)` token ids.
        attention_mask: `(B, T)`, 1 = real token, 0 = padding (pad on the right: positions count from the left).
    """
    _check_ids(input_ids)
    return model_logits(model, input_ids, attention_mask, causal=True)


def _max_len(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "max_len", None)  # TinyTransformer's learned positions


def cache_argument(model: nn.Module) -> str | None:
    """Name of the KV-cache argument of a transformers model's `forward`: `"cache"` since transformers 5.24,
    `"past_key_values"` before; None if it takes no cache under either name."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None


def _cached_logits_fn(model: nn.Module) -> Callable[[Tensor, bool], Tensor] | None:
    """`step(ids, fresh) -> (V,)` last-position logits through a KV cache, or None if the model takes no cache.

    `fresh=True` starts a new cache and reads all of `ids` (the prompt, or a context window that slid); otherwise
    `ids` holds only the tokens after the cached ones.
    """
    params = inspect.signature(model.forward).parameters
    if "causal" in params and "cache" in params:  # lab_utils.models.TinyTransformer
        state: dict[str, KVCache] = {}

        def tiny_step(ids: Tensor, fresh: bool) -> Tensor:
            if fresh:
                state["cache"] = KVCache(model.config.n_layers)
            return model(ids, causal=True, cache=state["cache"])[0, -1]

        return tiny_step
    key = cache_argument(model)
    if key is None or "causal" in params:
        return None
    from transformers import DynamicCache

    hf_state: dict[str, DynamicCache] = {}

    def hf_step(ids: Tensor, fresh: bool) -> Tensor:
        if fresh:
            hf_state["cache"] = DynamicCache(config=model.config)
        return model(input_ids=ids, use_cache=True, **{key: hf_state["cache"]}).logits[0, -1]

    return hf_step


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: Tensor,
    *,
    max_new_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
    stop_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    context_len: int | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Continue one sequence token by token: greedy (`temperature=None`) or sampled.

    With `use_cache=True` the prompt is read once and every later step feeds the newest token alone, attending to
    the keys and values cached so far (a `lab_utils.kv_cache.KVCache` for a `TinyTransformer`, a `DynamicCache` for
    a transformers model); the tokens are the same as without the cache. When the sequence outgrows `context_len`,
    the window slides and every position shifts, so the cache is rebuilt from the window at each such step.

    Args:
        model: a `TinyTransformer` or a transformers causal LM (run in eval mode; its mode is restored).
        input_ids: `(1, T)` prompt ids.
        max_new_tokens: at most this many tokens are appended.
        temperature: None = greedy (argmax); else sample from `softmax(logits / temperature)`.
        top_p: nucleus sampling: sample among the most likely tokens whose probabilities add up to `top_p`.
        stop_ids: generation stops after one of these (it is kept, as transformers keeps its EOS).
        banned_ids: never generated (their logits are set to -inf).
        generator: randomness of sampling (any device), for reproducible samples.
        context_len: the model sees at most the last `context_len` tokens; default `model.config.max_len` for a
            `TinyTransformer`, else the whole sequence.
        use_cache: keep a KV cache (models whose `forward` takes no cache are run without one).

    Returns:
        `(1, T + n_new)` ids: the prompt followed by the new tokens, on the prompt's device.

    Raises:
        ValueError / TypeError: on a batch of more than one, bad sizes, or `top_p` without a temperature.
    """
    _check_ids(input_ids)
    if input_ids.shape[0] != 1:
        raise ValueError(f"generate continues one sequence: input_ids must be (1, T), got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or None for greedy decoding), got {temperature}")
    if top_p is not None and (temperature is None or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] and needs a temperature (e.g. 1.0) to sample; got top_p={top_p}, "
                         f"temperature={temperature}")
    context_len = _max_len(model) if context_len is None else context_len
    if context_len is not None and context_len < 1:
        raise ValueError(f"context_len must be >= 1, got {context_len}")
    stop = set(stop_ids)
    was_training = model.training
    model.eval()
    ids = input_ids
    cached_step = _cached_logits_fn(model) if use_cache else None
    start = None  # where the cached window starts; None = nothing cached yet
    try:
        for _ in range(max_new_tokens):
            first = 0 if context_len is None else max(0, ids.shape[1] - context_len)
            window = ids[:, first:]  # (1, <= context_len)
            if cached_step is None:
                logits = causal_logits(model, window)[0, -1]  # (V,) re-reads the whole window
            elif start == first:
                logits = cached_step(ids[:, -1:], False)  # only the newest token; the others are cached
            else:
                logits = cached_step(window, True)  # prefill, or the window slid: positions changed
                start = first
            logits = logits.float()  # (V,) scores of the next token
            if banned_ids:
                logits[list(banned_ids)] = float("-inf")
            if temperature is None:
                nxt = logits.argmax()
            else:
                probs = (logits / temperature).softmax(-1)  # (V,)
                if top_p is not None:
                    sorted_p, order = probs.sort(descending=True)
                    drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before it already reaches top_p
                    probs = probs.scatter(0, order, sorted_p.masked_fill(drop, 0.0))  # the top token always stays
                rng_device = probs.device if generator is None else generator.device
                nxt = torch.multinomial(probs.to(rng_device), 1, generator=generator)[0].to(ids.device)
            ids = torch.cat([ids, nxt.view(1, 1).to(ids.dtype)], dim=1)  # (1, T + 1)
            if int(nxt) in stop:
                break
    finally:
        model.train(was_training)
    return ids


@torch.no_grad()
def score_texts(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    pad_id: int = 0,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood of texts under a causal LM, batched with right padding.

    Every token after the first of each list is scored given the ones before it; the first is the start token (e.g.
    `[CLS]`, `<|endoftext|>`), which is conditioned on but not scored. Divide the total by the count for the mean
    NLL per token (token-weighted: longer texts count more), and by `ln 2 * characters` for bits per character.

    Args:
        model: a `TinyTransformer` or a transformers causal LM (run in eval mode; its mode is restored).
        token_lists: one list of ids per text, each with at least 2 ids.
        batch_size: texts per forward pass.
        pad_id: id put in the padded slots (hidden by the attention mask and never scored).
        device: where to run; default where the model is.

    Returns:
        `(total NLL in nats, number of scored tokens)`.

    Raises:
        ValueError: if there is no text, a text has fewer than 2 ids, or `batch_size < 1`.
    """
    if len(token_lists) == 0:
        raise ValueError("token_lists is empty: give at least one text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (short := min(len(t) for t in token_lists)) < 2:
        raise ValueError(f"each text needs a start token and at least one token to score, got a list of {short}")
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(token_lists), batch_size):
            chunk = [list(t) for t in token_lists[i : i + batch_size]]
            width = max(map(len, chunk))
            ids = torch.tensor([t + [pad_id] * (width - len(t)) for t in chunk], device=device)  # (B, T)
            att = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in chunk], device=device)  # (B, T)
            logits = causal_logits(model, ids, att)[:, :-1].float()  # (B, T-1, V): predicts tokens 1..T-1
            labels = ids[:, 1:].masked_fill(att[:, 1:] == 0, IGNORE_INDEX)  # (B, T-1)
            nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="sum")
            total += nll.item()
            count += int((labels != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    return total, count
