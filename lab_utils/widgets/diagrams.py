"""Block diagrams of the three transformer families, drawn with matplotlib patches (no image files).

Chapter "Encoders and decoders" (chapters/01_transformers). Encoder: bidirectional self-attention (BERT);
decoder: masked (causal) self-attention (GPT); encoder-decoder: the decoder adds cross-attention that reads
the encoder output (Vaswani et al. 2017). `norm="pre"` draws LayerNorm before each sub-layer and a final
LayerNorm (GPT-2, the course's TinyTransformer); `norm="post"` draws it after each residual add (Vaswani et
al. 2017, BERT). Residual connections are arrows that bypass the sub-layer into a "+" node.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path

KINDS = ("encoder", "decoder", "encoder-decoder")
NORMS = ("pre", "post")
COLOURS = {"embed": "#d9f2c9", "norm": "#fff2b3", "self": "#fcd9b6", "causal": "#f9c0a8", "cross": "#f6cfe4",
           "mlp": "#c8e6f5", "head": "#e4dcf6", "frame": "#f5f5f5"}
BOX_W, BOX_H, GAP, RADIUS = 6.0, 0.72, 0.34, 0.2  # data units; one column is 10 units wide
RESIDUAL_OFFSET, FRAME_PAD = 0.55, 0.95  # residual path and layer frame, beyond the box edge
FONT = 8
LINK_COLOUR = "#b03a7a"  # encoder -> decoder link, close to the cross-attention box colour
SUBLAYERS = {  # (label, colour key); the label's second line says what each position may attend to
    "self": ("Self-attention\n(bidirectional: all tokens)", "self"),
    "causal": ("Masked self-attention\n(causal: earlier tokens only)", "causal"),
    "cross": ("Cross-attention\n(Q: decoder; K, V: encoder)", "cross"),
    "mlp": ("MLP (feed-forward)", "mlp"),
}


@dataclass
class _Column:
    """A vertical stack drawn bottom-up; `y` is the top of what has been drawn so far."""

    ax: plt.Axes
    x: float
    side: int  # -1: residual paths and "N x" on the left, +1: on the right
    y: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)

    def arrow(self, y0: float, y1: float) -> None:
        self.ax.add_patch(FancyArrowPatch((self.x, y0), (self.x, y1), arrowstyle="-|>", mutation_scale=10,
                                          color="black", lw=1.1, shrinkA=0, shrinkB=0, zorder=2))

    def box(self, label: str, colour: str, gid: str, height: float = BOX_H) -> float:
        """Draw a box above the cursor (with the arrow into it); return its centre height."""
        self.arrow(self.y, self.y + GAP)
        y0 = self.y + GAP
        self.ax.add_patch(FancyBboxPatch((self.x - BOX_W / 2, y0), BOX_W, height, facecolor=COLOURS[colour],
                                         boxstyle="round,pad=0,rounding_size=0.12", edgecolor="#444444", lw=1.0,
                                         zorder=3, gid=gid))
        self.ax.text(self.x, y0 + height / 2, label, ha="center", va="center", fontsize=FONT, zorder=4,
                     linespacing=1.15)
        self.y = y0 + height
        return y0 + height / 2

    def add(self) -> float:
        """Draw a "+" node (the residual add) above the cursor; return its centre height."""
        self.arrow(self.y, self.y + GAP)
        yc = self.y + GAP + RADIUS
        self.ax.add_patch(Circle((self.x, yc), RADIUS, facecolor="white", edgecolor="black", lw=1.1, zorder=3,
                                 gid="add"))
        self.ax.text(self.x, yc, "+", ha="center", va="center_baseline", fontsize=11, zorder=4)
        self.y = yc + RADIUS
        return yc

    def sublayer(self, kind: str, norm: str) -> None:
        """One residual sub-layer: [LayerNorm ->] sub-layer -> add [-> LayerNorm], residual around it."""
        label, colour = SUBLAYERS[kind]
        branch = self.y + GAP / 2  # the residual leaves the stream halfway up the arrow into the sub-layer
        if norm == "pre":
            self.box("LayerNorm", "norm", "norm")
        centre = self.box(label, colour, kind)
        self.marks[kind] = centre
        add_y = self.add()
        # Residual: out sideways, up past the sub-layer, back into the "+" node.
        x_side = self.x + self.side * (BOX_W / 2 + RESIDUAL_OFFSET)
        path = Path([(self.x, branch), (x_side, branch), (x_side, add_y), (self.x + self.side * RADIUS, add_y)])
        self.ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=10, color="#555555",
                                          lw=1.3, shrinkA=0, shrinkB=0, zorder=2, gid="residual"))
        self.ax.plot([self.x], [branch], marker="o", markersize=3.5, color="#555555", zorder=3)
        if "residual" not in self.marks:  # name the first residual path once per column
            self.marks["residual"] = branch
            # Between the residual path and the boxes, clear of the layer frame.
            self.ax.text(x_side - self.side * 0.1, (branch + add_y) / 2, "residual", rotation=90, fontsize=7,
                         color="#555555", ha="right" if self.side > 0 else "left", va="center")
        if norm == "post":
            self.box("LayerNorm", "norm", "norm")


def _stack(ax: plt.Axes, x: float, side: int, *, sublayers: Sequence[str], norm: str, input_label: str,
           head: str | None, output_label: str) -> _Column:
    """Input -> embeddings -> N x [sub-layers] (framed) -> [final LayerNorm] -> head -> output."""
    col = _Column(ax, x, side, y=0.35)
    ax.text(x, 0.15, input_label, ha="center", va="center", fontsize=FONT, style="italic")
    col.box("Token embeddings + positions", "embed", "embed")
    frame_bottom = col.y + GAP / 2 - 0.05
    for kind in sublayers:
        col.sublayer(kind, norm)
    frame_top = col.y + GAP / 2
    left = x - BOX_W / 2 - FRAME_PAD
    ax.add_patch(FancyBboxPatch((left, frame_bottom), BOX_W + 2 * FRAME_PAD, frame_top - frame_bottom,
                                boxstyle="round,pad=0,rounding_size=0.25", facecolor=COLOURS["frame"],
                                edgecolor="#888888", lw=1.0, linestyle="--", zorder=1, gid="frame"))
    x_label = x + side * (BOX_W / 2 + FRAME_PAD + 0.15)
    ax.text(x_label, (frame_bottom + frame_top) / 2, "N ×", ha="left" if side > 0 else "right",
            va="center", fontsize=11, fontweight="bold")
    if norm == "pre":  # pre-norm leaves the residual stream un-normalised: one more LayerNorm at the top
        col.box("Final LayerNorm", "norm", "norm")
    if head is not None:
        col.box(head, "head", "head")
    if output_label:
        col.arrow(col.y, col.y + GAP)
        ax.text(x, col.y + GAP + 0.2, output_label, ha="center", va="center", fontsize=FONT, style="italic")
        col.y += GAP + 0.4
    return col


def _cross_link(ax: plt.Axes, encoder: _Column, decoder: _Column) -> None:
    """Encoder output -> the K, V input of the decoder's cross-attention (every decoder layer reads it)."""
    x_gap = (encoder.x + BOX_W / 2 + FRAME_PAD + decoder.x - BOX_W / 2 - FRAME_PAD) / 2  # between the frames
    y_out, y_cross = encoder.y + 2 * GAP, decoder.marks["cross"]
    path = Path([(encoder.x, encoder.y), (encoder.x, y_out), (x_gap, y_out), (x_gap, y_cross),
                 (decoder.x - BOX_W / 2, y_cross)])
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=12, color=LINK_COLOUR, lw=1.6,
                                 shrinkA=0, shrinkB=0, zorder=2, gid="cross-link"))
    ax.text(encoder.x, y_out + 0.12, "encoder output: K, V for the\ncross-attention of every decoder layer",
            fontsize=7.5, color=LINK_COLOUR, ha="center", va="bottom")


def _draw(ax: plt.Axes, kind: str, norm: str) -> float:
    """Draw one family on `ax`; return the height used."""
    head_dec, out_dec = "Linear + softmax", "next-token probabilities"
    if kind == "encoder":
        col = _stack(ax, 5.6, -1, sublayers=("self", "mlp"), norm=norm, input_label="input tokens",
                     head="Task head (MLM / classifier)", output_label="one vector per token")
        ax.set_title("Encoder (BERT, MiniLM)", fontsize=11)
        return col.y
    if kind == "decoder":
        col = _stack(ax, 5.6, -1, sublayers=("causal", "mlp"), norm=norm, input_label="input tokens",
                     head=head_dec, output_label=out_dec)
        ax.set_title("Decoder (GPT-2, SmolLM2)", fontsize=11)
        return col.y
    enc = _stack(ax, 5.6, -1, sublayers=("self", "mlp"), norm=norm, input_label="source tokens",
                 head=None, output_label="")
    dec = _stack(ax, 14.6, +1, sublayers=("causal", "cross", "mlp"), norm=norm,
                 input_label="target tokens (shifted right)", head=head_dec, output_label=out_dec)
    _cross_link(ax, enc, dec)
    ax.set_title("Encoder-decoder (original Transformer, T5)", fontsize=11)
    return max(enc.y, dec.y)


def draw_transformer_diagrams(kinds: Sequence[str] | str = KINDS, *, norm: str = "pre") -> Figure:
    """Block diagrams of encoder, decoder and encoder-decoder transformers, side by side.

    Args:
        kinds: which diagrams, left to right: any of "encoder", "decoder", "encoder-decoder" (a single
            string draws one).
        norm: "pre" (LayerNorm before each sub-layer, plus a final LayerNorm: GPT-2, TinyTransformer) or
            "post" (LayerNorm after each residual add: the original Transformer, BERT).

    Returns:
        The figure, one axes per kind (the encoder-decoder twice as wide).

    Raises:
        ValueError: if `kinds` is empty or names an unknown kind, or `norm` is not "pre" or "post".
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds is empty; pick one or more of {KINDS}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown}; choose from {KINDS}")
    if norm not in NORMS:
        raise ValueError(f"norm must be 'pre' (LayerNorm before each sub-layer) or 'post' (after the residual "
                         f"add), got {norm!r}")
    widths = [2 if k == "encoder-decoder" else 1 for k in kinds]
    fig, axes = plt.subplots(1, len(kinds), figsize=(max(4.0, 3.0 * sum(widths)), 6.4),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    heights = [_draw(ax, kind, norm) for ax, kind in zip(axes[0], kinds, strict=True)]
    for ax, width in zip(axes[0], widths, strict=True):
        ax.set_xlim(0, 10 * width)
        ax.set_ylim(0, max(heights))  # one vertical scale: boxes are the same size in every panel
        ax.axis("off")
    # About 0.45 inch per data unit keeps two 8-pt lines inside a box; 0.9 inch for the titles.
    fig.set_size_inches(fig.get_figwidth(), 0.45 * max(heights) + 0.9)
    where = ("pre-norm: LayerNorm before each sub-layer, plus a final LayerNorm (GPT-2, TinyTransformer)"
             if norm == "pre" else "post-norm: LayerNorm after each residual add (original Transformer, BERT)")
    fig.suptitle(textwrap.fill(where, width=int(10 * fig.get_figwidth())), fontsize=11)
    fig.tight_layout()
    return fig
