"""The memory bill as pictures and a calculator (chapter "Fine-tuning and its memory bill").

plot_memory_vs_params: training memory against parameter count, log-log, with lines at GPU sizes.
plot_memory_scaling: measured peak memory against batch size or sequence length, with a fit and a budget.
memory_calculator: weights, gradients and optimizer state for a model, dtype, optimizer and trainable share, by
``lab_utils.memory.estimate_training_memory``. GPU sizes are GiB: a "16 GB" card holds 16 GiB (GPU memory comes in
binary units; an A100 80GB reports 81,920 MiB), of which the CUDA context and the activations also need a share.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.axes import Axes

from lab_utils import memory
from lab_utils.widgets.static import STATIC_VIEW_ATTR, DualView

GPU_GIB = (16, 24, 80)  # common cards: T4/V100 16 GB, RTX 3090/4090 24 GB, A100/H100 80 GB
CALCULATOR_DTYPES = ("fp32", "bf16", "fp16")
OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam", "adamw": "AdamW"}
CUSTOM = "custom"  # the model choice that lets the reader type a parameter count
CUSTOM_DEFAULT = 1_000_000_000  # what "custom" starts at when no model is given: a round billion
_MIB, _GIB = 2**20, 2**30
_GRID_COLOUR = "0.45"
# Result table styles, the same in the live view and the page's script (themes centre tables and pad little).
_TABLE = "style='margin:0.3em 0'"
_TD_NAME = "style='text-align:left;padding:0 1em 0 0'"
_TD_NUM = "style='text-align:right;padding:0 0 0 1.5em'"


# --- plots -----------------------------------------------------------------------------------------------------------
def plot_memory_vs_params(table: pd.DataFrame, *, gpu_gib: Sequence[float] = GPU_GIB, ax: Axes | None = None,
                          title: str | None = None) -> Axes:
    """Memory (GiB) against parameter count on log-log axes, one series per column, a dashed line per GPU size.

    Args:
        table: index = model name, column ``"params"`` (counts) and one column per series in GiB, e.g.
            ``"inference fp32"``, ``"SGD"``, ``"momentum"``, ``"Adam"``; NaN cells are skipped.
        gpu_gib: GPU memory sizes in GiB; each gets a line labelled "16 GB GPU (16 GiB)".
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The axes drawn on.

    Raises:
        TypeError: ``table`` is not a DataFrame.
        ValueError: no ``"params"`` column, no series column, or a count / size that is not > 0 (log axes).
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame (index = model name), got {type(table).__name__}")
    series = [c for c in table.columns if c != "params"]
    if "params" not in table.columns or not series:
        raise ValueError(f"table needs a 'params' column and at least one memory column in GiB, got {list(table)}")
    data = table.sort_values("params")
    params = data["params"].to_numpy(dtype=float)
    values = data[series].to_numpy(dtype=float)  # (models, series)
    if not (params > 0).all() or (values[~np.isnan(values)] <= 0).any():
        raise ValueError("parameter counts and memory sizes must be > 0 on log axes (use NaN for a missing cell)")
    if any(not g > 0 for g in gpu_gib):
        raise ValueError(f"gpu_gib must hold sizes > 0 in GiB, got {tuple(gpu_gib)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, name in enumerate(series):
        ok = ~np.isnan(values[:, k])
        ax.plot(params[ok], values[ok, k], marker="o", markersize=4, label=name)
    for g in gpu_gib:
        ax.axhline(g, color=_GRID_COLOUR, linestyle="--", linewidth=1)
        ax.text(0.01, g, f"{g:g} GB GPU ({g:g} GiB)", transform=ax.get_yaxis_transform(), va="bottom",
                fontsize=8, color=_GRID_COLOUR)
    for k, (name, x, row) in enumerate(zip(data.index, params, values, strict=True)):
        if not np.isnan(row).all():  # above and below in turn, so that close neighbours do not overlap
            above = k % 2 == 0
            ax.annotate(str(name), (x, np.nanmax(row) if above else np.nanmin(row)), textcoords="offset points",
                        xytext=(0, 6 if above else -6), ha="center", va="bottom" if above else "top", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Room for the names above and below the series, and every GPU line in view.
    ax.set_ylim(min(np.nanmin(values), *gpu_gib) / 4, max(np.nanmax(values), *gpu_gib) * 4)
    ax.set_xlabel("parameters")
    ax.set_ylabel("memory (GiB = 2^30 bytes)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_memory_scaling(x: Sequence[float], measured: Sequence[float], *,
                        fitted: Sequence[float] | Callable[[np.ndarray], np.ndarray] | None = None, xlabel: str,
                        ylabel: str = "peak memory (MiB)", budget: float | None = None, ax: Axes | None = None,
                        label: str | None = None) -> Axes:
    """Measured memory as points and its fit as a line; call again on the same ``ax`` for another series.

    Args:
        x: the varied size (batch size, sequence length), shape (n,).
        measured: memory measured at each ``x``, shape (n,), in the unit of ``ylabel``.
        fitted: the fit's values at ``x`` (shape (n,)) or a function of an array of x, drawn as a line.
        xlabel: what ``x`` is, e.g. "batch size".
        ylabel: the y-axis label (and unit).
        budget: a memory budget in the unit of ``ylabel``, drawn as a red horizontal line.
        ax: axes to draw on; a new figure when None.
        label: the series' name in the legend.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: lengths differ, fewer than one point, or values that are not finite.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(measured, dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape or not len(xs):
        raise ValueError(f"x and measured must be 1-D of the same length >= 1, got shapes {xs.shape}, {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and measured must be finite (drop failed runs, e.g. out-of-memory, before plotting)")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    (points,) = ax.plot(xs, ys, "o", label=f"{label or 'measured'}")
    if fitted is not None:
        if callable(fitted):
            grid = np.linspace(xs.min(), xs.max(), 200)
            line_x, line_y = grid, np.asarray(fitted(grid), dtype=float)
        else:
            values = np.asarray(fitted, dtype=float)
            if values.shape != xs.shape:
                raise ValueError(f"fitted must have one value per x, shape {xs.shape}, got {values.shape}")
            order = np.argsort(xs)
            line_x, line_y = xs[order], values[order]
        ax.plot(line_x, line_y, "-", color=points.get_color(), label=f"{label + ': ' if label else ''}fit")
    if budget is not None and not any(line.get_gid() == f"budget {budget}" for line in ax.get_lines()):
        ax.axhline(budget, color="tab:red", linestyle="--", linewidth=1, gid=f"budget {budget}",
                   label=f"budget ({budget:g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


# --- the calculator: one formula, two views ---------------------------------------------------------------------------
def _trainable(n_params: int, percent: float) -> int:
    """Trainable parameters for a share in percent; the page's JS computes ``Math.floor(n * pct / 100)`` alike."""
    return math.floor(n_params * percent / 100)


def _fits_html(total_bytes: int, gpu_gib: Sequence[float]) -> str:
    cells = []
    for g in gpu_gib:
        left = g - total_bytes / _GIB
        cells.append(f"{g:g} GB: ✓ fits, {left:,.1f} GiB left" if left >= 0 else f"{g:g} GB: ✗ {-left:,.1f} GiB short")
    return " · ".join(cells)


def _result_html(n_params: int, percent: float, dtype: str, state_dtype: str, optimizer: str,
                 gpu_gib: Sequence[float]) -> str:
    """The live view's result table (the page's JS builds the same one)."""
    try:
        n_trainable = _trainable(n_params, percent)
        est = memory.estimate_training_memory(n_params, n_trainable=n_trainable, optimizer=optimizer, dtype=dtype,
                                              state_dtype=state_dtype)
    except (ValueError, TypeError) as error:
        return f"<p style='color:#b00'>{html.escape(str(error))}</p>"
    rows = [("weights", est.weights), ("gradients", est.gradients), ("optimizer state", est.optimizer_state),
            ("total", est.total)]
    body = "".join(f"<tr><td {_TD_NAME}>{name}</td><td {_TD_NUM}>{b / _MIB:,.1f}</td><td {_TD_NUM}>{b / _GIB:,.2f}"
                   "</td></tr>" for name, b in rows)
    return (f"<p>{n_trainable:,} of {n_params:,} parameters trainable</p>"
            f"<table {_TABLE}><tr><th></th><th {_TD_NUM}>MiB</th><th {_TD_NUM}>GiB</th></tr>{body}</table>"
            f"<p>{_fits_html(est.total, gpu_gib)}<br><small>Activations, the CUDA context and the allocator's "
            "cache come on top.</small></p>")


_JS = r"""
(function () {
  "use strict";
  // Same formulas as lab_utils.memory.estimate_training_memory; constants come from the page's data-config.
  function estimate(nParams, percent, dtype, stateDtype, optimizer, C) {
    if (!(Number.isInteger(nParams) && nParams >= 0)) return {error: "parameters must be a whole number >= 0"};
    if (!(percent >= 0 && percent <= 100)) return {error: "trainable % must be between 0 and 100"};
    var b = C.bytes[dtype], bs = C.bytes[stateDtype], k = C.copies[optimizer];
    var nTrainable = Math.floor(nParams * percent / 100);
    var e = {n_trainable: nTrainable, weights: Math.floor(nParams * b), gradients: Math.floor(nTrainable * b),
             optimizer_state: Math.floor(nTrainable * k * bs)};
    e.total = e.weights + e.gradients + e.optimizer_state;
    return e;
  }
  function fmt(x, digits) {
    return x.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
  }
  function init(root) {
    var C = JSON.parse(root.getAttribute("data-config")), S = C.styles;
    function field(name) { return root.querySelector("[name='" + name + "']"); }
    var model = field("model"), params = field("params"), out = root.querySelector(".lab-memcalc-result");
    function update() {
      var e = estimate(Number(params.value), Number(field("trainable").value), field("dtype").value,
                       field("state_dtype").value, field("optimizer").value, C);
      if (e.error) { out.innerHTML = "<p style='color:#b00'>" + e.error + "</p>"; return; }
      var rows = [["weights", e.weights], ["gradients", e.gradients], ["optimizer state", e.optimizer_state],
                  ["total", e.total]].map(function (r) {
        return "<tr><td " + S.name + ">" + r[0] + "</td><td " + S.num + ">" + fmt(r[1] / C.mib, 1) +
               "</td><td " + S.num + ">" + fmt(r[1] / C.gib, 2) + "</td></tr>";
      }).join("");
      var fits = C.gpu_gib.map(function (g) {
        var left = g - e.total / C.gib;
        return left >= 0 ? g + " GB: \u2713 fits, " + fmt(left, 1) + " GiB left"
                         : g + " GB: \u2717 " + fmt(-left, 1) + " GiB short";
      }).join(" \u00b7 ");
      out.innerHTML = "<p>" + fmt(e.n_trainable, 0) + " of " + fmt(Number(params.value), 0) +
        " parameters trainable</p><table " + S.table + "><tr><th></th><th " + S.num + ">MiB</th><th " + S.num +
        ">GiB</th></tr>" + rows + "</table><p>" +
        fits + "<br><small>Activations, the CUDA context and the allocator's cache come on top.</small></p>";
    }
    model.addEventListener("change", function () {
      if (model.value in C.models) params.value = C.models[model.value];
      update();
    });
    params.addEventListener("input", function () {
      if (C.models[model.value] !== Number(params.value)) model.value = C.custom;
      update();
    });
    root.querySelectorAll("select, input").forEach(function (el) { el.addEventListener("input", update); });
    update();
  }
  if (typeof document !== "undefined") {
    document.querySelectorAll(".lab-memory-calculator:not([data-ready])").forEach(function (root) {
      root.setAttribute("data-ready", "1");
      init(root);
    });
  }
  if (typeof module === "object" && module.exports) module.exports = {estimate: estimate};
})();
"""


def _count_label(name: str, n: int) -> str:
    return f"{name} ({n / 1e9:,.1f}B)" if n >= 1e9 else f"{name} ({n / 1e6:,.1f}M)"


def _models(models: Mapping[str, int] | None) -> dict[str, int]:
    if models is None:
        return {}
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping name -> parameter count, got {type(models).__name__}")
    for name, n in models.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or name == CUSTOM:
            raise ValueError(f"models[{name!r}] = {n!r}: give each model (not named {CUSTOM!r}) an int count >= 0")
    return {str(name): int(n) for name, n in models.items()}


def calculator_config(models: Mapping[str, int] | None = None, gpu_gib: Sequence[float] = GPU_GIB) -> dict:
    """The constants the page's JS uses, taken from ``lab_utils.memory`` (so both views share them)."""
    models = _models(models)
    return {"models": models, "custom": CUSTOM, "mib": _MIB, "gib": _GIB, "gpu_gib": list(gpu_gib),
            "styles": {"table": _TABLE, "name": _TD_NAME, "num": _TD_NUM},
            "bytes": {d: memory.bytes_per_element(d) for d in CALCULATOR_DTYPES},
            "copies": {o: memory.STATE_COPIES[o] for o in memory.OPTIMIZERS}}


def _options(pairs: Sequence[tuple[str, str]], selected: str) -> str:
    return "".join(f"<option value='{html.escape(v)}'{' selected' if v == selected else ''}>{html.escape(t)}</option>"
                   for t, v in pairs)


def calculator_html(models: Mapping[str, int] | None = None, gpu_gib: Sequence[float] = GPU_GIB) -> str:
    """The calculator as self-contained HTML + JS (no kernel, no network): what the book page shows.

    Args:
        models: display name -> parameter count, offered in a menu next to a "custom" count.
        gpu_gib: GPU sizes in GiB to test the total against.

    Returns:
        An HTML fragment: a form, a result table the script fills in, and the script.
    """
    config = calculator_config(models, gpu_gib)
    first = next(iter(config["models"]), CUSTOM)
    choices = [(_count_label(name, n), name) for name, n in config["models"].items()] + [("custom", CUSTOM)]
    label = "style='margin-right:1em;white-space:nowrap'"
    form = (f"<label {label}>model <select name='model'>{_options(choices, first)}</select></label>"
            f"<label {label}>parameters <input name='params' type='number' min='0' step='1' style='width:10em' "
            f"value='{config['models'].get(first, CUSTOM_DEFAULT)}'></label>"
            f"<label {label}>trainable % <input name='trainable' type='number' min='0' max='100' step='0.1' "
            "value='100' style='width:5em'></label><br>"
            f"<label {label}>dtype <select name='dtype'>{_options([(d, d) for d in CALCULATOR_DTYPES], 'fp32')}"
            f"</select></label><label {label}>optimizer state dtype <select name='state_dtype'>"
            f"{_options([(d, d) for d in CALCULATOR_DTYPES], 'fp32')}</select></label>"
            f"<label {label}>optimizer <select name='optimizer'>"
            f"{_options([(OPTIMIZER_LABELS.get(o, o), o) for o in memory.OPTIMIZERS], 'adam')}</select></label>")
    data = html.escape(json.dumps(config), quote=True)
    return (f"<div class='lab-memory-calculator' {STATIC_VIEW_ATTR}='memory-calculator' data-config=\"{data}\">"
            f"<form onsubmit='return false'>{form}</form><div class='lab-memcalc-result'>"
            "<p><i>The calculator needs JavaScript.</i></p></div></div><script>" + _JS + "</script>")


class MemoryCalculator(DualView):
    """The calculator as one output with two views (:class:`~lab_utils.widgets.static.DualView`): ipywidgets (live)
    and :func:`calculator_html` (the book's page).

    Args:
        models: display name -> parameter count.
        gpu_gib: GPU sizes in GiB.
    """

    plain = "Training-memory calculator (interactive with a kernel, or on the book's page)"

    def __init__(self, models: Mapping[str, int] | None = None, gpu_gib: Sequence[float] = GPU_GIB) -> None:
        self.models, self.gpu_gib = _models(models), tuple(gpu_gib)
        self.html = calculator_html(self.models, self.gpu_gib)
        first = next(iter(self.models), CUSTOM)
        style = {"description_width": "initial"}
        self.model = w.Dropdown(options=[(_count_label(n, c), n) for n, c in self.models.items()]
                                + [("custom", CUSTOM)], value=first, description="model", style=style)
        self.params = w.IntText(value=self.models.get(first, CUSTOM_DEFAULT), description="parameters", style=style)
        self.trainable = w.BoundedFloatText(value=100, min=0, max=100, step=0.1, description="trainable %",
                                            style=style)
        self.dtype = w.Dropdown(options=CALCULATOR_DTYPES, value="fp32", description="dtype", style=style)
        self.state_dtype = w.Dropdown(options=CALCULATOR_DTYPES, value="fp32", description="optimizer state dtype",
                                      style=style)
        self.optimizer = w.Dropdown(options=[(OPTIMIZER_LABELS.get(o, o), o) for o in memory.OPTIMIZERS],
                                    value="adam", description="optimizer", style=style)
        self.result = w.HTML()
        self.model.observe(self._on_model, names="value")
        self.params.observe(self._on_params, names="value")
        for control in (self.trainable, self.dtype, self.state_dtype, self.optimizer):
            control.observe(lambda _: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.model, self.params, self.trainable]),
                              w.HBox([self.dtype, self.state_dtype, self.optimizer]), self.result])
        self.update()

    def _on_model(self, change: dict) -> None:
        if change["new"] in self.models:
            self.params.value = self.models[change["new"]]
        self.update()

    def _on_params(self, change: dict) -> None:
        if self.models.get(self.model.value) != change["new"]:
            self.model.value = CUSTOM
        self.update()

    def update(self) -> None:
        """Recompute the result table from the controls (called on every change)."""
        self.result.value = _result_html(self.params.value, self.trainable.value, self.dtype.value,
                                         self.state_dtype.value, self.optimizer.value, self.gpu_gib)



def memory_calculator(models: Mapping[str, int] | None = None) -> None:
    """Display the training-memory calculator: weights, gradients, optimizer state, total; does it fit a GPU?

    With a kernel (Jupyter, Colab) the controls are ipywidgets and ``lab_utils.memory`` computes; on the book's
    page, without a kernel, the same output shows a self-contained HTML/JS calculator with the same formulas.

    Args:
        models: display name -> parameter count (e.g. from ``lab_utils.model_sizes.count_published``); the menu
            also offers "custom", a count you type. None: only "custom".

    Raises:
        TypeError, ValueError: ``models`` is not a mapping of names to counts >= 0.
    """
    display(MemoryCalculator(models))
