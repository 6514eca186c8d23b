"""Audit any model: the full evaluation and a calibrated gradient-masking verdict.

`audit` takes an `nn.Module` (ours or anyone's) and inputs; it reads what the model is
(evaluate.preflight), runs the naive evaluation (FGSM and cross-entropy PGD on the model as
given) and the honest one (APGD-CE, APGD-DLR, APGD-T, Square, random noise, HopSkipJump,
transfer from a surrogate distilled from the model's own predictions, and BPDA through that
surrogate; CW as a distance under L2), through the log of probabilities and expectation over
transformation where the model needs them, judges every adversarial example on the model's
own decision, and ends with evaluate.verdict's paired test at every eps. `audit_model` is the
command line's composition: it loads a run or a factory, audits it on the dataset's test
inputs and writes results/audit/NAME/audit.{json,md}.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import foolbox as fb  # noqa: E402

from ..checks import check_positive_int, check_seed  # noqa: E402
from ..core.fileio import atomic_write_text, ensure_writable_dir  # noqa: E402
from ..core.progress import SILENT, ProgressReporter  # noqa: E402
from ..core.runtime import resolve_device, seed_everything  # noqa: E402
from ..core.stats import wilson_interval  # noqa: E402
from ..data.registry import DATASETS, DatasetSpec, get_dataset_spec, load_dataset  # noqa: E402
from ..errors import DefdistillError  # noqa: E402
from ..evaluate.adapter import seeded_generator  # noqa: E402
from ..evaluate.apgd import apgd_attack, apgd_targeted  # noqa: E402
from ..evaluate.attacks import ATTACKS, AttackSettings, check_budgets, input_gradients_only  # noqa: E402
from ..evaluate.decision import HopSkipJump  # noqa: E402
from ..evaluate.metrics import WITHIN_EPS_SLACK, encode_flags, perturbation_norms  # noqa: E402
from ..evaluate.noise import random_noise_attack  # noqa: E402
from ..evaluate.preflight import (  # noqa: E402
    Expectation,
    Finding,
    GradientGuard,
    LogProbabilities,
    SurrogateGradient,
    check_output_shape,
    gradient_finding,
    gradient_state,
    input_gradients,
    is_randomized,
    looks_like_probabilities,
    output_kind_finding,
    randomized_finding,
    saturated_fraction,
)
from ..evaluate.square import square_attack  # noqa: E402
from ..evaluate.verdict import VerdictThresholds, calibrated_verdict, grid_tests  # noqa: E402
from ..models import build_model  # noqa: E402
from ..train.loop import Recipe, fit  # noqa: E402

NAIVE_ATTACKS = ("fgsm", "pgd")
HONEST_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "square", "noise", "transfer", "bpda", "hsj")
OPTIONAL_ATTACKS = ("cw",)  # L2 only: a minimal-perturbation distance, counted within eps
AUDIT_ATTACKS = NAIVE_ATTACKS + HONEST_ATTACKS + OPTIONAL_ATTACKS
DESCRIPTIONS = {
    "fgsm": "FGSM, one gradient step on the outputs as given (naive)",
    "pgd": "PGD on cross-entropy of the outputs as given (naive)",
    "apgd-ce": "APGD on cross-entropy (Croce & Hein 2020); naive when it reads the outputs as given",
    "apgd-dlr": "APGD on the scale-invariant DLR loss (Croce & Hein 2020)",
    "apgd-t": "APGD on the targeted DLR loss toward the top other classes (Croce & Hein 2020)",
    "square": "Square Attack, score-based, no gradients (Andriushchenko et al. 2020)",
    "noise": "best of random corners of the ball (L-inf) or points on the sphere (L2)",
    "transfer": "APGD-CE on a surrogate distilled from the model's predictions, judged on the model "
    "(Papernot et al. 2017)",
    "bpda": "APGD-CE and APGD-DLR with the surrogate's gradients on the model's outputs "
    "(BPDA, Athalye et al. 2018)",
    "hsj": "HopSkipJump, decision-based, on the first inputs (Chen et al. 2020)",
    "cw": "Carlini-Wagner L2, minimal perturbation, counted within eps (Carlini & Wagner 2017)",
}
# L2 budgets by dataset, when none are given (L-inf: DatasetSpec.eps_grid)
DEFAULT_L2_EPS = {"digits": (0.25, 0.5, 1.0), "mnist": (0.5, 1.0, 1.5, 2.0), "fashion-mnist": (0.5, 1.0, 1.5)}
DEFAULT_L2_OTHER = (0.25, 0.5)
DEFAULT_N = 500
SATURATED = 0.5  # a softmax saturated on more than half the correct inputs
TOLERANCE = 0.05  # rate slack for the explanatory checks


@dataclass(frozen=True)
class AuditBudgets:
    """Attack budgets of an audit. The defaults are the field's: APGD 100 steps and 9 target
    classes, Square 5,000 queries, 20 EOT draws (AutoAttack's `rand`), the library's PGD (40
    steps) as the naive attack. A randomised model is judged by the mean softmax of
    `judge_draws` draws, the same draws for the clean input and every adversarial example
    (`eot_samples` is for the attacks' gradients and queries only): a judge of few fresh draws
    is noisy, and the per-input worst case over attacks would count its noise as breaks.
    `AuditBudgets.fast()` is a small budget for tests."""

    pgd_steps: int = 40
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 9
    square_queries: int = 5000
    noise_draws: int = 100
    hsj_inputs: int = 50
    hsj_steps: int = 10
    hsj_initial_evals: int = 50
    hsj_max_evals: int = 200
    cw_steps: int = 200
    eot_samples: int = 20
    judge_draws: int = 100
    surrogate_epochs: int = 20
    surrogate_inputs: int = 10_000
    batch_size: int = 256

    @classmethod
    def fast(cls) -> AuditBudgets:
        """A budget for tests: a few seconds on digits, strong enough on its simple cases. Only the
        honest attacks shrink: the naive evaluation (FGSM, 40-step PGD) stays what users run, so
        a weaker naive attack is never mistaken for masking."""
        return cls(
            apgd_steps=20, apgd_targets=3, square_queries=300, noise_draws=10, hsj_inputs=10,
            hsj_steps=3, hsj_initial_evals=20, hsj_max_evals=50, cw_steps=50, eot_samples=4,
            judge_draws=64, surrogate_epochs=5, surrogate_inputs=2000,
        )  # fmt: skip

    def settings(self, norm: str) -> AttackSettings:
        """The AttackSettings of the registry's attacks (naive FGSM and PGD, HSJ, CW)."""
        return AttackSettings(
            norm=norm, pgd_steps=self.pgd_steps, pgd_rel_stepsize=2.5 / self.pgd_steps,
            apgd_steps=self.apgd_steps, apgd_restarts=self.apgd_restarts, apgd_targets=self.apgd_targets,
            square_queries=self.square_queries, noise_draws=self.noise_draws, cw_steps=self.cw_steps,
            batch_size=self.batch_size, decision_n=self.hsj_inputs, hsj_steps=self.hsj_steps,
            hsj_initial_evals=self.hsj_initial_evals, hsj_max_evals=self.hsj_max_evals,
        )  # fmt: skip

    def check(self) -> AuditBudgets:
        for f in fields(self):
            check_positive_int(getattr(self, f.name), f.name)
        return self


BUDGETS = ("standard", "fast")


def audit_budgets(name: str) -> AuditBudgets:
    """The named budget: "standard" (the field's) or "fast" (`AuditBudgets.fast`)."""
    if name not in BUDGETS:
        raise DefdistillError(f"unknown budget {name!r}: choose standard or fast")
    return AuditBudgets() if name == "standard" else AuditBudgets.fast()


def eps_key(eps: float) -> str:
    """An eps as audit.json keys it: "0.1", "0.02"."""
    return f"{eps:g}"


@dataclass
class AuditResult:
    """What an audit measured and concluded; `to_json()` is audit.json.

    Robust accuracies are fractions of all n inputs, keyed by eps (`eps_key`); intervals are
    95% Wilson. `robust_accuracy` is the per-input worst case over every attack,
    `naive_robust_accuracy` what FGSM and cross-entropy PGD alone report. `attacks` lists each
    attack with its robust accuracy per eps; `checks` every finding (preflight and the
    explanatory signs); `tests` the paired test at each eps behind the verdict. `per_input`
    holds the flags behind the figures (clean, and robust per eps, naive and worst case).
    """

    model: str
    dataset: str
    norm: str
    n: int
    eps: list[float]
    randomized: bool
    outputs: str
    gradients: str
    verdict: str
    reason: str
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    naive_robust_accuracy: dict[str, float]
    robust_accuracy_ci: dict[str, list[float]]
    naive_robust_accuracy_ci: dict[str, list[float]]
    attacks: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    seed: int
    budgets: dict[str, Any]
    seconds: float = 0.0
    per_input: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """audit.json's text."""
        return json.dumps(_finite(self.as_dict()), indent=2) + "\n"


def _finite(value: Any) -> Any:
    """NaN as null: audit.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --- the model as the attacks see it ---------------------------------------------------------


@dataclass
class _Views:
    """The audited model seen four ways: as given (naive attacks), prepared for honest
    gradient attacks (log of probabilities, expectation, guarded gradients), the decision the
    query attacks probe (a randomised model's mean softmax over fresh EOT draws), and the judge
    whose decision the clean inputs and every adversarial example are checked against (for a
    randomised model, the mean softmax over `judge_draws` seeded draws, the same at every call)."""

    raw: nn.Module
    honest: nn.Module
    decision: nn.Module
    judge: nn.Module
    as_given: bool  # the honest view is the model as given (logits, deterministic)


def _views(
    model: nn.Module, probabilities: bool, randomized: bool, draws: int, judge_draws: int, seed: int
) -> _Views:
    scores: nn.Module = LogProbabilities(model) if probabilities else model
    decision: nn.Module = Expectation(scores, draws) if randomized else scores
    judge: nn.Module = Expectation(scores, judge_draws, seed=seed) if randomized else scores
    raw, honest = GradientGuard(model).eval(), GradientGuard(decision).eval()
    return _Views(raw, honest, decision.eval(), judge.eval(), as_given=not (probabilities or randomized))


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def preflight(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    dataset: str = "the dataset",
    eot_samples: int = 20,
    probe: int = 64,
    judge_draws: int | None = None,
) -> tuple[list[Finding], bool, bool, str]:
    """(findings, probabilities, randomized, gradient state) on the first `probe` inputs."""
    xs, ys = x[:probe], y[:probe]
    with torch.no_grad():
        first = model(xs)
        shape = check_output_shape(first, len(xs), num_classes, dataset)
        second = model(xs)
    probabilities = looks_like_probabilities(first)
    randomized = is_randomized(first, second)
    state, fraction = gradient_state(input_gradients(model, xs, ys))
    findings = [
        shape, output_kind_finding(probabilities), randomized_finding(randomized, eot_samples, judge_draws),
        gradient_finding(state, fraction),
    ]  # fmt: skip
    return findings, probabilities, randomized, state


# --- the surrogate -------------------------------------------------------------------------


def _soft_cross_entropy(logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def distill_surrogate(
    judge: nn.Module,
    x_train: Tensor,
    arch: str,
    num_classes: int,
    budgets: AuditBudgets,
    device: torch.device,
    seed: int,
    progress: ProgressReporter = SILENT,
) -> nn.Module:
    """A network of `arch` trained on the audited model's own predicted probabilities on
    `x_train` (Papernot et al. 2017's substitute, by distillation): it needs only queries."""
    x_train = x_train[: budgets.surrogate_inputs].to(device)
    targets = F.softmax(_predict(judge, x_train, budgets.batch_size), dim=1).detach()
    labels = targets.argmax(1)
    mean = tuple(float(v) for v in x_train.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in x_train.std(dim=(0, 2, 3)))
    seed_everything(seed)
    net = build_model(arch, tuple(x_train.shape[1:]), num_classes, mean, std)  # type: ignore[arg-type]
    recipe = Recipe(epochs=budgets.surrogate_epochs, batch_size=64, lr=1e-3, name="audit-surrogate")
    fit(net, x_train, labels, targets, _soft_cross_entropy, recipe, device, seed, progress, "surrogate")
    return net.eval()


# --- the attacks --------------------------------------------------------------------------


@dataclass
class _Context:
    views: _Views
    surrogate: nn.Module | None
    settings: AttackSettings
    budgets: AuditBudgets
    norm: str
    seed: int
    device: torch.device


def _batched(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _foolbox(ctx: _Context, name: str, model: nn.Module, x: Tensor, y: Tensor, eps: float | None) -> Tensor:
    attack = ATTACKS[name].build(ctx.settings, ctx.norm)  # type: ignore[misc]
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=ctx.device)
    seed_everything(ctx.seed)

    def one(xb: Tensor, yb: Tensor) -> Tensor:
        _, clipped, _ = attack(fmodel, xb, yb, epsilons=eps)
        return clipped.detach()

    with input_gradients_only(model):
        return _batched(one, x, y, ctx.settings.batch_size)


def _craft(ctx: _Context, name: str, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Adversarial examples of one bounded attack at eps (x itself where it found none)."""
    b, norm, v = ctx.budgets, ctx.norm, ctx.views
    gen = seeded_generator(ctx.seed, x)
    common: dict[str, Any] = {"eps": eps, "norm": norm, "generator": gen}
    apgd = {"steps": b.apgd_steps, "restarts": b.apgd_restarts, **common}
    if name in NAIVE_ATTACKS:
        return _foolbox(ctx, name, v.raw, x, y, eps)
    if name in ("apgd-ce", "apgd-dlr"):
        loss = name.split("-")[1]
        return _batched(lambda xb, yb: apgd_attack(v.honest, xb, yb, loss=loss, **apgd), x, y, b.batch_size)
    if name == "apgd-t":
        targets = min(b.apgd_targets, _num_classes(v.decision, x) - 1)
        return _batched(
            lambda xb, yb: apgd_targeted(v.honest, xb, yb, n_target_classes=targets, **apgd),
            x,
            y,
            b.batch_size,
        )
    if name == "square":
        return _batched(
            lambda xb, yb: square_attack(v.decision, xb, yb, n_queries=b.square_queries, **common),
            x,
            y,
            b.batch_size,
        )
    if name == "noise":
        return _batched(
            lambda xb, yb: random_noise_attack(v.decision, xb, yb, draws=b.noise_draws, **common),
            x,
            y,
            b.batch_size,
        )
    assert ctx.surrogate is not None
    surrogate = ctx.surrogate
    if name == "transfer":
        return _batched(lambda xb, yb: apgd_attack(surrogate, xb, yb, loss="ce", **apgd), x, y, b.batch_size)
    if name == "bpda":
        hybrid = SurrogateGradient(v.decision, surrogate)
        adv = _batched(lambda xb, yb: apgd_attack(hybrid, xb, yb, loss="ce", **apgd), x, y, b.batch_size)
        standing = _predict(v.judge, adv, b.batch_size).argmax(1) == y
        if standing.any():
            idx = standing.nonzero().squeeze(1)
            adv[idx] = _batched(
                lambda xb, yb: apgd_attack(hybrid, xb, yb, loss="dlr", **apgd), x[idx], y[idx], b.batch_size
            )
        return adv
    raise ValueError(f"unknown bounded audit attack {name!r}")


def _num_classes(model: nn.Module, x: Tensor) -> int:
    return int(_predict(model, x[:1], 1).shape[1])


def _minimal(ctx: _Context, name: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(adversarial examples, their perturbation norms) of a minimal-perturbation attack."""
    v = ctx.views
    if name == "hsj":
        k = min(ctx.budgets.hsj_inputs, len(x))
        s = ctx.settings
        attack = HopSkipJump(
            steps=s.hsj_steps, initial_gradient_eval_steps=s.hsj_initial_evals,
            max_gradient_eval_steps=s.hsj_max_evals, constraint="l2" if ctx.norm == "l2" else "linf",
        )  # fmt: skip
        fmodel = fb.PyTorchModel(v.decision, bounds=(0, 1), device=ctx.device)
        seed_everything(ctx.seed)
        adv = x.clone()
        if k:
            _, clipped, _ = attack(fmodel, x[:k], y[:k], epsilons=None)
            adv[:k] = clipped.detach()
    else:  # cw, on the prepared model
        adv = _foolbox(ctx, name, v.honest, x, y, None)
    return adv, perturbation_norms(adv - x, ctx.norm)


def _broken(
    ctx: _Context, adv: Tensor, x: Tensor, y: Tensor, clean: Tensor, eps: float, dist: Tensor | None = None
) -> Tensor:
    """Inputs classified correctly whose adversarial example, within eps, the judge gets wrong."""
    dist = perturbation_norms(adv - x, ctx.norm) if dist is None else dist
    within = dist <= eps * (1 + 1e-5) + WITHIN_EPS_SLACK
    wrong = _predict(ctx.views.judge, adv, ctx.budgets.batch_size).argmax(1) != y
    return (clean & within & wrong).cpu()


# --- the audit ---------------------------------------------------------------------------


def _infer_dataset(x: Tensor) -> DatasetSpec | None:
    shape = tuple(x.shape[1:])
    matches = [s for s in DATASETS.values() if s.shape == shape]
    return matches[0] if matches else None


def _rates(flags: Tensor) -> tuple[float, list[float]]:
    n, k = len(flags), int(flags.sum())
    lo, hi = wilson_interval(k, n)
    return (k / n if n else math.nan), [lo, hi]


def _explanatory(
    saturation: float, rates: dict[str, dict[float, float]], naive: dict[float, float], eps: Sequence[float]
) -> list[Finding]:
    """Structural signs, recorded to explain a verdict (never to make one)."""
    found = [
        Finding(
            "softmax_saturated", saturation <= SATURATED,
            f"{saturation:.2f} of the correctly classified inputs have a softmax saturated at 1.0 in float32",
        )
    ]  # fmt: skip
    if "fgsm" in rates and "pgd" in rates:
        worst = max(rates["pgd"][e] - rates["fgsm"][e] for e in eps)
        found.append(
            Finding(
                "iterative_beats_single_step", worst <= TOLERANCE,
                f"PGD leaves at most {worst:+.3f} more inputs standing than FGSM at any eps",
            )
        )  # fmt: skip
    free = [a for a in ("square", "hsj", "transfer", "noise") if a in rates]
    if free:
        gaps = [(naive[e] - rates[a][e], a, e) for a in free for e in eps]
        gap, attack, at = max(gaps)
        found.append(
            Finding(
                "white_box_beats_black_box", gap <= TOLERANCE,
                f"gradient-free {attack} leaves {gap:.3f} fewer inputs standing than FGSM/PGD at eps {at:g}"
                if gap > TOLERANCE else "no gradient-free attack beats FGSM/PGD by more than "
                f"{TOLERANCE:g} (largest: {attack}, {gap:+.3f} at eps {at:g})",
            )
        )  # fmt: skip
    if len(eps) > 1:
        lo, hi = min(eps), max(eps)
        rise = naive[lo] - naive[hi]
        found.append(
            Finding(
                "naive_success_grows_with_eps", rise >= TOLERANCE or naive[lo] < TOLERANCE,
                f"naive robust accuracy {naive[lo]:.3f} at eps {lo:g}, {naive[hi]:.3f} at eps {hi:g}",
            )
        )  # fmt: skip
    return found


def audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: Sequence[float],
    norm: str = "linf",
    x_train: Tensor | None = None,
    y_train: Tensor | None = None,
    seed: int = 0,
    attacks: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressReporter = SILENT,
    budgets: AuditBudgets | None = None,
    dataset: str | None = None,
    name: str = "model",
    thresholds: VerdictThresholds = VerdictThresholds(),
) -> AuditResult:
    """Audit `model` on (x, y) at every eps: naive against honest robust accuracy, and the verdict.

    `model` maps images in [0, 1], shaped (N, C, H, W) like x, to class scores (logits or
    probabilities; deterministic or randomised). `x_train` (labels unused: the surrogate
    learns the model's own predictions) trains the surrogate of `transfer` and `bpda`; without
    it those two are skipped. `attacks` picks the honest attacks (default HONEST_ATTACKS; FGSM
    and PGD always run: they are the naive evaluation); `cw` adds Carlini-Wagner under L2.
    `dataset` (default: the registered dataset of x's shape) gives the class count and the
    surrogate's architecture. `budgets` default to the field's (`AuditBudgets()`).
    """
    started = time.perf_counter()
    budgets = (budgets or AuditBudgets()).check()
    check_seed(seed)
    if norm not in ("linf", "l2"):
        raise DefdistillError(f"unknown norm {norm!r}: choose linf or l2")
    if x.dim() != 4 or len(x) != len(y) or len(x) == 0:
        raise DefdistillError(
            f"expected inputs (N, C, H, W) and N labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    budget_list = sorted(check_budgets(eps, norm, x[0].numel()))
    if not budget_list or min(budget_list) <= 0:
        raise DefdistillError("every eps of an audit must be > 0")
    chosen = list(HONEST_ATTACKS if attacks is None else attacks)
    unknown = [a for a in chosen if a not in AUDIT_ATTACKS]
    if unknown:
        raise DefdistillError(f"unknown audit attack {unknown[0]!r}: choose from {', '.join(AUDIT_ATTACKS)}")
    if "cw" in chosen and norm != "l2":
        raise DefdistillError("cw is an L2 distance: use it with norm l2")
    spec = get_dataset_spec(dataset) if dataset is not None else _infer_dataset(x)
    torch_device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    x, y = x.to(torch_device).float(), y.to(torch_device).long()
    model = model.to(torch_device).eval()
    num_classes = spec.num_classes if spec is not None else _num_classes(model, x)
    dataset_name = spec.name if spec is not None else "custom"

    findings, probabilities, randomized, gradients = preflight(
        model, x, y, num_classes, dataset_name, budgets.eot_samples, judge_draws=budgets.judge_draws
    )
    views = _views(model, probabilities, randomized, budgets.eot_samples, budgets.judge_draws, seed)
    scores = _predict(views.judge, x, budgets.batch_size)
    clean = (scores.argmax(1) == y).cpu()
    saturation = saturated_fraction(
        _predict(LogProbabilities(model) if probabilities else model, x, budgets.batch_size).cpu(), clean
    )

    surrogate = None
    needs_surrogate = [a for a in chosen if a in ("transfer", "bpda")]
    if needs_surrogate and x_train is None:
        findings.append(Finding("surrogate", False, "no training inputs given: transfer and bpda skipped"))
        chosen = [a for a in chosen if a not in needs_surrogate]
    elif needs_surrogate:
        assert x_train is not None
        arch = spec.default_arch if spec is not None else "digits-cnn-small"
        surrogate = distill_surrogate(
            views.decision, x_train.float(), arch, num_classes, budgets, torch_device, seed, progress
        )
        agree = float(
            (_predict(surrogate, x, budgets.batch_size).argmax(1) == scores.argmax(1)).float().mean()
        )
        findings.append(
            Finding(
                "surrogate",
                True,
                f"{arch} distilled from the model's predictions agrees with it on {agree:.3f}",
            )
        )
    if randomized and "hsj" in chosen:  # it walks a decision boundary that moves at every call
        findings.append(Finding("hsj", False, "HopSkipJump skipped: it needs a deterministic decision"))
        chosen = [a for a in chosen if a != "hsj"]
    ctx = _Context(views, surrogate, budgets.settings(norm), budgets, norm, seed, torch_device)

    broken: dict[str, dict[float, Tensor]] = {}
    seconds: dict[str, float] = {}
    clean_dev = clean.to(torch_device)
    for attack in [*NAIVE_ATTACKS, *[a for a in chosen if a not in NAIVE_ATTACKS]]:
        t0 = time.perf_counter()
        with progress.task(attack, len(budget_list)) as advance:
            if attack in ("hsj", "cw"):
                adv, dist = _minimal(ctx, attack, x, y)
                broken[attack] = {e: _broken(ctx, adv, x, y, clean_dev, e, dist) for e in budget_list}
                advance(len(budget_list))
            else:
                broken[attack] = {}
                for e in budget_list:
                    broken[attack][e] = _broken(ctx, _craft(ctx, attack, x, y, e), x, y, clean_dev, e)
                    advance(1)
        seconds[attack] = round(time.perf_counter() - t0, 3)

    # APGD-CE on the outputs as given (logits, deterministic) is cross-entropy PGD better
    # optimised: what it adds over PGD is an unconverged attack, not masking
    naive_set = [*NAIVE_ATTACKS, *(["apgd-ce"] if "apgd-ce" in broken and views.as_given else [])]
    naive_flags = {}
    for e in budget_list:
        naive_union = torch.zeros_like(clean)
        for a in naive_set:
            naive_union |= broken[a][e]
        naive_flags[e] = clean & ~naive_union
    worst_flags = {}
    for e in budget_list:
        union = torch.zeros_like(clean)
        for flags in broken.values():
            union |= flags[e]
        worst_flags[e] = clean & ~union
    rates = {a: {e: float((clean & ~f[e]).double().mean()) for e in budget_list} for a, f in broken.items()}
    naive_rates = {e: float(naive_flags[e].double().mean()) for e in budget_list}
    findings += _explanatory(saturation, rates, naive_rates, budget_list)

    tests = grid_tests({e: (naive_flags[e], worst_flags[e]) for e in budget_list}, thresholds)
    structural = [f.name for f in findings if not f.passed and f.name not in ("surrogate", "hsj")]
    verdict, reason = calibrated_verdict(
        tests, thresholds, "signs: " + ", ".join(structural) if structural else ""
    )

    def keyed(flags: dict[float, Tensor]) -> tuple[dict[str, float], dict[str, list[float]]]:
        pairs = {eps_key(e): _rates(f) for e, f in flags.items()}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}

    robust, robust_ci = keyed(worst_flags)
    naive, naive_ci = keyed(naive_flags)
    attack_rows = [
        {
            "name": a, "description": DESCRIPTIONS[a], "naive": a in naive_set,
            "robust_accuracy": {eps_key(e): r for e, r in rates[a].items()}, "seconds": seconds[a],
        }
        for a in broken
    ]  # fmt: skip
    return AuditResult(
        model=name, dataset=dataset_name, norm=norm, n=len(x), eps=budget_list, randomized=randomized,
        outputs="probabilities" if probabilities else "logits", gradients=gradients, verdict=verdict,
        reason=reason, clean_accuracy=float(clean.float().mean()), robust_accuracy=robust,
        naive_robust_accuracy=naive, robust_accuracy_ci=robust_ci, naive_robust_accuracy_ci=naive_ci,
        attacks=attack_rows, checks=[f.as_dict() for f in findings], tests=[t.as_dict() for t in tests],
        seed=seed, budgets=asdict(budgets), seconds=round(time.perf_counter() - started, 3),
        per_input={
            "clean": encode_flags(clean),
            "robust": {eps_key(e): encode_flags(f) for e, f in worst_flags.items()},
            "naive_robust": {eps_key(e): encode_flags(f) for e, f in naive_flags.items()},
        },
    )  # fmt: skip


# --- the command line's composition ----------------------------------------------------------


def default_eps(dataset: str, norm: str) -> tuple[float, ...]:
    """The dataset's L-inf grid, or its L2 grid."""
    if norm == "l2":
        return DEFAULT_L2_EPS.get(dataset, DEFAULT_L2_OTHER)
    return get_dataset_spec(dataset).eps_grid


def audit_markdown(result: AuditResult) -> str:
    """audit.md: the verdict, naive against honest robust accuracy per eps, attacks, checks."""
    lines = [
        f"# Audit: {result.model} ({result.dataset}, {result.norm}, n = {result.n})",
        "",
        f"**Verdict: {result.verdict}.** {result.reason}.",
        "",
        f"Clean accuracy {result.clean_accuracy:.3f}; outputs: {result.outputs}; randomised: "
        f"{'yes' if result.randomized else 'no'}; gradients: {result.gradients}.",
        "",
        "| eps | naive robust acc (FGSM, PGD) | 95% CI | worst-case robust acc | 95% CI | gap | Holm p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result.tests:
        k = eps_key(t["eps"])
        nlo, nhi = result.naive_robust_accuracy_ci[k]
        lo, hi = result.robust_accuracy_ci[k]
        lines.append(
            f"| {k} | {result.naive_robust_accuracy[k]:.3f} | {nlo:.3f}-{nhi:.3f} | "
            f"{result.robust_accuracy[k]:.3f} | {lo:.3f}-{hi:.3f} | {t['gap']:.3f} | {t['p_holm']:.2g} |"
        )
    keys = [eps_key(e) for e in result.eps]
    lines += ["", "## Robust accuracy per attack", "", "| attack | " + " | ".join(keys) + " | seconds |"]
    lines.append("| --- | " + " | ".join("---" for _ in keys) + " | --- |")
    for a in result.attacks:
        cells = " | ".join(f"{a['robust_accuracy'][k]:.3f}" for k in keys)
        lines.append(f"| {a['name']}{' (naive)' if a['naive'] else ''} | {cells} | {a['seconds']:.1f} |")
    lines += ["", "## Checks", "", "| check | passed | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['name']} | {'yes' if c['passed'] else 'no'} | {c['detail']} |" for c in result.checks]
    return "\n".join(lines) + "\n"


def _default_name(spec: str) -> str:
    target, _, attr = spec.rpartition(":")
    stem = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
    return f"{stem}-{attr}"


def audit_model(
    model: str,
    *,
    weights: str | Path | None = None,
    dataset: str = "digits",
    norm: str = "linf",
    eps: Sequence[float] | None = None,
    n: int | None = DEFAULT_N,
    seed: int = 0,
    name: str | None = None,
    attacks: Sequence[str] | None = None,
    budgets: AuditBudgets | None = None,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> tuple[AuditResult, Path]:
    """Audit a run (role, name or folder) or a factory (`file.py:function`, `module:function`)
    on the first n test inputs of `dataset`; write results/audit/NAME/audit.{json,md}.
    Returns the result and the folder written."""
    from ..store.factory import is_factory_spec, load_factory
    from ..store.runs import load_run, resolve_model

    spec = get_dataset_spec(dataset)
    if n is not None:
        check_positive_int(n, "--n")
    check_seed(seed)
    torch_device = resolve_device(device)
    if is_factory_spec(model):
        net = load_factory(model, weights, torch_device)
        label = name or _default_name(model)
    else:
        if weights is not None:
            raise DefdistillError("--weights goes with a factory (file.py:function); a run carries its own")
        path = resolve_model(model, runs_dir, dataset)
        net, _ = load_run(path, dataset=dataset, map_location=torch_device)
        label = name or path.name
    if not label or any(c in label for c in "/\\") or label.startswith("."):
        raise DefdistillError(f"--name {label!r} must be a plain folder name")
    budget_list = list(default_eps(dataset, norm) if eps is None else eps)
    out = ensure_writable_dir(Path(results_dir) / "audit" / label, "--results-dir")  # before the work
    x, y = load_dataset(dataset, "test", data_dir)
    x_train, y_train = load_dataset(dataset, "train", data_dir)
    if n is not None:
        x, y = x[:n], y[:n]
    result = audit(
        net, x, y, eps=budget_list, norm=norm, x_train=x_train, y_train=y_train, seed=seed, attacks=attacks,
        device=torch_device, progress=progress, budgets=budgets, dataset=spec.name, name=label,
    )  # fmt: skip
    atomic_write_text(out / "audit.json", result.to_json())
    atomic_write_text(out / "audit.md", audit_markdown(result))
    return result, out
