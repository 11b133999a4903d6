"""lab_utils.glue writes the same display record as myst_nb's glue, which the book's {glue:} roles read."""

import sys

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from myst_nb import glue as myst_glue
from myst_nb.ext.glue import GLUE_PREFIX as MYST_GLUE_PREFIX
from traitlets.config import Config

from lab_utils.glue import GLUE_PREFIX, glue, read_glue


class Rich:
    """An object with several representations, so the bundle holds more than text/plain."""

    def _repr_html_(self):
        return "<b>rich</b>"

    def _repr_markdown_(self):
        return "**rich**"

    def __repr__(self):
        return "Rich()"


@pytest.fixture
def published(monkeypatch, tmp_path):
    """Every display record IPython publishes, as (data, metadata), inside a real InteractiveShell."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # the shell's profile folder, not the user's
    config = Config()
    config.HistoryManager.enabled = False  # no sqlite history file
    hooks = sys.displayhook, sys.excepthook
    shell = InteractiveShell.instance(config=config)
    records = []
    monkeypatch.setattr(shell.display_pub, "publish",
                        lambda data, metadata=None, **kwargs: records.append((data, metadata)))
    yield records
    InteractiveShell.clear_instance()
    sys.displayhook, sys.excepthook = hooks  # the shell installed its own


VALUES = [0.123456, 42, "a string", Rich(), pd.DataFrame({"loss": [1.5, 0.25]}, index=["mlm", "clm"])]


@pytest.mark.parametrize("display", [False, True])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_same_record_as_myst_nb(published, value, display):
    myst_glue("val_loss", value, display=display)
    glue("val_loss", value, display=display)
    assert len(published) == 2, "each glue must publish exactly one display record"
    (theirs, their_meta), (ours, our_meta) = published
    assert ours == theirs and our_meta == their_meta
    prefix = "" if display else GLUE_PREFIX
    assert prefix + "text/plain" in ours  # non-vacuity: a real bundle, prefixed when hidden
    assert our_meta["scrapbook"] == {"name": "val_loss", "mime_prefix": prefix}
    if isinstance(value, Rich | pd.DataFrame):
        assert prefix + "text/html" in ours


def test_defaults_hide_the_value(published):
    glue("x", 1.0)  # the prose shows the number; the cell output stays empty
    [(data, metadata)] = published
    assert GLUE_PREFIX == MYST_GLUE_PREFIX
    assert all(k.startswith(GLUE_PREFIX) for k in data) and metadata["scrapbook"]["mime_prefix"] == GLUE_PREFIX


@pytest.mark.parametrize("name", ["", "two words", "tab\tname", "line\nbreak", None, 3])
def test_bad_names_are_rejected(published, name):
    with pytest.raises(ValueError, match="glue name"):
        glue(name, 1.0)
    assert published == [], "nothing may be published under a name the role cannot refer to"


@pytest.mark.parametrize("value", [np.float64(0.8870510396975425), np.float32(0.5), np.int64(7), np.bool_(True)],
                         ids=lambda v: type(v).__name__)
def test_numpy_scalars_are_glued_as_python_numbers(published, value):
    # NumPy 2 shows np.float64(0.887) as "np.float64(0.887)"; {glue:text}`name:.1%` could not format that text.
    glue("acc", value)
    [(data, _)] = published
    text = data[GLUE_PREFIX + "text/plain"]
    assert text == repr(value.item()) and "np." not in text
    if not isinstance(value, np.bool_):
        assert float(text) == pytest.approx(float(value))


def test_read_glue_gets_back_what_a_notebook_glued(published, tmp_path):
    import json

    for name, value in [("acc", 0.914), ("n", 2116), ("label", "full fine-tuning"), ("table", Rich())]:
        glue(name, value)
    outputs = [{"output_type": "display_data", "data": data, "metadata": meta} for data, meta in published]
    path = tmp_path / "page.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "x"},
                                          {"cell_type": "code", "source": "", "outputs": outputs}]}))
    assert read_glue(path) == {"acc": 0.914, "n": 2116, "label": "full fine-tuning"}  # Rich() is only a repr
    with pytest.raises(FileNotFoundError, match="no notebook"):
        read_glue(tmp_path / "missing.ipynb")


def test_read_glue_on_a_committed_page():
    from pathlib import Path

    values = read_glue(Path(__file__).parents[1] / "chapters/03_peft/comparison.ipynb")
    assert 0.5 < values["ft_test"] <= 1 and values["n_test"] > 100  # the page the in-context page quotes
