"""One model-agnostic training loop (as minGPT keeps its trainer apart from its model), and held-out evaluation.

A loss function `loss_fn(model, batch) -> (mean loss, number of targets)` (e.g. `objectives.next_token_loss`,
`objectives.mlm_loss(...)`) decides what is learned; `train` runs AdamW with warmup, a decay schedule, gradient
clipping, periodic validation and early stopping, and records everything in a `History`. Used from chapter
"Encoders and decoders" on; the quantization chapter adds mixed precision (`autocast_dtype`, `grad_scaler`: fp32
master weights, a bf16/fp16 forward, loss scaling). Steps count from 1: step s is the s-th optimizer update.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lab_utils.objectives import Batch, LossFn

__all__ = ["AUTOCAST_DTYPES", "SCHEDULES", "Batch", "History", "LossFn", "evaluate", "lr_factor", "to_device", "train"]

SCHEDULES = ("constant", "linear", "cosine")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)  # the half-precision formats torch.autocast computes in


@dataclass
class History:
    """What `train` saw: per-step training loss and learning rate, validation losses, callback records."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_val_loss: float | None = None
    records: list[dict] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)  # updates a GradScaler skipped (inf/NaN gradients)

    def to_frame(self):
        """One row per step (index `step`): `train_loss`, `lr`, `val_loss` (NaN between evaluations), records."""
        import pandas as pd

        frame = pd.DataFrame({"step": self.steps, "train_loss": self.train_loss, "lr": self.lr}).set_index("step")
        frame["val_loss"] = pd.Series(self.val_loss, index=self.val_steps, dtype=float)
        if self.records:
            frame = frame.join(pd.DataFrame(self.records).set_index("step"))
        return frame


def lr_factor(step: int, *, steps: int, warmup_steps: int = 0, schedule: str = "constant") -> float:
    """Multiplier of the peak learning rate at update `step` (1-based), as transformers' schedules.

    Linear warmup from 0 over `warmup_steps` updates, then constant, linear decay to 0, or half a cosine to 0. It
    equals `get_{constant,linear,cosine}_schedule_with_warmup`'s factor at their step `step - 1` (so with warmup
    the first update has learning rate 0, as there).
    """
    i = step - 1  # updates done before this one
    if i < warmup_steps:
        return i / warmup_steps
    progress = (i - warmup_steps) / max(1, steps - warmup_steps)  # 0 -> ~1 over the decay
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return 1.0


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors in a dict / list / tuple, to `device`."""
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch.to(device, non_blocking=True) if isinstance(batch, Tensor) else batch


def _cycle(batches: Iterable) -> Iterator:
    """Yield batches forever: re-iterate a list or DataLoader (a new shuffle per epoch), remember an iterator's."""
    if iter(batches) is batches:
        yield from itertools.cycle(batches)
        return
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


def _model_device(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, *,
             device: torch.device | str | None = None) -> float:
    """Token-weighted mean loss `sum(loss * n) / sum(n)` over one pass of `batches`, in eval mode (dropout off).

    Raises:
        ValueError: if `batches` hold no target (empty, or all padding).
    """
    device = _model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            loss, n = loss_fn(model, to_device(batch, device))
            if n > 0:
                total += float(loss) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches hold no target to evaluate: is it empty, or all padding?")
    return total / count


def train(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn,
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    optimizer: torch.optim.Optimizer | None = None,
    warmup_steps: int = 0,
    schedule: Literal["constant", "linear", "cosine"] = "constant",
    grad_clip: float | None = 1.0,
    val_batches: Iterable[Batch] | None = None,
    eval_every: int | None = None,
    val_loss_fn: LossFn | None = None,
    restore_best: bool = False,
    device: torch.device | str | None = None,
    callback: Callable[[int, nn.Module, float], dict | None] | None = None,
    progress: bool = True,
    desc: str = "train",
    autocast_dtype: torch.dtype | None = None,
    grad_scaler: bool | None = None,
) -> History:
    """Train `model` on `loss_fn` for `steps` updates; the batches are cycled and moved to `device`.

    Args:
        model: any module `loss_fn` accepts; only parameters with `requires_grad` are optimized.
        batches: tensors or dicts of tensors (a list, a DataLoader or an iterator).
        loss_fn: `loss_fn(model, batch) -> (mean loss, number of targets)`.
        steps: number of optimizer updates.
        lr, weight_decay: AdamW's peak learning rate and decoupled weight decay.
        optimizer: another optimizer; the schedule then scales each of its group's own learning rate.
        warmup_steps: linear warmup from 0 (`lr_factor`); `schedule`: what follows it.
        grad_clip: maximum global gradient norm (nanoGPT's 1.0); None = no clipping.
        val_batches: held-out batches, evaluated every `eval_every` steps and at the last step.
        eval_every: validation period in steps (None = only at the last step).
        val_loss_fn: the validation loss (default `loss_fn`); for MLM give it its own seeded generator, so that
            the validation masks do not consume the training masks' random stream.
        restore_best: early stopping: load the weights of the lowest validation loss at the end (kept on the CPU).
        device: where to train (the model is moved); default where the model is.
        callback: `callback(step, model, loss)` after each update; a returned dict is recorded with its step.
        progress, desc: show a tqdm bar with this label (postfix: loss and lr).
        autocast_dtype: mixed precision: run the forward pass and the loss under
            `torch.autocast(device.type, dtype=autocast_dtype)` (`torch.bfloat16` or `torch.float16`). The parameters
            and the optimizer state stay in their dtype (fp32 master weights); None = no autocast. Validation runs
            without autocast.
        grad_scaler: scale the loss with a `torch.amp.GradScaler(device.type)` so that small fp16 gradients do not
            underflow to 0; gradients are unscaled before clipping, and an update whose gradients hold inf/NaN is
            skipped (recorded in `History.skipped_steps`) and the scale lowered. None = on for fp16 on CUDA only
            (bf16 has fp32's exponent range and needs no scaling).

    Returns:
        The `History`. The model ends in the train/eval mode it started in.

    Raises:
        ValueError: on bad sizes, an unknown schedule, validation options without `val_batches`, no batches, an
            `autocast_dtype` other than bf16/fp16.
        TypeError: if `autocast_dtype` is not a torch dtype or `grad_scaler` not a bool or None.
        FloatingPointError: if the loss becomes NaN or infinite (lower `lr` or keep `grad_clip`); with a grad scaler
            such a step is skipped and recorded instead.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= warmup_steps <= steps:
        raise ValueError(f"warmup_steps must be in [0, steps={steps}], got {warmup_steps}")
    if optimizer is None and not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {grad_clip}")
    if val_batches is None and (eval_every is not None or restore_best):
        raise ValueError("eval_every and restore_best need val_batches (held-out batches to validate on)")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1 (or None: validate at the last step only), got {eval_every}")
    if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
        raise TypeError(f"autocast_dtype must be a torch dtype such as torch.bfloat16, got {autocast_dtype!r}")
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be one of {AUTOCAST_DTYPES} (or None: no mixed precision), "
                         f"got {autocast_dtype}")
    if grad_scaler is not None and not isinstance(grad_scaler, bool):
        raise TypeError(f"grad_scaler must be True, False or None (automatic), got {grad_scaler!r}")
    device = _model_device(model) if device is None else torch.device(device)
    if grad_scaler is None:
        grad_scaler = autocast_dtype == torch.float16 and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type) if grad_scaler else None
    was_training = model.to(device).training
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
    history, best_state = History(), None
    stream = _cycle(batches)
    model.train()
    try:
        bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress)
        for step in bar:
            batch = next(stream, None)
            if batch is None:
                raise ValueError("batches is empty: give at least one batch")
            factor = lr_factor(step, steps=steps, warmup_steps=warmup_steps, schedule=schedule)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            autocast = (contextlib.nullcontext() if autocast_dtype is None
                        else torch.autocast(device.type, dtype=autocast_dtype))
            with autocast:
                loss, _n = loss_fn(model, to_device(batch, device))
            if scaler is None and not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step}: lower lr or keep grad_clip")
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()  # d(scale * loss): small fp16 gradients stay above the underflow
                scaler.unscale_(optimizer)  # true gradients before clipping, so grad_clip means what it says
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scale = scaler.get_scale()
                scaler.step(optimizer)  # skipped if the gradients hold inf/NaN
                scaler.update()  # ... and then the scale is lowered: that is how a skip shows
                if scaler.get_scale() < scale or not torch.isfinite(loss):
                    history.skipped_steps.append(step)
            history.steps.append(step)
            history.train_loss.append(loss.item())
            history.lr.append(optimizer.param_groups[0]["lr"])
            if callback is not None and (record := callback(step, model, history.train_loss[-1])) is not None:
                history.records.append({"step": step, **record})
            if val_batches is not None and (step == steps or (eval_every is not None and step % eval_every == 0)):
                val = evaluate(model, val_batches, val_loss_fn or loss_fn, device=device)
                history.val_steps.append(step)
                history.val_loss.append(val)
                if history.best_val_loss is None or val < history.best_val_loss:
                    history.best_step, history.best_val_loss = step, val
                    if restore_best:
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", lr=f"{history.lr[-1]:.2e}", refresh=False)
    finally:
        model.train(was_training)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
