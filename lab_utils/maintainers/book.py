"""Sphinx extension for the course book: provenance banners and offline widgets.

Every notebook page whose ``metadata["lab_provenance"]`` holds a stamp (see ``lab_utils.maintainers.provenance``) gets a
one-line banner at the top saying which run produced its outputs; pages without a stamp get none. Pages with
ipywidgets load the manager vendored in ``book_static/widgets`` and never a CDN. Enabled in ``_config.yml``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

from lab_utils.maintainers.provenance import STAMP_KEY, format_banner

WIDGET_MANAGER = "_static/widgets/embed-amd.js"  # set by nb_ipywidgets_js in _config.yml
CSS_FILE = "lab_provenance.css"  # in book_static/, the book's html_static_path


def read_stamp(source: Path) -> dict | None:
    """The provenance stamp of notebook ``source``, or None (not a notebook, or never stamped)."""
    if source.suffix != ".ipynb" or not source.is_file():
        return None
    stamp = json.loads(source.read_text(encoding="utf-8")).get("metadata", {}).get(STAMP_KEY)
    return stamp if isinstance(stamp, dict) else None


def add_banner(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Prepend the banner to the page body of a stamped notebook (``html-page-context`` handler)."""
    if doctree is None or "body" not in context:
        return
    stamp = read_stamp(Path(app.env.doc2path(pagename)))
    if stamp is not None:
        banner = html.escape(format_banner(stamp))
        context["body"] = f'<div class="lab-provenance" role="note">{banner}</div>\n' + context["body"]


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


def setup(app: Sphinx) -> dict:
    """Register the handlers (after myst-nb's, which adds the widget scripts) and the banner's CSS."""
    app.connect("html-page-context", add_banner)
    app.connect("html-page-context", localise_widgets, priority=600)
    app.add_css_file(CSS_FILE)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
