"""Adversarial-training and robust-distillation objectives (defdistill.train.robust) on the digits data.

Self-contained: uses no fixture of the repository's conftest.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import defdistill
from defdistill.train.robust import (
    ADVERSARIAL_METHODS,
    ARD,
    ROBUST_DISTILLATION,
    RSLAD,
    TRADES,
    PGDAdversarialTraining,
    check_budget,
    default_budget,
    pgd_examples,
)

EPS, STEPS, STEP_SIZE = default_budget("digits")
Objective = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


def small_net() -> nn.Module:
    # Batch-norm so that train/eval mode matters.
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))


def plain_ce(model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(model(x), labels)


@pytest.fixture(scope="module")
def digits() -> dict[str, Tensor]:
    x, y = defdistill.load_dataset("digits", split="train")
    x_test, y_test = defdistill.load_dataset("digits", split="test")
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


def train(
    objective: Objective, data: dict[str, Tensor], epochs: int, targets: Tensor | None = None, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    model = small_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    x, y = data["x"], data["y"]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            batch_targets = y[idx] if targets is None else targets[idx]
            optimizer.zero_grad()
            objective(model, x[idx], batch_targets, y[idx]).backward()
            optimizer.step()
    return model.eval()


def accuracies(model: nn.Module, data: dict[str, Tensor], eps: float = EPS) -> tuple[float, float]:
    """(clean, robust) test accuracy; robust under our own 20-step L-inf PGD with a random start."""
    model.eval()
    x, y = data["x_test"], data["y_test"]
    x_adv = pgd_examples(
        model, x, y, eps=eps, steps=20, step_size=2.5 * eps / 20, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return clean, robust


@pytest.fixture(scope="module")
def trained(digits: dict[str, Tensor]) -> dict[str, nn.Module]:
    epochs = 5
    return {
        "plain": train(plain_ce, digits, epochs),
        "pgd": train(PGDAdversarialTraining(EPS, STEPS, STEP_SIZE), digits, epochs),
    }


# ------------------------------------------------------------------------------------- the defence works


def test_pgd_adversarial_training_is_robust(trained: dict[str, nn.Module], digits: dict[str, Tensor]) -> None:
    plain_clean, plain_robust = accuracies(trained["plain"], digits)
    pgd_clean, pgd_robust = accuracies(trained["pgd"], digits)
    print(f"\nplain: clean {plain_clean:.3f} robust {plain_robust:.3f}")
    print(f"PGD-AT: clean {pgd_clean:.3f} robust {pgd_robust:.3f} (eps {EPS}, PGD-20)")
    assert plain_clean > 0.9 and pgd_clean > 0.9
    assert pgd_robust > plain_robust + 0.2
    assert pgd_robust > 0.6


@pytest.mark.parametrize("method", ["ard", "rslad"])
def test_robust_distillation_gives_sane_student(
    method: str, trained: dict[str, nn.Module], digits: dict[str, Tensor]
) -> None:
    with torch.no_grad():
        teacher_logits = trained["pgd"].eval()(digits["x"])
    objective = ROBUST_DISTILLATION[method](EPS, STEPS, STEP_SIZE)
    student = train(objective, digits, epochs=2, targets=teacher_logits, seed=1)
    clean, robust = accuracies(student, digits)
    print(f"\n{method} student (2 epochs): clean {clean:.3f} robust {robust:.3f}")
    assert clean > 0.85
    assert robust > 0.3


# --------------------------------------------------------------------------------------------- objectives


def test_trades_with_beta_zero_is_clean_cross_entropy(digits: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = small_net().train()
    x, y = digits["x"][:64], digits["y"][:64]
    loss = TRADES(EPS, STEPS, STEP_SIZE, beta=0.0)(model, x, y, y)
    assert torch.equal(loss, F.cross_entropy(model(x), y))


def test_trades_differs_from_cross_entropy_when_beta_positive(digits: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = small_net().train()
    x, y = digits["x"][:64], digits["y"][:64]
    loss = TRADES(EPS, STEPS, STEP_SIZE, beta=6.0)(model, x, y, y)
    assert loss.item() > F.cross_entropy(model(x), y).item()


OBJECTIVES: dict[str, tuple[Objective, str]] = {
    "pgd": (PGDAdversarialTraining(EPS, STEPS, STEP_SIZE), "train"),
    "trades": (TRADES(EPS, STEPS, STEP_SIZE), "eval"),
    "ard": (ARD(EPS, STEPS, STEP_SIZE), "train"),
    "rslad": (RSLAD(EPS, STEPS, STEP_SIZE), "eval"),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_contract(name: str, digits: dict[str, Tensor]) -> None:
    objective, craft_mode = OBJECTIVES[name]
    torch.manual_seed(0)
    model = small_net().train()
    teacher = small_net().eval()
    x, y = digits["x"][:32], digits["y"][:32]
    with torch.no_grad():
        targets = teacher(x) if name in ROBUST_DISTILLATION else y

    modes: list[bool] = []
    model.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    loss = objective(model, x, targets, y)

    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert loss.dim() == 0 and math.isfinite(loss.item()) and loss.requires_grad
    # the crafting forwards ran in the reference's mode, the loss's forwards in train mode
    assert modes[:STEPS] == [craft_mode == "train"] * STEPS
    assert modes[-1] is True
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_restores_train_mode_on_error(name: str) -> None:
    objective, _ = OBJECTIVES[name]
    model = small_net().train()
    x = torch.rand(4, 1, 7, 7)  # wrong size: the first forward raises
    y = torch.zeros(4, dtype=torch.long)
    targets = torch.zeros(4, 10) if name in ROBUST_DISTILLATION else y
    with pytest.raises(RuntimeError):
        objective(model, x, targets, y)
    assert model.training


@pytest.mark.parametrize("method", ["ard", "rslad"])
def test_distillation_rejects_labels_as_targets(method: str) -> None:
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="teacher's logits"):
        ROBUST_DISTILLATION[method](EPS, STEPS, STEP_SIZE)(small_net(), torch.rand(4, 1, 8, 8), y, y)


def test_describe_is_recordable() -> None:
    for objective, _ in OBJECTIVES.values():
        record = objective.describe()  # type: ignore[attr-defined]
        assert record["eps"] == EPS and record["steps"] == STEPS and record["step_size"] == STEP_SIZE
        assert all(isinstance(v, int | float | str) for v in record.values())
    assert OBJECTIVES["trades"][0].describe()["beta"] == 6.0  # type: ignore[attr-defined]
    assert set(ADVERSARIAL_METHODS) == {"pgd", "trades"}
    assert set(ROBUST_DISTILLATION) == {"ard", "rslad"}


# ------------------------------------------------------------------------------------------------- PGD


@pytest.mark.parametrize(("loss", "start"), [("ce", "uniform"), ("kl", "normal"), ("ce", "none")])
def test_pgd_examples_feasible_and_deterministic(loss: str, start: str, digits: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = small_net().eval()
    x, y = digits["x"][:64], digits["y"][:64]
    with torch.no_grad():
        target = model(x) + torch.randn(64, 10) if loss == "kl" else y

    def craft(seed: int) -> Tensor:
        return pgd_examples(
            model,
            x,
            target,
            eps=0.1,
            steps=7,
            step_size=0.04,
            loss=loss,  # type: ignore[arg-type]
            start=start,  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(seed),
        )

    x_adv = craft(0)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max().item() <= 0.1 + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() > 0.05  # it moved
    assert torch.equal(x_adv, craft(0))
    assert all(p.grad is None for p in model.parameters())


def test_pgd_examples_increase_the_loss(digits: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = small_net().eval()
    x, y = digits["x"][:64], digits["y"][:64]
    x_adv = pgd_examples(model, x, y, eps=0.1, steps=5, step_size=0.05)
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_pgd_examples_seeds_differ_and_callable_loss(digits: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = small_net().eval()
    x, y = digits["x"][:16], digits["y"][:16]
    kwargs = {"eps": 0.1, "steps": 1, "step_size": 1e-3}
    a = pgd_examples(model, x, y, generator=torch.Generator().manual_seed(0), **kwargs)  # type: ignore[arg-type]
    b = pgd_examples(model, x, y, generator=torch.Generator().manual_seed(1), **kwargs)  # type: ignore[arg-type]
    assert not torch.equal(a, b)
    # a callable loss: minimise the true-class margin by maximising minus the true-class logit
    custom = pgd_examples(
        model,
        x,
        y,
        eps=0.1,
        steps=3,
        step_size=0.05,
        loss=lambda logits, labels: -logits.gather(1, labels[:, None]).sum(),
        start="none",
    )
    with torch.no_grad():
        assert (model(custom).gather(1, y[:, None]) <= model(x).gather(1, y[:, None]) + 1e-6).all()


# ---------------------------------------------------------------------------------------------- budgets


def test_default_budgets() -> None:
    assert default_budget("digits") == pytest.approx((0.1, 5, 0.05))
    assert default_budget("mnist") == (0.3, 40, 0.01)
    assert default_budget("fashion-mnist")[0] == 0.1
    assert default_budget("cifar10") == pytest.approx((8 / 255, 10, 2 / 255))
    for dataset in ("digits", "mnist", "fashion-mnist", "cifar10"):
        check_budget(*default_budget(dataset))
    with pytest.raises(ValueError, match="no default budget"):
        default_budget("imagenet")


@pytest.mark.parametrize(
    ("eps", "steps", "step_size", "beta", "word"),
    [
        (-0.1, 5, 0.01, None, "eps"),
        (1.5, 5, 0.01, None, "eps"),
        (float("nan"), 5, 0.01, None, "eps"),
        (0.1, 0, 0.01, None, "steps"),
        (0.1, 2.5, 0.01, None, "steps"),
        (0.1, 5, 0.0, None, "step_size"),
        (0.1, 5, -0.01, None, "step_size"),
        (0.1, 5, float("inf"), None, "step_size"),
        (0.1, 5, 0.01, -1.0, "beta"),
    ],
)
def test_check_budget_rejects(
    eps: float, steps: int, step_size: float, beta: float | None, word: str
) -> None:
    with pytest.raises(ValueError, match=word) as info:
        check_budget(eps, steps, step_size, beta)
    assert "\n" not in str(info.value)


def test_objectives_validate_on_construction() -> None:
    check_budget(0.0, 1, 1e-3, 0.0)  # the edges are allowed
    with pytest.raises(ValueError, match="eps"):
        PGDAdversarialTraining(2.0, 5, 0.01)
    with pytest.raises(ValueError, match="beta"):
        TRADES(0.1, 5, 0.01, beta=-1.0)
    with pytest.raises(ValueError, match="T must"):
        ARD(0.1, 5, 0.01, T=0.0)
    with pytest.raises(ValueError, match="alpha"):
        ARD(0.1, 5, 0.01, alpha=1.5)
    with pytest.raises(ValueError, match="craft_mode"):
        RSLAD(0.1, 5, 0.01, craft_mode="test")  # type: ignore[arg-type]
