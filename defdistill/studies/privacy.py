"""Distillation as a defence against membership inference, measured the way the field measures it.

The design of Shejwalkar & Houmansadr (2021, "Membership Privacy for Machine Learning Models
Through Knowledge Transfer"): a teacher is trained on a private half of the training split; a
student sees only the teacher's soft labels softmax(z_t / T) on a disjoint public half (labels
unused), or on uniform noise; both are attacked for the teacher's private members. Jagielski et
al. (2023, "Students Parrot Their Teachers") show the student can still leak them, most when the
transfer set resembles the private data, which is what the `public` / `noise` choice varies.

Attacks: loss threshold (Yeom et al. 2018), confidence and entropy thresholds (Salem et al. 2019)
and offline LiRA (Carlini et al. 2022). Metrics, as Carlini et al. recommend: AUC, TPR at 1% and
0.1% FPR read from the ROC, membership advantage max(TPR - FPR) (Yeom et al.), and utility (test
accuracy).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import check_positive_int, check_seed, check_shadows, check_temperatures
from ..core.fileio import (
    atomic_write_json,
    atomic_write_png,
    atomic_write_text,
    ensure_writable_dir,
)
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device, seed_everything
from ..data.registry import DatasetSpec, get_dataset_spec, load_dataset
from ..errors import DefdistillError
from ..models import accuracy, build_model, predict_logits
from ..store.runs import format_T, run_dir, save_run
from ..store.tables import (
    NO_TRANSFER_SET,
    PRIVACY_ROC_RECORDS,
    RECORDS_DIR,
    migrate_privacy_records,
    record_rows,
    record_slug,
)
from ..train.distill import distillation_loss
from ..train.loop import LossFn, Recipe, base_meta, finish_meta, fit, recipe_for, temperature_cross_entropy

ATTACKS = ("loss", "confidence", "entropy", "lira")
TRANSFER_SETS = ("public", "noise")
DEFAULT_TEMPERATURES = (1.0, 10.0, 100.0)
DEFAULT_SHADOWS = 4
FPR_TARGETS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}
# Carlini et al. (2022, section VI-A): below ~64 shadow models a variance shared by all examples
# is a better estimate than one per example.
LIRA_GLOBAL_VARIANCE_BELOW = 64
MEMBERSHIP_FILE = "membership.json"
SHADOW_SCORES_FILE = "lira_shadow_scores.json"
# Privacy runs carry meta["study"]; runs.list_runs leaves such runs out of role look-ups, so
# `--model teacher --T 1` keeps meaning teacher-T1 and privacy runs are reached by name.
STUDY = "privacy"
# Each model x attack ROC is kept beside its record in records/privacy, so the figure can be
# redrawn (and other plots made) without retraining.
ROC_RECORDS = PRIVACY_ROC_RECORDS
# The calibrated attacks (online LiRA of studies/privacy_online, offline LiRA of this study), and
# the simplest baseline beside them; a figure shows those of its records.
ROC_PANELS = ("lira-online", "lira-offline", "lira", "loss")
ROC_FLOOR = 1e-3  # the log axes' lower end: TPR at 0.1% FPR is the lowest rate the table reports
PANEL_TITLES = {
    "lira-online": "online LiRA",
    "lira-offline": "offline LiRA",
    "lira": "offline LiRA",
    "loss": "loss threshold",
}


# --- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roc:
    """ROC of a membership score (higher = more likely a member): one point per distinct threshold."""

    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_nonmembers: int


def _scores(values: Sequence[float] | np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = np.asarray(
        values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64
    )
    if array.ndim != 1 or array.size == 0:
        raise DefdistillError(f"{what} must be a non-empty 1-D array of scores, got shape {array.shape}")
    if np.isnan(array).any():
        raise DefdistillError(f"{what} contain NaN: the model's outputs are not finite, retrain it")
    return array


def roc_curve(
    member_scores: Sequence[float] | np.ndarray | torch.Tensor,
    nonmember_scores: Sequence[float] | np.ndarray | torch.Tensor,
) -> Roc:
    """Exact ROC: thresholds at every distinct score, members as positives.

    Tied scores form one point, so a tie between a member and a non-member never counts as
    separated; the curve starts at (0, 0) and ends at (1, 1).
    """
    pos = _scores(member_scores, "member scores")
    neg = _scores(nonmember_scores, "non-member scores")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # last index of each run of equal scores (`!=`, not np.diff, so equal infinities tie too)
    ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1)
    tps = np.cumsum(labels)[ends]
    fps = np.cumsum(1.0 - labels)[ends]
    return Roc(
        fpr=np.concatenate([[0.0], fps / len(neg)]),
        tpr=np.concatenate([[0.0], tps / len(pos)]),
        n_members=len(pos),
        n_nonmembers=len(neg),
    )


def roc_auc(roc: Roc) -> float:
    """Area under the ROC (trapezoids; a tied pair counts one half, as in the Mann-Whitney U)."""
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2.0))


def tpr_at_fpr(roc: Roc, target: float) -> float:
    """TPR at the largest achievable FPR <= target (the conservative reading, no interpolation).

    A threshold can only realise FPRs that are multiples of 1/n_nonmembers: with 360
    non-members, 1% FPR allows 3 false positives and 0.1% allows none, so TPR at 0.1% FPR is the
    fraction of members scored strictly above every non-member. Interpolating between ROC points
    would credit the attack with a randomised threshold it never ran.
    """
    allowed = roc.fpr <= target + 1e-12  # 3/300 must count as <= 0.01 despite rounding
    return float(roc.tpr[allowed].max())


def membership_advantage(roc: Roc) -> float:
    """Yeom et al. (2018): max over thresholds of TPR - FPR."""
    return float(np.max(roc.tpr - roc.fpr))


def membership_metrics(
    member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray
) -> dict[str, float | int]:
    """AUC, TPR at 1% and 0.1% FPR, advantage, and the counts they rest on."""
    return metrics_from_roc(roc_curve(member_scores, nonmember_scores))


def metrics_from_roc(roc: Roc) -> dict[str, float | int]:
    """The table's metric columns from one ROC."""
    return {
        "n_members": roc.n_members,
        "n_nonmembers": roc.n_nonmembers,
        "auc": roc_auc(roc),
        **{column: tpr_at_fpr(roc, target) for column, target in FPR_TARGETS.items()},
        "advantage": membership_advantage(roc),
    }


# --- attack scores (higher = "member") ------------------------------------------------------


def stable_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax in float64 with log1p, so log p of the top class stays distinct from 0.

    A student distilled at T answers at T=1 with logits about T times larger; the usual
    logsumexp(z) - z_y rounds to exactly 0 once the margin passes ~37 nats, which would tie
    every confident example and blind the threshold attacks.
    """
    z = logits.double()
    top, arg = z.max(1, keepdim=True)
    shifted = z - top
    rest = shifted.exp().scatter(1, arg, 0.0).sum(1, keepdim=True)  # sum over classes != argmax
    return shifted - torch.log1p(rest)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence log p_y - log sum_{i != y} p_i = z_y - logsumexp_{i != y} z_i."""
    z = logits.double()
    others = z.scatter(1, labels.view(-1, 1), -math.inf)
    return z.gather(1, labels.view(-1, 1)).squeeze(1) - torch.logsumexp(others, dim=1)


def loss_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Yeom et al. (2018): minus the cross-entropy loss; members are fit more closely."""
    return stable_log_softmax(logits).gather(1, labels.view(-1, 1)).squeeze(1)


def confidence_scores(logits: torch.Tensor) -> torch.Tensor:
    """log of the top softmax probability (monotone in it, so the same ROC; label-free)."""
    return stable_log_softmax(logits).max(1).values


def entropy_scores(logits: torch.Tensor) -> torch.Tensor:
    """Minus the entropy of the prediction (label-free; members get sharper predictions)."""
    log_p = stable_log_softmax(logits)
    return (log_p.exp() * log_p).sum(1)


def lira_offline_scores(target_phi: torch.Tensor, shadow_phi: torch.Tensor) -> torch.Tensor:
    """Offline LiRA (Carlini et al. 2022, Algorithm 1 without IN models).

    `shadow_phi` (K x N) holds each example's logit-scaled confidence under K shadow models
    that never trained on it. A Gaussian N(mu_i, sigma^2) fitted to those OUT scores gives the
    one-sided test Pr[Z < phi_observed]; the score returned is its z-value (phi - mu_i) / sigma,
    monotone in that probability but without its float saturation at z > 8.
    """
    K = shadow_phi.shape[0]
    if K < 2:
        raise DefdistillError(
            f"LiRA needs at least 2 shadow models to estimate a variance, got {K}: use --shadow 4"
        )
    shadow_phi = shadow_phi.double()
    mu = shadow_phi.mean(0)
    if K < LIRA_GLOBAL_VARIANCE_BELOW:
        sigma = ((shadow_phi - mu) ** 2).sum().div(shadow_phi.numel() - shadow_phi.shape[1]).sqrt()
    else:
        sigma = shadow_phi.std(0)
    return (target_phi.double() - mu) / sigma.clamp_min(1e-12)


def threshold_attack_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The scores of the three threshold attacks, which need the target model only."""
    return {
        "loss": loss_scores(logits, labels),
        "confidence": confidence_scores(logits),
        "entropy": entropy_scores(logits),
    }


# --- the data split ---------------------------------------------------------------------


def derived_seed(seed: int, *parts: int) -> int:
    """An independent 32-bit seed for one component (split, shadow k, noise), from the run's seed."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


@dataclass(frozen=True)
class MembershipSplit:
    """Indices into the train split (private, public, members, shadow pool) and the test split."""

    private: np.ndarray  # the teacher's training set
    public: np.ndarray  # the student's transfer set; its labels are never used
    members: np.ndarray  # attacked members: a subset of `private`
    nonmembers: np.ndarray  # attacked non-members: test-split indices
    shadow_pool: np.ndarray  # train indices that are no attack target: public + unused private

    def to_json(self) -> dict[str, Any]:
        return {
            "private_train_indices": self.private.tolist(),
            "public_train_indices": self.public.tolist(),
            "members": {"split": "train", "indices": self.members.tolist()},
            "nonmembers": {"split": "test", "indices": self.nonmembers.tolist()},
            "n_members": len(self.members),
            "n_nonmembers": len(self.nonmembers),
            "shadow_pool_train_indices": self.shadow_pool.tolist(),
        }


def make_split(y_train: torch.Tensor, n_test: int, seed: int) -> MembershipSplit:
    """Seeded, stratified halves of the train split, and a balanced member / non-member set.

    n_members == n_nonmembers == min(|private|, |test|): on digits the 360-image test split is
    the smaller, so every test image is a non-member and 360 of the 718 private images are the
    members; on MNIST all 10,000 test images face 10,000 of the 30,000 private ones.
    """
    from sklearn.model_selection import train_test_split

    labels = y_train.numpy()
    indices = np.arange(len(labels))
    private, public = train_test_split(
        indices, test_size=0.5, stratify=labels, random_state=derived_seed(seed, 0)
    )
    rng = np.random.default_rng(derived_seed(seed, 1))
    n = min(len(private), n_test)
    members = np.sort(rng.choice(private, size=n, replace=False))
    nonmembers = np.sort(rng.choice(n_test, size=n, replace=False))
    unused_private = np.setdiff1d(private, members)
    return MembershipSplit(
        private=np.sort(private),
        public=np.sort(public),
        members=members,
        nonmembers=nonmembers,
        shadow_pool=np.sort(np.concatenate([public, unused_private])),
    )


def shadow_halves(
    pool: np.ndarray, y_train: torch.Tensor, seed: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shadow k's private and public halves: a seeded, stratified partition of the pool."""
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(
        pool, test_size=0.5, stratify=y_train.numpy()[pool], random_state=derived_seed(seed, 2, k)
    )
    return np.sort(a), np.sort(b)


def noise_images(count: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Uniform noise in [0, 1]: a transfer set that shares nothing with the private data."""
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


# --- training, through the library's own loops -----------------------------------------------


@dataclass(frozen=True)
class _Setting:
    dataset: str
    spec: DatasetSpec
    arch: str
    recipe: Recipe
    device: torch.device
    progress: ProgressReporter


def _train_private_teacher(
    s: _Setting, x: torch.Tensor, y: torch.Tensor, seed: int, description: str
) -> tuple[nn.Module, list[float]]:
    seed_everything(seed)
    model = build_model(s.arch, s.spec.shape, s.spec.num_classes, s.spec.mean, s.spec.std)
    losses = fit(
        model, x, y, y, temperature_cross_entropy(1.0), s.recipe, s.device, seed, s.progress, description
    )
    return model, losses


def _soft_label_loss(T: float) -> LossFn:
    def loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, teacher_logits, labels, T, alpha=1.0)  # labels unused at alpha=1

    return loss


def _distil_student(
    s: _Setting, teacher: nn.Module, x_transfer: torch.Tensor, T: float, seed: int, description: str
) -> tuple[nn.Module, list[float]]:
    teacher_logits = predict_logits(teacher, x_transfer, s.device)
    placeholder = teacher_logits.argmax(1)  # fit wants labels; the pure soft-label loss ignores them
    seed_everything(seed)
    student = build_model(s.arch, s.spec.shape, s.spec.num_classes, s.spec.mean, s.spec.std)
    losses = fit(
        student,
        x_transfer,
        placeholder,
        teacher_logits,
        _soft_label_loss(T),
        s.recipe,
        s.device,
        seed,
        s.progress,
        description,
    )
    return student, losses


def _study_recipe(dataset: str, epochs: int | None) -> Recipe:
    """The study's optimiser settings: the dataset's batch size, learning rate and weight decay
    with the default (Adam) optimiser, and `epochs` when given."""
    base = recipe_for(dataset)
    return Recipe(
        epochs=check_positive_int(epochs, "--epochs") if epochs is not None else base.epochs,
        batch_size=base.batch_size,
        lr=base.lr,
        weight_decay=base.weight_decay,
    )


def train_private_teacher(
    x: torch.Tensor,
    y: torch.Tensor,
    dataset: str = "digits",
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressReporter = SILENT,
) -> nn.Module:
    """A teacher trained on (x, y) alone with plain cross-entropy (the study's teacher step)."""
    spec = get_dataset_spec(dataset)
    setting = _Setting(
        dataset, spec, spec.default_arch, _study_recipe(dataset, epochs), resolve_device(device), progress
    )
    return _train_private_teacher(setting, x, y, seed, f"{dataset} teacher")[0]


# --- the study ------------------------------------------------------------------------------


def teacher_run_name() -> str:
    return "privacy-teacher"


def student_run_name(T: float, transfer_set: str) -> str:
    """`privacy-student-T10`, or `privacy-student-noise-T10` for a noise transfer set."""
    middle = "" if transfer_set == "public" else f"{transfer_set}-"
    return f"privacy-student-{middle}T{format_T(T)}"


CONTROL_NAME = "privacy-control"
CONTROL_ROLE = "control"  # in the table; its run folder's meta.json says "teacher" (trained on labels)


@dataclass(frozen=True)
class _Trained:
    name: str
    role: str  # teacher, student or control
    T: float
    model: nn.Module
    seconds: float
    losses: list[float]
    transfer_set: str  # the students' transfer set; NO_TRANSFER_SET for the teacher and the control
    train_set: str  # in words, for meta.json


@dataclass
class PrivacyModel:
    """One attacked model: its run, role, temperature, test accuracy and per-attack ROC."""

    name: str
    role: str
    T: float
    test_acc: float
    path: Path
    rocs: dict[str, Roc] = field(default_factory=dict)


@dataclass
class PrivacyReport:
    """What `run_privacy` trained, measured and wrote."""

    models: list[PrivacyModel]
    rows: list[dict[str, Any]]
    figure: Path
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Study:
    """The privacy study's checked inputs, its data and the membership split."""

    setting: _Setting
    temperatures: tuple[float, ...]
    shadows: int
    transfer_set: str
    seed: int
    control: bool
    control_only: bool
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split: MembershipSplit
    x_targets: torch.Tensor  # the attacked examples: members, then non-members
    y_targets: torch.Tensor

    @property
    def n(self) -> int:
        """How many members (and as many non-members) are attacked."""
        return len(self.split.members)

    def transfer_inputs(self, public_indices: np.ndarray, noise_seed: int) -> torch.Tensor:
        """A student's transfer set: the public examples given, or as many noise images."""
        if self.transfer_set == "noise":
            return noise_images(len(self.split.public), self.setting.spec.shape, noise_seed)
        return self.x_train[public_indices]


def run_privacy(
    dataset: str = "digits",
    *,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    shadows: int = DEFAULT_SHADOWS,
    transfer_set: str = "public",
    epochs: int | None = None,
    seed: int = 0,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
    control: bool = False,
    control_only: bool = False,
) -> PrivacyReport:
    """Teacher on the private half, a student per T on the public half (or noise), attacked for membership.

    Shadow models mimic each pipeline (Carlini et al. 2022, offline): shadow k trains a teacher
    on a random stratified half A_k of the shadow pool and distils its students at each T on the
    other half B_k (on noise when the transfer set is noise). The pool holds no attack target,
    so every shadow is an OUT model for every example. Approximation: the shadow sets are about
    3/4 the size of the real private and public halves (the pool is public + unused private).

    `control` adds `privacy-control`: the same network trained with cross-entropy on the public
    half with its true labels, which never sees a private example, attacked the same way (its
    LiRA shadows train on each B_k with labels). What the attacks score on it is the floor of a
    model without members. `control_only` trains the control alone (no teacher, no students).
    """
    check_seed(seed)  # every input is checked before the first model trains
    study = _prepare(
        dataset, temperatures, shadows, transfer_set, epochs, seed, data_dir, device, progress, control,
        control_only,
    )  # fmt: skip
    ensure_writable_dir(results_dir, "--results-dir")
    started = time.perf_counter()
    trained = _train_targets(study)
    shadow_phi, shadow_sets = _shadow_scores(study, trained)
    membership = _membership(study, shadow_sets)
    models, rows, curves = [], [], []
    for t in trained:
        model, model_rows, model_curves = _attack_and_save(study, t, shadow_phi[t.name], membership, runs_dir)
        models.append(model)
        rows.extend(model_rows)
        curves.extend(model_curves)
    figure = _record(results_dir, dataset, rows, curves)
    return PrivacyReport(models, rows, figure, time.perf_counter() - started, _notes(study))


def _prepare(
    dataset: str,
    temperatures: Sequence[float],
    shadows: int,
    transfer_set: str,
    epochs: int | None,
    seed: int,
    data_dir: str | Path,
    device: str,
    progress: ProgressReporter,
    control: bool,
    control_only: bool,
) -> _Study:
    """Check the inputs, load the data and draw the membership split."""
    spec = get_dataset_spec(dataset)
    control = control or control_only
    checked = () if control_only else tuple(check_temperatures(temperatures))
    shadows = check_shadows(shadows)
    if transfer_set not in TRANSFER_SETS:
        raise DefdistillError(
            f"unknown transfer set {transfer_set!r}: choose one of {', '.join(TRANSFER_SETS)}"
        )
    setting = _Setting(
        dataset, spec, spec.default_arch, _study_recipe(dataset, epochs), resolve_device(device), progress
    )
    x_train, y_train = load_dataset(dataset, "train", data_dir)
    x_test, y_test = load_dataset(dataset, "test", data_dir)
    split = make_split(y_train, len(y_test), seed)
    x_targets = torch.cat([x_train[split.members], x_test[split.nonmembers]])
    y_targets = torch.cat([y_train[split.members], y_test[split.nonmembers]])
    return _Study(
        setting, checked, shadows, transfer_set, seed, control, control_only, x_train, y_train, x_test,
        y_test, split, x_targets, y_targets,
    )  # fmt: skip


def _train_targets(study: _Study) -> list[_Trained]:
    """The attacked models: the teacher on the private half, one student per T on the public
    half (or noise), and the control on the public half with its labels."""
    s, split, seed, dataset = study.setting, study.split, study.seed, study.setting.dataset
    trained: list[_Trained] = []
    if not study.control_only:
        t0 = time.perf_counter()
        teacher, losses = _train_private_teacher(
            s,
            study.x_train[split.private],
            study.y_train[split.private],
            seed,
            f"{dataset} {teacher_run_name()}",
        )
        trained.append(
            _Trained(
                teacher_run_name(), "teacher", 1.0, teacher, time.perf_counter() - t0, losses,
                NO_TRANSFER_SET, f"private half ({len(split.private)} train examples)",
            )
        )  # fmt: skip
        x_transfer = study.transfer_inputs(split.public, derived_seed(seed, 3))
        for T in study.temperatures:
            name = student_run_name(T, study.transfer_set)
            t0 = time.perf_counter()
            student, losses = _distil_student(s, teacher, x_transfer, T, seed, f"{dataset} {name}")
            trained.append(
                _Trained(
                    name, "student", T, student, time.perf_counter() - t0, losses, study.transfer_set,
                    f"{study.transfer_set} transfer set ({len(split.public)} inputs, "
                    f"soft labels at T={format_T(T)})",
                )
            )  # fmt: skip
    if study.control:
        t0 = time.perf_counter()
        model, losses = _train_private_teacher(
            s, study.x_train[split.public], study.y_train[split.public], seed, f"{dataset} {CONTROL_NAME}"
        )
        trained.append(
            _Trained(
                CONTROL_NAME, CONTROL_ROLE, 1.0, model, time.perf_counter() - t0, losses, NO_TRANSFER_SET,
                f"public half with its true labels ({len(split.public)} train examples; no private example)",
            )
        )  # fmt: skip
    return trained


def _phi(study: _Study, model: nn.Module) -> torch.Tensor:
    """The logit-scaled confidence of `model` on every attacked example."""
    return logit_confidence(predict_logits(model, study.x_targets, study.setting.device), study.y_targets)


def _shadow_scores(
    study: _Study, trained: list[_Trained]
) -> tuple[dict[str, list[torch.Tensor]], list[dict[str, list[int]]]]:
    """Shadow pipelines: phi of every attacked example under each OUT shadow model, per target
    model; and each shadow's private and public halves."""
    s, x_train, y_train, dataset = study.setting, study.x_train, study.y_train, study.setting.dataset
    shadow_phi: dict[str, list[torch.Tensor]] = {t.name: [] for t in trained}
    shadow_sets = []
    for k in range(study.shadows):
        a, b = shadow_halves(study.split.shadow_pool, y_train, study.seed, k)
        shadow_sets.append({"private": a.tolist(), "public": b.tolist()})
        k_seed = derived_seed(study.seed, 4, k)
        shadow = f"{dataset} shadow {k + 1}/{study.shadows}"
        if not study.control_only:
            shadow_teacher, _ = _train_private_teacher(s, x_train[a], y_train[a], k_seed, f"{shadow} teacher")
            shadow_phi[teacher_run_name()].append(_phi(study, shadow_teacher))
            shadow_transfer = study.transfer_inputs(b, derived_seed(study.seed, 5, k))
            for T in study.temperatures:
                shadow_student, _ = _distil_student(
                    s, shadow_teacher, shadow_transfer, T, k_seed, f"{shadow} student-T{format_T(T)}"
                )
                shadow_phi[student_run_name(T, study.transfer_set)].append(_phi(study, shadow_student))
        if study.control:
            shadow_control, _ = _train_private_teacher(s, x_train[b], y_train[b], k_seed, f"{shadow} control")
            shadow_phi[CONTROL_NAME].append(_phi(study, shadow_control))
    return shadow_phi, shadow_sets


def _membership(study: _Study, shadow_sets: list[dict[str, list[int]]]) -> dict[str, Any]:
    """membership.json: who was attacked, and on what each shadow trained."""
    return {
        "dataset": study.setting.dataset,
        "seed": study.seed,
        "transfer_set": study.transfer_set,
        "targets": "members: attacked private (teacher-training) examples; nonmembers: test examples; "
        "n_members == n_nonmembers == min(|private|, |test|)",
        **study.split.to_json(),
        "shadow_models": study.shadows,
        "shadow_sets": shadow_sets,
    }


def _attack_and_save(
    study: _Study,
    t: _Trained,
    shadow_phi: list[torch.Tensor],
    membership: dict[str, Any],
    runs_dir: str | Path,
) -> tuple[PrivacyModel, list[dict[str, Any]], list[Roc]]:
    """Every membership attack on one trained model, its run folder written; the model's
    entry, its result rows and their ROC curves (one per row)."""
    s, dataset = study.setting, study.setting.dataset
    member = torch.zeros(len(study.y_targets), dtype=torch.bool)
    member[: study.n] = True
    test_acc = accuracy(t.model, study.x_test, study.y_test, s.device)
    logits = predict_logits(t.model, study.x_targets, s.device)
    scores = threshold_attack_scores(logits, study.y_targets)
    phi = logit_confidence(logits, study.y_targets)
    if study.shadows:
        scores["lira"] = lira_offline_scores(phi, torch.stack(shadow_phi))
    rocs = {attack: roc_curve(v[member], v[~member]) for attack, v in scores.items()}

    path = run_dir(runs_dir, dataset, t.name)
    # finish_meta measures wall time from a start: the model's own training time, not the shadows'
    started_at = time.perf_counter() - t.seconds
    meta_role = "student" if t.role == "student" else "teacher"  # run folders know these two roles
    meta = finish_meta(
        base_meta(dataset, s.arch, meta_role, t.T, study.seed, s.recipe), started_at, t.losses, test_acc
    )
    meta.update(
        study=STUDY,
        privacy_role=t.role,
        train_set=t.train_set,
        teacher=teacher_run_name() if t.role == "student" else None,
        teacher_T=1.0 if t.role == "student" else None,
        membership=MEMBERSHIP_FILE,
    )
    atomic_write_json(path / MEMBERSHIP_FILE, membership)
    if study.shadows:
        atomic_write_json(
            path / SHADOW_SCORES_FILE,
            {
                "score": "logit-scaled confidence z_y - logsumexp_{i!=y} z_i under each OUT shadow model",
                "order": "members then nonmembers, as in membership.json",
                "target_phi": phi.tolist(),
                "shadow_phi": torch.stack(shadow_phi).tolist(),
            },
        )
    save_run(path, t.model.cpu(), meta)  # meta.json last: its presence marks a finished run
    rows = [
        {
            "dataset": dataset, "model": t.name, "role": t.role, "T": t.T, "attack": attack,
            **metrics_from_roc(roc), "test_acc": test_acc, "transfer_set": t.transfer_set,
            "shadows": study.shadows, "seed": study.seed, "epochs": s.recipe.epochs,
            "lira": "offline" if attack == "lira" else None, "dp_epsilon": None,
        }
        for attack, roc in rocs.items()
    ]  # fmt: skip
    return PrivacyModel(t.name, t.role, t.T, test_acc, path, rocs), rows, list(rocs.values())


def _record(results_dir: str | Path, dataset: str, rows: list[dict[str, Any]], curves: list[Roc]) -> Path:
    """Record the rows and their curves; redraw the dataset's ROC figure; its path."""
    migrate_privacy_records(results_dir)  # older records move to the current key, then these replace them
    record_rows(results_dir, "privacy", rows)
    for row, roc in zip(rows, curves, strict=True):
        save_roc_record(results_dir, row, roc)
    # One figure per dataset, drawn from every stored curve: a noise run adds its students to
    # the public run's, and `defdistill report` redraws the same figure without retraining.
    return plot_privacy_rocs(read_roc_records(results_dir, dataset), roc_figure_path(results_dir, dataset))


def _notes(study: _Study) -> list[str]:
    """What the reader should know about the attacked set's size."""
    n, private = study.n, len(study.split.private)
    notes = []
    if n < private:
        notes.append(f"{n} of the {private} private examples are attacked (balanced with the test split)")
    notes.append(
        f"with {n} non-members, TPR at 1% FPR allows {math.floor(n * 0.01 + 1e-9)} false positives and "
        f"TPR at 0.1% FPR {math.floor(n * 0.001 + 1e-9)} (the largest achievable FPR <= the target)"
    )
    if not study.shadows:
        notes.append("--shadow 0: LiRA skipped")
    return notes


# --- stored ROC curves and the figure ---------------------------------------------------------


def roc_to_json(roc: Roc) -> dict[str, Any]:
    """The ROC as integer counts per threshold: exact, compact, and enough to redraw the curve."""
    return {
        "n_members": roc.n_members,
        "n_nonmembers": roc.n_nonmembers,
        "false_positives": np.rint(roc.fpr * roc.n_nonmembers).astype(int).tolist(),
        "true_positives": np.rint(roc.tpr * roc.n_members).astype(int).tolist(),
    }


def roc_from_json(obj: dict[str, Any]) -> Roc:
    """Inverse of `roc_to_json`; rejects counts that cannot form a ROC."""
    n_pos, n_neg = int(obj["n_members"]), int(obj["n_nonmembers"])
    fps = np.asarray(obj["false_positives"], dtype=np.float64)
    tps = np.asarray(obj["true_positives"], dtype=np.float64)
    valid = (
        n_pos > 0 and n_neg > 0 and fps.ndim == 1 and fps.shape == tps.shape and fps.size >= 2
        and fps[0] == tps[0] == 0 and fps[-1] == n_neg and tps[-1] == n_pos
        and (np.diff(fps) >= 0).all() and (np.diff(tps) >= 0).all()
    )  # fmt: skip
    if not valid:
        raise ValueError("not a ROC: counts must rise from (0, 0) to (n_nonmembers, n_members)")
    return Roc(fpr=fps / n_neg, tpr=tps / n_pos, n_members=n_pos, n_nonmembers=n_neg)


def roc_record_path(results_dir: str | Path, row: dict[str, Any]) -> Path:
    """records/privacy_roc/<same name as the row's record in records/privacy>."""
    return Path(results_dir) / RECORDS_DIR / ROC_RECORDS / f"{record_slug('privacy', row)}.json"


def save_roc_record(results_dir: str | Path, row: dict[str, Any], roc: Roc) -> Path:
    """Store one model x attack ROC beside its privacy record (atomic, compact JSON)."""
    keep = (
        "dataset",
        "model",
        "role",
        "T",
        "attack",
        "transfer_set",
        "shadows",
        "seed",
        "lira",
        "dp_epsilon",
    )
    record = {k: row[k] for k in keep if k in row} | roc_to_json(roc)
    path = roc_record_path(results_dir, row)
    atomic_write_text(path, json.dumps(record, separators=(",", ":")) + "\n")
    return path


def read_roc_records(results_dir: str | Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """Stored ROC records (each with its `roc`), teacher first, then by transfer set and T."""
    records = []
    for path in sorted((Path(results_dir) / RECORDS_DIR / ROC_RECORDS).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            record["roc"] = roc_from_json(record)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged record drops out of the figure, as in tables.read_records
        if dataset is None or record.get("dataset") == dataset:
            records.append(record)
    rank = {name: i for i, name in enumerate(TRANSFER_SETS)}
    return sorted(
        records,
        key=lambda r: (
            r.get("role") != "teacher",
            rank.get(r.get("transfer_set"), len(rank)),
            r.get("T", 0),
            r["model"],
        ),
    )


def roc_figure_path(results_dir: str | Path, dataset: str) -> Path:
    return Path(results_dir) / f"privacy_roc_{dataset}.png"


def plot_privacy_rocs(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Log-log ROC, one panel per attack in ROC_PANELS, one curve per model (Carlini et al. 2022, Fig. 1).

    FPR and TPR below the axes' floor (0 included) are drawn on the floor, so the curve's
    left end shows the TPR at the smallest FPR the attack reached. The floor is 1e-3, or 1e-4 when
    every curve rests on at least 10,000 non-members (the online study pools its targets).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing shown

    attacks = [a for a in ROC_PANELS if any(r["attack"] == a for r in records)]
    if not attacks:
        raise DefdistillError(
            f"no stored {' or '.join(ROC_PANELS)} ROC to plot for {path}: run defdistill privacy first"
        )
    floor = ROC_FLOOR if min(r["roc"].n_nonmembers for r in records) < 10_000 else ROC_FLOOR / 10
    students = sorted({float(r["T"]) for r in records if "student" in str(r.get("role"))}) or [1.0]
    logs = np.log(students)
    span = (logs.max() - logs.min()) or 1.0
    dashes = {"public": "-", "private": "--", "noise": ":"}
    maps = {"student": colormaps["viridis"], "dp-student": colormaps["autumn"]}
    fig = Figure(figsize=(5.6 * len(attacks), 5.0), layout="constrained")
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    for ax, attack in zip(axes, attacks, strict=True):
        for record in (r for r in records if r["attack"] == attack):
            roc: Roc = record["roc"]
            role = record.get("role")
            if role == "teacher":
                style: dict[str, Any] = {"color": "black", "lw": 1.8}
            elif role == CONTROL_ROLE:
                style = {"color": "tab:red", "lw": 1.2, "ls": "-."}
            elif role == "dp-teacher":
                style = {"color": "tab:green", "lw": 1.6, "ls": (0, (5, 1, 1, 1))}
            else:
                shade = 0.85 * (math.log(float(record["T"])) - logs.min()) / span
                cmap = maps.get(str(role), maps["student"])
                line = dashes.get(str(record.get("transfer_set")), "-")
                style = {"color": cmap(shade), "lw": 1.1, "ls": line}
            label = f"{record['model']} (AUC {roc_auc(roc):.3f}, TPR@0.1% {tpr_at_fpr(roc, 0.001):.4f})"
            ax.plot(np.maximum(roc.fpr, floor), np.maximum(roc.tpr, floor), label=label, **style)
        ax.plot([floor, 1], [floor, 1], ls=":", color="grey", lw=1.0, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3, which="major")
        shadows = {r.get("shadows") for r in records if r["attack"] == attack} - {None}
        title = PANEL_TITLES.get(attack, attack)
        if attack.startswith("lira") and len(shadows) == 1:
            title += f" ({shadows.pop()} shadow pipelines)"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=5.5 if len(records) > 40 else 6.5, loc="lower right")
    first = records[0]
    fig.suptitle(
        f"Membership inference on {first['dataset']}: {first['roc'].n_members} private members vs "
        f"{first['roc'].n_nonmembers} non-members",
        fontsize=10,
    )
    return atomic_write_png(path, fig, dpi=120)
