"""Tests for lab_utils.checks.sparse: the references pass, each typical wrong answer fails naming the mistake."""

import random

import pytest
import torch

from lab_utils.checks import sparse as sparse_check
from lab_utils.checks.sparse import check_receptive_field, check_sliding_window_mask
from lab_utils.masks import sliding_window_mask


def reference_span(window, n_layers, position):
    return max(0, position - (window - 1) * n_layers), position


def reference_mask(T, window):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) & (j > i - window)


def my_receptive_field(window, n_layers, position):
    raise NotImplementedError


def test_receptive_field_reference_passes(capsys):
    assert check_receptive_field(reference_span) is True
    assert check_receptive_field(lambda w, n, p: torch.tensor([max(0, p - (w - 1) * n), p])) is True  # tensor ok
    assert capsys.readouterr().out.count("✓ receptive field correct") == 2


def test_receptive_field_stub_says_not_written(capsys):
    assert check_receptive_field(my_receptive_field) is False
    assert capsys.readouterr().out.startswith("✗ my_receptive_field is not written yet")


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda w, n, p: (max(0, p - w * n + 1), p), r"window \* n_layers tokens: each layer reaches only window - 1"),
        (lambda w, n, p: (max(0, p - (w - 1) * n + 1), p), r"forgot the \+1"),
        (lambda w, n, p: (max(0, p - w * n), p), "off by one in the window"),
        (lambda w, n, p: (max(0, p - (w - 1)), p), "one layer's window"),
        (lambda w, n, p: (max(0, p - (w - 1) * n), p + (w - 1) * n), "causal.*last = position"),
        (lambda w, n, p: (max(0, p - (w - 1) * n), p + 1), "inclusive"),
        (lambda w, n, p: (p - (w - 1) * n, p), r"cut there: first = max\(0"),
        (lambda w, n, p: (w - 1) * n + 1, "returned the single number 10; return a pair"),
        (lambda w, n, p: (max(0, p - (w - 1) * n), p - 1), "last = position"),
        (lambda w, n, p: (max(0, p - 2 * w * n), p), r"expected \(11, 20\): each layer reaches window - 1 = 3"),
    ],
)
def test_receptive_field_typical_mistakes_are_named(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_receptive_field(fn)


def test_receptive_field_lookup_table_of_fixed_cases_fails(monkeypatch):
    table = {(4, 3, 20): (11, 20), (4, 3, 11): (2, 11), (5, 3, 4): (0, 4), (1, 6, 9): (9, 9), (2, 1, 0): (0, 0)}
    monkeypatch.setattr(sparse_check, "_SIZE_RNG", random.Random(3))
    with pytest.raises(KeyError):
        check_receptive_field(lambda w, n, p: table[(w, n, p)])


def my_sliding_window_mask(T, window):
    raise NotImplementedError


def test_sliding_window_mask_reference_passes(capsys):
    assert check_sliding_window_mask(reference_mask) is True
    assert check_sliding_window_mask(lambda T, w: sliding_window_mask(T, window=w)) is True
    assert capsys.readouterr().out.count("✓ sliding-window mask correct") == 2


def test_sliding_window_mask_stub_says_not_written(capsys):
    assert check_sliding_window_mask(my_sliding_window_mask) is False
    assert capsys.readouterr().out.startswith("✗ my_sliding_window_mask is not written yet")


def _d(T):
    return torch.arange(T)[:, None] - torch.arange(T)[None, :]  # query - key


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda T, w: (_d(T) >= 0) & (_d(T) <= w), r"one key too many.*j > i - window"),
        (lambda T, w: (_d(T) >= 0) & (_d(T) < w - 1), "one key too few"),
        (lambda T, w: _d(T).abs() < w, "not causal"),
        (lambda T, w: _d(T).abs() <= w // 2, "not causal"),
        (lambda T, w: (_d(T) > 0) & (_d(T) <= w), "diagonal is not all True"),
        (lambda T, w: ((_d(T) >= 0) & (_d(T) < w)).float(), "dtype torch.float32.*bool"),
        (
            lambda T, w: torch.zeros(T, T).masked_fill(~((_d(T) >= 0) & (_d(T) < w)), float("-inf")),
            "additive mask",
        ),
        (lambda T, w: ((_d(T) >= 0) & (_d(T) < w)).T, "transposed"),
        (lambda T, w: ~((_d(T) >= 0) & (_d(T) < w)), "inverted"),
        (lambda T, w: (_d(T) >= 0) & (_d(T) < 3), r"row 3 allows keys \[1, 2, 3\].*expected 4 keys, 0..3"),
        (lambda T, w: ((_d(T) >= 0) & (_d(T) < w)).tolist(), "torch.Tensor"),
        (lambda T, w: (_d(T + 1) >= 0) & (_d(T + 1) < w), r"shape \(11, 11\); expected \(10, 10\)"),
    ],
)
def test_sliding_window_mask_typical_mistakes_are_named(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_sliding_window_mask(fn)


def test_sliding_window_mask_wrong_only_when_window_exceeds_t_is_caught():
    def fn(T, w):  # forgets that a window longer than the sequence is plain causal (wraps around instead)
        if w > T:
            return torch.ones(T, T, dtype=torch.bool)
        return reference_mask(T, w)

    with pytest.raises(AssertionError, match=r"fn\(5, 9\).*not causal"):
        check_sliding_window_mask(fn)


def test_checks_do_not_touch_the_global_rngs():
    torch.manual_seed(0)
    random.seed(0)
    state, py_state = torch.get_rng_state(), random.getstate()
    check_sliding_window_mask(lambda T, w: reference_mask(T, w) | (torch.rand(T, T) > 2))
    check_receptive_field(reference_span)
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
