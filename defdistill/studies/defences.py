"""Defences that work, beside the one that does not, evaluated the same way.

Defensive distillation (Papernot et al. 2016) looks robust to gradient attacks because its
softmax saturates (Carlini & Wagner 2016, 2017). Adversarial training is the baseline
that holds: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), and the robust distillation
methods that pass a robust teacher on to a student, ARD (Goldblum et al. 2020) and RSLAD (Zi et
al. 2021). `run_defences` trains (or reuses) one model per defence on a dataset, attacks each
with the same attacks and budgets, runs the gradient-masking diagnosis on each, and writes
results/defences.{csv,md}: a table derived from the robustness and diagnostics records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..checks import check_eps, check_positive_int, check_seed, check_temperature
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device
from ..core.workspace import Workspace
from ..data.registry import get_dataset_spec
from ..errors import DefdistillError
from ..evaluate.attacks import DEFAULT_EPS, AttackSettings, attack_model, check_attacks
from ..evaluate.diagnose import Diagnosis, diagnose_model
from ..evaluate.verdict import VERDICTS
from ..store.runs import META_FILE, SURROGATE_NAME, read_meta, run_dir, run_name
from ..store.tables import rebuild_tables, write_table
from ..train.distill import default_student_name, distill
from ..train.loop import (
    ADV_RUN_SUFFIX,
    RunResult,
    make_recipe,
    resolve_budget,
    train_surrogate,
    train_teacher,
)
from ..train.losses import get_method
from ..train.robust import TRADES

DEFAULT_ATTACKS = ("fgsm", "pgd")
TABLE = "defences"
TITLE = (
    "Defences: clean accuracy, FGSM/PGD success and worst-case robust accuracy (L-inf) per defence, "
    "the gradient-masking verdict and the training time"
)


@dataclass(frozen=True)
class Defence:
    """One row of the comparison: the run that embodies the defence, and where it comes from."""

    key: str
    model: str
    what: str
    teacher: str | None = None  # the run a student is distilled from


def defences(dataset: str, T: float = 100.0) -> list[Defence]:
    """The defences compared, in table order; robust students learn from the PGD-AT teacher."""
    arch = get_dataset_spec(dataset).default_arch
    pgdat = f"{run_name('teacher', 1)}-{ADV_RUN_SUFFIX['pgd']}"
    ard, rslad = (
        default_student_name(get_method(m).default_T, m, arch, arch, "train") for m in ("ard", "rslad")
    )
    return [
        Defence("standard", run_name("teacher", 1), "no defence: cross-entropy at T=1"),
        Defence("distillation-teacher", run_name("teacher", T), f"teacher trained at T={T:g}"),
        Defence(
            "defensive-distillation",
            run_name("student", T),
            f"student at T={T:g} (Papernot et al. 2016)",
            run_name("teacher", T),
        ),
        Defence("pgd-at", pgdat, "PGD adversarial training (Madry et al. 2018)"),
        Defence(
            "trades",
            f"{run_name('teacher', 1)}-{ADV_RUN_SUFFIX['trades']}",
            "TRADES, beta 6 (Zhang et al. 2019)",
        ),
        Defence("ard", ard, "ARD from the PGD-AT teacher (Goldblum et al. 2020)", pgdat),
        Defence("rslad", rslad, "RSLAD from the PGD-AT teacher (Zi et al. 2021)", pgdat),
    ]


@dataclass
class DefencesReport:
    """What `run_defences` trained, measured and wrote."""

    runs: dict[str, Path]  # defence key -> run folder
    reused: list[str]  # the defences whose finished run was reused, not trained again
    table: pd.DataFrame
    seconds: float
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the table ---------------------------------------------------------------------------------


def robust_accuracy(worst_case: pd.DataFrame) -> tuple[pd.Series, str]:
    """Worst-case robust accuracy per worst_case row, and what it is.

    The evaluation layer's per-input ensemble (an input counts only if every attack failed on
    it) when the frame has it; else the strongest single attack's, clean_acc * (1 - worst_success),
    which an ensemble can only lower.
    """
    if "ensemble_robust_acc" in worst_case.columns:
        return worst_case["ensemble_robust_acc"], "per-input ensemble of the attacks"
    return worst_case["clean_acc"] * (1.0 - worst_case["worst_success"]), "strongest single attack"


def _clean_accuracy(robustness: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy on the attacked inputs, per dataset and model (from its fgsm or pgd rows)."""
    rows = robustness[robustness["attack"].isin(DEFAULT_ATTACKS)]
    return rows.groupby(["dataset", "model", "n"], as_index=False)[["clean_acc"]].first()


def _masked(diagnostics: pd.DataFrame | None, dataset: str, model: str) -> bool | None:
    """The diagnosis' verdict (True: masked, False: not masked), None when not diagnosed or
    inconclusive."""
    if diagnostics is None or diagnostics.empty:
        return None
    verdict = diagnostics[
        (diagnostics["dataset"] == dataset)
        & (diagnostics["model"] == model)
        & (diagnostics["check"] == "verdict")
    ]
    if verdict.empty:
        return None
    word = str(verdict.iloc[0]["detail"]).split(":", 1)[0]
    if word in VERDICTS:  # the calibrated verdict: inconclusive is neither
        return {"masked": True, "not-masked": False}.get(word)
    return not bool(verdict.iloc[0]["passed"])


def _train_seconds(runs_dir: Path, dataset: str, model: str) -> float:
    try:
        return float(read_meta(run_dir(runs_dir, dataset, model)).get("wall_seconds", math.nan))
    except DefdistillError:
        return math.nan


def defences_frame(
    frames: dict[str, pd.DataFrame], runs_dir: str | Path, datasets: Sequence[str], T: float = 100.0
) -> pd.DataFrame:
    """One row per dataset and defence from `rebuild_tables`' frames: clean accuracy and n (the
    attacked inputs), FGSM and PGD success and worst-case robust accuracy at each eps, what the
    robust accuracy is (`robust_accuracy`), the masking verdict, and the training time (s)."""
    worst = frames.get("worst_case", pd.DataFrame())
    if worst.empty:
        return pd.DataFrame()
    if "clean_acc" not in worst.columns:
        worst = worst.merge(_clean_accuracy(frames["robustness"]), on=["dataset", "model", "n"], how="left")
    robust, source = robust_accuracy(worst)
    worst = worst.assign(robust=robust)
    rows = []
    for dataset in datasets:
        for defence in defences(dataset, T):
            mine = worst[(worst["dataset"] == dataset) & (worst["model"] == defence.model)]
            mine = mine[mine["n"] == mine["n"].max()].sort_values("eps")  # one set of inputs
            if mine.empty:
                continue
            row: dict[str, Any] = {
                "dataset": dataset, "defence": defence.key, "model": defence.model,
                "teacher": defence.teacher, "clean_acc": mine["clean_acc"].iloc[0],
                "n": mine["n"].iloc[0] if "n" in mine.columns else None,
            }  # fmt: skip
            for measure, column in (
                ("fgsm_success", "fgsm"),
                ("pgd_success", "pgd"),
                ("robust_acc", "robust"),
            ):
                for eps, value in zip(mine["eps"], mine[column], strict=True):
                    row[f"{measure}@{eps:g}"] = value
            row["robust_acc_of"] = source
            row["masked"] = _masked(frames.get("diagnostics"), dataset, defence.model)
            row["train_seconds"] = _train_seconds(Path(runs_dir), dataset, defence.model)
            row["what"] = defence.what
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    by_eps = sorted(
        (c for c in frame.columns if "@" in c),
        key=lambda c: (
            ["fgsm_success", "pgd_success", "robust_acc"].index(c.split("@")[0]),
            float(c.split("@")[1]),
        ),
    )
    first = ["dataset", "defence", "model", "teacher", "clean_acc", "n"]
    return frame[[*first, *by_eps, "robust_acc_of", "masked", "train_seconds", "what"]]


def write_defences_table(
    results_dir: str | Path,
    runs_dir: str | Path,
    T: float = 100.0,
    frames: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Rebuild the tables and write results/defences.{csv,md} for every dataset whose PGD-AT
    teacher has been attacked (the study ran there)."""
    frames = frames if frames is not None else rebuild_tables(results_dir)
    worst = frames.get("worst_case", pd.DataFrame())
    pgdat = f"{run_name('teacher', 1)}-{ADV_RUN_SUFFIX['pgd']}"
    datasets = [] if worst.empty else sorted(set(worst.loc[worst["model"] == pgdat, "dataset"]))
    frame = defences_frame(frames, runs_dir, datasets, T)
    write_table(results_dir, TABLE, frame, TITLE)
    return frame


# --- the study -----------------------------------------------------------------------------------


def _reusable(path: Path, wanted: dict[str, Any]) -> bool:
    """Whether the finished run at `path` was trained with the settings in `wanted`."""
    if not (path / META_FILE).is_file():
        return False
    try:
        meta = read_meta(path)
    except DefdistillError:
        return False  # damaged: train it again
    return all(_same(meta.get(k), v) for k, v in wanted.items())


def _same(have: Any, want: Any) -> bool:
    """A recorded setting equals the wanted one (floats up to rounding)."""
    if isinstance(want, float) and isinstance(have, (int, float)):
        return math.isclose(have, want)
    return bool(have == want)


@dataclass(frozen=True)
class _Study:
    """The defences study's checked inputs."""

    dataset: str
    epochs: int | None
    n: int | None
    eps: list[float]
    attacks: list[str]
    T: float
    seed: int
    settings: AttackSettings
    workspace: Workspace
    progress: ProgressReporter


def run_defences(
    dataset: str = "digits",
    *,
    epochs: int | None = None,
    n: int | None = None,
    eps: Sequence[float] = DEFAULT_EPS,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    T: float = 100.0,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(),
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> DefencesReport:
    """Train (or reuse) every defence of `defences` and the transfer surrogate, attack each with
    `attacks` at `eps` on the first `n` test inputs, diagnose each for gradient masking, and
    write results/defences.{csv,md}.

    A finished run is reused when its dataset, seed, epochs (and budget, and teacher for a
    student) are the ones asked for; a student is retrained whenever its teacher was.
    """
    workspace = Workspace(Path(runs_dir), Path(results_dir), Path(data_dir), device)
    study = _check_study(dataset, epochs, n, eps, attacks, T, seed, settings, workspace, progress)
    started = time.perf_counter()
    runs, reused = _train_or_reuse(study)
    notes: list[str] = []
    for path in runs.values():
        notes.extend(_attack(study, path))
    diagnoses = [_diagnose(study, path) for path in runs.values()]
    table = write_defences_table(workspace.results_dir, workspace.runs_dir, study.T)
    return DefencesReport(runs, reused, table, time.perf_counter() - started, diagnoses, notes)


def _check_study(
    dataset: str,
    epochs: int | None,
    n: int | None,
    eps: Sequence[float],
    attacks: Sequence[str],
    T: float,
    seed: int,
    settings: AttackSettings,
    workspace: Workspace,
    progress: ProgressReporter,
) -> _Study:
    """Check every input before the first model trains."""
    get_dataset_spec(dataset)
    T = check_temperature(T)
    names = check_attacks(attacks)
    budgets = check_eps(eps)
    if n is not None:
        check_positive_int(n, "--n")
    make_recipe(dataset, epochs)
    check_seed(seed)
    resolve_device(workspace.device)
    if math.isclose(T, 1.0):
        raise DefdistillError(
            "defensive distillation needs T > 1 (the standard teacher is T=1): e.g. --T 100"
        )
    ensure_writable_dir(workspace.runs_dir / dataset, "--runs-dir")
    ensure_writable_dir(workspace.results_dir, "--results-dir")
    return _Study(dataset, epochs, n, budgets, names, T, seed, settings, workspace, progress)


def _teacher(study: _Study, *, T: float = 1.0, adv: str | None = None) -> RunResult:
    """A teacher of the study, at temperature `T` or adversarially trained with `adv`."""
    w = study.workspace
    return train_teacher(
        study.dataset, T=T, adv=adv, epochs=study.epochs, seed=study.seed, runs_dir=w.runs_dir,
        data_dir=w.data_dir, device=w.device, progress=study.progress, force=True,
    )  # fmt: skip


def _student(
    study: _Study, teacher: str | None, *, T: float | None = None, method: str | None = None
) -> RunResult:
    """A student of the study distilled from `teacher`, at temperature `T` or with `method`."""
    w = study.workspace
    return distill(
        study.dataset, T=T, method=method, teacher=teacher, epochs=study.epochs, seed=study.seed,
        runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir, device=w.device,
        progress=study.progress, force=True,
    )  # fmt: skip


_Plan = tuple[dict[str, Any], Callable[[], RunResult]]  # the settings a reusable run has; how to train it


def _plans(study: _Study, chosen: list[Defence]) -> dict[str, _Plan]:
    """Per defence key: the recorded settings that make a finished run reusable, and its training."""
    budget = resolve_budget(study.dataset)
    base = {
        "dataset": study.dataset,
        "seed": study.seed,
        "epochs": make_recipe(study.dataset, study.epochs).epochs,
    }
    adv = {"adv_eps": budget[0], "adv_steps": budget[1], "adv_step_size": budget[2]}
    teacher_of = {d.key: d.teacher for d in chosen}
    T = study.T
    return {
        "standard": (base, lambda: _teacher(study, T=1.0)),
        "distillation-teacher": (base, lambda: _teacher(study, T=T)),
        "defensive-distillation": (
            {**base, "method": "soft"},
            lambda: _student(study, teacher_of["defensive-distillation"], T=T),
        ),
        "pgd-at": ({**base, **adv, "adv_method": "pgd"}, lambda: _teacher(study, adv="pgd")),
        "trades": (
            {**base, **adv, "adv_method": "trades", "adv_beta": TRADES.beta},
            lambda: _teacher(study, adv="trades"),
        ),
        "ard": ({**base, **adv, "method": "ard"}, lambda: _student(study, teacher_of["ard"], method="ard")),
        "rslad": (
            {**base, **adv, "method": "rslad"},
            lambda: _student(study, teacher_of["rslad"], method="rslad"),
        ),
    }


def _train_or_reuse(study: _Study) -> tuple[dict[str, Path], list[str]]:
    """The surrogate, then every defence's run, trained unless a finished one can be reused; the
    run per defence key and the keys reused."""
    w = study.workspace
    chosen = defences(study.dataset, study.T)
    plans = _plans(study, chosen)
    surrogate = run_dir(w.runs_dir, study.dataset, SURROGATE_NAME)
    if not _reusable(surrogate, {**plans["standard"][0], "seed": study.seed + 1}):
        train_surrogate(
            study.dataset, seed=study.seed, epochs=study.epochs, runs_dir=w.runs_dir, data_dir=w.data_dir,
            device=w.device, progress=study.progress, force=True,
        )  # fmt: skip
    runs: dict[str, Path] = {}
    reused: list[str] = []
    trained: set[str] = set()
    for defence in chosen:
        wanted, train = plans[defence.key]
        path = run_dir(w.runs_dir, study.dataset, defence.model)
        fresh_teacher = defence.teacher is not None and defence.teacher in trained
        if not fresh_teacher and _reusable(
            path, {**wanted, **({"teacher": defence.teacher} if defence.teacher else {})}
        ):
            reused.append(defence.key)
        else:
            path = train().path
            trained.add(defence.model)
        runs[defence.key] = path
    return runs, reused


def _attack(study: _Study, path: Path) -> list[str]:
    """The study's attacks on the run at `path`, recorded; their notes."""
    w = study.workspace
    report = attack_model(
        str(path), dataset=study.dataset, attacks=study.attacks, eps=study.eps, n=study.n, seed=study.seed,
        settings=study.settings, runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir,
        device=w.device, progress=study.progress,
    )  # fmt: skip
    return list(report.notes)


def _diagnose(study: _Study, path: Path) -> Diagnosis:
    """The gradient-masking diagnosis of the run at `path`, recorded."""
    w = study.workspace
    return diagnose_model(
        str(path), dataset=study.dataset, eps=study.eps, n=study.n, seed=study.seed, settings=study.settings,
        runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir, device=w.device,
        progress=study.progress,
    )  # fmt: skip
