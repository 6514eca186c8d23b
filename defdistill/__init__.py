"""defdistill: defensive distillation, attacked honestly."""

__version__ = "0.1.0"

from .data import load_dataset  # noqa: E402
from .runs import load_model  # noqa: E402

__all__ = ["__version__", "load_dataset", "load_model"]
