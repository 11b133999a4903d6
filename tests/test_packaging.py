"""Packaging: one place per version range and per pin, and what they promise holds (imports, Python, floors)."""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from setuptools import find_packages

from lab_utils import assets

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Imported by lab_utils but declared through the package that pins it: the Sphinx extension runs inside
# jupyter-book's Sphinx (and its docutils), whose versions jupyter-book chooses.
PROVIDED_BY = {"sphinx": "jupyter-book", "docutils": "jupyter-book"}


def _requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines if not line.startswith("lab_utils")]  # "lab_utils[test,book]"
    return {canonicalize_name(r.name): r for r in reqs}


DEPENDENCIES = _requirements(PROJECT["dependencies"])
EXTRAS = {name: _requirements(lines) for name, lines in PROJECT["optional-dependencies"].items()}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


LOCK = _pins(ROOT / "requirements-lock.txt")


def test_asset_pins_agree():
    listed = [f"{name}=={version}" for name, version in _pins(ROOT / "requirements-assets.txt").items()]
    assert listed == list(assets.ASSET_PACKAGES)


def test_torch_is_pinned_only_in_the_lock():
    assert re.fullmatch(r"\d+\.\d+\.\d+", LOCK["torch"])
    stated = re.compile(r"torch\s*==\s*\d")  # a torch version written out anywhere else would drift
    files = [ROOT / name for name in ("Makefile", "README.md", ".ci/run", "requirements.txt",
                                      "requirements-assets.txt", "pyproject.toml")]
    files += sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(files) >= 7 and all(f.is_file() for f in files)
    assert [f.name for f in files if stated.search(f.read_text())] == []
    assert "requirements-lock.txt" in (ROOT / "Makefile").read_text()  # where the Makefile reads it


def test_the_lock_satisfies_the_ranges():
    for name, req in {**DEPENDENCIES, **EXTRAS["test"], **EXTRAS["book"]}.items():
        assert name in LOCK, f"{name} is a requirement but not in requirements-lock.txt"
        assert req.specifier.contains(LOCK[name], prereleases=True), f"lock has {name}=={LOCK[name]}, not {req}"


def test_requirements_txt_only_points_to_pyproject():
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ["-e .[dev]"]
    assert EXTRAS["dev"] == {} and set(PROJECT["optional-dependencies"]["dev"]) == {"lab_utils[test,book]"}


def test_requires_python():
    requires = SpecifierSet(PROJECT["requires-python"])
    assert str(requires) == ">=3.11"
    assert sys.version_info[:2] in [(3, 11), (3, 12), (3, 13), (3, 14)]
    assert requires.contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert not requires.contains("3.10")
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert "sys.version_info < (3, 11)" in (ROOT / "Makefile").read_text()  # make's check says the same


def test_build_backend_reads_the_spdx_licence():
    assert isinstance(PROJECT["license"], str)  # an SPDX expression needs setuptools >= 77 (PEP 639)
    backend = _requirements(PYPROJECT["build-system"]["requires"])["setuptools"]
    assert not backend.specifier.contains("76.9") and backend.specifier.contains("77")


def test_every_subpackage_is_packaged():
    on_disk = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lab_utils").rglob("__init__.py"))
    found = sorted(find_packages(ROOT, include=PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]))
    assert found == on_disk
    assert {"lab_utils", "lab_utils.checks", "lab_utils.widgets", "lab_utils.maintainers"} <= set(found)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"lab_utils", "__future__"}


def test_dependencies_cover_what_lab_utils_imports():
    # Every import anywhere in the package (also inside functions), mapped to the distribution providing it.
    # Students' modules need only `dependencies`; maintainers' tools may also use the `book` extra.
    providers = metadata.packages_distributions()
    students, maintainers = set(), set()
    for path in (ROOT / "lab_utils").rglob("*.py"):
        (maintainers if "maintainers" in path.parts else students).update(_imported_modules(path))
    assert {"torch", "transformers", "matplotlib", "ipywidgets", "nbformat"} <= students | maintainers
    for modules, allowed in [(students, DEPENDENCIES), (maintainers, {**DEPENDENCIES, **EXTRAS["book"]})]:
        for module in sorted(modules):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            assert dists, f"{module} is imported but no installed distribution provides it"
            dists = {PROVIDED_BY.get(d, d) for d in dists}
            assert dists & set(allowed), f"lab_utils imports {module} ({dists}), not declared in pyproject.toml"


def test_notebook_lint_settings():
    chapters = tomllib.loads((ROOT / "chapters" / "ruff.toml").read_text())
    assert chapters == {"extend": "../pyproject.toml", "line-length": 88}


def test_floors_are_what_the_code_needs():
    # transformers 5 is the first to convert SmolLM2's GGUF as lab_utils.assets does; the lock must not be older.
    assert DEPENDENCIES["transformers"].specifier.contains("5.0.0")
    assert not DEPENDENCIES["transformers"].specifier.contains("4.57.0")
    assert Version(LOCK["transformers"]) >= Version("5")
