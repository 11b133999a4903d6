"""Numbers quoted in the prose come from the outputs: ``glue`` stores a value for ``{glue:text}`` in the book.

The same record as ``myst_nb.glue`` (the book's own), written out so that a notebook needs no Sphinx on Colab:
the value's display data under the ``application/papermill.record/`` prefix, with ``metadata["scrapbook"]``
naming it. In the prose, ``{glue:text}`name:.1f` `` formats a number; the value is hidden from the cell output.
"""

from __future__ import annotations

from typing import Any

GLUE_PREFIX = "application/papermill.record/"  # myst_nb.ext.glue.GLUE_PREFIX


def glue(name: str, value: Any, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the book's ``{glue:}`` roles.

    Args:
        name: unique within the notebook, e.g. ``"val_loss_mlm"``.
        value: any object; numbers are what the prose formats (``{glue:text}`\\`name:.2f\\```). NumPy scalars are
            stored as the Python number they hold.
        display: also show the value in the cell output (default: hidden, the prose shows it).

    Raises:
        ValueError: if ``name`` is empty or contains whitespace (the role could not refer to it).
    """
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"glue name must be a non-empty string without spaces, got {name!r}")
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.float64(0.9) displays as "np.float64(0.9)" (NumPy 2), which {glue:text} cannot format
    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
