"""Open the built book in headless Chromium, offline, and check that pages render what they promise.

Serves ``_build/html`` on a localhost port, loads each page with every other host unreachable, and checks
the DOM after scripts ran (``--dump-dom``): the landing page has its title and chapter map; notebook pages
show the provenance banner, plots, rendered ipywidgets and exercises, the Colab launch link and a student-edition
download (fetched and checked: a valid notebook without solutions); every page has its formulas typeset by the
vendored MathJax (no raw TeX left); a memory calculator answers without a kernel and shows once, not beside its
widget; the receptive-field explorer draws its field and redraws it when a control moves (``--dump-dom`` cannot
click: a driver script from ``DRIVERS`` is put into the page as the local server sends it, moves the control, and
leaves what it saw in the DOM). Saves a full-page screenshot of each page to ``_build/screenshots/``.
Not a pytest module: run ``python tests/browser_check.py`` after a build.

    python tests/browser_check.py                                   # intro, first look, every notebook page
    python tests/browser_check.py --pages intro.html chapters/02_x/y.html=banner,plot,widget
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

TITLE = "LLMs: Fine-tuning & Optimisation"
NOTEBOOK_PAGE_CHECKS = ["banner", "colab", "student-edition", "no-raw-tex"]
DEFAULT_PAGES = {
    "intro.html": ["title", "chapter-map", "no-raw-tex"],
    "closing.html": ["no-raw-tex", "math"],
    "chapters/00_first_look/first_look.html": [*NOTEBOOK_PAGE_CHECKS, "plot", "widget", "exercise", "math"],
    "chapters/01_transformers/attention_and_masks.html": [*NOTEBOOK_PAGE_CHECKS, "widgets-if-any", "math"],
    "chapters/05_efficient_attention/windowed_attention.html": [*NOTEBOOK_PAGE_CHECKS, "plot", "exercise",
                                                                "widgets-if-any", "receptive-field"],
}
OTHER_PAGE_CHECKS = [*NOTEBOOK_PAGE_CHECKS, "widgets-if-any", "calculators-if-any"]  # for --pages without "=checks"
COLAB_URL = "https://colab.research.google.com/"  # launch_buttons.colab_url in _config.yml
STUDENT_LINK_TEXT = "Download the student edition (.ipynb)"  # lab_utils.maintainers.book
# Text that is code or not shown: raw TeX there is not a rendering failure.
NOT_PROSE_TAGS = {"script", "style", "pre", "code", "textarea", "noscript", "mjx-assistive-mml", "math"}
RAW_TEX = ("\\(", "\\[", "$$")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--hide-scrollbars",
    # No network: every host except the local server fails to resolve, so a CDN fetch cannot succeed.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"  # myst-nb's placeholder for each widget output
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    """A DOM element: enough of one for the checks below."""

    def __init__(self, tag: str, attrs: dict, parent: Element | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, pred) -> list[Element]:
        return [e for e in self.iter() if pred(e)]

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class TreeBuilder(HTMLParser):
    """Parse serialized HTML (Chromium's ``--dump-dom``) into :class:`Element` nodes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.node)
        self.node.children.append(element)
        if tag not in VOID_TAGS:
            self.node = element

    def handle_endtag(self, tag):
        for node in [self.node, *self.node.ancestors()]:  # close up to the matching open tag, if any
            if node.tag == tag:
                self.node = node.parent or self.root
                return

    def handle_data(self, data):
        self.node.text += data


def parse(html: str) -> Element:
    builder = TreeBuilder()
    builder.feed(html)
    return builder.root


# --- checks: each takes the page's DOM and returns (passed, what was found) ---------------------------------------

def check_title(dom: Element) -> tuple[bool, str]:
    h1 = [e.all_text().strip() for e in dom.find_all(lambda e: e.tag == "h1")]
    return any(TITLE in t for t in h1), f"h1 headings: {h1[:3]}"


def check_chapter_map(dom: Element) -> tuple[bool, str]:
    tables = [t for t in dom.find_all(lambda e: e.tag == "table")
              if any("first_look.html" in (a.attrs.get("href") or "") for a in t.find_all(lambda e: e.tag == "a"))]
    rows = sum(len(t.find_all(lambda e: e.tag == "tr")) for t in tables)
    return bool(tables), f"{len(tables)} table(s) linking to the first chapter, {rows} rows"


def check_banner(dom: Element) -> tuple[bool, str]:
    banners = dom.find_all(lambda e: "lab-provenance" in e.classes)
    return bool(banners), repr(banners[0].all_text().strip()) if banners else "no .lab-provenance element"


def _in_output(e: Element) -> bool:
    return any("cell_output" in a.classes or "output" in a.classes for a in e.ancestors())


def check_plot(dom: Element) -> tuple[bool, str]:
    imgs = dom.find_all(lambda e: e.tag == "img" and _in_output(e)
                        and ((src := e.attrs.get("src") or "").startswith("data:image") or ".png" in src))
    return bool(imgs), f"{len(imgs)} image(s) in cell outputs"


def _widget_counts(dom: Element) -> tuple[int, int]:
    views = dom.find_all(lambda e: e.tag == "script" and e.attrs.get("type") == WIDGET_VIEW_MIME)
    rendered = dom.find_all(lambda e: e.classes & {"jupyter-widgets", "widget-tab", "lm-Widget"}
                            and not any(a.classes & {"jupyter-widgets", "lm-Widget"} for a in e.ancestors()))
    return len(views), len(rendered)


def check_widget(dom: Element) -> tuple[bool, str]:
    views, rendered = _widget_counts(dom)
    return rendered >= max(views, 1), f"{views} widget view(s) in the page, {rendered} rendered"


def check_widgets_if_any(dom: Element) -> tuple[bool, str]:
    views, rendered = _widget_counts(dom)
    return rendered >= views, f"{views} widget view(s) in the page, {rendered} rendered"


def _calculators(dom: Element) -> tuple[int, int, int]:
    """Memory calculators (lab_utils.widgets.memory's static view): found, answering (their script filled in the
    result table), and widgets rendered in the same cell output (the book should show one view, not both)."""
    calcs = dom.find_all(lambda e: "lab-memory-calculator" in e.classes)
    answering = [c for c in calcs if c.attrs.get("data-ready") == "1" and "total" in c.all_text()
                 and "GiB" in c.all_text()]
    outputs = [next((a for a in c.ancestors() if "cell_output" in a.classes), None) for c in calcs]
    twins = sum(len(o.find_all(lambda e: e.classes & {"jupyter-widgets", "lm-Widget"})) for o in outputs if o)
    return len(calcs), len(answering), twins


def check_calculator(dom: Element) -> tuple[bool, str]:
    found, answering, twins = _calculators(dom)
    return found >= 1 and answering == found and not twins, \
        f"{found} calculator(s), {answering} answering without a kernel, {twins} widget(s) beside them"


def check_calculators_if_any(dom: Element) -> tuple[bool, str]:
    found, answering, twins = _calculators(dom)
    return answering == found and not twins, \
        f"{found} calculator(s), {answering} answering without a kernel, {twins} widget(s) beside them"


def check_exercise(dom: Element) -> tuple[bool, str]:
    exercises = dom.find_all(lambda e: {"exercise", "admonition"} <= e.classes)
    solutions = dom.find_all(lambda e: "solution" in e.classes and "admonition" in e.classes)
    return bool(exercises), f"{len(exercises)} exercise(s), {len(solutions)} solution(s)"


def check_colab(dom: Element) -> tuple[bool, str]:
    links = [a.attrs["href"] for a in dom.find_all(lambda e: e.tag == "a")
             if (a.attrs.get("href") or "").startswith(COLAB_URL) and a.attrs["href"].endswith(".ipynb")]
    return bool(links), links[0] if links else f"no link to {COLAB_URL}...ipynb"


def _prose_text(node: Element) -> str:
    if node.tag in NOT_PROSE_TAGS:
        return ""
    return node.text + " ".join(_prose_text(c) for c in node.children)


def check_no_raw_tex(dom: Element) -> tuple[bool, str]:
    text = _prose_text(dom)
    raw = [text[max(i - 30, 0):i + 40].replace("\n", " ") for i in
           sorted(i for tex in RAW_TEX for i in _find_all(text, tex))]
    rendered = len(dom.find_all(lambda e: e.tag == "mjx-container"))
    return not raw, (f"raw TeX left, e.g. {raw[:2]}" if raw else "no raw TeX") + f"; {rendered} typeset formula(s)"


def _find_all(text: str, sub: str) -> list[int]:
    found, i = [], text.find(sub)
    while i != -1:
        found.append(i)
        i = text.find(sub, i + 1)
    return found


def check_math(dom: Element) -> tuple[bool, str]:
    rendered = dom.find_all(lambda e: e.tag == "mjx-container")
    source = dom.find_all(lambda e: "math" in e.classes)
    return bool(rendered), f"{len(rendered)} mjx-container(s) (MathJax output), {len(source)} math element(s)"


def check_student_edition(dom: Element, page_url: str) -> tuple[bool, str]:
    """The download link is there, serves a valid notebook, and that notebook holds no solution."""
    import nbformat

    links = [a for a in dom.find_all(lambda e: e.tag == "a") if STUDENT_LINK_TEXT in a.all_text()]
    if not links:
        return False, f"no link {STUDENT_LINK_TEXT!r}"
    url = urljoin(page_url, links[0].attrs.get("href") or "")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            nb = nbformat.reads(response.read().decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # noqa: BLE001 - any failure here is the finding
        return False, f"{url}: {type(error).__name__}: {error}"
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in c.get("metadata", {}).get("tags", [])]
    prose = [i for i, c in enumerate(nb.cells) if "{solution-start}" in c.source or "{solution-end}" in c.source]
    outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    problems = [f"{what} in cells {cells}" for what, cells in
                (("solution cells", solutions), ("solution directives", prose), ("outputs", outputs)) if cells]
    exercises = sum("exercise" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    found = f"{links[0].attrs.get('href')}: {len(nb.cells)} cells, {exercises} exercise cell(s)"
    return not problems, found + (f"; {', '.join(problems)}" if problems else ", no solutions")


def check_receptive_field(dom: Element) -> tuple[bool, str]:
    """Receptive-field explorers (lab_utils.widgets.receptive_field's static view): in a cell output with no widget
    beside them, drawn by their script (input cells coloured as their ``data-first`` says, a field beyond the
    output itself), and drawn differently after ``RF_DRIVER`` moved a control."""
    roots = dom.find_all(lambda e: "lab-rf-explorer" in e.classes)
    good, notes = 0, []
    for root in roots:
        output = next((a for a in root.ancestors() if "cell_output" in a.classes), None)
        views = root.find_all(lambda e: "lab-rf-view" in e.classes)
        first = [int(v) for v in views[0].attrs.get("data-first", "").split()] if views else []
        coloured = sum(1 for e in root.find_all(lambda e: e.tag == "b" and e.parent is not None
                                                 and "lab-rf-inputs" in e.parent.classes) if "u" not in e.classes)
        twins = len(output.find_all(lambda e: e.classes & {"jupyter-widgets", "lm-Widget"})) if output else 0
        before, after = root.attrs.get("data-check-before"), root.attrs.get("data-check-after")
        drawn = root.attrs.get("data-ready") == "1" and coloured == sum(f >= 0 for f in first) > 1
        moved = before is not None and after is not None and before != after
        good += bool(output is not None and drawn and moved and not twins)
        notes.append(f"{sum(f >= 0 for f in first)} inputs reached, {coloured} coloured, "
                     f"{root.attrs.get('data-check-moved', 'no control moved')}: "
                     f"{'picture changed' if moved else 'picture unchanged'}"
                     + ("" if output is not None else ", not in a cell output") + (f", {twins} widget(s) beside it"
                                                                                  if twins else ""))
    return bool(roots) and good == len(roots), f"{len(roots)} explorer(s): {'; '.join(notes) or 'none'}"


CHECKS = {"title": check_title, "chapter-map": check_chapter_map, "banner": check_banner, "plot": check_plot,
          "widget": check_widget, "widgets-if-any": check_widgets_if_any, "exercise": check_exercise,
          "colab": check_colab, "no-raw-tex": check_no_raw_tex, "math": check_math,
          "student-edition": check_student_edition, "calculator": check_calculator,
          "calculators-if-any": check_calculators_if_any, "receptive-field": check_receptive_field}
NEEDS_URL = {"student-edition"}  # checks that also fetch from the page's site
# The receptive-field check's driver: after the page's scripts ran, move each explorer's controls in turn (layers,
# window, then the mask) until its picture (the view's data-first) changes, and note before/after on the explorer.
RF_DRIVER = """<script>(function () {
  function run() {
    document.querySelectorAll(".lab-rf-explorer[data-ready]").forEach(function (root) {
      function first() { var v = root.querySelector(".lab-rf-view"); return v ? v.getAttribute("data-first") : ""; }
      var before = first(), moves = [["n_layers", "1", "2"], ["window", "2", "3"], ["kind", "sliding", "dilated"]];
      var undo = [];
      function set(e, value) {
        e.value = value;
        e.dispatchEvent(new Event(e.tagName === "SELECT" ? "change" : "input"));
      }
      for (var k = 0; k < moves.length && first() === before; k++) {
        var e = root.querySelector("[name='" + moves[k][0] + "']"), old = e.value;
        undo.unshift([e, old]);
        set(e, old === moves[k][1] ? moves[k][2] : moves[k][1]);
        root.setAttribute("data-check-moved", moves[k][0] + " " + old + " -> " + e.value);
      }
      root.setAttribute("data-check-before", before);
      root.setAttribute("data-check-after", first());
      undo.forEach(function (u) { set(u[0], u[1]); });  // back as the page was, for the screenshot
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run); else run();
})();</script>"""
DRIVERS = {"receptive-field": RF_DRIVER}  # check -> HTML put before </body> as the server sends the page


# --- serving and browsing ------------------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    missing: list[str] = []
    inject: dict[str, str] = {}  # URL path -> HTML to put before the page's last </body> (the checks' DRIVERS)

    def do_GET(self):
        extra = self.inject.get(urlsplit(self.path).path)
        path = Path(self.translate_path(self.path))
        if extra is None or not path.is_file():
            return super().do_GET()
        head, end, tail = path.read_bytes().rpartition(b"</body>")
        body = head + extra.encode() + end + tail if end else tail + extra.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the check's output readable
        pass

    def send_error(self, code, message=None, explain=None):
        if code == 404 and not self.path.endswith("favicon.ico"):
            QuietHandler.missing.append(self.path)
        super().send_error(code, message, explain)


def find_chromium(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser",
                      "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    sys.exit("browser_check: no Chromium found; install it (Debian/Ubuntu: apt-get install -y chromium) "
             "or pass --chromium PATH")


def run_chromium(chromium: str, url: str, extra: list[str], budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="browser_check_") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               "--enable-logging=stderr", "--v=0", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def console_errors(stderr: str) -> list[str]:
    return [line.split("CONSOLE", 1)[1][:200] for line in stderr.splitlines() if "CONSOLE" in line and "ERROR" in line]


def parse_pages(specs: list[str] | None, site: Path) -> dict[str, list[str]]:
    """Pages to open and their checks: ``specs`` (``PAGE[=CHECK,...]``), or by default the landing page, the
    first-look page and every other notebook page of the built site (banner, no broken widgets)."""
    if not specs:
        found = sorted(p.relative_to(site).as_posix() for p in (site / "chapters").rglob("*.html"))
        return DEFAULT_PAGES | {page: OTHER_PAGE_CHECKS for page in found if page not in DEFAULT_PAGES}
    pages = {}
    for spec in specs:
        page, _, names = spec.partition("=")
        checks = names.split(",") if names else DEFAULT_PAGES.get(page, OTHER_PAGE_CHECKS)
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            sys.exit(f"browser_check: unknown check(s) {unknown} for {page}; known: {sorted(CHECKS)}")
        pages[page] = checks
    return pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="_build/html", help="built site (default: _build/html)")
    parser.add_argument("--pages", nargs="+", metavar="PAGE[=CHECK,...]",
                        help=f"pages relative to the site; checks: {', '.join(CHECKS)} (default: {DEFAULT_PAGES})")
    parser.add_argument("--screenshots", default="_build/screenshots", help="where to save PNGs")
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time for scripts to run")
    parser.add_argument("--height", type=int, default=12000, help="screenshot height in pixels (whole page)")
    args = parser.parse_args()

    site, shots = Path(args.site).resolve(), Path(args.screenshots)
    pages = parse_pages(args.pages, site)
    if not (site / "index.html").exists() and not any((site / p).exists() for p in pages):
        sys.exit(f"browser_check: no built site in {site}; run `make book` first")
    chromium = find_chromium(args.chromium)
    shots.mkdir(parents=True, exist_ok=True)

    QuietHandler.inject = {"/" + page: "".join(DRIVERS[c] for c in checks if c in DRIVERS)
                           for page, checks in pages.items() if any(c in DRIVERS for c in checks)}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"browser_check: {chromium}, serving {site} at {base} (all other hosts unreachable)")

    failures = []
    try:
        for page, checks in pages.items():
            if not (site / page).exists():
                failures.append(f"{page}: not in the built site")
                continue
            QuietHandler.missing = []
            dump = run_chromium(chromium, base + page, ["--dump-dom"], args.budget_ms)
            dom = parse(dump.stdout)
            print(f"\n{page}")
            for name in checks:
                passed, found = CHECKS[name](dom, base + page) if name in NEEDS_URL else CHECKS[name](dom)
                print(f"  [{'ok' if passed else 'MISSING'}] {name}: {found}")
                if not passed:
                    failures.append(f"{page}: {name} ({found})")
            if QuietHandler.missing:
                failures.append(f"{page}: local files not found: {sorted(set(QuietHandler.missing))}")
            for error in console_errors(dump.stderr):
                print(f"  console error: {error}")
            png = shots / f"{Path(page).stem}.png"
            run_chromium(chromium, base + page, [f"--screenshot={png.resolve()}", f"--window-size=1280,{args.height}"],
                         args.budget_ms)
            print(f"  screenshot: {png}" if png.exists() else "  screenshot: FAILED")
            if not png.exists():
                failures.append(f"{page}: no screenshot written")
    finally:
        server.shutdown()

    if failures:
        print("\nbrowser_check FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nbrowser_check passed: {len(pages)} page(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
