"""Student editions of the notebooks: the exercises left to fill in, the solutions taken out.

``python -m lab_utils.maintainers.student [NOTEBOOK ...] [--out DIR]`` writes, for each notebook (default: every
one under ``chapters/``), a copy under ``DIR`` (default ``_build/student/``) at the same relative path, without
the code cells tagged ``solution``, the prose of each ``{solution-start}``...``{solution-end}`` block (the
sphinx-exercise gated syntax), outputs, execution counts, widget state and provenance stamp, and with a first
markdown cell saying what the file is. The book offers the same files as downloads (``lab_utils.maintainers.book``).
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import nbformat

from lab_utils.maintainers.provenance import BOOK_ROOT, STAMP_KEY

SOLUTION_TAG = "solution"
STUDENT_KEY = "lab_student_edition"  # notebook metadata marking a student edition
# A MyST directive's opening line and everything up to its closing fence (same fence, alone on a line):
# "```{solution-start} ex-x\n:class: dropdown\n```". Colon fences (":::") work too (colon_fence is enabled).
_DIRECTIVE = r"^(?P<fence>`{{3,}}|:{{3,}})\{{{name}\}}[^\n]*\n(?:.*?\n)??(?P=fence)[ \t]*(?:\n|\Z)"
SOLUTION_START = re.compile(_DIRECTIVE.format(name="solution-start"), re.M | re.S)
SOLUTION_END = re.compile(_DIRECTIVE.format(name="solution-end"), re.M | re.S)
SOLUTION_BLOCK = re.compile(_DIRECTIVE.format(name="solution"), re.M | re.S)  # the ungated {solution} directive
NOTE = ("**Student edition.** The exercises are yours to fill in: in each exercise cell, replace "
        "`raise NotImplementedError` with your code and run the cell; its check says what to fix. "
        "The solutions are not in this file{where}.")


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _strip_solution_prose(text: str, in_solution: bool) -> tuple[str, bool]:
    """Remove the parts of one markdown cell that lie inside solution blocks.

    Args:
        text: the cell's source.
        in_solution: whether a ``{solution-start}`` of an earlier cell is still open.

    Returns:
        The kept text and whether a solution block is still open at the end of the cell.
    """
    kept, pos = [], 0
    while True:
        if in_solution:
            end = SOLUTION_END.search(text, pos)
            if end is None:
                return "".join(kept), True  # the block goes on in a later cell
            pos, in_solution = end.end(), False
        else:
            start = SOLUTION_START.search(text, pos)
            if start is None:
                kept.append(text[pos:])
                break
            kept.append(text[pos:start.start()])
            pos, in_solution = start.end(), True
    text = SOLUTION_BLOCK.sub("", "".join(kept))
    if SOLUTION_END.search(text):
        raise ValueError("a {solution-end} directive has no {solution-start} before it; check the exercise layout")
    return text, False


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def student_edition(nb: dict, solutions_url: str | None = None) -> nbformat.NotebookNode:
    """The student edition of ``nb`` (a new notebook; ``nb`` is left unchanged).

    Args:
        nb: a notebook (``nbformat`` node or its JSON as a dict) following the exercise layout: exercise cells
            tagged ``exercise``, solution code cells tagged ``solution``, solution prose between the gated
            ``{solution-start}`` and ``{solution-end}`` directives.
        solutions_url: where the full notebook (with solutions) lives, linked from the first cell.

    Returns:
        The notebook without solution cells and solution prose (the text around the directives in the same
        cell is kept), without outputs, execution counts, widget state and provenance stamp, and with a first
        markdown cell saying it is the student edition.

    Raises:
        ValueError: a ``{solution-start}`` is never closed, or a ``{solution-end}`` was never opened.
    """
    nb = nbformat.from_dict(copy.deepcopy(dict(nb)))
    cells, in_solution = [], False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "markdown":
            text, in_solution_after = _strip_solution_prose(_source(cell), in_solution)
            in_solution = in_solution_after
            if SOLUTION_TAG in tags or not text.strip():
                continue
            cell.source = _tidy(text)
        elif in_solution or SOLUTION_TAG in tags:  # code or raw cell of a solution
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.get("metadata", {}).pop("execution", None)  # nbclient's timings
        cells.append(cell)
    if in_solution:
        raise ValueError("a {solution-start} directive is never closed by {solution-end}; check the exercise layout")
    where = f": they are in the [full chapter]({solutions_url})" if solutions_url else " (see the course site)"
    note = nbformat.v4.new_markdown_cell(NOTE.format(where=where), id="student-edition")
    nb.cells = [note, *cells]
    for key in (STAMP_KEY, "widgets"):
        nb.metadata.pop(key, None)
    nb.metadata[STUDENT_KEY] = True
    return nb


def repository_url(root: Path = BOOK_ROOT) -> str | None:
    """``<repository url>/blob/<branch>/`` from ``_config.yml``, or None when the book names no repository."""
    import yaml

    config = root / "_config.yml"
    if not config.is_file():
        return None
    repo = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("repository") or {}
    return f"{repo['url'].rstrip('/')}/blob/{repo.get('branch', 'main')}/" if repo.get("url") else None


def write_student_edition(source: Path, target: Path, solutions_url: str | None = None) -> Path:
    """Read notebook ``source``, write its student edition to ``target`` (folders created) and return ``target``."""
    nb = student_edition(nbformat.read(source, as_version=4), solutions_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> None:
    from lab_utils.maintainers.execute import all_notebooks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook under chapters/")
    parser.add_argument("--out", type=Path, default=BOOK_ROOT / "_build" / "student",
                        help="output folder (default: _build/student/); paths relative to the book are kept")
    args = parser.parse_args(argv)
    repo = repository_url()
    for path in args.notebooks or all_notebooks():
        path = path.resolve()
        rel = path.relative_to(BOOK_ROOT) if path.is_relative_to(BOOK_ROOT) else Path(path.name)
        url = repo + rel.as_posix() if repo and rel.parts[0] == "chapters" else None
        print(f"{rel} -> {write_student_edition(path, args.out / rel, url)}")


if __name__ == "__main__":
    main()
