"""Tests for lab_utils.widgets.formats: the bit-layout HTML, the explorer's live view and its page (HTML/JS).

The bits shown are checked against lab_utils.formats.decode (itself checked against tensor.view(int) bits). The
page's JavaScript is run, not just read: by node on a grid of values (every field and the whole HTML compared with
Python's), and in headless Chromium, typed into like a reader would. Both skip, saying so, where node or Chromium is
not installed (system programs, not Python dependencies); the CI image has both.
"""

import html
import json
import math
import re
from unittest import mock

import pytest
import torch

from lab_utils.formats import FORMATS, decode
from lab_utils.maintainers import book
from lab_utils.widgets import bit_layout_html, format_explorer
from lab_utils.widgets.formats import (
    FormatExplorer,
    _layout,
    explorer_config,
    explorer_html,
    explorer_result_html,
    parse_value,
)
from lab_utils.widgets.static import STATIC_VIEW_ATTR
from tests.headless import drive_page, run_node

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
VALUES = (0.1, 1.0, -2.5, 65504.0, 70000.0, 1e-8, 2.0**-24, 1e-40, 3e38, 0.0, -0.0, math.inf, -math.inf, math.nan)


def _boxes(fragment: str, field: str) -> str:
    return "".join(re.findall(rf"<span class='lab-bit-{field}'[^>]*>([01])</span>", fragment))


# --- bit_layout_html: the bits decode reads, as boxes -----------------------------------------------------------------
@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("x", VALUES)
def test_boxes_show_the_bits_decode_reads(x, name):
    page = bit_layout_html(x, name)
    d = decode(x, name)
    assert (_boxes(page, "s"), _boxes(page, "e"), _boxes(page, "m")) == (str(d.sign), d.exponent_bits,
                                                                          d.mantissa_bits)
    assert f"data-bits='{d.bits}'" in page and f"<i>({d.kind})</i>" in page
    assert len(re.findall(r"<span class='lab-bit-", page)) == FORMATS[name].bits
    assert "<script" not in page  # a fragment for a notebook cell, no script needed


@pytest.mark.parametrize(
    ("x", "name", "bits", "text"),
    [  # written out by hand, so that a decode bug shared by page and test would still be caught
        (1.0, "fp16", "0 01111 0000000000", "exponent 01111 = 15 - 15 = 0; mantissa 1.0000000000 = 1.0"),
        (0.1, "fp32", "0 01111011 10011001100110011001101", "= 0.10000000149011612"),
        (0.1, "fp16", "0 01011 1001100110", "stored - x = -2.441406250000555e-05"),  # from the double 0.1
        (0.1, "bf16", "0 01111011 1001101", "= 0.10009765625"),
        (-2.5, "bf16", "1 10000000 0100000", "(-1)<sup>1</sup> &times; 1.25 &times; 2<sup>1</sup> = -2.5"),
        (65504.0, "fp16", "0 11110 1111111111", "stored - x = 0.0"),
        (70000.0, "fp16", "0 11111 0000000000", "overflow: |x| &gt; max 65504.0"),
        (1e-8, "fp16", "0 00000 0000000000", "underflow: x became zero"),
        (2.0**-24, "fp16", "0 00000 0000000001", "subnormal, 1 - 15 = -14; mantissa 0.0000000001"),
        (-0.0, "fp32", "1 00000000 00000000000000000000000", "= -0.0 <i>(zero)</i>"),
        (math.inf, "bf16", "0 11111111 0000000", "infinity"),
        (math.nan, "fp16", "0 11111 1000000000", "not a number"),
    ],
)
def test_layout_reads_as_the_lecture_explains(x, name, bits, text):
    page = bit_layout_html(x, name)
    assert f"data-bits='{bits}'" in page and text in page, page


def test_tensors_and_dtypes_are_accepted_like_decode():
    assert bit_layout_html(torch.tensor([0.1], dtype=torch.float64), torch.float16) == bit_layout_html(0.1, "fp16")
    assert "stored - x = -2.4415552616119385e-05" in bit_layout_html(torch.tensor(0.1), "fp16")  # x: fp32 0.1
    assert "data-bits='0 01111011 1001101'" in bit_layout_html(torch.tensor(0.1, dtype=torch.float64), "bf16")


@pytest.mark.parametrize(("x", "fmt", "error", "match"), [
    (1.0, "fp8", ValueError, r"FORMATS: \['fp32', 'fp16', 'bf16'\]"),
    (1.0, torch.int8, ValueError, "no format for dtype"),
    ("1.0", "fp32", TypeError, "float or a one-element tensor"),
    (torch.ones(2), "fp32", ValueError, "one value"),
])
def test_bad_inputs_raise_with_the_fix(x, fmt, error, match):
    with pytest.raises(error, match=match):
        bit_layout_html(x, fmt)


# --- the explorer: text box, format choice, live view -----------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("0.1", 0.1), (" -2.5e3 ", -2500.0), (".5", 0.5), ("5.", 5.0), ("1E-8", 1e-8), ("-0", -0.0), ("inf", math.inf),
    ("-Infinity", -math.inf), ("NaN", math.nan), ("-nan", math.nan), ("1e400", math.inf),
    ("", None), ("abc", None), ("1e", None), ("0x10", None), ("1_000", None), ("1,5", None),
])
def test_parse_value(text, expected):
    got = parse_value(text)
    if expected is None or math.isnan(expected):
        assert got is expected or (got is not None and math.isnan(got) and math.copysign(1, got) == 1)
    else:
        assert got == expected and math.copysign(1, got) == math.copysign(1, expected)


def test_result_shows_the_chosen_formats_or_what_to_type():
    every = explorer_result_html("0.1")
    assert re.findall(r"data-format='(\w+)'", every) == list(FORMATS) and every.startswith("<p>x = 0.1</p>")
    assert re.findall(r"data-format='(\w+)'", explorer_result_html("0.1", "bf16")) == ["bf16"]
    bad = explorer_result_html("<b>1</b>")
    assert "could not read &lt;b&gt;1&lt;/b&gt; as a number" in bad and "lab-bit-layout" not in bad
    with pytest.raises(ValueError, match="'all' or a name of FORMATS"):
        explorer_result_html("1", "fp8")


def test_live_view_follows_the_controls():
    explorer = FormatExplorer(0.1)
    assert explorer.text.value == "0.1" and explorer.result.value == explorer_result_html("0.1", "all")
    explorer.text.value = "65504"
    assert explorer.result.value == explorer_result_html("65504", "all")
    explorer.format.value = "fp16"
    assert explorer.result.value == explorer_result_html("65504", "fp16") and "overflow" not in explorer.result.value
    explorer.text.value = "65520"  # the midpoint between max and 2^16 rounds to even, away to inf
    assert "overflow: |x| &gt; max 65504.0" in explorer.result.value
    explorer.text.value = "oops"
    assert "could not read oops" in explorer.result.value
    with pytest.raises(TypeError, match="value must be a number"):
        FormatExplorer("0.1")


def test_one_output_carries_the_widget_and_the_static_page():
    with mock.patch("lab_utils.widgets.formats.display") as shown:
        assert format_explorer(0.1) is None
    (explorer,), _ = shown.call_args
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"text/plain", WIDGET_VIEW, "text/html"}
    assert bundle[WIDGET_VIEW]["model_id"] == explorer.widget.model_id
    page = bundle["text/html"]
    assert STATIC_VIEW_ATTR in page and STATIC_VIEW_ATTR == book.STATIC_VIEW_ATTR and "<script>" in page
    assert "cdn" not in page.lower() and "src=" not in page  # self-contained
    assert json.loads(html.unescape(re.search(r'data-config="([^"]*)"', page).group(1))) == explorer_config()
    assert explorer_config()["formats"]["fp16"] == {"exponent_bits": 5, "mantissa_bits": 10, "bias": 15,
                                                    "max": 65504.0}


# --- the page's script, run by node: the same fields and the same HTML as Python --------------------------------------
def _grid() -> list[float]:
    ties = [1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-40, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-30,
            1 + 2**-24, 1 + 3 * 2**-24, 2.0**-25, 3 * 2.0**-25, 2.0**-14 * (1 - 2**-11), 2.0**-150, 3 * 2.0**-150,
            2.0**-133 * 3, 65504.0, 65519.99, 65520.0, 65536.0, 3.4028234663852886e38, 3.4028235677973366e38,
            3.4028235677973362e38, 3.3895313892515355e38, 3.3961775292304476e38]  # fp16/bf16/fp32 midpoints
    special = [0.0, -0.0, math.inf, -math.inf, math.nan, 0.1, -0.1, 1e-8, 1e-45, 1e-40, 5e-324, 1.7976931348623157e308]
    gen = torch.Generator().manual_seed(0)
    scaled = (torch.randn(300, generator=gen, dtype=torch.float64)
              * 10.0 ** (torch.rand(300, generator=gen, dtype=torch.float64) * 90 - 50)).tolist()
    patterns = torch.randint(-2**31, 2**31, (700,), generator=gen, dtype=torch.int64).to(torch.int32)
    as_fp32 = [v for v in patterns.view(torch.float32).double().tolist() if not math.isnan(v)]  # nan payloads:
    # the page stores the one quiet nan a browser makes, so only float("nan") is compared
    return ties + [-t for t in ties] + special + scaled + as_fp32


def _run_node(tmp_path, body: str):
    driver = (f"const E = require({json.dumps(str(tmp_path / 'explorer.js'))});\n"
              f"const C = {json.dumps(explorer_config())};\n{body}")
    return run_node(tmp_path, explorer_html(), driver, module="explorer.js")


def _js_list(values: list[float]) -> str:  # JS literals: NaN, Infinity and -0 survive (JSON would lose them)
    return "[" + ",".join("NaN" if math.isnan(v) else "Infinity" if v == math.inf else "-Infinity"
                          if v == -math.inf else repr(v) for v in values) + "]"


def test_page_script_decodes_and_draws_like_python(tmp_path):
    grid = _grid()
    got = _run_node(tmp_path, f"const grid = {_js_list(grid)};\nconsole.log(JSON.stringify(grid.map(x => "
                    "C.order.map(n => { const d = E.layout(x, n, C); return [d.sign, d.exponent_bits, "
                    "d.mantissa_bits, d.exponent, E.pyRepr(d.mantissa_value), E.pyRepr(d.value), d.kind, "
                    "E.layoutHtml(x, n, C)]; }))));\n")
    assert len(got) == len(grid) > 1000
    kinds = set()
    for x, per_format in zip(grid, got, strict=True):
        for name, js in zip(FORMATS, per_format, strict=True):
            d = decode(x, name)
            expected = [d.sign, d.exponent_bits, d.mantissa_bits, d.exponent, repr(d.mantissa_value),
                        repr(d.value), d.kind, _layout(x, d, FORMATS[name])]
            assert js == expected, (x, name)
            kinds.add((name, d.kind))
    # non-vacuity: every kind in every format was compared
    assert kinds == {(n, k) for n in FORMATS for k in ("normal", "subnormal", "zero", "inf", "nan")}


def test_page_writes_numbers_as_python_repr_and_reads_text_as_python(tmp_path):
    gen = torch.Generator().manual_seed(1)
    numbers = [1e16, 1e15, 123456789012345680.0, 0.0001, 0.00001, 1.5e-5, 5e-324, 1.7976931348623157e308, 100.0,
               -0.0, 2.0**-24, 65504.0, 0.1 + 0.2, 1e22, 1e21, -123.456]
    numbers += (torch.randn(200, generator=gen, dtype=torch.float64)
                * 10.0 ** torch.randint(-30, 30, (200,), generator=gen)).tolist()
    texts = ["0.1", " -2.5e3 ", ".5", "5.", "1E-8", "-0", "inf", "-Infinity", "NaN", "-nan", "1e400", "", "abc",
             "1e", "0x10", "1_000", "1,5", "<b>x</b>", "65520", "3.4028235677973366e38"]
    got = _run_node(tmp_path, f"console.log(JSON.stringify([{_js_list(numbers)}.map(E.pyRepr), "
                    f"{json.dumps(texts)}.map(t => ['all', 'fp32', 'fp16', 'bf16'].map(c => E.resultHtml(t, c, C)))"
                    "]));\n")
    assert got[0] == [repr(v) for v in numbers]
    assert got[1] == [[explorer_result_html(t, c) for c in ("all", "fp32", "fp16", "bf16")] for t in texts]


# --- the page in a browser, typed into like a reader would ------------------------------------------------------------
DRIVER = """
var root = document.querySelector('.lab-format-explorer'), log = [];
var input = root.querySelector("[name='x']"), choice = root.querySelector("[name='format']");
function record() { log.push(root.querySelector('.lab-formats-result').innerHTML); }
record();
input.value = '65520'; input.dispatchEvent(new Event('input')); record();
choice.value = 'bf16'; choice.dispatchEvent(new Event('change')); record();
input.value = '-1e-40'; input.dispatchEvent(new Event('input')); record();
var out = document.createElement('pre');
out.id = 'driver-' + 'out';
out.textContent = JSON.stringify(log);
document.body.appendChild(out);
"""


def test_page_in_a_browser_answers_like_the_live_view(tmp_path):
    log = drive_page(tmp_path, explorer_html(0.1), DRIVER)
    expected = [("0.1", "all"), ("65520", "all"), ("65520", "bf16"), ("-1e-40", "bf16")]
    assert len(log) == len(expected)
    for shown, (text, choice) in zip(log, expected, strict=True):
        # the browser re-serialises innerHTML (quotes, entities): compare the text and the bits shown
        live = explorer_result_html(text, choice)
        assert _text(shown) == _text(live), (text, choice)
        assert re.findall(r'data-bits="([01 ]+)"', shown) == re.findall(r"data-bits='([01 ]+)'", live)
    assert len(set(log)) == len(log)  # non-vacuity: every step changed the answer


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))
