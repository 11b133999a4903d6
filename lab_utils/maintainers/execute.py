"""Execute notebooks in place and stamp them with provenance (``make execute``).

``python -m lab_utils.maintainers.execute [NOTEBOOK ...]`` runs each notebook top to bottom with nbclient in a fresh
kernel (widget state saved, so the site can show widgets), then records in its metadata which run produced
the outputs: profile, device, versions, date, wall time, peak GPU memory, a hash of its code cells and hashes
of the library and of the lock file it ran against (see :mod:`lab_utils.maintainers.provenance`). Without
arguments it executes every notebook under ``chapters/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from lab_utils.maintainers.provenance import STAMP_KEY, code_hash, library_hash, lock_hash

BOOK_ROOT = Path(__file__).resolve().parents[2]
PROBE_TAG = "LAB_PROVENANCE:"
# Runs in the notebook's own kernel after its last cell, so it sees the run's device and peak memory.
PROBE = f"""\
import json as _json, torch as _torch, lab_utils.profile as _profile
_info = _profile.environment()
_info["profile"] = _profile.current().name
_info["peak_gpu_mem_mib"] = _torch.cuda.max_memory_allocated() / 2**20 if _torch.cuda.is_available() else None
_info["gpu_count"] = _torch.cuda.device_count()
print("{PROBE_TAG}" + _json.dumps(_info))
"""


def execute_notebook(path: Path, timeout: int = 1800, kernel_name: str = "python3") -> dict:
    """Execute ``path`` in place and write its provenance stamp.

    Args:
        path: the ``.ipynb`` file; it runs with its own folder as working directory.
        timeout: seconds allowed per cell.
        kernel_name: Jupyter kernel to start.

    Returns:
        The stamp written into ``metadata["lab_provenance"]``.

    Raises:
        FileNotFoundError: ``path`` is not an existing ``.ipynb`` file.
        nbclient.exceptions.CellExecutionError: a cell failed (the notebook on disk is left unchanged).
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise FileNotFoundError(f"no notebook at {path} (give the path of an .ipynb file)")
    nb = nbformat.read(path, as_version=4)
    # Hashed before the run: the code the kernel imports, not whatever is on disk after a long run.
    lab_utils_sha256, lock_sha256 = library_hash(), lock_hash()
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    # The kernel inherits this process's environment. A MPLBACKEND meant for scripts and tests (the Makefile exports
    # Agg) would replace the kernel's inline backend: plt.show() would draw nothing, and the committed outputs would
    # have lost every figure. The kernel starts without it; this process gets it back afterwards.
    backend = os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    wall = time.perf_counter() - start
    probe = nb.cells.pop()
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
    info = json.loads(text.split(PROBE_TAG, 1)[1])
    stamp = {
        "profile": info["profile"],
        "device": info["device"],
        "python": info["python"],
        "versions": info["versions"],
        "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 1),
        "peak_gpu_mem_mib": None if info["peak_gpu_mem_mib"] is None else round(info["peak_gpu_mem_mib"], 1),
        "gpu_count": info["gpu_count"],  # the GPUs the run could see (a multi-GPU page launches processes on them)
        "code_sha256": code_hash(nb),
        "lab_utils_sha256": lab_utils_sha256,
        "lock_sha256": lock_sha256,
    }
    nb.metadata[STAMP_KEY] = stamp
    nbformat.write(nb, path)
    return stamp


def all_notebooks(root: Path = BOOK_ROOT) -> list[Path]:
    """Every notebook of the book, in path order (checkpoints excluded)."""
    return sorted(p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook under chapters/")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)
    for path in args.notebooks or all_notebooks():
        print(f"executing {path} ...", flush=True)
        stamp = execute_notebook(path, timeout=args.timeout)
        peak = "" if stamp["peak_gpu_mem_mib"] is None else f", peak GPU {stamp['peak_gpu_mem_mib']:.0f} MiB"
        print(f"  done in {stamp['wall_time_s']:.1f} s on {stamp['device']} ({stamp['profile']} profile{peak})")


if __name__ == "__main__":
    main()
