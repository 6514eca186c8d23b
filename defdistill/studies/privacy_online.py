"""Online LiRA over shadow pipelines: does the student leak less than its teacher, and than DP-SGD?

The design of Carlini et al. (2022, "Membership Inference Attacks From First Principles"): a pool
of examples, K shadow pipelines each trained on a random half of it, so every example is IN for
about K/2 pipelines and OUT for the rest. A pipeline trains a teacher on its half, distils its
students exactly as deployed (Jagielski et al. 2023, "Students Parrot Their Teachers": on a
public transfer set disjoint from the pool, on the teacher's own training inputs, on uniform
noise; at each T), a control on the public set with its true labels, and DP-SGD teachers with
their students. Each pipeline in turn is the target, the other K - 1 its reference models: per
example, Gaussians fitted to the IN and OUT logit-scaled confidences give the online likelihood
ratio; the OUT Gaussian alone the offline one-sided test. The loss, confidence and entropy
thresholds are the baselines. Every target has |pool| / 2 members and as many non-members, so TPR
at 0.1% FPR rests on a real false-positive count, and the targets give intervals and paired tests.

Planted canaries (a share of the pool relabelled at random, fixed across pipelines): extraction is
the share of IN canaries whose planted label the model outputs; their LiRA TPR is read at the
threshold that gives 0.1% FPR on the clean non-members.

State is resumable: each pipeline's logits on the pool and test accuracies are written atomically
to runs/<dataset>/privacy-pool/shadow-XXX.npz as soon as it finishes; a rerun with the same
configuration skips finished pipelines.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import check_positive_int, check_seed, check_temperatures
from ..core.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_png,
    atomic_write_text,
    ensure_writable_dir,
)
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device, seed_everything
from ..core.stats import describe_differences
from ..data.registry import get_dataset_spec, load_dataset
from ..errors import DefdistillError
from ..models import build_model, predict_logits
from ..store.runs import format_T
from ..store.tables import NO_TRANSFER_SET, record_rows
from ..train.dp import DPRecipe, train_dp_sgd
from ..train.losses import distillation_loss
from .privacy import (
    Roc,
    confidence_scores,
    derived_seed,
    entropy_scores,
    logit_confidence,
    loss_scores,
    metrics_from_roc,
    plot_privacy_rocs,
    read_roc_records,
    roc_curve,
    roc_figure_path,
    save_roc_record,
)

POOL_RUN = "privacy-pool"  # runs/<dataset>/privacy-pool: the configuration and one file per pipeline
CONFIG_FILE = "config.json"
TRANSFER_SETS = ("public", "private", "noise")
DP_DELTA = 1e-5
PER_EXAMPLE_VARIANCE_FROM = 64  # Carlini et al. (2022, VI-A): below 64 shadows one shared variance
BASELINES = ("loss", "confidence", "entropy")
LIRA = {"lira-online": "online", "lira-offline": "offline"}
ATTACKS = (*LIRA, *BASELINES)
LOW_FPR = 0.001


# --- the configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class PoolConfig:
    """Everything that decides a pipeline's models: a rerun resumes only under the same config."""

    dataset: str
    arch: str
    pool: int  # clean pool examples; each pipeline trains on half
    public: int  # disjoint public examples: the public transfer set and the control's data
    canaries: int  # relabelled examples added to the pool
    shadows: int
    temperatures: tuple[float, ...]
    transfer_sets: tuple[str, ...]
    dp_epsilons: tuple[float, ...]
    dp_temperatures: tuple[float, ...]  # the DP teachers' students, on the public transfer set
    epochs: int
    batch_size: int
    lr: float
    dp_epochs: int
    dp_batch_size: int
    dp_lr: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Kind:
    """One model of every pipeline: its name, role, temperature, transfer set and DP budget."""

    name: str
    role: str  # teacher, student, control, dp-teacher, dp-student
    T: float
    transfer_set: str
    dp_epsilon: float | None


def _eps_name(eps: float) -> str:
    return f"dp{format_T(eps)}"


def model_kinds(config: PoolConfig) -> list[Kind]:
    """Every model a pipeline trains, in training order."""
    kinds = [Kind("pool-teacher", "teacher", 1.0, NO_TRANSFER_SET, None)]
    for transfer in config.transfer_sets:
        kinds += [Kind(f"pool-student-{transfer}-T{format_T(T)}", "student", T, transfer, None)
                  for T in config.temperatures]  # fmt: skip
    kinds.append(Kind("pool-control", "control", 1.0, NO_TRANSFER_SET, None))
    for eps in config.dp_epsilons:
        kinds.append(Kind(f"pool-{_eps_name(eps)}-teacher", "dp-teacher", 1.0, NO_TRANSFER_SET, eps))
        kinds += [Kind(f"pool-{_eps_name(eps)}-student-public-T{format_T(T)}", "dp-student", T, "public", eps)
                  for T in config.dp_temperatures]  # fmt: skip
    return kinds


# --- the data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolData:
    """The pool (clean examples, then canaries with their planted labels), the public set, the test split."""

    x_pool: torch.Tensor
    y_pool: torch.Tensor  # planted labels on the canaries
    true_pool: torch.Tensor  # the images' own labels
    is_canary: np.ndarray
    pool_indices: np.ndarray  # into the train split
    x_public: torch.Tensor
    y_public: torch.Tensor
    public_indices: np.ndarray
    x_test: torch.Tensor
    y_test: torch.Tensor
    masks: np.ndarray  # (shadows, |pool|) bool: who is IN for each pipeline


def load_pool(config: PoolConfig, data_dir: str | Path) -> PoolData:
    """Draw the pool, canaries, public set and the pipelines' membership from the seed."""
    x_train, y_train = load_dataset(config.dataset, "train", data_dir)
    x_test, y_test = load_dataset(config.dataset, "test", data_dir)
    need = config.pool + config.canaries + config.public
    if need > len(y_train):
        raise DefdistillError(
            f"pool + canaries + public = {need} exceeds the {len(y_train)} {config.dataset} training images"
        )
    order = np.random.default_rng(derived_seed(config.seed, 20)).permutation(len(y_train))
    pool_idx = order[: config.pool + config.canaries]
    public_idx = order[config.pool + config.canaries : need]
    true = y_train[pool_idx].clone()
    planted = true.clone()
    rng = np.random.default_rng(derived_seed(config.seed, 21))
    num_classes = int(y_train.max()) + 1
    shift = torch.as_tensor(rng.integers(1, num_classes, config.canaries))
    planted[config.pool :] = (true[config.pool :] + shift) % num_classes  # always a wrong label
    is_canary = np.zeros(len(pool_idx), dtype=bool)
    is_canary[config.pool :] = True
    masks = np.stack([pipeline_mask(config.seed, k, is_canary) for k in range(config.shadows)])
    return PoolData(
        x_train[pool_idx], planted, true, is_canary, pool_idx, x_train[public_idx], y_train[public_idx],
        public_idx, x_test, y_test, masks,
    )  # fmt: skip


def pipeline_mask(seed: int, k: int, is_canary: np.ndarray) -> np.ndarray:
    """Who is IN for pipeline k: an exact random half of the clean examples and of the canaries;
    odd k takes the complement of k - 1, so over an even number of pipelines every example is IN
    for exactly half of them (Carlini et al. 2022 balance IN and OUT the same way)."""
    r = np.random.default_rng(derived_seed(seed, 22, k - k % 2))
    mask = np.zeros(len(is_canary), dtype=bool)
    for group in (np.flatnonzero(~is_canary), np.flatnonzero(is_canary)):
        mask[r.choice(group, size=len(group) // 2, replace=False)] = True
    return ~mask if k % 2 else mask


# --- one pipeline -----------------------------------------------------------------------------


def _new_model(config: PoolConfig) -> nn.Module:
    spec = get_dataset_spec(config.dataset)
    return build_model(config.arch, spec.shape, spec.num_classes, spec.mean, spec.std)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _fit(
    config: PoolConfig,
    x: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    seed: int,
    device: torch.device,
) -> nn.Module:
    """Adam over seeded mini-batches of whole tensors: the loop of train.loop.fit without its
    checkpoints, AMP and distributed paths, which cost twice the time of these tiny networks."""
    seed_everything(seed)
    model = _new_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    x, targets = x.to(device), targets.to(device)
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = loss_fn(model(x[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def _train_labels(
    config: PoolConfig, x: torch.Tensor, y: torch.Tensor, seed: int, device: torch.device
) -> nn.Module:
    return _fit(config, x, y, nn.functional.cross_entropy, seed, device)


def _distil(
    config: PoolConfig, teacher: nn.Module, x: torch.Tensor, T: float, seed: int, device: torch.device
) -> nn.Module:
    """A student on the teacher's soft labels softmax(z/T) alone (alpha = 1, the T^2 factor kept)."""
    teacher_logits = predict_logits(teacher, x, device)

    def loss(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, target_logits, target_logits, T, alpha=1.0)

    return _fit(config, x, teacher_logits, loss, seed, device)


def _dp_recipe(config: PoolConfig, eps: float) -> DPRecipe:
    return DPRecipe(
        epsilon=eps, delta=DP_DELTA, epochs=config.dp_epochs, batch_size=config.dp_batch_size, lr=config.dp_lr
    )


def run_pipeline(config: PoolConfig, data: PoolData, k: int, device: torch.device) -> dict[str, Any]:
    """Train pipeline k's models; their logits on the pool, test accuracies and DP accounts."""
    seed = derived_seed(config.seed, 23, k)
    x_in, y_in = data.x_pool[data.masks[k]], data.y_pool[data.masks[k]]
    models: dict[str, nn.Module] = {}
    dp: dict[str, Any] = {}

    def transfer_inputs(name: str) -> torch.Tensor:
        if name == "public":
            return data.x_public
        if name == "private":
            return x_in  # the teacher's own training inputs; labels unused
        shape = (len(data.x_public), *data.x_public.shape[1:])
        return torch.rand(shape, generator=torch.Generator().manual_seed(derived_seed(config.seed, 24, k)))

    teacher = _train_labels(config, x_in, y_in, seed, device)
    for kind in model_kinds(config):
        if kind.role == "teacher":
            models[kind.name] = teacher
        elif kind.role == "student":
            x_transfer = transfer_inputs(kind.transfer_set)
            models[kind.name] = _distil(config, teacher, x_transfer, kind.T, seed, device)
        elif kind.role == "control":
            models[kind.name] = _train_labels(config, data.x_public, data.y_public, seed, device)
        elif kind.role == "dp-teacher":
            assert kind.dp_epsilon is not None
            seed_everything(seed)
            model = _new_model(config)
            dp[kind.name] = train_dp_sgd(
                model, x_in, y_in, _dp_recipe(config, kind.dp_epsilon), seed, device
            ).to_json()
            models[kind.name] = model
        else:  # dp-student of the DP teacher with the same budget
            dp_teacher = models[f"pool-{_eps_name(float(kind.dp_epsilon or 0))}-teacher"]
            models[kind.name] = _distil(config, dp_teacher, transfer_inputs("public"), kind.T, seed, device)
    names = list(models)
    logits = np.stack([predict_logits(models[n], data.x_pool, device).numpy() for n in names])
    test_acc = np.array(
        [(predict_logits(models[n], data.x_test, device).argmax(1) == data.y_test).float().mean().item()
         for n in names]
    )  # fmt: skip
    return {"names": names, "logits": logits.astype(np.float32), "test_acc": test_acc, "dp": dp}


def _shadow_path(folder: Path, k: int) -> Path:
    return folder / f"shadow-{k:03d}.npz"


def save_pipeline(path: Path, k: int, mask: np.ndarray, result: dict[str, Any]) -> None:
    """Atomically store one finished pipeline (its presence marks it done)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, k=np.array(k), mask=mask, names=np.array(result["names"]), logits=result["logits"],
        test_acc=result["test_acc"], dp=np.array(json.dumps(result["dp"])),
    )  # fmt: skip
    atomic_write_bytes(path, buffer.getvalue())


def load_pipeline(path: Path, mask: np.ndarray, names: list[str]) -> dict[str, Any] | None:
    """A stored pipeline, or None when missing, damaged or from another split."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not np.array_equal(f["mask"], mask) or list(f["names"]) != names:
                return None
            return {"names": names, "logits": f["logits"], "test_acc": f["test_acc"],
                    "dp": json.loads(str(f["dp"]))}  # fmt: skip
    except (OSError, ValueError, KeyError):
        return None


# --- the attacks ------------------------------------------------------------------------------


def _gaussian_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def lira_scores(
    phi: np.ndarray, masks: np.ndarray, target: int, per_example_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) LiRA scores of pipeline `target`'s model on every pool example.

    `phi` (K x N) holds each pipeline's logit-scaled confidence on each example, `masks` (K x N)
    who was IN. The reference models are the other K - 2 pipelines: the target's complement
    (pipeline target ^ 1) is left out too, so every example has exactly K/2 - 1 IN and as many
    OUT references, members and non-members alike (with the complement kept, members would have
    one IN reference fewer than OUT ones, which biases the ratio at small K). Online: log N(phi; mu_in,
    sd_in) - log N(phi; mu_out, sd_out); offline: the one-sided z-value (phi - mu_out) / sd_out.
    Below PER_EXAMPLE_VARIANCE_FROM shadows (or where an example has fewer than 2 IN or OUT
    references) the variance is the one pooled over every example of that side.
    """
    keep = np.arange(len(phi)) // 2 != target // 2  # the target and its complement left out
    P, M = phi[keep], masks[keep]
    x = phi[target]
    fits = []
    for side in (M, ~M):
        n = side.sum(0)
        if (n < 1).any():
            raise DefdistillError(
                "an example is never IN (or never OUT) among the reference pipelines: use more --shadow"
            )
        mu = np.where(side, P, 0.0).sum(0) / n
        resid = np.where(side, (P - mu) ** 2, 0.0)
        pooled = math.sqrt(resid.sum() / max(side.sum() - side.shape[1], 1))
        if per_example_variance:
            sd = np.sqrt(resid.sum(0) / np.maximum(n - 1, 1))
            sd = np.where(n >= 2, sd, pooled)
        else:
            sd = np.full_like(mu, pooled)
        fits.append((mu, np.maximum(sd, 1e-6)))
    (mu_in, sd_in), (mu_out, sd_out) = fits
    online = _gaussian_logpdf(x, mu_in, sd_in) - _gaussian_logpdf(x, mu_out, sd_out)
    return online, (x - mu_out) / sd_out


def low_fpr_threshold(nonmember_scores: np.ndarray, fpr: float = LOW_FPR) -> float:
    """The score members must exceed for FPR <= `fpr` on these non-members: the (a+1)-th largest,
    a = floor(fpr * n) false positives allowed (the conservative reading of `tpr_at_fpr`)."""
    allowed = math.floor(fpr * len(nonmember_scores) + 1e-9)
    return float(np.sort(nonmember_scores)[::-1][allowed]) if allowed < len(nonmember_scores) else -math.inf


def mean_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over targets (the targets as the unit)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size < 2 or float(v.std(ddof=1)) == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


@dataclass
class KindResult:
    """One model kind attacked over every target: per-target metrics and pooled ROC per attack."""

    kind: Kind
    per_target: dict[str, dict[str, list[float]]]  # attack -> metric -> one value per target
    pooled: dict[str, Roc]
    test_acc: list[float]
    canary: dict[str, list[float]]  # extraction_in, extraction_out, <attack>_tpr per target
    dp: list[dict[str, Any]] = field(default_factory=list)


def attack_kind(
    kind: Kind, logits: np.ndarray, labels: np.ndarray, data: PoolData, test_acc: list[float],
    per_example_variance: bool,
) -> KindResult:  # fmt: skip
    """Every attack on every target pipeline's model of this kind. `logits` is (K, N, C)."""
    z = torch.from_numpy(logits.astype(np.float64))
    y = torch.from_numpy(labels)
    phi = np.stack([logit_confidence(z[k], y).numpy() for k in range(len(z))])
    clean, canary = ~data.is_canary, data.is_canary
    per_target: dict[str, dict[str, list[float]]] = {a: {} for a in ATTACKS}
    member_scores: dict[str, list[np.ndarray]] = {a: [] for a in ATTACKS}
    nonmember_scores: dict[str, list[np.ndarray]] = {a: [] for a in ATTACKS}
    canaries: dict[str, list[float]] = {"extraction_in": [], "extraction_out": []}
    for k in range(len(z)):
        online, offline = lira_scores(phi, data.masks, k, per_example_variance)
        scores = {
            "lira-online": online, "lira-offline": offline, "loss": loss_scores(z[k], y).numpy(),
            "confidence": confidence_scores(z[k]).numpy(), "entropy": entropy_scores(z[k]).numpy(),
        }  # fmt: skip
        inside = data.masks[k]
        for attack, s in scores.items():
            members, nonmembers = s[clean & inside], s[clean & ~inside]
            roc = roc_curve(members, nonmembers)
            for metric, value in metrics_from_roc(roc).items():
                per_target[attack].setdefault(metric, []).append(float(value))
            member_scores[attack].append(members)
            nonmember_scores[attack].append(nonmembers)
            if canary.any():
                threshold = low_fpr_threshold(nonmembers)
                hit = float((s[canary & inside] > threshold).mean())
                canaries.setdefault(f"{attack}_tpr", []).append(hit)
        if canary.any():
            planted = z[k].argmax(1).numpy() == labels
            canaries["extraction_in"].append(float(planted[canary & inside].mean()))
            canaries["extraction_out"].append(float(planted[canary & ~inside].mean()))
    pooled = {
        a: roc_curve(np.concatenate(member_scores[a]), np.concatenate(nonmember_scores[a])) for a in ATTACKS
    }
    return KindResult(kind, per_target, pooled, test_acc, canaries if canary.any() else {})


# --- the study --------------------------------------------------------------------------------


@dataclass
class PoolReport:
    """What `run_privacy_online` trained, measured and wrote."""

    config: PoolConfig
    results: list[KindResult]
    rows: list[dict[str, Any]]
    canary_rows: list[dict[str, Any]]
    comparisons: list[str]
    figures: list[Path]
    trained: int  # pipelines trained by this call (the rest were resumed)
    seconds: float
    seconds_per_pipeline: float | None


def make_config(
    dataset: str = "digits",
    *,
    arch: str = "digits-mlp",
    pool: int | None = None,
    public: int | None = None,
    canary_fraction: float = 0.01,
    shadows: int = 8,
    temperatures: Sequence[float] = (1.0, 10.0, 100.0),
    transfer_sets: Sequence[str] = TRANSFER_SETS,
    dp_epsilons: Sequence[float] = (1.0, 8.0),
    dp_temperatures: Sequence[float] | None = None,
    epochs: int = 50,
    dp_epochs: int = 30,
    seed: int = 0,
) -> PoolConfig:
    """A checked configuration; pool and public default to 2,000 and 1,000 (digits: 1,000 and 400)."""
    get_dataset_spec(dataset)  # an unknown dataset is an error here
    small = dataset == "digits"
    pool = check_positive_int(pool if pool is not None else (1000 if small else 2000), "--pool")
    public = check_positive_int(public if public is not None else (400 if small else 1000), "--public")
    if not 0 <= canary_fraction < 0.5:
        raise DefdistillError(f"--canary-fraction must lie in [0, 0.5), got {canary_fraction}")
    if not isinstance(shadows, int) or shadows < 4 or shadows % 2:
        raise DefdistillError(
            f"online LiRA needs an even number of at least 4 shadow pipelines, got --shadow {shadows}"
        )
    unknown = [t for t in transfer_sets if t not in TRANSFER_SETS]
    if unknown or not transfer_sets:
        raise DefdistillError(f"unknown transfer set {unknown}: choose from {', '.join(TRANSFER_SETS)}")
    temps = tuple(check_temperatures(temperatures))
    eps = tuple(float(e) for e in dp_epsilons)
    if any(not e > 0 for e in eps):
        raise DefdistillError(f"--dp-epsilon values must be > 0, got {list(eps)}")
    return PoolConfig(
        dataset=dataset, arch=arch, pool=pool, public=public, canaries=round(canary_fraction * pool),
        shadows=shadows, temperatures=temps, transfer_sets=tuple(transfer_sets), dp_epsilons=eps,
        dp_temperatures=tuple(check_temperatures(dp_temperatures)) if dp_temperatures else temps,
        epochs=check_positive_int(epochs, "--epochs"), batch_size=64, lr=1e-3,
        dp_epochs=check_positive_int(dp_epochs, "--dp-epochs"), dp_batch_size=min(256, pool // 4), dp_lr=4e-3,
        seed=check_seed(seed),
    )  # fmt: skip


def _resumable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "shadows"}


def run_privacy_online(
    config: PoolConfig,
    *,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
    train_only: bool = False,
) -> PoolReport:
    """Train the unfinished pipelines (resumable), then attack every kind with every pipeline as target."""
    started = time.perf_counter()
    dev = resolve_device(device)
    if config.dp_epsilons:
        from ..train.dp import _opacus

        _opacus()  # the missing dependency is reported before the first model trains
    if not train_only:
        ensure_writable_dir(results_dir, "--results-dir")
    folder = Path(runs_dir) / config.dataset / POOL_RUN
    data = load_pool(config, data_dir)
    stored_config = folder / CONFIG_FILE
    # Pipeline k depends on the seed and k only, so --shadow may grow between runs and reuse them.
    stored = json.loads(stored_config.read_text(encoding="utf-8")) if stored_config.is_file() else None
    if stored is not None and _resumable(stored) != _resumable(config.to_json()):
        raise DefdistillError(
            f"{folder} holds pipelines of another configuration: delete it or use another --runs-dir"
        )
    atomic_write_json(stored_config, config.to_json())
    kinds = model_kinds(config)
    names = [k.name for k in kinds]
    pipelines: list[dict[str, Any]] = []
    trained, train_seconds = 0, 0.0
    with progress.task(f"{config.dataset} privacy pipelines", config.shadows) as advance:
        for k in range(config.shadows):
            path = _shadow_path(folder, k)
            result = load_pipeline(path, data.masks[k], names)
            if result is None:
                t0 = time.perf_counter()
                result = run_pipeline(config, data, k, dev)
                save_pipeline(path, k, data.masks[k], result)
                train_seconds += time.perf_counter() - t0
                trained += 1
            pipelines.append(result)
            advance(1)
    per_pipeline = train_seconds / trained if trained else None
    if train_only:
        return PoolReport(config, [], [], [], [], [], trained, time.perf_counter() - started, per_pipeline)
    logits = np.stack([p["logits"] for p in pipelines], axis=1)  # (kinds, K, N, C)
    labels = data.y_pool.numpy()
    per_example = config.shadows >= PER_EXAMPLE_VARIANCE_FROM
    results: list[KindResult] = []
    for i, kind in enumerate(kinds):
        acc = [float(p["test_acc"][i]) for p in pipelines]
        attacked = attack_kind(kind, logits[i], labels, data, acc, per_example)
        attacked.dp = [p["dp"][kind.name] for p in pipelines if kind.name in p["dp"]]
        results.append(attacked)
    rows = [row for r in results for row in _rows(config, r)]
    canary_rows = [_canary_row(config, r) for r in results] if config.canaries else []
    comparisons = paired_comparisons(results)
    figures = _write_results(Path(results_dir), config, results, rows, canary_rows, comparisons)
    return PoolReport(
        config, results, rows, canary_rows, comparisons, figures, trained, time.perf_counter() - started,
        per_pipeline,
    )  # fmt: skip


def _rows(config: PoolConfig, r: KindResult) -> list[dict[str, Any]]:
    acc, acc_lo, acc_hi = mean_interval(r.test_acc)
    rows = []
    for attack in ATTACKS:
        m = r.per_target[attack]
        row: dict[str, Any] = {
            "dataset": config.dataset, "model": r.kind.name, "role": r.kind.role, "T": r.kind.T,
            "attack": attack, "n_members": int(m["n_members"][0]), "n_nonmembers": int(m["n_nonmembers"][0]),
        }  # fmt: skip
        for metric in ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage"):
            row[metric] = mean_interval(m[metric])[0]
        row |= {
            "test_acc": acc, "transfer_set": r.kind.transfer_set, "shadows": config.shadows,
            "seed": config.seed, "epochs": config.dp_epochs if r.kind.role == "dp-teacher" else config.epochs,
            "lira": LIRA.get(attack), "dp_epsilon": r.kind.dp_epsilon, "targets": config.shadows,
        }  # fmt: skip
        for metric in ("auc", "tpr_at_0_1pct_fpr", "tpr_at_1pct_fpr"):
            _, lo, hi = mean_interval(m[metric])
            row[f"{metric}_lo"], row[f"{metric}_hi"] = max(lo, 0.0), min(hi, 1.0)
        row["test_acc_lo"], row["test_acc_hi"] = acc_lo, acc_hi
        rows.append(row)
    return rows


def _canary_row(config: PoolConfig, r: KindResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dataset": config.dataset, "model": r.kind.name, "role": r.kind.role, "T": r.kind.T,
        "transfer_set": r.kind.transfer_set, "dp_epsilon": r.kind.dp_epsilon, "canaries": config.canaries,
        "canaries_in_per_target": config.canaries // 2, "targets": config.shadows, "shadows": config.shadows,
    }  # fmt: skip
    for key in ("extraction_in", "extraction_out", "lira-online_tpr", "lira-offline_tpr", "loss_tpr"):
        mean, lo, hi = mean_interval(r.canary[key])
        column = key.replace("-", "_").replace("_tpr", "_tpr_at_0_1pct_fpr")
        row[column], row[f"{column}_lo"], row[f"{column}_hi"] = mean, max(lo, 0.0), min(hi, 1.0)
    return row


# --- paired comparisons -------------------------------------------------------------------------


def _describe(label: str, diffs: np.ndarray, what: str) -> str:
    d = describe_differences(diffs)
    mean, lo, hi = mean_interval(diffs)
    verdict = "significant" if d.t_p_value < 0.05 and d.sign_p_value < 0.05 else "not significant"
    return (
        f"{label}: {what} difference {mean:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}) over {d.n} targets; "
        f"{d.positive} higher, {d.negative} lower; paired t p = {d.t_p_value:.2g}, sign test p = "
        f"{d.sign_p_value:.2g}: {verdict} at 5% (both tests)"
    )


def paired_comparisons(results: list[KindResult], attack: str = "lira-online") -> list[str]:
    """Per-target paired differences: teacher - control, and every model - teacher, in words."""
    by_name = {r.kind.name: r for r in results}
    teacher = by_name.get("pool-teacher")
    control = by_name.get("pool-control")
    lines: list[str] = []
    if teacher is None:
        return lines
    for metric, what in (("tpr_at_0_1pct_fpr", "TPR@0.1%FPR"), ("auc", "AUC")):
        t = np.asarray(teacher.per_target[attack][metric])
        if control is not None:
            c = np.asarray(control.per_target[attack][metric])
            lines.append(_describe("teacher - control", t - c, f"{attack} {what}"))
        for r in results:
            if r.kind.name in ("pool-teacher",):
                continue
            d = np.asarray(r.per_target[attack][metric]) - t
            lines.append(_describe(f"{r.kind.name} - teacher", d, f"{attack} {what}"))
    return lines


# --- tables and figures ---------------------------------------------------------------------------


def thin_roc(roc: Roc, points: int = 600) -> Roc:
    """At most about `points` ROC points, log-spaced in FPR (the low-FPR end kept exactly), for storage."""
    if len(roc.fpr) <= points:
        return roc
    grid = np.unique(np.concatenate([np.geomspace(1.0 / roc.n_nonmembers, 1.0, points // 2),
                                     np.linspace(0, 1, points // 2)]))  # fmt: skip
    idx = np.unique(np.clip(np.searchsorted(roc.fpr, grid, side="right") - 1, 0, len(roc.fpr) - 1))
    idx = np.unique(np.concatenate([[0], idx, [len(roc.fpr) - 1]]))
    return Roc(roc.fpr[idx], roc.tpr[idx], roc.n_members, roc.n_nonmembers)


CANARY_COLUMNS = (
    "dataset", "model", "role", "T", "transfer_set", "dp_epsilon", "extraction_in", "extraction_in_lo",
    "extraction_in_hi", "extraction_out", "lira_online_tpr_at_0_1pct_fpr", "lira_online_tpr_at_0_1pct_fpr_lo",
    "lira_online_tpr_at_0_1pct_fpr_hi", "lira_offline_tpr_at_0_1pct_fpr", "loss_tpr_at_0_1pct_fpr",
    "canaries", "canaries_in_per_target", "targets", "shadows",
)  # fmt: skip


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_canaries(results_dir: Path, dataset: str, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    csv = results_dir / "privacy_canaries.csv"
    frame = pd.DataFrame(rows).reindex(columns=list(CANARY_COLUMNS))
    if csv.is_file():
        old = pd.read_csv(csv)
        frame = pd.concat([old[old["dataset"] != dataset], frame], ignore_index=True)
    atomic_write_text(csv, frame.to_csv(index=False))
    shown = ("model", "extraction_in", "extraction_out", "lira_online_tpr_at_0_1pct_fpr",
             "lira_offline_tpr_at_0_1pct_fpr", "loss_tpr_at_0_1pct_fpr")  # fmt: skip
    lines = [
        "# Planted canaries: extraction and membership inference",
        "",
        "Canaries are pool examples relabelled at random (a wrong label), fixed across pipelines. "
        "`extraction_in`: share of the target's IN canaries whose planted label the model outputs; "
        "`extraction_out`: the same for canaries the target never saw (chance level); "
        "`*_tpr_at_0_1pct_fpr`: share of IN canaries scored above the threshold that gives 0.1% FPR on "
        "the clean non-members. Mean over targets [95% t-interval].",
        "",
    ]
    for ds, group in frame.groupby("dataset", sort=False):
        first = group.iloc[0]
        lines += [
            f"## {ds}: {int(first['canaries'])} canaries, {int(first['canaries_in_per_target'])} IN per "
            f"target, {int(first['targets'])} targets",
            "",
            "| " + " | ".join(shown) + " |",
            "| " + " | ".join("---" for _ in shown) + " |",
        ]
        for _, r in group.iterrows():
            cells = [str(r["model"])]
            for c in shown[1:]:
                lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
                has_ci = isinstance(lo, float) and not math.isnan(lo)
                cells.append(f"{r[c]:.3f} [{lo:.3f}, {hi:.3f}]" if has_ci else f"{r[c]:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    atomic_write_text(results_dir / "privacy_canaries.md", "\n".join(lines))


def frontier_path(results_dir: str | Path, dataset: str) -> Path:
    return Path(results_dir) / f"privacy_frontier_{dataset}.png"


def plot_frontier(rows: Sequence[dict[str, Any]], path: Path, attack: str = "lira-online") -> Path:
    """Test accuracy against TPR at 0.1% FPR (log x), one point per model kind with its intervals."""
    from matplotlib.figure import Figure

    chosen = [r for r in rows if r["attack"] == attack]
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.subplots()
    colours = {"teacher": "black", "control": "tab:red", "student": "tab:blue", "dp-teacher": "tab:green",
               "dp-student": "tab:olive"}  # fmt: skip
    markers = {"public": "o", "private": "s", "noise": "^", NO_TRANSFER_SET: "D"}
    floor = 1.0 / (10 * max(int(r["n_nonmembers"]) for r in chosen))
    for r in chosen:
        x = max(r["tpr_at_0_1pct_fpr"], floor)
        xerr = [[x - max(r["tpr_at_0_1pct_fpr_lo"], floor)], [max(r["tpr_at_0_1pct_fpr_hi"], floor) - x]]
        yerr = [[r["test_acc"] - r["test_acc_lo"]], [r["test_acc_hi"] - r["test_acc"]]]
        ax.errorbar(x, r["test_acc"], xerr=xerr, yerr=yerr, fmt=markers.get(r["transfer_set"], "o"),
                    color=colours.get(r["role"], "grey"), ms=5, lw=0.8, capsize=2)  # fmt: skip
        label = r["model"].removeprefix("pool-")
        ax.annotate(label, (x, r["test_acc"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axvline(LOW_FPR, ls=":", color="grey", lw=1.0)
    ax.text(LOW_FPR, ax.get_ylim()[0], " chance (TPR = FPR)", fontsize=7, color="grey", va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel(f"TPR at 0.1% FPR ({attack}, mean over targets, 95% t-interval)")
    ax.set_ylabel("test accuracy (mean over pipelines)")
    ax.grid(alpha=0.3, which="both")
    first = chosen[0]
    ax.set_title(
        f"Privacy-accuracy frontier on {first['dataset']}: {first['shadows']} pipelines, "
        f"{first['n_members']} members / {first['n_nonmembers']} non-members per target",
        fontsize=9,
    )
    return atomic_write_png(path, fig, dpi=120)


def _write_results(
    results_dir: Path, config: PoolConfig, results: list[KindResult], rows: list[dict[str, Any]],
    canary_rows: list[dict[str, Any]], comparisons: list[str],
) -> list[Path]:  # fmt: skip
    record_rows(results_dir, "privacy", rows)
    by_key = {(r["model"], r["attack"]): r for r in rows}
    for result in results:
        for attack in ("lira-online", "lira-offline", "loss"):
            row = by_key[result.kind.name, attack]
            save_roc_record(results_dir, row, thin_roc(result.pooled[attack]))
    figures = [
        plot_privacy_rocs(
            read_roc_records(results_dir, config.dataset), roc_figure_path(results_dir, config.dataset)
        ),
        plot_frontier(rows, frontier_path(results_dir, config.dataset)),
    ]
    if canary_rows:
        _write_canaries(results_dir, config.dataset, canary_rows)
    summary = [
        f"# Privacy on {config.dataset}: {config.shadows} shadow pipelines, online LiRA",
        "",
        "Configuration: " + json.dumps(config.to_json()),
        "",
        "## Paired comparisons (each pipeline as the target is one pair)",
        "",
        *[f"- {line}" for line in comparisons],
        "",
    ]
    dp = [(r.kind.name, r.dp) for r in results if r.dp]
    if dp:
        summary += ["## DP-SGD accounting (Opacus, RDP accountant)", ""]
        for name, accounts in dp:
            a = accounts[0]
            spent = max(x["epsilon"] for x in accounts)
            summary.append(
                f"- {name}: noise multiplier {a['noise_multiplier']:.3f}, sample rate "
                f"{a['sample_rate']:.3f}, {a['steps']} steps, epsilon spent <= {spent:.3f} at delta "
                f"{a['delta']:g}"
            )
    atomic_write_text(results_dir / f"privacy_pool_{config.dataset}.md", "\n".join(summary) + "\n")
    return figures
