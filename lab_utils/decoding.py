"""Decoding speed: what one generated token costs, measured, and what the hardware would allow.

Chapter "Efficient attention" (chapters/05_efficient_attention/kv_cache). `greedy_step_times` decodes greedily with
a transformers causal LM in a bare loop, with or without a KV cache, and times every step. `measure_bandwidth` and
`measure_matmul_flops` measure the device, and `decode_roofline` turns them into the most tokens per second a decode
step could reach (the roofline model, Williams et al. 2009): the bytes the step must read (the weights, then the
cache) over the bandwidth, or its arithmetic over the peak, whichever takes longer. What a measurement falls short
of that bound is overhead: kernel launches and Python, paid once per step whatever the batch.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lab_utils.generation import cache_argument
from lab_utils.masks import _check_size

__all__ = ["Roofline", "StaticGreedyDecoder", "best_time", "cache_nbytes", "decode_roofline", "greedy_step_times",
           "measure_bandwidth", "measure_matmul_flops", "synchronize"]


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


class StaticGreedyDecoder:
    """Greedy decoding through a static KV cache; on a GPU every decode step is one CUDA-graph replay.

    A `DynamicCache` grows by one token per step, so every step has new shapes and new addresses. A transformers
    `StaticCache` preallocates keys and values for `max_len` tokens and writes each new token in place, so a decode
    step (forward pass of one token, then the argmax) has the same shapes and addresses every time. On CUDA the
    step is compiled with `torch.compile(mode=compile_mode, fullgraph=True)`: `"reduce-overhead"` records it as a
    CUDA graph and replays it with one launch per step; `"max-autotune"` also searches faster kernels. Elsewhere
    the same step runs eagerly (CUDA graphs need a GPU). The prompt is read by one eager forward pass.

    Args:
        model: a transformers causal LM in eval mode (its weights on the device that decodes).
        max_len: the most tokens (prompt + new) one call may hold: the cache's length. The first call fixes the
            batch size too: the cache is allocated for it.
        compile_mode: a `torch.compile` mode, or None to stay eager on any device.

    Example:
        >>> decode = StaticGreedyDecoder(model, max_len=128)  # doctest: +SKIP
        >>> ids = decode(prompt_ids, max_new_tokens=64)  # the first call on a GPU compiles  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, max_len: int, compile_mode: str | None = "reduce-overhead") -> None:
        from transformers import StaticCache

        _check_size("max_len", max_len)
        self.key = cache_argument(model)
        if self.key is None:
            raise ValueError(f"{type(model).__name__}.forward takes no KV cache to make static")
        self.model, self.max_len, self.batch = model, max_len, None
        self._cache_position = "cache_position" in inspect.signature(model.forward).parameters  # transformers < 5.24
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self.compiled = compile_mode is not None and next(model.parameters()).device.type == "cuda"
        self._step = torch.compile(self._forward, mode=compile_mode, fullgraph=True) if self.compiled else self._forward

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        """`(B, T)` ids at `(T,)` positions through the cache -> `(B, 1)` next ids."""
        kwargs = {self.key: self.cache, "use_cache": True, "position_ids": positions[None]}
        if self._cache_position:
            kwargs["cache_position"] = positions
        logits = self.model(input_ids=ids, logits_to_keep=1, **kwargs).logits  # (B, 1, V)
        return logits[:, -1].argmax(dim=-1, keepdim=True)

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, *, max_new_tokens: int) -> Tensor:
        """`(B, T)` prompt ids (no padding) -> `(B, T + max_new_tokens)` ids, greedy.

        Raises:
            ValueError: if `input_ids` is not `(B, T)` ids, the result would not fit in `max_len`, or the batch size
                differs from the first call's.
        """
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
            raise ValueError("input_ids must be a (B, T) tensor of token ids")
        _check_size("max_new_tokens", max_new_tokens)
        batch, prompt_len = input_ids.shape
        total = prompt_len + max_new_tokens
        if total > self.max_len:
            raise ValueError(f"{prompt_len} prompt + {max_new_tokens} new tokens exceed max_len={self.max_len}; "
                             "make a decoder with a larger max_len")
        if self.batch not in (None, batch):
            raise ValueError(f"this decoder's cache holds {self.batch} sequences, got {batch}; make a decoder per "
                             "batch size")
        self.batch = batch
        self.cache.reset()
        positions = torch.arange(total, device=input_ids.device)
        out = torch.empty(batch, total, dtype=input_ids.dtype, device=input_ids.device)
        out[:, :prompt_len] = input_ids
        next_ids = self._forward(input_ids, positions[:prompt_len])  # (B, 1)
        out[:, prompt_len] = next_ids[:, 0]
        for t in range(prompt_len + 1, total):
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs may be overwritten now
            next_ids = self._step(next_ids, positions[t - 1:t]).clone()  # clone: outlive the next replay
            out[:, t] = next_ids[:, 0]
        return out


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
