"""Distillation variants: the losses on hand-made tensors, short digits runs per method, the
teacher-output cache, born-again generations, smaller students and the compression table."""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import defdistill.train.distill as distill_module
from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.store.runs import load_run
from defdistill.store.tables import ACCURACY_GAP_COLUMNS, ACCURACY_GAP_EXTRA
from defdistill.studies.compression import architecture_table, measure_compression
from defdistill.train.distill import CACHE_DIR, distill
from defdistill.train.losses import (
    METHODS,
    HintLoss,
    at_loss,
    distillation_loss,
    hint_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    sp_loss,
)

# --- losses on hand-made tensors --------------------------------------------------------------


def test_hinton_soft_term_gradient_does_not_shrink_with_T():
    # With T^2, d/ds of T^2 KL tends to (s - t) / (K * B) for zero-mean logits as T grows
    # (Hinton et al. 2015, section 2.1); without it the gradient would fall as 1/T^2.
    torch.manual_seed(0)
    s = torch.randn(4, 10)
    s = (s - s.mean(1, keepdim=True)).requires_grad_(True)
    t = torch.randn(4, 10)
    t = t - t.mean(1, keepdim=True)
    y = torch.zeros(4, dtype=torch.long)
    for T in (100.0, 1000.0):
        (grad,) = torch.autograd.grad(distillation_loss(s, t, y, T), s)
        assert torch.allclose(grad, (s.detach() - t) / (10 * 4), atol=2e-3 * 100 / T)


def test_hinton_mixes_soft_and_hard_terms_by_alpha():
    s, t = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.0, 0.0]])
    y = torch.tensor([1])
    T = 4.0
    kl = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum()
    assert torch.isclose(distillation_loss(s, t, y, T), T * T * kl)
    expected = 0.9 * T * T * kl + 0.1 * F.cross_entropy(s, y)
    assert torch.isclose(distillation_loss(s, t, y, T, alpha=0.9), expected)


def test_feature_losses_vanish_when_student_features_equal_the_teachers():
    torch.manual_seed(0)
    maps = torch.rand(5, 3, 4, 4)
    embeddings = torch.randn(5, 7)
    assert at_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-9)
    assert sp_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-9)
    assert rkd_loss(embeddings, embeddings).item() == pytest.approx(0.0, abs=1e-6)
    hint = HintLoss((3, 4, 4), (3, 4, 4))
    with torch.no_grad():  # an identity regressor
        hint.regressor.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        hint.regressor.bias.zero_()
    assert hint(maps, maps).item() == pytest.approx(0.0, abs=1e-9)


def test_relation_and_attention_losses_ignore_scale_as_their_papers_intend():
    torch.manual_seed(1)
    maps, embeddings = torch.rand(4, 2, 3, 3), torch.randn(6, 5)
    assert at_loss(3.0 * maps, maps).item() == pytest.approx(0.0, abs=1e-9)
    assert sp_loss(2.0 * maps, maps).item() == pytest.approx(0.0, abs=1e-9)
    # RKD distances are normalised by their mean and angles by construction: scale and shift drop out.
    assert rkd_loss(4.0 * embeddings + 1.5, embeddings).item() == pytest.approx(0.0, abs=1e-5)
    assert rkd_loss(torch.randn(6, 3), embeddings).item() > 0.01


def test_hint_and_attention_losses_known_values():
    teacher = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert hint_loss(teacher, student).item() == pytest.approx(0.5 * (5.0 + 9.0) / 2)
    # one channel, two positions: maps [1, 0] and [0, 1] after normalisation; mean squared diff 1
    s = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    t = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    assert at_loss(s, t).item() == pytest.approx(1.0)


def test_sp_loss_known_value_on_two_examples():
    # G_T = I; G_S = all ones, rows normalised to 1/sqrt(2): (1/4) * 2 * ((1 - 1/sqrt2)^2 + 1/2)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert sp_loss(student, teacher).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_losses_match_a_loop_over_pairs_and_triplets():
    torch.manual_seed(2)
    s, t = torch.randn(4, 3), torch.randn(4, 3)

    def distances(e):
        d = {(i, j): (e[i] - e[j]).norm().item() for i in range(4) for j in range(4)}
        mean = sum(v for (i, j), v in d.items() if i != j) / 12
        return {k: v / mean for k, v in d.items()}

    ds, dt = distances(s), distances(t)
    expected_d = sum(_huber(ds[k] - dt[k]) for k in ds) / 16

    def cosine(e, i, j, k):
        u, v = e[j] - e[i], e[k] - e[i]
        nu, nv = u.norm(), v.norm()
        return 0.0 if nu == 0 or nv == 0 else (u @ v / (nu * nv)).item()

    triples = list(itertools.product(range(4), repeat=3))
    expected_a = sum(_huber(cosine(s, *tr) - cosine(t, *tr)) for tr in triples) / len(triples)
    assert rkd_distance_loss(s, t).item() == pytest.approx(expected_d, rel=1e-4)
    assert rkd_angle_loss(s, t).item() == pytest.approx(expected_a, rel=1e-4)
    assert rkd_loss(s, t).item() == pytest.approx(25 * expected_d + 50 * expected_a, rel=1e-4)


# --- short digits runs -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["soft", "hinton", "fitnets", "at", "rkd", "sp"])
def test_each_method_trains_a_digits_student(method, runs_copy, tmp_path):
    result = distill(
        T=100,
        method=method,
        epochs=10,
        runs_dir=runs_copy,
        results_dir=tmp_path / "results",
        device="cpu",
        force=True,  # soft and hinton train over the copied student-T100
    )
    meta = result.meta
    expected_name = "student-T100" if method in ("soft", "hinton") else f"student-T100-{method}"
    assert result.path.name == expected_name and meta["method"] == method
    assert meta["clean_acc"] > 0.5, (method, meta["clean_acc"])
    assert meta["alpha"] == (1.0 if method == "soft" else 0.9)
    if METHODS[method].uses_features:
        assert meta["feature_layer"] == ("classifier.2" if method == "rkd" else "features")
        assert (meta["regressor_params"] > 0) == (method == "fitnets")
    gap = pd.read_csv(tmp_path / "results" / "accuracy_gap.csv")
    assert list(gap.columns) == [*ACCURACY_GAP_COLUMNS, *ACCURACY_GAP_EXTRA]
    assert gap.loc[0, "method"] == method and gap.loc[0, "student_params"] == gap.loc[0, "teacher_params"]


def test_feature_term_changes_what_the_student_learns(runs_copy, tmp_path):
    common = dict(T=100, epochs=1, runs_dir=runs_copy, results_dir=tmp_path, device="cpu")
    plain = distill(method="hinton", name="plain", **common)
    with_sp = distill(method="sp", name="with-sp", **common)
    off = distill(method="sp", name="sp-off", feature_weight=0.0, **common)
    weights = {r.path.name: load_run(r.path)[0].state_dict() for r in (plain, with_sp, off)}
    key = "classifier.4.weight"
    assert torch.equal(weights["plain"][key], weights["sp-off"][key])  # same seed, no feature term
    assert not torch.equal(weights["plain"][key], weights["with-sp"][key])


def test_teacher_outputs_are_cached_once_and_reused_across_methods_and_temperatures(
    runs_copy, tmp_path, monkeypatch
):
    calls: list[list[str]] = []
    real = distill_module.compute_teacher_outputs

    def counting(model, x, layers, device, **kwargs):
        calls.append(list(layers))
        return real(model, x, layers, device, **kwargs)

    monkeypatch.setattr(distill_module, "compute_teacher_outputs", counting)
    cache = runs_copy / "digits" / "teacher-T100" / CACHE_DIR
    for path in cache.glob("*"):
        path.unlink()  # start from no cache, whatever the shared fixture left
    common = dict(teacher="teacher-T100", epochs=1, runs_dir=runs_copy, results_dir=tmp_path, device="cpu")
    first = distill(T=100, method="fitnets", **common)
    assert calls == [["features"]] and not first.meta["teacher_outputs_cached"]
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    for T, method in ((100, "soft"), (20, "hinton"), (5, "at"), (100, "sp")):
        result = distill(T=T, method=method, name=f"s-{method}-{T}", **common)
        assert result.meta["teacher_outputs_cached"]
    assert len(calls) == 1 and files[0].stat().st_mtime_ns == mtime
    distill(T=100, method="rkd", **common)  # a new layer: computed once, added to the same file
    assert calls[-1] == ["classifier.2"] and list(cache.glob("*.safetensors")) == files
    distill(T=100, method="soft", transfer_set="noise", name="s-noise", **common)  # other inputs, other key
    assert len(calls) == 3 and len(list(cache.glob("*.safetensors"))) == 2


def test_born_again_generations_each_teach_the_next(runs_copy, tmp_path):
    result = distill(
        T=100, generations=2, name="ban", epochs=3, runs_dir=runs_copy, results_dir=tmp_path, device="cpu"
    )
    names = [r.path.name for r in result.generations]
    assert names == ["ban-gen1", "ban-gen2"] and result.path.name == "ban-gen2"
    gen1 = json.loads((runs_copy / "digits" / "ban-gen1" / "meta.json").read_text())
    gen2 = json.loads((runs_copy / "digits" / "ban-gen2" / "meta.json").read_text())
    assert gen1["teacher"] == "teacher-T100" and gen2["teacher"] == "ban-gen1"
    assert gen2["teacher_acc"] == gen1["clean_acc"] and gen1["arch"] == gen2["arch"] == "digits-cnn"
    assert (gen1["generation"], gen2["generation"]) == (1, 2) and gen1["seed"] != gen2["seed"]
    x, _ = load_dataset("digits", "test")
    with torch.no_grad():
        first, second = (load_run(r.path)[0](x).argmax(1) for r in result.generations)
    assert (first == second).float().mean() > 0.6 and gen2["clean_acc"] > 0.4  # gen2 learned gen1


def test_smaller_student_on_unlabeled_transfer_set_records_sizes(runs_copy, tmp_path, monkeypatch):
    seen_labels = []
    real_fit = distill_module.fit

    def spy(model, x, y, *args, **kwargs):
        seen_labels.append(y.clone())
        return real_fit(model, x, y, *args, **kwargs)

    monkeypatch.setattr(distill_module, "fit", spy)
    result = distill(
        T=100, arch="digits-cnn-tiny", transfer_set="unlabeled", epochs=3, runs_dir=runs_copy,
        results_dir=tmp_path, device="cpu",
    )  # fmt: skip
    assert result.path.name == "student-T100-digits-cnn-tiny-unlabeled"
    assert bool((seen_labels[0] == -1).all())  # the labels never reach the loss
    row = pd.read_csv(tmp_path / "accuracy_gap.csv").iloc[0]
    assert (row["student_arch"], row["student_params"], row["teacher_params"]) == (
        "digits-cnn-tiny",
        9802,
        151306,
    )
    assert result.meta["clean_acc"] > 0.3


def test_bad_variant_options_fail_before_training(runs_copy, tmp_path):
    common = dict(T=100, runs_dir=runs_copy, results_dir=tmp_path, device="cpu", epochs=1)
    cases = [
        (dict(method="soft", alpha=0.5), "--method hinton"),
        (dict(method="hinton", alpha=1.0), "--method soft"),
        (dict(method="kd++"), "unknown distillation method"),
        (dict(method="hinton", transfer_set="unlabeled"), "needs hard labels"),
        (dict(transfer_set="web"), "unknown transfer set"),
        (dict(name="student"), "not a usable run name"),
        (dict(name="../x"), "not a usable run name"),
        (dict(generations=0), "--generations"),
        (dict(method="soft", layer="features"), "apply to feature methods"),
        (dict(method="at", arch="digits-mlp"), "needs spatial feature maps"),
        (dict(method="fitnets", layer="nowhere"), "has no layer"),
        (dict(arch="papernot-mnist"), "does not fit"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DefdistillError, match=message):
            distill(**common, **kwargs)
    assert not (tmp_path / "accuracy_gap.csv").exists()


# --- sizes -----------------------------------------------------------------------------------


def test_archs_lists_students_smaller_than_the_teacher():
    rows = {r["arch"]: r["params"] for r in architecture_table("digits")}
    assert rows["digits-cnn (default)"] == 151306
    assert rows["digits-cnn-tiny"] < rows["digits-mlp"] < rows["digits-cnn-small"] < 151306
    assert rows["papernot-mnist"] is None  # too deep for 8x8 inputs


def test_compression_table_measures_every_run(trained_runs, tmp_path):
    rows = measure_compression("digits", repeats=2, runs_dir=trained_runs.runs_dir, results_dir=tmp_path)
    assert {r["model"] for r in rows} == {"teacher-T1", "teacher-T100", "student-T100"}
    for row in rows:
        weights = trained_runs.runs_dir / "digits" / row["model"] / "model.safetensors"
        assert row["size_bytes"] == weights.stat().st_size and row["params"] == 151306
        assert row["us_per_input_b1"] > 0 and row["us_per_input_b256"] > 0 and 0 < row["clean_acc"] <= 1
    table = pd.read_csv(tmp_path / "compression.csv")
    assert list(table.columns[:4]) == ["dataset", "model", "role", "arch"] and len(table) == 3
    assert (tmp_path / "compression.md").is_file()


def test_report_compares_variants_by_accuracy_size_and_robustness(tmp_path):
    from defdistill.report import write_report
    from defdistill.store.tables import record_rows

    def gap_row(student, method, arch, params, acc):
        return {
            "dataset": "digits", "T": 100.0, "teacher": "teacher-T100", "teacher_T": 100.0,
            "teacher_acc": 0.97,
            "student": student, "student_acc": acc, "gap_pp": (0.97 - acc) * 100, "method": method,
            "student_arch": arch, "student_params": params, "teacher_params": 151306,
        }  # fmt: skip

    record_rows(
        tmp_path, "accuracy_gap",
        [gap_row("student-T100", "soft", "digits-cnn", 151306, 0.95),
         gap_row("student-T100-sp", "sp", "digits-cnn", 151306, 0.96),
         gap_row("student-T100-digits-cnn-tiny", "soft", "digits-cnn-tiny", 9802, 0.90)],
    )  # fmt: skip
    robustness = []
    attacked = [
        ("teacher-T100", "teacher", 0.9),
        ("student-T100", "student", 0.1),
        ("student-T100-sp", "student", 0.2),
        ("student-T100-digits-cnn-tiny", "student", 0.7),
    ]
    for model, role, success in attacked:
        robustness.append({
            "dataset": "digits", "model": model, "role": role, "T": 100.0, "attack": "fgsm", "norm": "linf",
            "eps": 0.3, "n": 10, "clean_acc": 1.0, "robust_acc": 1 - success, "success_rate": success,
            "median_dist": 0.3, "seconds": 0.1,
        })  # fmt: skip
    record_rows(tmp_path, "robustness", robustness)
    text = write_report(tmp_path).report.read_text()
    section = text.split("### Distillation variants")[1].split("\n## ")[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "fgsm_success@0.3" in lines["model"] and "params" in lines["model"]
    assert lines["teacher-T100"].split(" | ")[2] == "(teacher)"
    assert (
        " 9802 " in lines["student-T100-digits-cnn-tiny"]
        and "| 0.7 |" in lines["student-T100-digits-cnn-tiny"]
    )
    assert " sp " in lines["student-T100-sp"] and "| 0.2 |" in lines["student-T100-sp"]
