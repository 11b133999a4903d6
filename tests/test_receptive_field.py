"""Tests for lab_utils.receptive_field: propagation through layers against the closed form, and the lecture."""

import pytest
import torch

from lab_utils.masks import causal_mask, dilated_window_mask, global_tokens_mask, sliding_window_mask
from lab_utils.receptive_field import (
    receptive_field,
    receptive_field_row,
    receptive_field_size,
    receptive_field_span,
)


def test_lecture_example_three_layers_window_four():
    # The lecture: 3 layers, window of 4, output 11 "takes into consideration" tokens 2..11.
    mask = sliding_window_mask(16, window=4)
    assert receptive_field_span(mask, 3, 11) == (2, 11)
    assert receptive_field(mask, 3)[11].nonzero().flatten().tolist() == list(range(2, 12))
    assert receptive_field_size(4, 3) == 10 == (4 - 1) * 3 + 1


@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize("n_layers", [0, 1, 2, 4])
def test_propagation_equals_the_closed_form(window, n_layers):
    T = 40
    reach = receptive_field(sliding_window_mask(T, window=window), n_layers)
    size = receptive_field_size(window, n_layers)
    counts = reach.sum(dim=1)
    assert torch.equal(counts, torch.minimum(torch.arange(T) + 1, torch.tensor(size)))  # truncated at position 0
    for i in (T - 1, T // 2):
        first, last = receptive_field_span(sliding_window_mask(T, window=window), n_layers, i)
        assert (first, last) == (max(0, i - size + 1), i)


def test_row_equals_the_matrix_and_residual_keeps_the_own_token():
    mask = global_tokens_mask(10, [0]) | dilated_window_mask(10, window=2, dilation=3)
    full = receptive_field(mask, 2)
    for i in range(10):
        assert torch.equal(receptive_field_row(mask, 2, i), full[i])
    no_diagonal = causal_mask(5) & ~torch.eye(5, dtype=torch.bool)  # attention never reads itself ...
    assert receptive_field(no_diagonal, 3).diagonal().all()  # ... but the residual path still carries x_i


def test_dilated_field_has_holes_and_reaches_further():
    mask = dilated_window_mask(30, window=3, dilation=4)
    row = receptive_field_row(mask, 1, 29)
    assert row.nonzero().flatten().tolist() == [21, 25, 29]
    assert receptive_field_span(mask, 2, 29) == (13, 29)  # (3 - 1) * 4 * 2 back
    assert int(receptive_field_row(mask, 2, 29).sum()) == 5  # only multiples of 4 back: holes


def test_causal_mask_reaches_everything_before_after_one_layer():
    assert torch.equal(receptive_field(causal_mask(7), 1), causal_mask(7))
    assert torch.equal(receptive_field(causal_mask(7), 0), torch.eye(7, dtype=torch.bool))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: receptive_field(torch.ones(3, 3), 1), TypeError, "bool tensor"),
        (lambda: receptive_field(causal_mask(3, 4), 1), ValueError, r"square \(T, T\)"),
        (lambda: receptive_field(causal_mask(3), -1), ValueError, "n_layers must be >= 0"),
        (lambda: receptive_field([[True]], 1), TypeError, "torch.Tensor"),
        (lambda: receptive_field_span(causal_mask(3), 1, 3), ValueError, r"position must lie in \[0, T\) = \[0, 3\)"),
        (lambda: receptive_field_size(0, 2), ValueError, "window must be >= 1, got 0"),
        (lambda: receptive_field_size(4, 2.0), TypeError, "n_layers must be an int"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
