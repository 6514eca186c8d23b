"""The paper's architectures and training recipes (Papernot et al. 2016, Tables I and II)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defdistill.core.runtime import seed_everything
from defdistill.data.registry import get_dataset_spec
from defdistill.errors import DefdistillError
from defdistill.models import build_model, count_parameters
from defdistill.train.loop import (
    Recipe,
    make_optimizer,
    make_recipe,
    recipe_for,
    schedule,
    train_teacher,
    warm_start,
)
from defdistill.train.losses import distillation_loss


def conv(c_in: int, c_out: int) -> int:
    return c_out * c_in * 3 * 3 + c_out


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# By hand: 3x3 convolutions without padding, 2x2 max-pools. MNIST 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4;
# CIFAR-10 32 -> 30 -> 28 -> 14 -> 12 -> 10 -> 5; digits-cnn pads, 8 -> 8 -> 8 -> 4.
EXPECTED = {
    "mnist": conv(1, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64)
    + dense(64 * 4 * 4, 200) + dense(200, 200) + dense(200, 10),
    "fashion-mnist": conv(1, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64)
    + dense(64 * 4 * 4, 200) + dense(200, 200) + dense(200, 10),
    "cifar10": conv(3, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128)
    + dense(128 * 5 * 5, 256) + dense(256, 256) + dense(256, 10),
    "digits": conv(1, 32) + conv(32, 64) + dense(64 * 4 * 4, 128) + dense(128, 10),
}  # fmt: skip


@pytest.mark.parametrize("dataset", list(EXPECTED))
def test_default_architecture_has_the_papers_shape_and_parameter_count(dataset: str) -> None:
    spec = get_dataset_spec(dataset)
    model = build_model(spec.default_arch, spec.shape, spec.num_classes, spec.mean, spec.std).eval()
    assert count_parameters(model) == EXPECTED[dataset]
    assert EXPECTED["mnist"] == 312_202 and EXPECTED["cifar10"] == 1_147_978
    with torch.no_grad():
        assert model(torch.rand(3, *spec.shape)).shape == (3, 10)


@pytest.mark.parametrize("arch", ["papernot-mnist", "papernot-cifar10"])
def test_papernot_networks_drop_out_half_of_each_hidden_fully_connected_layer(arch: str) -> None:
    spec = get_dataset_spec("mnist" if arch == "papernot-mnist" else "cifar10")
    model = build_model(arch, spec.shape, 10, spec.mean, spec.std)
    layers = list(model.classifier)
    dropouts = [i for i, m in enumerate(layers) if isinstance(m, nn.Dropout)]
    assert [layers[i].p for i in dropouts] == [0.5, 0.5]
    assert all(isinstance(layers[i - 1], nn.ReLU) for i in dropouts)  # after each hidden FC + ReLU
    assert isinstance(layers[-1], nn.Linear)


def test_mnist_like_datasets_default_to_the_papers_mnist_recipe() -> None:
    for dataset in ("mnist", "fashion-mnist"):
        r = recipe_for(dataset)
        assert (r.name, r.optimizer, r.lr, r.momentum, r.batch_size, r.epochs) == (
            "papernot-mnist", "sgd", 0.1, 0.5, 128, 50,
        )  # fmt: skip
        assert r.warmup_epochs_at_T1 == 1 and r.t_squared is False and r.lr_decay == 1.0


def test_cifar10_recipe_decays_learning_rate_and_momentum_after_ten_epochs() -> None:
    r = recipe_for("cifar10")
    assert (r.optimizer, r.lr, r.momentum, r.batch_size, r.epochs) == ("sgd", 0.01, 0.9, 128, 50)
    assert schedule(r, 0) == (0.01, 0.9) and schedule(r, 9) == (0.01, 0.9)
    assert schedule(r, 10) == pytest.approx((0.01 * 0.95, 0.9 * 0.5))
    assert schedule(r, 12) == pytest.approx((0.01 * 0.95**3, 0.9 * 0.5**3))


def test_digits_keeps_adam_without_warm_start() -> None:
    r = recipe_for("digits")
    assert (r.optimizer, r.lr, r.batch_size, r.epochs, r.warmup_epochs_at_T1) == ("adam", 1e-3, 64, 30, 0)
    assert schedule(r, 29) == (1e-3, 0.0)
    assert isinstance(make_optimizer(list(nn.Linear(2, 2).parameters()), r), torch.optim.Adam)


def test_sgd_recipe_builds_sgd_with_its_momentum() -> None:
    optimizer = make_optimizer(list(nn.Linear(2, 2).parameters()), recipe_for("cifar10"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_user_overrides_keep_the_rest_of_the_preset() -> None:
    r = make_recipe("digits", epochs=3, recipe="papernot-cifar10")
    assert r.epochs == 3 and r.optimizer == "sgd" and r.lr_decay == 0.95 and r.name == "papernot-cifar10"
    with pytest.raises(DefdistillError, match="unknown recipe 'nope': choose one of digits, papernot-mnist"):
        make_recipe("digits", recipe="nope")


def test_papernot_soft_loss_drops_hintons_t_squared() -> None:
    s, t, y = torch.randn(5, 10), torch.randn(5, 10) * 30, torch.arange(5)
    hinton = distillation_loss(s, t, y, T=50.0)
    papernot = distillation_loss(s, t, y, T=50.0, t_squared=False)
    assert hinton.item() == pytest.approx(papernot.item() * 2500, rel=1e-5)


def test_teacher_and_student_warm_starts_reach_the_same_weights() -> None:
    """Carlini's code starts teacher and student from one init; with one seed ours do too."""
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.5, batch_size=128, warmup_epochs_at_T1=1)
    spec = get_dataset_spec("digits")
    device = torch.device("cpu")
    weights = []
    for _ in range(2):
        seed_everything(0)
        model = build_model(spec.default_arch, spec.shape, 10, spec.mean, spec.std)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        losses = warm_start(model, "digits", "data", recipe, device, seed=0)
        assert len(losses) == 1
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(before["classifier.1.weight"], weights[0]["classifier.1.weight"])


def test_sgd_preset_with_warm_start_trains_and_records_its_settings(tmp_path) -> None:
    result = train_teacher(
        dataset="digits", T=10, epochs=2, recipe="papernot-mnist", runs_dir=tmp_path, device="cpu"
    )
    meta = result.meta
    assert meta["recipe"] == "papernot-mnist" and meta["optimizer"] == "sgd" and meta["momentum"] == 0.5
    assert meta["warmup_epochs_at_T1"] == 1 and meta["t_squared"] is False
    assert meta["clean_acc"] > 0.5  # one warm epoch and two at T=10 already learn digits
