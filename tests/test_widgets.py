"""Tests for lab_utils.widgets.attention: the attention plots draw what they are given and refuse ambiguous input.

The other widget modules have their own files: tests/test_widgets_{training,diagrams,embeddings}.py.
"""

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


def test_relative_to_uniform_colours_weight_times_allowed_keys_centred_at_one():
    T = 4
    allowed = causal_mask(T)
    weights = torch.softmax(torch.randn(T, T, generator=torch.Generator().manual_seed(0))
                            .masked_fill(~allowed, float("-inf")), dim=-1)
    fig, ax = plt.subplots()
    plot_attention(weights, ax, mask=allowed, relative_to_uniform=True)
    image = ax.get_images()[0]
    drawn = image.get_array()
    expected = weights * allowed.sum(-1, keepdim=True)  # row i has i + 1 allowed keys
    top = image.norm.vmax
    np.testing.assert_allclose(drawn[allowed.numpy()], expected[allowed].clamp(1 / top, top).numpy(), rtol=1e-6)
    assert np.ma.getmaskarray(drawn).sum() == T * (T - 1) // 2  # blocked cells still grey
    assert image.norm.vmin * image.norm.vmax == pytest.approx(1.0)  # symmetric on a log scale ...
    assert image.norm(1.0) == pytest.approx(0.5)  # ... so uniform sits at the centre of the colour map
    assert np.allclose(image.cmap(0.5)[:3], 1.0, atol=0.1)  # which is (nearly) white
    assert "×1" in [t.get_text() for t in fig.axes[1].get_yticklabels()]


def test_relative_scale_keeps_near_uniform_rows_pale():
    T_q, T_k = 3, 20
    weights = torch.full((T_q, T_k), 1 / T_k)
    weights[:, 0] += 0.01  # 1.2 x uniform: a slight preference
    weights /= weights.sum(-1, keepdim=True)
    image = plot_attention(weights, relative_to_uniform=True).get_images()[0]
    assert image.norm.vmax == 2.0  # the minimum range: 1.2 x is not stretched to a saturated colour
    assert 0.5 < image.norm(float(weights[0, 0] * T_k)) < 0.65
    absolute = plot_attention(weights).get_images()[0]
    assert absolute.norm(float(weights[0, 1])) > 0.8  # non-vacuity: the default scale makes uniform look strong
    assert plot_attention(weights, relative_to_uniform=True, vmax=8).get_images()[0].norm.vmin == 1 / 8


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
        (lambda: plot_attention(torch.ones(2, 2) / 2, relative_to_uniform=True, vmax=1), ValueError, "must be > 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
