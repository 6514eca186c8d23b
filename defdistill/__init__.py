"""defdistill: defensive distillation, attacked honestly.

The public API is loaded on first use (module `__getattr__`), so `import defdistill` and
`defdistill --help` do not import torch. Layers, from the bottom up: `core`, `checks` and
`errors`; `data` and `models`; `store`; `train` and `evaluate` (never importing each other);
`studies` and `report`; `cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    "load_model": "defdistill.store.runs",
    "load_run": "defdistill.store.runs",
    "load_dataset": "defdistill.data.registry",
    "train_teacher": "defdistill.train.loop",
    "distill": "defdistill.train.distill",
    "attack_model": "defdistill.evaluate.attacks",
    "run_attack": "defdistill.evaluate.attacks",
    "diagnose_model": "defdistill.evaluate.diagnose",
    "audit": "defdistill.studies.audit",
    "AuditResult": "defdistill.studies.audit",
    "AuditBudgets": "defdistill.studies.audit",
    "load_factory": "defdistill.store.factory",
    "measure_gradients": "defdistill.evaluate.sensitivity",
    "rebuild_tables": "defdistill.store.tables",
    "run_demo": "defdistill.studies.demo",
    "run_defences": "defdistill.studies.defences",
    "run_privacy": "defdistill.studies.privacy",
    "run_sweep": "defdistill.studies.sweep",
    "measure_compression": "defdistill.studies.compression",
    "write_report": "defdistill.report",
    "DefdistillError": "defdistill.errors",
}

__all__ = [
    "__version__",
    "load_model",
    "load_run",
    "load_dataset",
    "train_teacher",
    "distill",
    "attack_model",
    "run_attack",
    "diagnose_model",
    "audit",
    "AuditResult",
    "AuditBudgets",
    "load_factory",
    "measure_gradients",
    "rebuild_tables",
    "run_demo",
    "run_defences",
    "run_privacy",
    "run_sweep",
    "measure_compression",
    "write_report",
    "DefdistillError",
]

if TYPE_CHECKING:
    from .data.registry import load_dataset
    from .errors import DefdistillError
    from .evaluate.attacks import attack_model, run_attack
    from .evaluate.diagnose import diagnose_model
    from .evaluate.sensitivity import measure_gradients
    from .report import write_report
    from .store.factory import load_factory
    from .store.runs import load_model, load_run
    from .store.tables import rebuild_tables
    from .studies.audit import AuditBudgets, AuditResult, audit
    from .studies.compression import measure_compression
    from .studies.defences import run_defences
    from .studies.demo import run_demo
    from .studies.privacy import run_privacy
    from .studies.sweep import run_sweep
    from .train.distill import distill
    from .train.loop import train_teacher


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'defdistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
