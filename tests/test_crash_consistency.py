"""A real tiny sweep killed at named points: the rerun's tables equal an uninterrupted run's.

The sweep: digits, T 1 and 100, one epoch, fgsm and pgd at eps 0.1 and 0.3, 20 inputs, no
report. The kill is a SIGKILL (no cleanup runs) at a crash point named by DEFDISTILL_CRASH_AT
(core/faults.py), or sent from outside while two workers run. One uninterrupted reference
sweep is shared by the whole module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TABLES = ("robustness", "accuracy_gap", "worst_case")
TIMINGS = ("seconds",)  # wall-clock columns differ from run to run


def _spec(root: Path, max_parallel: int = 1) -> Path:
    spec = {
        "name": "crash", "dataset": "digits", "temperatures": [1, 100], "epochs": 1,
        "attacks": ["fgsm", "pgd"], "eps": [0.1, 0.3], "n": 20, "device": "cpu",
        "runs_dir": str(root / "runs"), "results_dir": str(root / "results"), "report": False,
        "gradients": False, "max_parallel": max_parallel,
    }  # fmt: skip
    path = root / "crash.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    env.pop("DEFDISTILL_CRASH_AT", None)
    return {**env, **extra}


def _sweep(spec: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "defdistill", "sweep", str(spec), "--quiet"],
        env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _tables(results: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES:
        frame = pd.read_csv(results / f"{table}.csv")
        frames[table] = frame.drop(columns=[c for c in TIMINGS if c in frame.columns])
    return frames


def _rerun_and_compare(root: Path, reference: dict[str, pd.DataFrame]) -> None:
    from defdistill.studies.sweep import run_sweep

    result = run_sweep(_spec(root), max_parallel=1)
    assert not result.failed, [o.error for o in result.failed]
    rerun = _tables(root / "results")
    for table in TABLES:
        pd.testing.assert_frame_equal(rerun[table], reference[table], check_exact=False, rtol=1e-9)
    assert not list(root.rglob(".*.tmp")), "temporary files left behind"


@dataclass(frozen=True)
class Reference:
    tables: dict[str, pd.DataFrame]
    runs: Path  # its trained runs: tests that kill the attacks start from a copy


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    from defdistill.studies.sweep import run_sweep

    root = tmp_path_factory.mktemp("reference")
    result = run_sweep(_spec(root), max_parallel=1)
    assert not result.failed, [o.error for o in result.failed]
    frames = _tables(root / "results")
    assert len(frames["robustness"]) == 16 and len(frames["accuracy_gap"]) == 2
    assert len(frames["worst_case"]) == 8
    return Reference(frames, root / "runs")


def _killed_at(spec: Path, point: str) -> None:
    killed = _sweep(spec, DEFDISTILL_CRASH_AT=point)
    output = killed.communicate(timeout=300)[0].decode()
    assert killed.returncode == -signal.SIGKILL, output


def test_a_sweep_killed_after_a_runs_weights_reruns_to_the_same_tables(reference: Reference, tmp_path: Path):
    _killed_at(_spec(tmp_path), "after-weights:2")  # student-T1 saved, its accuracy-gap record not yet
    assert not list((tmp_path / "results" / "records" / "accuracy_gap").glob("*.json"))
    _rerun_and_compare(tmp_path, reference.tables)


def test_a_sweep_killed_after_a_models_last_attack_record_reruns_to_the_same_tables(
    reference: Reference, tmp_path: Path
):
    shutil.copytree(reference.runs, tmp_path / "runs")
    _killed_at(_spec(tmp_path), "after-attack-records:1")  # teacher-T1 attacked, no worst case yet
    assert not list((tmp_path / "results" / "records" / "worst_case").glob("*.json"))
    _rerun_and_compare(tmp_path, reference.tables)


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_parallel_sweep_stops_its_workers_and_the_rerun_finishes_it(
    reference: Reference, tmp_path: Path
):
    shutil.copytree(reference.runs, tmp_path / "runs")
    spec = _spec(tmp_path, max_parallel=2)
    sweep = _sweep(spec)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:  # both configurations running
        workers = [p for p in _children(sweep.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        time.sleep(0.2)
    assert len(workers) == 2, "the sweep did not start two workers"
    time.sleep(1.0)  # mid-run: importing, training or attacking
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "a worker outlived its sweep"
    _rerun_and_compare(tmp_path, reference.tables)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_a_parallel_sweep_stops_its_workers_promptly(reference: Reference, tmp_path: Path):
    shutil.copytree(reference.runs, tmp_path / "runs")
    sweep = _sweep(_spec(tmp_path, max_parallel=2))
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in _children(sweep.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        time.sleep(0.2)
    assert len(workers) == 2
    time.sleep(1.0)
    started = time.monotonic()
    sweep.send_signal(signal.SIGTERM)
    output = sweep.communicate(timeout=60)[0].decode()
    assert sweep.returncode == 130, output
    assert "interrupted" in output
    assert not any(_alive(p) for p in workers)
    assert time.monotonic() - started < 15
