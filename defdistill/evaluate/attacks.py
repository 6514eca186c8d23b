"""The attack registry and the runner that measures and records every attack the same way.

Each attack is a registry entry: the norms it supports, whether it takes an epsilon budget,
and how to build it from `AttackSettings` (a Foolbox attack, or a batch function for attacks
Foolbox lacks, such as JSMA). The attack families live in their own modules (gradient, cw,
decision, apgd, square, autoattack, noise, jsma); the metrics are defined once, in metrics.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import foolbox as fb  # noqa: E402

from ..checks import check_choice, check_eps, check_names, check_positive_int, check_seed, check_temperature  # noqa: E402
from ..core.faults import crash_point  # noqa: E402
from ..core.fileio import ensure_writable_dir  # noqa: E402
from ..core.progress import SILENT, ProgressReporter  # noqa: E402
from ..core.runtime import resolve_device, seed_everything  # noqa: E402
from ..data.registry import get_dataset_spec, load_dataset  # noqa: E402
from ..errors import DefdistillError  # noqa: E402
from ..models import predict_logits  # noqa: E402
from ..store.runs import (  # noqa: E402
    SURROGATE_NAME,
    check_finite_weights,
    current_weights,
    format_T,
    load_run,
    resolve_model,
    run_identity,
)
from ..store.tables import (
    PER_INPUT,  # noqa: E402
    check_records,  # noqa: E402
    record_rows,  # noqa: E402
)
from .apgd import APGD, APGDT  # noqa: E402
from .autoattack import AUTOATTACK_VERSION, AutoAttack  # noqa: E402
from .cw import L2CarliniWagner  # noqa: E402
from .decision import HopSkipJump  # noqa: E402
from .gradient import FGSM, MarginLinfPGD, TemperatureLinfPGD, TransferAttack, _digest  # noqa: E402
from .jsma import jsma_all_targets  # noqa: E402
from .metrics import AttackOutcome, attack_metrics, encode_flags, perturbation_norms  # noqa: E402
from .noise import RandomNoise  # noqa: E402
from .square import Square  # noqa: E402
from .worst_case import record_worst_case  # noqa: E402

NORMS = ("linf", "l2")
DEFAULT_EPS = (0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class AttackSettings:
    """Attack hyper-parameters; the defaults are the ones the tables are made with.

    PGD: Madry et al.'s PGD as Foolbox implements it (random start, step = eps * rel_stepsize),
    with Madry et al.'s step of 2.5 eps / steps, so the iterates can cross the whole ball (at
    eps/30 per step, 40 steps travel 1.3 eps and PGD lost to one FGSM step); `pgd_restarts`
    random restarts, each on the inputs still standing.
    APGD (Croce & Hein 2020): 100 iterations, its own step-size schedule, 9 target classes for
    APGD-T. Square: 5,000 queries. Noise: the best of 100 random corners of the ball.
    CW: Carlini & Wagner's L2 attack (Adam on tanh variables, margin loss on the logits, a search
    over the constant c; evaluate/cw.py). Foolbox's 10,000 steps x 9 searches is hours on a CPU.
    No fixed initial constant fits every model (the margin scales with the logits, which
    distillation at T inflates about T times), so each input starts at the constant of its
    linearised problem ("linear": 2 m / ||grad m||^2); c is multiplied or divided by
    `cw_search_factor` until a success and a failure bracket it, on the inputs not bracketed
    yet only, after `cw_binary_search_steps` searches on all, up to `cw_max_binary_search_steps`
    searches (the budget: at most 9 x 200 Adam steps per input, 2.0-2.5 searches on average).
    Adam step 0.05, not 0.02: a pixel at 0 or 1 starts at +-7.25 in tanh space, which 200 steps
    of 0.02 cannot leave, so on MNIST the old default (200 x 3, step 0.02, c 0.01) only moved
    the pixels that were not at a bound (median L2 21% above a 1000 x 9 run, 2% of the inputs
    unbroken). Against 1000 x 9 on the digits and MNIST teacher-T1 and student-T100: success
    1.0 and a median L2 within 2.5% on each, at 0.6-1.0x the old default's time
    (results/cw_convergence.md). `foolbox_cw_search(settings)` gives Foolbox's own search
    (one initial constant, x10 until found, then bisection, no further searches).
    JSMA: theta = +1, at most gamma = 14.5% of the pixels changed, every other class as target.
    """

    norm: str = "linf"  # the budget's norm, for the attacks that take one
    pgd_steps: int = 40
    pgd_rel_stepsize: float = 2.5 / 40
    pgd_random_start: bool = True
    pgd_restarts: int = 1
    # `pgd-long`, the diagnosis's convergence check: PGD with 2x the steps (same 2.5 eps / steps
    # rule), run twice from random starts (the second on the inputs still standing), at most 4x
    # the time of `pgd`. On the demo's digits models the restarts carry the gain (160 steps from
    # one start find nothing more than 40); 160 steps x 5 starts find 0.006 to 0.023 more than
    # this, at 4 to 5x its time.
    long_pgd_steps: int = 80
    long_pgd_restarts: int = 2
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 9
    square_queries: int = 5000
    noise_draws: int = 100
    cw_steps: int = 200
    cw_binary_search_steps: int = 1  # searches every input gets
    cw_max_binary_search_steps: int = 9  # searches, at most, for an input not yet bracketed
    cw_stepsize: float = 0.05
    cw_confidence: float = 0.0
    cw_initial_const: float | str = "linear"  # per input; or a number, the same for all
    cw_search_factor: float | None = 3.0  # None: Foolbox's rule
    jsma_gamma: float = 0.145
    batch_size: int = 512
    # The attacked model's training temperature: `pgd-t` divides its logits by it.
    model_T: float = 1.0
    # The model `transfer` crafts its adversarial examples on (loaded by `attack_model`).
    surrogate: Surrogate | None = field(default=None, compare=False, repr=False)
    # HopSkipJump (Chen et al. 2020): queries the label only, so it runs on a small subset.
    decision_n: int = 50
    hsj_steps: int = 10
    hsj_initial_evals: int = 50
    hsj_max_evals: int = 200


def foolbox_cw_search(settings: AttackSettings, initial_const: float = 0.01) -> AttackSettings:
    """`settings` with Foolbox's own search over c: one initial constant for every input, x10 until
    an adversarial example is found, then bisection, and no searches beyond cw_binary_search_steps
    (the library's defaults before issue 15 were these, with 200 x 3 Adam steps of 0.02)."""
    return replace(
        settings, cw_initial_const=initial_const, cw_search_factor=None,
        cw_max_binary_search_steps=settings.cw_binary_search_steps,
    )  # fmt: skip


@dataclass(frozen=True)
class Surrogate:
    """A model adversarial examples are crafted on, then transferred to the attacked model."""

    name: str
    model: torch.nn.Module
    T: float = 1.0  # its training temperature: PGD on it follows cross-entropy of logits / T
    seed: int = 0  # the seed it was trained with (recorded in the rows)


@dataclass(frozen=True)
class BatchResult:
    """What an attack that does not go through a Foolbox attack object returns for one batch."""

    is_adv: torch.Tensor  # (B,) bool
    distances: torch.Tensor  # (B,) perturbation norms
    counts: dict[str, int] = field(default_factory=dict)  # summed over batches into the row


BatchRunner = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, "AttackSettings"], BatchResult]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    `norms`: the budget norms it supports (a minimal-perturbation attack has one, its own).
    `build(settings, norm)` makes the Foolbox attack; an attack outside Foolbox gives
    `run_batch` instead. `settings` names the AttackSettings fields that shape its results:
    their values, digested, are recorded with every row, so rows are reused only when comparable.
    """

    name: str
    norms: tuple[str, ...]
    bounded: bool  # takes an epsilon budget; False for minimal-perturbation attacks
    description: str
    build: Callable[[AttackSettings, str], fb.attacks.Attack] | None = None
    run_batch: BatchRunner | None = None
    settings: tuple[str, ...] = ()
    uses_surrogate: bool = False  # needs `settings.surrogate`; its rows name it
    subset: bool = False  # runs on the first `settings.decision_n` inputs only
    restartable: bool = False  # `restarts_setting` repeats it from new random starts
    restarts_setting: str = "pgd_restarts"  # the AttackSettings field that counts its restarts

    @property
    def norm(self) -> str:
        """The norm it reports when no budget norm applies (its own)."""
        return self.norms[0]

    def row_norm(self, settings: AttackSettings) -> str:
        """The norm of its rows under `settings`."""
        return settings.norm if self.bounded else self.norm


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add an attack to the registry under `spec.name`."""
    ATTACKS[spec.name] = spec
    return spec


NO_SURROGATE = "the {name} attack needs a surrogate model: pass --surrogate RUN (e.g. surrogate-T1)"
PGD_SETTINGS = ("pgd_steps", "pgd_rel_stepsize", "pgd_random_start", "pgd_restarts")
APGD_SETTINGS = ("apgd_steps", "apgd_restarts")
CW_SETTINGS = (
    "cw_steps", "cw_binary_search_steps", "cw_stepsize", "cw_confidence", "cw_initial_const",
    "cw_search_factor", "cw_max_binary_search_steps",
)  # fmt: skip


def _pgd_kwargs(s: AttackSettings) -> dict[str, Any]:
    return {"steps": s.pgd_steps, "rel_stepsize": s.pgd_rel_stepsize, "random_start": s.pgd_random_start}


def _pgd(s: AttackSettings, norm: str) -> fb.attacks.Attack:
    return (fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD)(**_pgd_kwargs(s))


def _long_pgd(s: AttackSettings, norm: str) -> fb.attacks.Attack:
    return _pgd(replace(s, pgd_steps=s.long_pgd_steps, pgd_rel_stepsize=2.5 / s.long_pgd_steps), norm)


def _build_transfer(s: AttackSettings, norm: str) -> TransferAttack:
    if s.surrogate is None:
        raise DefdistillError(NO_SURROGATE.format(name="transfer"))
    net = s.surrogate.model.eval()
    device = next(net.parameters()).device
    surrogate = fb.PyTorchModel(net, bounds=(0, 1), device=device)
    identity = _digest(s.surrogate.T, _pgd_kwargs(s), *net.state_dict().values())
    return TransferAttack(surrogate, TemperatureLinfPGD(T=s.surrogate.T, **_pgd_kwargs(s)), identity)


def _jsma_runner(variant: str) -> BatchRunner:
    def run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, s: AttackSettings) -> BatchResult:
        result = jsma_all_targets(model, x, y, variant=variant, gamma=s.jsma_gamma)
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        pairs = result.success[correct]
        distances = torch.nan_to_num(result.min_l0_fraction, nan=math.inf)
        return BatchResult(
            result.any_success, distances, {"pairs": pairs.numel(), "pairs_success": int(pairs.sum())}
        )

    return run


for _spec in (
    AttackSpec(
        "fgsm", NORMS, True, "Fast Gradient Sign Method (Goodfellow et al. 2015), one step",
        lambda s, norm: FGSM() if norm == "linf" else fb.attacks.L2FastGradientAttack(),
    ),
    AttackSpec(
        "pgd", NORMS, True, "projected gradient descent on cross-entropy, step 2.5 eps / steps "
        "(Madry et al. 2018)", _pgd, settings=PGD_SETTINGS, restartable=True,
    ),
    AttackSpec(
        "pgd-long", NORMS, True, "pgd with 2x the steps (step 2.5 eps / steps), from 2 random starts: "
        "more effort must not find much more (Carlini et al. 2019)", _long_pgd,
        settings=("long_pgd_steps", "long_pgd_restarts", "pgd_random_start"), restartable=True,
        restarts_setting="long_pgd_restarts",
    ),
    AttackSpec(
        "cw", ("l2",), False,
        "Carlini-Wagner L2, minimal perturbation on the logits (Carlini & Wagner 2017)",
        lambda s, norm: L2CarliniWagner(
            binary_search_steps=s.cw_binary_search_steps, steps=s.cw_steps, stepsize=s.cw_stepsize,
            confidence=s.cw_confidence, initial_const=s.cw_initial_const, abort_early=True,
            search_factor=s.cw_search_factor, max_binary_search_steps=s.cw_max_binary_search_steps,
        ),
        settings=CW_SETTINGS,
    ),
    AttackSpec(
        "pgd-margin", ("linf",), True,
        "L-inf PGD on the Carlini-Wagner margin loss over the logits (Carlini & Wagner 2017)",
        lambda s, norm: MarginLinfPGD(**_pgd_kwargs(s)), settings=PGD_SETTINGS, restartable=True,
    ),
    AttackSpec(
        "pgd-t", ("linf",), True,
        "L-inf PGD on cross-entropy of logits / T, T the model's training temperature "
        "(Carlini & Wagner 2016)",
        lambda s, norm: TemperatureLinfPGD(T=s.model_T, **_pgd_kwargs(s)),
        settings=(*PGD_SETTINGS, "model_T"), restartable=True,
    ),
    AttackSpec(
        "transfer", ("linf",), True,
        "L-inf PGD crafted on a surrogate (default surrogate-T1, trained with another seed), "
        "evaluated on the target (Papernot et al. 2017)",
        _build_transfer, settings=PGD_SETTINGS, uses_surrogate=True,
    ),
    AttackSpec(
        "hsj", ("linf",), False,
        "HopSkipJump, decision-based and gradient-free, L-inf, on the first 50 inputs (Chen et al. 2020)",
        lambda s, norm: HopSkipJump(
            steps=s.hsj_steps, initial_gradient_eval_steps=s.hsj_initial_evals,
            max_gradient_eval_steps=s.hsj_max_evals, constraint="linf",
        ),
        settings=("decision_n", "hsj_steps", "hsj_initial_evals", "hsj_max_evals"), subset=True,
    ),
    AttackSpec(
        "apgd-ce", NORMS, True, "APGD on cross-entropy, 100 steps (Croce & Hein 2020)",
        lambda s, norm: APGD(loss="ce", norm=norm, steps=s.apgd_steps, restarts=s.apgd_restarts),
        settings=APGD_SETTINGS,
    ),
    AttackSpec(
        "apgd-dlr", NORMS, True,
        "APGD on the difference-of-logits ratio, invariant to the logits' scale (Croce & Hein 2020)",
        lambda s, norm: APGD(loss="dlr", norm=norm, steps=s.apgd_steps, restarts=s.apgd_restarts),
        settings=APGD_SETTINGS,
    ),
    AttackSpec(
        "apgd-t", NORMS, True, "APGD on the targeted DLR loss toward the 9 top other classes "
        "(Croce & Hein 2020)",
        lambda s, norm: APGDT(
            norm=norm, steps=s.apgd_steps, restarts=s.apgd_restarts, n_target_classes=s.apgd_targets
        ),
        settings=(*APGD_SETTINGS, "apgd_targets"),
    ),
    AttackSpec(
        "square", NORMS, True, "Square Attack, score-based black-box on the margin (Andriushchenko et al. "
        "2020)", lambda s, norm: Square(norm=norm, n_queries=s.square_queries), settings=("square_queries",),
    ),
    AttackSpec(
        "autoattack", NORMS, True, f"AutoAttack cascade ({AUTOATTACK_VERSION}), each on the inputs "
        "still standing (Croce & Hein 2020)",
        lambda s, norm: AutoAttack(
            norm=norm, steps=s.apgd_steps, n_target_classes=s.apgd_targets, square_queries=s.square_queries
        ),
        settings=("apgd_steps", "apgd_targets", "square_queries"),
    ),
    AttackSpec(
        "noise", NORMS, True, "best of 100 random corners of the ball: the floor every attack must beat",
        lambda s, norm: RandomNoise(norm=norm, draws=s.noise_draws), settings=("noise_draws",),
    ),
    AttackSpec(
        "jsma", ("l0",), False, "JSMA-F: saliency on the softmax's Jacobian, every other class as target, "
        "gamma 14.5% (Papernot et al. 2016)", run_batch=_jsma_runner("f"), settings=("jsma_gamma",),
    ),
    AttackSpec(
        "jsma-z", ("l0",), False, "JSMA-Z: saliency on the logits' Jacobian (Carlini & Wagner 2017)",
        run_batch=_jsma_runner("z"), settings=("jsma_gamma",),
    ),
):  # fmt: skip
    register_attack(_spec)


def check_attacks(names: Sequence[str]) -> list[str]:
    """Validate attack names against the registry (order kept, duplicates dropped)."""
    return check_names(names, ATTACKS, "attack")


def check_norm(norm: str, attacks: Sequence[str] = ()) -> str:
    """Validate the budget norm and that every bounded attack in `attacks` supports it."""
    norm = check_choice(norm, NORMS, "norm")
    for name in attacks:
        spec = ATTACKS[name]
        if spec.bounded and norm not in spec.norms:
            raise DefdistillError(
                f"attack {name!r} supports {', '.join(spec.norms)}, not {norm}: drop it or use --norm linf"
            )
    return norm


def check_budgets(values: Sequence[float], norm: str, dims: int | None = None) -> list[float]:
    """Validate budgets for `norm`: L-inf in [0, 1]; L2 in [0, sqrt(dims)] (the input range)."""
    if norm == "linf":
        return check_eps(values)
    values = [float(v) for v in values]
    if not values:
        raise DefdistillError("no epsilon given: e.g. --eps 0.5,1,2")
    limit = math.sqrt(dims) if dims else math.inf
    for v in values:
        if not math.isfinite(v) or v < 0 or v > limit:
            raise DefdistillError(f"an L2 epsilon must lie in [0, {limit:.3g}] for these inputs, got {v}")
    return list(dict.fromkeys(values))


def settings_digest(spec: AttackSpec, settings: AttackSettings, norm: str, seed: int) -> str:
    """A short digest of everything that shapes an attack's rows besides the model and inputs."""
    values = {name: getattr(settings, name) for name in spec.settings}
    if spec.uses_surrogate and settings.surrogate is not None:
        values["surrogate"] = (settings.surrogate.name, settings.surrogate.seed)
    return _digest(spec.name, norm, seed, sorted(values.items()))[:16]


@contextlib.contextmanager
def input_gradients_only(model: torch.nn.Module) -> Iterator[None]:
    """Turn the parameters' requires_grad off for the block, then restore it.

    Foolbox takes gradients with `loss.backward()`, which would also compute (and accumulate)
    every weight gradient at each attack step: a third more work for nothing. The gradient
    with respect to the inputs, the only one an attack needs, is the same either way.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _foolbox_batch(
    fb_attack: fb.attacks.Attack,
    fmodel: fb.PyTorchModel,
    xb: torch.Tensor,
    yb: torch.Tensor,
    budget: float | None,
    norm: str,
    restarts: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(is_adv, distances, clean correctness if the attack saw it) of one batch; restarts
    re-run the attack from new random starts on the inputs it has not broken yet."""
    _, clipped, success = fb_attack(fmodel, xb, yb, epsilons=budget)
    kept = getattr(fb_attack, "clean_logits", None)
    clean = kept.argmax(1) == yb if kept is not None else None
    for _ in range(restarts - 1):
        todo = (~success).nonzero().squeeze(1)
        if not len(todo):
            break
        _, again, hit = fb_attack(fmodel, xb[todo], yb[todo], epsilons=budget)
        clipped[todo[hit]] = again[hit]
        success[todo[hit]] = True
    return success, perturbation_norms(clipped - xb, norm), clean


def run_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eps: Sequence[float] = DEFAULT_EPS,
    settings: AttackSettings = AttackSettings(),
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: ProgressReporter = SILENT,
    outcomes: list[AttackOutcome] | None = None,
) -> list[dict[str, Any]]:
    """Attack `model` on (x, y); one row of metrics per epsilon (one row for unbounded attacks).

    Each row keeps its per-input results under `per_input` (clean correctness, broken or not,
    perturbation norm), with the seed and a digest of the settings, so that the per-input worst
    case over attacks can be taken later. A list passed as `outcomes` receives them as tensors.
    """
    spec = ATTACKS[check_attacks([attack])[0]]
    norm = spec.row_norm(settings)
    if spec.bounded:
        check_norm(norm, [spec.name])
    if spec.uses_surrogate and settings.surrogate is None:
        raise DefdistillError(NO_SURROGATE.format(name=spec.name))
    if spec.subset:
        x, y = x[: settings.decision_n], y[: settings.decision_n]
    device = torch.device(device)
    model = model.to(device).eval()
    surrogate = (
        settings.surrogate.model.to(device).eval() if spec.uses_surrogate and settings.surrogate else model
    )
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    clean_correct: torch.Tensor | None = None
    budgets: list[float | None] = list(check_budgets(eps, norm, x[0].numel())) if spec.bounded else [None]
    batches = range(0, len(x), settings.batch_size)
    restarts = getattr(settings, spec.restarts_setting) if spec.restartable else 1
    digest = settings_digest(spec, settings, norm, seed)
    rows = []
    with (
        progress.task(f"{attack}", len(budgets) * len(batches)) as advance,
        input_gradients_only(model),
        input_gradients_only(surrogate),
        torch.autocast(device.type, enabled=False),  # full precision, even in a caller's autocast
    ):
        for budget in budgets:
            seed_everything(seed)
            fb_attack = spec.build(settings, norm) if spec.build is not None else None
            started = time.perf_counter()
            is_adv, distances, kept = [], [], []
            counts: dict[str, int] = {}
            for start in batches:
                xb = x[start : start + settings.batch_size].to(device)
                yb = y[start : start + settings.batch_size].to(device)
                if spec.run_batch is not None:
                    result = spec.run_batch(model, xb, yb, settings)
                    success, dist = result.is_adv, result.distances
                    for key, value in result.counts.items():
                        counts[key] = counts.get(key, 0) + value
                else:
                    assert fb_attack is not None
                    success, dist, clean = _foolbox_batch(fb_attack, fmodel, xb, yb, budget, norm, restarts)
                    if clean is not None:  # it saw the clean inputs
                        kept.append(clean)
                is_adv.append(success)
                distances.append(dist)
                advance(1)
            # one device-to-host copy per row, not one per batch
            is_adv_all, distances_all = torch.cat(is_adv).cpu(), torch.cat(distances).cpu()
            seconds = time.perf_counter() - started
            if clean_correct is None and len(kept) == len(batches):
                clean_correct = torch.cat(kept).cpu()
            elif clean_correct is None:
                clean_correct = predict_logits(model, x, device).argmax(1) == y
            metrics = attack_metrics(clean_correct, is_adv_all, distances_all)
            if "pairs" in counts:  # JSMA: Papernot's success rate over (input, target) pairs
                metrics["success_rate"] = (
                    counts["pairs_success"] / counts["pairs"] if counts["pairs"] else math.nan
                )
            outcome = AttackOutcome(spec.name, norm, budget, clean_correct, is_adv_all, distances_all)
            row: dict[str, Any] = {"attack": spec.name, "norm": norm, "eps": budget, **metrics}
            row.update(seconds=round(seconds, 3), seed=seed, settings=digest, **counts)
            if spec.uses_surrogate and settings.surrogate is not None:
                row.update(surrogate=settings.surrogate.name, surrogate_seed=settings.surrogate.seed)
            row[PER_INPUT] = {
                "clean": encode_flags(clean_correct),
                "broken": encode_flags(outcome.broken),
                "dist": [
                    round(float(d), 6) if b else None
                    for d, b in zip(distances_all, outcome.broken, strict=True)
                ],
            }
            rows.append(row)
            if outcomes is not None:
                outcomes.append(outcome)
    return rows


FALLBACK_SURROGATE = "teacher-T1"


def load_surrogate(
    spec: str | None, dataset: str, runs_dir: str | Path, device: torch.device | str = "cpu"
) -> Surrogate:
    """Load the transfer attack's surrogate: `spec`, else `surrogate-T1` (an undefended network
    trained with another seed), else the undefended `teacher-T1` of the same seed."""
    names = [spec] if spec else [SURROGATE_NAME, FALLBACK_SURROGATE]
    for name in names:
        try:
            path = resolve_model(name, runs_dir, dataset)
        except DefdistillError as exc:
            if name == names[-1]:
                raise DefdistillError(
                    f"the transfer attack's surrogate {name!r} was not found ({exc}); train it "
                    "(defdistill train-teacher --T 1 --seed 1 --name surrogate-T1) or pass --surrogate RUN"
                ) from None
            continue
        net, meta = load_run(path, dataset=dataset, map_location=device)
        return Surrogate(path.name, net, float(meta["T"]), int(meta.get("seed", 0)))
    raise AssertionError("unreachable")


def load_target(
    model: str, dataset: str, T: float | None, n: int | None, seed: int, runs_dir: str | Path, device: str
) -> tuple[Path, torch.nn.Module, dict[str, Any], torch.device]:
    """Check the options every command that attacks a model shares, then load that model:
    (its run folder, the network on the device, its meta.json, the device)."""
    if n is not None:
        check_positive_int(n, "--n")
    if T is not None:
        check_temperature(T)
    check_seed(seed)
    torch_device = resolve_device(device)
    path = resolve_model(model, runs_dir, dataset, T)
    net, meta = load_run(path, dataset=dataset, map_location=torch_device)
    check_finite_weights(net, path)
    return path, net, meta, torch_device


@dataclass
class AttackReport:
    """What `attack_model` measured and recorded."""

    model_path: Path
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def attack_model(
    model: str = "student",
    *,
    dataset: str = "digits",
    attacks: Sequence[str] = ("fgsm", "pgd", "cw"),
    eps: Sequence[float] | None = None,
    n: int | None = None,
    T: float | None = None,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(),
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
    surrogate: str | None = None,
    norm: str | None = None,
) -> AttackReport:
    """Attack one model (role, run name or run directory) on the first n test inputs; record rows,
    then the model's per-input worst case over every attack recorded on the same inputs.

    `surrogate` (role, run name or directory; default surrogate-T1, else teacher-T1) is the
    model the `transfer` attack crafts on; it is loaded only when that attack is asked for.
    `norm` (default: settings.norm, L-inf) is the budget's norm for the attacks that take one;
    `eps` defaults to the dataset's grid (DatasetSpec.eps_grid).
    """
    spec = get_dataset_spec(dataset)
    eps = spec.eps_grid if eps is None else eps
    names = check_attacks(attacks)
    norm = check_norm(norm or settings.norm, names)
    dims = math.prod(spec.shape)
    budgets = check_budgets(eps, norm, dims) if any(ATTACKS[a].bounded for a in names) else list(eps)
    path, net, meta, torch_device = load_target(model, dataset, T, n, seed, runs_dir, device)
    settings = replace(settings, model_T=float(meta["T"]), norm=norm)
    if any(ATTACKS[a].uses_surrogate for a in names):
        settings = replace(settings, surrogate=load_surrogate(surrogate, dataset, runs_dir, torch_device))
    ensure_writable_dir(results_dir, "--results-dir")  # before the attack, not after it
    check_records(results_dir, ("robustness", "worst_case"))  # a damaged record: now, not after the attack
    x, y = load_dataset(dataset, "test", data_dir)
    notes = []
    if n is not None and n > len(x):
        notes.append(f"--n {n} is more than the {len(x)} test inputs of {dataset}: attacking all {len(x)}")
    if n is not None:
        x, y = x[:n], y[:n]
    identity = run_identity(path, meta)  # rows are bound to the weights they measured
    rows = []
    for name in names:
        attack_rows = [
            identity | row
            for row in run_attack(net, x, y, name, budgets, settings, torch_device, seed, progress)
        ]
        record_rows(results_dir, "robustness", attack_rows, runs_dir)  # each finished attack is kept at once
        rows.extend(attack_rows)
    crash_point("after-attack-records")
    record_worst_case(results_dir, dataset, path.name, runs_dir)
    namesake = current_weights(runs_dir, dataset, path.name)
    if namesake is not None and namesake != meta["weights_sha256"]:
        notes.append(
            f"{path} holds other weights than the run {path.name} of {runs_dir}: its rows are kept apart "
            f"(weights {meta['weights_sha256'][:12]}) and left out of the tables, which show that run's"
        )
    if settings.surrogate is not None and settings.surrogate.name == path.name:
        notes.append(f"transfer crafted on {path.name} itself is white-box PGD: pass another --surrogate")
    elif settings.surrogate is not None and settings.surrogate.name == FALLBACK_SURROGATE:
        notes.append(
            f"transfer crafted on {FALLBACK_SURROGATE}, trained with the target's seed; "
            f"{SURROGATE_NAME} (another seed) gives an independent source"
        )
    if meta["role"] == "student" and meta.get("teacher_T") is not None and float(meta["T"]) > 1:
        notes.append(
            f"{path.name} was distilled at T={format_T(meta['T'])} and is attacked at T=1, where its softmax "
            "saturates: low FGSM/PGD success may be gradient masking; compare with CW."
        )
    return AttackReport(path, rows, notes)
