"""Tests for lab_utils.widgets: the attention plots draw what they are given and refuse ambiguous input."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lab_utils.masks import causal_mask
from lab_utils.widgets import plot_attention, plot_mask


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


def test_plot_mask_draws_the_mask_with_labels():
    mask = causal_mask(3, offset=2)  # (3, 5)
    ax = plot_mask(mask, title="offset 2", query_labels=[2, 3, 4])
    image = ax.get_images()[0].get_array()
    assert np.array_equal(np.asarray(image), mask.numpy())  # drawn as given, not transposed
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "3", "4"]
    assert len(ax.get_xticklabels()) == 5 and ax.get_title() == "offset 2"


def test_plot_attention_greys_out_blocked_cells_and_adds_a_colorbar():
    T = 4
    weights = torch.softmax(torch.randn(T, T).masked_fill(~causal_mask(T), float("-inf")), dim=-1)
    fig, ax = plt.subplots()
    out = plot_attention(weights, ax, query_labels=list("abcd"), key_labels=list("abcd"), mask=causal_mask(T))
    assert out is ax
    drawn = ax.get_images()[0].get_array()
    assert np.ma.getmaskarray(drawn).sum() == T * (T - 1) // 2  # the blocked upper triangle is hidden (grey)
    assert len(fig.axes) == 2  # the axes and its colour bar


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: plot_mask(torch.ones(3, 3)), TypeError, "boolean"),  # 0/1 float mask: polarity ambiguous
        (lambda: plot_mask(torch.ones(1, 3, 3, dtype=torch.bool)), ValueError, "2-D"),
        (lambda: plot_mask(causal_mask(3), query_labels=["a"]), ValueError, "query_labels has 1 entries"),
        (lambda: plot_attention(torch.full((2, 2), float("nan"))), ValueError, "finite"),
        (lambda: plot_attention(torch.ones(2, 2, 2)), ValueError, "2-D"),
        (lambda: plot_attention(torch.ones(2, 3) / 3, key_labels=["a", "b"]), ValueError, "key_labels"),
        (lambda: plot_attention(torch.ones(2, 2) / 2, mask=torch.ones(2, 2)), TypeError, "boolean"),
        (lambda: plot_attention(torch.ones(2, 2) / 2, mask=causal_mask(3)), ValueError, "must equal"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
