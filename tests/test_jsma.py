"""JSMA (Papernot et al. 2016) in defdistill.evaluate.jsma: JSMA-F vs JSMA-Z on a plain digits model
and on a saturated (x100 logits) stand-in for a distilled network at T=1 (Carlini & Wagner 2016)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import defdistill
from defdistill.evaluate.jsma import jsma, jsma_all_targets

GAMMA = 0.145
N_PIX = 64
MAX_PAIRS = math.floor(GAMMA * N_PIX / 2)  # 4 pairs -> at most 8 of 64 pixels


class _Scaled(nn.Module):
    """Logits x100: the softmax at T=1 saturates, as on a defensively distilled network."""

    def __init__(self, base: nn.Module, scale: float) -> None:
        super().__init__()
        self.base = base
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    x, y = defdistill.load_dataset("digits", split="train")
    model = nn.Sequential(nn.Flatten(), nn.Linear(N_PIX, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    hot = _Scaled(model, 100.0).eval()
    xt, yt = defdistill.load_dataset("digits", split="test")
    with torch.no_grad():
        correct = model(xt).argmax(1) == yt
    assert correct.float().mean() > 0.9
    xc, yc = xt[correct][:60], yt[correct][:60]
    return model, hot, xc, yc


def _rate(ok: torch.Tensor) -> float:
    return float(ok.float().mean())


def test_jsma_f_reaches_target_changing_at_most_gamma_pixels_to_max(digits):
    model, _, x, y = digits
    target = (y + 1) % 10
    x_adv, ok, l0 = jsma(model, x, target, variant="f", gamma=GAMMA)
    assert x_adv.shape == x.shape and ok.shape == l0.shape == (len(x),) and ok.dtype == torch.bool
    assert _rate(ok) >= 0.7
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) == target, ok)
    changed = x_adv != x
    assert torch.equal(l0, changed.flatten(1).sum(1).float() / N_PIX)
    assert (changed.flatten(1).sum(1) <= 2 * MAX_PAIRS).all() and (l0 <= GAMMA).all()
    # every pixel is either untouched or set to the maximum 1.0
    assert torch.equal(x_adv, torch.where(changed, torch.ones_like(x), x))
    assert not torch.equal(x_adv, x)


def test_saturated_softmax_defeats_jsma_f_but_not_jsma_z(digits):
    model, hot, x, y = digits
    target = (y + 1) % 10
    f_plain = _rate(jsma(model, x, target, variant="f")[1])
    f_hot = _rate(jsma(hot, x, target, variant="f")[1])
    z_plain = _rate(jsma(model, x, target, variant="z")[1])
    z_hot = _rate(jsma(hot, x, target, variant="z")[1])
    # Softmax Jacobian vanishes (no admissible pair) -> JSMA-F fails on the saturated network ...
    assert f_hot <= 0.1 and f_hot <= f_plain - 0.5
    # ... while JSMA-Z, working from the logits, is unaffected (Carlini & Wagner 2016).
    assert z_hot >= 0.5 and abs(z_hot - z_plain) <= 0.05


def test_batched_attack_equals_one_input_at_a_time(digits):
    # Inputs that reach their target stop changing while the rest of the batch continues.
    model, _, x, y = digits
    x, target = x[:12], (y[:12] + 3) % 10
    for variant in ("f", "z"):
        a_all, ok_all, l0_all = jsma(model, x, target, variant=variant)
        a_one, ok_one, l0_one = jsma(model, x, target, variant=variant, batch_size=1)
        assert torch.equal(a_all, a_one) and torch.equal(ok_all, ok_one) and torch.equal(l0_all, l0_one)


def test_all_targets_shape_and_success_match_per_target_calls(digits):
    model, _, x, y = digits
    x, y = x[:15], y[:15]
    r = jsma_all_targets(model, x, y, variant="z", gamma=GAMMA, num_classes=10)
    assert r.targets.shape == r.success.shape == r.l0_fraction.shape == (15, 9)
    assert r.any_success.shape == r.min_l0_fraction.shape == (15,)
    assert r.adversarials.shape == (15, 9, 1, 8, 8)
    assert not (r.targets == y[:, None]).any()
    for j in range(9):
        x_adv, ok, l0 = jsma(model, x, r.targets[:, j], variant="z", gamma=GAMMA)
        assert torch.equal(r.success[:, j], ok) and torch.equal(r.l0_fraction[:, j], l0)
        assert torch.equal(r.adversarials[:, j], x_adv)
    assert torch.equal(r.any_success, r.success.any(1))
    masked = torch.where(r.success, r.l0_fraction, torch.full_like(r.l0_fraction, math.inf)).amin(1)
    assert torch.equal(r.min_l0_fraction[r.any_success], masked[r.any_success])
    assert r.min_l0_fraction[~r.any_success].isnan().all()


def test_mnist_sized_inputs_run_within_budget():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval().requires_grad_(False)
    x = torch.rand(3, 1, 28, 28)
    target = (model(x).argmax(1) + 1) % 10
    x_adv, ok, l0 = jsma(model, x, target, variant="z", batch_size=2)
    assert x_adv.shape == x.shape and (l0 <= GAMMA).all()
    assert ((x_adv == x) | (x_adv == 1.0)).all()


def test_success_rate_agrees_with_torchattacks_jsma(digits):
    torchattacks = pytest.importorskip("torchattacks", reason="independent JSMA implementation (bench extra)")
    model, _, x, y = digits
    target = (y + 1) % 10
    # torchattacks' JSMA differentiates the model's output, i.e. the logits -> compare JSMA-Z.
    # Its budget is ceil(gamma * n / 2) pairs (5 on 8x8 at gamma=0.145) where the paper and ours
    # use floor (4); give it gamma = 2 * 4 / 64 so both run 4 pairs. Its search domain is x < 0.99
    # (ours x < 1; the same on digits, whose values are k/16), and where no pair is admissible it
    # keeps modifying pixel 0 while ours stops: the remaining, small difference.
    attack = torchattacks.JSMA(model, theta=1.0, gamma=2 * MAX_PAIRS / N_PIX)
    attack.set_mode_targeted_by_label(quiet=True)
    x_ta = attack(x, target)
    with torch.no_grad():
        ta = _rate(model(x_ta).argmax(1) == target)
    ours = _rate(jsma(model, x, target, variant="z", gamma=GAMMA)[1])
    assert abs(ours - ta) <= 0.05, (ours, ta)
