"""Tests for lab_utils.widgets.diagrams: each family shows its attention kinds, LayerNorm where `norm` says,
and residual arrows that bypass their sub-layer."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from lab_utils.widgets import draw_transformer_diagrams

ATTENTION_GIDS = ("self", "causal", "cross")


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")  # no display in CI
    yield
    plt.close("all")


def patches(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


def centre_y(box) -> float:
    return box.get_y() + box.get_height() / 2


def texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_one_panel_per_kind_and_the_encoder_decoder_twice_as_wide():
    fig = draw_transformer_diagrams()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    widths = [ax.get_position().width for ax in fig.axes]
    assert widths[2] == pytest.approx(2 * widths[0], rel=0.05)
    assert len(draw_transformer_diagrams("decoder").axes) == 1  # a single string is one kind


@pytest.mark.parametrize(
    ("kind", "attention", "n_sublayers"),
    [("encoder", ["self"], 2), ("decoder", ["causal"], 2), ("encoder-decoder", ["self", "causal", "cross"], 5)],
)
def test_each_family_shows_its_attention_and_one_residual_per_sublayer(kind, attention, n_sublayers):
    ax = draw_transformer_diagrams([kind]).axes[0]
    assert [gid for gid in ATTENTION_GIDS if patches(ax, gid)] == attention
    assert len(patches(ax, "mlp")) == (2 if kind == "encoder-decoder" else 1)
    assert len(patches(ax, "residual")) == len(patches(ax, "add")) == n_sublayers
    assert ("Masked" in texts(ax)) == ("causal" in attention)
    assert ("Cross-attention" in texts(ax)) == ("cross" in attention)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_residual_arrows_go_around_their_sublayer(norm):
    ax = draw_transformer_diagrams(["encoder-decoder"], norm=norm).axes[0]
    sublayers = sorted((p for gid in (*ATTENTION_GIDS, "mlp") for p in patches(ax, gid)),
                       key=lambda b: (b.get_x(), b.get_y()))
    residuals = sorted(patches(ax, "residual"), key=lambda r: tuple(r.get_path().vertices[0]))  # by start point
    assert len(sublayers) == len(residuals) == 5
    for box, residual in zip(sublayers, residuals, strict=True):
        xs, ys = residual.get_path().vertices.T
        left, right = box.get_x(), box.get_x() + box.get_width()
        assert xs.min() < left or xs.max() > right  # it leaves the column
        assert not (left < xs.min() and xs.max() < right)
        assert ys.min() < box.get_y() and ys.max() > box.get_y() + box.get_height()  # and spans the sub-layer


@pytest.mark.parametrize(("norm", "n_norms"), [("pre", 3), ("post", 2)])
def test_layernorm_sits_before_the_sublayer_for_pre_and_after_the_add_for_post(norm, n_norms):
    ax = draw_transformer_diagrams(["encoder"], norm=norm).axes[0]
    norms = sorted(centre_y(p) for p in patches(ax, "norm"))
    assert len(norms) == n_norms  # pre-norm adds a final LayerNorm
    attention_y = centre_y(patches(ax, "self")[0])
    first_add_y = min(p.center[1] for p in patches(ax, "add"))
    if norm == "pre":
        assert norms[0] < attention_y
    else:
        assert attention_y < first_add_y < norms[0]
    assert norm + "-norm" in ax.figure.texts[0].get_text()  # the suptitle names the placement


def test_the_encoder_output_feeds_the_cross_attention():
    ax = draw_transformer_diagrams(["encoder-decoder"]).axes[0]
    (link,) = patches(ax, "cross-link")
    (cross,) = patches(ax, "cross")
    xs, ys = link.get_path().vertices.T  # the drawn path, arrow head included
    # The arrow ends at the cross-attention box's left edge, at its height. ARROW_HEAD: matplotlib's drawn path
    # stops the shaft about a head length (~0.1 data units here) short of the tip.
    arrow_head = 0.15
    assert np.isclose(xs.max(), cross.get_x(), atol=arrow_head)
    assert np.isclose(ys[np.argmax(xs)], centre_y(cross), atol=0.05)
    assert xs.min() < patches(ax, "self")[0].get_x() + patches(ax, "self")[0].get_width()  # from the encoder


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kinds": ()}, "kinds is empty"),
        ({"kinds": ("encoder", "gpt")}, "unknown kind"),
        ({"kinds": "decoder-only"}, "unknown kind"),
        ({"norm": "sandwich"}, "norm must be 'pre'"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_transformer_diagrams(**kwargs)
