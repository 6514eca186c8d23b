"""The per-input worst case over every attack run on a model (AutoAttack's convention).

An input counts as robust at a budget only if it is classified correctly and no attack broke
it: no fixed-budget attack at that eps and no minimal-perturbation attack (same norm) within
eps. Rows are comparable only on the same inputs, so the union is taken per dataset, model,
norm and n (the first n test inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..store.tables import (
    PER_INPUT,
    WEIGHTS,
    WORST_CASE_COLUMNS,
    WORST_CASE_STANDARD,
    read_record,
    read_records,
    rebuild_tables,
    same_row,
    write_records,
)
from .metrics import WITHIN_EPS_SLACK, decode_flags, ensemble_metrics


def _broken_within(record: dict[str, Any], eps: float) -> torch.Tensor:
    """A minimal-perturbation record's inputs broken with a perturbation of norm <= eps."""
    per_input = record[PER_INPUT]
    broken = decode_flags(per_input["broken"])
    dist = torch.tensor([math.inf if d is None else d for d in per_input["dist"]], dtype=torch.float64)
    return broken & (dist <= eps + WITHIN_EPS_SLACK)


# The attacks a per-input worst case must include before two models' worst cases are compared:
# cross-entropy (one step, iterated, APGD), the scale-invariant DLR loss, a targeted attack (APGD-T,
# PGD on logits / T, or AutoAttack's cascade, which holds APGD-T) and the noise floor. A model
# attacked with less gets no comparison, and the reason says what it lacks.
STANDARD_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "noise")
TARGETED_ATTACKS = ("apgd-t", "pgd-t", "autoattack")
# The full L-inf evaluation of one model at a budget, as the seed sweeps (experiments/seeds.sh)
# and the MNIST evaluation benchmark run it: every bounded attack of the temperature sweep, with
# AutoAttack's cascade bringing APGD-T and Square.
FULL_EVALUATION_ATTACKS = (
    "fgsm", "pgd", "pgd-margin", "pgd-t", "apgd-ce", "apgd-dlr", "autoattack", "noise", "transfer",
)  # fmt: skip


def attack_list(attacks: Sequence[str] | dict[str, Any]) -> str:
    """The attack list of a worst case as worst_case.csv writes it: sorted, joined by '+'."""
    return "+".join(sorted(attacks))


def lacks_standard(attacks: Sequence[str] | set[str]) -> list[str]:
    """What `attacks` lacks of the standard list (empty: the list is complete)."""
    have = set(attacks)
    missing = [a for a in STANDARD_ATTACKS if a not in have]
    if not have & set(TARGETED_ATTACKS):
        missing.append(f"a targeted attack ({', '.join(TARGETED_ATTACKS[:-1])} or {TARGETED_ATTACKS[-1]})")
    return missing


def contributors(broken: dict[str, torch.Tensor]) -> list[str]:
    """Attacks in greedy cover order: the one that breaks most, then the one that adds most
    inputs no earlier one broke, ...; attacks that add nothing are left out."""
    left = dict(broken)
    covered: torch.Tensor | None = None
    order = []
    while left:
        gains = {
            a: int((f & ~covered).sum()) if covered is not None else int(f.sum()) for a, f in left.items()
        }
        best = max(gains, key=lambda a: (gains[a], a == "pgd", a))  # ties: the standard attack first
        if gains[best] == 0:
            break
        order.append(best)
        covered = left.pop(best) if covered is None else covered | left.pop(best)
    return order


def worst_case_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worst-case rows of one dataset, model and weights from its robustness records (with
    per-input results); records without them (made before they were kept) are left out. The rows
    carry the weights' SHA-256 the records share (none for legacy records)."""
    usable = [r for r in records if isinstance(r.get(PER_INPUT), dict)]
    rows = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in usable:
        groups.setdefault((record["norm"], int(record["n"])), []).append(record)
    for (norm, n), group in groups.items():
        bounded = [r for r in group if r.get("eps") is not None and not _isnan(r["eps"])]
        unbounded = [r for r in group if r.get("eps") is None or _isnan(r["eps"])]
        for eps in sorted({float(r["eps"]) for r in bounded}):
            at_eps = [r for r in bounded if math.isclose(float(r["eps"]), eps)]
            clean = decode_flags(at_eps[0][PER_INPUT]["clean"])
            broken = {r["attack"]: decode_flags(r[PER_INPUT]["broken"]) for r in at_eps}
            broken |= {r["attack"]: _broken_within(r, eps) for r in unbounded}
            success = {r["attack"]: float(r["success_rate"]) for r in at_eps}
            # NaN (no input classified correctly) ranks lowest; ties name the standard attack
            worst = max(success, key=lambda a: (_rank(success[a]), a in WORST_CASE_STANDARD))
            standard = {a: success.get(a, math.nan) for a in WORST_CASE_STANDARD}
            best_standard = max((v for v in standard.values() if not math.isnan(v)), default=math.nan)
            ensemble = ensemble_metrics(clean, list(broken.values()))
            first = at_eps[0]
            rows.append(
                {"dataset": first["dataset"], "model": first["model"], "role": first["role"], "T": first["T"],
                 "norm": norm, "eps": eps, "n": n, **standard, "worst_success": success[worst],
                 "worst_attack": worst, **ensemble, "ensemble_attacks": "+".join(contributors(broken)),
                 "gap": ensemble["ensemble_success"] - best_standard, "attacks": attack_list(broken)}
            )  # fmt: skip
    weights = {r.get(WEIGHTS) for r in usable if isinstance(r.get(WEIGHTS), str)}
    if len(weights) > 1:
        raise ValueError("worst_case_rows takes the records of one network (one weights hash)")
    bound = {WEIGHTS: weights.pop()} if weights else {}
    return [{c: row[c] for c in WORST_CASE_COLUMNS} | bound for row in rows]


def _rank(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _networks(frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """The records of `frame` split by network: dataset, model and weights (legacy records, made
    before the hash was kept, form their own group: they are never unioned with hashed ones)."""
    if frame.empty:
        return []
    weights = frame[WEIGHTS] if WEIGHTS in frame.columns else pd.Series(None, index=frame.index)
    keys = weights.map(lambda w: w if isinstance(w, str) else "")
    groups: dict[tuple[Any, Any, str], list[dict[str, Any]]] = {}
    triples = zip(frame["dataset"], frame["model"], keys, strict=True)
    for key, record in zip(triples, frame.to_dict("records"), strict=True):
        if not isinstance(record.get(WEIGHTS), str):
            record.pop(WEIGHTS, None)
        groups.setdefault(key, []).append(record)
    return list(groups.values())


def derive_worst_cases(
    results_dir: str | Path,
    runs_dir: str | Path | None = None,
    *,
    dataset: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Recompute the worst-case rows of every network (or of one dataset and model) from its
    current robustness records and write those whose record is missing or says otherwise; the
    rows written. The worst case is derived data: rerunning this from the records alone restores
    any row an interrupt or a deleted record lost."""
    frame = read_records(results_dir, "robustness", per_input=True, runs_dir=runs_dir)
    if not frame.empty and dataset is not None:
        frame = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
    changed = []
    for records in _networks(frame):
        for row in worst_case_rows(records):
            found = read_record(results_dir, "worst_case", row)
            if found is None or not same_row(found, row):
                changed.append(row)
    if changed:
        write_records(results_dir, "worst_case", changed)
    return changed


def record_worst_case(
    results_dir: str | Path, dataset: str, model: str, runs_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Recompute and record the worst-case rows of one model from its recorded attacks (its
    current weights' records, see `read_records`), then rebuild the tables."""
    rows = derive_worst_cases(results_dir, runs_dir, dataset=dataset, model=model)
    rebuild_tables(results_dir, runs_dir)
    return rows


def read_worst_case(results_dir: str | Path) -> pd.DataFrame:
    """The recorded worst-case rows."""
    return read_records(results_dir, "worst_case")


def _padded(flags: torch.Tensor, n: int) -> torch.Tensor:
    """Flags of the first k inputs extended to n (the inputs past k: not broken)."""
    return torch.cat([flags, torch.zeros(n - len(flags), dtype=torch.bool)]) if len(flags) < n else flags


# Cross-entropy gradient ascent on the outputs as given: the evaluation a verdict of masking
# is measured against. APGD-CE and the longer PGD are the same loss and the same gradients with
# a better optimiser: what they add is an unconverged attack, not masking.
NAIVE_EXTRA = ("apgd-ce", "pgd-long")


def naive_and_worst_flags(
    records: Sequence[dict[str, Any]],
    norm: str = "linf",
    naive: Sequence[str] = WORST_CASE_STANDARD,
    naive_extra: Sequence[str] = NAIVE_EXTRA,
) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Per eps, (robust under the naive attacks, robust under every attack) per input, from one
    model's robustness records with per-input results.

    The grid is every eps at which each naive attack (FGSM and cross-entropy PGD) was recorded on
    the same n inputs; `naive_extra` (APGD-CE, the longer PGD: cross-entropy on the outputs as
    given, better optimised) join the naive attacks where recorded. The worst case takes every
    other attack of that norm recorded on the first k <= n of those inputs (HopSkipJump's 50, a
    minimal-perturbation attack within eps): an input past its k counts as not broken by it, so
    the worst case is a lower bound on what the records break. A record whose clean flags
    disagree with the naive attacks' (another model or other inputs) is left out.
    """
    usable = [r for r in records if r.get("norm") == norm and isinstance(r.get(PER_INPUT), dict)]
    naive_rows = [r for r in usable if r["attack"] in naive and not _unbounded(r)]
    if not naive_rows:
        return {}
    n = max(int(r["n"]) for r in naive_rows)
    at: dict[float, dict[str, dict[str, Any]]] = {}
    for r in naive_rows:
        if int(r["n"]) == n:
            at.setdefault(float(r["eps"]), {})[r["attack"]] = r
    grid = sorted(e for e, found in at.items() if set(found) == set(naive))
    flags = {}
    for eps in grid:
        clean = decode_flags(at[eps][naive[0]][PER_INPUT]["clean"])
        naive_broken = torch.zeros(n, dtype=torch.bool)
        for r in at[eps].values():
            naive_broken |= decode_flags(r[PER_INPUT]["broken"])
        others = torch.zeros(n, dtype=torch.bool)
        for r in usable:
            k = int(r["n"])
            if k > n or r["attack"] in naive or not (_unbounded(r) or math.isclose(float(r["eps"]), eps)):
                continue
            if not torch.equal(decode_flags(r[PER_INPUT]["clean"]), clean[:k]):
                continue
            hit = _padded(
                _broken_within(r, eps) if _unbounded(r) else decode_flags(r[PER_INPUT]["broken"]), n
            )
            if r["attack"] in naive_extra:
                naive_broken |= hit
            else:
                others |= hit
        broken = naive_broken | others
        flags[eps] = (clean & ~naive_broken, clean & ~broken)
    return flags


def _unbounded(record: dict[str, Any]) -> bool:
    return record.get("eps") is None or _isnan(record["eps"])
