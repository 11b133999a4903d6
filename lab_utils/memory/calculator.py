"""The training-memory calculator: weights + gradients + optimizer state, by component (the lecture's rule).

Every fp32 copy of the weights costs 4 bytes x n_params; training keeps the weights, one gradient per trainable
weight and the optimizer's state: SGD keeps none, SGD with momentum one copy (the velocity), Adam and AdamW two
(first and second moments). Chapter "Fine-tuning and its memory bill". Units: bytes (ints); MiB = 2**20, GiB = 2**30.
Chapter "When one GPU is not enough" adds ``world_size`` and a ZeRO ``sharding`` stage (Rajbhandari et al. 2020):
the bytes one of ``world_size`` data-parallel ranks holds when the optimizer state (``"zero1"``), also the gradients
(``"zero2"``), or also the weights (``"zero3"``) are split across the ranks; ``"none"`` is plain DDP.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["GIB", "MIB", "OPTIMIZERS", "SHARDED", "SHARDING_STAGES", "STATE_COPIES", "MemoryEstimate",
           "bytes_per_element", "count_parameters", "estimate_model_training_memory", "estimate_training_memory",
           "shard_numel", "to_unit"]

MIB = 2**20
GIB = 2**30
_UNITS = {"B": 1, "KiB": 2**10, "MiB": MIB, "GiB": GIB, "MB": 10**6, "GB": 10**9}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}  # copies of the trainable weights kept as state
# ZeRO's stages (Rajbhandari et al. 2020), cumulative: what each rank keeps only 1/world_size of.
SHARDED = {"none": (), "zero1": ("optimizer_state",), "zero2": ("optimizer_state", "gradients"),
           "zero3": ("optimizer_state", "gradients", "weights")}
SHARDING_STAGES = tuple(SHARDED)  # "none" = DDP: every rank holds everything


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


def _check_sharding(world_size: int, sharding: str) -> tuple[int, tuple[str, ...]]:
    """Validate ``world_size`` and ``sharding``; return the world size and the components that are sharded."""
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral):
        raise TypeError(f"world_size must be an int (the number of data-parallel ranks), got {world_size!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1 (the number of GPUs or processes), got {world_size}")
    if not isinstance(sharding, str) or sharding.lower() not in SHARDED:
        raise ValueError(f"unknown sharding {sharding!r}; choose one of {SHARDING_STAGES} (ZeRO stages 1-3 shard the "
                         "optimizer state, + the gradients, + the weights)")
    return int(world_size), SHARDED[sharding.lower()]


def shard_numel(numel: int, world_size: int, rank: int = 0) -> int:
    """Elements of a ``numel``-element row-major block held by ``rank`` when it is split in ``world_size`` pieces.

    The pieces are ``torch.chunk``'s: ``ceil(numel / world_size)`` elements each, the last ones shorter (or empty).
    Rank 0 always holds the largest piece, ``ceil(numel / world_size)``; engines pad the shorter ones to it for the
    collectives (DeepSpeed pads its flat buffers to a multiple of ``world_size``, FSDP2 pads each rank's storage).

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``.
    """
    numel = _check_count(numel, "numel")
    world_size, _ = _check_sharding(world_size, "none")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    piece = math.ceil(numel / world_size)
    return max(0, min(piece, numel - rank * piece))


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
                             activations: int = 0, world_size: int = 1, sharding: str = "none") -> MemoryEstimate:
    """The lecture's calculator: weights + gradients + optimizer state (+ activations given in bytes), per rank.

    weights = n_params * b(dtype); gradients = n_trainable * b(dtype);
    optimizer_state = n_trainable * STATE_COPIES[optimizer] * b(state_dtype).

    With ``world_size`` data-parallel ranks, each sharded component counts only the elements of the largest of the
    ``world_size`` pieces, ``ceil(n / world_size)`` (what rank 0 holds; the others hold as much or, for the last
    ones, a little less): ``"zero1"`` shards the optimizer state, ``"zero2"`` also the gradients, ``"zero3"`` also
    the weights (:data:`SHARDED`). ``"none"`` (plain DDP) keeps a full copy of everything on every rank, whatever
    ``world_size``. Activations are per rank already (each rank runs its own micro-batch) and are never divided.

    Args:
        n_params: all parameters (frozen ones are stored too).
        n_trainable: parameters that receive a gradient (default: all of them).
        optimizer: one of :data:`OPTIMIZERS` ("sgd", "momentum", "adam", "adamw").
        dtype: dtype of the weights and their gradients (torch dtype or "fp32", "fp16", "bf16", "int8").
        state_dtype: dtype of the optimizer's state.
        activations: bytes of activations to add (e.g. from :func:`activation_bytes`).
        world_size: number of data-parallel ranks (GPUs), >= 1.
        sharding: one of :data:`SHARDING_STAGES`: "none" (DDP), "zero1", "zero2", "zero3".

    Returns:
        A :class:`MemoryEstimate` in bytes per rank (rounded down to whole bytes for sub-byte dtypes).

    Raises:
        ValueError: negative sizes, ``n_trainable > n_params``, unknown optimizer, dtype or sharding stage,
            ``world_size < 1``.
        TypeError: a size or world size that is not an integer.
    """
    n_params = _check_count(n_params, "n_params")
    n_trainable = n_params if n_trainable is None else _check_count(n_trainable, "n_trainable")
    if n_trainable > n_params:
        raise ValueError(f"n_trainable ({n_trainable:,}) cannot exceed n_params ({n_params:,})")
    copies = STATE_COPIES[_check_optimizer(optimizer)]
    activations = _check_count(activations, "activations")
    world_size, sharded = _check_sharding(world_size, sharding)
    b, b_state = bytes_per_element(dtype), bytes_per_element(state_dtype)

    def per_rank(numel: int, component: str) -> int:  # elements this component keeps on rank 0
        return shard_numel(numel, world_size) if component in sharded else numel

    return MemoryEstimate(weights=int(per_rank(n_params, "weights") * b),
                          gradients=int(per_rank(n_trainable, "gradients") * b),
                          optimizer_state=int(per_rank(n_trainable, "optimizer_state") * copies * b_state),
                          activations=activations)


def estimate_model_training_memory(model: nn.Module, *, optimizer: str = "adam", activations: int = 0,
                                   world_size: int = 1, sharding: str = "none", rank: int = 0) -> MemoryEstimate:
    """:func:`estimate_training_memory` for a real model: each parameter with its own dtype, on rank ``rank``.

    All parameters count for the weights; those with ``requires_grad`` for the gradients and the optimizer's state
    (stored in the parameter's dtype, as torch.optim does). Adam's scalar ``step`` counters are not counted (see
    :func:`optimizer_state_bytes`). A sharded component is split tensor by tensor along the first dimension, as
    PyTorch's FSDP2 (``fully_shard``) does: rank ``r`` holds its ``torch.chunk`` of each tensor's rows
    (:func:`shard_numel` on the rows). When every first dimension is a multiple of ``world_size`` this equals the
    flat :func:`estimate_training_memory`; otherwise the first ranks hold up to one row per tensor more.

    Args:
        model: the model to train (frozen parameters have ``requires_grad=False``).
        optimizer: one of :data:`OPTIMIZERS`.
        activations: bytes of activations to add.
        world_size, sharding: as in :func:`estimate_training_memory`.
        rank: which rank's bytes, in ``[0, world_size)``.

    Returns:
        A :class:`MemoryEstimate` in bytes.
    """
    copies = STATE_COPIES[_check_optimizer(optimizer)]
    count_parameters(model)  # validates the type
    world_size, sharded = _check_sharding(world_size, sharding)
    shard_numel(0, world_size, rank)  # validates the rank

    def nbytes(p: torch.Tensor, component: str) -> int:
        if component not in sharded or p.dim() == 0:
            return p.numel() * p.element_size()
        row = p[0].numel() if p.shape[0] else 0  # elements per row along dim 0
        return shard_numel(p.shape[0], world_size, rank) * row * p.element_size()

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return MemoryEstimate(weights=sum(nbytes(p, "weights") for p in params),
                          gradients=sum(nbytes(p, "gradients") for p in trainable),
                          optimizer_state=copies * sum(nbytes(p, "optimizer_state") for p in trainable),
                          activations=_check_count(activations, "activations"))
