"""Seeds, devices and threads: what makes a run reproducible and where it runs."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .errors import DefdistillError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


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
        raise DefdistillError("--device cuda was asked for but CUDA is not available: use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DefdistillError("--device mps was asked for but MPS is not available: use --device auto or cpu")
    return torch.device(name)


def library_versions() -> dict[str, str]:
    """Versions that decide whether a number can be reproduced bit for bit."""
    import platform

    from . import __version__

    versions = {"defdistill": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        from importlib.metadata import version

        versions["foolbox"] = version("foolbox")
    except Exception:  # foolbox metadata missing only in unusual installs
        pass
    return versions
