"""Every notebook starts the same way: the Colab install cell (so the rocket button works on every page), then
imports and ``lab_utils.setup``. The install cell cannot import anything from the course, so its text is repeated
in each notebook; this test keeps the copies identical."""

import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.relative_to(ROOT) for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
COLAB_CELL = """\
# Colab only: install the course package and its model/data packages (about a minute).
import sys

if "google.colab" in sys.modules:
    %pip install -q "lab_utils @ git+https://github.com/llm-course/llm-finetuning-optimisation"
    !python -m lab_utils.assets --install"""


def code_cells(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_first_cell_installs_the_course_on_colab_only(path):
    cells = code_cells(path)
    assert cells[0] == COLAB_CELL, f"{path}: the first code cell must be the Colab cell of tests/test_notebooks.py"
    assert "lab_utils.setup(" in cells[1], f"{path}: the second code cell must call lab_utils.setup()"


def test_readme_shows_the_same_colab_cell():
    readme = (ROOT / "README.md").read_text()
    assert textwrap.indent(COLAB_CELL, "  ") in readme  # inside a list item, hence indented


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_every_cell_that_shows_a_figure_has_one_in_its_outputs(path):
    # Committed outputs are what the site shows. A kernel that inherits MPLBACKEND=Agg (the Makefile exports it for
    # scripts) draws nothing on plt.show() and loses every figure while keeping every number.
    nb = nbformat.read(ROOT / path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "plt.show()" not in cell.source:
            continue
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{path}, cell {i}: calls plt.show() but its committed outputs hold no figure; re-execute it"
