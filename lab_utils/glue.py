"""Numbers quoted in the prose come from the outputs: ``glue`` stores a value for ``{glue:text}`` in the book.

The same record as ``myst_nb.glue`` (the book's own), written out so that a notebook needs no Sphinx on Colab:
the value's display data under the ``application/papermill.record/`` prefix, with ``metadata["scrapbook"]``
naming it. In the prose, ``{glue:text}`name:.1f` `` formats a number; the value is hidden from the cell output.
``read_glue`` reads the values back from a saved notebook, so that one page can quote another's results.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
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


def read_glue(path: str | Path) -> dict[str, Any]:
    """Name -> value of everything glued in a saved notebook's outputs whose text is a Python literal.

    Numbers, strings, lists and dicts come back as Python objects; values shown only as a repr (a DataFrame, a
    figure) are left out.

    Raises:
        FileNotFoundError: if there is no notebook at `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    values = {}
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            text = out.get("data", {}).get(GLUE_PREFIX + "text/plain")
            if name and text:
                try:
                    values[name] = ast.literal_eval("".join(text))
                except (ValueError, SyntaxError):
                    pass
    return values
