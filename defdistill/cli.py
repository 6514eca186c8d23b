"""The `defdistill` command line: parses options, calls the library, prints the outcome."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import DefdistillError

app = typer.Typer(
    name="defdistill",
    help="Defensive distillation, trained, distilled and attacked honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
STATE = {"debug": False}

Dataset = Annotated[str, typer.Option("--dataset", help="digits (embedded), mnist, fashion-mnist or cifar10.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for initialisation, batching and random starts.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where runs are stored.")]
ResultsDir = Annotated[Path, typer.Option("--results-dir", help="Where tables are written.")]
DataDir = Annotated[Path, typer.Option("--data-dir", help="Where downloadable datasets are read from.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables; the summary line only.")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the dataset's recipe).")]

T_ = TypeVar("T_")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _call(fn: Callable[..., T_], *args: Any, **kwargs: Any) -> T_:
    """Run a library call; turn user errors and interruptions into one line and an exit code."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return fn(*args, **kwargs)
    except DefdistillError as exc:
        if STATE["debug"]:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: finished runs and tables are intact; nothing partial was written")
        raise typer.Exit(130) from None


def _reporter(quiet: bool):
    from .progress import SILENT, RichProgress

    return SILENT if quiet or not err.is_terminal else RichProgress()


def _float_list(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DefdistillError(f"{option} takes comma-separated numbers, e.g. 0.05,0.1, got {text!r}") from None


def _notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


DISPLAY_COLUMNS = {
    "robustness": ["model", "attack", "norm", "eps", "n", "clean_acc", "success_rate", "robust_acc", "median_dist", "seconds"],
}


def _print_frame(title: str, frame: Any) -> None:
    """A table for the terminal: the columns a reader scans (all of them are in the files)."""
    from .tables import _format_value

    columns = [c for c in DISPLAY_COLUMNS.get(title, frame.columns) if c in frame.columns]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "fiu" else "left")
    for row in frame[columns].itertuples(index=False):
        table.add_row(*(_format_value(v) for v in row))
    out.print(table)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    """Train teachers, distil students, attack both and tabulate the results."""
    STATE["debug"] = debug


@app.command("train-teacher")
def train_teacher_cmd(
    dataset: Dataset = "digits",
    T: Annotated[float, typer.Option("--T", help="Training temperature: softmax(logits / T) in the loss.")] = 1.0,
    epochs: Epochs = None,
    seed: Seed = 0,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture (default: the dataset's).")] = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a teacher at temperature T (T=1 is the ordinary, undefended network)."""
    from .training import train_teacher

    result = _call(
        train_teacher, dataset=dataset, T=T, epochs=epochs, seed=seed, arch=arch,
        runs_dir=runs_dir, data_dir=data_dir, device=device, progress=_reporter(quiet),
    )
    m = result.meta
    out.print(
        f"{result.path.name}: test accuracy {m['clean_acc']:.4f} after {m['epochs']} epochs "
        f"({m['wall_seconds']:.1f} s) -> {result.path}", highlight=False
    )


@app.command("distill")
def distill_cmd(
    T: Annotated[float, typer.Option("--T", help="Distillation temperature.")] = 100.0,
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher run (default: teacher-T<T>, else teacher-T1).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the soft term; < 1 mixes in hard-label CE.")] = 1.0,
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a student on the teacher's soft labels at T; it is deployed at T=1."""
    from .distill import distill

    result = _call(
        distill, dataset=dataset, T=T, teacher=teacher, alpha=alpha, epochs=epochs, seed=seed,
        runs_dir=runs_dir, results_dir=results_dir, data_dir=data_dir, device=device, progress=_reporter(quiet),
    )
    _notes(result.notes)
    m = result.meta
    gap = (m["teacher_acc"] - m["clean_acc"]) * 100
    out.print(
        f"{result.path.name}: test accuracy {m['clean_acc']:.4f} (teacher {m['teacher']} {m['teacher_acc']:.4f}, "
        f"gap {gap:+.2f} pp, {m['wall_seconds']:.1f} s) -> {result.path}", highlight=False
    )


@app.command("attack")
def attack_cmd(
    model: Annotated[str, typer.Option("--model", help="A role (teacher, student), a run name or a run directory.")] = "student",
    T: Annotated[float | None, typer.Option("--T", help="Pick the run of this temperature when --model is a role.")] = None,
    attacks: Annotated[str, typer.Option("--attacks", help="Comma-separated: fgsm, pgd, cw.")] = "fgsm,pgd,cw",
    eps: Annotated[str, typer.Option("--eps", help="Comma-separated L-inf budgets in [0, 1].")] = "0.05,0.1,0.2,0.3",
    n: Annotated[int | None, typer.Option("--n", help="Attack the first n test inputs (default: all).")] = None,
    dataset: Dataset = "digits",
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Attack one model through Foolbox and record its rows in results/robustness."""
    from .attacks import attack_model

    def run():
        return attack_model(
            model=model, dataset=dataset, attacks=attacks.split(","), eps=_float_list(eps, "--eps"), n=n, T=T,
            seed=seed, runs_dir=runs_dir, results_dir=results_dir, data_dir=data_dir, device=device,
            progress=_reporter(quiet),
        )

    report = _call(run)
    if not quiet:
        import pandas as pd

        _print_frame("robustness", pd.DataFrame(report.rows))
    _notes(report.notes)
    best = max(report.rows, key=lambda r: (r["success_rate"] if r["success_rate"] == r["success_rate"] else -1))
    out.print(
        f"{report.model_path.name}: {len(report.rows)} rows -> {results_dir / 'robustness.csv'}; "
        f"strongest: {best['attack']} success {best['success_rate']:.3f}", highlight=False
    )


@app.command("tables")
def tables_cmd(results_dir: ResultsDir = Path("results"), quiet: Quiet = False) -> None:
    """Rebuild every table in results/ from the recorded rows."""
    from .tables import rebuild_tables

    frames = _call(rebuild_tables, results_dir)
    if not quiet:
        for name, frame in frames.items():
            _print_frame(name, frame)
    summary = ", ".join(f"{name} ({len(frame)} rows)" for name, frame in frames.items()) or "no records yet"
    out.print(f"rebuilt {summary} in {results_dir}", highlight=False)


@app.command("demo")
def demo_cmd(
    T: Annotated[float, typer.Option("--T", help="Distillation temperature.")] = 100.0,
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    n: Annotated[int | None, typer.Option("--n", help="Attack the first n test inputs (default: all).")] = None,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The whole pipeline: teachers at T=1 and T, student at T, every attack, tables."""
    from .pipeline import run_demo

    report = _call(
        run_demo, dataset=dataset, T=T, epochs=epochs, n=n, seed=seed, runs_dir=runs_dir,
        results_dir=results_dir, data_dir=data_dir, device=device, progress=_reporter(quiet),
    )
    if not quiet:
        for name, frame in report.tables.items():
            _print_frame(name, frame)
    _notes(report.notes)
    out.print(
        f"demo on {dataset}: {len(report.runs)} models trained and attacked in {report.seconds:.0f} s; "
        f"tables in {results_dir}", highlight=False
    )


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(run())
