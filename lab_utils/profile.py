"""Run profiles: one notebook, two sizes.

Every notebook starts with ``prof = setup()``. The profile is ``gpu`` when CUDA is available and ``cpu``
otherwise; ``LAB_PROFILE=cpu|gpu`` overrides it. ``pick(cpu=..., gpu=...)`` chooses a size for the active
profile, so CI runs a small version of each experiment on 2 cores and the site shows the full run.
In the GPU profile the process may use at most ``GPU_MEMORY_CAP_GIB`` (15 GiB, a Colab T4), wherever it runs.
"""

from __future__ import annotations

import os
import platform
import random
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import numpy as np
import torch

GPU_MEMORY_CAP_GIB = 15.0  # a Colab T4 has 15 GiB usable: what runs under the cap runs there too
PROFILES = ("cpu", "gpu")
REPORTED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """The active run profile.

    Attributes:
        name: ``"cpu"`` (small, CI) or ``"gpu"`` (the full run the site shows).
        device: where tensors and models go.
        dtype: compute dtype for models: bf16 where the GPU supports it, fp16 on older GPUs (T4), fp32 on CPU.
    """

    name: str
    device: torch.device
    dtype: torch.dtype

    def pick(self, *, cpu: T, gpu: T) -> T:
        """Return ``cpu`` or ``gpu`` according to this profile."""
        return gpu if self.name == "gpu" else cpu


def profile_name() -> str:
    """The profile to run: ``LAB_PROFILE`` if set, else ``gpu`` when CUDA is available, else ``cpu``.

    Raises:
        ValueError: ``LAB_PROFILE`` is not ``cpu`` or ``gpu``.
        RuntimeError: ``LAB_PROFILE=gpu`` on a machine without CUDA.
    """
    name = os.environ.get("LAB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"LAB_PROFILE must be one of {PROFILES}, got {name!r}")
    if name == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("LAB_PROFILE=gpu but torch sees no CUDA device; unset it or use LAB_PROFILE=cpu")
    return name


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (Ampere and newer), fp16 on older ones (T4), fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def current() -> Profile:
    """The active profile, without side effects (no seeding, no memory cap, nothing printed)."""
    name = profile_name()
    device = torch.device("cuda" if name == "gpu" else "cpu")
    return Profile(name=name, device=device, dtype=compute_dtype(device))


def pick(*, cpu: T, gpu: T) -> T:
    """Return ``cpu`` or ``gpu`` according to the active profile (see :func:`profile_name`)."""
    return current().pick(cpu=cpu, gpu=gpu)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs) so a rerun gives the same numbers."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def cap_gpu_memory(gib: float = GPU_MEMORY_CAP_GIB) -> None:
    """Let this process allocate at most ``gib`` GiB on GPU 0 (an out-of-memory error beyond it)."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), 0)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def environment() -> dict:
    """Device name, memory, bf16 support and package versions, as a dict (also stamped into notebooks)."""
    info = {"python": platform.python_version()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported())
    else:
        info.update(device=f"CPU ({os.cpu_count()} cores)", memory_gib=None, bf16=False)
    info["versions"] = {name: _version(name) for name in REPORTED_PACKAGES}
    return info


def hardware_report(profile: Profile | None = None) -> str:
    """One line: profile, device, memory, bf16 and the versions of the libraries the course relies on."""
    profile = profile or current()
    env = environment()
    memory = f"{env['memory_gib']} GiB (capped at {GPU_MEMORY_CAP_GIB:g})" if env["memory_gib"] else "host RAM"
    versions = " ".join(f"{k} {v}" for k, v in env["versions"].items())
    return (f"profile={profile.name} | {env['device']} | {memory} | bf16={env['bf16']} | "
            f"dtype={str(profile.dtype).removeprefix('torch.')} | python {env['python']} {versions}")


# Deprecation notices that libraries raise from their own code, which a student can do nothing about: peft calls
# transformers' `is_gradient_checkpointing`, renamed in transformers 5.2x (the warning names a machine path).
LIBRARY_NOISE = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


def quiet_library_noise() -> None:
    """Hide the warnings in ``LIBRARY_NOISE`` (and only those) for the rest of the session."""
    for category, message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def setup(seed: int = 0) -> Profile:
    """Start a notebook: choose the profile, seed everything, cap GPU memory, print the hardware report.

    Args:
        seed: seed for Python, NumPy and torch.

    Returns:
        The active :class:`Profile`.
    """
    profile = current()
    seed_everything(seed)
    if profile.name == "gpu":
        cap_gpu_memory()
        torch.cuda.reset_peak_memory_stats()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model comes from a local package
    quiet_library_noise()
    print(hardware_report(profile))
    return profile
