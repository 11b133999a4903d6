"""Measuring what training holds, to put next to the calculator: parameters, gradients, optimizer state, saved
activations (:func:`saved_tensor_bytes`, on any device) and the CUDA allocator's peak (:func:`peak_memory`).

On a CPU PyTorch keeps no allocator statistics; counting the tensors that exist is the honest equivalent there.
Chapter "Fine-tuning and its memory bill". Units: bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from lab_utils.memory.calculator import count_parameters
from lab_utils.training import to_device

__all__ = ["PeakMemory", "SavedTensors", "gradient_bytes", "measure_training_step", "optimizer_state_bytes",
           "parameter_bytes", "peak_memory", "saved_tensor_bytes"]

def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters of ``model`` (tied ones once; buffers such as position ids are not counted)."""
    count_parameters(model)
    return sum(p.nbytes for p in model.parameters())


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of the ``.grad`` tensors that exist now (``None`` gradients, e.g. of frozen parameters, cost nothing)."""
    count_parameters(model)
    return sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, *, include_scalars: bool = False) -> int:
    """Bytes of the tensors a torch optimizer holds in ``optimizer.state`` (each storage once).

    Adam and AdamW also keep a ``step`` counter per parameter tensor: a 0-dim fp32 tensor (4 bytes per tensor, not
    per weight: 800 bytes for BERT-base's 199 tensors), kept on the CPU unless ``capturable``/``fused``. It is not part
    of the lecture's "two moments" and is excluded unless ``include_scalars=True``. SGD keeps no state at all, and
    SGD with ``momentum=0`` holds no buffer either: plain SGD.

    Args:
        optimizer: a ``torch.optim.Optimizer`` after at least one ``step()`` (state is created lazily).
        include_scalars: also count 0-dim tensors (Adam's ``step``).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    seen: dict[tuple[str, int], int] = {}
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor) and (value.dim() > 0 or include_scalars):
                storage = value.untyped_storage()
                seen[(str(value.device), storage.data_ptr() or id(value))] = storage.nbytes()
    return sum(seen.values())


class SavedTensors:
    """What :func:`saved_tensor_bytes` counted: ``bytes`` (activations), ``parameter_bytes`` (excluded), ``count``."""

    def __init__(self, exclude: Iterable[Tensor]) -> None:
        self._excluded = {(str(t.device), t.untyped_storage().data_ptr()) for t in exclude}
        self._storages: dict[tuple[str, int], torch.UntypedStorage] = {}
        self._params: dict[tuple[str, int], int] = {}
        self.bytes = 0
        self.parameter_bytes = 0
        self.count = 0

    def _pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        is_param = isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter) or key in self._excluded
        if is_param:
            if key not in self._params:
                self._params[key] = storage.nbytes()
                self.parameter_bytes += storage.nbytes()
        elif key not in self._storages:
            self._storages[key] = storage  # a reference keeps the address from being reused inside the block
            self.bytes += storage.nbytes()
            self.count += 1
        # Returning t itself would make autograd hold a saved output with its own grad_fn: a reference cycle that
        # keeps the whole graph alive if backward never runs. A detached alias shares the storage without it.
        return t.detach()

    def _release(self) -> None:
        self._storages.clear()


@contextlib.contextmanager
def saved_tensor_bytes(exclude: Iterable[Tensor] | nn.Module = ()) -> Iterator[SavedTensors]:
    """Count the bytes of the distinct storages autograd saves for backward inside the block (CPU and GPU).

    ``with saved_tensor_bytes() as saved: loss = loss_fn(model, batch)`` then ``saved.bytes``. A storage saved twice
    (two views of one tensor, or one tensor saved by two operations) counts once. Parameters saved for backward (a
    Linear saves its weight to compute the gradient of its input) are not activations: tensors that are
    ``nn.Parameter`` objects or views of one are counted apart, in ``saved.parameter_bytes``; pass ``exclude`` (a
    module or tensors) to set aside others, e.g. buffers. Under activation checkpointing a checkpointed layer saves
    only its input during the forward pass (counted); what backward recomputes later is not seen here. Under
    autocast, the 16-bit copies of the weights that matmuls save are not Parameters and count as activations.

    Args:
        exclude: a module (its parameters and buffers) or tensors whose storages are not activations.

    Yields:
        A :class:`SavedTensors` whose ``bytes`` grows while the forward pass runs.
    """
    if isinstance(exclude, nn.Module):
        exclude = [*exclude.parameters(), *exclude.buffers()]
    saved = SavedTensors(list(exclude))
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved._pack, lambda t: t):
            yield saved
    finally:
        saved._release()


class PeakMemory:
    """What :func:`peak_memory` measured: ``bytes`` (peak above ``baseline``), ``peak`` and ``baseline`` (absolute).

    All three are ``None`` on a CPU: PyTorch's CPU allocator keeps no statistics (the process's resident size would
    mix in the Python heap, libraries and freed-but-cached pages), so use :func:`saved_tensor_bytes` and the
    parameter/gradient/state counts there.
    """

    bytes: int | None = None
    peak: int | None = None
    baseline: int | None = None


@contextlib.contextmanager
def peak_memory(device: torch.device | str | None = None) -> Iterator[PeakMemory]:
    """Peak CUDA memory allocated by tensors inside the block.

    CUDA: ``baseline = torch.cuda.memory_allocated()`` before the block, the peak statistics are reset, and after it
    ``peak = torch.cuda.max_memory_allocated()`` (everything allocated, weights included) and ``bytes = peak -
    baseline``. The CUDA context and the allocator's cached-but-free blocks are not tensors and are not counted
    (``nvidia-smi`` shows more). CPU (or any non-CUDA device): the fields stay ``None``.

    Args:
        device: the device to watch; default the current CUDA device if CUDA is available, else CPU.
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    result = PeakMemory()
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    result.baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield result
    torch.cuda.synchronize(device)
    result.peak = torch.cuda.max_memory_allocated(device)
    result.bytes = result.peak - result.baseline




def measure_training_step(model: nn.Module, batch: object, loss_fn: Callable, optimizer: torch.optim.Optimizer, *,
                          device: torch.device | str | None = None, phases: bool = False) -> dict[str, int | None]:
    """Run one training step (zero_grad, forward, backward, step) and measure what it holds, in bytes.

    On a GPU the peak of the step is usually either at the end of the forward pass (weights, activations, and the
    state of earlier steps) or inside ``optimizer.step()`` (weights, gradients, state, plus the temporaries of
    torch's default multi-tensor "foreach" Adam: about one more copy of the trainable weights; ``fused=True`` or
    ``foreach=False`` avoid most of them). The first step also creates the state. ``phases=True`` tells which.

    Args:
        model: the model, already on ``device`` and in the mode you want (``model.train()`` for dropout).
        batch: what ``loss_fn`` takes, e.g. a dict of tensors; moved to ``device``.
        loss_fn: ``(model, batch) -> loss`` or ``-> (loss, n)`` (a :mod:`lab_utils.objectives` ``LossFn``).
        optimizer: a ``torch.optim`` optimizer over the model's trainable parameters.
        device: default the device of the model's first parameter.
        phases: also return "peak_forward", "peak_backward", "peak_step" (CUDA peaks of each phase, or None).

    Returns:
        ``{"weights", "gradients", "optimizer_state", "activations", "peak"}``: parameter bytes, ``.grad`` bytes
        after backward, optimizer state bytes after the step (moments and buffers, not Adam's ``step`` scalars),
        saved-tensor bytes of the forward pass, and the CUDA peak allocated during the step (everything: weights,
        gradients, state, activations, temporaries; not the CUDA context) or ``None`` on CPU.

    Raises:
        TypeError: ``loss_fn`` returned something other than a scalar tensor or ``(loss, n)``.
    """
    count_parameters(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch = to_device(batch, device)
    optimizer.zero_grad(set_to_none=True)
    with peak_memory(device) as forward, saved_tensor_bytes(model) as saved:
        out = loss_fn(model, batch)
    loss = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise TypeError(f"loss_fn must return a scalar loss tensor or (loss, n), got {type(loss).__name__}")
    with peak_memory(device) as backward:
        loss.backward()
    del out, loss  # nothing of the graph is needed any more
    with peak_memory(device) as step:
        optimizer.step()
    peaks = {"peak_forward": forward.peak, "peak_backward": backward.peak, "peak_step": step.peak}
    result = {"weights": parameter_bytes(model), "gradients": gradient_bytes(model),
              "optimizer_state": optimizer_state_bytes(optimizer), "activations": saved.bytes,
              "peak": None if forward.peak is None else max(peaks.values())}
    return {**result, **peaks} if phases else result
