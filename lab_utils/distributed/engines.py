"""PyTorch's data-parallel engines, one name each, and what every rank holds under them.

``wrap`` turns a model into a DDP model (Li et al. 2020), DDP with a sharded optimizer
(``ZeroRedundancyOptimizer``, ZeRO stage 1), or an FSDP2 model (``fully_shard``; Zhao et al. 2023) that keeps the
gathered weights from forward to backward (ZeRO stage 2's memory) or frees them after each use (stage 3;
Rajbhandari et al. 2020). The ``held_*`` functions count the bytes a rank holds: for a sharded tensor (a DTensor)
only its local shard. Chapter "When one GPU is not enough". Runs inside a process group (see ``train``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lab_utils.memory.calculator import bytes_per_element

__all__ = ["ENGINES", "STAGE_OF", "communication_bytes", "gathered_parameter_bytes", "held_gradient_bytes",
           "held_optimizer_state_bytes", "held_parameter_bytes", "local_nbytes", "wrap"]

# engine -> the calculator's sharding stage whose memory it has. "local": no engine, no communication at all (each
# rank trains its own copy on its own batch), the compute-only baseline that shows what communication costs.
STAGE_OF = {"local": "none", "ddp": "none", "zero1": "zero1", "zero2": "zero2", "zero3": "zero3"}
ENGINES = tuple(STAGE_OF)
# What one training step sends per rank, in units of (world_size - 1) / world_size x the model's bytes, with ring
# collectives: all-reduce = reduce-scatter + all-gather = 2 units (ZeRO paper, Sec. 7). torch's ZeRO-1 all-reduces
# the gradients (DDP) and then broadcasts each rank's updated weights (+1); FSDP gathers the weights for forward
# (+1), with stage 3 again for backward (+1), and reduce-scatters the gradients (+1).
_COMM_UNITS = {"local": 0, "ddp": 2, "zero1": 3, "zero2": 2, "zero3": 3}


def _check_engine(engine: str) -> str:
    if engine not in STAGE_OF:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    return engine


def communication_bytes(n_params: int, world_size: int, engine: str, dtype: torch.dtype | str = torch.float32) -> int:
    """Bytes each rank sends per step with ring collectives: ``units * (W - 1) / W * n_params * b(dtype)``.

    DDP all-reduces the gradients (2 units); torch's ZeRO-1 adds a broadcast of the updated weights (3); FSDP's
    stage 2 gathers the weights once and reduce-scatters the gradients (2), stage 3 gathers them twice (3). With one
    rank nothing is sent. Latency, overlap with compute and FSDP keeping the root module's weights gathered between
    forward and backward are not modelled.

    Raises:
        ValueError: unknown engine, ``world_size < 1`` or ``n_params < 0``.
    """
    units = _COMM_UNITS[_check_engine(engine)]
    if world_size < 1 or n_params < 0:
        raise ValueError(f"world_size must be >= 1 and n_params >= 0, got {world_size} and {n_params}")
    return int(units * (world_size - 1) * n_params * bytes_per_element(dtype) / world_size)


def local_nbytes(t: Tensor) -> int:
    """Bytes of the part of ``t`` this rank holds: a DTensor's local shard (without padding), else the tensor."""
    from torch.distributed.tensor import DTensor

    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()


def held_parameter_bytes(model: nn.Module) -> int:
    """Bytes of the parameters this rank holds now (each tensor once; a sharded one by its local shard)."""
    return sum(local_nbytes(p) for p in model.parameters())


def gathered_parameter_bytes(model: nn.Module) -> int:
    """Bytes of full (unsharded) parameters an FSDP model holds now, e.g. between forward and backward.

    FSDP2 swaps a module's parameters between their sharded DTensors and plain gathered tensors; every parameter
    that is not a DTensor right now is a gathered copy, held on top of the shards. 0 for a model without FSDP.
    """
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    if not any(isinstance(p, DTensor) for p in params) and not _is_fsdp(model):
        return 0
    return sum(p.numel() * p.element_size() for p in params if not isinstance(p, DTensor))


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def held_gradient_bytes(model: nn.Module) -> int:
    """Bytes of the ``.grad`` tensors this rank holds now (local shards for FSDP; ``None`` costs nothing)."""
    return sum(local_nbytes(p.grad) for p in model.parameters() if p.grad is not None)


def held_optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this rank's optimizer state tensors (Adam's moments; not its 0-dim ``step`` counters).

    ``ZeroRedundancyOptimizer`` keeps a local optimizer over this rank's partition of the parameters: its state
    alone counts. Under FSDP the moments are DTensors like the parameters: their local shards count.
    """
    local = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer -> its local optimizer
    return sum(local_nbytes(v) for state in local.state.values() for v in state.values()
               if isinstance(v, Tensor) and v.dim() > 0)


def wrap(model: nn.Module, engine: str, *, blocks: Iterable[nn.Module] = (), device: torch.device | None = None,
         optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
         **optimizer_kwargs: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Put ``model`` (already on ``device``, identical on every rank) under ``engine``; return it and its optimizer.

    Args:
        model: the model; the process group must be initialised.
        engine: one of :data:`ENGINES`: "local" (nothing), "ddp", "zero1" (DDP + ``ZeroRedundancyOptimizer``),
            "zero2" / "zero3" (FSDP2 ``fully_shard`` with ``reshard_after_forward`` False / True).
        blocks: the modules FSDP shards as units (a transformer's layers), each gathered on its own; the rest (e.g.
            embeddings, final norm) form the root unit.
        device: the rank's device (for DDP's ``device_ids`` on a GPU).
        optimizer_class: the optimizer, built over all parameters (over this rank's partition for "zero1").
        **optimizer_kwargs: its arguments, e.g. ``lr=1e-4``.

    Returns:
        ``(model, optimizer)``: the wrapped model (DDP wraps it in a new module; FSDP changes it in place).
    """
    _check_engine(engine)
    if engine in ("zero2", "zero3"):
        from torch.distributed.fsdp import fully_shard

        for block in blocks:
            fully_shard(block, reshard_after_forward=engine == "zero3")
        fully_shard(model, reshard_after_forward=engine == "zero3")
    elif engine in ("ddp", "zero1"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device is not None and device.type == "cuda" else None
        model = DDP(model, device_ids=ids)
    if engine == "zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optimizer_class, **optimizer_kwargs)
    return model, optimizer_class(model.parameters(), **optimizer_kwargs)
