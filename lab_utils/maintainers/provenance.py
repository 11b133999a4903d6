"""Provenance stamps: which run produced a notebook's committed outputs.

``lab_utils.maintainers.execute`` writes a stamp into ``metadata["lab_provenance"]`` of every notebook it runs: profile,
device, versions, date, wall time, peak GPU memory, a hash of the code cells, and hashes of the library
(``lab_utils`` without ``maintainers/``) and of ``requirements-lock.txt``. Stale outputs (code changed, cells never
run) fail the tests; drift (the library or the lock changed since the run) only warns, because CI runs the CPU
profile and cannot reproduce the committed GPU outputs. The book shows the stamp as a one-line banner.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

STAMP_KEY = "lab_provenance"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lab_utils/
BOOK_ROOT = PACKAGE_DIR.parent
LOCK_FILE = BOOK_ROOT / "requirements-lock.txt"


def code_cells(nb: dict) -> list[dict]:
    """The notebook's non-empty code cells (``nb`` is a notebook as a dict or ``nbformat`` node)."""
    return [c for c in nb["cells"] if c["cell_type"] == "code" and _source(c).strip()]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def code_hash(nb: dict) -> str:
    """sha256 of the code cells' sources (order matters; outputs, markdown and metadata do not)."""
    digest = hashlib.sha256()
    for cell in code_cells(nb):
        digest.update(_source(cell).strip().encode())
        digest.update(b"\x00")  # cell boundary: moving a line between cells changes the hash
    return digest.hexdigest()


def library_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the student-facing library: every ``*.py`` under ``package_dir`` except ``maintainers/``.

    Files are taken in path order and each contributes its path (relative to the package's parent, e.g.
    ``lab_utils/masks.py``) and its bytes, so renaming, adding or removing a module changes the hash too.
    """
    package_dir = Path(package_dir)
    if not package_dir.is_dir():
        raise FileNotFoundError(f"no package folder at {package_dir} (give the path of lab_utils/)")
    files = sorted(p for p in package_dir.rglob("*.py")
                   if p.relative_to(package_dir).parts[0] != "maintainers" and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(package_dir.parent).as_posix().encode())
        digest.update(b"\x00")
        digest.update(path.read_bytes())
        digest.update(b"\x00")
    return digest.hexdigest()


def lock_hash(lock_file: Path = LOCK_FILE) -> str | None:
    """sha256 of ``requirements-lock.txt``, or None where there is none (an install without the repository)."""
    lock_file = Path(lock_file)
    return hashlib.sha256(lock_file.read_bytes()).hexdigest() if lock_file.is_file() else None


def stale_reasons(nb: dict) -> list[str]:
    """Why the notebook's committed outputs cannot be trusted; empty when they can."""
    reasons = []
    stamp = nb.get("metadata", {}).get(STAMP_KEY)
    if stamp is None:
        reasons.append("no provenance stamp: run `make execute`")
    elif stamp.get("code_sha256") != code_hash(nb):
        reasons.append("code cells changed since the stamped run: run `make execute`")
    unrun = [i for i, c in enumerate(code_cells(nb)) if c.get("execution_count") is None]
    if unrun:
        reasons.append(f"{len(unrun)} code cell(s) never executed (code cells {unrun[:5]}...)")
    return reasons


def drift_reasons(nb: dict, *, lab_utils_sha256: str | None = None, lock_sha256: str | None = None) -> list[str]:
    """How the run that produced the outputs differs from the library and lock of today; empty when it does not.

    Args:
        nb: the notebook (dict or ``nbformat`` node).
        lab_utils_sha256: today's :func:`library_hash` (computed when None).
        lock_sha256: today's :func:`lock_hash` (computed when None).

    Returns:
        Human-readable reasons; a notebook without a stamp has none here (:func:`stale_reasons` reports it).
    """
    stamp = nb.get("metadata", {}).get(STAMP_KEY)
    if stamp is None:
        return []
    lab_utils_sha256 = library_hash() if lab_utils_sha256 is None else lab_utils_sha256
    lock_sha256 = lock_hash() if lock_sha256 is None else lock_sha256
    reasons = []
    if "lab_utils_sha256" not in stamp:
        reasons.append("stamp predates library hashing: lab_utils code of the run unknown")
    elif stamp["lab_utils_sha256"] != lab_utils_sha256:
        reasons.append("lab_utils changed since the run")
    if "lock_sha256" not in stamp:
        reasons.append("stamp predates lock hashing: requirements-lock.txt of the run unknown")
    elif stamp["lock_sha256"] != lock_sha256:
        reasons.append("requirements-lock.txt changed since the run")
    return reasons


class ProvenanceDriftWarning(UserWarning):
    """Committed outputs came from other library code or another lock: re-execute on a GPU before a release."""


@dataclass
class Freshness:
    """What is wrong with one notebook's committed outputs: ``stale`` fails the tests, ``drift`` warns."""

    path: Path
    stale: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def check_freshness(paths: Iterable[Path], *, package_dir: Path = PACKAGE_DIR,
                    lock_file: Path = LOCK_FILE) -> list[Freshness]:
    """Stale and drift reasons for each notebook in ``paths`` (the library and lock are hashed once)."""
    import json

    lib, lock = library_hash(package_dir), lock_hash(lock_file)
    reports = []
    for path in paths:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        reports.append(Freshness(Path(path), stale_reasons(nb),
                                 drift_reasons(nb, lab_utils_sha256=lib, lock_sha256=lock)))
    return reports


def warn_drift(reports: Iterable[Freshness], root: Path = BOOK_ROOT) -> list[Freshness]:
    """Issue one :class:`ProvenanceDriftWarning` listing every drifted notebook and what drifted.

    Returns:
        The drifted reports (empty, and no warning, when every stamp matches today's library and lock).
    """
    drifted = [r for r in reports if r.drift]
    if drifted:
        def name(p: Path) -> str:
            return p.resolve().relative_to(root).as_posix() if p.resolve().is_relative_to(root) else str(p)

        lines = [f"  {name(r.path)}: {'; '.join(r.drift)}" for r in drifted]
        warnings.warn(ProvenanceDriftWarning(
            f"{len(drifted)} notebook(s) ran against other library code or another lock; their outputs may not "
            "match a run today. Re-execute on a GPU before a release (`make execute`):\n" + "\n".join(lines)),
            stacklevel=2)
    return drifted


def format_banner(stamp: dict) -> str:
    """One line for the top of a built page, e.g.
    ``Outputs from a gpu-profile run on NVIDIA H200 · 2026-11-28 · 61 s · peak GPU memory 1.2 GiB · torch 2.11``.
    """
    gpus = stamp.get("gpu_count") or 0
    device = f"{gpus} x {stamp['device']}" if gpus > 1 else stamp["device"]
    parts = [f"Outputs from a {stamp['profile']}-profile run on {device}",
             stamp["executed_at"][:10], f"{stamp['wall_time_s']:.0f} s"]
    if stamp.get("peak_gpu_mem_mib"):  # None on a CPU run; 0 when the GPU work ran in launched processes
        parts.append(f"peak GPU memory {stamp['peak_gpu_mem_mib'] / 1024:.2f} GiB")
    versions = stamp.get("versions", {})
    parts += [f"{k} {v}" for k, v in versions.items() if v != "missing"]
    return " · ".join(parts)
