"""Student editions (lab_utils.maintainers.student): solutions out, exercises and the prose around them kept,
and the edition still runs up to its first exercise, whose check reports "not written yet"."""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from lab_utils.maintainers import execute, student
from lab_utils.maintainers.provenance import STAMP_KEY

# A check that follows the contract of lab_utils.checks: prints "✗ ... not written yet" for the stub.
CHECK = '''\
def check_double(fn):
    try:
        got = fn(2)
    except NotImplementedError:
        print("✗ my_double is not written yet: replace `raise NotImplementedError` with your code")
        return False
    assert got == 4, f"double(2) returned {got}; expected 4"
    print("✓ double is correct")
    return True'''


def _code(source, tags=(), output=None):
    cell = nbformat.v4.new_code_cell(source, execution_count=1 if output else None)
    if tags:
        cell.metadata["tags"] = list(tags)
    if output:
        cell.outputs = [nbformat.v4.new_output("stream", text=output)]
    return cell


def synthetic_notebook():
    """Two exercises in the course layout: one with a checked stub, one open question with prose only."""
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        md("# Doubling\n\nIntro prose."),
        _code(CHECK, output="setup done"),
        md("```{exercise-start}\n:label: ex-double\n```\n\nWrite `my_double(x)` that returns twice `x`."),
        _code("def my_double(x):\n    raise NotImplementedError  # your code here\n\ncheck_double(my_double)",
              tags=["exercise"]),
        md("```{exercise-end}\n```\n\n```{solution-start} ex-double\n:class: dropdown\n```\nSECRET_PROSE_1: twice."),
        _code("def solution_double(x):\n    return 2 * x  # SECRET_CODE\n\ncheck_double(solution_double)",
              tags=["solution"], output="✓ double is correct"),
        md("```{solution-end}\n```\n\n## Next section\n\nKEPT_AFTER_END prose."),
        md("```{exercise-start}\n:label: ex-open\n```\n\nAn open question."),
        md("```{exercise-end}\n```\n\n```{solution-start} ex-open\n:class: dropdown\n```\nSECRET_PROSE_2"),
        md("SECRET_PROSE_3, a second cell of the same solution."),
        _code("print('SECRET_UNTAGGED')", output="SECRET_UNTAGGED"),  # inside the block, even untagged
        md("```{solution-end}\n```"),
        md("Before.\n\n:::{solution-start} ex-open\n:class: dropdown\n:::\nSECRET_PROSE_4\n:::{solution-end}\n:::\n"
           "After."),
        _code("print('after')", output="after"),
    ]
    nb.metadata[STAMP_KEY] = {"code_sha256": "0" * 64}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def _text(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_synthetic_student_edition():
    nb = synthetic_notebook()
    original = json.dumps(nb, sort_keys=True)
    assert "SECRET" in _text(nb)  # non-vacuity: the input holds what must go
    out = student.student_edition(nb)
    assert json.dumps(nb, sort_keys=True) == original, "the input notebook must be left unchanged"
    nbformat.validate(out)

    text = _text(out)
    assert "SECRET" not in text and "solution-start" not in text and "solution-end" not in text
    for kept in ("Intro prose", "Write `my_double(x)`", "{exercise-end}", "## Next section", "KEPT_AFTER_END",
                 "An open question", "Before.", "After.", "print('after')"):
        assert kept in text, f"{kept!r} must stay in the student edition"
    assert not any(student.SOLUTION_TAG in _tags(c) for c in out.cells)
    [stub] = [c for c in out.cells if "exercise" in _tags(c)]
    assert "raise NotImplementedError" in stub.source and "check_double(my_double)" in stub.source
    assert out.cells[0].cell_type == "markdown" and "Student edition" in out.cells[0].source
    assert [c.source for c in out.cells[1:3]] == [nb.cells[0].source, nb.cells[1].source]
    assert text.count("{exercise-end}") == 2 and "\n\n\n" not in text

    code = [c for c in out.cells if c.cell_type == "code"]
    assert len(code) == 3 and all(c.outputs == [] and c.execution_count is None for c in code)
    assert STAMP_KEY not in out.metadata and "widgets" not in out.metadata
    assert "full chapter](https://x.org/a.html)" in student.student_edition(nb, "https://x.org/a.html").cells[0].source


@pytest.mark.parametrize("cells, match", [
    (["```{solution-start} ex\n:class: dropdown\n```\nnever closed"], "never closed"),
    (["text", "```{solution-end}\n```"], "no {solution-start}"),
])
def test_broken_layout_is_reported(cells, match):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(c) for c in cells])
    with pytest.raises(ValueError, match=match):
        student.student_edition(nb)


def run_until_first_exercise(nb, cwd, monkeypatch):
    """Execute ``nb`` cell by cell (CPU profile) up to and including its first exercise cell; return that cell."""
    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "exercise" in _tags(c)), None)
    assert first is not None, "no code cell tagged 'exercise': the notebook does not follow the exercise layout"
    monkeypatch.setenv("LAB_PROFILE", "cpu")  # the kernel inherits the environment
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells[:first + 1]):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)  # raises CellExecutionError on an error
    return nb.cells[first]


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def test_synthetic_student_edition_runs_to_first_exercise(tmp_path, monkeypatch):
    path = student.write_student_edition(_write(tmp_path / "full.ipynb", synthetic_notebook()),
                                         tmp_path / "out" / "student.ipynb")
    nb = nbformat.read(path, as_version=4)
    cell = run_until_first_exercise(nb, tmp_path, monkeypatch)
    assert "not written yet" in _stream_text(cell)


def _write(path, nb):
    nbformat.write(nb, path)
    return path


def _solution_layout(nb) -> tuple[list[int], list[int]]:
    """Indices of code cells inside solution blocks, and of code cells tagged "solution"."""
    inside, tagged, in_solution = [], [], False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            _, in_solution = student._strip_solution_prose(cell.source, in_solution)
        elif cell.cell_type == "code":
            if in_solution:
                inside.append(i)
            if student.SOLUTION_TAG in _tags(cell):
                tagged.append(i)
    return inside, tagged


NOTEBOOKS = execute.all_notebooks()
IDS = [str(p.relative_to(execute.BOOK_ROOT)) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_real_notebook_student_edition(path):
    nb = nbformat.read(path, as_version=4)
    inside, tagged = _solution_layout(nb)
    assert tagged, f"{path.name}: no code cell tagged 'solution' (exercise layout in the README)"
    assert inside == tagged, f"{path.name}: code cells in solution blocks {inside} != cells tagged 'solution' {tagged}"
    exercises = [c.source for c in nb.cells if c.cell_type == "code" and "exercise" in _tags(c)]
    assert exercises and all("raise NotImplementedError" in s for s in exercises)

    out = student.student_edition(nb)
    nbformat.validate(out)
    text = _text(out)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert text.count("{exercise-start}") == _text(nb).count("{exercise-start}")
    assert [c.source for c in out.cells if "exercise" in _tags(c)] == exercises
    kept = [c.source for c in out.cells if c.cell_type == "code"]
    assert kept == [c.source for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in tagged]
    assert all(c.outputs == [] and c.execution_count is None for c in out.cells if c.cell_type == "code")
    assert STAMP_KEY not in out.metadata and "widgets" not in out.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_real_student_edition_runs_to_first_exercise(path, monkeypatch):
    nb = student.student_edition(nbformat.read(path, as_version=4))
    cell = run_until_first_exercise(nb, path.parent, monkeypatch)
    assert "not written yet" in _stream_text(cell), f"{path.name}: the first exercise's check did not report the stub"
