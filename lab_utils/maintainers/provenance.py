"""Provenance stamps: which run produced a notebook's committed outputs.

``lab_utils.maintainers.execute`` writes a stamp into ``metadata["lab_provenance"]`` of every notebook it runs: profile,
device, versions, date, wall time, peak GPU memory and a hash of the code cells. Tests compare the hash with
the cells to catch outputs that no longer match the code; the book shows the stamp as a one-line banner.
"""

from __future__ import annotations

import hashlib

STAMP_KEY = "lab_provenance"


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


def format_banner(stamp: dict) -> str:
    """One line for the top of a built page, e.g.
    ``Outputs from a gpu-profile run on NVIDIA H200 · 2026-11-28 · 61 s · peak GPU memory 1.2 GiB · torch 2.11``.
    """
    parts = [f"Outputs from a {stamp['profile']}-profile run on {stamp['device']}",
             stamp["executed_at"][:10], f"{stamp['wall_time_s']:.0f} s"]
    if stamp.get("peak_gpu_mem_mib") is not None:
        parts.append(f"peak GPU memory {stamp['peak_gpu_mem_mib'] / 1024:.2f} GiB")
    versions = stamp.get("versions", {})
    parts += [f"{k} {v}" for k, v in versions.items() if v != "missing"]
    return " · ".join(parts)
