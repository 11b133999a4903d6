"""QLoRA: LoRA adapters trained on top of a frozen, 4-bit quantized base model (Dettmers et al. 2023).

Builds chapter 3's MiniLM sentiment classifier the QLoRA way, with the libraries a practitioner uses:
bitsandbytes stores the frozen encoder's linear weights in 4 bits (NF4 or FP4, blocks of 64, optional double
quantization) through transformers' ``BitsAndBytesConfig``; PEFT adds LoRA (``prepare_model_for_kbit_training``,
``LoraConfig(task_type=SEQ_CLS)``) and trains the head (pooler + classifier, kept in fp32) in full. The same
function builds the same LoRA on an unquantized 32- or 16-bit base, for comparison. Chapter "Quantization"
(chapters/04_quantization/qlora) and the QLoRA row of chapters/03_peft/comparison. Sizes in bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lab_utils import assets, profile, tweets

__all__ = ["BASES", "HEAD_MODULES", "LORA_TARGETS", "base_footprint", "encoder_bits_per_weight", "qlora_classifier",
           "quant_constant_bytes", "quantization_config", "quantized_linear_count"]

LORA_TARGETS = ("query", "key", "value", "attention.output.dense")  # chapter 3's LoRA: the attention projections
# The head, trained in full by every method of chapter 3 and never quantized (a trained 4-bit weight cannot take a
# gradient step). Full module names, so that every transformers 5 release's skip rule matches them.
HEAD_MODULES = ("bert.pooler.dense", "classifier")
_HEAD_TO_SAVE = ["pooler", "classifier"]  # PEFT's modules_to_save: trainable copies of the whole head
BASES = {  # base name -> (bitsandbytes 4-bit type or None, storage dtype of an unquantized base)
    "nf4": ("nf4", None), "fp4": ("fp4", None),
    "fp32": (None, torch.float32), "bf16": (None, torch.bfloat16), "fp16": (None, torch.float16),
}
_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def quantization_config(*, quant_type: str = "nf4", double_quant: bool = True,
                        compute_dtype: torch.dtype | None = None,
                        skip_modules: Iterable[str] = HEAD_MODULES):
    """The ``BitsAndBytesConfig`` of a 4-bit frozen base, as in the QLoRA paper.

    Args:
        quant_type: ``"nf4"`` (4-bit NormalFloat) or ``"fp4"``; blocks of 64 weights, one absmax each.
        double_quant: also quantize the absmax constants (8-bit, blocks of 256): ~0.127 instead of 0.5 extra bits
            per weight.
        compute_dtype: dtype the 4-bit weights are de-quantized to for each matmul; None = the profile's
            (bf16 on recent GPUs, fp16 on a T4, fp32 on CPU).
        skip_modules: full module names left unquantized (default: the head).

    Returns:
        A ``transformers.BitsAndBytesConfig``.

    Raises:
        ValueError: unknown ``quant_type`` or ``compute_dtype``.
    """
    from transformers import BitsAndBytesConfig

    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}")
    if compute_dtype is None:
        compute_dtype = profile.current().dtype
    if compute_dtype not in _COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {_COMPUTE_DTYPES} or None, got {compute_dtype!r}")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=bool(double_quant), bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=list(skip_modules))


def _device_map(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": str(device)}


def _cast_head_input(module: nn.Module, args: tuple) -> tuple:
    # A 16-bit base hands 16-bit hidden states to the fp32 head: cast them (the head trains in fp32, as in QLoRA).
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def qlora_classifier(*, base: str = "nf4", r: int = 16, lora_alpha: float = 32, lora_dropout: float = 0.0,
                     target_modules: Iterable[str] = LORA_TARGETS, double_quant: bool = True,
                     compute_dtype: torch.dtype | None = None, gradient_checkpointing: bool = False,
                     device: torch.device | str | None = None, seed: int = 0) -> nn.Module:
    """MiniLM with a fresh two-label head (drawn with ``seed``), its encoder frozen in ``base``, LoRA on top.

    Trainable: the LoRA matrices (fp32) and the head, BERT's pooler + the classifier (fp32, PEFT's
    ``modules_to_save``), as every method of chapter 3. Frozen: everything else, stored as ``base`` says. Works
    with ``adaptation.fit`` / ``predict`` / ``test_report`` / ``inference_latency`` on CPU and CUDA.

    Args:
        base: how the frozen encoder is stored: ``"nf4"`` / ``"fp4"`` (bitsandbytes 4-bit, every linear layer of
            the encoder; embeddings and LayerNorms stay fp32) or ``"fp32"`` / ``"bf16"`` / ``"fp16"`` (plain LoRA
            on an unquantized base in that dtype).
        r, lora_alpha, lora_dropout, target_modules: PEFT's ``LoraConfig``; the default targets are chapter 3's
            (query, key, value and the attention output projection of each layer), scaling ``lora_alpha / r``.
        double_quant: 4-bit bases only: quantize the block constants too.
        compute_dtype: 4-bit bases only: matmul dtype (None = the profile's; see :func:`quantization_config`).
        gradient_checkpointing: recompute activations in the backward pass (QLoRA does it for large models;
            off by default, so that training steps compare with chapter 3's methods).
        device: where the model is loaded; default the active profile's device.
        seed: seeds torch before loading (the new head) and before LoRA's initialisation.

    Returns:
        A ``peft.PeftModelForSequenceClassification`` in eval mode on ``device``.

    Raises:
        ValueError: unknown ``base``, a non-positive ``r`` or ``lora_alpha``, dropout outside [0, 1), no targets,
            a negative ``seed``, or a 4-bit option given with an unquantized base.
    """
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification

    if base not in BASES:
        raise ValueError(f"base must be one of {sorted(BASES)}, got {base!r}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r (the LoRA rank) must be a positive int, got {r!r}")
    if not lora_alpha > 0:
        raise ValueError(f"lora_alpha must be > 0 (scaling = lora_alpha / r), got {lora_alpha!r}")
    if not 0 <= lora_dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not targets:
        raise ValueError(f"target_modules is empty: name layers to adapt, e.g. {list(LORA_TARGETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    quant_type, dtype = BASES[base]
    if quant_type is None and compute_dtype is not None:
        raise ValueError(f"compute_dtype applies to 4-bit bases only; base {base!r} computes in {dtype}")
    device = torch.device(device) if device is not None else profile.current().device

    names = list(tweets.BINARY_LABELS)
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    torch.manual_seed(seed)  # the new head, as adaptation.new_classifier(seed) draws it
    if quant_type is not None:
        config = quantization_config(quant_type=quant_type, double_quant=double_quant, compute_dtype=compute_dtype)
        model = assets.load_minilm(AutoModelForSequenceClassification, quantization_config=config,
                                   device_map=_device_map(device), dtype=torch.float32, **labels)
        # Freezes everything, casts what is not quantized (embeddings, LayerNorms, head) to fp32.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model = assets.load_minilm(AutoModelForSequenceClassification, dtype=torch.float32, **labels)
        model.bert.embeddings.to(dtype)  # the frozen base in 16 bits; the head stays fp32, exactly as drawn
        model.bert.encoder.to(dtype)
        model.to(device)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # LoRA's A matrices
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                      target_modules=targets, modules_to_save=list(_HEAD_TO_SAVE))
    model = get_peft_model(model, lora)
    model.base_model.model.bert.pooler.register_forward_pre_hook(_cast_head_input)
    return model.eval()


def _quant_state_bytes(state) -> int:
    # bitsandbytes' QuantState: the block absmax (fp32, or uint8 + its own state with double quantization),
    # the 16-entry code and an offset.
    if state is None:
        return 0
    total = 0
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if torch.is_tensor(value):
            total += value.numel() * value.element_size()
    return total + _quant_state_bytes(getattr(state, "state2", None))


def quant_constant_bytes(model: nn.Module) -> int:
    """Bytes of the bitsandbytes constants stored beside the quantized weights: each 4-bit weight's block absmax,
    code and offset (and their own constants with double quantization), each 8-bit weight's row scales (``SCB``).

    They are not parameters or buffers, so ``get_memory_footprint`` and a sum over ``parameters()`` miss them. Call
    it before the first forward pass of an 8-bit model, which moves the row scales elsewhere.

    Raises:
        TypeError: ``model`` is not a module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    total = 0
    for param in model.parameters():
        total += _quant_state_bytes(getattr(param, "quant_state", None))
        scales = getattr(param, "SCB", None)  # LLM.int8()'s per-row absmax
        if torch.is_tensor(scales):
            total += scales.numel() * scales.element_size()
    return total


def base_footprint(model: nn.Module) -> int:
    """Bytes of the base model's weights as stored: every parameter and buffer except PEFT's trained ones (LoRA
    matrices, trainable copies of the head), plus the bitsandbytes constants of the quantized weights
    (:func:`quant_constant_bytes`).

    Args:
        model: any model: a bare transformers model (everything counts) or one from :func:`qlora_classifier`
            (PEFT's untouched original of the head counts: it stays in memory).

    Returns:
        The number of bytes (int).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weights = sum(param.numel() * param.element_size() for name, param in model.named_parameters()
                  if "lora_" not in name and "modules_to_save" not in name)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return weights + buffers + quant_constant_bytes(model)  # LoRA and head copies are never quantized


def quantized_linear_count(model: nn.Module) -> int:
    """Number of bitsandbytes 4-bit linear layers in ``model`` (0 for an unquantized base)."""
    from bitsandbytes.nn import Linear4bit

    return sum(isinstance(m, Linear4bit) for m in model.modules())


def encoder_bits_per_weight(model: nn.Module) -> float:
    """Average bits stored per weight of the encoder's frozen linear layers (weight matrices only, block constants
    included; LoRA matrices, biases and the head left out): 32 or 16 for an unquantized base, 4 plus the cost of
    the absmax constants for a 4-bit one (4.5 for NF4 with blocks of 64, about 4.127 with double quantization).

    Raises:
        ValueError: ``model`` has no linear layer under an ``encoder``.
    """
    from bitsandbytes.nn import Linear4bit

    n_weights = n_bytes = 0
    for name, module in model.named_modules():
        if ".encoder." not in f".{name}." or "lora_" in name or not isinstance(module, nn.Linear | Linear4bit):
            continue
        weight = module.weight
        n_weights += module.in_features * module.out_features  # packed 4-bit storage has half as many elements
        n_bytes += weight.numel() * weight.element_size() + _quant_state_bytes(getattr(weight, "quant_state", None))
    if not n_weights:
        raise ValueError("no linear layer under an 'encoder' module: give a BERT-like model (e.g. MiniLM)")
    return 8 * n_bytes / n_weights
