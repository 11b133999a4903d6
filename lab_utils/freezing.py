"""Training only the last layers: freeze a pretrained transformer except its top ``k`` layers and its head.

The simplest parameter-efficient fine-tuning (Lialin et al. 2023, "Scaling Down to Scale Up"): the frozen lower
layers need no gradients and no optimizer state, and backward stops at the lowest trainable layer, so their
activations need not be kept either. Chapter "Parameter-efficient fine-tuning" (chapters/03_peft/last_layers).
Works on transformers models whose base model holds ``encoder.layer`` (BERT, RoBERTa) or ``layers`` (Llama).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from torch import nn

__all__ = ["encoder_layers", "freeze_all_but_last", "matches_key"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of ``model``, bottom (next to the embeddings) first.

    Args:
        model: a transformers model with or without a head: ``BertForSequenceClassification`` or ``BertModel``
            (``bert.encoder.layer``), ``LlamaForCausalLM``/``LlamaForSequenceClassification`` or ``LlamaModel``
            (``model.layers``), or any model whose ``base_model`` has ``encoder.layer`` or ``layers``.

    Returns:
        The ``nn.ModuleList`` of layers (the model's own modules, not copies).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or has no such stack of layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (a transformers model), got {type(model).__name__}")
    base = getattr(model, "base_model", model)  # BertForX -> .bert, LlamaForX -> .model; a bare model -> itself
    for holder in (base, model):
        encoder = getattr(holder, "encoder", None)
        layers = getattr(encoder, "layer", None) if encoder is not None else getattr(holder, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    children = ", ".join(name for name, _ in model.named_children())
    raise TypeError(f"cannot find the transformer layers of {type(model).__name__} (children: {children}); expected "
                    "a BERT-like model (encoder.layer) or a Llama-like model (layers)")


def matches_key(name: str, key: str) -> bool:
    """PEFT's rule for module names (``target_modules``, ``modules_to_save``): ``name`` matches ``key`` if it is
    the key or ends with ``"." + key`` (so ``"query"`` matches ``bert.encoder.layer.3.attention.self.query``)."""
    return name == key or name.endswith("." + key)


def freeze_all_but_last(model: nn.Module, k: int, *, head: str | Iterable[str] = ("pooler", "classifier")) -> nn.Module:
    """Freeze every parameter of ``model`` except those of its last ``k`` layers and of its ``head`` modules.

    ``k = 0`` trains the head only (a linear probe on frozen features, plus the pooler for BERT); ``k`` equal to the
    number of layers trains every layer, the embeddings staying frozen. Works in place.

    Args:
        model: a model ``encoder_layers`` understands, e.g. ``BertForSequenceClassification``.
        k: how many of the top layers to train, ``0 <= k <= len(encoder_layers(model))``.
        head: names (or name suffixes, PEFT's rule: ``name == key`` or ``name.endswith("." + key)``) of the modules
            trained whatever ``k`` is. BERT classifiers: ``("pooler", "classifier")``; Llama classifiers:
            ``("norm", "score")`` (the final norm sits after the last layer). Do not list a head tied to the input
            embeddings (``lm_head`` of SmolLM2): training it would train the embeddings too.

    Returns:
        ``model`` itself, with ``requires_grad`` set on every parameter.

    Raises:
        ValueError: ``k`` is not an integer in ``[0, n_layers]``, or a ``head`` key matches no module.
        TypeError: see ``encoder_layers``.
    """
    layers = encoder_layers(model)
    n_layers = len(layers)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= n_layers:
        raise ValueError(f"k must be an integer between 0 (head only) and {n_layers} (all layers of this "
                         f"{type(model).__name__}), got {k!r}")
    keys = (head,) if isinstance(head, str) else tuple(head)
    modules = dict(model.named_modules())
    for key in keys:
        if not any(matches_key(name, key) for name in modules):
            top = ", ".join(name for name, _ in model.named_children())
            raise ValueError(f"head key {key!r} matches no module of {type(model).__name__} (top-level modules: "
                             f"{top}); pass head=(...) with the names of its head, e.g. ('norm', 'score') for Llama")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[n_layers - int(k):]:
        layer.requires_grad_(True)
    for name, module in modules.items():
        if any(matches_key(name, key) for key in keys):
            module.requires_grad_(True)
    return model
