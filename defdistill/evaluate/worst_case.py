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

from ..store.tables import PER_INPUT, WORST_CASE_COLUMNS, WORST_CASE_STANDARD, read_records, record_rows
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
    """The worst-case rows of one dataset and model from its robustness records (with per-input
    results); records without them (made before they were kept) are left out."""
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
    return [{c: row[c] for c in WORST_CASE_COLUMNS} for row in rows]


def _rank(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def record_worst_case(results_dir: str | Path, dataset: str, model: str) -> list[dict[str, Any]]:
    """Recompute and record the worst-case rows of one model from its recorded attacks."""
    frame = read_records(results_dir, "robustness", per_input=True)
    if frame.empty:
        return []
    frame = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
    rows = worst_case_rows(frame.to_dict("records"))
    if rows:
        record_rows(results_dir, "worst_case", rows)
    return rows


def read_worst_case(results_dir: str | Path) -> pd.DataFrame:
    """The recorded worst-case rows."""
    return read_records(results_dir, "worst_case")
