"""Derived rows are derived: the accuracy gap and the worst case, recomputed from primary data.

The primary data are the runs (their meta.json) and the attack records; the accuracy-gap and
worst-case records are functions of them. `derive` rewrites every derived record that is
missing or disagrees with what the primary data say, then rebuilds the tables, so no interrupt
between a primary write and its derived one, and no deleted derived record, loses a row for
good: `tables`, `report` and a sweep's rerun all call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..evaluate.diagnose import recalibrate_diagnostics
from ..evaluate.worst_case import derive_worst_cases
from ..store.tables import TablesBuild, build_tables, derive_accuracy_gaps, refresh_accuracy_baselines


@dataclass
class Derived:
    """What `derive` rewrote, and the tables it then built."""

    accuracy_gap: int
    worst_case: int
    baselines: int
    build: TablesBuild


def derive(results_dir: str | Path, runs_dir: str | Path | None = None) -> Derived:
    """Recompute the accuracy-gap rows (from the students in `runs_dir`, each meta.json validated
    first) and the worst-case rows (from the current robustness records), write those missing or
    stale, recalibrate the diagnosed models' verdicts, fill the baselines, and rebuild every table."""
    results_dir = Path(results_dir)
    gaps = derive_accuracy_gaps(results_dir, runs_dir)
    worst = derive_worst_cases(results_dir, runs_dir) if (results_dir / "records").is_dir() else []
    # Verdicts are functions of the attack records too: bring each diagnosed model's up to date.
    if (results_dir / "records").is_dir():
        recalibrate_diagnostics(results_dir)
    baselines = refresh_accuracy_baselines(results_dir, runs_dir, rebuild=False)
    return Derived(gaps, len(worst), baselines, build_tables(results_dir, runs_dir))
