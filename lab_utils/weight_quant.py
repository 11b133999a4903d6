"""Simulated weight quantization: every ``nn.Linear`` weight of a model replaced, in place, by its de-quantized copy.

"Fake" or simulated quantization (as in the LLM.int8() and GPTQ papers' error studies): the weights are rounded to
a b-bit absmax or zero-point grid with `lab_utils.quant` and stored back de-quantized in their own dtype, so any
model runs unchanged and its accuracy shows what the rounding alone costs (not the memory it would save).
Chapter "Quantization" (int8.ipynb). Weights are ``(out_features, in_features)``: ``axis=0`` is one scale per
output channel (row), as ``bitsandbytes.functional.int8_vectorwise_quant``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import torch
from torch import nn

from lab_utils.quant import (
    dequantize_absmax,
    dequantize_zeropoint,
    quantize_absmax,
    quantize_zeropoint,
)

__all__ = ["SCHEMES", "quantize_linear_weights"]

SCHEMES = {"absmax": (quantize_absmax, dequantize_absmax), "zeropoint": (quantize_zeropoint, dequantize_zeropoint)}


def _skip_keys(skip: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(skip, str):  # skip="classifier" means one key, not the letters c, l, a, ...
        return (skip,)
    try:
        keys = tuple(skip)
    except TypeError:
        raise TypeError(f"skip must be a name key or a list of them, e.g. ('classifier',), got {skip!r}") from None
    bad = [k for k in keys if not isinstance(k, str) or not k]
    if bad:
        raise TypeError(f"skip must hold non-empty strings (parts of module names), got {bad!r}")
    return keys


def _rel_rmse(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    # quant.quantization_error's rel_rmse, in float32 (6 digits are plenty; float64 doubles the time on a CPU)
    w = w.float()
    norm = w.norm()
    return ((w - w_hat.float()).norm() / norm).item() if norm > 0 else 0.0


@torch.no_grad()
def quantize_linear_weights(model: nn.Module, *, bits: int, scheme: str = "absmax", axis: int | None = None,
                            blocksize: int | None = None, skip: str | Iterable[str] = ()) -> dict:
    """Round the weight of every ``nn.Linear`` of ``model`` to a ``bits``-bit grid and store it de-quantized.

    In place: ``layer.weight`` keeps its shape, dtype, device and ``requires_grad``; biases and every other module
    (embeddings, LayerNorm) are untouched. A weight shared by several layers (tied) is quantized once.

    Args:
        model: any model; its ``nn.Linear`` layers (and subclasses) are found with ``named_modules``.
        bits: b, 2..16 (`quant.quantize_absmax`: codes -(2^(b-1) - 1)..2^(b-1) - 1; zero-point: 0..2^b - 1).
        scheme: "absmax" (symmetric) or "zeropoint" (asymmetric).
        axis: None with ``blocksize`` None: one scale per weight matrix; 0: one per output row ``(out,)``;
            1: one per input column ``(in,)``.
        blocksize: block-wise: one scale per ``blocksize`` consecutive weights of the flattened matrix.
        skip: name keys left in full precision: a layer whose qualified name contains one of them is skipped
            (e.g. ``("classifier",)`` or ``("lm_head",)``). Every key must match at least one linear layer.

    Returns:
        ``{"layers": int, "weights": int, "skipped": list[str], "rel_rmse": float, "max_rel_rmse": float,
        "worst_layer": str, "errors": dict[str, float]}``: layers and weights quantized, names of the skipped
        layers, the mean and largest relative rmse ``rmse / rms(w)`` over the layers, the layer with the largest,
        and each layer's relative rmse.

    Raises:
        TypeError: model is not an ``nn.Module``, skip is not strings, or a weight is already quantized (an
            integer dtype, e.g. a bitsandbytes layer): load the model in full precision first.
        ValueError: unknown scheme, bad bits/axis/blocksize (from `lab_utils.quant`), no linear layer to quantize,
            or a skip key that matches no linear layer (a typo would silently quantize the head).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r} (NF4 lives in lab_utils.quant)")
    keys = _skip_keys(skip)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: nothing to quantize")
    unmatched = [k for k in keys if not any(k in name for name, _ in linears)]
    if unmatched:
        raise ValueError(f"skip keys {unmatched} match no linear layer; names look like {linears[0][0]!r} and "
                         f"{linears[-1][0]!r}")
    quantize, dequantize = SCHEMES[scheme]
    done: set[int] = set()  # id of each weight Parameter already quantized (tied weights)
    skipped, errors, n_weights = [], {}, 0
    for name, layer in linears:
        if any(k in name for k in keys):
            skipped.append(name)
            continue
        w = layer.weight
        if id(w) in done:
            continue
        if not w.is_floating_point():
            raise TypeError(f"{name}.weight is {w.dtype}, already quantized (a {type(layer).__name__}); load the "
                            "model in full precision (no quantization_config) to simulate quantization")
        q, state = quantize(w.detach(), bits, axis=axis, blocksize=blocksize)  # q: same shape as w, integers
        w_hat = dequantize(q, state)  # (out, in), w's dtype
        errors[name] = _rel_rmse(w.detach(), w_hat)
        w.copy_(w_hat)
        done.add(id(w))
        n_weights += w.numel()
    if not errors:
        raise ValueError(f"skip={keys} leaves no linear layer to quantize")
    worst = max(errors, key=errors.get)
    return {"layers": len(errors), "weights": n_weights, "skipped": skipped,
            "rel_rmse": statistics.fmean(errors.values()), "max_rel_rmse": errors[worst], "worst_layer": worst,
            "errors": errors}
