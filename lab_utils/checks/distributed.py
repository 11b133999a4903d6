"""Exercise checks on data-parallel training: the memory one GPU holds under DDP and each ZeRO stage, and the batch
size and learning rate when going from one GPU to N (chapter "When one GPU is not enough").

Full fine-tuning with AdamW in fp32 keeps 4 bytes of weights, 4 of gradients and 8 of optimizer state (two moments)
per parameter. DDP keeps all of it on every GPU; ZeRO stage 1 splits the optimizer state across the N GPUs, stage 2
also the gradients, stage 3 also the weights (Rajbhandari et al. 2020). A split gives each GPU ceil(n / N) elements.
"""

from __future__ import annotations

import math
import numbers

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, fail, name_mistake, success
from lab_utils.memory.calculator import SHARDED, SHARDING_STAGES, estimate_training_memory

__all__ = ["check_rank_memory", "check_scale_to_gpus"]

_BYTES = {"weights": 4, "gradients": 4, "optimizer_state": 8}  # fp32 AdamW, per parameter


def _bill(n: int, world: int, sharded: tuple[str, ...], *, split=lambda n, w: math.ceil(n / w),
          state_bytes: int = 8) -> float:
    """Bytes per GPU when the components in ``sharded`` are split with ``split`` (a wrong answer's rule)."""
    per = {**_BYTES, "optimizer_state": state_bytes}
    return sum(b * (split(n, world) if c in sharded else n) for c, b in per.items())


def _rank_memory_mistakes(n: int, world: int, stage: str) -> list[tuple[float, str]]:
    """What the usual wrong answers give for ``(n, world, stage)``, with the hint that names each."""
    right = SHARDED[stage]
    everything = tuple(_BYTES)
    only = {"zero1": ("optimizer_state",), "zero2": ("gradients",), "zero3": ("weights",)}
    mistakes = [
        (_bill(n, world, everything), "DDP keeps a full copy of weights, gradients and optimizer state on every GPU; "
         "only the ZeRO stages split anything" if stage == "none" else
         f"{stage} does not split everything: stage 1 splits the optimizer state, 2 also the gradients, 3 also "
         "the weights"),
        (_bill(n, world, ()), "with ZeRO each GPU keeps only 1/N of the sharded components: divide them by world_size"),
        (_bill(n, world, right, split=lambda n, w: n // w), "round up, not down: ceil(n / world_size) elements per "
         "GPU (the last GPU's piece is padded to the same size)"),
        (_bill(n, world, right, split=lambda n, w: n / w), "a GPU holds whole elements: use ceil(n / world_size), "
         "not n / world_size"),
        (_bill(n, world, right, state_bytes=4), "AdamW keeps two moments per weight (m and v): 8 bytes of state in "
         "fp32, not 4"),
    ]
    if stage in only:
        mistakes.append((_bill(n, world, only[stage]), "the stages are cumulative: zero2 splits the optimizer state "
                         "AND the gradients, zero3 all three"))
    if stage == "zero1":
        mistakes.append((_bill(n, world, ("gradients",)), "stage 1 splits the optimizer state, not the gradients"))
    return mistakes


@exercise_check
def check_rank_memory(fn: StudentFunction) -> None:
    """Check ``fn(n_params, world_size, stage) -> bytes`` held by one GPU for fp32 AdamW full fine-tuning.

    Expected: weights 4, gradients 4 and optimizer state 8 bytes per parameter, each sharded component counted as
    ``ceil(n_params / world_size)`` parameters; ``stage`` is "none" (DDP), "zero1", "zero2" or "zero3".

    Args:
        fn: the student's function, e.g. ``my_rank_memory``.

    Returns:
        True when every answer is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong answer and the likely mistake (DDP divided, stages not cumulative,
            rounding down, one Adam moment...).
    """
    for n, world in ((1_000_003, 2), (134_515_008, 2), (7_000_000_001, 8), (999, 1)):
        for stage in SHARDING_STAGES:
            call = f"{fn.name}({n:_}, {world}, {stage!r})"
            got = fn(n, world, stage)
            expected = estimate_training_memory(n, optimizer="adamw", world_size=world, sharding=stage).total
            value = as_number(got, call)
            if value != expected:
                hint = name_mistake(value, _rank_memory_mistakes(n, world, stage),
                                    "4 bytes of weights + 4 of gradients + 8 of AdamW state per parameter, each "
                                    "sharded component with ceil(n_params / world_size) parameters")
                fail(f"{call} returned {value:,.0f} bytes; expected {expected:,}: {hint}")
            if not (isinstance(got, numbers.Integral) or float(got).is_integer()):
                fail(f"{call} returned {got!r}; a number of bytes is whole")
    success("rank_memory gives the bytes per GPU under DDP and ZeRO stages 1, 2 and 3")


_SCALE_CASES = ((32, 1, 1e-4, 2), (16, 4, 3e-5, 8), (8, 2, 2e-5, 1), (4, 8, 5e-4, 4))


def _scale_mistakes(b: int, a: int, lr: float, n: int) -> tuple[list, list]:
    """Typical wrong global batches and learning rates, with their hints."""
    batches = [(b * n, "the global batch also counts the accumulation steps: batch_per_gpu x accumulation x n_gpus"),
               (b * a, "each of the n_gpus GPUs runs its own batch_per_gpu x accumulation examples per update: "
                "multiply by n_gpus"),
               (b, "the global batch is what one optimizer update sees: batch_per_gpu x accumulation x n_gpus")]
    lrs = [(lr, "the batch grew n_gpus times: the linear scaling rule multiplies the learning rate by n_gpus too"),
           (lr * math.sqrt(n), "that is square-root scaling; the linear scaling rule multiplies by n_gpus"),
           (lr / n, "scale the learning rate up with the batch, not down"),
           (lr * b * a * n, "multiply the learning rate by the factor the global batch grew (n_gpus), not by the "
            "global batch itself")]
    return batches, lrs


@exercise_check
def check_scale_to_gpus(fn: StudentFunction) -> None:
    """Check ``fn(batch_per_gpu, accumulation, lr, n_gpus) -> (global_batch, new_lr)``.

    A run on one GPU used ``batch_per_gpu`` examples per forward pass, ``accumulation`` gradient-accumulation steps
    per update and learning rate ``lr``. On ``n_gpus`` GPUs with the same per-GPU settings: global batch =
    ``batch_per_gpu * accumulation * n_gpus``, learning rate ``lr * n_gpus`` (the linear scaling rule).

    Raises:
        AssertionError: with the first wrong value and the likely mistake.
    """
    for b, a, lr, n in _SCALE_CASES:
        call = f"{fn.name}({b}, {a}, {lr}, {n})"
        got = fn(b, a, lr, n)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"{call} returned {got!r}; return two numbers: (global_batch, lr)")
        batch, new_lr = as_number(got[0], call), as_number(got[1], call)
        batches, lrs = _scale_mistakes(b, a, lr, n)
        if batch != b * a * n:
            fail(f"{call} gave global batch {batch:g}; expected {b * a * n}: "
                 f"{name_mistake(batch, batches, 'batch_per_gpu x accumulation x n_gpus')}")
        if not math.isclose(new_lr, lr * n, rel_tol=1e-9):
            fail(f"{call} gave learning rate {new_lr:g}; expected {lr * n:g}: "
                 f"{name_mistake(new_lr, lrs, 'lr x n_gpus (the linear scaling rule)')}")
    success("scale_to_gpus keeps the per-GPU batch, multiplies the global batch and the learning rate by n_gpus")
