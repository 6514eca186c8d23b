"""Cross-check: is our per-input worst case at least as strong as an independent APGD?

    python benchmarks/crosscheck.py --dataset digits --models teacher-T1,student-T100 [--n N]
        [--eps 0.05,0.1,0.2,0.3] [--runs-dir runs] [--results-dir results] [--data-dir data]

For each model and eps it runs torchattacks' APGD-CE and APGD-DLR (100 steps, one restart;
an input counts as robust only if neither breaks it), on the same first n test inputs as the
recorded rows, and sets the result beside our recorded ensemble robust accuracy
(results/worst_case.csv). Writes results/crosscheck.{csv,md}. The check passes where ours is
no higher than theirs plus 0.5 points: a tool must never report robustness that an
independent standard attack erases.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from defdistill.core.fileio import atomic_write_text  # noqa: E402
from defdistill.data.registry import load_dataset  # noqa: E402
from defdistill.store.runs import load_run, resolve_model  # noqa: E402
from defdistill.store.tables import read_records, to_markdown  # noqa: E402

TOLERANCE = 0.005  # ours may exceed the independent attack by at most half a point


def independent_robust_acc(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int
) -> float:
    """Robust accuracy under torchattacks' APGD-CE then APGD-DLR (per-input union)."""
    import torchattacks

    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for loss in ("ce", "dlr"):
        attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss=loss, seed=seed)
        adv = attack(x, y)
        with torch.no_grad():
            robust &= model(adv).argmax(1) == y
    return float(robust.float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--models", default="teacher-T1,student-T100")
    parser.add_argument("--eps", default="0.05,0.1,0.2,0.3")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("DEFDISTILL_THREADS", "1")))
    worst = read_records(args.results_dir, "worst_case")
    x_all, y_all = load_dataset(args.dataset, "test", args.data_dir)
    rows = []
    for name in args.models.split(","):
        model, _ = load_run(resolve_model(name, args.runs_dir, args.dataset), dataset=args.dataset)
        model.eval()
        ours_rows = worst[
            (worst["dataset"] == args.dataset) & (worst["model"] == name) & (worst["norm"] == "linf")
        ]
        for eps in (float(e) for e in args.eps.split(",")):
            match = ours_rows[(ours_rows["eps"] - eps).abs() < 1e-9]
            if args.n is not None:
                match = match[match["n"] == args.n]
            if match.empty:
                print(f"{name} eps {eps}: no recorded worst case; attack it first", file=sys.stderr)
                continue
            ours = match.iloc[0]
            n = int(ours["n"])
            theirs = independent_robust_acc(model, x_all[:n], y_all[:n], eps, args.seed)
            rows.append({
                "dataset": args.dataset, "model": name, "eps": eps, "n": n,
                "ours_ensemble_robust_acc": float(ours["ensemble_robust_acc"]),
                "independent_apgd_ce_dlr": theirs,
                "excess_pp": (float(ours["ensemble_robust_acc"]) - theirs) * 100,
                "passes": float(ours["ensemble_robust_acc"]) <= theirs + TOLERANCE,
                "ensemble_attacks": ours["ensemble_attacks"],
            })  # fmt: skip
            print(
                f"{name} eps {eps}: ours {rows[-1]['ours_ensemble_robust_acc']:.4f}, independent {theirs:.4f}"
            )
    frame = pd.DataFrame(rows)
    results = Path(args.results_dir)
    old = results / "crosscheck.csv"
    if old.exists():  # keep other datasets' and models' rows
        previous = pd.read_csv(old)
        keep = ~previous.set_index(["dataset", "model", "eps", "n"]).index.isin(
            frame.set_index(["dataset", "model", "eps", "n"]).index
        )
        frame = pd.concat([previous[keep], frame], ignore_index=True)
    frame = frame.sort_values(["dataset", "model", "eps"]).reset_index(drop=True)
    atomic_write_text(results / "crosscheck.csv", frame.to_csv(index=False, float_format="%.6g"))
    title = "# Cross-check: our per-input worst case against torchattacks' APGD-CE + APGD-DLR (100 steps)\n\n"
    atomic_write_text(results / "crosscheck.md", title + to_markdown(frame))
    return 0 if bool(frame["passes"].all()) else 1


if __name__ == "__main__":
    sys.exit(main())
