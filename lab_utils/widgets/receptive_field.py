"""The receptive-field explorer: which inputs reach an output after L layers of a sparse attention mask.

Chapter "Efficient attention" (windowed attention). Choose a mask (sliding window, dilated window, Longformer =
local + dilated + global, BigBird = random + local + global, sliding window + attention sinks, full causal), its
window, dilation, number of layers, sequence length and an output position; see the mask as a T x T grid and, under
it, the inputs that reach the output, coloured by the number of layers after which they first do. Every mask is
drawn causal (a decoder's view: AND with ``causal_mask``), Longformer's and BigBird's too.

Live (a kernel): ipywidgets; ``lab_utils.masks`` builds the mask and ``lab_utils.receptive_field`` propagates it.
On the book's page (no kernel): a self-contained HTML/JS view that rebuilds the masks and propagates them in the
browser and draws the same HTML (tests compare both). BigBird's random blocks come from torch's generator, which JS
cannot replay: Python draws them (``masks.random_block_choice``, seed ``RANDOM_SEED``, the draw ``bigbird_mask``
makes) for every selectable length and embeds the chosen blocks in the page's config.
"""

from __future__ import annotations

import html
import json

import ipywidgets as w
import torch

from lab_utils import masks
from lab_utils.receptive_field import receptive_field_row
from lab_utils.widgets.static import STATIC_VIEW_ATTR, DualView

__all__ = ["KINDS", "ReceptiveFieldExplorer", "explorer_config", "explorer_html", "explorer_mask", "first_reached",
           "receptive_field_explorer", "view_html"]

KINDS = {"sliding": "sliding window", "dilated": "dilated window",
         "longformer": "Longformer (local + dilated + global)", "bigbird": "BigBird (random + local + global)",
         "sinks": "sliding window + attention sinks", "causal": "full causal"}
RANGES = {"window": (1, 16), "dilation": (1, 4), "n_layers": (1, 8), "seq_len": (8, 64)}  # the controls' bounds
GLOBAL_POSITIONS = (0,)  # Longformer's and BigBird's global token (a [CLS]-like first token)
N_SINK = 4  # attention sinks: the first 4 tokens, as Xiao et al. (2023) keep
BLOCK_SIZE, N_RANDOM, RANDOM_SEED = 4, 2, 0  # BigBird's random part: 2 random key blocks of 4 tokens per query block
COLOURS = {"a": "#2b6a99", "b": "#f2f2f2", "ra": "#d62728", "rb": "#f7c6c6", "u": "#e6e6e6",
           "layers": ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                      "#7f7f7f"]}  # layers[0]: the output itself; layers[l]: first reached after l layers (tab10)
STYLE = ("<style>.lab-rf-grid,.lab-rf-inputs,.lab-rf-ticks{display:grid;gap:1px}.lab-rf-ticks{font-size:9px;"
         "line-height:1}.lab-rf-legend{font-size:12px;margin-top:4px}.lab-rf-legend b{display:inline-block;width:10px;"
         "height:10px}"
         + "".join(f".lab-rf .{k}{{background:{COLOURS[k]}}}" for k in ("a", "b", "ra", "rb", "u"))
         + "".join(f".lab-rf .l{k}{{background:{c}}}" for k, c in enumerate(COLOURS["layers"])) + "</style>")


def _check(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return kind


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(RANDOM_SEED)


def explorer_mask(kind: str, seq_len: int, *, window: int, dilation: int) -> torch.Tensor:
    """The explorer's mask, built by ``lab_utils.masks`` (the page's ``maskOf`` builds the same cells).

    Args:
        kind: a key of ``KINDS``.
        seq_len: T, the sequence length (>= 1).
        window: keys per local window (sliding, sinks, Longformer, BigBird) and per dilated window.
        dilation: step between a dilated window's keys (dilated and Longformer).

    Returns:
        Bool tensor (T, T), True = may attend, causal.
    """
    T, g = seq_len, list(GLOBAL_POSITIONS)
    if _check_kind(kind) == "sliding":
        return masks.sliding_window_mask(T, window=window)
    if kind == "dilated":
        return masks.dilated_window_mask(T, window=window, dilation=dilation)
    if kind == "longformer":
        return masks.longformer_mask(T, window=window, dilation=dilation, global_positions=g, causal=True)
    if kind == "bigbird":
        return masks.bigbird_mask(T, window=window, block_size=BLOCK_SIZE, n_random=N_RANDOM, global_positions=g,
                                  generator=_generator(), causal=True)
    if kind == "sinks":
        local = masks.union_masks(masks.sink_mask(T, n_sink=N_SINK), masks.sliding_window_mask(T, window=window))
        return masks.combine_masks(local, masks.causal_mask(T))
    return masks.causal_mask(T)


def first_reached(mask: torch.Tensor, n_layers: int, position: int) -> list[int]:
    """For each input j, the fewest layers after which it reaches output `position` (0: itself), or -1 (never).

    Read from ``lab_utils.receptive_field.receptive_field_row(mask, l, position)`` for l = 1..n_layers.
    """
    first = [-1] * mask.shape[-1]
    first[position] = 0
    for layer in range(1, n_layers + 1):
        for j in receptive_field_row(mask, layer, position).nonzero().flatten().tolist():
            first[j] = layer if first[j] < 0 else first[j]
    return first


def _ranges(positions: list[int]) -> str:
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(f"{a}..{b}" if b > a else f"{a}" for a, b in runs)


def _settings(kind, window, dilation, n_layers, seq_len, position) -> dict:
    values = {"kind": _check_kind(kind), "window": window, "dilation": dilation, "n_layers": n_layers,
              "seq_len": seq_len}
    for name, (low, high) in RANGES.items():
        _check(name, values[name], low, high)
    values["position"] = _check("position", position, 0, seq_len - 1)
    return values


def view_html(kind: str, seq_len: int, window: int, dilation: int, n_layers: int, position: int) -> str:
    """The explorer's picture and text for one setting of the controls (the page's ``viewHtml`` draws the same).

    Returns:
        HTML: a text line (inputs reached; for a sliding window the closed form), a cost line, the mask grid (the
        output's row in red), a row of input cells coloured by the layer that first reaches them, and a legend.
        Its root carries ``data-first``: per input, the layers it takes to reach the output (-1: never).
    """
    _settings(kind, window, dilation, n_layers, seq_len, position)
    mask = explorer_mask(kind, seq_len, window=window, dilation=dilation)
    first, rows = first_reached(mask, n_layers, position), mask.tolist()
    T, L, p, size = seq_len, n_layers, position, max(7, min(24, 448 // seq_len))
    reached = [j for j in range(T) if first[j] >= 0]
    n = len(reached)
    text = (f"output {p} sees input{'' if n == 1 else 's'} {_ranges(reached)} ({n} token{'' if n == 1 else 's'}) "
            f"after {L} layer{'' if L == 1 else 's'}")
    if kind == "sliding":
        closed = (window - 1) * L + 1
        text += f"; closed form (w-1)L+1 = ({window}-1)&times;{L}+1 = {closed}"
        text += f", capped at p+1 = {p + 1} inputs" if closed > p + 1 else ""
    elif kind == "dilated" and dilation > 1:
        text += f"; a dilated window alone reaches only inputs a multiple of {dilation} away: mix in a local one"
    cells, full = sum(sum(r) for r in rows), T * (T + 1) // 2
    cost = (f"attention cells per layer: {cells} of the {full} of full causal attention "
            f"({(200 * cells + full) // (2 * full)}%)")
    cols = f"grid-template-columns:repeat({T},{size}px)"
    grid = "".join(f"<b class='{'r' if i == p else ''}{'a' if v else 'b'}'></b>" for i, r in enumerate(rows) for v in r)
    inputs = "".join(f"<b class='{'l' + str(f) if f >= 0 else 'u'}' title='input {j}: "
                     f"{'not reached' if f < 0 else 'the output itself' if f == 0 else f'after {f} layer(s)'}'></b>"
                     for j, f in enumerate(first))
    step = 1 if T <= 16 else 4 if T <= 32 else 8
    ticks = "".join(f"<span>{j if j % step == 0 else ''}</span>" for j in range(T))
    legend = ("mask: <b class='a'></b> may attend <b class='b'></b> blocked <b class='ra'></b> output row; inputs: "
              + "".join(f"<b class='l{k}'></b> {'output' if k == 0 else k} " for k in range(L + 1))
              + "<b class='u'></b> not reached (layers to reach)")
    return (f"<div class='lab-rf-view' data-first='{' '.join(map(str, first))}'><p class='lab-rf-text'>{text}</p>"
            f"<p class='lab-rf-cost'>{cost}</p><div class='lab-rf-grid' style='{cols};grid-auto-rows:{size}px'>{grid}"
            f"</div><div class='lab-rf-inputs' style='{cols};grid-auto-rows:{size}px;margin-top:6px'>{inputs}</div>"
            f"<div class='lab-rf-ticks' style='{cols}'>{ticks}</div><div class='lab-rf-legend'>{legend}</div></div>")


def explorer_config() -> dict:
    """The page's constants: kinds, ranges, global and sink tokens and, for each selectable length T, BigBird's
    random key blocks per query block, drawn by ``masks.random_block_choice`` as ``explorer_mask`` draws them."""
    low, high = RANGES["seq_len"]
    random = {T: masks.random_block_choice(T, block_size=BLOCK_SIZE, n_random=N_RANDOM, generator=_generator(),
                                           causal=True) for T in range(low, high + 1)}
    return {"kinds": KINDS, "ranges": RANGES, "global_positions": list(GLOBAL_POSITIONS), "n_sink": N_SINK,
            "block_size": BLOCK_SIZE, "random": random}


_JS = r"""
(function () {
  "use strict";
  // lab_utils.widgets.receptive_field in the browser: explorer_mask, first_reached, view_html; C = the config.
  function maskOf(kind, T, w, d, C) {
    var M = [], g = {}, B = C.block_size;
    C.global_positions.forEach(function (q) { g[q] = true; });
    for (var i = 0; i < T; i++) {
      var row = [];
      for (var j = 0; j < T; j++) {
        var causal = j <= i, local = causal && i - w < j, glob = causal && (g[i] === true || g[j] === true);
        var dil = causal && (i - j) % d === 0 && (i - j) / d < w;
        var rnd = kind === "bigbird" && causal && C.random[T][Math.floor(i / B)].indexOf(Math.floor(j / B)) >= 0;
        row.push(kind === "sliding" ? local : kind === "dilated" ? dil : kind === "longformer" ? local || dil || glob
          : kind === "bigbird" ? rnd || local || glob : kind === "sinks" ? local || (causal && j < C.n_sink) : causal);
      }
      M.push(row);
    }
    return M;
  }
  function firstReached(M, L, p) {  // breadth first: the layers to reach = the length of the shortest path
    var first = M.map(function () { return -1; }), frontier = [p];
    first[p] = 0;
    for (var l = 1; l <= L; l++) {
      var next = [];
      frontier.forEach(function (i) {
        M[i].forEach(function (v, j) { if (v && first[j] < 0) { first[j] = l; next.push(j); } });
      });
      frontier = next;
    }
    return first;
  }
  function ranges(ps) {
    var runs = [];
    ps.forEach(function (q) {
      if (runs.length && runs[runs.length - 1][1] === q - 1) runs[runs.length - 1][1] = q; else runs.push([q, q]);
    });
    return runs.map(function (r) { return r[1] > r[0] ? r[0] + ".." + r[1] : String(r[0]); }).join(", ");
  }
  function viewHtml(kind, T, w, d, L, p, C) {
    var M = maskOf(kind, T, w, d, C), first = firstReached(M, L, p);
    var size = Math.max(7, Math.min(24, Math.floor(448 / T)));
    var reached = [], cells = 0, full = T * (T + 1) / 2, grid = "", inputs = "", ticks = "", k;
    first.forEach(function (f, j) { if (f >= 0) reached.push(j); });
    var n = reached.length, text = "output " + p + " sees input" + (n === 1 ? "" : "s") + " " + ranges(reached) +
      " (" + n + " token" + (n === 1 ? "" : "s") + ") after " + L + " layer" + (L === 1 ? "" : "s");
    if (kind === "sliding") {
      var closed = (w - 1) * L + 1;
      text += "; closed form (w-1)L+1 = (" + w + "-1)&times;" + L + "+1 = " + closed;
      if (closed > p + 1) text += ", capped at p+1 = " + (p + 1) + " inputs";
    } else if (kind === "dilated" && d > 1) {
      text += "; a dilated window alone reaches only inputs a multiple of " + d + " away: mix in a local one";
    }
    M.forEach(function (r, i) {
      r.forEach(function (v) {
        cells += v ? 1 : 0;
        grid += "<b class='" + (i === p ? "r" : "") + (v ? "a" : "b") + "'></b>";
      });
    });
    first.forEach(function (f, j) {
      inputs += "<b class='" + (f >= 0 ? "l" + f : "u") + "' title='input " + j + ": " +
        (f < 0 ? "not reached" : f === 0 ? "the output itself" : "after " + f + " layer(s)") + "'></b>";
    });
    var step = T <= 16 ? 1 : T <= 32 ? 4 : 8;
    for (k = 0; k < T; k++) ticks += "<span>" + (k % step === 0 ? k : "") + "</span>";
    var legend = "mask: <b class='a'></b> may attend <b class='b'></b> blocked <b class='ra'></b> output row; inputs: ";
    for (k = 0; k <= L; k++) legend += "<b class='l" + k + "'></b> " + (k === 0 ? "output" : k) + " ";
    var cost = "attention cells per layer: " + cells + " of the " + full + " of full causal attention (" +
      Math.floor((200 * cells + full) / (2 * full)) + "%)";
    var cols = "grid-template-columns:repeat(" + T + "," + size + "px)", rowsH = ";grid-auto-rows:" + size + "px";
    return "<div class='lab-rf-view' data-first='" + first.join(" ") + "'><p class='lab-rf-text'>" + text + "</p>" +
      "<p class='lab-rf-cost'>" + cost + "</p><div class='lab-rf-grid' style='" + cols + rowsH + "'>" + grid +
      "</div><div class='lab-rf-inputs' style='" + cols + rowsH + ";margin-top:6px'>" + inputs + "</div>" +
      "<div class='lab-rf-ticks' style='" + cols + "'>" + ticks + "</div><div class='lab-rf-legend'>" + legend +
      "<b class='u'></b> not reached (layers to reach)</div></div>";
  }
  function init(root) {
    var C = JSON.parse(root.getAttribute("data-config")), out = root.querySelector(".lab-rf-out");
    function get(name) { return root.querySelector("[name='" + name + "']"); }
    function update() {  // a shorter sequence lowers the position with it, as the live view's slider does
      var T = parseInt(get("seq_len").value, 10), pos = get("position");
      pos.max = String(T - 1);
      if (parseInt(pos.value, 10) > T - 1) pos.value = String(T - 1);
      ["window", "dilation", "n_layers", "seq_len", "position"].forEach(function (n) {
        root.querySelector(".lab-rf-value-" + n).textContent = get(n).value;
      });
      out.innerHTML = viewHtml(get("kind").value, T, parseInt(get("window").value, 10),
        parseInt(get("dilation").value, 10), parseInt(get("n_layers").value, 10), parseInt(pos.value, 10), C);
    }
    root.querySelectorAll("select, input").forEach(function (e) { e.addEventListener("input", update); });
    get("kind").addEventListener("change", update);
    update();
  }
  if (typeof document !== "undefined") {
    document.querySelectorAll(".lab-rf-explorer:not([data-ready])").forEach(function (root) {
      root.setAttribute("data-ready", "1");
      init(root);
    });
  }
  if (typeof module === "object" && module.exports) {
    module.exports = {maskOf: maskOf, firstReached: firstReached, viewHtml: viewHtml};
  }
})();
"""


def explorer_html(kind: str = "sliding", *, window: int = 4, dilation: int = 2, n_layers: int = 3,
                  seq_len: int = 16, position: int = 11) -> str:
    """The explorer as self-contained HTML + JS (no kernel, no network): what the book's page shows.

    Arguments as :func:`receptive_field_explorer`. Returns an HTML fragment: a form, a view the script draws, the
    script.
    """
    s = _settings(kind, window, dilation, n_layers, seq_len, position)
    data = html.escape(json.dumps(explorer_config()), quote=True)
    kinds = "".join(f"<option value='{k}'{' selected' if k == kind else ''}>{t}</option>" for k, t in KINDS.items())
    bounds = {**RANGES, "position": (0, seq_len - 1)}
    label = "style='margin-right:1em;white-space:nowrap'"
    sliders = "".join(f"<label {label}>{n.replace('_', ' ')} <input name='{n}' type='range' min='{lo}' max='{hi}' "
                      f"step='1' value='{s[n]}'> <span class='lab-rf-value-{n}'>{s[n]}</span></label> "
                      for n, (lo, hi) in bounds.items())
    return (f"<div class='lab-rf lab-rf-explorer' {STATIC_VIEW_ATTR}='receptive-field' data-config=\"{data}\">{STYLE}"
            f"<form onsubmit='return false'><label {label}>mask <select name='kind'>{kinds}</select></label> "
            f"{sliders}</form><div class='lab-rf-out'><p><i>The explorer needs JavaScript.</i></p></div></div>"
            "<script>" + _JS + "</script>")


class ReceptiveFieldExplorer(DualView):
    """The explorer as one output with two views (:class:`~lab_utils.widgets.static.DualView`): ipywidgets (live)
    and :func:`explorer_html` (the book's page). Arguments as :func:`receptive_field_explorer`."""

    plain = "Receptive-field explorer (interactive with a kernel, or on the book's page)"

    def __init__(self, kind: str = "sliding", *, window: int = 4, dilation: int = 2, n_layers: int = 3,
                 seq_len: int = 16, position: int = 11) -> None:
        s = _settings(kind, window, dilation, n_layers, seq_len, position)
        self.html = explorer_html(**s)
        self.kind = w.Dropdown(options=[(t, k) for k, t in KINDS.items()], value=kind, description="mask")
        self.window, self.dilation, self.n_layers, self.seq_len = (
            w.IntSlider(value=s[n], min=RANGES[n][0], max=RANGES[n][1], description=n.replace("_", " "))
            for n in ("window", "dilation", "n_layers", "seq_len"))
        self.position = w.IntSlider(value=position, min=0, max=seq_len - 1, description="position")
        self.view = w.HTML()
        self.seq_len.observe(self._on_seq_len, names="value")
        for control in (self.kind, self.window, self.dilation, self.n_layers, self.position):
            control.observe(lambda _: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.kind, self.n_layers]), w.HBox([self.window, self.dilation]),
                              w.HBox([self.seq_len, self.position]), self.view])
        self.update()

    def _on_seq_len(self, change: dict) -> None:
        self.position.max = change["new"] - 1  # lowers the position with it (ipywidgets clamps), as the page does
        self.update()

    def update(self) -> None:
        """Redraw the mask and the receptive field from the controls (called on every change)."""
        self.view.value = STYLE + "<div class='lab-rf'>" + view_html(
            self.kind.value, self.seq_len.value, self.window.value, self.dilation.value, self.n_layers.value,
            self.position.value) + "</div>"


def receptive_field_explorer(kind: str = "sliding", *, window: int = 4, dilation: int = 2, n_layers: int = 3,
                             seq_len: int = 16, position: int = 11) -> ReceptiveFieldExplorer:
    """The receptive-field explorer, to show as a cell's last expression: mask, window, dilation, layers, length and
    output position as controls; the mask grid and the inputs reaching the output after the layers.

    With a kernel (Jupyter, Colab) the controls are ipywidgets; on the book's page, without a kernel, the same output
    shows a self-contained HTML/JS explorer that computes the same masks and reach. The defaults are the lecture's
    example: window 4, 3 layers, output 11 sees inputs 2..11.

    Args:
        kind: a key of ``KINDS``: "sliding", "dilated", "longformer", "bigbird", "sinks" or "causal".
        window: keys per (local or dilated) window, 1..16.
        dilation: step of the dilated window, 1..4.
        n_layers: layers the mask is applied in, 1..8.
        seq_len: sequence length T, 8..64.
        position: the output position, 0..seq_len - 1.

    Returns:
        A :class:`ReceptiveFieldExplorer` (displayed by Jupyter when it is a cell's value).

    Raises:
        TypeError: a size that is not an int. ValueError: an unknown kind or a value out of its range.
    """
    return ReceptiveFieldExplorer(kind, window=window, dilation=dilation, n_layers=n_layers, seq_len=seq_len,
                                  position=position)
