"""Tests for lab_utils.widgets.receptive_field: the explorer's masks and reach, its live view and its page (HTML/JS).

The masks are lab_utils.masks' and the reach is lab_utils.receptive_field's (checked against the closed form and
the lecture's example). The page's JavaScript is run, not just read: by node on a grid of settings (every mask cell
and the whole HTML compared with Python's), and in headless Chromium, where a driver moves the controls like a reader
and the picture must change and match the live view. Both skip, saying so, where node or Chromium is not installed.
"""

import functools
import html
import http.server
import json
import re
import shutil
import threading

import pytest
import torch

from lab_utils import masks
from lab_utils.maintainers import book
from lab_utils.receptive_field import receptive_field, receptive_field_size
from lab_utils.widgets import receptive_field_explorer
from lab_utils.widgets.receptive_field import (
    BLOCK_SIZE,
    KINDS,
    N_RANDOM,
    N_SINK,
    RANDOM_SEED,
    RANGES,
    STYLE,
    ReceptiveFieldExplorer,
    explorer_config,
    explorer_html,
    explorer_mask,
    first_reached,
    view_html,
)
from lab_utils.widgets.static import STATIC_VIEW_ATTR
from tests import browser_check
from tests.headless import drive_page, run_node

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _first(fragment: str) -> list[int]:
    return [int(v) for v in re.search(r"data-first=['\"]([-\d ]+)['\"]", fragment).group(1).split()]


def _text(fragment: str) -> str:
    return html.unescape(re.search(r"<p class=['\"]lab-rf-text['\"]>(.*?)</p>", fragment).group(1))


# --- masks and reach: the library's ----------------------------------------------------------------------------------
def test_masks_are_the_library_masks_made_causal():
    T, gen = 24, torch.Generator().manual_seed(RANDOM_SEED)
    expected = {
        "sliding": masks.sliding_window_mask(T, window=5),
        "dilated": masks.dilated_window_mask(T, window=5, dilation=3),
        "longformer": masks.longformer_mask(T, window=5, dilation=3, global_positions=[0], causal=True),
        "bigbird": masks.bigbird_mask(T, window=5, block_size=BLOCK_SIZE, n_random=N_RANDOM, global_positions=[0],
                                      generator=gen, causal=True),
        "sinks": masks.union_masks(masks.sink_mask(T, n_sink=N_SINK), masks.sliding_window_mask(T, window=5))
        & masks.causal_mask(T),
        "causal": masks.causal_mask(T),
    }
    for kind in KINDS:
        got = explorer_mask(kind, T, window=5, dilation=3)
        assert torch.equal(got, expected[kind]), kind
        assert not (got & ~masks.causal_mask(T)).any() and got.diagonal().all(), kind  # causal, sees itself
    assert len({tuple(explorer_mask(k, T, window=5, dilation=3).flatten().tolist()) for k in KINDS}) == len(KINDS)
    random = masks.random_blocks_mask(T, block_size=BLOCK_SIZE, n_random=N_RANDOM, causal=True,
                                      generator=torch.Generator().manual_seed(RANDOM_SEED))
    bigbird = explorer_mask("bigbird", T, window=5, dilation=3)
    assert random.any() and not (random & ~bigbird).any()  # the random part is there (fixed seed: same each call)
    assert torch.equal(bigbird, explorer_mask("bigbird", T, window=5, dilation=3))


def test_lecture_example_window_4_three_layers_output_11_sees_2_to_11():
    mask = explorer_mask("sliding", 16, window=4, dilation=1)
    assert first_reached(mask, 3, 11) == [-1, -1, 3, 3, 3, 2, 2, 2, 1, 1, 1, 0, -1, -1, -1, -1]
    page = view_html("sliding", 16, 4, 1, 3, 11)
    assert _text(page) == ("output 11 sees inputs 2..11 (10 tokens) after 3 layers; "
                           "closed form (w-1)L+1 = (4-1)×3+1 = 10")
    assert "attention cells per layer: 58 of the 136 of full causal attention (43%)" in page  # 1+2+3+13*4 = 58


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("T", "window", "n_layers", "position"), [(16, 4, 3, 11), (40, 3, 5, 39), (64, 6, 8, 20)])
def test_reach_is_the_propagated_receptive_field(kind, T, window, n_layers, position):
    mask = explorer_mask(kind, T, window=window, dilation=2)
    first = first_reached(mask, n_layers, position)
    for layer in range(n_layers + 1):  # reached within `layer` layers == row of the matrix power
        within = [0 <= f <= layer for f in first]
        assert within == receptive_field(mask, layer)[position].tolist(), layer
    if kind == "sliding":  # the closed form, away from the start; capped at position + 1 near it
        n = sum(f >= 0 for f in first)
        assert n == min(receptive_field_size(window, n_layers), position + 1)
        assert str(n) in _text(view_html(kind, T, window, 2, n_layers, position))


def test_text_names_the_cap_the_holes_and_single_tokens():
    assert _text(view_html("sliding", 16, 4, 1, 3, 5)).endswith("= 10, capped at p+1 = 6 inputs")
    dilated = _text(view_html("dilated", 16, 3, 2, 2, 10))
    assert dilated.startswith("output 10 sees inputs 2, 4, 6, 8, 10 (5 tokens) after 2 layers; a dilated")
    assert _text(view_html("sinks", 32, 3, 1, 2, 20)) == "output 20 sees inputs 0..3, 16..20 (9 tokens) after 2 layers"
    assert _text(view_html("sliding", 8, 1, 1, 1, 3)).startswith("output 3 sees input 3 (1 token) after 1 layer;")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"kind": "global"}, ValueError, r"kind must be one of \['sliding'"),
    ({"window": 0}, ValueError, r"window must be in 1..16, got 0"),
    ({"dilation": 5}, ValueError, r"dilation must be in 1..4"),
    ({"n_layers": 2.0}, TypeError, "n_layers must be an int"),
    ({"seq_len": 65}, ValueError, r"seq_len must be in 8..64"),
    ({"seq_len": 8, "position": 8}, ValueError, r"position must be in 0..7, got 8"),
    ({"position": True}, TypeError, "position must be an int"),
])
def test_bad_settings_raise_with_the_range(kwargs, error, match):
    with pytest.raises(error, match=match):
        receptive_field_explorer(**kwargs)
    with pytest.raises(error, match=match):
        explorer_html(**kwargs)


# --- the live view ----------------------------------------------------------------------------------------------------
def _live(explorer: ReceptiveFieldExplorer) -> str:
    return explorer.view.value


def test_live_view_follows_the_controls():
    explorer = receptive_field_explorer()
    assert isinstance(explorer, ReceptiveFieldExplorer)
    assert _live(explorer) == STYLE + "<div class='lab-rf'>" + view_html("sliding", 16, 4, 2, 3, 11) + "</div>"
    seen = [_live(explorer)]
    explorer.n_layers.value = 1
    assert _first(_live(explorer)) == [-1] * 8 + [1, 1, 1, 0] + [-1] * 4 and _live(explorer) != seen[-1]
    seen.append(_live(explorer))
    explorer.window.value = 6
    explorer.kind.value = "longformer"
    assert _live(explorer).endswith(view_html("longformer", 16, 6, 2, 1, 11) + "</div>")
    seen.append(_live(explorer))
    explorer.seq_len.value = 10  # the position (11) follows the shorter sequence down to 9
    assert explorer.position.value == 9 and explorer.position.max == 9
    assert _live(explorer).endswith(view_html("longformer", 10, 6, 2, 1, 9) + "</div>")
    seen.append(_live(explorer))
    explorer.position.value = 4
    explorer.dilation.value = 3
    seen.append(_live(explorer))
    assert _live(explorer).endswith(view_html("longformer", 10, 6, 3, 1, 4) + "</div>")
    assert len(set(seen)) == len(seen)


def test_one_output_carries_the_widget_and_the_static_page():
    explorer = receptive_field_explorer("bigbird", window=3, n_layers=2, seq_len=20, position=19)
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"text/plain", WIDGET_VIEW, "text/html"}
    assert bundle[WIDGET_VIEW]["model_id"] == explorer.widget.model_id
    page = bundle["text/html"]
    assert STATIC_VIEW_ATTR in page and STATIC_VIEW_ATTR == book.STATIC_VIEW_ATTR and "<script>" in page
    assert "cdn" not in page.lower() and "src=" not in page and "http" not in page  # self-contained, offline
    assert json.loads(html.unescape(re.search(r'data-config="([^"]*)"', page).group(1))) == json.loads(
        json.dumps(explorer_config()))
    assert "<option value='bigbird' selected>" in page and "name='position' type='range' min='0' max='19'" in page


# --- the page's script, run by node: the same cells, the same reach, the same HTML -----------------------------------
SETTINGS = [(k, T, w, d, L, p) for k in KINDS for T, w, d, L in [(8, 1, 1, 1), (13, 4, 3, 3), (16, 4, 2, 3),
                                                                  (33, 7, 4, 8), (64, 16, 2, 2), (64, 3, 3, 8)]
            for p in sorted({0, T // 2, T - 1})]


def test_page_script_builds_the_python_masks_and_views(tmp_path):
    low, high = RANGES["seq_len"]
    driver = (f"const E = require({json.dumps(str(tmp_path / 'rf.js'))});\n"
              f"const C = {json.dumps(explorer_config())};\nconst S = {json.dumps(SETTINGS)};\n"
              "const K = " + json.dumps(list(KINDS)) + f";\nconst Ts = [...Array({high - low + 1}).keys()]"
              f".map(i => i + {low});\n"
              "console.log(JSON.stringify({views: S.map(s => E.viewHtml(...s, C)),\n"
              "  masks: K.map(k => Ts.map(T => E.maskOf(k, T, 3, 2, C).map(r => r.map(Number).join('')).join('|')))"
              "}));\n")
    got = run_node(tmp_path, explorer_html(), driver, module="rf.js")
    assert got["views"] == [view_html(*s) for s in SETTINGS]  # every cell, reach and line of text
    for kind, per_length in zip(KINDS, got["masks"], strict=True):  # every length: BigBird's embedded draws too
        for T, js in zip(range(low, high + 1), per_length, strict=True):
            rows = explorer_mask(kind, T, window=3, dilation=2).int().tolist()
            assert js == "|".join("".join(map(str, r)) for r in rows), (kind, T)
    assert len(set(got["views"])) > len(SETTINGS) * 0.9  # non-vacuity: the settings draw different pictures


# --- the page in a browser, moved like a reader would move it ---------------------------------------------------------
DRIVER = """
var root = document.querySelector('.lab-rf-explorer'), log = [];
function record() {
  var view = root.querySelector('.lab-rf-view');
  log.push({first: view.getAttribute('data-first'), text: view.querySelector('.lab-rf-text').textContent,
            position: root.querySelector("[name='position']").value,
            shown: root.querySelector('.lab-rf-value-n_layers').textContent,
            coloured: view.querySelectorAll('.lab-rf-inputs b:not(.u)').length});
}
function set(name, value) {
  var e = root.querySelector("[name='" + name + "']");
  e.value = value;
  e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));
  record();
}
record();
set('n_layers', '1');
set('n_layers', '5');
set('window', '3');
set('kind', 'dilated');
set('seq_len', '9');
set('kind', 'bigbird');
var out = document.createElement('pre');
out.id = 'driver-' + 'out';
out.textContent = JSON.stringify(log);
document.body.appendChild(out);
"""
STEPS = [("sliding", 16, 4, 2, 3, 11), ("sliding", 16, 4, 2, 1, 11), ("sliding", 16, 4, 2, 5, 11),
         ("sliding", 16, 3, 2, 5, 11), ("dilated", 16, 3, 2, 5, 11), ("dilated", 9, 3, 2, 5, 8),
         ("bigbird", 9, 3, 2, 5, 8)]


def test_page_in_a_browser_moves_its_controls_and_redraws(tmp_path):
    log = drive_page(tmp_path, explorer_html(), DRIVER)
    assert len(log) == len(STEPS)
    for shown, setting in zip(log, STEPS, strict=True):
        live = view_html(*setting)
        assert shown["first"].split() == [str(f) for f in _first(live)], setting
        assert shown["text"] == _text(live) and shown["shown"] == str(setting[4])
        assert shown["coloured"] == sum(f >= 0 for f in _first(live)) and int(shown["position"]) == setting[5]
    assert [s["coloured"] for s in log[:3]] == [10, 4, 12]  # 3 layers: 2..11; 1 layer: 8..11; 5 layers: 0..11
    assert len({s["first"] for s in log}) == len(log)  # every move changed the highlighted field


# --- the site check (tests/browser_check.py): served page, injected driver, a control moved ---------------------------
def test_site_check_moves_a_control_on_the_served_page(tmp_path, monkeypatch):
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium is not installed: the page cannot be driven here (CI installs it)")
    page = "chapters/05_efficient_attention/windowed_attention.html"
    assert "receptive-field" in browser_check.DEFAULT_PAGES[page]
    (tmp_path / page).parent.mkdir(parents=True)
    explorer = explorer_html("causal", n_layers=2)  # full causal: layers and window change nothing, the mask does
    (tmp_path / page).write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><div "
                                 f"class='cell_output'>{explorer}</div></body></html>", encoding="utf-8")
    handler = functools.partial(browser_check.QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
    try:
        dumps = {}
        for inject in ({"/" + page: browser_check.DRIVERS["receptive-field"]}, {}):
            monkeypatch.setattr(browser_check.QuietHandler, "inject", inject)
            dumps[bool(inject)] = browser_check.run_chromium(chromium, url, ["--dump-dom"], 5000).stdout
    finally:
        server.shutdown()
    passed, found = browser_check.check_receptive_field(browser_check.parse(dumps[True]))
    assert passed and "kind causal -> sliding: picture changed" in found, found
    passed, found = browser_check.check_receptive_field(browser_check.parse(dumps[False]))  # drawn, never moved
    assert not passed and "12 inputs reached, 12 coloured, no control moved: picture unchanged" in found, found
    assert not browser_check.check_receptive_field(browser_check.parse(explorer))[0]  # its script never ran
    assert not browser_check.check_receptive_field(browser_check.parse("<p>no explorer</p>"))[0]
