"""The training-memory calculator: weights + gradients + optimizer state, by component (the lecture's rule).

Every fp32 copy of the weights costs 4 bytes x n_params; training keeps the weights, one gradient per trainable
weight and the optimizer's state: SGD keeps none, SGD with momentum one copy (the velocity), Adam and AdamW two
(first and second moments). Chapter "Fine-tuning and its memory bill". Units: bytes (ints); MiB = 2**20, GiB = 2**30.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["GIB", "MIB", "OPTIMIZERS", "STATE_COPIES", "MemoryEstimate", "bytes_per_element", "count_parameters",
           "estimate_model_training_memory", "estimate_training_memory", "to_unit"]

MIB = 2**20
GIB = 2**30
_UNITS = {"B": 1, "KiB": 2**10, "MiB": MIB, "GiB": GIB, "MB": 10**6, "GB": 10**9}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}  # copies of the trainable weights kept as state


_BYTES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "int8": torch.int8, "fp64": torch.float64}


def bytes_per_element(dtype: torch.dtype | str) -> float:
    """Bytes per element of ``dtype``: a torch dtype, or "fp32", "fp16", "bf16", "int8" (fp32 -> 4.0, bf16 -> 2.0).

    Raises:
        ValueError: an unknown name or a non-numeric dtype.
    """
    if isinstance(dtype, str):
        if dtype.lower() not in _BYTES:
            raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype or one of {sorted(_BYTES)}")
        dtype = _BYTES[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or dtype == torch.bool or dtype.is_complex:
        raise ValueError(f"dtype must be a numeric torch dtype or a name such as 'fp32', got {dtype!r}")
    return (torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits) / 8


def to_unit(nbytes: int | float, unit: str = "MiB") -> float:
    """Convert bytes to ``unit`` ("B", "KiB", "MiB", "GiB", or the decimal "MB", "GB")."""
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {list(_UNITS)}")
    return nbytes / _UNITS[unit]


def _check_optimizer(optimizer: str) -> str:
    if not isinstance(optimizer, str) or optimizer.lower() not in STATE_COPIES:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    return optimizer.lower()


def _check_count(value: int, name: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # also numpy integers
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # 110e6 is a fine way to write 110 million
    else:
        raise TypeError(f"{name} must be an integer number of elements/bytes, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``; a tensor shared by two modules (tied embeddings) counts once.

    A bitsandbytes 4-bit weight is stored packed, two values per byte, in a uint8 tensor of half the size; it counts
    as the weights it holds (the shape in its ``quant_state``), not as its bytes. Byte counts (the estimates below)
    use the stored size.

    Args:
        model: any ``nn.Module`` (also on the meta device).
        trainable_only: count only parameters with ``requires_grad``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # .parameters() yields each Parameter object once, so tied weights are not counted twice.
    return sum(_n_values(p) for p in model.parameters() if p.requires_grad or not trainable_only)


def _n_values(p: torch.Tensor) -> int:
    """How many numbers ``p`` represents: its numel, or for a packed 4-bit bitsandbytes weight its original shape's."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each component of the training memory (ints)."""

    weights: int
    gradients: int
    optimizer_state: int
    activations: int = 0

    @property
    def total(self) -> int:
        """Sum of the four components, in bytes."""
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def to_dict(self, unit: str = "MiB") -> dict[str, float]:
        """The components and ``"total"`` in ``unit`` (default MiB = 2**20 bytes; "B" keeps bytes)."""
        return {key: to_unit(value, unit) for key, value in {**asdict(self), "total": self.total}.items()}


def estimate_training_memory(n_params: int, *, n_trainable: int | None = None, optimizer: str = "adam",
                             dtype: torch.dtype | str = torch.float32, state_dtype: torch.dtype | str = torch.float32,
                             activations: int = 0) -> MemoryEstimate:
    """The lecture's calculator: weights + gradients + optimizer state (+ activations given in bytes).

    weights = n_params * b(dtype); gradients = n_trainable * b(dtype);
    optimizer_state = n_trainable * STATE_COPIES[optimizer] * b(state_dtype).

    Args:
        n_params: all parameters (frozen ones are stored too).
        n_trainable: parameters that receive a gradient (default: all of them).
        optimizer: one of :data:`OPTIMIZERS` ("sgd", "momentum", "adam", "adamw").
        dtype: dtype of the weights and their gradients (torch dtype or "fp32", "fp16", "bf16", "int8").
        state_dtype: dtype of the optimizer's state.
        activations: bytes of activations to add (e.g. from :func:`activation_bytes`).

    Returns:
        A :class:`MemoryEstimate` in bytes (rounded down to whole bytes for sub-byte dtypes).

    Raises:
        ValueError: negative sizes, ``n_trainable > n_params``, unknown optimizer or dtype.
        TypeError: a size that is not an integer.
    """
    n_params = _check_count(n_params, "n_params")
    n_trainable = n_params if n_trainable is None else _check_count(n_trainable, "n_trainable")
    if n_trainable > n_params:
        raise ValueError(f"n_trainable ({n_trainable:,}) cannot exceed n_params ({n_params:,})")
    copies = STATE_COPIES[_check_optimizer(optimizer)]
    activations = _check_count(activations, "activations")
    b, b_state = bytes_per_element(dtype), bytes_per_element(state_dtype)
    return MemoryEstimate(weights=int(n_params * b), gradients=int(n_trainable * b),
                          optimizer_state=int(n_trainable * copies * b_state), activations=activations)


def estimate_model_training_memory(model: nn.Module, *, optimizer: str = "adam",
                                   activations: int = 0) -> MemoryEstimate:
    """:func:`estimate_training_memory` for a real model: each parameter with its own dtype.

    All parameters count for the weights; those with ``requires_grad`` for the gradients and the optimizer's state
    (stored in the parameter's dtype, as torch.optim does). Adam's scalar ``step`` counters are not counted (see
    :func:`optimizer_state_bytes`).

    Args:
        model: the model to train (frozen parameters have ``requires_grad=False``).
        optimizer: one of :data:`OPTIMIZERS`.
        activations: bytes of activations to add.

    Returns:
        A :class:`MemoryEstimate` in bytes.
    """
    copies = STATE_COPIES[_check_optimizer(optimizer)]
    count_parameters(model)  # validates the type
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return MemoryEstimate(weights=weights, gradients=grads, optimizer_state=copies * grads,
                          activations=_check_count(activations, "activations"))
