"""Records bound to the weights they measured, derived rows rebuilt from primary data, and
retraining over a finished run refused without --force.

Tiny runs (digits, one epoch, 20 inputs) keep every test here to a few seconds."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teacher-T1 and student-T10 (one epoch each); copy before modifying."""
    from defdistill.train.distill import distill
    from defdistill.train.loop import train_teacher

    root = tmp_path_factory.mktemp("tiny-runs")
    train_teacher(T=1, epochs=1, runs_dir=root / "runs", device="cpu")
    distill(
        T=10, teacher="teacher-T1", epochs=1, runs_dir=root / "runs", results_dir=root / "r", device="cpu"
    )
    return root / "runs"


@pytest.fixture
def work(tiny_runs: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_runs, tmp_path / "runs")
    return tmp_path


def _attack(work: Path, model: str, attacks: str, eps: str = "0.1") -> None:
    result = invoke(
        "attack", "--model", model, "--attacks", attacks, "--eps", eps, "--n", 20, "--device", "cpu",
        "--runs-dir", work / "runs", "--results-dir", work / "results", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _retrain_teacher(work: Path, *extra: object) -> object:
    return invoke(
        "train-teacher", "--epochs", 2, "--device", "cpu", "--runs-dir", work / "runs", "-q", *extra
    )


def test_every_attack_record_carries_the_sha256_of_the_weights_it_measured(work: Path):
    _attack(work, "teacher-T1", "fgsm")
    digest = json.loads((work / "runs/digits/teacher-T1/meta.json").read_text())["weights_sha256"]
    for table in ("robustness", "worst_case"):
        (path,) = (work / "results/records" / table).glob("*.json")
        assert json.loads(path.read_text())["weights_sha256"] == digest
        assert path.stem.endswith(f"__w{digest[:12]}")


def test_training_over_a_finished_run_needs_force(work: Path):
    weights = work / "runs/digits/teacher-T1/model.safetensors"
    before = weights.read_bytes()
    assert_one_line_error(_retrain_teacher(work), "finished run", "--force")
    assert weights.read_bytes() == before
    distilled = invoke(
        "distill", "--T", 10, "--teacher", "teacher-T1", "--epochs", 1, "--device", "cpu",
        "--runs-dir", work / "runs", "--results-dir", work / "results", "-q",
    )  # fmt: skip
    assert_one_line_error(distilled, "student-T10 is a finished run", "--force", "--name")
    assert _retrain_teacher(work, "--force").exit_code == 0
    assert weights.read_bytes() != before


def test_records_of_replaced_weights_are_stale_never_mixed_and_reported(work: Path):
    from defdistill.store.tables import build_tables, describe_stale

    _attack(work, "teacher-T1", "fgsm", "0.1,0.3")
    assert _retrain_teacher(work, "--force").exit_code == 0
    _attack(work, "teacher-T1", "pgd")
    build = build_tables(work / "results", work / "runs")
    robustness, worst = build.frames["robustness"], build.frames["worst_case"]
    assert list(robustness["attack"]) == ["pgd"]  # the old network's fgsm rows are not shown beside it
    assert list(worst["eps"]) == [0.1] and list(worst["ensemble_attacks"]) in (["pgd"], [""])
    (line,) = describe_stale(build.stale)
    assert "stale: 2 robustness and 2 worst_case record(s) of digits/teacher-T1" in line
    result = invoke("tables", "--results-dir", work / "results", "--runs-dir", work / "runs")
    assert result.exit_code == 0 and result.output.count("stale:") == 1, result.output


def test_a_namesake_folder_never_replaces_the_runs_rows(work: Path):
    other = work / "other"
    result = invoke("train-teacher", "--T", 100, "--epochs", 1, "--device", "cpu", "--runs-dir", other, "-q")
    assert result.exit_code == 0, result.output
    (other / "digits/teacher-T100").rename(other / "digits/teacher-T1")
    _attack(work, "teacher-T1", "fgsm")
    real = (work / "results/robustness.csv").read_text()
    _attack(work, str(other / "digits/teacher-T1"), "fgsm")
    assert len(list((work / "results/records/robustness").glob("*.json"))) == 2  # both kept
    assert (work / "results/robustness.csv").read_text() == real  # the table shows the real run's row


def test_the_committed_legacy_records_rebuild_the_same_tables(tmp_path: Path):
    """Records made before the hash was kept count as legacy (kept, never stale): rebuilding
    and deriving from them gives the committed tables byte for byte."""
    from defdistill.studies.derive import derive

    for name in ("seeds/seed-1", "defences"):
        source, copy = REPO / "results" / name, tmp_path / name
        shutil.copytree(source, copy)
        derived = derive(copy, tmp_path / "no-runs")
        assert (derived.accuracy_gap, derived.worst_case, derived.build.stale) == (0, 0, [])
        for csv in source.glob("*.csv"):
            if csv.stem in derived.build.frames:
                assert filecmp.cmp(csv, copy / csv.name, shallow=False), csv.name


def test_lost_derived_rows_come_back_from_the_runs_and_attack_records(work: Path):
    from defdistill.studies.derive import derive

    _attack(work, "student-T10", "fgsm,pgd", "0.1,0.3")
    derive(work / "results", work / "runs")  # the student's accuracy-gap row, from its meta.json
    tables = {p.name: p.read_text() for p in (work / "results").glob("*.csv")}
    for table in ("accuracy_gap", "worst_case"):  # an interrupt, or a deleted damaged record
        for path in (work / "results/records" / table).glob("*.json"):
            path.unlink()
    result = invoke("tables", "--results-dir", work / "results", "--runs-dir", work / "runs")
    assert result.exit_code == 0, result.output
    assert "recomputed 1 accuracy-gap and 2 worst-case rows" in result.output
    assert {p.name: p.read_text() for p in (work / "results").glob("*.csv")} == tables


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(7.5, "clean_acc is 7.5, not a fraction in [0, 1]"), ("high", "clean_acc is 'high'")],
)
def test_a_bad_meta_field_is_one_line_and_never_copied_into_records(work: Path, value, fragment):
    _attack(work, "student-T10", "fgsm")
    meta_path = work / "runs/digits/teacher-T1/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["clean_acc"] = value
    meta_path.write_text(json.dumps(meta))
    for command in (
        ["tables", "--results-dir", work / "results", "--runs-dir", work / "runs"],
        ["report", "--results-dir", work / "results", "--runs-dir", work / "runs"],
        ["distill", "--T", 20, "--teacher", "teacher-T1", "--epochs", 1, "--device", "cpu",
         "--runs-dir", work / "runs", "--results-dir", work / "results", "-q"],
    ):  # fmt: skip
        assert_one_line_error(invoke(*command), "teacher-T1/meta.json", fragment)
    assert not (work / "runs/digits/student-T20").exists()  # refused before training
    for path in (work / "results/records").rglob("*.json"):
        assert "7.5" not in path.read_text() and "high" not in path.read_text()


def test_out_of_range_temperatures_are_refused_before_any_work(work: Path):
    for T in ("1e308", "1e7"):
        assert_one_line_error(_retrain_teacher(work, "--T", T), "temperature", "largest accepted")
