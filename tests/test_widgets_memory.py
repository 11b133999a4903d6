"""Tests for lab_utils.widgets.memory: the memory plots, and the calculator's two views (ipywidgets and HTML/JS).

The page's JavaScript is run, not just read: by node on a grid of inputs (compared with lab_utils.memory), and in
headless Chromium, driven like a reader would (compared with the live view's table). Both tests skip, saying so,
where node or Chromium is not installed (they are system programs, not Python dependencies); the CI image has both.
"""

import html
import json
import re
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from docutils import nodes

from lab_utils import memory
from lab_utils.maintainers import book
from lab_utils.widgets import memory_calculator, plot_memory_scaling, plot_memory_vs_params
from lab_utils.widgets.memory import (
    CALCULATOR_DTYPES,
    CUSTOM,
    MemoryCalculator,
    _result_html,
    _trainable,
    calculator_config,
    calculator_html,
)
from lab_utils.widgets.static import STATIC_VIEW_ATTR
from tests.headless import drive_page, run_node

MODELS = {"BERT-base": 109_482_240, "Llama-2-7B": 6_738_415_616, "BLOOM-176B": 176_247_271_424}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def headless_figures():
    plt.switch_backend("Agg")
    yield
    plt.close("all")


def _table() -> pd.DataFrame:
    params = pd.Series(MODELS, name="params")
    fp32 = params * 4 / 2**30
    return pd.DataFrame({"params": params, "inference fp32": fp32, "SGD": 2 * fp32, "Adam": 4 * fp32})


# --- plots -----------------------------------------------------------------------------------------------------------
def test_memory_vs_params_draws_each_series_gpu_lines_and_names():
    table = _table()
    table.loc["BERT-base", "SGD"] = np.nan  # a missing cell is skipped, not drawn at 0
    ax = plot_memory_vs_params(table, title="memory bill")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_title() == "memory bill"
    series = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(series) == ["inference fp32", "SGD", "Adam"]
    np.testing.assert_allclose(series["Adam"].get_ydata(), table.sort_values("params")["Adam"])
    assert len(series["SGD"].get_xdata()) == 2
    gpu_lines = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    assert gpu_lines == [16, 24, 80]
    texts = {t.get_text() for t in ax.texts}
    assert {"16 GB GPU (16 GiB)", "24 GB GPU (24 GiB)", "80 GB GPU (80 GiB)"} <= texts
    assert set(MODELS) <= texts  # every model is named
    assert "GiB" in ax.get_ylabel()


def test_memory_vs_params_takes_other_gpu_sizes():
    ax = plot_memory_vs_params(_table(), gpu_gib=(40,))
    assert [t.get_text() for t in ax.texts if "GPU" in t.get_text()] == ["40 GB GPU (40 GiB)"]


@pytest.mark.parametrize(
    ("table", "error", "match"),
    [
        ({"params": [1]}, TypeError, "pandas DataFrame"),
        (pd.DataFrame({"Adam": [1.0]}), ValueError, "'params' column"),
        (pd.DataFrame({"params": [10]}), ValueError, "at least one memory column"),
        (pd.DataFrame({"params": [0], "Adam": [1.0]}), ValueError, "> 0 on log axes"),
        (pd.DataFrame({"params": [10], "Adam": [0.0]}), ValueError, "> 0 on log axes"),
    ],
)
def test_memory_vs_params_rejects_bad_tables(table, error, match):
    with pytest.raises(error, match=match):
        plot_memory_vs_params(table)


def test_memory_scaling_points_fit_and_one_budget_line_for_two_series():
    x = [1, 2, 4, 8]
    ax = plot_memory_scaling(x, [110, 120, 140, 180], fitted=[110, 120, 140, 180], xlabel="batch size",
                             budget=150, label="no checkpointing")
    plot_memory_scaling(x, [105, 108, 114, 126], fitted=lambda b: 102 + 3 * b, xlabel="batch size", budget=150,
                        ax=ax, label="checkpointing")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"no checkpointing", "no checkpointing: fit", "checkpointing", "checkpointing: fit", "budget (150)"} \
        <= set(lines)
    assert lines["no checkpointing"].get_color() == lines["no checkpointing: fit"].get_color()
    assert lines["checkpointing"].get_color() != lines["no checkpointing"].get_color()
    assert sum(line.get_label().startswith("budget") for line in ax.get_lines()) == 1  # drawn once
    fit = lines["checkpointing: fit"]
    np.testing.assert_allclose(fit.get_ydata(), 102 + 3 * fit.get_xdata())  # the callable drawn on a grid
    assert ax.get_xlabel() == "batch size" and ax.get_ylabel() == "peak memory (MiB)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": [1, 2], "measured": [1.0]}, "same length"),
        ({"x": [], "measured": []}, "same length >= 1"),
        ({"x": [1, 2], "measured": [1.0, float("nan")]}, "finite"),
        ({"x": [1, 2], "measured": [1.0, 2.0], "fitted": [1.0]}, "one value per x"),
    ],
)
def test_memory_scaling_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_memory_scaling(xlabel="batch size", **kwargs)


# --- the live calculator (ipywidgets calling lab_utils.memory) --------------------------------------------------------
def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\.?\d*", text)]


def test_live_view_shows_the_library_estimate_and_follows_the_controls():
    calc = MemoryCalculator(MODELS)
    assert calc.model.value == "BERT-base" and calc.params.value == MODELS["BERT-base"]
    est = memory.estimate_training_memory(MODELS["BERT-base"], optimizer="adam")
    assert f"{est.total / 2**20:,.1f}" in calc.result.value  # 1,670.6 MiB: weights + grads + 2 Adam moments
    calc.model.value = "Llama-2-7B"
    assert calc.params.value == MODELS["Llama-2-7B"]
    calc.optimizer.value, calc.dtype.value, calc.trainable.value = "sgd", "bf16", 50
    n = MODELS["Llama-2-7B"]
    est = memory.estimate_training_memory(n, n_trainable=n // 2, optimizer="sgd", dtype="bf16")
    assert f"{est.total / 2**20:,.1f}" in calc.result.value and f"{n // 2:,} of {n:,}" in calc.result.value
    total_gib = est.total / 2**30  # bf16 weights 12.55 GiB + half the gradients 6.28 GiB = 18.83 GiB
    assert f"16 GB: ✗ {total_gib - 16:.1f} GiB short" in calc.result.value
    assert f"24 GB: ✓ fits, {24 - total_gib:.1f} GiB left" in calc.result.value


def test_typing_a_count_switches_to_custom_and_bad_counts_show_the_error():
    calc = MemoryCalculator(MODELS)
    calc.params.value = 1_000
    assert calc.model.value == CUSTOM and "1,000 of 1,000 parameters" in calc.result.value
    calc.model.value = "BLOOM-176B"
    assert calc.params.value == MODELS["BLOOM-176B"] and "80 GB: ✗" in calc.result.value
    calc.params.value = -5
    assert "n_params must be &gt;= 0" in calc.result.value  # the library's message, shown instead of a table
    assert MemoryCalculator().model.value == CUSTOM  # no models: only the typed count


def test_trainable_share_matches_the_page_rule():
    assert _trainable(MODELS["BERT-base"], 100) == MODELS["BERT-base"]
    assert _trainable(1_000, 0.1) == 1 and _trainable(999, 50) == 499 and _trainable(7, 0) == 0


@pytest.mark.parametrize(
    ("models", "error", "match"),
    [
        ([("a", 1)], TypeError, "mapping name -> parameter count"),
        ({"a": -1}, ValueError, r"models\['a'\] = -1"),
        ({"a": 1.5}, ValueError, "int count"),
        ({CUSTOM: 10}, ValueError, "not named 'custom'"),
    ],
)
def test_calculator_rejects_bad_models(models, error, match):
    with pytest.raises(error, match=match):
        memory_calculator(models)


def test_one_output_carries_the_widget_and_the_static_page():
    with mock.patch("lab_utils.widgets.memory.display") as shown:
        assert memory_calculator(MODELS) is None  # nothing returned: a trailing call does not display it twice
    (calc,), _ = shown.call_args
    bundle = calc._repr_mimebundle_()
    assert set(bundle) == {"text/plain", WIDGET_VIEW, "text/html"}
    assert bundle[WIDGET_VIEW]["model_id"] == calc.widget.model_id
    assert STATIC_VIEW_ATTR in bundle["text/html"] and "<script>" in bundle["text/html"]
    assert "cdn" not in bundle["text/html"].lower() and "src=" not in bundle["text/html"]  # self-contained


# --- the static page: same constants, same numbers --------------------------------------------------------------------
def _page_config(page: str) -> dict:
    return json.loads(html.unescape(re.search(r'data-config="([^"]*)"', page).group(1)))


def test_page_constants_are_the_library_constants():
    config = _page_config(calculator_html(MODELS))
    assert config == calculator_config(MODELS)
    assert config["bytes"] == {"fp32": 4, "bf16": 2, "fp16": 2}  # non-vacuity: real numbers, not {} == {}
    assert config["copies"] == memory.STATE_COPIES and list(config["copies"]) == list(memory.OPTIMIZERS)
    assert config["models"] == MODELS and (config["mib"], config["gib"]) == (2**20, 2**30)
    assert config["gpu_gib"] == [16, 24, 80]


GRID_COUNTS = (0, 1, 7, 22_713_216, 109_482_240, 6_738_415_616, 176_247_271_424)
GRID_PERCENT = (0, 0.1, 1.5, 33.3, 99.99, 100)


def _python_grid() -> list[dict]:
    rows = []
    for n in GRID_COUNTS:
        for pct in GRID_PERCENT:
            for dtype in CALCULATOR_DTYPES:
                for state in CALCULATOR_DTYPES:
                    for opt in memory.OPTIMIZERS:
                        k = _trainable(n, pct)
                        est = memory.estimate_training_memory(n, n_trainable=k, optimizer=opt, dtype=dtype,
                                                              state_dtype=state)
                        rows.append({"in": [n, pct, dtype, state, opt], "n_trainable": k, "weights": est.weights,
                                     "gradients": est.gradients, "optimizer_state": est.optimizer_state,
                                     "total": est.total})
    return rows


def test_page_script_computes_what_the_library_computes(tmp_path):
    page = calculator_html(MODELS)
    expected = _python_grid()
    driver = (f"const {{estimate}} = require({json.dumps(str(tmp_path / 'calculator.js'))});\n"
              f"const C = {json.dumps(_page_config(page))};\n"
              f"const grid = {json.dumps([row['in'] for row in expected])};\n"
              "console.log(JSON.stringify(grid.map(a => estimate(a[0], a[1], a[2], a[3], a[4], C))));\n")
    got = run_node(tmp_path, page, driver, module="calculator.js")
    assert len(got) == len(expected) == 7 * 6 * 3 * 3 * 4
    for row, js in zip(expected, got, strict=True):
        assert js == {k: v for k, v in row.items() if k != "in"}, row["in"]
    assert len({row["total"] for row in expected}) > 100  # non-vacuity: the grid exercises many distinct totals


def test_page_script_rejects_what_the_form_cannot_compute(tmp_path):
    driver = (f"const {{estimate}} = require({json.dumps(str(tmp_path / 'calculator.js'))});\n"
              f"const C = {json.dumps(calculator_config())};\n"
              "console.log(JSON.stringify([estimate(-5, 100, 'fp32', 'fp32', 'adam', C),"
              " estimate(1.5, 100, 'fp32', 'fp32', 'adam', C), estimate(10, 101, 'fp32', 'fp32', 'adam', C)]));\n")
    got = run_node(tmp_path, calculator_html(), driver, module="calculator.js")
    assert [sorted(e) for e in got] == [["error"]] * 3


# A reader's session on the page: each step sets a control and fires the event a browser fires, then records what
# the result table says. The expected text is the live view's table for the same inputs.
DRIVER = """
var root = document.querySelector('.lab-memory-calculator'), log = [];
function field(name) { return root.querySelector("[name='" + name + "']"); }
function record() {
  log.push({model: field('model').value, params: field('params').value,
            text: root.querySelector('.lab-memcalc-result').textContent});
}
function set(name, value, event) { field(name).value = value; field(name).dispatchEvent(new Event(event)); record(); }
record();
set('model', 'Llama-2-7B', 'change');
set('optimizer', 'sgd', 'input');
set('dtype', 'bf16', 'input');
set('trainable', '0.5', 'input');
set('optimizer', 'momentum', 'input');
set('state_dtype', 'bf16', 'input');
set('params', '123456789', 'input');
set('model', 'BLOOM-176B', 'change');
set('params', '-5', 'input');
var out = document.createElement('pre');
out.id = 'driver-' + 'out';  // not spelled out: the dump also holds this script
out.textContent = JSON.stringify(log);
document.body.appendChild(out);
"""
EXPECTED_STEPS = [  # (model, params, trainable %, dtype, state dtype, optimizer) after each step
    ("BERT-base", 109_482_240, 100, "fp32", "fp32", "adam"),
    ("Llama-2-7B", 6_738_415_616, 100, "fp32", "fp32", "adam"),
    ("Llama-2-7B", 6_738_415_616, 100, "fp32", "fp32", "sgd"),
    ("Llama-2-7B", 6_738_415_616, 100, "bf16", "fp32", "sgd"),
    ("Llama-2-7B", 6_738_415_616, 0.5, "bf16", "fp32", "sgd"),
    ("Llama-2-7B", 6_738_415_616, 0.5, "bf16", "fp32", "momentum"),
    ("Llama-2-7B", 6_738_415_616, 0.5, "bf16", "bf16", "momentum"),
    (CUSTOM, 123_456_789, 0.5, "bf16", "bf16", "momentum"),
    ("BLOOM-176B", 176_247_271_424, 0.5, "bf16", "bf16", "momentum"),
]


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_page_in_a_browser_answers_like_the_live_view(tmp_path):
    log = drive_page(tmp_path, calculator_html(MODELS), DRIVER)
    assert len(log) == len(EXPECTED_STEPS) + 1
    for step, (model, n, pct, dtype, state, opt) in zip(log, EXPECTED_STEPS, strict=False):
        assert (step["model"], int(step["params"])) == (model, n)
        assert step["text"] == _text(_result_html(n, pct, dtype, state, opt, (16, 24, 80))), step
    assert log[-1]["model"] == CUSTOM and "must be" in log[-1]["text"]  # -5: an error, not a table
    assert len({step["text"] for step in log}) == len(log)  # non-vacuity: every step changed the answer


# --- the book shows the static page instead of the widget -------------------------------------------------------------
def _bundle(*mimes: tuple[str, str]) -> nodes.container:
    bundle = nodes.container(nb_element="mime_bundle")
    for mime, text in mimes:
        bundle += nodes.container("", nodes.raw(text=text, format="html"), mime_type=mime)
    return bundle


def test_book_drops_the_widget_view_only_where_a_static_view_stands_in():
    assert book.STATIC_VIEW_ATTR == STATIC_VIEW_ATTR and book.WIDGET_VIEW_MIME == WIDGET_VIEW
    page = calculator_html(MODELS)
    doc = nodes.section()
    calculator = _bundle(("text/plain", "calc"), (WIDGET_VIEW, "{}"), ("text/html", page))
    plain_widget = _bundle(("text/plain", "VBox()"), (WIDGET_VIEW, "{}"))  # e.g. the tokenizer explorer
    table = _bundle(("text/plain", "df"), ("text/html", "<table></table>"))
    doc += [calculator, plain_widget, table]
    assert book.prefer_static_views(doc) == 1
    assert [c["mime_type"] for c in calculator.children] == ["text/plain", "text/html"]
    assert [c["mime_type"] for c in plain_widget.children] == ["text/plain", WIDGET_VIEW]
    assert [c["mime_type"] for c in table.children] == ["text/plain", "text/html"]
    assert book.PreferStaticViews.default_priority < 4  # before myst-nb's SelectMimeType
