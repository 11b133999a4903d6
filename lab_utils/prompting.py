"""In-context learning: few-shot prompts, drawing their examples, and scoring label words with a causal LM.

Brown et al. 2020 adapt GPT-3 with no gradient step: a task description, ``k`` solved examples ("shots") and the
query, in one prompt. A classifier built this way reads the model's next-token distribution after the prompt and
compares the probabilities of the label words' first tokens (no free-text parsing). Chapter "Adapting without
training" (chapters/06_adapting_without_training). Shapes: logits ``(B, T, V)``, attention mask ``(B, T)`` with
1 = real token and right padding, scores ``(n_prompts, n_labels)``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lab_utils.generation import cache_argument

__all__ = ["ORDERS", "build_few_shot_prompt", "draw_shots", "label_probs_from_logits", "label_token_ids",
           "label_word_scores", "shared_prefix", "token_ids_containing"]

ORDERS = ("random", "grouped", "interleaved")


def build_few_shot_prompt(task: str, examples: Sequence[tuple[str, str]], query: str, *,
                          template: str = "{input} => {output}", separator: str = "\n",
                          chat_tokenizer: Any = None) -> str:
    """A prompt in the GPT-3 paper's layout: task description, solved examples, then the query left open.

    Each example is ``template`` filled with its input and output; the query is the template with an empty output
    and trailing spaces removed, so ``"cheese => "`` becomes ``"cheese =>"`` and the answer's first token carries
    its leading space (``" fromage"``), as it would in running text.

    Args:
        task: the task description, e.g. ``"Translate English to French:"`` (``""``: none).
        examples: ``(input, output)`` pairs, in the order they are shown (empty: zero-shot).
        query: the input to answer.
        template: a format string with the fields ``{input}`` and ``{output}``.
        separator: put between the description, the examples and the query.
        chat_tokenizer: if given, the text becomes the user's message in that tokenizer's chat template, followed by
            the start of the assistant's turn (``add_generation_prompt=True``); the answer then starts the
            assistant's reply, without a leading space.

    Returns:
        The prompt, a string.

    Raises:
        TypeError: an example is not an ``(input, output)`` pair of strings.
        ValueError: ``template`` lacks ``{input}`` or ``{output}`` (or has other fields).
    """
    try:
        probe = template.format(input="\0i", output="\0o")
    except (KeyError, IndexError) as e:
        raise ValueError(f"template may only use the fields {{input}} and {{output}}, got {template!r}") from e
    if "\0i" not in probe or "\0o" not in probe:
        raise ValueError(f"template must contain {{input}} and {{output}}, got {template!r}")
    lines = [task] if task else []
    for i, pair in enumerate(examples):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise TypeError(f"examples[{i}] must be an (input, output) pair of strings, got {pair!r}; "
                            "map integer labels to their words first")
        lines.append(template.format(input=pair[0], output=pair[1]))
    lines.append(template.format(input=query, output="").rstrip(" "))
    text = separator.join(lines)
    if chat_tokenizer is None:
        return text
    return chat_tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=False)


def draw_shots(texts: Sequence[str], labels: Sequence[Hashable], k: int, *, balance: bool = True,
               counts: Mapping[Hashable, int] | None = None, order: str = "random",
               seed: int = 0) -> list[tuple[str, Hashable]]:
    """Draw ``k`` labelled examples for a few-shot prompt, without replacement.

    Args:
        texts, labels: the pool to draw from (e.g. the training split), one label per text.
        k: how many examples (0: zero-shot, an empty list).
        balance: if True, the classes' counts differ by at most one (which classes get the extra examples is
            random); if False, the ``k`` examples are a uniform sample of the pool, so the classes come in about
            the pool's proportions and a small ``k`` may hold one class only.
        counts: exact examples per class, e.g. ``{0: 4, 1: 0}`` (overrides ``balance``; must add up to ``k``).
        order: ``"random"`` (shuffled), ``"grouped"`` (sorted by label, so the largest label comes last), or
            ``"interleaved"`` (one of each class in turn, in sorted label order, while each lasts).
        seed: the draw and the shuffle depend on it alone.

    Returns:
        ``[(text, label), ...]`` of length ``k``.

    Raises:
        ValueError: lengths differ, ``k`` is negative or too large, a class has too few examples, ``counts`` does
            not add up to ``k`` or names an unknown label, or ``order`` is unknown.
    """
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length: {len(texts)} and {len(labels)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(texts):
        raise ValueError(f"k must be an int in 0..{len(texts)} (the pool's size), got {k!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    rng = random.Random(seed)
    by_class: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    classes = sorted(by_class)
    if counts is not None:
        unknown = set(counts) - set(classes)
        if unknown:
            raise ValueError(f"counts names labels not in the pool: {sorted(unknown)}; the pool has {classes}")
        if sum(counts.values()) != k or min(counts.values(), default=0) < 0:
            raise ValueError(f"counts must be >= 0 and add up to k = {k}, got {dict(counts)}")
        wanted = {c: counts.get(c, 0) for c in classes}
    elif balance:
        extra = set(rng.sample(classes, k % len(classes)))
        wanted = {c: k // len(classes) + (c in extra) for c in classes}
    else:
        wanted = None
    if wanted is None:
        chosen = rng.sample(range(len(texts)), k)
    else:
        chosen = []
        for c in classes:
            if wanted[c] > len(by_class[c]):
                raise ValueError(f"label {c!r} has {len(by_class[c])} examples, {wanted[c]} were asked for")
            chosen += rng.sample(by_class[c], wanted[c])
    rng.shuffle(chosen)
    if order == "grouped":
        chosen.sort(key=lambda i: classes.index(labels[i]))  # stable: random within a class
    elif order == "interleaved":
        queues = [[i for i in chosen if labels[i] == c] for c in classes]
        chosen = [q[j] for j in range(max(map(len, queues), default=0)) for q in queues if j < len(q)]
    return [(texts[i], labels[i]) for i in chosen]


def label_token_ids(tokenizer: Any, label_words: Sequence[str]) -> list[int]:
    """The first token id of each label word (tokenized without special tokens).

    Raises:
        ValueError: fewer than two words, an empty word, or two words that start with the same token (they
            could not be told apart by the next token alone: rephrase one).
    """
    if isinstance(label_words, str) or len(label_words) < 2:
        raise ValueError(f"label_words must be a sequence of at least two words, got {label_words!r}")
    ids = []
    for word in label_words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if not tokens:
            raise ValueError(f"label word {word!r} has no tokens")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        words = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"label words {list(label_words)} start with the same tokens {words}: their first tokens "
                         "must differ")
    return ids


def token_ids_containing(tokenizer: Any, text: str) -> list[int]:
    """Ids of every vocabulary token whose decoded text contains ``text``: ``token_ids_containing(tok, "\\n")``
    gives the ``stop_ids`` that end a generation at the end of its line, whichever token the line break comes in
    (``"\\n"``, ``".\\n\\n"``, ...).

    Raises:
        ValueError: ``text`` is empty.
    """
    if not text:
        raise ValueError("text must be a non-empty string, e.g. '\\n'")
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, piece in enumerate(pieces) if text in piece]


def label_probs_from_logits(logits: Tensor, attention_mask: Tensor, label_ids: Sequence[int], *,
                            renormalize: bool = True) -> Tensor:
    """Probabilities of the label tokens as the next token after each sequence's last real token.

    Args:
        logits: ``(B, T, V)`` next-token logits; position t predicts token t + 1.
        attention_mask: ``(B, T)``, 1 = real token, 0 = padding on the right (each row's last 1 is its end).
        label_ids: one token id per label, ``L`` of them.
        renormalize: True: divide by their sum, so each row adds up to 1 over the labels (the same as a softmax
            over the label tokens' logits alone); False: the probabilities under the full vocabulary's softmax.

    Returns:
        ``(B, L)`` float32 probabilities.
    """
    if logits.ndim != 3 or attention_mask.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and attention_mask (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    last = attention_mask.long().sum(dim=1) - 1  # (B,) index of each row's last real token (right padding)
    if (last < 0).any():
        raise ValueError("a row of attention_mask has no real token")
    rows = torch.arange(logits.shape[0], device=logits.device)
    final = logits[rows, last.to(logits.device)].float()  # (B, V) logits of the token after each prompt
    ids = torch.as_tensor(list(label_ids), device=logits.device)
    if renormalize:
        return final[:, ids].softmax(dim=-1)  # (B, L)
    return final.softmax(dim=-1)[:, ids]  # (B, L)


def shared_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the longest common start of ``token_lists``, leaving at least one token to every list: the
    tokens of a batch of few-shot prompts that hold the task description and the examples, which every query
    shares (0 if the lists start differently)."""
    if len(token_lists) == 0:
        return 0
    n = min(len(t) for t in token_lists) - 1
    first = token_lists[0]
    for tokens in token_lists[1:]:
        n = next((i for i in range(n) if tokens[i] != first[i]), n)
    return max(n, 0)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def label_word_scores(model: nn.Module, tokenizer: Any, prompts: Sequence[str], label_words: Sequence[str], *,
                      batch_size: int = 16, renormalize: bool = True, reuse_prefix: bool = True) -> Tensor:
    """Score each prompt's next token against the label words: a classifier made from a causal LM.

    Each prompt is tokenized as it is (no special tokens added: a chat template writes its own); the prompts of a
    batch are padded on the right, and the logits at each prompt's last real token give the next-token
    distribution, of which we keep the label words' first tokens (:func:`label_token_ids`).

    When the prompts' tokens share a start (:func:`shared_prefix`: the task description and the same shots), that
    start is run once and its keys and values (a KV cache) are reused by every batch, which then runs only the
    query's tokens. The result is the same as running every whole prompt, up to float rounding.

    Args:
        model: a transformers causal LM (run in eval mode; its mode is restored).
        tokenizer: its tokenizer.
        prompts: ``n_prompts`` strings, each ending where the label word should follow.
        label_words: e.g. ``[" negative", " positive"]`` (mind the leading space after ``"Sentiment:"``).
        batch_size: prompts per forward pass.
        renormalize: True: probabilities renormalized over the label words (each row adds up to 1); False: their
            probabilities under the whole vocabulary (the row's sum is the mass the model puts on the labels).
        reuse_prefix: run the shared start once (see above); False runs every whole prompt.

    Returns:
        ``(n_prompts, n_labels)`` float32 probabilities on the CPU; ``argmax(-1)`` is the predicted label.

    Raises:
        ValueError: no prompts, an empty prompt, ``batch_size < 1``, or label words as in :func:`label_token_ids`.
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty sequence of strings (wrap a single prompt in a list)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    label_ids = label_token_ids(tokenizer, label_words)
    token_lists = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    if min(map(len, token_lists)) == 0:
        raise ValueError("a prompt is empty: nothing to predict the label from")
    n_shared = shared_prefix(token_lists) if reuse_prefix else 0
    prefix_ids = token_lists[0][:n_shared]
    rests = [t[n_shared:] for t in token_lists]  # each keeps >= 1 token
    device = _model_device(model)
    was_training = model.training
    model.eval()
    key = cache_argument(model)
    prefix_cache = None
    try:
        if prefix_ids and key is not None:
            from transformers import DynamicCache

            prefix_cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True, **{key: prefix_cache})
        elif prefix_ids:  # a model without a KV cache: run whole prompts
            rests = [prefix_ids + r for r in rests]
            prefix_ids = []
        out = []
        for start in range(0, len(rests), batch_size):
            chunk = rests[start:start + batch_size]
            width = max(map(len, chunk))
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk], device=device)  # (B, T)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk], device=device)  # (B, T)
            kwargs = {}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)  # the forward appends to it: keep the prefix's own intact
                cache.batch_repeat_interleave(len(chunk))
                ones = torch.ones(len(chunk), len(prefix_ids), dtype=mask.dtype, device=device)
                kwargs = {key: cache, "use_cache": True, "attention_mask": torch.cat([ones, mask], dim=1)}
            else:
                kwargs = {"attention_mask": mask}
            logits = model(input_ids=ids, **kwargs).logits  # (B, T, V): the query's positions only
            out.append(label_probs_from_logits(logits, mask, label_ids, renormalize=renormalize).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)
