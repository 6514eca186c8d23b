"""Attacks through Foolbox 3 and the metrics every table reports.

Each attack is a registry entry: a norm, whether it takes an epsilon budget, and how to
build the Foolbox attack from `AttackSettings`. The metrics (success_rate, robust_acc,
median_dist) are defined once, in `attack_metrics`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402  (Foolbox's tensor layer)
import foolbox as fb  # noqa: E402

from ..checks import check_eps, check_names, check_positive_int, check_seed, check_temperature  # noqa: E402
from ..core.fileio import ensure_writable_dir  # noqa: E402
from ..core.progress import SILENT, ProgressReporter  # noqa: E402
from ..core.runtime import resolve_device, seed_everything  # noqa: E402
from ..data.registry import get_dataset_spec, load_dataset  # noqa: E402
from ..errors import DefdistillError  # noqa: E402
from ..models import predict_logits  # noqa: E402
from ..store.runs import SURROGATE_NAME, format_T, load_run, resolve_model  # noqa: E402
from ..store.tables import record_rows  # noqa: E402

NORMS = ("linf", "l2")
DEFAULT_EPS = (0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class AttackSettings:
    """Attack hyper-parameters; the defaults are the ones the tables are made with.

    PGD: Madry et al.'s L-inf PGD as Foolbox implements it (random start, step = eps * rel_stepsize).
    CW: Carlini & Wagner's L2 attack (Adam on tanh variables, margin loss on the logits, binary
    search over the constant c). Foolbox's 10,000 steps x 9 searches is hours on a CPU. On
    digits (benchmarks/run.py) the Adam steps limit success, not the searches: at step 0.01,
    100 x 5 finds adversarial examples for 92% of the inputs of teacher-T1, 500 x 3 for 100%
    at 2.4x the time; at step 0.02, 200 x 3 finds them for 100% of the inputs of teacher-T1,
    teacher-T100 and student-T100, with a smaller median L2, in the time 100 x 5 took.
    """

    pgd_steps: int = 40
    pgd_rel_stepsize: float = 0.01 / 0.3
    pgd_random_start: bool = True
    cw_steps: int = 200
    cw_binary_search_steps: int = 3
    cw_stepsize: float = 0.02
    cw_confidence: float = 0.0
    cw_initial_const: float = 0.01
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


@dataclass(frozen=True)
class Surrogate:
    """A model adversarial examples are crafted on, then transferred to the attacked model."""

    name: str
    model: torch.nn.Module
    T: float = 1.0  # its training temperature: PGD on it follows cross-entropy of logits / T
    seed: int = 0  # the seed it was trained with (recorded in the rows)


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack."""

    name: str
    norm: str
    bounded: bool  # takes an epsilon budget; False for minimal-perturbation attacks
    description: str
    build: Callable[[AttackSettings], fb.attacks.Attack]
    uses_surrogate: bool = False  # needs `settings.surrogate`; its rows name it
    subset: bool = False  # runs on the first `settings.decision_n` inputs only


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add an attack to the registry under `spec.name`."""
    ATTACKS[spec.name] = spec
    return spec


class FGSM(fb.attacks.FGSM):
    """Foolbox's FGSM, keeping the logits of its one forward pass in `clean_logits`.

    FGSM takes its single gradient at the clean inputs, so those logits are the clean
    predictions that `run_attack` needs: kept, they spare it a forward pass. The attack
    itself is Foolbox's, unchanged (same loss, same step, same adversarial examples).
    """

    clean_logits: torch.Tensor | None = None

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def keeping_logits(inputs: Any) -> Any:
            logits = model(inputs)
            self.clean_logits = logits.raw.detach()
            return logits

        return super().get_loss_fn(keeping_logits, labels)


register_attack(
    AttackSpec(
        "fgsm",
        "linf",
        True,
        "Fast Gradient Sign Method (Goodfellow et al. 2015), one step",
        lambda s: FGSM(),
    )
)
register_attack(
    AttackSpec(
        "pgd",
        "linf",
        True,
        "L-inf projected gradient descent on cross-entropy (Madry et al. 2018)",
        lambda s: fb.attacks.LinfPGD(
            steps=s.pgd_steps, rel_stepsize=s.pgd_rel_stepsize, random_start=s.pgd_random_start
        ),
    )
)


class L2CarliniWagner(fb.attacks.L2CarliniWagnerAttack):
    """Foolbox's Carlini-Wagner L2 attack, returning the input itself where its search failed.

    Foolbox starts its best adversarials at all-zero images and returns those for inputs it
    never made adversarial; its success check then classifies a black image, which a model
    usually misclassifies, so a failed search counted as a success at the image's own norm.
    Carlini's reference code returns the original input instead: never adversarial for a
    correctly classified input. A genuine minimal adversarial is never exactly all zero.
    """

    def run(
        self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None, **kwargs: Any
    ) -> Any:
        found = super().run(model, inputs, criterion, early_stop=early_stop, **kwargs)
        (x, adv), restore_type = ep.astensors_(inputs, found)
        failed = ep.flatten(adv, start=1).abs().max(axis=-1) == 0
        return restore_type(ep.where(failed.reshape((-1,) + (1,) * (x.ndim - 1)), x, adv))


register_attack(
    AttackSpec(
        "cw",
        "l2",
        False,
        "Carlini-Wagner L2, minimal perturbation on the logits (Carlini & Wagner 2017)",
        lambda s: L2CarliniWagner(
            binary_search_steps=s.cw_binary_search_steps,
            steps=s.cw_steps,
            stepsize=s.cw_stepsize,
            confidence=s.cw_confidence,
            initial_const=s.cw_initial_const,
            abort_early=True,
        ),
    )
)


class MarginLinfPGD(fb.attacks.LinfPGD):
    """L-inf PGD ascending the Carlini-Wagner margin max_{i != y} z_i - z_y on the logits.

    Carlini & Wagner (2017) replace cross-entropy by this margin because it does not saturate:
    scaling the logits by T scales its gradient by T, where the cross-entropy gradient of a
    distilled network underflows to exactly zero. The sign step of L-inf PGD ignores the scale.
    """

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def margin(inputs: Any) -> Any:
            logits = model(inputs)
            true = (logits * ep.onehot_like(logits, labels)).sum(axis=-1)
            best_other = (logits - ep.onehot_like(logits, labels, value=ep.inf)).max(axis=-1)
            return (best_other - true).sum()

        return margin


class TemperatureLinfPGD(fb.attacks.LinfPGD):
    """L-inf PGD on the cross-entropy of logits / T (Carlini & Wagner 2016 on distillation).

    Dividing a network's logits by the temperature it was trained at undoes the scale that
    saturates its softmax at T=1, so the cross-entropy gradient no longer vanishes.
    """

    def __init__(self, *, T: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.T = float(T)

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def scaled(inputs: Any) -> Any:
            return model(inputs) / self.T

        return super().get_loss_fn(scaled, labels)


class TransferAttack(fb.attacks.base.FixedEpsilonAttack):
    """Craft adversarial examples with `attack` on a surrogate model, judge them on the target.

    A black-box transfer attack (Papernot et al. 2017): it never queries the target's
    gradients. Foolbox's base class evaluates success on the model the attack is called with,
    which is the target.
    """

    def __init__(
        self, surrogate: fb.Model, attack: fb.attacks.base.FixedEpsilonAttack, identity: str = ""
    ) -> None:
        self.surrogate = surrogate
        self.attack = attack
        self.identity = identity  # the surrogate's weights and the attack's settings; "" disables the cache

    @property
    def distance(self) -> Any:
        return self.attack.distance

    def run(self, model: Any, inputs: Any, criterion: Any, *, epsilon: float, **kwargs: Any) -> Any:
        # The examples depend on the surrogate, the inputs, the labels, epsilon and the random
        # start, never on the target: attacking a second model on the same inputs (the demo's
        # three models, a sweep's teacher and student) reuses them. The generator state is part
        # of the key and is restored on a hit, so the numbers are those of crafting them again.
        x = ep.astensor(inputs)
        labels = fb.attacks.base.get_criterion(criterion)
        if not self.identity or kwargs or not isinstance(labels, fb.criteria.Misclassification):
            return self.attack.run(self.surrogate, inputs, criterion, epsilon=epsilon, **kwargs)
        device = x.raw.device
        key = _digest(self.identity, epsilon, x.raw, labels.labels.raw, _rng_state(device))
        if key in _TRANSFER_CACHE:
            adversarial, state_after = _TRANSFER_CACHE[key]
            _TRANSFER_CACHE.move_to_end(key)
            _set_rng_state(device, state_after)
            return ep.astensor(adversarial.clone())
        adversarial = self.attack.run(self.surrogate, inputs, criterion, epsilon=epsilon, **kwargs)
        _TRANSFER_CACHE[key] = (ep.astensor(adversarial).raw.detach().clone(), _rng_state(device))
        while len(_TRANSFER_CACHE) > TRANSFER_CACHE_SIZE:
            _TRANSFER_CACHE.popitem(last=False)
        return adversarial


TRANSFER_CACHE_SIZE = 256  # batches: 4 budgets x 64 batches of 500 inputs, a few MB for digits or MNIST
_TRANSFER_CACHE: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator a random start on `device` draws from."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(str((part.dtype, tuple(part.shape))).encode())
            digest.update(
                part.numpy().tobytes() if part.dtype != torch.bfloat16 else part.float().numpy().tobytes()
            )
        else:
            digest.update(repr(part).encode())
        digest.update(b"|")
    return digest.hexdigest()


class HopSkipJump(fb.attacks.HopSkipJumpAttack):
    """Foolbox's HopSkipJump (Chen et al. 2020), run on the inputs it can start from.

    HopSkipJump walks along the decision boundary from an adversarial starting point (blended
    uniform noise). Foolbox raises when a single input has none; here such an input is
    returned unchanged (not adversarial), as is an input already misclassified.
    """

    def run(
        self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None, **kwargs: Any
    ) -> Any:
        x, restore_type = ep.astensor_(inputs)
        criterion_ = fb.attacks.base.get_criterion(criterion)
        untargeted = isinstance(criterion_, fb.criteria.Misclassification)
        if kwargs.get("starting_points") is not None or not untargeted:
            return super().run(model, inputs, criterion, early_stop=early_stop, **kwargs)
        is_adversarial = fb.attacks.base.get_is_adversarial(criterion_, model)
        init = self.init_attack or fb.attacks.LinearSearchBlendedUniformNoiseAttack(steps=50)
        starts = init.run(model, x, criterion_, early_stop=early_stop)
        todo = (is_adversarial(starts).raw & ~is_adversarial(x).raw).nonzero().squeeze(1)
        result = x.raw.clone()
        if len(todo):
            labels = fb.criteria.Misclassification(criterion_.labels.raw[todo])
            result[todo] = super().run(
                model, x.raw[todo], labels, early_stop=early_stop, starting_points=starts.raw[todo]
            )
        return restore_type(ep.astensor(result))


NO_SURROGATE = "the {name} attack needs a surrogate model: pass --surrogate RUN (e.g. teacher-T1)"


def _pgd_kwargs(s: AttackSettings) -> dict[str, Any]:
    return {"steps": s.pgd_steps, "rel_stepsize": s.pgd_rel_stepsize, "random_start": s.pgd_random_start}


def _build_transfer(s: AttackSettings) -> TransferAttack:
    if s.surrogate is None:
        raise DefdistillError(NO_SURROGATE.format(name="transfer"))
    net = s.surrogate.model.eval()
    device = next(net.parameters()).device
    surrogate = fb.PyTorchModel(net, bounds=(0, 1), device=device)
    identity = _digest(s.surrogate.T, _pgd_kwargs(s), *net.state_dict().values())
    return TransferAttack(surrogate, TemperatureLinfPGD(T=s.surrogate.T, **_pgd_kwargs(s)), identity)


register_attack(
    AttackSpec(
        "pgd-margin",
        "linf",
        True,
        "L-inf PGD on the Carlini-Wagner margin loss over the logits (Carlini & Wagner 2017)",
        lambda s: MarginLinfPGD(**_pgd_kwargs(s)),
    )
)
register_attack(
    AttackSpec(
        "pgd-t",
        "linf",
        True,
        "L-inf PGD on cross-entropy of logits / T, T the model's training temperature "
        "(Carlini & Wagner 2016)",
        lambda s: TemperatureLinfPGD(T=s.model_T, **_pgd_kwargs(s)),
    )
)
register_attack(
    AttackSpec(
        "transfer",
        "linf",
        True,
        "L-inf PGD crafted on a surrogate (default teacher-T1), evaluated on the target "
        "(Papernot et al. 2017)",
        _build_transfer,
        uses_surrogate=True,
    )
)
register_attack(
    AttackSpec(
        "hsj",
        "linf",
        False,
        "HopSkipJump, decision-based and gradient-free, L-inf, on the first 50 inputs (Chen et al. 2020)",
        lambda s: HopSkipJump(
            steps=s.hsj_steps,
            initial_gradient_eval_steps=s.hsj_initial_evals,
            max_gradient_eval_steps=s.hsj_max_evals,
            constraint="linf",
        ),
        subset=True,
    )
)


def check_attacks(names: Sequence[str]) -> list[str]:
    """Validate attack names against the registry (order kept, duplicates dropped)."""
    return check_names(names, ATTACKS, "attack")


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example L-inf or L2 norm of a perturbation batch."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def attack_metrics(
    clean_correct: torch.Tensor, is_adv: torch.Tensor, distances: torch.Tensor
) -> dict[str, float | int]:
    """The contract's metrics from per-input outcomes.

    success_rate: adversarial examples found among the inputs classified correctly
    (Papernot's adversarial sample success rate); robust_acc: inputs still correct after the
    attack over all n; median_dist: median perturbation norm of the successful examples.
    """
    clean_correct, is_adv = clean_correct.bool(), is_adv.bool()
    n = len(clean_correct)
    n_correct = int(clean_correct.sum())
    success = clean_correct & is_adv
    n_success = int(success.sum())
    return {
        "n": n,
        "clean_acc": n_correct / n if n else math.nan,
        "robust_acc": int((clean_correct & ~is_adv).sum()) / n if n else math.nan,
        "success_rate": n_success / n_correct if n_correct else math.nan,
        # quantile, not Tensor.median: the latter returns the lower of the two middle values
        "median_dist": float(distances[success].double().quantile(0.5)) if n_success else math.nan,
    }


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


@dataclass(frozen=True)
class AttackOutcome:
    """Per-input results behind one row: clean correctness, success and perturbation norm."""

    attack: str
    norm: str
    eps: float | None
    clean_correct: torch.Tensor
    is_adv: torch.Tensor
    distances: torch.Tensor

    def success_within(self, eps: float) -> float:
        """Success rate counting only adversarial examples of norm <= eps (for minimisation attacks)."""
        within = self.is_adv.bool() & (self.distances <= eps + 1e-6)  # float32 slack at the boundary
        return float(attack_metrics(self.clean_correct, within, self.distances)["success_rate"])


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

    A list passed as `outcomes` receives each row's per-input results, for checks that need
    more than the summary (diagnose.py measures a minimisation attack's success within eps).
    """
    spec = ATTACKS[check_attacks([attack])[0]]
    if spec.uses_surrogate and settings.surrogate is None:
        raise DefdistillError(NO_SURROGATE.format(name=spec.name))
    if spec.subset:
        x, y = x[: settings.decision_n], y[: settings.decision_n]
    device = torch.device(device)
    model = model.to(device).eval()
    surrogate = settings.surrogate.model.to(device).eval() if spec.uses_surrogate else model
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    clean_correct: torch.Tensor | None = None
    budgets: list[float | None] = list(check_eps(eps)) if spec.bounded else [None]
    batches = range(0, len(x), settings.batch_size)
    rows = []
    with (
        progress.task(f"{attack}", len(budgets) * len(batches)) as advance,
        input_gradients_only(model),
        input_gradients_only(surrogate),
        torch.autocast(device.type, enabled=False),  # full precision, even in a caller's autocast
    ):
        for budget in budgets:
            seed_everything(seed)
            fb_attack = spec.build(settings)
            started = time.perf_counter()
            is_adv, distances, kept = [], [], []
            for start in batches:
                xb = x[start : start + settings.batch_size].to(device)
                yb = y[start : start + settings.batch_size].to(device)
                _, clipped, success = fb_attack(fmodel, xb, yb, epsilons=budget)
                is_adv.append(success)
                distances.append(perturbation_norms(clipped - xb, spec.norm))
                if getattr(fb_attack, "clean_logits", None) is not None:  # it saw the clean inputs
                    kept.append(fb_attack.clean_logits.argmax(1) == yb)
                advance(1)
            # one device-to-host copy per row, not one per batch
            is_adv_all, distances_all = torch.cat(is_adv).cpu(), torch.cat(distances).cpu()
            seconds = time.perf_counter() - started
            if clean_correct is None and len(kept) == len(batches):
                clean_correct = torch.cat(kept).cpu()
            elif clean_correct is None:
                clean_correct = predict_logits(model, x, device).argmax(1) == y
            metrics = attack_metrics(clean_correct, is_adv_all, distances_all)
            identity = {"attack": spec.name, "norm": spec.norm, "eps": budget}
            rows.append({**identity, **metrics, "seconds": round(seconds, 3)})
            if spec.uses_surrogate:
                rows[-1]["surrogate"] = settings.surrogate.name
                rows[-1]["surrogate_seed"] = settings.surrogate.seed
            if outcomes is not None:
                outcomes.append(
                    AttackOutcome(spec.name, spec.norm, budget, clean_correct, is_adv_all, distances_all)
                )
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
    return path, net, meta, torch_device


@dataclass
class AttackReport:
    """What `attack_model` measured and recorded."""

    model_path: Path
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def attack_model(
    model: str = "student",
    dataset: str = "digits",
    attacks: Sequence[str] = ("fgsm", "pgd", "cw"),
    eps: Sequence[float] = DEFAULT_EPS,
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
) -> AttackReport:
    """Attack one model (role, run name or run directory) on the first n test inputs; record rows.

    `surrogate` (role, run name or directory; default teacher-T1) is the model the `transfer`
    attack crafts on; it is loaded only when that attack is asked for.
    """
    get_dataset_spec(dataset)
    names = check_attacks(attacks)
    budgets = check_eps(eps) if any(ATTACKS[a].bounded for a in names) else list(eps)
    path, net, meta, torch_device = load_target(model, dataset, T, n, seed, runs_dir, device)
    settings = replace(settings, model_T=float(meta["T"]))
    if any(ATTACKS[a].uses_surrogate for a in names):
        settings = replace(settings, surrogate=load_surrogate(surrogate, dataset, runs_dir, torch_device))
    ensure_writable_dir(results_dir, "--results-dir")  # before the attack, not after it
    x, y = load_dataset(dataset, "test", data_dir)
    if n is not None:
        x, y = x[:n], y[:n]
    identity = {"dataset": dataset, "model": path.name, "role": meta["role"], "T": float(meta["T"])}
    rows = []
    for name in names:
        attack_rows = [
            identity | row
            for row in run_attack(net, x, y, name, budgets, settings, torch_device, seed, progress)
        ]
        record_rows(results_dir, "robustness", attack_rows)  # each finished attack is kept at once
        rows.extend(attack_rows)
    notes = []
    if settings.surrogate is not None and settings.surrogate.name == path.name:
        notes.append(f"transfer crafted on {path.name} itself is white-box PGD: pass another --surrogate")
    if meta["role"] == "student" and meta.get("teacher_T") is not None and float(meta["T"]) > 1:
        notes.append(
            f"{path.name} was distilled at T={format_T(meta['T'])} and is attacked at T=1, where its softmax "
            "saturates: low FGSM/PGD success may be gradient masking; compare with CW."
        )
    return AttackReport(path, rows, notes)
