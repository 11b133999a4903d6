"""Start a multi-process run from a notebook: ``torchrun`` (``python -m torch.distributed.run``) as a subprocess.

A notebook's kernel is one process; data parallelism needs one per GPU. ``launch`` runs a module under torchrun
with ``--standalone`` (a rendezvous on this machine), one process per rank, and returns when all have finished.
Every child gets the environment below: NVLink multicast (NVLS) switched off for NCCL, symmetric memory and NVSHMEM,
which some shared machines do not support. Chapter "When one GPU is not enough".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["CHILD_ENV", "gpu_count", "launch", "plan", "run_training"]

CHILD_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def gpu_count() -> int:
    """Number of CUDA GPUs this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(device: torch.device | str, wanted: int = 2) -> tuple[str, int]:
    """Where and on how many ranks to run: ``("cuda", wanted)`` when ``device`` is a GPU and this machine has at least
    ``wanted`` of them (one rank per GPU, NCCL), else ``("cpu", wanted)``: gloo processes on the CPU, which any machine
    has (Colab, with one GPU, lands here).

    Raises:
        ValueError: ``wanted < 1``.
    """
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise ValueError(f"wanted must be an int >= 1, got {wanted!r}")
    if torch.device(device).type == "cuda" and gpu_count() >= wanted:
        return "cuda", wanted
    return "cpu", wanted


def launch(module: str, args: list[str], *, nproc: int, timeout: float | None = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module *args`` on ``nproc`` ranks with torchrun and wait for it.

    Args:
        module: the script to run on every rank, e.g. ``"lab_utils.distributed.train"``.
        args: its command-line arguments.
        nproc: number of processes (ranks) on this machine.
        timeout: seconds before the run is killed (None: no limit).
        env: extra environment variables; :data:`CHILD_ENV` is always set, and ``OMP_NUM_THREADS`` defaults to 1
            (as torchrun would, but without its warning).

    Returns:
        The finished process (stdout and stderr as text).

    Raises:
        RuntimeError: a rank failed; the message ends with the last lines the ranks printed.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    child_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {}), **CHILD_ENV}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", module, *args]
    done = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"{module} failed on {nproc} ranks (exit code {done.returncode}):\n{tail}")
    return done


def run_training(*, nproc: int, device: str = "cpu", engines: tuple[str, ...] | list[str] = ("ddp",),
                 model: str = "tiny", global_batch: int = 8, seq_len: int = 32, steps: int = 6, lr: float = 1e-3,
                 autocast: str = "none", seed: int = 0, data: str = "tweets", save_weights: str | Path | None = None,
                 lora_rank: int = 0, timeout: float | None = 600) -> dict:
    """Launch :mod:`lab_utils.distributed.train` on ``nproc`` ranks and return what it measured.

    Arguments are the script's options (``python -m lab_utils.distributed.train --help``). ``device="cuda"``: one GPU
    per rank and NCCL (see :func:`plan`); ``"cpu"``: gloo processes on the CPU. ``lora_rank > 0`` freezes the model
    and trains LoRA on its attention's query and value projections ("local" and "ddp" engines only).

    Returns:
        The script's JSON as a dict: ``world_size``, ``backend``, ``n_params``, ... and ``engines``: for each engine
        its global ``losses`` per step and ``ranks``, one record per rank (bytes of ``weights``, ``gathered``,
        ``gradients``, ``optimizer_state``, CUDA ``peak`` or None, median ``step_seconds``).
    """
    if model == "smollm2":
        from lab_utils.assets import smollm2_dir

        smollm2_dir()  # build the checkpoint cache once here, before the ranks all look for it
    with tempfile.TemporaryDirectory(prefix="lab-ddp-") as tmp:
        out = Path(tmp) / "results.json"
        args = ["--out", str(out), "--device", device, "--model", model, "--engines", ",".join(engines),
                "--global-batch", str(global_batch), "--seq-len", str(seq_len), "--steps", str(steps),
                "--lr", str(lr), "--autocast", autocast, "--seed", str(seed), "--data", data,
                "--lora-rank", str(lora_rank)]
        if save_weights is not None:
            args += ["--save-weights", str(save_weights)]
        launch("lab_utils.distributed.train", args, nproc=nproc, timeout=timeout)
        return json.loads(out.read_text())
