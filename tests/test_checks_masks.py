"""Tests for lab_utils.checks.masks (and the shared behaviour of lab_utils.checks.feedback)."""

import random

import pytest
import torch

from lab_utils.checks import check_causal_mask
from lab_utils.checks import masks as masks_check
from lab_utils.masks import causal_mask


def my_causal_mask(T):
    raise NotImplementedError  # your code here


def test_accepts_correct_masks(capsys):
    assert check_causal_mask(lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool))) is True
    assert check_causal_mask(causal_mask) is True
    assert capsys.readouterr().out.count("✓ causal mask correct") == 2


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_causal_mask(my_causal_mask) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ my_causal_mask is not written yet: replace `raise NotImplementedError` with your code")


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda T: torch.tril(torch.ones(T, T)), "dtype torch.float32.*bool"),
        (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1), "diagonal"),  # j < i
        (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=1), r"row 0 .*see the future"),
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), "inverted"),  # True = blocked
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "transposed"),
        (lambda T: torch.tril(torch.ones(T, T + 1, dtype=torch.bool)), r"shape \(8, 9\); expected \(8, 8\)"),
        (lambda T: [[True]], "torch.Tensor"),
    ],
)
def test_rejects_wrong_masks(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_causal_mask(fn)


def test_rejects_a_mask_hard_coded_for_8_tokens():
    tril8 = torch.tril(torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(AssertionError, match=r"shape \(8, 8\); expected \((\d+), \1\).*hard-coded"):
        check_causal_mask(lambda T: tril8[:T, :T])  # right for T <= 8, the sizes the old check used


def test_rejects_a_mask_wrong_only_for_long_sequences():
    def fn(T):  # correct up to 8, then a leak at the last key of row 0
        m = causal_mask(T)
        if T > 8:
            m[0, -1] = True
        return m

    with pytest.raises(AssertionError, match=r"row 0 .*see the future"):
        check_causal_mask(fn)


def test_sizes_are_drawn_afresh_so_a_lookup_table_of_a_previous_run_fails(monkeypatch):
    seen = {}

    def recorder(T):
        seen[T] = causal_mask(T)
        return seen[T]

    monkeypatch.setattr(masks_check, "_SIZE_RNG", random.Random(0))
    assert check_causal_mask(recorder)
    monkeypatch.setattr(masks_check, "_SIZE_RNG", random.Random(1))
    assert max(seen) > 8  # the check went past the old T <= 8
    with pytest.raises(KeyError):  # the next run asks for sizes the table does not hold
        check_causal_mask(lambda T: seen[T])


def test_does_not_touch_the_global_rngs():
    torch.manual_seed(0)
    random.seed(0)
    state, py_state = torch.get_rng_state(), random.getstate()
    check_causal_mask(lambda T: causal_mask(T) | (torch.rand(T, T) > 2))  # the student's function uses the RNG
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == py_state


def test_other_exceptions_of_the_student_propagate_with_a_note():
    def fn(T):
        return torch.ones(T, T).tril(diagonal="0")  # a TypeError in the student's own code

    with pytest.raises(TypeError) as info:
        check_causal_mask(fn)
    assert any("raised inside fn, called by the check as fn(8)" in note for note in info.value.__notes__)


def test_passing_the_result_instead_of_the_function_is_explained():
    with pytest.raises(AssertionError, match="pass your function itself"):
        check_causal_mask(causal_mask(4))
