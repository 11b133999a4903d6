import json
from pathlib import Path

import nbformat
import pytest

from lab_utils.maintainers import execute, provenance


def _notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_code_hash_sees_code_not_outputs_or_markdown():
    nb = _notebook("x = 1", "print(x)")
    h = provenance.code_hash(nb)
    nb.cells[0].source = "# another title"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1")]
    assert provenance.code_hash(nb) == h
    nb.cells[2].source = "print(x + 1)"
    assert provenance.code_hash(nb) != h
    assert provenance.code_hash(_notebook("x = 1\nprint(x)")) != provenance.code_hash(_notebook("x = 1", "print(x)"))


def test_execute_stamps_and_detects_staleness(tmp_path):
    path = tmp_path / "tiny.ipynb"
    nbformat.write(_notebook("import lab_utils\nprof = lab_utils.setup(seed=0)", "print(6 * 7)"), path)
    assert provenance.stale_reasons(json.loads(path.read_text()))  # never run: stale

    stamp = execute.execute_notebook(path, timeout=120)
    nb = json.loads(path.read_text())
    assert provenance.stale_reasons(nb) == []
    assert stamp["profile"] in ("cpu", "gpu") and stamp["wall_time_s"] > 0
    assert set(stamp["versions"]) == {"torch", "transformers", "peft", "bitsandbytes"}
    assert len(nb["cells"]) == 3, "the provenance probe cell must not stay in the notebook"
    assert "42" in "".join(nb["cells"][2]["outputs"][0]["text"])
    banner = provenance.format_banner(stamp)
    assert stamp["device"] in banner and "\n" not in banner

    nb["cells"][2]["source"] = "print(6 * 9)"  # edited after the run
    assert any("changed since" in r for r in provenance.stale_reasons(nb))
    nb["cells"][2]["source"] = "print(6 * 7)"
    nb["cells"][2]["execution_count"] = None
    assert any("never executed" in r for r in provenance.stale_reasons(nb))


@pytest.mark.parametrize("path", execute.all_notebooks(), ids=lambda p: str(p.relative_to(execute.BOOK_ROOT)))
def test_committed_notebooks_are_fresh(path: Path):
    nb = json.loads(path.read_text())
    assert provenance.stale_reasons(nb) == [], f"{path}: outputs do not match the code"


def test_the_book_has_notebooks():
    assert len(execute.all_notebooks()) >= 1  # otherwise the freshness test above checks nothing
