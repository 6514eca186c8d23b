"""Shared fixtures and helpers: real digits models, trained once per test session, and the
in-process CLI (`invoke`, `assert_one_line_error`; test modules import them from conftest).

Training the three models of the study (teacher at T=1, teacher at T=100, student at T=100)
takes a few seconds on 2 CPU cores; every test that needs a trained model reuses them and
writes its own results into its own temporary folder.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# A shell without job control starts background commands with SIGINT ignored, and an ignored
# signal stays ignored in every child: the interrupt tests would then test nothing. A handler
# (unlike SIG_IGN) is reset to the default at exec, so the CLI processes they start get
# Python's KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FIXTURE_EPOCHS = 15
_runner = CliRunner()

# Whole modules of longer tests (sweeps, the privacy and defences studies, benchmarks, training
# at scale), and every test that needs the trained digits models, are left out of
# `make test-fast`; single long tests elsewhere carry @pytest.mark.slow.
SLOW_MODULES = {
    "test_scaleout.py", "test_privacy.py", "test_defences.py", "test_benchmarks.py", "test_performance.py",
    "test_variants.py", "test_presets.py",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES or "trained_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def invoke(*args: object) -> Result:
    """Run `defdistill ARGS` in this process (paths and numbers given as they are)."""
    from defdistill.cli import app

    return _runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with one line holding every fragment, and no traceback; that line."""
    assert result.exit_code != 0, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


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
