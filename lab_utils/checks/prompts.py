"""Exercise check for chapter "Parameter-efficient fine-tuning" (prompt_tuning): the prompt-prepend step.

Prompt tuning (Lester et al. 2021) puts the same ``n`` trainable vectors in front of every sequence's input
embeddings and lets every token attend to them. The student writes ``fn(prompt (n, h), inputs_embeds (B, T, h),
attention_mask (B, T)) -> (embeds (B, n + T, h), mask (B, n + T))``; the reference is
``lab_utils.prompt_tuning.prepend_prompt``. Data come from a local generator (the global RNG is untouched).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.prompt_tuning import prepend_prompt

__all__ = ["check_prepend_prompt"]

_SIZES = ((3, 2, 5, 4), (1, 4, 3, 6), (5, 1, 2, 3))  # (n, B, T, h): n != T and B != n, so swaps show in shapes


def _case(n: int, B: int, T: int, h: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(n, h, generator=g).requires_grad_(True)
    embeds = torch.randn(B, T, h, generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if B > 1:
        mask[-1, T // 2 + 1:] = 0  # one padded row: its zeros must survive
    return prompt, embeds, mask


def _shape_hint(got: tuple[int, ...], n: int, B: int, T: int, h: int) -> str:
    if got == (B, T, h):
        return "the prompt is missing: concatenate it in front of the tokens (along dim=1)"
    if got == (n + B, T, h) or got[0] == n + B:
        return "concatenated along the batch (dim=0): the prompt goes along the tokens, dim=1"
    if got == (B, n + T + n, h):
        return "the prompt was added twice"
    return "expand the (n, h) prompt to (B, n, h), then torch.cat((prompts, inputs_embeds), dim=1)"


def _check_embeds(got: Tensor, want: Tensor, prompt: Tensor, embeds: Tensor, call: str) -> None:
    n, T = prompt.shape[0], embeds.shape[1]
    if torch.allclose(got, want):
        return
    if torch.allclose(got[:, :T], embeds) and torch.allclose(got[:, T:], prompt.detach().expand_as(got[:, T:])):
        _fail(f"{call}: the prompt is after the tokens; prompt tuning puts it in front (positions 0..n-1)")
    if torch.allclose(got[:, n:], embeds):
        _fail(f"{call}: the tokens are right but positions 0..n-1 are not the prompt (every sequence of the "
              "batch gets the same prompt)")
    _fail(f"{call}: the embeddings differ from prompt-then-tokens: row b must be cat(prompt, inputs_embeds[b])")


def _check_mask(got: Tensor, want: Tensor, mask: Tensor, n: int, call: str) -> None:
    B, T = mask.shape
    if not isinstance(got, Tensor):
        _fail(f"{call} returned a {type(got).__name__} as the mask; return a tensor")
    if tuple(got.shape) == (B, T):
        _fail(f"{call}: the mask still has shape {(B, T)}; extend it with n ones in front so it matches the "
              f"{n} + {T} embeddings")
    if tuple(got.shape) != (B, n + T):
        _fail(f"{call}: the mask has shape {tuple(got.shape)}; expected {(B, n + T)}")
    got = got.to(want.dtype)
    if torch.equal(got, want):
        return
    if torch.equal(got[:, n:], mask) and not got[:, :n].any():
        _fail(f"{call}: the virtual tokens are masked out (zeros): give them ones, every token must see the prompt")
    if torch.equal(got[:, :T], mask) and torch.equal(got[:, T:], torch.ones_like(got[:, T:])):
        _fail(f"{call}: the ones are after the mask; they belong in front, where the prompt is")
    if torch.equal(got, torch.ones_like(got)):
        _fail(f"{call}: the mask is all ones; keep the padding zeros of attention_mask")
    _fail(f"{call}: the mask differs from cat(ones(B, n), attention_mask, dim=1)")


@exercise_check
def check_prepend_prompt(fn: StudentFunction) -> None:
    """Check ``fn(prompt, inputs_embeds, attention_mask) -> (embeds, mask)`` against ``prepend_prompt``.

    Args:
        fn: the student's function, e.g. ``my_prepend_prompt``.

    Returns:
        True when every case is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first mistake (prompt missing or after the tokens, batch dimension used, mask
            not extended, virtual tokens masked out, padding lost, gradient cut off from the prompt).
    """
    for i, (n, B, T, h) in enumerate(_SIZES):
        prompt, embeds, mask = _case(n, B, T, h, seed=i)
        call = f"{fn.name}(prompt ({n}, {h}), inputs_embeds ({B}, {T}, {h}), attention_mask ({B}, {T}))"
        out = fn(prompt, embeds.clone(), mask.clone())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            _fail(f"{call} returned {type(out).__name__}; return a pair (embeds, mask)")
        got, got_mask = out
        if not isinstance(got, Tensor):
            _fail(f"{call} returned a {type(got).__name__} as the embeddings; return a tensor")
        want, want_mask = prepend_prompt(prompt.detach(), embeds, mask)
        if tuple(got.shape) != (B, n + T, h):
            _fail(f"{call}: embeddings of shape {tuple(got.shape)}; expected {(B, n + T, h)}: "
                  f"{_shape_hint(tuple(got.shape), n, B, T, h)}")
        _check_embeds(got.detach(), want, prompt, embeds, call)
        _check_mask(got_mask, want_mask, mask, n, call)
        if not got.requires_grad:
            _fail(f"{call}: no gradient can reach the prompt (was it detached or copied into a new tensor?); "
                  "the prompt is the only thing prompt tuning trains")
        got.sum().backward()
        if prompt.grad is None or not torch.allclose(prompt.grad, torch.full_like(prompt, B)):
            _fail(f"{call}: the prompt's gradient is wrong; each of the B sequences must use the prompt itself")
    _success("prompt prepended to every sequence, mask extended with ones in front, gradient reaches the prompt; "
             f"(n, B, T, h) = {', '.join(map(str, _SIZES))}")
