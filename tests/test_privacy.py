"""Membership inference: the metric code, the attack scores, the split and the `privacy` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, invoke

from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.models import predict_logits
from defdistill.store.runs import load_run, resolve_model
from defdistill.store.tables import PRIVACY_COLUMNS
from defdistill.studies.privacy import (
    MEMBERSHIP_FILE,
    SHADOW_SCORES_FILE,
    lira_offline_scores,
    logit_confidence,
    loss_scores,
    make_split,
    membership_metrics,
    metrics_from_roc,
    read_roc_records,
    roc_auc,
    roc_curve,
    student_run_name,
    threshold_attack_scores,
    tpr_at_fpr,
    train_private_teacher,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: as fast for these tiny networks, and immune to the spin-wait slowdown
    (measured 25x) that two torch threads suffer when other processes share the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_metrics_match_a_hand_computed_roc():
    members, nonmembers = [0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1]
    roc = roc_curve(members, nonmembers)
    # thresholds 0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1
    np.testing.assert_allclose(roc.fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(roc.tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1])
    metrics = membership_metrics(members, nonmembers)
    assert metrics["auc"] == pytest.approx(11 / 12)  # 11 of the 12 member/non-member pairs ordered
    assert metrics["tpr_at_1pct_fpr"] == pytest.approx(2 / 3)  # no false positive allowed below 1/4
    assert metrics["tpr_at_0_1pct_fpr"] == pytest.approx(2 / 3)
    assert tpr_at_fpr(roc, 0.25) == pytest.approx(1.0)
    assert metrics["advantage"] == pytest.approx(0.75)  # TPR 1 at FPR 1/4
    assert (metrics["n_members"], metrics["n_nonmembers"]) == (3, 4)


def test_tied_member_and_nonmember_count_half_and_are_never_separated():
    roc = roc_curve([1.0, 1.0], [1.0, 0.0])
    assert roc_auc(roc) == pytest.approx(0.75)  # pairs: two ties (1/2 each), two ordered
    assert tpr_at_fpr(roc, 0.001) == 0.0  # accepting the tie means accepting a non-member
    assert membership_advantage_of([1.0, 1.0], [1.0, 0.0]) == pytest.approx(0.5)


def membership_advantage_of(members, nonmembers) -> float:
    return membership_metrics(members, nonmembers)["advantage"]


def test_tpr_at_fpr_takes_the_largest_achievable_fpr_below_the_target_without_interpolating():
    nonmembers = np.arange(100.0)  # FPRs come in steps of 1/100
    members = np.concatenate([np.arange(100.0, 150.0), np.full(50, 98.5)])
    roc = roc_curve(members, nonmembers)
    assert tpr_at_fpr(roc, 0.01) == pytest.approx(1.0)  # one false positive (99) admits all members
    assert tpr_at_fpr(roc, 0.001) == pytest.approx(0.5)  # zero false positives: the 50 above 99
    assert tpr_at_fpr(roc, 0.005) == pytest.approx(0.5)  # interpolation would claim 0.75


def test_auc_and_tpr_agree_with_scikit_learn_on_tied_random_scores():
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 20, 300) + 1, rng.integers(0, 20, 500)
    labels = np.r_[np.ones(300), np.zeros(500)]
    scores = np.r_[members, nonmembers].astype(float)
    roc = roc_curve(members, nonmembers)
    assert roc_auc(roc) == pytest.approx(roc_auc_score(labels, scores))
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    for target in (0.01, 0.05, 0.3):
        assert tpr_at_fpr(roc, target) == pytest.approx(tpr[fpr <= target].max())


def test_random_scores_give_chance_auc():
    rng = np.random.default_rng(1)
    metrics = membership_metrics(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(metrics["auc"] - 0.5) < 0.03  # null SD of the AUC here is ~0.0065
    assert metrics["advantage"] < 0.06


def test_scores_stay_ordered_when_the_softmax_saturates():
    labels = torch.tensor([0, 0, 0])
    logits = torch.tensor([[60.0, 0.0, 0.0], [120.0, 0.0, 0.0], [700.0, 0.0, 0.0]])
    assert torch.softmax(logits, 1)[:, 0].unique().numel() == 1  # float32 probabilities all tie at 1.0
    scores = threshold_attack_scores(logits, labels)
    for name in ("loss", "confidence", "entropy"):
        assert bool((scores[name].diff() > 0).all()), name  # more confident -> more "member"
    torch.testing.assert_close(
        logit_confidence(logits, labels), torch.tensor([60, 120, 700], dtype=torch.float64) - math.log(2)
    )


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % 10
    p = torch.softmax(logits.double(), 1).gather(1, labels.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(logit_confidence(logits, labels), torch.log(p) - torch.log1p(-p))
    torch.testing.assert_close(loss_scores(logits, labels), torch.log(p))


def test_offline_lira_scores_the_shift_from_each_examples_out_distribution():
    rng = np.random.default_rng(2)
    means = torch.tensor(rng.normal(0, 5, 200))  # per-example difficulty swamps a global threshold
    shadow = means + torch.tensor(rng.normal(0, 1, (8, 200)))
    observed = means.clone()
    observed[:100] += 3.0  # members: higher than their OUT models would give
    scores = lira_offline_scores(observed, shadow)
    assert membership_metrics(scores[:100], scores[100:])["auc"] > 0.95
    assert membership_metrics(observed[:100], observed[100:])["auc"] < 0.8  # uncalibrated
    with pytest.raises(DefdistillError, match="at least 2 shadow"):
        lira_offline_scores(observed, shadow[:1])


def test_split_is_disjoint_balanced_stratified_and_seeded():
    _, y_train = load_dataset("digits", "train")
    _, y_test = load_dataset("digits", "test")
    split = make_split(y_train, len(y_test), seed=0)
    assert not set(split.private) & set(split.public)
    assert len(split.private) + len(split.public) == len(y_train)
    assert set(split.members) <= set(split.private)
    assert len(split.members) == len(split.nonmembers) == min(len(split.private), len(y_test)) == 360
    assert not set(split.shadow_pool) & set(split.members)  # every shadow model is OUT for every target
    assert set(split.shadow_pool) | set(split.members) == set(range(len(y_train)))
    counts = [np.bincount(y_train.numpy()[half], minlength=10) for half in (split.private, split.public)]
    assert np.abs(counts[0] - counts[1]).max() <= 1
    again, other = make_split(y_train, len(y_test), seed=0), make_split(y_train, len(y_test), seed=1)
    assert np.array_equal(again.members, split.members) and np.array_equal(again.private, split.private)
    assert not np.array_equal(other.private, split.private)


def test_overfit_teacher_leaks_membership_to_the_loss_attack():
    x_train, y_train = load_dataset("digits", "train")
    x_test, y_test = load_dataset("digits", "test")
    n = 30  # 30 images, 200 epochs: memorised (AUC ~0.9 over seeds); the null spread at 30/30 is ~0.075
    teacher = train_private_teacher(x_train[:n], y_train[:n], epochs=200, seed=0, device="cpu")
    member_logits = predict_logits(teacher, x_train[:n], torch.device("cpu"))
    nonmember_logits = predict_logits(teacher, x_test[:n], torch.device("cpu"))
    auc = membership_metrics(
        loss_scores(member_logits, y_train[:n]), loss_scores(nonmember_logits, y_test[:n])
    )["auc"]
    assert auc > 0.75, auc


def test_privacy_command_writes_the_table_the_runs_and_the_membership_lists(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    result = invoke(
        "privacy", "--T", "1,10", "--shadow", "2", "--epochs", "1", "--device", "cpu", "--quiet",
        "--runs-dir", runs, "--results-dir", results,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(results / "privacy.csv")
    assert list(table.columns[: len(PRIVACY_COLUMNS)]) == list(PRIVACY_COLUMNS)
    assert len(table) == 3 * 4  # teacher and two students, four attacks each
    assert set(table["attack"]) == {"loss", "confidence", "entropy", "lira"}
    assert set(table["model"]) == {
        "privacy-teacher",
        student_run_name(1, "public"),
        student_run_name(10, "public"),
    }
    assert (table["n_members"] == 360).all() and (table["n_nonmembers"] == 360).all()
    assert (
        table[["auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc"]]
        .apply(lambda c: c.between(0, 1))
        .all()
        .all()
    )
    assert (results / "privacy.md").is_file()
    assert (results / "privacy_roc_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = {(r["model"], r["attack"]): r["roc"] for r in read_roc_records(results, "digits")}
    assert len(stored) == len(table)  # every row's ROC is kept, so the figure can be redrawn
    for row in table.itertuples():
        metrics = metrics_from_roc(stored[row.model, row.attack])
        assert metrics["auc"] == pytest.approx(row.auc, rel=1e-5)
        assert metrics["tpr_at_1pct_fpr"] == pytest.approx(row.tpr_at_1pct_fpr, rel=1e-5)

    student_dir = runs / "digits" / "privacy-student-T10"
    membership = json.loads((student_dir / MEMBERSHIP_FILE).read_text())
    assert not set(membership["public_train_indices"]) & set(membership["members"]["indices"])
    assert membership["nonmembers"]["split"] == "test" and len(membership["nonmembers"]["indices"]) == 360
    shadow = json.loads((student_dir / SHADOW_SCORES_FILE).read_text())
    assert np.asarray(shadow["shadow_phi"]).shape == (2, 720)
    _, meta = load_run(student_dir)
    assert (meta["role"], meta["T"], meta["study"], meta["teacher"]) == (
        "student",
        10.0,
        "privacy",
        "privacy-teacher",
    )
    with pytest.raises(DefdistillError, match="no teacher run"):  # privacy runs never answer a role
        resolve_model("teacher", runs, "digits", 1.0)


def test_privacy_command_rejects_bad_options_before_training(tmp_path):
    for bad in (["--shadow", "1"], ["--transfer-set", "imagenet"], ["--T", "0"]):
        result = invoke("privacy", *bad, "--results-dir", tmp_path / "r", "--quiet")
        assert result.exit_code == 2, (bad, result.output)
        assert_one_line_error(result)
    assert not (tmp_path / "r").exists()


def test_stored_roc_round_trips_exactly_and_damaged_records_are_skipped(tmp_path):
    from defdistill.studies.privacy import roc_from_json, roc_record_path, save_roc_record

    rng = np.random.default_rng(3)
    roc = roc_curve(rng.integers(0, 30, 360).astype(float), rng.integers(0, 25, 360).astype(float))  # ties
    row = {"dataset": "digits", "model": "privacy-student-T10", "role": "student", "T": 10.0,
           "attack": "lira", "transfer_set": "public", "shadows": 4, "seed": 0}  # fmt: skip
    path = save_roc_record(tmp_path, row, roc)
    assert path == roc_record_path(tmp_path, row) and path.parent.name == "privacy_roc"
    (path.parent / "digits__broken__lira.json").write_text('{"n_members": 3')
    (loaded,) = read_roc_records(tmp_path, "digits")
    np.testing.assert_array_equal(loaded["roc"].fpr, roc.fpr)
    np.testing.assert_array_equal(loaded["roc"].tpr, roc.tpr)
    assert metrics_from_roc(loaded["roc"]) == metrics_from_roc(roc)
    assert {k: loaded[k] for k in row} == row
    assert read_roc_records(tmp_path, "mnist") == []
    with pytest.raises(ValueError, match="not a ROC"):
        roc_from_json({"n_members": 2, "n_nonmembers": 2, "false_positives": [0, 2, 1, 2],
                       "true_positives": [0, 1, 2, 2]})  # fmt: skip


def test_noise_run_keeps_the_public_rows_one_teacher_row_and_the_control(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    legacy = (
        results / "records" / "privacy" / "digits__privacy-teacher__lira.json"
    )  # keyed without transfer set
    legacy.parent.mkdir(parents=True)
    old = {"dataset": "digits", "model": "privacy-teacher", "role": "teacher", "T": 1.0, "attack": "lira",
           "transfer_set": "noise", "auc": 0.9}  # fmt: skip
    legacy.write_text(json.dumps(old))
    common = ["--T", "1", "--shadow", "2", "--epochs", "1", "--device", "cpu", "--quiet",
              "--runs-dir", str(runs), "--results-dir", str(results)]  # fmt: skip
    for extra in (["--transfer-set", "public", "--control"], ["--transfer-set", "noise"]):
        result = invoke("privacy", *extra, *common)
        assert result.exit_code == 0, result.output
    assert not legacy.exists()  # moved to the new key, then replaced by the run's row, not left beside it
    table = pd.read_csv(results / "privacy.csv", keep_default_na=False)
    sets = table.groupby("model")["transfer_set"].agg(set).to_dict()
    assert sets == {
        "privacy-teacher": {"-"},  # the teacher sees no transfer set; one row per attack, not one per run
        "privacy-control": {"-"},
        "privacy-student-T1": {"public"},  # the noise run did not overwrite it
        "privacy-student-noise-T1": {"noise"},
    }
    assert len(table) == 4 * 4 and (table.loc[table["model"] == "privacy-control", "role"] == "control").all()
    _, meta = load_run(runs / "digits" / "privacy-control")
    assert meta["privacy_role"] == "control" and meta["train_set"].startswith(
        "public half with its true labels"
    )
    membership = json.loads((runs / "digits" / "privacy-control" / MEMBERSHIP_FILE).read_text())
    assert np.asarray(json.loads((runs / "digits" / "privacy-control" / SHADOW_SCORES_FILE).read_text())[
        "shadow_phi"]).shape == (2, 720)  # fmt: skip
    assert not set(membership["public_train_indices"]) & set(membership["members"]["indices"])
    assert {r["model"] for r in read_roc_records(results, "digits")} == set(sets)


def test_control_only_trains_the_control_alone(tmp_path):
    from defdistill.studies.privacy import run_privacy

    report = run_privacy(
        temperatures=(), shadows=2, epochs=1, device="cpu", control_only=True,
        runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
    )  # fmt: skip
    assert [m.name for m in report.models] == ["privacy-control"]
    assert {r["attack"] for r in report.rows} == {"loss", "confidence", "entropy", "lira"}


def test_records_keyed_without_the_transfer_set_move_to_the_new_key_with_their_curves(tmp_path):
    from defdistill.store.tables import migrate_privacy_records, read_records
    from defdistill.studies.privacy import roc_curve, save_roc_record

    roc = roc_curve([0.9, 0.4], [0.5, 0.1])
    for model, role, transfer in (
        ("privacy-teacher", "teacher", "noise"),
        ("privacy-student-T1", "student", "public"),
    ):
        row = {"dataset": "digits", "model": model, "role": role, "T": 1.0, "attack": "lira",
               "transfer_set": transfer, **metrics_from_roc(roc), "test_acc": 0.9}  # fmt: skip
        legacy = f"digits__{model}__lira.json"
        folder = tmp_path / "records" / "privacy"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / legacy).write_text(json.dumps(row))
        curve = save_roc_record(tmp_path, row, roc)
        curve.rename(curve.with_name(legacy))
    assert migrate_privacy_records(tmp_path) == 2
    assert migrate_privacy_records(tmp_path) == 0
    names = sorted(p.name for p in (tmp_path / "records" / "privacy").glob("*.json"))
    assert names == ["digits__privacy-student-T1__public__lira.json", "digits__privacy-teacher__-__lira.json"]
    assert sorted(p.name for p in (tmp_path / "records" / "privacy_roc").glob("*.json")) == names
    table = read_records(tmp_path, "privacy").set_index("model")
    assert table.loc["privacy-teacher", "transfer_set"] == "-" and table.loc["privacy-teacher", "auc"] == 0.75
    assert {r["model"]: r["transfer_set"] for r in read_roc_records(tmp_path)} == {
        "privacy-teacher": "-", "privacy-student-T1": "public"}  # fmt: skip
