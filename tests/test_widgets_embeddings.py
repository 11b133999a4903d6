"""Tests for lab_utils.widgets.embeddings: the similarity heatmap uses a diverging scale over [-1, 1]."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from lab_utils.widgets import plot_similarity


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


def cosine(n: int = 4, d: int = 8, seed: int = 0) -> torch.Tensor:
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return x @ x.T  # (n, n)


def test_scale_is_diverging_from_minus_one_to_one_and_centred_at_zero():
    sim = cosine()
    assert (sim < 0).any()  # non-vacuous: a negative similarity must stay visible
    ax = plot_similarity(sim, list("abcd"))
    image = ax.get_images()[0]
    assert image.get_clim() == (-1.0, 1.0)
    assert image.norm(0.0) == pytest.approx(0.5)
    centre, low, high = (np.array(image.cmap(image.norm(v))[:3]) for v in (0.0, -1.0, 1.0))
    assert centre.min() > 0.9  # 0 = unrelated is (nearly) white
    assert high[0] > high[2] and low[2] > low[0]  # similar is red, opposite is blue
    np.testing.assert_allclose(np.asarray(image.get_array()), sim.numpy(), atol=1e-6)


def test_every_cell_is_annotated_in_a_readable_colour():
    sim = np.array([[1.0, -0.05], [-0.05, 1.0]])
    ax = plot_similarity(sim, ["x", "y"])
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(cells) == 4
    assert cells[(0, 1)].get_text() == "-0.05"
    assert to_rgba(cells[(0, 0)].get_color()) == to_rgba("white")  # dark red cell
    assert to_rgba(cells[(0, 1)].get_color()) == to_rgba("black")  # near-white cell


def test_labels_on_y_numbers_on_x_and_a_colour_bar():
    long = "a sentence that is far too long to fit next to the heatmap without cutting"
    fig, ax = plt.subplots()
    assert plot_similarity(cosine(3), ["cat", "dog", long], ax, title="t") is ax
    y = [t.get_text() for t in ax.get_yticklabels()]
    assert y[:2] == ["0: cat", "1: dog"] and y[2].startswith("2: a sentence") and y[2].endswith("…")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert len(fig.axes) == 2 and ax.get_title() == "t"


def test_half_precision_rounding_slightly_above_one_is_accepted():
    ax = plot_similarity(cosine().half(), list("abcd"))
    assert len(ax.texts) == 16


@pytest.mark.parametrize(
    ("matrix", "labels", "match"),
    [
        (np.zeros((2, 3)), ["a", "b"], "square"),
        (np.zeros((1, 2, 2)), ["a", "b"], "square"),
        (np.eye(3), ["a", "b"], "one entry per row \\(3\\), got 2 labels"),
        (np.eye(2), "ab", "a single string"),
        (np.full((2, 2), np.nan), ["a", "b"], "NaN"),
        (np.eye(2) * 3, ["a", "b"], "normalise"),
    ],
)
def test_bad_inputs_raise_clear_errors(matrix, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_similarity(matrix, labels)
