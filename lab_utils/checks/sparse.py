"""Exercise checks for chapter "Efficient attention" (windowed attention): receptive field and sliding-window mask.

``check_receptive_field`` checks ``fn(window, n_layers, position) -> (first, last)``, the inclusive span of input
positions that reach output ``position`` of a causal model whose ``n_layers`` layers all use a sliding window of
``window`` keys (the query itself included); the reference propagates the mask through the layers
(``lab_utils.receptive_field``). ``check_sliding_window_mask`` checks ``fn(T, window) -> (T, T)`` bool, True = may
attend, query ``i`` allowed keys ``i - window < j <= i`` (``lab_utils.masks.sliding_window_mask``). Besides fixed
cases, each call draws a few more from a private OS-seeded ``random.Random`` (never the global RNG), so an answer
hard-coded for the cases a previous run showed cannot pass.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.masks import causal_mask, sliding_window_mask
from lab_utils.receptive_field import receptive_field_span

__all__ = ["check_receptive_field", "check_sliding_window_mask"]

_SIZE_RNG = random.Random()  # private, OS-seeded: the drawn cases change from call to call


# ------------------------------------------------------------------------------------------- receptive field
def _span_cases() -> list[tuple[int, int, int]]:
    """(window, n_layers, position): first one far from the start, so that every typical mistake gives another
    value; then the lecture's example, a field cut at position 0, window 1, and two drawn cases."""
    fixed = [(4, 3, 20), (4, 3, 11), (5, 3, 4), (1, 6, 9), (2, 1, 0)]
    drawn = []
    for _ in range(2):
        window, n_layers = _SIZE_RNG.randint(2, 9), _SIZE_RNG.randint(1, 6)
        drawn.append((window, n_layers, _SIZE_RNG.randint(0, 2 * (window - 1) * n_layers + 4)))
    return fixed + drawn


def _as_span(got: object, call: str) -> tuple[float, float]:
    if isinstance(got, Tensor) and got.numel() == 2:
        got = got.flatten().tolist()
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        shown = type(got).__name__ if not isinstance(got, (int, float)) else f"the single number {got}"
        _fail(f"{call} returned {shown}; return a pair (first, last): the first and the last input position that "
              "reach the output, both included")  # fmt: skip
    return as_number(got[0], call), as_number(got[1], call)


@exercise_check
def check_receptive_field(fn: StudentFunction) -> None:
    """Check ``fn(window, n_layers, position) -> (first, last)`` for a causal sliding window (inclusive span).

    Args:
        fn: the student's function, e.g. ``my_receptive_field``.

    Returns:
        True when every case is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first wrong case and, when recognisable, the mistake (window x layers, the +1
            forgotten, a window counted without the query itself, a field looking into the future, a field
            reaching before position 0, an exclusive end).
    """
    cases = _span_cases()
    for window, n_layers, position in cases:
        call = f"{fn.name}({window}, {n_layers}, {position})"
        first, last = _as_span(fn(window, n_layers, position), call)
        mask = sliding_window_mask(position + 1 + window * n_layers, window=window)  # room after the position
        want_first, want_last = receptive_field_span(mask, n_layers, position)
        if (first, last) == (want_first, want_last):
            continue
        expected = f"expected ({want_first}, {want_last})"
        if last > position and first == want_first and last == position + 1:
            _fail(f"{call} = ({first:g}, {last:g}); {expected}: return the last position itself (inclusive), "
                  "not one past it")  # fmt: skip
        if last > position:
            _fail(f"{call} = ({first:g}, {last:g}); {expected}: the model is causal, nothing after position "
                  f"{position} can reach output {position}, so last = position (a centred window?)")  # fmt: skip
        if last != position:
            _fail(f"{call} = ({first:g}, {last:g}); {expected}: the output's own input always reaches it (the "
                  "window holds the token itself, and the residual path carries it), so last = position")  # fmt: skip
        if first < 0:
            _fail(f"{call} = ({first:g}, {last:g}); {expected}: positions start at 0, so the field is cut there: "
                  "first = max(0, position - (window - 1) * n_layers)")  # fmt: skip
        back = position - first  # how far back the student reaches
        hint = name_mistake(
            back,
            [
                ((window - 1) * n_layers - 1, "you forgot the +1: the size is (window - 1) * n_layers + 1 tokens, "
                                              "the output's own token included"),
                (window * n_layers - 1, "you used window * n_layers tokens: each layer reaches only window - 1 "
                                        "new tokens back, because the window includes the token itself"),
                (window * n_layers, "off by one in the window: a window of w keys is the token and the w - 1 "
                                    "before it, so one layer reaches w - 1 positions back, not w"),
                (window - 1, "that is one layer's window: stacking n_layers layers reaches n_layers times as far"),
            ],
            default=f"each layer reaches window - 1 = {window - 1} positions further back, so after "
            f"{n_layers} layers first = max(0, {position} - {window - 1} * {n_layers})",
        )  # fmt: skip
        if want_first == 0 and first > 0 and hint.startswith("each layer"):
            hint = "the field is cut at position 0: first = max(0, position - (window - 1) * n_layers)"
        _fail(f"{call} = ({first:g}, {last:g}); {expected}: {hint}")
    _success(f"receptive field correct for {len(cases)} configurations, e.g. window 4, 3 layers: output 11 sees "
             "tokens 2..11")  # fmt: skip


# ------------------------------------------------------------------------------------------ sliding-window mask
def _mask_cases() -> list[tuple[int, int]]:
    """(T, window): a window well inside the sequence first (every mistake shows), then edges, then drawn."""
    drawn = []
    for _ in range(2):
        T = _SIZE_RNG.randint(9, 64)
        drawn.append((T, _SIZE_RNG.randint(2, T - 1)))
    return [(10, 3), (8, 4), (6, 1), (5, 9), *drawn, (1, 1)]


@exercise_check
def check_sliding_window_mask(fn: StudentFunction) -> None:
    """Check ``fn(T, window) -> (T, T)`` bool causal sliding-window mask (True = may attend).

    Args:
        fn: the student's function, e.g. ``my_sliding_window_mask``.

    Returns:
        True when the mask is right for every case; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: naming the first wrong case and, when recognisable, the mistake (window + 1 or
            window - 1 keys, a band that is not causal, the diagonal missing, a float or additive mask,
            transposed or inverted).
    """
    cases = _mask_cases()
    for T, window in cases:
        call = f"{fn.name}({T}, {window})"
        got = fn(T, window)
        if not isinstance(got, Tensor):
            _fail(f"{call} returned {type(got).__name__}; return a torch.Tensor")
        if tuple(got.shape) != (T, T):
            _fail(f"{call} has shape {tuple(got.shape)}; expected ({T}, {T}): one row per query, one column per key")
        if got.dtype != torch.bool:
            additive = got.is_floating_point() and bool(torch.isinf(got).any())
            kind = "an additive mask (0 / -inf, added to the scores)" if additive else f"dtype {got.dtype}"
            _fail(f"{call} is {kind}; return a bool mask, True = may attend (the course's and SDPA's convention), "
                  "e.g. with a comparison such as `(d >= 0) & (d < window)`")  # fmt: skip
        got = got.cpu()
        want = sliding_window_mask(T, window=window)
        if torch.equal(got, want):
            continue
        if torch.equal(got, ~want):
            _fail("your mask is inverted: True must mean 'may attend', not 'blocked'")
        if not torch.equal(want, want.T) and torch.equal(got, want.T):
            _fail("your mask is transposed: row i is query i and holds keys i - window + 1 .. i (left of the "
                  "diagonal), not the queries that see key i")  # fmt: skip
        future = got & ~causal_mask(T)
        if future.any():
            i, j = (int(x) for x in future.nonzero()[0])
            _fail(f"{call}: query {i} may attend key {j} > {i}, the future: the band is not causal. A decoder's "
                  "window looks back only: allow i - window < j <= i")  # fmt: skip
        if not got.diagonal().all():
            _fail(f"{call}: the diagonal is not all True: a token must attend to itself, which is one of the window "
                  "keys (i - window < j <= i, not i - window <= j < i)")  # fmt: skip
        counts = got.sum(dim=1)
        i = int((got != want).any(dim=1).nonzero()[0])
        hint = name_mistake(
            float(counts[i]),
            [
                (min(i + 1, window + 1), "one key too many: a window of w keys is the token and the w - 1 "
                                         "before it (j > i - window, not j >= i - window)"),
                (min(i + 1, window - 1), "one key too few: the window includes the token itself, so it reaches "
                                         "window - 1 tokens back (j > i - window)"),
            ],
            default="allow exactly the keys i - window < j <= i",
        )  # fmt: skip
        keys = got[i].nonzero().flatten().tolist()
        shown = f"keys {keys}" if len(keys) <= 12 else f"{len(keys)} keys"
        _fail(f"{call}: row {i} allows {shown}; expected {int(want[i].sum())} keys, "
              f"{max(0, i - window + 1)}..{i}: {hint}")  # fmt: skip
    _success(f"sliding-window mask correct for {len(cases)} cases (windows from 1 to longer than the sequence)")
