"""Where a study reads and writes, and the device it runs on: one value instead of four keywords.

A study (the demo, a sweep configuration) hands the same folders and device to every step it
calls; `Workspace` carries them. The steps themselves (`train_teacher`, `distill`,
`attack_model`) keep their keyword parameters: a study unpacks the workspace explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """The runs, results and data folders, and the device (auto, cpu, cuda, cuda:N, mps)."""

    runs_dir: Path = Path("runs")
    results_dir: Path = Path("results")
    data_dir: Path = Path("data")
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("runs_dir", "results_dir", "data_dir"):  # a str from an untyped caller
            object.__setattr__(self, name, Path(getattr(self, name)))

    def resolved(self, base: Path | None = None) -> Workspace:
        """The same workspace with absolute folders, relative ones taken against `base` (the
        current directory by default): what a process started elsewhere (a Slurm node) needs."""
        root = Path.cwd() if base is None else base
        return replace(
            self,
            runs_dir=(root / self.runs_dir).resolve(),
            results_dir=(root / self.results_dir).resolve(),
            data_dir=(root / self.data_dir).resolve(),
        )
