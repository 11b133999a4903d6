"""Prompt tuning (Lester et al. 2021): n trainable "virtual token" vectors prepended to a frozen model's input.

The model's weights stay frozen (except the modules named in ``trainable``, e.g. a new classification head); only the
prompt, an ``(n, hidden_size)`` matrix, is trained. Chapter "Parameter-efficient fine-tuning" (chapters/03_peft),
side by side with PEFT's ``PromptTuningConfig``, which computes the same thing (tests/test_prompt_tuning.py).
Shapes: ``B`` batch, ``T`` tokens, ``n`` virtual tokens, ``h`` hidden size; masks are 1 = attend, as Hugging Face's.

BERT note: the virtual tokens come first, so they take positions ``0..n-1`` (and token type 0) and the real
``[CLS]`` moves to position ``n``. ``BertForSequenceClassification``'s pooler reads position 0, i.e. the first
*virtual* token, not ``[CLS]``. PEFT does the same for ``TaskType.SEQ_CLS`` (``PeftModelForSequenceClassification
.forward`` concatenates ``(prompts, inputs_embeds)`` and calls the model with ``inputs_embeds``): the classifier
reads a trained vector after 6 frozen layers of attention over the sentence.

``LabelWordClassifier`` turns a causal LM (with or without a prompt or PEFT prefix) into a classifier: the scores of
one label word per class (e.g. " negative", " positive") at the last real token, as in PET (Schick and Schutze 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lab_utils.freezing import matches_key

__all__ = ["LabelWordClassifier", "LabelWordOutput", "PromptTuning", "nearest_tokens", "prepend_prompt"]

IGNORE_INDEX = -100  # Hugging Face's "no target" label, given to the virtual tokens when labels are per token


def prepend_prompt(prompt: Tensor, inputs_embeds: Tensor,
                   attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Put the same prompt in front of every sequence of a batch, and let every token attend to it.

    Args:
        prompt: ``(n, h)`` the virtual tokens.
        inputs_embeds: ``(B, T, h)`` the real tokens' input embeddings.
        attention_mask: ``(B, T)`` 1 = real token, 0 = padding; ``None`` means all ones.

    Returns:
        ``(embeds, mask)``: ``(B, n + T, h)`` prompt first, then the tokens; ``(B, n + T)`` with ones for the
        ``n`` virtual tokens (they are never padding), in ``attention_mask``'s dtype (int64 when it is ``None``).

    Raises:
        ValueError: shapes that do not fit (prompt not 2-D, hidden sizes differ, mask not ``(B, T)``).
    """
    if prompt.dim() != 2:
        raise ValueError(f"prompt must be (n_virtual_tokens, hidden_size), got shape {tuple(prompt.shape)}")
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != prompt.shape[-1]:
        raise ValueError(f"inputs_embeds must be (batch, tokens, {prompt.shape[-1]}) to match the prompt's hidden "
                         f"size, got shape {tuple(inputs_embeds.shape)}")
    B, T, _ = inputs_embeds.shape
    n = prompt.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.long, device=inputs_embeds.device)
    if tuple(attention_mask.shape) != (B, T):
        raise ValueError(f"attention_mask must be (batch, tokens) = {(B, T)}, got {tuple(attention_mask.shape)}")
    prompts = prompt.to(inputs_embeds.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, n, h), a view: one copy trained
    ones = torch.ones(B, n, dtype=attention_mask.dtype, device=attention_mask.device)  # (B, n)
    return torch.cat((prompts, inputs_embeds), dim=1), torch.cat((ones, attention_mask), dim=1)



class PromptTuning(nn.Module):
    """A frozen model with ``n`` trainable virtual tokens in front of its input.

    Args:
        model: a Hugging Face model with ``get_input_embeddings()`` that accepts ``inputs_embeds`` (e.g.
            ``BertForSequenceClassification``, a Llama). Frozen in place, except the ``trainable`` modules.
        n_virtual_tokens: ``n >= 1``, the prompt's length.
        init_token_ids: ``n`` token ids whose embeddings become the initial prompt ("text initialisation"; to
            start from a shorter text, repeat its ids as PEFT does). ``None``: random normal with the
            embedding matrix's standard deviation (seeded by torch's global generator).
        trainable: module names (PEFT's rule: the name or its dotted suffix) that stay trainable, e.g. the new
            ``"classifier"`` of a sequence classifier; ``()`` for a model without a new head.

    Attributes:
        model: the wrapped model. prompt: ``nn.Parameter`` ``(n, h)``, float32 like PEFT's prompt encoder.
        n_virtual_tokens: ``n``.

    Raises:
        ValueError: ``n < 1``, ``init_token_ids`` of the wrong length or outside the vocabulary, or a
            ``trainable`` key that names no module.
        TypeError: the model has no input embeddings.
    """

    def __init__(self, model: nn.Module, n_virtual_tokens: int, *, init_token_ids: Sequence[int] | Tensor | None = None,
                 trainable: Sequence[str] = ("classifier",)) -> None:
        super().__init__()
        if isinstance(n_virtual_tokens, bool) or not isinstance(n_virtual_tokens, int) or n_virtual_tokens < 1:
            raise ValueError(f"n_virtual_tokens must be an int >= 1, got {n_virtual_tokens!r}")
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"{type(model).__name__} has no get_input_embeddings() returning an nn.Embedding: "
                            "pass a Hugging Face model (e.g. BertForSequenceClassification)")
        if isinstance(trainable, str):
            trainable = (trainable,)
        module_names = [name for name, _ in model.named_modules()]
        missing = [key for key in trainable if not any(matches_key(name, key) for name in module_names)]
        if missing:
            top = sorted({name.split(".")[0] for name in module_names if name})
            raise ValueError(f"trainable keys {missing} match no module of {type(model).__name__}; its top-level "
                             f"modules are {top} (use trainable=() to train the prompt only)")
        weight = embedding.weight.detach()  # (V, h)
        vocab_size, hidden = weight.shape
        if init_token_ids is None:
            init = torch.randn(n_virtual_tokens, hidden, device=weight.device) * weight.float().std()
        else:
            ids = torch.as_tensor(init_token_ids, dtype=torch.long, device=weight.device).flatten()
            if ids.numel() != n_virtual_tokens:
                raise ValueError(f"init_token_ids has {ids.numel()} ids but n_virtual_tokens={n_virtual_tokens}: "
                                 "give one id per virtual token (repeat or cut the text's ids to fit)")
            if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
                raise ValueError(f"init_token_ids must lie in [0, {vocab_size}) (the vocabulary), got "
                                 f"{ids.min().item()}..{ids.max().item()}")
            init = weight[ids].float().clone()  # (n, h)
        self.model = model
        self.n_virtual_tokens = n_virtual_tokens
        self.prompt = nn.Parameter(init)  # (n, h)
        model.requires_grad_(False)  # freeze everything, then unfreeze the `trainable` modules (and their children)
        for name, module in model.named_modules():
            if any(matches_key(name, key) for key in trainable):
                module.requires_grad_(True)

    @property
    def config(self):
        """The wrapped model's configuration (so code that reads ``model.config`` keeps working)."""
        return self.model.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None, **kwargs):
        """Embed ``input_ids``, prepend the prompt, extend the mask, and run the wrapped model.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``, 1 = attend; ``None`` = all ones.
            labels: ``(B,)`` for a sequence classifier; ``(B, T)`` per-token labels get ``n`` leading
                ``IGNORE_INDEX`` so that they stay aligned with the longer sequence.
            **kwargs: passed on; ``token_type_ids`` ``(B, T)`` get ``n`` leading zeros (as PEFT does).

        Returns:
            The wrapped model's output; per-token outputs (e.g. a causal LM's logits) have ``n + T`` positions.

        Raises:
            ValueError: ``inputs_embeds`` or ``position_ids`` passed (the prompt shifts every position).
        """
        for key in ("inputs_embeds", "position_ids"):
            if kwargs.get(key) is not None:
                raise ValueError(f"PromptTuning builds inputs_embeds and positions itself; do not pass {key}")
        embeds = self.model.get_input_embeddings()(input_ids)  # (B, T, h)
        embeds, mask = prepend_prompt(self.prompt, embeds, attention_mask)  # (B, n + T, h), (B, n + T)
        B, n = input_ids.shape[0], self.n_virtual_tokens
        if kwargs.get("token_type_ids") is not None:
            tt = kwargs["token_type_ids"]
            kwargs["token_type_ids"] = torch.cat((tt.new_zeros(B, n), tt), dim=1)
        if labels is not None and labels.dim() == 2 and labels.shape == input_ids.shape:
            labels = torch.cat((labels.new_full((B, n), IGNORE_INDEX), labels), dim=1)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)


def nearest_tokens(vectors: Tensor, embedding_matrix: Tensor, tokenizer, k: int = 5) -> list[list[str]]:
    """The ``k`` vocabulary tokens whose embeddings are nearest (cosine similarity) to each vector.

    A way to "read" a learned prompt (Lester et al. 2021, §7): the vectors need not be near any token at all, so
    look at the similarities too, not only the words.

    Args:
        vectors: ``(n, h)``, e.g. ``PromptTuning.prompt``.
        embedding_matrix: ``(V, h)``, e.g. ``model.get_input_embeddings().weight``.
        tokenizer: converts ids to tokens (``convert_ids_to_tokens``).
        k: how many neighbours per vector, ``1 <= k <= V``.

    Returns:
        ``n`` lists of ``k`` tokens, nearest first.

    Raises:
        ValueError: shapes that do not fit, or ``k`` out of range.
    """
    if vectors.dim() != 2 or embedding_matrix.dim() != 2 or vectors.shape[1] != embedding_matrix.shape[1]:
        raise ValueError(f"need vectors (n, h) and embedding_matrix (V, h) with the same h, got "
                         f"{tuple(vectors.shape)} and {tuple(embedding_matrix.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= embedding_matrix.shape[0]:
        raise ValueError(f"k must be an int in [1, {embedding_matrix.shape[0]}] (the vocabulary size), got {k!r}")
    with torch.no_grad():
        v = nn.functional.normalize(vectors.detach().float(), dim=-1)  # (n, h)
        e = nn.functional.normalize(embedding_matrix.detach().float().to(v.device), dim=-1)  # (V, h)
        top = (v @ e.T).topk(k, dim=-1).indices  # (n, k)
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in top]


@dataclass
class LabelWordOutput:
    """What :class:`LabelWordClassifier` returns, named like a Hugging Face classifier's output."""

    logits: Tensor  # (B, C)
    loss: Tensor | None = None


class LabelWordClassifier(nn.Module):
    """A causal language model as a classifier: class c's logit is the LM's logit of ``label_token_ids[c]`` as the
    next token after the last real token of the input (a "verbalizer").

    Args:
        lm: a causal LM returning ``logits`` ``(B, L, V)``, where ``L = T`` (plain, or PEFT prefix tuning) or
            ``L = n + T`` (``PromptTuning``: the virtual tokens come first; the last ``T`` positions are the input's).
        label_token_ids: one token id per class, e.g. the ids of " negative" and " positive".

    Inputs are right-padded (padding after the text): the last real token of row b is ``attention_mask[b].sum() - 1``.

    Raises:
        ValueError: fewer than two label tokens, or a repeated one.
    """

    def __init__(self, lm: nn.Module, label_token_ids: Sequence[int]) -> None:
        super().__init__()
        ids = torch.as_tensor(list(label_token_ids), dtype=torch.long)
        if ids.dim() != 1 or ids.numel() < 2 or ids.unique().numel() != ids.numel():
            raise ValueError(f"label_token_ids must be >= 2 distinct token ids (one per class), got {ids.tolist()}")
        self.lm = lm
        self.register_buffer("label_token_ids", ids, persistent=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                labels: Tensor | None = None) -> LabelWordOutput:
        """``logits`` ``(B, C)`` (the label words' LM logits); ``loss``: cross-entropy with ``labels`` ``(B,)``."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask[:, 0].eq(0).any():
            raise ValueError("LabelWordClassifier needs right padding (tokenizer.padding_side = 'right')")
        lm_logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        last = lm_logits.shape[1] - T + attention_mask.sum(dim=1) - 1  # (B,) the last real token, after any prompt
        logits = lm_logits[torch.arange(B, device=last.device), last][:, self.label_token_ids]  # (B, C)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return LabelWordOutput(logits=logits, loss=loss)
