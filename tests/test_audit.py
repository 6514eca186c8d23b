"""The audit: loading a user's model, the preflight findings, the calibrated verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, invoke
from torch import nn

FACTORY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


def make():
    torch.manual_seed(0)
    return Net()


def wrong_shape():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def not_a_module():
    return 42
"""


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from defdistill.data.registry import load_dataset

    x, y = load_dataset("digits", "test")
    x_train, y_train = load_dataset("digits", "train")
    return x, y, x_train, y_train


@pytest.fixture(scope="module")
def plain_net(digits) -> nn.Module:
    """A small undefended digits MLP (about 0.95 clean accuracy), trained in a second."""
    from defdistill.train.loop import Recipe, fit, temperature_cross_entropy

    _, _, x_train, y_train = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    recipe = Recipe(epochs=15, batch_size=64, lr=3e-3)
    fit(net, x_train, y_train, y_train, temperature_cross_entropy(1.0), recipe, torch.device("cpu"), 0)
    return net.eval()


class _ZeroBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroGradient(nn.Module):
    """The auto-attack issue's masking example: the identity forward, zero gradients backward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(_ZeroBackward.apply(x))


class Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(1)


class Noisy(nn.Module):
    def __init__(self, net: nn.Module, sigma: float = 0.05) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


# --- preflight ------------------------------------------------------------------------------


def test_preflight_reads_probabilities_randomness_and_zero_gradients(plain_net, digits):
    from defdistill.studies.audit import preflight

    x, y, _, _ = digits
    _, probabilities, randomized, state = preflight(plain_net, x, y, 10)
    assert (probabilities, randomized, state) == (False, False, "ok")
    findings, probabilities, _, _ = preflight(Softmax(plain_net), x, y, 10)
    assert probabilities and not {f.name: f for f in findings}["outputs_are_logits"].passed
    assert preflight(Noisy(plain_net), x, y, 10)[2]
    assert preflight(ZeroGradient(plain_net), x, y, 10)[3] == "zero"


def test_gradient_state_tells_none_nan_zero_and_ok_apart():
    from defdistill.evaluate.preflight import gradient_state

    assert gradient_state(None) == ("none", 1.0)
    assert gradient_state(torch.full((4, 3), math.nan))[0] == "nan"
    assert gradient_state(torch.zeros(4, 3))[0] == "zero"
    assert gradient_state(torch.ones(4, 3))[0] == "ok"


def test_outputs_without_a_gradient_are_recorded_and_still_attacked(plain_net, digits):
    from defdistill.studies.audit import AuditBudgets, audit

    class Detached(nn.Module):
        def forward(self, x):
            return plain_net(x).detach()

    x, y, _, _ = digits
    result = audit(Detached(), x[:30], y[:30], eps=[0.1], attacks=["square"], budgets=AuditBudgets.fast())
    assert result.gradients == "none"
    assert result.naive_robust_accuracy["0.1"] >= result.robust_accuracy["0.1"]


def test_outputs_of_the_wrong_shape_are_one_clear_error(plain_net, digits):
    from defdistill.errors import DefdistillError
    from defdistill.studies.audit import audit

    x, y, _, _ = digits
    with pytest.raises(DefdistillError, match=r"digits has 10 classes, so it must return \(\d+, 10\)"):
        audit(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x[:20], y[:20], eps=[0.1], dataset="digits")


# --- the audit on models with a known answer -------------------------------------------------


def test_zero_gradient_wrapper_is_masked_and_its_honest_robust_accuracy_is_low(plain_net, digits):
    from defdistill.studies.audit import AuditBudgets, audit

    x, y, x_train, y_train = digits
    result = audit(
        ZeroGradient(plain_net), x[:60], y[:60], eps=[0.1, 0.2], x_train=x_train, y_train=y_train,
        attacks=["apgd-ce", "square", "transfer", "bpda"], budgets=AuditBudgets.fast(),
    )  # fmt: skip
    assert result.gradients == "zero" and result.verdict == "masked", result.reason
    assert result.naive_robust_accuracy["0.2"] > 0.8 > 0.3 > result.robust_accuracy["0.2"]
    assert {a["name"] for a in result.attacks} >= {"fgsm", "pgd", "bpda", "transfer"}
    json.loads(result.to_json())  # strict JSON


def test_probability_outputs_are_attacked_through_their_log(plain_net, digits):
    from defdistill.studies.audit import AuditBudgets, audit

    x, y, _, _ = digits
    fast = {"eps": [0.1], "attacks": ["apgd-ce"], "budgets": AuditBudgets.fast()}
    result = audit(Softmax(plain_net), x[:40], y[:40], **fast)
    plain = audit(plain_net, x[:40], y[:40], **fast)
    assert result.outputs == "probabilities" and plain.outputs == "logits"
    apgd = {a["name"]: a["robust_accuracy"]["0.1"] for a in result.attacks}["apgd-ce"]
    assert abs(apgd - plain.robust_accuracy["0.1"]) <= 0.05


def test_randomised_model_is_judged_by_its_mean_softmax_with_eot(plain_net, digits):
    from defdistill.studies.audit import AuditBudgets, audit

    x, y, _, _ = digits
    result = audit(
        Noisy(plain_net), x[:30], y[:30], eps=[0.1], attacks=["apgd-ce"], budgets=AuditBudgets.fast()
    )
    assert result.randomized
    assert {c["name"]: c["passed"] for c in result.checks}["deterministic"] is False
    assert result.robust_accuracy["0.1"] <= result.naive_robust_accuracy["0.1"]


def test_a_randomised_model_is_judged_on_the_same_draws_for_clean_and_adversarial_inputs(plain_net, digits):
    from defdistill.studies.audit import AuditBudgets, _broken, _Context, _predict, _views

    x, y, _, _ = digits
    budgets = AuditBudgets.fast()
    views = _views(Noisy(plain_net, 0.3), False, True, budgets.eot_samples, budgets.judge_draws, seed=0)
    ctx = _Context(views, None, budgets.settings("linf"), budgets, "linf", 0, torch.device("cpu"))
    state = torch.get_rng_state()
    clean = _predict(views.judge, x, budgets.batch_size).argmax(1) == y
    assert torch.equal(clean, _predict(views.judge, x, budgets.batch_size).argmax(1) == y)
    assert torch.equal(state, torch.get_rng_state())  # the judge's draws leave the caller's RNG alone
    # an "attack" that returns the clean inputs breaks none of them: no break is decision noise
    assert not bool(_broken(ctx, x.clone(), x, y, clean, 0.1).any())
    fresh = _predict(views.decision, x, budgets.batch_size)  # the attacks' EOT draws stay fresh
    assert not torch.equal(fresh, _predict(views.decision, x, budgets.batch_size))


# --- the verdict, from flags -----------------------------------------------------------------


def _flags(n: int, robust: int) -> torch.Tensor:
    return torch.arange(n) < robust


def _grid(*pairs: tuple[int, int], n: int = 200):
    from defdistill.evaluate.verdict import grid_tests

    return grid_tests({0.05 * (i + 1): (_flags(n, a), _flags(n, b)) for i, (a, b) in enumerate(pairs)})


def test_verdict_is_masked_when_the_worst_case_breaks_many_more_inputs_at_any_eps():
    from defdistill.evaluate.verdict import calibrated_verdict

    verdict, reason = calibrated_verdict(_grid((190, 188), (150, 60), (100, 99)))
    assert verdict == "masked" and "eps 0.1" in reason


def test_verdict_is_not_masked_when_every_gap_is_ruled_out_above_the_minimum_effect():
    from defdistill.evaluate.verdict import calibrated_verdict

    assert calibrated_verdict(_grid((190, 190), (150, 149), (10, 10)))[0] == "not-masked"


def test_a_significant_but_tiny_gap_is_not_masking():
    from defdistill.evaluate.verdict import calibrated_verdict

    # 30 of 2000 inputs (0.015): significant, below the 0.05 minimum effect, and ruled out above it
    assert calibrated_verdict(_grid((1500, 1470), n=2000))[0] == "not-masked"


def test_verdict_is_inconclusive_on_too_few_inputs_and_says_how_many_would_settle_it():
    from defdistill.evaluate.verdict import calibrated_verdict

    verdict, reason = calibrated_verdict(_grid((15, 12), n=30))
    assert verdict == "inconclusive" and "inputs (now 30) would settle it" in reason


def test_saturated_softmax_without_robustness_to_mask_is_not_masked():
    """Naive and worst case agree (nothing standing at the larger eps): the structural sign
    only explains, it never makes the verdict."""
    from defdistill.evaluate.verdict import calibrated_verdict

    verdict, reason = calibrated_verdict(
        _grid((120, 118), (3, 2), (0, 0), n=360), explanation="softmax saturated on 0.98 of the inputs"
    )
    assert verdict == "not-masked" and "saturated" not in reason


def test_holm_adjusts_in_step_down_order():
    from defdistill.evaluate.verdict import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


# --- loading a factory, and the command --------------------------------------------------------


def test_load_factory_refuses_non_modules_pickles_and_ill_fitting_weights(tmp_path):
    from safetensors.torch import save_file

    from defdistill.errors import DefdistillError
    from defdistill.store.factory import load_factory

    (tmp_path / "fac.py").write_text(FACTORY)
    spec = f"{tmp_path / 'fac.py'}:make"
    model = load_factory(spec)
    assert not model.training
    with pytest.raises(DefdistillError, match="not a torch.nn.Module"):
        load_factory(f"{tmp_path / 'fac.py'}:not_a_module")
    with pytest.raises(DefdistillError, match="no callable 'missing'"):
        load_factory(f"{tmp_path / 'fac.py'}:missing")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DefdistillError, match="pickle"):
        load_factory(spec, tmp_path / "w.pt")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "body.3.bias"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(DefdistillError, match="missing body.3.bias"):
        load_factory(spec, tmp_path / "short.safetensors")
    state["body.3.bias"] = torch.full((10,), 7.0)
    save_file(state, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_factory(spec, tmp_path / "w.safetensors").body[3].bias, torch.full((10,), 7.0))


def test_audit_command_audits_a_factory_file_on_digits(tmp_path, monkeypatch):
    (tmp_path / "fac.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    result = invoke("audit", "fac.py:make", "--dataset", "digits", "--n", "40", "--eps", "0.05,0.1",
                    "--budget", "fast", "--quiet", "--results-dir", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("fac-make: ") and any(v in first for v in ("masked", "inconclusive"))
    record = json.loads((tmp_path / "r" / "audit" / "fac-make" / "audit.json").read_text())
    keys = "model dataset norm n randomized outputs gradients verdict robust_accuracy naive_robust_accuracy"
    assert set(keys.split()) | {"robust_accuracy_ci", "attacks", "checks"} <= set(record)
    assert record["n"] == 40 and set(record["robust_accuracy"]) == {"0.05", "0.1"}
    assert record["verdict"] in ("masked", "not-masked", "inconclusive")
    assert all(0 <= v <= 1 for v in record["robust_accuracy"].values())
    assert (tmp_path / "r" / "audit" / "fac-make" / "audit.md").read_text().startswith("# Audit: fac-make")


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        ("fac.py:wrong_shape", ("(40, 3)", "10 classes")),
        ("fac.py:not_a_module", ("not a torch.nn.Module",)),
        ("nowhere.py:make", ("no factory file",)),
    ],
)
def test_audit_command_bad_factory_is_one_clear_line(target, fragments, tmp_path, monkeypatch):
    (tmp_path / "fac.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    result = invoke("audit", target, "--n", "40", "--budget", "fast", "--results-dir", Path(tmp_path) / "r")
    assert_one_line_error(result, *fragments)


def test_audit_model_audits_a_run_by_name_and_refuses_weights_for_it(tmp_path):
    from defdistill.errors import DefdistillError
    from defdistill.studies.audit import AuditBudgets, audit_model
    from defdistill.train.loop import train_teacher

    runs = tmp_path / "runs"
    train_teacher(T=1, epochs=1, runs_dir=runs, device="cpu")
    fast = {"n": 30, "eps": [0.1], "attacks": ["square"], "budgets": AuditBudgets.fast(), "device": "cpu"}
    result, folder = audit_model("teacher-T1", runs_dir=runs, results_dir=tmp_path / "r", **fast)
    assert result.model == "teacher-T1" and folder == tmp_path / "r" / "audit" / "teacher-T1"
    assert json.loads((folder / "audit.json").read_text())["verdict"] == result.verdict
    with pytest.raises(DefdistillError, match="--weights goes with a factory"):
        audit_model("teacher-T1", weights=tmp_path / "w.safetensors", runs_dir=runs, **fast)
