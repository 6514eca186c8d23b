"""Carlini-Wagner convergence: the old default, the new default and a long reference run, on the
same inputs of every model (issue 15).

    python benchmarks/cw_convergence.py [--n 100] [--runs-dir DIR] [--data-dir DIR]
        [--digits-runs DIR] [--results-dir results]

Per model, on its first n test inputs: success rate and median L2 of
- old: the defaults before issue 15, Foolbox's own search (200 Adam steps of 0.02 x 3 searches,
  initial c 0.01, x10 until found, then bisection);
- new: `AttackSettings()` (per-input initial c from the linearised margin, c x or / 3 until
  bracketed, 1 search on every input and up to 9 on the inputs not bracketed, 200 steps of 0.05);
- reference: 1000 steps x 9 searches, Foolbox's defaults otherwise (Adam step 0.01, initial c
  0.001, Foolbox's search),
with each median's distance to the reference's, the per-input ratio of L2 norms to the
reference's (on the inputs both broke), this process's CPU seconds (one torch thread) and the
wall clock. The digits models (teacher-T1, student-T100 distilled from teacher-T100, 30 epochs,
seed 0) are trained for the run unless --digits-runs has them; the MNIST models are read from
--runs-dir (skipped when absent). Writes results/cw_convergence.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # Foolbox imports GitPython

import torch  # noqa: E402

from defdistill.core.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from defdistill.core.runtime import configure_threads  # noqa: E402
from defdistill.data.registry import load_dataset  # noqa: E402
from defdistill.evaluate.attacks import AttackSettings, foolbox_cw_search, run_attack  # noqa: E402
from defdistill.store.runs import load_run  # noqa: E402

CPU = torch.device("cpu")
EPOCHS = 30
TOLERANCE = 0.05  # the new default's median L2 within 5% of the reference's
CONFIGS: dict[str, AttackSettings] = {
    "old": foolbox_cw_search(AttackSettings(cw_steps=200, cw_binary_search_steps=3, cw_stepsize=0.02), 0.01),
    "new": AttackSettings(),
    "reference": foolbox_cw_search(
        AttackSettings(cw_steps=1000, cw_binary_search_steps=9, cw_stepsize=0.01), 0.001
    ),
}


def describe(s: AttackSettings) -> str:
    if s.cw_search_factor is None:
        searches = f"{s.cw_binary_search_steps} searches (Foolbox's: c x 10 until found, then bisection)"
    else:
        searches = (
            f"{s.cw_binary_search_steps} search(es) on every input, then up to "
            f"{s.cw_max_binary_search_steps} on the inputs whose c is not bracketed within a factor "
            f"{s.cw_search_factor:g} (c x or / {s.cw_search_factor:g})"
        )
    const = (
        f"initial c {s.cw_initial_const}"
        if not isinstance(s.cw_initial_const, str)
        else f"initial c {s.cw_initial_const!r} (per input: 2 m / ||grad m||^2, m the clean margin)"
    )
    return f"{s.cw_steps} Adam steps of {s.cw_stepsize:g} x {searches}, {const}"


def digits_runs(folder: Path) -> Path:
    """teacher-T1, teacher-T100 and student-T100 on digits, as the demo trains them."""
    from defdistill.train.distill import distill
    from defdistill.train.loop import train_teacher

    if not (folder / "digits" / "student-T100").is_dir():
        train_teacher(T=1, epochs=EPOCHS, runs_dir=folder, device="cpu")
        train_teacher(T=100, epochs=EPOCHS, runs_dir=folder, device="cpu")
        distill(T=100, epochs=EPOCHS, runs_dir=folder, results_dir=folder / "results", device="cpu")
    return folder


def per_input_ratios(row: dict, reference: dict) -> list[float]:
    ours, ref = row["per_input"]["dist"], reference["per_input"]["dist"]
    return sorted(a / b for a, b in zip(ours, ref, strict=True) if a is not None and b is not None and b > 0)


def measure(
    dataset: str, model_dir: Path, data_dir: Path, n: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    model, meta = load_run(model_dir, dataset=dataset)
    x, y = load_dataset(dataset, "test", data_dir)
    x, y = x[:n], y[:n]
    rows: dict[str, dict] = {}
    for name, settings in CONFIGS.items():
        wall, cpu = time.perf_counter(), time.process_time()
        rows[name] = run_attack(model.eval(), x, y, "cw", settings=settings, device=CPU, seed=0)[0]
        rows[name]["cpu_s"] = time.process_time() - cpu
        rows[name]["wall_s"] = time.perf_counter() - wall
        log(
            f"{dataset} {model_dir.name} {name}: success {rows[name]['success_rate']:.3f}, "
            f"median L2 {rows[name]['median_dist']:.4f}, {rows[name]['cpu_s']:.1f} CPU s"
        )
    reference = rows["reference"]
    out = []
    for name, row in rows.items():
        ratios = per_input_ratios(row, reference)
        out.append(
            {
                "dataset": dataset,
                "model": model_dir.name,
                "T": float(meta["T"]),
                "config": name,
                "settings": row["settings"],
                "describe": describe(CONFIGS[name]),
                "n": row["n"],
                "success": row["success_rate"],
                "median_l2": row["median_dist"],
                "vs_reference": row["median_dist"] / reference["median_dist"] - 1,
                "per_input_ratio_median": statistics.median(ratios) if ratios else None,
                "per_input_ratio_p90": ratios[int(0.9 * (len(ratios) - 1))] if ratios else None,
                "cpu_s": round(row["cpu_s"], 2),
                "wall_s": round(row["wall_s"], 2),
            }
        )
    return out


def markdown(rows: Sequence[dict], context: dict[str, str]) -> str:
    lines = [
        "# Carlini-Wagner L2: convergence against a long reference run",
        "",
        "; ".join(f"{k}: {v}" for k, v in context.items()) + ".",
        "",
        "Configurations (`benchmarks/cw_convergence.py`):",
        "",
        *[f"- {name}: {describe(s)}" for name, s in CONFIGS.items()],
        "",
        "success: over the correctly classified inputs; median L2: of the successful examples; "
        "vs ref: the median's distance to the reference's; per-input ratio: L2 / the reference's L2 on "
        "the inputs both broke (median, 90th percentile); CPU s: this process, one torch thread; wall s: "
        "the clock, at the machine's load. The target: success 1.0 and a median within "
        f"{TOLERANCE:.0%} of the reference's on every model.",
        "",
        "| dataset | model | config | success | median L2 | vs ref | per-input ratio (median / p90) "
        "| CPU s | x old | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    old_cpu = {(r["dataset"], r["model"]): r["cpu_s"] for r in rows if r["config"] == "old"}
    for r in rows:
        ratio = (
            f"{r['per_input_ratio_median']:.3f} / {r['per_input_ratio_p90']:.3f}"
            if r["per_input_ratio_median"] is not None
            else ""
        )
        cells = [
            r["dataset"], r["model"], r["config"], f"{r['success']:.3f}", f"{r['median_l2']:.4f}",
            f"{r['vs_reference']:+.1%}", ratio, f"{r['cpu_s']:.1f}",
            f"{r['cpu_s'] / old_cpu[(r['dataset'], r['model'])]:.2f}", f"{r['wall_s']:.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="Test inputs per model (the first n).")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="Runs folder with mnist/.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="Where MNIST is.")
    parser.add_argument("--digits-runs", type=Path, default=None, help="Digits runs (default: train).")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    configure_threads()
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    context = {"torch": torch.__version__, "torch threads": str(torch.get_num_threads()),
               "CPU cores": str(os.cpu_count()), "load average at start": f"{load:.1f}",
               "inputs per model": f"the first {args.n} test inputs"}  # fmt: skip
    context["models"] = (
        f"digits teacher-T1 and student-T100 (distilled from teacher-T100), {EPOCHS} epochs, seed 0; "
        f"MNIST from {args.runs_dir}"
    )
    rows: list[dict] = []

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="defdistill-cw-") as folder:
        digits = digits_runs(args.digits_runs or Path(folder))
        for name in ("teacher-T1", "student-T100"):
            rows += measure("digits", digits / "digits" / name, Path("data"), args.n, log)
    for name in ("teacher-T1", "student-T100"):
        path = args.runs_dir / "mnist" / name
        if (path / "meta.json").is_file():
            rows += measure("mnist", path, args.data_dir, args.n, log)
        else:
            log(f"skipped mnist {name}: {path} has no finished run")
    context["wall time of this run"] = f"{time.perf_counter() - started:.0f} s"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results_dir / "cw_convergence.json", rows)
    atomic_write_text(args.results_dir / "cw_convergence.md", markdown(rows, context))
    print(f"wrote {args.results_dir / 'cw_convergence.md'} in {context['wall time of this run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
