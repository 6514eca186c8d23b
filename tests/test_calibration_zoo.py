"""The audit against the calibration zoo (studies.calibration): eight digits models whose
masking is known. Each verdict must equal the truth, and each audited robust accuracy must lie
within 5 points of a reference that knows the trick (torchattacks APGD through the plain
network, with straight-through BPDA, or with EOT), on the same inputs."""

from __future__ import annotations

import pytest
import torch

from defdistill.studies import calibration as cal

N = 100
EPS = (0.1,)  # PGD-AT's training budget; the grid is in benchmarks/calibration.py
TOLERANCE = 0.05
# Every zoo model takes 10-30 s to audit and attack on 2 busy cores: the plain network and the
# zero-gradient wrapper (one of each truth) stay in `make test-fast`, the others are marked slow.
FAST = ("plain", "zero-gradient")
ZOO_NAMES = (
    "plain", "pgd-at", "student-t100", "zero-gradient", "quantised", "noisy", "scaled-logits",
    "probabilities",
)  # fmt: skip


# Too few inputs to rule a 0.05 gap out may leave a not-masked model inconclusive (n = 100 here;
# the committed results/calibration.md audits all 360 digits test inputs), but never masked.
NOT_MASKED_AT_N = {"noisy"}


def _cases() -> list:
    cases = []
    for name in ZOO_NAMES:
        marks = [] if name in FAST else [pytest.mark.slow]
        cases.append(pytest.param(name, marks=marks, id=name))
    return cases


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> cal.Zoo:
    return cal.build_zoo(tmp_path_factory.mktemp("zoo-runs"), epochs=10, device="cpu")


@pytest.fixture(scope="session")
def audited(zoo: cal.Zoo) -> dict:
    """name -> (audit result, reference per eps), computed once per model on first use."""
    return {}


def _audit(zoo: cal.Zoo, audited: dict, name: str):
    from defdistill.studies.audit import AuditBudgets, audit

    if name not in audited:
        entry = zoo.models[name]
        x, y = zoo.x_test[:N], zoo.y_test[:N]
        result = audit(
            entry.model, x, y, eps=EPS, x_train=zoo.x_train, y_train=zoo.y_train, seed=0,
            budgets=AuditBudgets.fast(), dataset="digits",
        )  # fmt: skip
        reference = cal.reference_robust_accuracy(entry, x, y, EPS, budget=cal.ReferenceBudget.fast())
        audited[name] = (result, reference)
    return audited[name]


def test_the_zoo_has_every_trick_of_the_issue(zoo: cal.Zoo) -> None:
    assert tuple(zoo.models) == ZOO_NAMES
    assert [e.name for e in zoo if e.truth == cal.NOT_MASKED] == ["plain", "pgd-at", "noisy", "probabilities"]
    assert [e.name for e in zoo if e.randomized] == ["noisy"]
    assert min(zoo.clean_acc.values()) > 0.85, zoo.clean_acc


def test_the_tricks_do_what_they_claim(zoo: cal.Zoo) -> None:
    x = zoo.x_test[:32].clone().requires_grad_(True)
    plain = zoo.models["plain"].model
    with torch.no_grad():
        labels = plain(x).argmax(1)
    zero = zoo.models["zero-gradient"].model
    assert torch.equal(zero(x).argmax(1), labels)
    (grad,) = torch.autograd.grad(zero(x).sum(), x)
    assert float(grad.abs().max()) == 0.0
    probs = zoo.models["probabilities"].model(x)
    assert torch.allclose(probs.sum(1), torch.ones(32)) and float(probs.min()) >= 0
    noisy = zoo.models["noisy"].model
    assert not torch.equal(noisy(x), noisy(x))
    (qgrad,) = torch.autograd.grad(zoo.models["quantised"].model(x).sum(), x)
    assert float(qgrad.abs().max()) == 0.0
    (bpda,) = torch.autograd.grad(zoo.models["quantised"].reference_model(x).sum(), x)
    assert float(bpda.abs().max()) > 0.0


def test_a_noisy_model_decides_the_same_way_on_the_same_inputs(zoo: cal.Zoo) -> None:
    entry = zoo.models["noisy"]
    x = zoo.x_test[:50]
    assert torch.equal(cal.predict(entry, x), cal.predict(entry, x))


@pytest.mark.parametrize("name", _cases())
def test_audit_verdict_matches_the_zoo_truth(zoo: cal.Zoo, audited: dict, name: str) -> None:
    entry = zoo.models[name]
    result, _ = _audit(zoo, audited, name)
    assert result.randomized == entry.randomized, result.checks
    assert result.outputs == entry.outputs
    allowed = {entry.truth, "inconclusive"} if name in NOT_MASKED_AT_N else {entry.truth}
    assert result.verdict in allowed, (
        result.reason,
        result.naive_robust_accuracy,
        result.robust_accuracy,
    )


@pytest.mark.parametrize("name", _cases())
def test_audited_robust_accuracy_is_within_5_points_of_the_trick_aware_reference(
    zoo: cal.Zoo, audited: dict, name: str
) -> None:
    result, reference = _audit(zoo, audited, name)
    for key, ref in reference.items():
        ours = result.robust_accuracy[key]
        assert abs(ours - ref.robust_accuracy) <= TOLERANCE, (
            name,
            key,
            ours,
            ref.robust_accuracy,
            ref.per_attack,
        )


def test_calibration_tables_count_each_model_once_and_say_how_many_verdicts_are_right(tmp_path) -> None:
    import pandas as pd

    rows = [
        {"model": m, "truth": t, "verdict": v, "eps": e, "n": 10, "naive_robust_acc": 0.9,
         "audited_robust_acc": 0.5, "reference_robust_acc": 0.52, "difference": -0.02,
         "within_5_points": True, "reference": "APGD"}
        for m, t, v in [("a", "masked", "masked"), ("b", "not-masked", "inconclusive")]
        for e in (0.1, 0.2)
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    table = cal.confusion_table(frame)
    assert table.set_index("truth").loc["masked", "masked"] == 1
    assert table.set_index("truth").loc["not-masked", "inconclusive"] == 1
    assert int(table[["masked", "not-masked", "inconclusive"]].to_numpy().sum()) == 2
    cal.write_calibration(frame, tmp_path)
    text = (tmp_path / "calibration.md").read_text()
    assert "Verdicts right: 1 of 2" in text
    assert len(pd.read_csv(tmp_path / "calibration.csv")) == 4
