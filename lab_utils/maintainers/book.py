"""Sphinx extension for the course book: provenance banners, student editions and offline widgets.

Every notebook page whose ``metadata["lab_provenance"]`` holds a stamp (see ``lab_utils.maintainers.provenance``) gets a
one-line banner at the top saying which run produced its outputs; pages without a stamp get none. Every notebook
page links its student edition (``lab_utils.maintainers.student``), written to ``_student/<page>.ipynb`` when the
build finishes. Pages with ipywidgets load the manager vendored in ``book_static/widgets`` and never a CDN. An output
that carries both a widget and a static HTML stand-in marked with ``STATIC_VIEW_ATTR`` (``lab_utils.widgets.static``:
the memory calculator, the format explorer) shows the stand-in: on the page no kernel runs the widget's Python
callbacks. Enabled in ``_config.yml``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

from lab_utils.maintainers.provenance import STAMP_KEY, format_banner
from lab_utils.maintainers.student import repository_url, write_student_edition

WIDGET_MANAGER = "_static/widgets/embed-amd.js"  # set by nb_ipywidgets_js in _config.yml
CSS_FILE = "lab_provenance.css"  # in book_static/, the book's html_static_path
STUDENT_DIR = "_student"  # in the HTML output: _student/<docname>.ipynb
STUDENT_LINK_TEXT = "Download the student edition (.ipynb)"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
# The attribute lab_utils.widgets.static puts on the HTML view that stands in for its widget (same string, tested).
STATIC_VIEW_ATTR = "data-lab-static-view"


def read_stamp(source: Path) -> dict | None:
    """The provenance stamp of notebook ``source``, or None (not a notebook, or never stamped)."""
    if source.suffix != ".ipynb" or not source.is_file():
        return None
    stamp = json.loads(source.read_text(encoding="utf-8")).get("metadata", {}).get(STAMP_KEY)
    return stamp if isinstance(stamp, dict) else None


def _is_notebook(app: Sphinx, docname: str) -> bool:
    return Path(app.env.doc2path(docname)).suffix == ".ipynb"


def add_banner(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Prepend the banner (stamped notebooks) and the student-edition link (every notebook) to the page body.

    An ``html-page-context`` handler; the link points at the file :func:`write_student_editions` writes.
    """
    if doctree is None or "body" not in context or not _is_notebook(app, pagename):
        return
    href = html.escape(context["pathto"](f"{STUDENT_DIR}/{pagename}.ipynb", resource=True))
    download = html.escape(Path(pagename).name + "_student.ipynb")
    head = (f'<div class="lab-student-edition"><a class="reference download" href="{href}" '
            f'download="{download}">{STUDENT_LINK_TEXT}</a>: the exercises without their solutions</div>\n')
    stamp = read_stamp(Path(app.env.doc2path(pagename)))
    if stamp is not None:
        head = f'<div class="lab-provenance" role="note">{html.escape(format_banner(stamp))}</div>\n' + head
    context["body"] = head + context["body"]


def write_student_editions(app: Sphinx, exception: Exception | None) -> None:
    """Write each notebook page's student edition to ``<outdir>/_student/<docname>.ipynb`` (``build-finished``).

    The first cell links the full chapter: the page on ``html_baseurl`` when the book sets one, else the notebook
    in the repository named in ``_config.yml``.
    """
    if exception is not None or app.builder.format != "html":
        return
    baseurl = (app.config.html_baseurl or "").rstrip("/")
    repo = repository_url(Path(app.srcdir))
    for docname in sorted(d for d in app.env.found_docs if _is_notebook(app, d)):
        source = Path(app.env.doc2path(docname))
        if baseurl:
            url = f"{baseurl}/{docname}.html"
        else:
            url = repo + source.relative_to(app.srcdir).as_posix() if repo else None
        write_student_edition(source, Path(app.outdir) / STUDENT_DIR / f"{docname}.ipynb", url)


def localise_widgets(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """On pages with widgets, make the manager fetch fonts and unknown widget modules from this site.

    ``embed-amd.js`` bundles the core widgets (base, controls, output). For anything else it asks RequireJS for
    ``<data-jupyter-widgets-cdn><package>@<version>/dist/index.js`` (default: jsDelivr); here that prefix is
    ``_static/widgets/npm/``, relative to the page. The tag must precede the manager's: it reads the attribute
    from the script tags already parsed when it runs, hence priority 499 (< 500, the manager's).
    """
    scripts = context.get("script_files", [])
    if not any(str(getattr(js, "filename", js)) == WIDGET_MANAGER for js in scripts):
        return
    static = context["pathto"]("_static/widgets", resource=True)
    # Each bundled module's CSS finds its fonts next to the module's URL, which RequireJS derives from the
    # module's name: map every name to this folder. A global `require` set before require.js loads is its config.
    paths = json.dumps({"@jupyter-widgets": static, "@jupyter-widgets/html-manager/dist": static})
    body = (f"var require = {{paths: {paths}}};\n"
            f"window.__jupyter_widgets_assets_path__ = new URL({json.dumps(static + '/')}, document.baseURI).href;")
    app.add_js_file(None, priority=499, body=body, **{"data-jupyter-widgets-cdn": static + "/npm/"})


def prefer_static_views(doctree: nodes.Node) -> int:
    """Drop the widget view of each output whose text/html holds a ``STATIC_VIEW_ATTR`` stand-in; return how many.

    myst-nb keeps every mime type of an output as a ``mime_bundle`` container until its ``SelectMimeType``
    post-transform keeps the first one in the builder's priority list, where a widget view outranks HTML. The
    priority list is global (``nb_mime_priority_overrides``): it cannot prefer HTML for one output only, so this
    removes the widget from the outputs that ask for it, and the selection then keeps their HTML.
    """
    dropped = 0
    for bundle in list(doctree.findall(nodes.container)):
        if bundle.get("nb_element") != "mime_bundle":
            continue
        views = {child.get("mime_type"): child for child in bundle.children}
        static = views.get("text/html")
        if WIDGET_VIEW_MIME in views and static is not None and STATIC_VIEW_ATTR in static.astext():
            bundle.remove(views[WIDGET_VIEW_MIME])
            dropped += 1
    return dropped


class PreferStaticViews(SphinxPostTransform):
    """:func:`prefer_static_views` on every page, before myst-nb's ``SelectMimeType`` (priority 4) picks one."""

    default_priority = 3

    def run(self, **kwargs: Any) -> None:
        prefer_static_views(self.document)


def setup(app: Sphinx) -> dict:
    """Register the handlers (widgets after myst-nb's, which adds the widget scripts), the static-view choice and
    the banner's CSS."""
    app.connect("html-page-context", add_banner)
    app.connect("build-finished", write_student_editions)
    app.connect("html-page-context", localise_widgets, priority=600)
    app.add_post_transform(PreferStaticViews)
    app.add_css_file(CSS_FILE)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
