"""Widgets that still answer on the book's static pages: one output, two views.

A widget's Python callbacks need a kernel, which the built site does not have. A :class:`DualView` output carries
both views: the ipywidgets view (what Jupyter and Colab show) and a self-contained HTML/JS stand-in marked with
``STATIC_VIEW_ATTR``, which ``lab_utils.maintainers.book`` shows on the site instead of the dead widget. Used by the
memory calculator (``widgets.memory``) and the bit-layout explorer (``widgets.formats``).
"""

from __future__ import annotations

# Marks the HTML stand-in; lab_utils.maintainers.book keeps its own copy of the string (a test keeps them equal),
# because the book extension must not import the widgets.
STATIC_VIEW_ATTR = "data-lab-static-view"


class DualView:
    """Base class: subclasses set ``self.widget`` (an ipywidgets container), ``self.html`` (the stand-in, whose root
    element carries ``STATIC_VIEW_ATTR``) and the class attribute ``plain`` (the text/plain line).

    A front end shows one mime type per output: JupyterLab and Notebook rank the widget above HTML (one that
    preferred HTML would show the stand-in, which answers too).
    """

    plain = "Interactive widget (live with a kernel, or on the book's page)"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = self.widget._repr_mimebundle_()
        bundle["text/html"] = self.html
        bundle["text/plain"] = self.plain
        return bundle
