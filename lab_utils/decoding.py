"""Decoding speed: what one generated token costs, measured, and what the hardware would allow.

Chapter "Efficient attention" (chapters/05_efficient_attention/kv_cache). `greedy_step_times` decodes greedily with
a transformers causal LM in a bare loop, with or without a KV cache, and times every step. `measure_bandwidth` and
`measure_matmul_flops` measure the device, and `decode_roofline` turns them into the most tokens per second a decode
step could reach (the roofline model, Williams et al. 2009): the bytes the step must read (the weights, then the
cache) over the bandwidth, or its arithmetic over the peak, whichever takes longer. What a measurement falls short
of that bound is overhead: kernel launches and Python, paid once per step whatever the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lab_utils.generation import cache_argument
from lab_utils.masks import _check_size

__all__ = ["Roofline", "best_time", "cache_nbytes", "decode_roofline", "greedy_step_times", "measure_bandwidth",
           "measure_matmul_flops", "synchronize"]


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a clock read without this times the launch)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], *, device: torch.device | str, repeats: int = 3, warmup: int = 1
              ) -> tuple[float, Any]:
    """Seconds of the fastest of `repeats` calls of `fn()` after `warmup` untimed ones, and the last call's result.

    The minimum, not the mean: other work on the machine only ever adds time, so the fastest run is the best estimate
    of what the code itself costs.
    """
    _check_size("repeats", repeats)
    _check_size("warmup", warmup, minimum=0)
    for _ in range(warmup):
        fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def cache_nbytes(cache: Any) -> int:
    """Bytes held by the keys and values of a transformers `DynamicCache` or a `lab_utils.kv_cache.KVCache`."""
    if hasattr(cache, "nbytes") and callable(cache.nbytes):  # KVCache
        return cache.nbytes()
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"expected a transformers Cache with .layers or a KVCache, got {type(cache).__name__}")
    tensors = [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
               if isinstance(t, Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def greedy_step_times(model: nn.Module, input_ids: Tensor, *, max_new_tokens: int, use_cache: bool = True
                      ) -> tuple[Tensor, list[float], Any]:
    """Greedy decoding with a transformers causal LM in a bare loop, timing every step.

    With `use_cache=True` the first step reads the prompt and fills a `DynamicCache`; every later step feeds the
    newest token alone. With `use_cache=False` every step feeds the whole sequence so far, recomputing the keys and
    values of every earlier token. Only the last position's logits are computed (`logits_to_keep=1`).

    Args:
        model: a transformers causal LM in eval mode.
        input_ids: `(B, T)` prompt ids on the model's device (no padding: every row has the same length).
        max_new_tokens: tokens appended to each row (>= 1).
        use_cache: keep a KV cache.

    Returns:
        `(ids, seconds, cache)`: `(B, T + max_new_tokens)` ids, the seconds of each step (step 0 reads the prompt),
        and the cache (None without one).

    Raises:
        ValueError: if `input_ids` is not `(B, T)` or `max_new_tokens < 1`.
    """
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be a (B, T) tensor of token ids")
    _check_size("max_new_tokens", max_new_tokens)
    key = cache_argument(model)
    if use_cache and key is None:
        raise ValueError(f"{type(model).__name__}.forward takes no KV cache; call with use_cache=False")
    cache = None
    if use_cache:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    ids, seconds, device = input_ids, [], input_ids.device
    for _ in range(max_new_tokens):
        fed = ids if (not use_cache or len(seconds) == 0) else ids[:, -1:]  # (B, T) or (B, 1)
        kwargs = {key: cache, "use_cache": True} if use_cache else {"use_cache": False}
        synchronize(device)
        start = time.perf_counter()
        logits = model(input_ids=fed, logits_to_keep=1, **kwargs).logits  # (B, 1, V)
        next_ids = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        ids = torch.cat([ids, next_ids], dim=1)
    return ids, seconds, cache


def measure_bandwidth(device: torch.device | str, *, nbytes: int = 2**28, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s that a large copy reaches (`y.copy_(x)` reads and writes `nbytes` each).

    What a decode step can stream from memory is at most this; vendors quote a higher theoretical peak.
    """
    _check_size("nbytes", nbytes)
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    seconds, _ = best_time(lambda: y.copy_(x), device=device, repeats=repeats)
    return 2 * x.numel() * 4 / seconds  # one read and one write of every byte


def measure_matmul_flops(device: torch.device | str, dtype: torch.dtype, *, n: int = 2048, repeats: int = 5) -> float:
    """Floating-point operations per second of one large `(n, n) @ (n, n)` matrix product (`2 n^3` operations)."""
    _check_size("n", n)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds, _ = best_time(lambda: a @ b, device=device, repeats=repeats)
    return 2 * n**3 / seconds


@dataclass(frozen=True)
class Roofline:
    """The roofline bound of one decode step: `tokens_per_s = batch / max(memory_s, compute_s)`."""

    tokens_per_s: float
    memory_s: float  # bytes the step reads / bandwidth
    compute_s: float  # floating-point operations of the step / peak
    bound: str  # "memory" or "compute": whichever takes longer


def decode_roofline(*, weight_bytes: float, cache_bytes_per_token: float, context: int, batch: int,
                    flops_per_token: float, bandwidth: float, peak_flops: float) -> Roofline:
    """The most tokens per second that one decode step of `batch` sequences could produce.

    A step reads every weight once (shared by the batch) and each sequence's cache of `context` tokens, and does
    `flops_per_token` operations per sequence (about 2 per weight, plus attention over the context).

    Args:
        weight_bytes: bytes of the weights read per step.
        cache_bytes_per_token: KV-cache bytes of one token (all layers, keys and values).
        context: tokens in each sequence's cache.
        batch: sequences decoded together.
        flops_per_token: floating-point operations to produce one token of one sequence.
        bandwidth: bytes per second (e.g. `measure_bandwidth`).
        peak_flops: operations per second (e.g. `measure_matmul_flops`).

    Raises:
        ValueError: if a size is negative or a rate is not positive.
    """
    _check_size("batch", batch)
    _check_size("context", context, minimum=0)
    for name, value in (("weight_bytes", weight_bytes), ("cache_bytes_per_token", cache_bytes_per_token),
                        ("flops_per_token", flops_per_token)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for name, value in (("bandwidth", bandwidth), ("peak_flops", peak_flops)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    memory_s = (weight_bytes + batch * context * cache_bytes_per_token) / bandwidth
    compute_s = batch * flops_per_token / peak_flops
    bound = "memory" if memory_s >= compute_s else "compute"
    return Roofline(batch / max(memory_s, compute_s), memory_s, compute_s, bound)
