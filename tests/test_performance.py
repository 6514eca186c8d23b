"""What the benchmarks pointed at, kept fixed: no wasted work in the attack path, honest CW
failures, and the CPU thread policy. Nothing here is timed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import foolbox as fb  # noqa: E402

from defdistill.core.runtime import THREADS_ENV, configure_threads  # noqa: E402
from defdistill.data.registry import load_dataset  # noqa: E402
from defdistill.errors import DefdistillError  # noqa: E402
from defdistill.evaluate.attacks import AttackSettings, foolbox_cw_search, run_attack  # noqa: E402
from defdistill.models import predict_logits  # noqa: E402
from defdistill.store.runs import load_run  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture
def teacher(trained_runs):
    model, _ = load_run(trained_runs.teacher_t1, dataset="digits")
    return model.eval()


@pytest.fixture
def inputs():
    x, y = load_dataset("digits", "test")
    return x[:60], y[:60]


def test_attacks_take_input_gradients_only_and_restore_requires_grad(teacher, inputs):
    x, y = inputs
    first = next(teacher.parameters())
    first.requires_grad_(False)  # a caller's own choice must survive the attack
    run_attack(teacher, x, y, "pgd", [0.1], AttackSettings(pgd_steps=3), CPU)
    params = list(teacher.parameters())
    assert all(p.grad is None for p in params)  # Foolbox's backward() filled these before
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)


def test_fgsm_takes_its_clean_predictions_from_its_own_forward_pass(teacher, inputs):
    x, y = inputs
    calls = []
    handle = teacher.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        rows = run_attack(teacher, x, y, "fgsm", [0.1, 0.2], device=CPU)
    finally:
        handle.remove()
    assert calls == [len(x)] * 4  # per budget: the gradient's pass and the success check, no third

    clean = predict_logits(teacher, x, CPU).argmax(1) == y
    fmodel = fb.PyTorchModel(teacher, bounds=(0, 1), device=CPU)
    _, _, is_adv = fb.attacks.FGSM()(fmodel, x, y, epsilons=[0.1, 0.2])
    for row, adv in zip(rows, is_adv, strict=True):
        assert row["clean_acc"] == int(clean.sum()) / len(x)
        assert row["robust_acc"] == int((clean & ~adv).sum()) / len(x)
        assert row["success_rate"] == int((clean & adv).sum()) / int(clean.sum())


def test_cw_counts_a_failed_search_as_a_failure_not_as_a_black_image(teacher, inputs):
    x, y = inputs
    # too few steps to succeed often; Foolbox's search, so that both run the same attack
    weak = foolbox_cw_search(AttackSettings(cw_steps=2, cw_binary_search_steps=1, cw_stepsize=0.01), 0.01)
    clean = predict_logits(teacher, x, CPU).argmax(1) == y
    fmodel = fb.PyTorchModel(teacher, bounds=(0, 1), device=CPU)
    raw = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=1, steps=2, stepsize=0.01, initial_const=0.01)
    _, advs, is_adv = raw(fmodel, x, y, epsilons=None)
    black = advs.flatten(1).abs().amax(1) == 0
    assert int((clean & is_adv & black).sum()) > 0  # Foolbox would count these as successes

    row = run_attack(teacher, x, y, "cw", settings=weak, device=CPU)[0]
    genuine = clean & is_adv & ~black
    assert row["success_rate"] == int(genuine.sum()) / int(clean.sum())
    assert row["robust_acc"] == int((clean & ~genuine).sum()) / len(x)


def test_cpu_threads_follow_the_environment_and_default_to_one(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        assert configure_threads() == 1
        monkeypatch.setenv(THREADS_ENV, "2")
        assert configure_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "0")  # torch's own choice: whatever it was left at
        assert configure_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "two")
        with pytest.raises(DefdistillError, match=THREADS_ENV):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_seeding_turns_deterministic_kernels_on_without_importing_the_compiler():
    code = (
        "import sys, torch; from defdistill.core.runtime import seed_everything; seed_everything(0); "
        "print(torch.are_deterministic_algorithms_enabled(), "
        "torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "False"]  # torch._inductor costs ~1.4 s and ~150 MB


@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_channels_last_max_pool_gives_the_stock_pooling_values_and_gradients(dataset):
    import copy

    import torch.nn.functional as F
    from torch import nn

    from defdistill.data.registry import get_dataset_spec
    from defdistill.models import MaxPool2d, build_model

    spec = get_dataset_spec(dataset)
    torch.manual_seed(0)
    ours = build_model(spec.default_arch, spec.shape, spec.num_classes, spec.mean, spec.std)
    stock = copy.deepcopy(ours)
    swapped = 0
    for module in stock.modules():
        for name, child in module.named_children():
            if isinstance(child, MaxPool2d):
                module._modules[name] = nn.MaxPool2d(child.kernel_size, child.stride)
                swapped += 1
    assert swapped and not any(type(m) is MaxPool2d for m in stock.modules())
    # quantised inputs and post-ReLU zeros: ties inside the pooling windows are common
    x = (torch.rand(16, *spec.shape) * 4).round() / 4
    y = torch.randint(0, spec.num_classes, (16,))
    for train in (False, True):
        grads = []
        for model in (ours, stock):
            model.train(train)
            torch.manual_seed(1)  # the same dropout masks
            xg = x.clone().requires_grad_(True)
            model.zero_grad()
            logits = model(xg)
            F.cross_entropy(logits, y).backward()
            grads.append((logits.detach(), xg.grad, [p.grad.clone() for p in model.parameters()]))
        (lo, gx, gp), (lo_s, gx_s, gp_s) = grads
        assert torch.equal(lo, lo_s) and torch.equal(gx, gx_s)
        assert all(torch.equal(a, b) for a, b in zip(gp, gp_s, strict=True))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), stock.eval()(x))
