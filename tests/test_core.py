"""The core pipeline on digits: data, training, distillation, attacks and tables."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import defdistill
from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.evaluate.attacks import attack_metrics, attack_model
from defdistill.store.runs import format_T, load_run, resolve_model
from defdistill.store.tables import ACCURACY_GAP_COLUMNS, ROBUSTNESS_COLUMNS, rebuild_tables
from defdistill.train.distill import choose_teacher, distill, distillation_loss
from defdistill.train.loop import train_teacher


def test_digits_split_is_deterministic_stratified_and_in_unit_range():
    x_tr, y_tr = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test")
    x_te2, y_te2 = load_dataset("digits", "test")
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert torch.equal(x_te, x_te2) and torch.equal(y_te, y_te2)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert x_tr.min() >= 0 and x_tr.max() <= 1
    counts = torch.bincount(y_te, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of each class


def test_load_dataset_returns_copies_that_callers_may_modify():
    x, _ = load_dataset("digits", "test")
    x.zero_()
    assert load_dataset("digits", "test")[0].sum() > 0


def test_short_teacher_run_beats_chance_by_far(tmp_path):
    result = train_teacher(T=1, epochs=3, runs_dir=tmp_path, device="cpu")
    assert result.meta["clean_acc"] > 0.8  # chance is 0.1
    assert result.path == tmp_path / "digits" / "teacher-T1"
    assert {"model.safetensors", "meta.json"} <= {p.name for p in result.path.iterdir()}


def test_run_meta_records_what_reproducing_the_run_needs(trained_runs):
    meta = json.loads((trained_runs.student_t100 / "meta.json").read_text())
    for key in (
        "dataset",
        "arch",
        "role",
        "T",
        "teacher",
        "seed",
        "epochs",
        "clean_acc",
        "versions",
        "wall_seconds",
        "command",
    ):
        assert key in meta, key
    assert meta["teacher"] == "teacher-T100" and meta["role"] == "student" and meta["T"] == 100
    assert {"torch", "foolbox", "defdistill"} <= set(meta["versions"])


def test_teacher_at_T100_stays_close_to_the_T1_teacher(trained_runs):
    acc_t1 = load_run(trained_runs.teacher_t1)[1]["clean_acc"]
    acc_t100 = load_run(trained_runs.teacher_t100)[1]["clean_acc"]
    assert acc_t100 > acc_t1 - 0.05


def test_public_api_loads_a_student_in_eval_mode_returning_logits(trained_runs):
    model = defdistill.load_model(trained_runs.student_t100)
    x, y = defdistill.load_dataset("digits", split="test")
    assert not model.training
    logits = model(x[:50])
    assert logits.shape == (50, 10)
    assert (logits.argmax(1) == y[:50]).float().mean() > 0.85
    # deployed at T=1 after training at T=100: logits are large, the softmax saturates
    assert logits.abs().max() > 100


def test_same_seed_gives_identical_weights(tmp_path):
    a = train_teacher(T=1, epochs=2, seed=3, runs_dir=tmp_path / "a", device="cpu")
    b = train_teacher(T=1, epochs=2, seed=3, runs_dir=tmp_path / "b", device="cpu")
    assert a.meta["weights_sha256"] == b.meta["weights_sha256"]


def test_distillation_loss_is_kl_at_T_scaled_by_T_squared():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    T = 5.0
    p_t = torch.softmax(t / T, 1)
    expected = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(distillation_loss(s, t, y, T), expected, atol=1e-6)
    assert torch.allclose(distillation_loss(t, t, y, T), torch.tensor(0.0), atol=1e-6)
    mixed = distillation_loss(s, t, y, T, alpha=0.25)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(mixed, 0.25 * expected + 0.75 * ce, atol=1e-6)


def test_distill_writes_a_loadable_student_and_its_accuracy_gap_row(runs_copy, tmp_path):
    results = tmp_path / "results"
    result = distill(T=100, epochs=3, runs_dir=runs_copy, results_dir=results, device="cpu", force=True)
    model, meta = load_run(result.path, dataset="digits")
    assert meta["teacher"] == "teacher-T100" and result.notes == []
    gap = pd.read_csv(results / "accuracy_gap.csv")
    assert list(gap.columns[: len(ACCURACY_GAP_COLUMNS)]) == list(ACCURACY_GAP_COLUMNS)
    row = gap.iloc[0]
    assert row["student"] == "student-T100" and row["teacher"] == "teacher-T100"
    assert math.isclose(row["gap_pp"], (row["teacher_acc"] - row["student_acc"]) * 100, abs_tol=1e-3)
    assert (results / "accuracy_gap.md").read_text().count("student-T100") == 1


def test_distill_without_teacher_at_T_falls_back_to_T1_and_says_it_is_hinton_style(runs_copy):
    path, notes = choose_teacher(runs_copy, "digits", 20.0, None)
    assert path.name == "teacher-T1"
    assert len(notes) == 1 and "Hinton-style" in notes[0] and "train-teacher --T 20" in notes[0]


def test_ambiguous_role_lists_the_candidates(trained_runs):
    with pytest.raises(DefdistillError, match="teacher-T1, teacher-T100"):
        resolve_model("teacher", trained_runs.runs_dir, "digits")
    assert resolve_model("teacher", trained_runs.runs_dir, "digits", T=100).name == "teacher-T100"
    assert resolve_model("student", trained_runs.runs_dir, "digits").name == "student-T100"


def test_attack_metrics_follow_the_contract_definitions():
    clean = torch.tensor([True, True, True, False])
    adv = torch.tensor([True, False, True, True])
    dist = torch.tensor([0.1, 0.0, 0.3, 0.05])
    m = attack_metrics(clean, adv, dist)
    assert m["n"] == 4 and m["clean_acc"] == 0.75
    assert m["success_rate"] == pytest.approx(2 / 3)  # among the correctly classified only
    assert m["robust_acc"] == 0.25  # correct after the attack / all n
    assert m["median_dist"] == pytest.approx(0.2)  # median over the successful ones (0.1 and 0.3)


def test_each_attack_on_a_trained_model_writes_sane_contract_rows(trained_runs, tmp_path):
    results = tmp_path / "results"
    report = attack_model(
        model="teacher-T1",
        runs_dir=trained_runs.runs_dir,
        results_dir=results,
        n=80,
        eps=(0.1, 0.3),
        device="cpu",
    )
    table = pd.read_csv(results / "robustness.csv")
    assert list(table.columns[: len(ROBUSTNESS_COLUMNS)]) == list(ROBUSTNESS_COLUMNS)
    assert len(table) == len(report.rows) == 5  # fgsm x 2, pgd x 2, cw x 1
    for col in ("clean_acc", "robust_acc", "success_rate"):
        assert table[col].between(0, 1).all(), col
    cw = table[table.attack == "cw"].iloc[0]
    assert pd.isna(cw["eps"]) and cw["norm"] == "l2" and cw["success_rate"] >= 0.95
    linf = table[table.norm == "linf"]
    assert (linf["median_dist"] <= linf["eps"] + 1e-6).all()
    pgd = table[table.attack == "pgd"].set_index("eps")["success_rate"]
    fgsm = table[table.attack == "fgsm"].set_index("eps")["success_rate"]
    assert pgd[0.3] >= fgsm[0.3] and pgd[0.3] > 0.9


def test_distilled_student_resists_fgsm_but_not_carlini_wagner(trained_runs, tmp_path):
    results = tmp_path / "results"
    kwargs = dict(runs_dir=trained_runs.runs_dir, results_dir=results, n=100, eps=(0.2,), device="cpu")
    attack_model(model="teacher-T1", attacks=("fgsm",), **kwargs)
    report = attack_model(model="student-T100", attacks=("fgsm", "cw"), **kwargs)
    table = pd.read_csv(results / "robustness.csv").set_index(["model", "attack"])["success_rate"]
    assert table["teacher-T1", "fgsm"] > 0.6
    assert table["student-T100", "fgsm"] < 0.1
    assert table["student-T100", "cw"] > 0.95
    assert any("gradient masking" in note for note in report.notes)


def test_rerunning_a_configuration_replaces_its_rows(trained_runs, tmp_path):
    results = tmp_path / "results"
    kwargs = dict(
        model="teacher-T1",
        attacks=("fgsm",),
        runs_dir=trained_runs.runs_dir,
        results_dir=results,
        device="cpu",
    )
    attack_model(n=40, eps=(0.1, 0.2), **kwargs)
    attack_model(n=60, eps=(0.2,), **kwargs)
    table = pd.read_csv(results / "robustness.csv")
    assert len(table) == 2
    assert table.set_index("eps").loc[0.2, "n"] == 60
    rebuilt = rebuild_tables(results)["robustness"]
    assert len(rebuilt) == 2


def test_temperature_is_printed_without_trailing_zero():
    assert format_T(100.0) == "100" and format_T(1) == "1" and format_T(2.5) == "2.5"
