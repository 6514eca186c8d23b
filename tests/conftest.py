"""Shared fixtures: real digits models, trained once per test session.

Training the three models of the study (teacher at T=1, teacher at T=100, student at T=100)
takes a few seconds on 2 CPU cores; every test that needs a trained model reuses them and
writes its own results into its own temporary folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

FIXTURE_EPOCHS = 15


@dataclass(frozen=True)
class TrainedRuns:
    runs_dir: Path
    teacher_t1: Path
    teacher_t100: Path
    student_t100: Path


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainedRuns:
    """teacher-T1, teacher-T100 and student-T100 on digits (read-only for tests: copy to modify)."""
    from defdistill.train.distill import distill
    from defdistill.train.loop import train_teacher

    root = tmp_path_factory.mktemp("shared-runs")
    runs_dir, results_dir = root / "runs", root / "results"
    t1 = train_teacher(T=1, epochs=FIXTURE_EPOCHS, runs_dir=runs_dir, device="cpu")
    t100 = train_teacher(T=100, epochs=FIXTURE_EPOCHS, runs_dir=runs_dir, device="cpu")
    student = distill(T=100, epochs=FIXTURE_EPOCHS, runs_dir=runs_dir, results_dir=results_dir, device="cpu")
    return TrainedRuns(runs_dir, t1.path, t100.path, student.path)


@pytest.fixture
def runs_copy(trained_runs: TrainedRuns, tmp_path: Path) -> Path:
    """A private, writable copy of the shared runs folder."""
    import shutil

    target = tmp_path / "runs"
    shutil.copytree(trained_runs.runs_dir, target)
    return target
