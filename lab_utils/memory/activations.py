"""Activation memory: a per-layer estimate of the tensors autograd saves for backward (BERT and Llama layers).

After Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (eq. 1), redone for
any dtype, eager or fused (SDPA) attention, dropout masks and activation checkpointing; exact against
:func:`lab_utils.memory.saved_tensor_bytes` for transformers' layers (tests/test_memory.py). Chapter "Fine-tuning and
its memory bill" (the activations notebook). Units: bytes.
"""

from __future__ import annotations

import torch

from lab_utils.memory.calculator import _check_count, bytes_per_element

__all__ = ["ARCHITECTURES", "ATTENTIONS", "activation_bytes", "activation_bytes_for"]

ARCHITECTURES = ("bert", "llama")
ATTENTIONS = ("eager", "sdpa")


def activation_bytes(*, batch_size: int, seq_len: int, hidden_size: int, n_layers: int, n_heads: int,
                     intermediate_size: int, dtype: torch.dtype | str = torch.float32, checkpointing: bool = False,
                     architecture: str = "bert", attention: str = "eager", dropout: bool | None = None,
                     n_kv_heads: int | None = None, vocab_size: int = 0, device: torch.device | str = "cuda") -> int:
    """Bytes of the tensors autograd saves for backward in ``n_layers`` transformer layers (a per-layer estimate).

    Korthikanti et al. 2022 (eq. 1) count s*b*h*(34 + 5*a*s/h) bytes per layer for a GPT layer in 16-bit with 1-byte
    dropout masks (s = seq_len, b = batch, h = hidden, a = heads). Redone for e bytes per element, intermediate size
    i, mask bytes m (1: CUDA keeps a bool mask; PyTorch's CPU dropout keeps a float mask, m = e) and T = s*b:

    - "bert" (post-LayerNorm, GELU, dropout): inputs of Q/K/V (one tensor), Q, K, V, the context, LayerNorm 1's
      input, FFN input, LayerNorm 2's input: 8e*T*h; two dropout masks 2m*T*h; GELU input and output 2e*T*i;
      softmax output, its dropout mask and output (2e+m)*a*s*T; LayerNorm mean/rstd 16*T.
      With e=2, m=1, i=4h: 34*T*h + 5*a*s*T (Korthikanti's count). Without dropout: no masks and e*a*s*T.
    - "llama" (pre-RMSNorm, SwiGLU, no dropout, GQA): per RMSNorm an fp32 copy of its input, the normalised and the
      scaled output (4 + 2e)*T*h + 4*T; Q, repeated K and V, context 4e*T*h; gate, SiLU, up and their product
      4e*T*i; softmax in fp32 4*a*s*T (+ e*a*s*T for its cast when e != 4).
    - attention="sdpa" (a fused flash/memory-efficient kernel, e.g. on a GPU) keeps no s x s matrix: Q, K, V and
      the output plus an fp32 log-sum-exp 4*a*T. Llama: K and V with n_kv_heads when transformers can drop the
      mask (no padding); with a padding mask it repeats them (pass n_kv_heads=n_heads; the kernel may also keep
      the s x s mask). On a CPU, BERT in training (attention dropout) falls back to the eager math path.

    With checkpointing every layer keeps only its input (e*T*h) and one layer is recomputed at a time during
    backward: n_layers*e*T*h + one layer. ``vocab_size`` > 0 adds a language-model loss's fp32 log-softmax 4*T*V.
    Embeddings and heads otherwise are left out (a few T*h). Exact against :func:`saved_tensor_bytes` for
    transformers' BERT and Llama layers in fp32 on a CPU (``tests/test_memory.py``); it is not a peak: temporaries of
    the backward pass come on top, and under autocast the 16-bit copies of the weights that matmuls save as well.

    Args:
        batch_size, seq_len, hidden_size, n_layers, n_heads, intermediate_size: b, s, h, L, a, i (>= 1).
        dtype: dtype of the activations (fp32, or bf16/fp16 under autocast or a half-precision model).
        checkpointing: activation (gradient) checkpointing of every layer.
        architecture: "bert" or "llama".
        attention: "eager" (the s x s probabilities are saved) or "sdpa" (fused kernel).
        dropout: default True for "bert", False for "llama".
        n_kv_heads: Llama's key/value heads (default n_heads).
        vocab_size: add the fp32 log-softmax of a language-model head (0: no such head).
        device: "cuda" (1-byte dropout masks) or "cpu" (masks of e bytes).

    Returns:
        Bytes (int).
    """
    b, s, h, L, a, i = (_check_count(v, k) for k, v in dict(
        batch_size=batch_size, seq_len=seq_len, hidden_size=hidden_size, n_layers=n_layers, n_heads=n_heads,
        intermediate_size=intermediate_size).items())
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; choose one of {ATTENTIONS}")
    kv = a if n_kv_heads is None else _check_count(n_kv_heads, "n_kv_heads")
    if min(b, s, h, a, kv) < 1 or h % a or a % kv:
        raise ValueError(f"need sizes >= 1, hidden_size divisible by n_heads and n_heads by n_kv_heads; got h={h}, "
                         f"a={a}, kv={kv}, b={b}, s={s}")
    e = bytes_per_element(dtype)
    m = 1 if torch.device(device).type == "cuda" else e
    T, scores = s * b, a * s * s * b
    if architecture == "bert":
        drop = True if dropout is None else dropout
        layer = 8 * e * T * h + 2 * e * T * i + 16 * T + (2 * m * T * h if drop else 0)
        if attention == "eager":
            layer += ((2 * e + m) if drop else e) * scores
        else:
            layer += 4 * a * T
    else:
        if dropout:
            raise ValueError("the 'llama' estimate has no dropout (Llama trains without it); use dropout=None/False")
        layer = 2 * ((4 + 2 * e) * T * h + 4 * T) + 4 * e * T * i
        if attention == "eager":
            layer += 4 * e * T * h + (4 + (e if e != 4 else 0)) * scores
        else:
            layer += 2 * e * T * h + 2 * e * T * h * kv // a + 4 * a * T
    kept = L * e * T * h + layer if checkpointing and L else L * layer
    return int(kept + 4 * T * _check_count(vocab_size, "vocab_size"))


def activation_bytes_for(config: object, *, batch_size: int, seq_len: int, dtype: torch.dtype | str = torch.float32,
                         checkpointing: bool = False, attention: str | None = None, lm_head: bool | None = None,
                         device: torch.device | str = "cuda") -> int:
    """:func:`activation_bytes` with the sizes read from a transformers config (BERT-like or Llama-like).

    Args:
        config: e.g. ``model.config`` (``model_type`` "bert" or a Llama-family decoder: llama, mistral, qwen2...).
        attention: default the config's attention implementation ("sdpa" unless it says "eager"; "eager" for BERT
            with attention dropout on a CPU, where SDPA falls back to the math path).
        lm_head: add the language-model head's logits (default: True for decoders, False for BERT).
        batch_size, seq_len, dtype, checkpointing, device: as in :func:`activation_bytes`.
    """
    model_type = getattr(config, "model_type", None)
    if model_type is None or not hasattr(config, "hidden_size"):
        raise TypeError(f"config must be a transformers config, got {type(config).__name__}")
    architecture = "bert" if model_type in ("bert", "roberta") else "llama"
    dropout = None
    if architecture == "bert":
        dropout = bool(getattr(config, "hidden_dropout_prob", 0) or getattr(config, "attention_probs_dropout_prob", 0))
    if attention is None:  # PyTorch's CPU SDPA has no fused kernel with dropout: it falls back to the math path
        eager = getattr(config, "_attn_implementation", None) == "eager" or (
            torch.device(device).type == "cpu" and architecture == "bert" and dropout)
        attention = "eager" if eager else "sdpa"
    lm_head = architecture == "llama" if lm_head is None else lm_head
    return activation_bytes(
        batch_size=batch_size, seq_len=seq_len, hidden_size=config.hidden_size, n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads, intermediate_size=config.intermediate_size, dtype=dtype,
        checkpointing=checkpointing, architecture=architecture, attention=attention, dropout=dropout,
        n_kv_heads=getattr(config, "num_key_value_heads", None), vocab_size=config.vocab_size if lm_head else 0,
        device=device)
