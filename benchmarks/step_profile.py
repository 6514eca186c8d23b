"""Where the time goes: `defdistill demo` and the full evaluation of one MNIST model, step by step,
each step beside its lower bound.

    python benchmarks/step_profile.py [--quick] [--results-dir results] [--skip-mnist] [--mnist-n 100]
                                 [--data-dir ../shared/datasets] [--baseline REV] [--pairs 2]

Writes results/profile.{json,md}. Every step (training each model, each attack, the diagnosis's
own work, the records, the tables) is timed in wall and CPU seconds, exclusive of the steps
nested in it, so the steps add up to the whole. The lower bound of a step is the same work in a
plain loop: for an attack, the forward and forward-backward passes it actually made (counted by a
hook on the model, by batch size) replayed as plain `model(x)` and `model(x).sum().backward()`
calls, priced from a table of per-pass costs measured in the same run; for training, the same
number of epochs of a minimal hand-written loop (`plain_epoch`, the recipe's optimiser and batch).
Steps without forward passes (records, tables) have no lower bound.

The unit that travels between machines is the plain loop's digits epoch, measured in the same
run: the demo's seconds are also given as a multiple of it. The demo runs in this process with
one job (`jobs=1`), so that every step is seen; `--baseline REV` also times the demo as shipped
(the command line, in a fresh folder, its default jobs) against the same command of the code at
git revision REV, interleaved, both as multiples of the plain epoch.

The MNIST evaluation trains a 1-epoch papernot-mnist teacher and its surrogate (kept in
build/profile/runs, reused by later runs) and runs `attack_model` with the MNIST sweep's L-inf
attacks at the headline budget (eps 0.1) on the first `--mnist-n` test inputs, then its worst case.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from defdistill.core.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from defdistill.core.runtime import configure_threads  # noqa: E402
from defdistill.data.registry import get_dataset_spec, load_dataset  # noqa: E402
from defdistill.evaluate.worst_case import FULL_EVALUATION_ATTACKS  # noqa: E402
from defdistill.models import build_model  # noqa: E402
from defdistill.train.loop import make_optimizer, recipe_for  # noqa: E402

CPU = torch.device("cpu")
# The MNIST sweep's attacks (experiments/sweeps/mnist-temperature-cpu.yaml) that enter the L-inf
# worst case at eps 0.1: cw (L2) and JSMA (L0) are other norms' rows.
MNIST_ATTACKS = FULL_EVALUATION_ATTACKS
MNIST_EPS = 0.1
PASS_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


# --- the step clock -----------------------------------------------------------------------------


@dataclass
class Step:
    """One step's exclusive seconds and the passes its models made."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    passes: dict[tuple[str, bool, int], int] = field(default_factory=dict)  # (arch, backward, batch) -> count
    epochs: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, recipe) -> epochs trained
    lower: float | None = None  # the plain loop's CPU seconds for the same passes or epochs


class StepClock:
    """Exclusive wall and CPU time per step label; nested steps are charged to themselves only."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}
        self.stack: list[str] = []
        self.mark = (time.perf_counter(), time.process_time())

    def _charge(self) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.stack:
            step = self.steps[self.stack[-1]]
            step.wall += now[0] - self.mark[0]
            step.cpu += now[1] - self.mark[1]
        self.mark = now

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Step]:
        self._charge()
        current = self.steps.setdefault(label, Step())
        current.calls += 1
        self.stack.append(label)
        try:
            yield current
        finally:
            self._charge()
            self.stack.pop()

    @property
    def current(self) -> Step | None:
        return self.steps[self.stack[-1]] if self.stack else None


def arch_of(model: nn.Module) -> str:
    """A name for the pass-cost table: the layer shapes (the weights do not change a pass's cost)."""
    return "x".join(str(p.shape[0]) for p in model.parameters() if p.dim() > 1)


@contextlib.contextmanager
def counting_passes(
    clock: StepClock, models: Sequence[nn.Module], archs: dict[str, nn.Module]
) -> Iterator[None]:
    """Count every forward pass of `models` into the current step, with whether it was
    differentiated (grad mode on and the input requiring a gradient)."""
    handles = []
    for model in {id(m): m for m in models}.values():
        name = arch_of(model)
        archs.setdefault(name, model)

        def hook(module: nn.Module, args: tuple, _output: Any, name: str = name) -> None:
            step = clock.current
            if step is None or not args or not isinstance(args[0], torch.Tensor):
                return
            backward = torch.is_grad_enabled() and args[0].requires_grad
            key = (name, backward, len(args[0]))
            step.passes[key] = step.passes.get(key, 0) + 1

        handles.append(model.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def patched(targets: Sequence[tuple[Any, str, Callable[[Callable], Callable]]]) -> Iterator[None]:
    """Replace module attributes by wrappers of themselves for the block."""
    targets = [t for t in targets if hasattr(t[0], t[1])]  # a function a module no longer imports
    saved = [(module, name, getattr(module, name)) for module, name, _ in targets]
    for module, name, wrap in targets:
        setattr(module, name, wrap(getattr(module, name)))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def timed(clock: StepClock, label: Callable[..., str]) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            with clock.step(label(*args, **kwargs)):
                return fn(*args, **kwargs)

        return run

    return wrap


def instrument(clock: StepClock, archs: dict[str, nn.Module], attack_prefix: str = "attack") -> list:
    """The library functions to time, each under its step label (patched where they are called)."""
    from defdistill.evaluate import attacks, diagnose, worst_case
    from defdistill.studies import demo
    from defdistill.train import distill, loop

    def run_attack_wrap(fn: Callable) -> Callable:
        def run(
            model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, *args: Any, **kwargs: Any
        ) -> Any:
            settings = args[1] if len(args) > 1 else kwargs.get("settings")
            models = [model]
            if settings is not None and getattr(settings, "surrogate", None) is not None:
                models.append(settings.surrogate.model)
            with clock.step(f"{attack_prefix} {attack}"), counting_passes(clock, models, archs):
                return fn(model, x, y, attack, *args, **kwargs)

        return run

    def fit_wrap(fn: Callable) -> Callable:
        def run(model: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            recipe = args[3] if len(args) > 3 else kwargs["recipe"]
            step = clock.current
            if step is not None:
                key = (f"{len(x)}", recipe.name if hasattr(recipe, "name") else "")
                step.epochs[key] = step.epochs.get(key, 0) + recipe.epochs
            return fn(model, x, *args, **kwargs)

        return run

    records = timed(clock, lambda *a, **k: "records (robustness, diagnostics)")
    worst = timed(clock, lambda *a, **k: "worst case (per input, over the records)")
    return [
        (demo, "train_teacher", timed(clock, lambda *a, **k: f"train teacher-T{k.get('T', 1.0):g}")),
        (demo, "distill", timed(clock, lambda *a, **k: f"distill student-T{k.get('T', 1.0):g}")),
        (demo, "train_surrogate", timed(clock, lambda *a, **k: "train surrogate-T1")),
        (demo, "rebuild_tables", timed(clock, lambda *a, **k: "tables (rebuild results/*.md, *.csv)")),
        (demo, "diagnose_model", timed(clock, lambda *a, **k: "diagnosis (its own work: gradients, checks)")),
        (demo, "attack_model", timed(clock, lambda *a, **k: "attack_model (loading, its own work)")),
        (loop, "fit", fit_wrap),
        (distill, "fit", fit_wrap),
        (attacks, "run_attack", run_attack_wrap),
        (diagnose, "run_attack", run_attack_wrap),
        (attacks, "record_rows", records),
        (diagnose, "record_rows", records),
        (diagnose, "read_records", records),
        (attacks, "record_worst_case", worst),
        (diagnose, "record_worst_case", worst),
        (worst_case, "record_rows", records),
    ]


# --- lower bounds ------------------------------------------------------------------------------


def _cpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return statistics.median(times)


def pass_costs(model: nn.Module, shape: tuple[int, ...], repeats: int) -> dict[tuple[bool, int], float]:
    """CPU seconds of one plain forward pass, and of one forward pass with the backward to the
    input only, by batch size (PASS_SIZES); other sizes are interpolated."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    costs = {}
    for size in PASS_SIZES:
        x = torch.rand(size, *shape)

        def forward(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                net(x)

        def backward(x: torch.Tensor = x) -> None:
            xg = x.clone().requires_grad_(True)
            net(xg).sum().backward()

        costs[False, size] = _cpu_seconds(forward, repeats)
        costs[True, size] = _cpu_seconds(backward, repeats)
    return costs


def pass_cost(costs: dict[tuple[bool, int], float], backward: bool, size: int) -> float:
    """Linear interpolation of the cost table (linear beyond its largest size)."""
    sizes = list(PASS_SIZES)
    if size in sizes:
        return costs[backward, size]
    upper = next((s for s in sizes if s > size), None)
    if upper is None:
        return costs[backward, sizes[-1]] * size / sizes[-1]
    lower = sizes[sizes.index(upper) - 1]
    a, b = costs[backward, lower], costs[backward, upper]
    return a + (b - a) * (size - lower) / (upper - lower)


def plain_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Any, seed: int = 0) -> None:
    """A minimal hand-written epoch: the recipe's optimiser, shuffled index batches, hard labels."""
    model.train()
    optimizer = make_optimizer(list(model.parameters()), recipe)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for idx in order.split(recipe.batch_size):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def plain_epoch_seconds(dataset: str, data_dir: str | Path, repeats: int) -> tuple[float, float]:
    """(CPU s, wall s): medians of the plain loop's epoch on `dataset`'s train split, default arch."""
    spec = get_dataset_spec(dataset)
    recipe = replace(recipe_for(dataset), epochs=1)
    x, y = load_dataset(dataset, "train", data_dir)
    torch.manual_seed(0)
    base = build_model(spec.default_arch, spec.shape, spec.num_classes, spec.mean, spec.std)
    cpu, wall = [], []
    for i in range(repeats + 1):
        model = copy.deepcopy(base)
        w, c = time.perf_counter(), time.process_time()
        plain_epoch(model, x, y, recipe, i)
        if i:  # the first is a warm-up
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def fill_lower_bounds(
    clock: StepClock,
    archs: dict[str, nn.Module],
    shapes: dict[str, tuple[int, ...]],
    epoch_cpu: dict[str, float],
    repeats: int,
) -> None:
    """Each step's lower bound: its passes replayed at the measured cost per pass, plus its
    training epochs at the plain loop's cost per epoch."""
    tables = {name: pass_costs(model, shapes[name], repeats) for name, model in archs.items()}
    for step in clock.steps.values():
        total, known = 0.0, False
        for (name, backward, size), count in step.passes.items():
            total += count * pass_cost(tables[name], backward, size)
            known = True
        for (n, _), epochs in step.epochs.items():
            if n in epoch_cpu:
                total += epochs * epoch_cpu[n]
                known = True
        step.lower = total if known else None


def pass_summary(step: Step) -> str:
    """'F forward + B forward-backward passes on I inputs' of a step."""
    fwd = [(s, c) for (_, b, s), c in step.passes.items() if not b]
    bwd = [(s, c) for (_, b, s), c in step.passes.items() if b]
    parts = []
    for what, passes in (("fwd", fwd), ("fwd+bwd", bwd)):
        if passes:
            calls = sum(c for _, c in passes)
            inputs = sum(s * c for s, c in passes)
            parts.append(f"{calls:,} {what} ({inputs:,} inputs)")
    if step.epochs:
        parts.append(", ".join(f"{e} epochs of {n} images" for (n, _), e in step.epochs.items()))
    return "; ".join(parts)


# --- the two profiles ---------------------------------------------------------------------------


def shapes_of(archs: dict[str, nn.Module], datasets: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The input shape of each counted architecture (the dataset whose default arch it is)."""
    shapes = {}
    for name, model in archs.items():
        for dataset in datasets:
            spec = get_dataset_spec(dataset)
            try:
                with torch.no_grad():
                    model.eval()(torch.zeros(1, *spec.shape))
            except RuntimeError:
                continue
            shapes[name] = spec.shape
            break
    return shapes


def profile_demo(folder: Path, quick: bool) -> tuple[StepClock, dict[str, nn.Module], float, float]:
    """`run_demo` in this process, one job, every step timed; (clock, archs, wall s, CPU s)."""
    from defdistill.studies.demo import run_demo

    clock, archs = StepClock(), {}
    options: dict[str, Any] = {"epochs": 2, "n": 30} if quick else {}
    with patched(instrument(clock, archs)), clock.step("demo: the rest (loading data and runs, checks)"):
        wall, cpu = time.perf_counter(), time.process_time()
        run_demo(
            runs_dir=folder / "runs",
            results_dir=folder / "results",
            data_dir=folder / "data",
            jobs=1,
            **options,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return clock, archs, wall, cpu


def mnist_runs(runs_dir: Path, data_dir: Path, epochs: int) -> Path:
    """A papernot-mnist teacher-T1 and its surrogate, trained once for the profile (reused)."""
    from defdistill.store.runs import run_dir
    from defdistill.train.loop import train_surrogate, train_teacher

    teacher = run_dir(runs_dir, "mnist", "teacher-T1")
    if not (teacher / "meta.json").is_file():
        train_teacher("mnist", T=1.0, epochs=epochs, runs_dir=runs_dir, data_dir=data_dir, device="cpu")
    if not (run_dir(runs_dir, "mnist", "surrogate-T1") / "meta.json").is_file():
        train_surrogate("mnist", 0, epochs=epochs, runs_dir=runs_dir, data_dir=data_dir, device="cpu")
    return teacher


def profile_mnist(
    runs_dir: Path, data_dir: Path, n: int, attacks: Sequence[str] = MNIST_ATTACKS
) -> tuple[StepClock, dict[str, nn.Module], float, float, dict[str, Any]]:
    """`attack_model` with the MNIST sweep's L-inf attacks at eps 0.1, every attack timed."""
    from defdistill.evaluate.attacks import attack_model

    mnist_runs(runs_dir, data_dir, 1)
    clock, archs = StepClock(), {}
    with (
        tempfile.TemporaryDirectory(prefix="defdistill-profile-mnist-") as results,
        patched(instrument(clock, archs)),
        clock.step("attack_model: the rest (loading, checks)"),
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        report = attack_model(
            "teacher-T1", dataset="mnist", attacks=attacks, eps=[MNIST_EPS], n=n, runs_dir=runs_dir,
            results_dir=results, data_dir=data_dir, device="cpu",
        )  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        from defdistill.evaluate.worst_case import read_worst_case

        worst = read_worst_case(results)
    summary = {
        "robust_acc": {r["attack"]: r["robust_acc"] for r in report.rows},
        "worst_case_robust_acc": float(worst["ensemble_robust_acc"].iloc[-1])
        if not worst.empty
        else math.nan,
    }
    return clock, archs, wall, cpu, summary


# --- the demo as shipped, against a baseline revision ---------------------------------------------


def export_revision(rev: str, into: Path) -> Path:
    """`git archive` of `rev` (of the repository this file is in) unpacked into `into`."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def demo_command(source: Path, folder: Path) -> tuple[float, float]:
    """(wall s, CPU s of the process and its children) of `defdistill demo --quiet` run from
    `source` (its package first on the path) in `folder`."""
    env = dict(os.environ, PYTHONPATH=str(source))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from defdistill.cli import run; run()", "demo", "--quiet"],
        cwd=folder, env=env, capture_output=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def compare_demo(rev: str, pairs: int, data_dir: Path) -> dict[str, Any]:
    """The shipped demo of this tree and of `rev`, interleaved, each pair beside a plain epoch."""
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="defdistill-baseline-") as tmp:
        baseline = export_revision(rev, Path(tmp) / "src")
        sides = {"ours": here, "baseline": baseline}
        runs: dict[str, list[tuple[float, float, float, float]]] = {"ours": [], "baseline": []}
        for i in range(pairs):
            for side in ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours"):
                epoch_cpu, epoch_wall = plain_epoch_seconds("digits", data_dir, 2)
                with tempfile.TemporaryDirectory(prefix="defdistill-demo-", dir=tmp) as folder:
                    wall, cpu = demo_command(sides[side], Path(folder))
                runs[side].append((wall, cpu, epoch_wall, epoch_cpu))
    result: dict[str, Any] = {"revision": rev, "pairs": pairs}
    for side, values in runs.items():
        result[side] = {
            "wall_s": statistics.median(v[0] for v in values),
            "cpu_s": statistics.median(v[1] for v in values),
            "wall_epochs": statistics.median(v[0] / v[2] for v in values),
            "cpu_epochs": statistics.median(v[1] / v[3] for v in values),
        }
    result["wall_epochs_ratio"] = result["ours"]["wall_epochs"] / result["baseline"]["wall_epochs"]
    result["cpu_epochs_ratio"] = result["ours"]["cpu_epochs"] / result["baseline"]["cpu_epochs"]
    return result


# --- the report -----------------------------------------------------------------------------------


def step_rows(clock: StepClock, epoch_cpu: float) -> list[dict[str, Any]]:
    rows = []
    for label, step in sorted(clock.steps.items(), key=lambda kv: -kv[1].wall):
        rows.append(
            {
                "step": label,
                "calls": step.calls,
                "wall_s": round(step.wall, 3),
                "cpu_s": round(step.cpu, 3),
                "cpu_epochs": round(step.cpu / epoch_cpu, 2),
                "lower_bound_cpu_s": None if step.lower is None else round(step.lower, 3),
                "vs_lower_bound": None if not step.lower else round(step.cpu / step.lower, 2),
                "work": pass_summary(step),
            }
        )
    return rows


def table(title: str, rows: Sequence[dict[str, Any]], wall: float, cpu: float, epoch_cpu: float) -> list[str]:
    lines = [
        f"## {title}",
        "",
        f"Total: {wall:.1f} s wall, {cpu:.1f} s CPU = {cpu / epoch_cpu:.0f} plain digits epochs of CPU.",
        "",
        "| step | calls | wall (s) | CPU (s) | CPU (plain epochs) | lower bound (CPU s) | CPU / lower bound "
        "| work |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lower = "" if r["lower_bound_cpu_s"] is None else f"{r['lower_bound_cpu_s']:.2f}"
        ratio = "" if r["vs_lower_bound"] is None else f"{r['vs_lower_bound']:.2f}"
        lines.append(
            f"| {r['step']} | {r['calls']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['cpu_epochs']:.1f} | "
            f"{lower} | {ratio} | {r['work']} |"
        )
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A 2-epoch demo on 30 inputs, MNIST on 20.")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"), help="Where MNIST is.")
    parser.add_argument("--runs-dir", type=Path, default=Path("build/profile/runs"), help="The MNIST runs.")
    parser.add_argument("--mnist-n", type=int, default=100)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--baseline", default=None, help="A git revision whose shipped demo to time against.")
    parser.add_argument("--pairs", type=int, default=2, help="Interleaved pairs of the baseline comparison.")
    args = parser.parse_args(argv)
    configure_threads()
    repeats = 3 if args.quick else 7
    epoch_cpu, epoch_wall = plain_epoch_seconds("digits", "data", repeats)
    report: dict[str, Any] = {
        "plain_digits_epoch": {"cpu_s": round(epoch_cpu, 4), "wall_s": round(epoch_wall, 4)},
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 1),
    }
    text = [
        "# Profile",
        "",
        "Where the time of `defdistill demo` and of one MNIST model's full evaluation goes "
        "(benchmarks/step_profile.py). Each step's seconds exclude the steps nested in it; the lower bound "
        "is "
        "the same forward and forward-backward passes (counted on the model, by batch size) in a plain "
        "loop, or the same epochs of a plain training loop, at costs measured in the same run (CPU "
        "seconds, one torch thread). The unit: one plain-loop digits epoch, "
        f"{epoch_cpu:.3f} CPU s ({epoch_wall:.3f} s wall) in this run. torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start.",
        "",
    ]
    if not args.skip_demo:
        with tempfile.TemporaryDirectory(prefix="defdistill-profile-demo-") as folder:
            clock, archs, wall, cpu = profile_demo(Path(folder), args.quick)
        spec = get_dataset_spec("digits")
        fill_lower_bounds(
            clock, archs, {name: spec.shape for name in archs}, {str(1437): epoch_cpu}, repeats
        )  # the digits train split: 1437 images
        rows = step_rows(clock, epoch_cpu)
        report["demo"] = {
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_epochs": round(cpu / epoch_cpu, 1),
            "wall_epochs": round(wall / epoch_wall, 1), "steps": rows,
        }  # fmt: skip
        text += table("The demo (run_demo, jobs=1, in this process)", rows, wall, cpu, epoch_cpu)
    if not args.skip_mnist:
        n = 20 if args.quick else args.mnist_n
        mnist_cpu, mnist_wall = plain_epoch_seconds("mnist", args.data_dir, 1)
        clock, archs, wall, cpu, summary = profile_mnist(args.runs_dir, args.data_dir, n)
        fill_lower_bounds(clock, archs, shapes_of(archs, ["mnist"]), {}, repeats)
        rows = step_rows(clock, epoch_cpu)
        report["mnist"] = {
            "n": n, "eps": MNIST_EPS, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "plain_mnist_epoch_cpu_s": round(mnist_cpu, 2), **summary, "steps": rows,
        }  # fmt: skip
        accs = ", ".join(f"{a} {v:.3f}" for a, v in summary["robust_acc"].items())
        text += table(
            f"The full evaluation of one MNIST model (papernot-mnist, 1 epoch; eps {MNIST_EPS}, first {n} "
            "test inputs)",
            rows, wall, cpu, epoch_cpu,
        )  # fmt: skip
        text += [
            f"Robust accuracy per attack: {accs}; worst case over all of them "
            f"{summary['worst_case_robust_acc']:.3f}. One plain MNIST epoch: {mnist_cpu:.1f} CPU s.",
            "",
        ]
    if args.baseline:
        comparison = compare_demo(args.baseline, args.pairs, Path("data"))
        report["demo_vs_baseline"] = comparison
        o, b = comparison["ours"], comparison["baseline"]
        text += [
            "## The demo as shipped against the code of " + args.baseline,
            "",
            f"`defdistill demo --quiet` in a fresh folder, {comparison['pairs']} interleaved pairs, each run "
            "beside a plain digits epoch of the same moment:",
            "",
            "| code | wall (s) | CPU (s, with its workers) | wall (plain epochs) | CPU (plain epochs) |",
            "| --- | --- | --- | --- | --- |",
            f"| this tree | {o['wall_s']:.1f} | {o['cpu_s']:.1f} | {o['wall_epochs']:.0f} | "
            f"{o['cpu_epochs']:.0f} |",
            f"| {args.baseline} | {b['wall_s']:.1f} | {b['cpu_s']:.1f} | {b['wall_epochs']:.0f} | "
            f"{b['cpu_epochs']:.0f} |",
            "",
            f"Ratio of the multiples (this tree / {args.baseline}): "
            f"wall {comparison['wall_epochs_ratio']:.2f}, "
            f"CPU {comparison['cpu_epochs_ratio']:.2f}.",
            "",
        ]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results_dir / "profile.json", report)
    atomic_write_text(args.results_dir / "profile.md", "\n".join(text))
    print(f"wrote {args.results_dir / 'profile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
