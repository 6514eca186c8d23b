"""Seeds, devices and threads: what makes a run reproducible and where it runs."""

from __future__ import annotations

import hashlib
import os
import random
import sys

import numpy as np
import torch

from ..errors import DefdistillError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
THREADS_ENV = "DEFDISTILL_THREADS"


def configure_threads() -> int:
    """Fix torch's number of CPU threads and return it.

    DEFDISTILL_THREADS=N sets it (0 leaves torch's choice, one per core); without it, an
    OMP_NUM_THREADS the user set is left to torch, and otherwise one thread is used. The
    models here are small: a second thread gains little (on digits, nothing), while a thread
    waiting for a core that another process holds stalls every operation (benchmarks/run.py
    measured a digits epoch ~100x slower on 2 threads than on 1 beside one busy process).
    Results also differ in the last bits between thread counts, so a fixed count gives the
    same numbers on machines with different core counts.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit():
            raise DefdistillError(f"{THREADS_ENV} must be a thread count (0: one per core), not {value!r}")
        threads = int(value)
    else:
        threads = 0 if os.environ.get("OMP_NUM_THREADS") else 1
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def derive_seed(seed: int, *parts: object) -> int:
    """A seed of its own for one run, derived from the user's seed and what the run is.

    Every run (teacher at T=1, teacher at T, student at T...) draws its initial weights, dropout
    and batch order from `derive_seed(seed, role, T)`: with the user's seed alone they would all
    start from the same weights, and a transfer attack between them would be close to white-box.
    """
    digest = hashlib.sha256(repr((int(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # in [0, 2^63), as every generator accepts


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, ask torch for deterministic kernels, fix the CPU threads."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_deterministic = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_deterministic is not None and "torch._inductor.config" not in sys.modules:
        # The eager-mode switch alone: torch.use_deterministic_algorithms also imports the
        # compiler's config (torch._inductor, sympy, ...), ~1.4 s and ~150 MB per process, for
        # torch.compile, which nothing here uses.
        set_deterministic(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    configure_threads()


def resolve_device(name: str = "auto") -> torch.device:
    """Map a --device choice to a torch.device; `auto` prefers CUDA, then MPS, then CPU."""
    if name not in DEVICE_CHOICES:
        raise DefdistillError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DefdistillError(
            "--device cuda was asked for but CUDA is not available: use --device auto or cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise DefdistillError("--device mps was asked for but MPS is not available: use --device auto or cpu")
    return torch.device(name)


def library_versions() -> dict[str, str]:
    """Versions that decide whether a number can be reproduced bit for bit."""
    import platform

    from .. import __version__

    versions = {
        "defdistill": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),  # CPU results differ between thread counts
    }
    try:
        from importlib.metadata import version

        versions["foolbox"] = version("foolbox")
    except Exception:  # foolbox metadata missing only in unusual installs
        pass
    return versions
