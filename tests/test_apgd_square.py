"""APGD (Croce & Hein 2020) and Square Attack (Andriushchenko et al. 2020) on a real digits model.

The module trains its own small network (no shared fixtures) in a couple of seconds and attacks
the first 200 inputs of the digits test split.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import foolbox as fb  # noqa: E402

import defdistill  # noqa: E402
from defdistill.evaluate.apgd import APGD, APGDT, apgd_attack, apgd_targeted  # noqa: E402
from defdistill.evaluate.square import Square, square_attack  # noqa: E402

N_TEST = 200


class _Scaled(torch.nn.Module):
    """Logits times a constant: what a network distilled at temperature T looks like at T=1."""

    def __init__(self, net: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.net = net
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.factor


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = defdistill.load_dataset("digits", split="train")
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def data(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = defdistill.load_dataset("digits", split="test")
    x, y = x[:N_TEST], y[:N_TEST]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9  # a real, trained model
    return x, y


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _robust_acc(model: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def _dist(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    d = (adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(p=2, dim=1)


# --- APGD ---------------------------------------------------------------------------------


def test_apgd_ce_is_at_least_as_strong_as_foolbox_linf_pgd_40(model, data):
    x, y = data
    torch.manual_seed(0)
    _, _, success = fb.attacks.LinfPGD(steps=40)(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=0.1)
    pgd_acc = 1.0 - success.float().mean().item()
    adv = apgd_attack(model, x, y, eps=0.1, loss="ce", generator=_gen())
    assert _robust_acc(model, adv, y) <= pgd_acc


@pytest.mark.parametrize(
    ("norm", "eps", "attack"),
    [
        ("linf", 0.1, "ce"),
        ("linf", 0.1, "dlr"),
        ("linf", 0.1, "apgd-t"),
        ("l2", 1.0, "ce"),
        ("l2", 1.0, "dlr"),
        ("l2", 1.0, "apgd-t"),
    ],
)
def test_apgd_perturbations_stay_in_the_eps_ball_and_the_unit_box(model, data, norm, eps, attack):
    x, y = data
    if attack == "apgd-t":
        adv = apgd_targeted(model, x, y, eps=eps, norm=norm, steps=50, n_target_classes=3, generator=_gen())
    else:
        adv = apgd_attack(model, x, y, eps=eps, norm=norm, loss=attack, steps=50, generator=_gen())
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert _dist(adv, x, norm).max().item() <= eps * (1 + 1e-5)
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    clean = _robust_acc(model, x, y)
    assert _robust_acc(model, adv, y) < clean - 0.2  # the attack does break inputs


def test_apgd_dlr_is_invariant_to_logit_scale_while_ce_saturates(model, data):
    x, y = data
    scaled = _Scaled(model, 100.0).eval()
    dlr = _robust_acc(model, apgd_attack(model, x, y, eps=0.1, loss="dlr", generator=_gen()), y)
    dlr_scaled = _robust_acc(model, apgd_attack(scaled, x, y, eps=0.1, loss="dlr", generator=_gen()), y)
    assert abs(dlr - dlr_scaled) <= 0.01
    ce = _robust_acc(model, apgd_attack(model, x, y, eps=0.1, loss="ce", generator=_gen()), y)
    ce_scaled = _robust_acc(model, apgd_attack(scaled, x, y, eps=0.1, loss="ce", generator=_gen()), y)
    assert ce_scaled > ce + 0.3  # float32 softmax saturates: the CE gradient vanishes


def test_apgd_targeted_is_at_least_as_strong_as_apgd_dlr(model, data):
    x, y = data
    dlr = _robust_acc(model, apgd_attack(model, x, y, eps=0.1, loss="dlr", generator=_gen()), y)
    t = _robust_acc(model, apgd_targeted(model, x, y, eps=0.1, generator=_gen()), y)
    assert t <= dlr + 0.01


def test_apgd_with_target_reaches_the_target_class(model, data):
    x, y = data
    target = (y + 1) % 10
    adv = apgd_attack(model, x, y, eps=0.2, loss="dlr-t", target=target, generator=_gen())
    with torch.no_grad():
        pred = model(adv).argmax(1)
    changed = (adv != x).flatten(1).any(1)
    assert changed.float().mean() > 0.5
    assert bool((pred[changed] == target[changed]).all())


def test_apgd_returns_inputs_that_are_already_misclassified_unchanged(model, data):
    x, y = data
    wrong = (y + 1) % 10  # every input is "misclassified" with respect to these labels
    assert torch.equal(apgd_attack(model, x, wrong, eps=0.1, generator=_gen()), x)
    assert torch.equal(apgd_targeted(model, x, wrong, eps=0.1, generator=_gen()), x)


def test_apgd_is_deterministic_given_the_generator_seed(model, data):
    x, y = data
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        a = apgd_attack(model, x, y, eps=eps, norm=norm, loss="dlr", steps=30, generator=_gen(3))
        b = apgd_attack(model, x, y, eps=eps, norm=norm, loss="dlr", steps=30, generator=_gen(3))
        assert torch.equal(a, b)
    a = apgd_targeted(model, x, y, eps=0.1, steps=30, n_target_classes=2, generator=_gen(3))
    b = apgd_targeted(model, x, y, eps=0.1, steps=30, n_target_classes=2, generator=_gen(3))
    assert torch.equal(a, b)


def test_apgd_does_not_accumulate_parameter_gradients(data):
    x, y = data
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    apgd_attack(net, x[:20], y[:20], eps=0.1, steps=5, generator=_gen())
    assert all(p.grad is None for p in net.parameters())


def test_apgd_foolbox_adapters_run_through_pytorch_model(model, data):
    x, y = data
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    for attack in (APGD(loss="ce"), APGD(loss="dlr", steps=50), APGDT(steps=30, n_target_classes=3)):
        raw, clipped, success = attack(fmodel, x, y, epsilons=[0.1, 0.2])
        assert len(raw) == len(clipped) == 2 and success.shape == (2, N_TEST)
        assert success[1].float().mean() >= success[0].float().mean() > 0.5
        for adv, eps in zip(clipped, (0.1, 0.2), strict=True):
            assert _dist(adv, x, "linf").max().item() <= eps + 1e-6
    # the adapter is the functional attack, seeded
    _, clipped, success = APGD(loss="dlr", seed=5)(fmodel, x, y, epsilons=0.1)
    adv = apgd_attack(model, x, y, eps=0.1, loss="dlr", generator=_gen(5))
    assert torch.equal(success, model(adv).argmax(1) != y)
    # L2 distance by norm
    l2 = APGD(norm="l2", steps=30)
    assert l2.distance is fb.distances.l2 and APGD().distance is fb.distances.linf
    _, clipped, success = l2(fmodel, x, y, epsilons=1.0)
    assert _dist(clipped, x, "l2").max().item() <= 1.0 + 1e-5 and success.float().mean() > 0.5
    with pytest.raises(ValueError, match="Misclassification"):
        APGD(steps=5)(fmodel, x, fb.criteria.TargetedMisclassification(y), epsilons=0.1)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_torchattacks_robust_accuracy(model, data, loss):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks (optional extra 'bench')")
    x, y = data
    theirs = torchattacks.APGD(model, norm="Linf", eps=0.1, steps=100, n_restarts=1, loss=loss, seed=0)(x, y)
    ours = apgd_attack(model, x, y, eps=0.1, loss=loss, steps=100, restarts=1, generator=_gen(0))
    assert abs(_robust_acc(model, ours, y) - _robust_acc(model, theirs, y)) <= 0.01


# --- Square -------------------------------------------------------------------------------


def _no_grad_forward(model: torch.nn.Module):
    def forward(t: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "Square Attack must not use gradients"
        assert not t.requires_grad
        return model(t)

    return forward


def test_square_success_grows_with_queries_and_is_positive_at_eps_0_2(model, data):
    x, y = data
    forward = _no_grad_forward(model)
    few = _robust_acc(model, square_attack(forward, x, y, eps=0.1, n_queries=20, generator=_gen()), y)
    many = _robust_acc(model, square_attack(forward, x, y, eps=0.1, n_queries=1000, generator=_gen()), y)
    assert many < few - 0.05
    at_02 = _robust_acc(model, square_attack(forward, x, y, eps=0.2, n_queries=300, generator=_gen()), y)
    assert at_02 < _robust_acc(model, x, y) - 0.5


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_square_perturbations_stay_in_the_eps_ball_without_gradients(model, data, norm, eps):
    x, y = data
    adv = square_attack(_no_grad_forward(model), x, y, eps=eps, norm=norm, n_queries=300, generator=_gen())
    assert _dist(adv, x, norm).max().item() <= eps * (1 + 1e-5)
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    assert _robust_acc(model, adv, y) < _robust_acc(model, x, y) - 0.2


def test_square_is_deterministic_and_runs_through_foolbox(model, data):
    x, y = data
    forward = _no_grad_forward(model)
    a = square_attack(forward, x, y, eps=0.1, n_queries=200, generator=_gen(1))
    b = square_attack(forward, x, y, eps=0.1, n_queries=200, generator=_gen(1))
    assert torch.equal(a, b)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    raw, clipped, success = Square(n_queries=200, seed=1)(fmodel, x, y, epsilons=[0.1, 0.2])
    assert success.shape == (2, N_TEST)
    assert torch.equal(success[0], model(a).argmax(1) != y)
    assert success[1].float().mean() > success[0].float().mean()
