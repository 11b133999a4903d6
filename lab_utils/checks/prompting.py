"""Exercise checks for chapter "Adapting without training": reading label probabilities off a batch of prompts'
logits, and reading a number off a model's answer.

``check_label_probs``: the student writes ``fn(logits (B, T, V), attention_mask (B, T), label_ids) -> (B, L)``, the
label tokens' probabilities after each prompt's last real token, renormalised over the labels; the reference is
``lab_utils.prompting.label_probs_from_logits``. The cases have right padding of different lengths (so position -1
is a pad) and label ids out of order. ``check_extract_answer``: ``fn(text) -> number | None`` by the rule of
``lab_utils.word_problems.extract_answer``. Data come from a local generator (the global RNG is untouched).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.prompting import label_probs_from_logits

__all__ = ["check_extract_answer", "check_label_probs"]

_TOL = 1e-5  # float32 softmax of a few N(0, 2) logits: agrees to ~1e-7 whatever the order of operations
# (B, T, V, label_ids, real tokens per row): rows padded by 0, 2 and 3 tokens; label ids not sorted
_CASES = ((3, 6, 11, (7, 2), (6, 4, 3)), (2, 5, 9, (1, 8, 4), (2, 5)))


def _case(B: int, T: int, V: int, lengths: tuple[int, ...], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, T, V, generator=g)
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    return logits, mask


def _at(logits: Tensor, positions: Tensor) -> Tensor:
    return logits[torch.arange(logits.shape[0]), positions]  # (B, V)


def _mistakes(logits: Tensor, mask: Tensor, ids: list[int]) -> list[tuple[Callable[[], Tensor], str]]:
    last = mask.sum(1) - 1
    T = logits.shape[1]
    sorted_ids = sorted(ids)
    return [
        (lambda: logits[:, -1][:, ids].softmax(-1),
         "you read the logits at position -1, which is a pad token in the padded rows: take each row's last real "
         "token, attention_mask.sum(1) - 1"),
        (lambda: _at(logits, (last + 1).clamp(max=T - 1))[:, ids].softmax(-1),
         "you read the logits one position too far (attention_mask.sum(1) is the first pad); subtract 1"),
        (lambda: logits[:, 0][:, ids].softmax(-1), "you read the logits of the first token, not the last real one"),
        (lambda: _at(logits, last).softmax(-1)[:, ids],
         "these are probabilities under the whole vocabulary; renormalise over the labels so each row sums to 1 "
         "(a softmax over the label tokens' logits alone does it)"),
        (lambda: _at(logits, last)[:, ids].softmax(0),
         "softmax along the batch (dim 0): normalise over the labels, dim=-1"),
        (lambda: _at(logits, last)[:, ids],
         "these are logits, not probabilities: apply a softmax over the label tokens"),
        (lambda: _at(logits, last)[:, sorted_ids].softmax(-1),
         "the label columns are in sorted order; keep the order of label_ids (column j is label_ids[j])"),
    ]


@exercise_check
def check_label_probs(fn: StudentFunction) -> None:
    """Check ``fn(logits, attention_mask, label_ids)``: label probabilities after each prompt, rows summing to 1.

    Args:
        fn: the student's function, e.g. ``my_label_probs``.

    Returns:
        True when every case is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first mistake (position -1 or one too far, first token, no renormalisation,
            softmax along the batch, logits returned, label columns reordered).
    """
    for i, (B, T, V, ids, lengths) in enumerate(_CASES):
        logits, mask = _case(B, T, V, lengths, seed=i)
        ids = list(ids)
        call = f"{fn.name}(logits ({B}, {T}, {V}), attention_mask with {list(lengths)} real tokens, {ids})"
        got = fn(logits.clone(), mask.clone(), list(ids))
        if not isinstance(got, Tensor):
            _fail(f"{call} returned a {type(got).__name__}; return a tensor of shape {(B, len(ids))}")
        if tuple(got.shape) != (B, len(ids)):
            hint = " (one column per label id, not per vocabulary entry)" if got.shape[-1] == V else ""
            _fail(f"{call} returned shape {tuple(got.shape)}; expected {(B, len(ids))}{hint}")
        got = got.detach().float().cpu()
        want = label_probs_from_logits(logits, mask, ids)
        if torch.allclose(got, want, atol=_TOL, rtol=0):
            continue
        for value, hint in _mistakes(logits, mask, ids):
            if torch.allclose(got, value().float(), atol=_TOL, rtol=0):
                _fail(f"{call}: {hint}")
        _fail(f"{call}: expected {want.numpy().round(4).tolist()}, got {got.numpy().round(4).tolist()}; each row "
              "is softmax(logits[row, last real position, label_ids])")
    _success("label probabilities read after each prompt's last real token and renormalised over the labels; "
             f"{len(_CASES)} right-padded batches")


_FIRST = "you took the first number; the rule takes the last one (the model states its answer at the end)"
_NO_CUT = "you read a number from the new question the model started: cut at the first blank line or 'Q:' first"
_COMMA = "1,200 is one number with a thousands separator: read it as 1200"
_DECIMAL = "2.5 is one number: keep the decimal part (return a float)"
_MINUS = "keep the minus sign of a negative number"
_NONE = "there is no number before the cut: return None"
# (generated text, the answer by the rule, {what a typical mistake returns: its hint})
_ANSWERS: tuple[tuple[str, int | float | None, dict], ...] = (
    (" The answer is 11.", 11, {}),
    (" 4 boxes of 6 pencils is 24 pencils. The answer is 24.", 24, {4: _FIRST, 6: _FIRST}),
    (" 23 - 20 = 3. 3 + 6 = 9. The answer is 9.\n\nQ: A shop has 40 apples and sells 12.", 9,
     {12: _NO_CUT, 40: _NO_CUT, 23: _FIRST}),
    (" The answer is 9.\nQ: Tom has 4 cats.", 9, {4: _NO_CUT}),
    (" They sold 1,200 tickets in all. The answer is 1,200.", 1200, {200: _COMMA, 1: _COMMA}),
    (" I am not sure.", None, {0: _NONE}),
    (" Each friend gets 2.5 apples.", 2.5, {5: _DECIMAL, 2: _DECIMAL, 25: _DECIMAL}),
    (" The temperature fell to -4 degrees.", -4, {4: _MINUS}),
)


def _as_answer(got: object) -> float | None | str:
    """The student's return value as a float, None, or "bad" (a string, bool, or anything not a number)."""
    if got is None:
        return None
    if isinstance(got, (str, bytes, bool)):
        return "bad"
    try:
        return float(got)
    except (TypeError, ValueError):
        return "bad"


@exercise_check
def check_extract_answer(fn: StudentFunction) -> None:
    """Check ``fn(text) -> int | float | None``: the last number before the model starts a new question.

    Args:
        fn: the student's function, e.g. ``my_extract_answer``.

    Returns:
        True when every case is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first mistake (first number taken, new question not cut off, thousands
            separator or decimal split, minus sign lost, 0 instead of None, a string returned).
    """
    for text, want, mistakes in _ANSWERS:
        got = fn(text)
        value = _as_answer(got)
        if value == "bad":
            _fail(f"{fn.name}({text!r}) returned {got!r}; return a number (int, or float for a decimal) or None")
        if (value is None and want is None) or (value is not None and want is not None and abs(value - want) < 1e-9):
            continue
        hint = next((h for wrong, h in mistakes.items() if value is not None and abs(value - wrong) < 1e-9),
                    "the rule: cut at the first blank line or 'Q:', then take the last number")
        _fail(f"{fn.name}({text!r}) returned {got!r}; expected {want!r}: {hint}")
    _success(f"answers read by the rule (the last number before a new question) in {len(_ANSWERS)} generated texts")
