import json
import shutil
import warnings
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

    library_before = provenance.library_hash()
    stamp = execute.execute_notebook(path, timeout=120)
    nb = json.loads(path.read_text())
    assert provenance.stale_reasons(nb) == []
    assert stamp["profile"] in ("cpu", "gpu") and stamp["wall_time_s"] > 0
    assert set(stamp["versions"]) == {"torch", "transformers", "peft", "bitsandbytes"}
    assert stamp["lock_sha256"] == provenance.lock_hash() and len(stamp["lab_utils_sha256"]) == 64
    if provenance.library_hash() == library_before:  # else lab_utils was edited during the run (shared checkout)
        assert stamp["lab_utils_sha256"] == library_before
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fresh stamp: no drift, so no warning
            [report] = provenance.check_freshness([path])
            assert report.stale == [] and report.drift == []
            assert provenance.warn_drift([report]) == []
    assert len(nb["cells"]) == 3, "the provenance probe cell must not stay in the notebook"
    assert "42" in "".join(nb["cells"][2]["outputs"][0]["text"])
    banner = provenance.format_banner(stamp)
    assert stamp["device"] in banner and "\n" not in banner
    import torch

    assert stamp["gpu_count"] == torch.cuda.device_count()  # the GPUs the run could see
    assert provenance.format_banner({**stamp, "gpu_count": 2}).startswith(f"Outputs from a {stamp['profile']}-profile "
                                                                          f"run on 2 x {stamp['device']}")

    nb["cells"][2]["source"] = "print(6 * 9)"  # edited after the run
    assert any("changed since" in r for r in provenance.stale_reasons(nb))
    nb["cells"][2]["source"] = "print(6 * 7)"
    nb["cells"][2]["execution_count"] = None
    assert any("never executed" in r for r in provenance.stale_reasons(nb))


def test_execute_keeps_figures_when_the_environment_sets_a_script_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as the Makefile exports for every command
    path = tmp_path / "plot.ipynb"
    nbformat.write(_notebook("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"), path)
    execute.execute_notebook(path, timeout=120)
    outputs = json.loads(path.read_text())["cells"][1]["outputs"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure must be in the committed outputs"
    assert execute.os.environ["MPLBACKEND"] == "Agg", "the caller's environment is restored"


def test_library_hash_sees_lab_utils_but_not_maintainers(tmp_path):
    package = tmp_path / "lab_utils"
    shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    h = provenance.library_hash(package)
    assert h == provenance.library_hash(provenance.PACKAGE_DIR), "the hash must depend on content, not location"
    (package / "maintainers" / "book.py").write_text("# a maintainers' edit\n", encoding="utf-8")
    (package / "maintainers" / "new_tool.py").write_text("x = 1\n", encoding="utf-8")
    assert provenance.library_hash(package) == h, "maintainers/ is not student-facing code"
    masks = package / "masks.py"
    masks.write_text(masks.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert provenance.library_hash(package) != h
    masks.write_text((provenance.PACKAGE_DIR / "masks.py").read_text(encoding="utf-8"), encoding="utf-8")
    assert provenance.library_hash(package) == h
    (package / "checks" / "extra.py").write_text("", encoding="utf-8")  # a new (even empty) module counts
    with_extra = provenance.library_hash(package)
    assert with_extra != h
    (package / "checks" / "extra.py").rename(package / "checks" / "other.py")  # same bytes, another path
    assert provenance.library_hash(package) not in (h, with_extra)
    with pytest.raises(FileNotFoundError, match="lab_utils"):
        provenance.library_hash(tmp_path / "missing")


def test_lock_hash(tmp_path):
    lock = tmp_path / "requirements-lock.txt"
    lock.write_text("torch==2.13.0\n")
    h = provenance.lock_hash(lock)
    lock.write_text("torch==2.13.1\n")
    assert provenance.lock_hash(lock) != h
    assert provenance.lock_hash(tmp_path / "none.txt") is None


def _stamped(lib="a" * 64, lock="b" * 64):
    nb = _notebook("print(1)")
    nb.cells[1].execution_count = 1
    nb.metadata[provenance.STAMP_KEY] = {"code_sha256": provenance.code_hash(nb), "lab_utils_sha256": lib,
                                         "lock_sha256": lock}
    return nb


def test_drift_reasons_name_what_changed():
    today = {"lab_utils_sha256": "a" * 64, "lock_sha256": "b" * 64}
    assert provenance.drift_reasons(_stamped(), **today) == []
    assert provenance.drift_reasons(_stamped(lib="c" * 64), **today) == ["lab_utils changed since the run"]
    assert provenance.drift_reasons(_stamped(lock="c" * 64), **today) == ["requirements-lock.txt changed since the run"]
    old = _stamped()
    del old.metadata[provenance.STAMP_KEY]["lab_utils_sha256"]
    assert any("predates" in r for r in provenance.drift_reasons(old, **today))
    assert provenance.stale_reasons(_stamped(lib="c" * 64)) == [], "drift alone must not make a notebook stale"


def test_drift_warning_names_the_notebook(tmp_path):
    lib, lock = provenance.library_hash(), provenance.lock_hash()
    fresh, drifted = tmp_path / "fresh.ipynb", tmp_path / "drifted.ipynb"
    nbformat.write(_stamped(lib=lib, lock=lock), fresh)
    nbformat.write(_stamped(lib="0" * 64, lock=lock), drifted)
    reports = provenance.check_freshness([fresh, drifted])
    assert [r.drift for r in reports] == [[], ["lab_utils changed since the run"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fresh stamps only: no warning
        assert provenance.warn_drift(reports[:1]) == []
    with pytest.warns(provenance.ProvenanceDriftWarning, match="drifted.ipynb: lab_utils changed") as record:
        assert [r.path for r in provenance.warn_drift(reports)] == [drifted]
    assert len(record) == 1 and "fresh.ipynb" not in str(record[0].message)


NOTEBOOKS = execute.all_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(execute.BOOK_ROOT)))
def test_committed_notebooks_are_fresh(path: Path):
    nb = json.loads(path.read_text())
    assert provenance.stale_reasons(nb) == [], f"{path}: outputs do not match the code"


def test_committed_notebooks_library_drift():
    """Warns, never fails: CI runs the CPU profile and cannot redo the committed GPU outputs (see README)."""
    reports = provenance.check_freshness(NOTEBOOKS)
    assert len(reports) == len(NOTEBOOKS) >= 1
    provenance.warn_drift(reports)  # shown in pytest's warnings summary


def test_the_book_has_notebooks():
    assert len(execute.all_notebooks()) >= 1  # otherwise the freshness test above checks nothing
