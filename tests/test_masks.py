"""Tests for lab_utils.masks: shapes, polarity, offsets (KV cache), padding and combination."""

import pytest
import torch

from lab_utils.masks import (
    bidirectional_mask,
    bigbird_mask,
    causal_mask,
    combine_masks,
    dilated_window_mask,
    global_tokens_mask,
    longformer_mask,
    padding_mask,
    random_block_choice,
    random_blocks_mask,
    sink_mask,
    sliding_window_mask,
    union_masks,
)


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


# --- sparse masks (chapter "Efficient attention") ---------------------------------------------------------------


@pytest.mark.parametrize(("T", "window"), [(1, 1), (6, 6), (6, 9), (10, 50)])
def test_window_at_least_t_equals_causal(T, window):
    assert torch.equal(sliding_window_mask(T, window=window), causal_mask(T))
    assert torch.equal(dilated_window_mask(T, window=window, dilation=1), causal_mask(T))


@pytest.mark.parametrize(("T", "window"), [(1, 1), (9, 1), (9, 3), (12, 4), (7, 7)])
def test_each_causal_window_row_allows_exactly_min_i_plus_1_w_keys(T, window):
    mask = sliding_window_mask(T, window=window)
    assert mask.dtype == torch.bool and mask.shape == (T, T)
    i = torch.arange(T)
    assert torch.equal(mask.sum(dim=1), torch.minimum(i + 1, torch.tensor(window)))
    assert torch.equal(mask, mask & causal_mask(T))  # never the future
    assert mask.diagonal().all()  # always itself
    for row in range(T):  # the allowed keys are the last `window` ones up to the query, contiguous
        assert mask[row].nonzero().flatten().tolist() == list(range(max(0, row - window + 1), row + 1))


def test_sliding_window_with_offset_is_the_last_rows_of_the_full_mask():
    full = sliding_window_mask(10, window=3)
    assert torch.equal(sliding_window_mask(4, window=3, offset=6), full[6:])  # KV-cache decoding
    assert sliding_window_mask(1, window=3, offset=9).nonzero()[:, 1].tolist() == [7, 8, 9]


def test_non_causal_window_is_a_symmetric_band_of_window_keys():
    mask = sliding_window_mask(9, window=3, causal=False)
    assert torch.equal(mask, mask.T)
    assert mask[4].nonzero().flatten().tolist() == [3, 4, 5]  # window // 2 = 1 key on each side
    assert sliding_window_mask(9, window=4, causal=False)[4].sum() == 5  # even window: 2 + 1 + 2, kept symmetric
    assert mask[0].sum() == 2  # fewer keys at the edge


def test_dilated_offsets_are_multiples_of_the_dilation():
    T, window, dilation = 20, 4, 3
    mask = dilated_window_mask(T, window=window, dilation=dilation)
    for q in range(T):
        expected = [q - k * dilation for k in range(window) if q - k * dilation >= 0]
        assert sorted(mask[q].nonzero().flatten().tolist()) == sorted(expected)
    assert mask[19].nonzero().flatten().tolist() == [10, 13, 16, 19]  # spans (window - 1) * dilation + 1 = 10
    centred = dilated_window_mask(T, window=5, dilation=2, causal=False)
    assert centred[10].nonzero().flatten().tolist() == [6, 8, 10, 12, 14]


def test_global_tokens_rows_and_columns():
    mask = global_tokens_mask(6, [0, 4])
    assert mask[0].all() and mask[4].all() and mask[:, 0].all() and mask[:, 4].all()
    assert mask.sum() == 6 * 6 - 4 * 4  # everything else is False
    assert not global_tokens_mask(3, []).any()
    assert torch.equal(global_tokens_mask(6, torch.tensor([0, 4])), mask)


def test_random_blocks_are_whole_blocks_reproducible_and_never_the_own_block():
    T, bs = 14, 3  # 5 blocks, the last of 2 tokens
    gen = torch.Generator().manual_seed(0)
    mask = random_blocks_mask(T, block_size=bs, n_random=2, generator=gen)
    assert torch.equal(
        mask, random_blocks_mask(T, block_size=bs, n_random=2, generator=torch.Generator().manual_seed(0))
    )
    choice = random_block_choice(T, block_size=bs, n_random=2, generator=torch.Generator().manual_seed(0))
    assert len(choice) == 5 and all(len(c) == 2 and b not in c for b, c in enumerate(choice))
    block = torch.arange(T) // bs
    for i in range(T):  # a key is allowed iff its block is among the query block's draws
        assert mask[i].tolist() == [int(block[j]) in choice[int(block[i])] for j in range(T)]
    causal = random_blocks_mask(T, block_size=bs, n_random=2, generator=gen, causal=True)
    assert torch.equal(causal, causal & causal_mask(T)) and not causal[:bs].any()  # past blocks only
    assert random_blocks_mask(T, block_size=bs, n_random=10).sum(dim=1).tolist() == [T - 3] * 12 + [T - 2] * 2


def test_sink_mask_and_the_streaming_pattern():
    assert sink_mask(4, n_sink=2).tolist() == [[True, True, False, False]] * 4
    assert not sink_mask(3, n_sink=0).any()
    streaming = combine_masks(union_masks(sink_mask(8, n_sink=2), sliding_window_mask(8, window=3)), causal_mask(8))
    assert streaming[7].nonzero().flatten().tolist() == [0, 1, 5, 6, 7]
    assert streaming[0].nonzero().flatten().tolist() == [0]  # causal: the second sink is in query 0's future


def test_union_is_or_with_broadcasting():
    a, b = causal_mask(3), torch.tensor([True, False, False])[None, :]
    assert torch.equal(union_masks(a, b), a | b) and torch.equal(union_masks(a), a)


def test_longformer_and_bigbird_are_the_unions_of_their_parts():
    T = 16
    lf = longformer_mask(T, window=3, dilation=4, global_positions=[0])
    parts = [
        sliding_window_mask(T, window=3, causal=False),
        dilated_window_mask(T, window=3, dilation=4, causal=False),
        global_tokens_mask(T, [0]),
    ]
    assert torch.equal(lf, parts[0] | parts[1] | parts[2])
    lf_causal = longformer_mask(T, window=3, dilation=4, causal=True)
    assert torch.equal(lf_causal, lf_causal & causal_mask(T)) and lf_causal[:, 0].all()
    bb = bigbird_mask(T, window=3, block_size=4, n_random=1, generator=torch.Generator().manual_seed(1))
    rand = random_blocks_mask(T, block_size=4, n_random=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(bb, rand | parts[0] | parts[2])
    bb_causal = bigbird_mask(T, window=3, block_size=4, n_random=1, causal=True)
    assert torch.equal(bb_causal, bb_causal & causal_mask(T))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: sliding_window_mask(4, window=0), ValueError, "window must be >= 1, got 0"),
        (lambda: sliding_window_mask(4, window=2.5), TypeError, "window must be an int"),
        (lambda: sliding_window_mask(4, window=2, offset=-1), ValueError, "offset must be >= 0"),
        (lambda: dilated_window_mask(4, window=2, dilation=0), ValueError, "dilation must be >= 1, got 0"),
        (lambda: dilated_window_mask(4, window=-1, dilation=2), ValueError, "window must be >= 1"),
        (lambda: global_tokens_mask(4, [4]), ValueError, r"global_positions must lie in \[0, T\) = \[0, 4\)"),
        (lambda: global_tokens_mask(4, 0), TypeError, r"e.g. \[0\] rather than 0"),
        (lambda: global_tokens_mask(4, [0.0]), TypeError, "must hold ints"),
        (lambda: random_blocks_mask(8, block_size=0, n_random=1), ValueError, "block_size must be >= 1"),
        (lambda: random_blocks_mask(8, block_size=2, n_random=-1), ValueError, "n_random must be >= 0"),
        (lambda: sink_mask(4, n_sink=-1), ValueError, "n_sink must be >= 0"),
        (lambda: union_masks(), TypeError, "at least one mask"),
        (lambda: union_masks(causal_mask(2), None), TypeError, "mask 1 is NoneType"),
        (lambda: union_masks(causal_mask(2), torch.ones(2, 2)), TypeError, "mask 1 is torch.float32"),
        (lambda: union_masks(causal_mask(2), causal_mask(3)), ValueError, "do not broadcast"),
        (lambda: longformer_mask(8, window=0, dilation=2), ValueError, "window must be >= 1"),
    ],
)
def test_sparse_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
