"""Calibration: the audit on the zoo of models whose gradient masking is known (digits).

    python benchmarks/calibration.py [--n 200] [--eps 0.05,0.1,0.2] [--budget standard|fast]
        [--results-dir results] [--seed 0]

Trains the zoo (studies.calibration) in a scratch folder, audits each model, runs the
trick-aware torchattacks reference on the same inputs, and writes results/calibration.{csv,md}:
the confusion table of truth against verdict, and audited against reference robust accuracy
per model and eps.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# benchmarks/profile.py would shadow the standard library's profile, which torch imports when
# an optimiser is built: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from defdistill.studies.audit import audit_budgets  # noqa: E402
from defdistill.studies.calibration import ReferenceBudget, run_calibration  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--eps", default="0.05,0.1,0.2")
    parser.add_argument("--budget", default="standard", choices=("standard", "fast"))
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    eps = [float(e) for e in args.eps.split(",")]
    reference = ReferenceBudget() if args.budget == "standard" else ReferenceBudget.fast()
    with tempfile.TemporaryDirectory() as scratch:
        frame = run_calibration(
            args.results_dir, runs_dir=scratch, n=args.n, eps=eps, seed=args.seed,
            budgets=audit_budgets(args.budget), reference_budget=reference,
        )  # fmt: skip
    models = frame.drop_duplicates("model")
    print(f"verdicts right: {int((models['truth'] == models['verdict']).sum())} of {len(models)}")
    print(f"wrote {args.results_dir}/calibration.csv and calibration.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
