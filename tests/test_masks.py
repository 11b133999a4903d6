"""Tests for lab_utils.masks: shapes, polarity, offsets (KV cache), padding and combination."""

import pytest
import torch

from lab_utils.masks import bidirectional_mask, causal_mask, combine_masks, padding_mask


@pytest.mark.parametrize("T", [1, 2, 7])
def test_causal_row_i_allows_exactly_i_plus_one_keys(T):
    mask = causal_mask(T)
    assert mask.dtype == torch.bool and mask.shape == (T, T)
    assert torch.equal(mask.sum(dim=1), torch.arange(1, T + 1))
    assert torch.equal(mask, torch.ones(T, T, dtype=torch.bool).tril())  # lower triangle: keys j <= i


def test_causal_with_offset_is_the_last_rows_of_the_full_mask():
    # Decoding with a KV cache: 3 new queries after 5 cached tokens see the rows 5..7 of the full 8x8 mask.
    full = causal_mask(8)
    assert torch.equal(causal_mask(3, offset=5), full[5:])
    assert causal_mask(3, offset=5).shape == (3, 8)  # T_k defaults to offset + T_q
    assert torch.equal(causal_mask(1, offset=7), full[-1:])  # one-token step: attends to all 8 keys


def test_causal_with_explicit_t_k_and_offset():
    mask = causal_mask(2, 6, offset=2)  # queries at positions 2, 3 over keys 0..5
    assert torch.equal(mask.sum(dim=1), torch.tensor([3, 4]))
    assert not mask[:, 4:].any()  # keys in the future of every query are blocked


def test_bidirectional_is_all_true():
    mask = bidirectional_mask(3, 5)
    assert mask.dtype == torch.bool and mask.shape == (3, 5) and mask.all()
    assert bidirectional_mask(4).shape == (4, 4)


def test_padding_mask_shape_and_values():
    am = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    mask = padding_mask(am)
    assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.bool
    assert torch.equal(mask[:, 0, 0], am.bool())
    assert torch.equal(padding_mask(am.bool()), mask)  # bool input accepted as is


def test_combine_masks_broadcasts_causal_and_padding():
    am = torch.tensor([[1, 1, 0], [1, 1, 1]])
    mask = combine_masks(causal_mask(3), padding_mask(am))
    assert mask.shape == (2, 1, 3, 3)
    assert torch.equal(mask[1, 0], causal_mask(3))  # no padding: plain causal
    assert not mask[0, 0, :, 2].any()  # the padded key is hidden from every query
    assert combine_masks(None, causal_mask(2)) is not None and combine_masks(None, None) is None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: causal_mask(0), ValueError, "T_q must be >= 1, got 0"),
        (lambda: causal_mask(3, 0), ValueError, "T_k must be >= 1"),
        (lambda: causal_mask(3, offset=-1), ValueError, "offset must be >= 0, got -1"),
        (lambda: causal_mask(2.0), TypeError, "T_q must be an int"),
        (lambda: causal_mask(True), TypeError, "T_q must be an int, got bool"),
        (lambda: bidirectional_mask(-2), ValueError, "T_q must be >= 1"),
        (lambda: padding_mask(torch.ones(2, 3)), TypeError, "0/1 integers or bools"),
        (lambda: padding_mask(torch.ones(3, dtype=torch.long)), ValueError, r"shape \(B, T\)"),
        (lambda: padding_mask(torch.tensor([[1, 2]])), ValueError, "only 0 .* and 1"),
        (lambda: padding_mask([[1, 0]]), TypeError, "must be a torch.Tensor"),
        (lambda: combine_masks(causal_mask(2), torch.ones(2, 2)), TypeError, "mask 1 is torch.float32"),
        (lambda: combine_masks(causal_mask(2), causal_mask(3)), ValueError, "do not broadcast"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
