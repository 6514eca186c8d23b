"""The `defdistill` command line: parses options, calls the library, prints the outcome."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # Typer vendors click
from typer.core import TyperGroup

from .errors import DefdistillError

INTERRUPTED = "interrupted: finished runs and tables are intact; nothing partial was written"


class _OneLineErrors(TyperGroup):
    """A usage error (bad option value, unknown command) is one line, like every other error;
    an interruption anywhere, even while the library is imported, is one line and exit 130."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        signal.signal(signal.SIGTERM, _interrupt)
        STATE["interrupt_reported"] = False
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
            err.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(hint)}", soft_wrap=True)
            sys.exit(exc.exit_code)
        if code == 130 and not STATE["interrupt_reported"]:
            err.print(INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="defdistill",
    help="Defensive distillation, trained, distilled and attacked honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
STATE = {"debug": False, "interrupt_reported": False}

Dataset = Annotated[
    str, typer.Option("--dataset", help="digits (embedded), mnist, fashion-mnist or cifar10.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for initialisation, batching and random starts.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where runs are stored.")]
ResultsDir = Annotated[Path, typer.Option("--results-dir", help="Where tables are written.")]
DataDir = Annotated[Path, typer.Option("--data-dir", help="Where downloadable datasets are read from.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or tables; the summary line only.")
]
Epochs = Annotated[
    int | None, typer.Option("--epochs", help="Training epochs (default: the dataset's recipe).")
]
Amp = Annotated[
    str,
    typer.Option(
        "--amp", help="Mixed precision for training: auto (on for CUDA), on or off. Attacks never use it."
    ),
]
NumWorkers = Annotated[
    int,
    typer.Option(
        "--num-workers", help="DataLoader workers feeding batches from host memory (0: data on the device)."
    ),
]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the run's last completed epoch.")]
RecipeName = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="Training preset: digits, papernot-mnist or papernot-cifar10 (default: the dataset's).",
    ),
]
Download = Annotated[
    bool,
    typer.Option(
        "--download", help="Fetch the dataset's missing files into --data-dir first (needs internet)."
    ),
]

T_ = TypeVar("T_")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _call(fn: Callable[..., T_], *args: Any, **kwargs: Any) -> T_:
    """Run a library call; turn user errors and interruptions into one line and an exit code.

    DefdistillError (bad input) exits 2; an operating-system error (disk full, permission)
    or an unexpected failure exits 1; Ctrl-C or SIGTERM exits 130. `--debug` shows tracebacks.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        STATE["interrupt_reported"] = True
        err.print(INTERRUPTED)
        raise typer.Exit(130) from None
    except Exception as exc:
        if STATE["debug"]:
            raise
        if isinstance(exc, DefdistillError):
            message, code = str(exc), 2
        elif isinstance(exc, OSError):
            where = f": {exc.filename}" if exc.filename else ""
            message, code = f"{exc.strerror or exc}{where}", 1
        else:
            message, code = f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)", 1
        err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code) from None


def _reporter(quiet: bool):
    from .core.progress import SILENT, RichProgress

    return SILENT if quiet or not err.is_terminal else RichProgress()


def _float_list(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DefdistillError(
            f"{option} takes comma-separated numbers, e.g. 0.05,0.1, got {text!r}"
        ) from None


def _fetch(download: bool, dataset: str, data_dir: Path) -> None:
    """--download: fetch the dataset's missing files before the command reads them."""
    if download:
        from .data.registry import fetch_dataset

        _call(fetch_dataset, dataset, data_dir)


def _main_rank() -> bool:
    """Whether this process prints: rank 0 under torchrun, always otherwise."""
    from .core.distributed import launched_world

    return launched_world().is_main


def _notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


SurrogateOpt = Annotated[
    str | None, typer.Option("--surrogate", help="The model transfer attacks craft on (default: teacher-T1).")
]

DISPLAY_COLUMNS = {
    "diagnostics": ["model", "check", "value", "passed", "detail"],
    "robustness": [
        "model",
        "attack",
        "norm",
        "eps",
        "n",
        "clean_acc",
        "success_rate",
        "robust_acc",
        "median_dist",
        "seconds",
    ],
}


def _print_frame(title: str, frame: Any) -> None:
    """A table for the terminal: the columns a reader scans (all of them are in the files)."""
    from .store.tables import _format_value

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
    T: Annotated[
        float, typer.Option("--T", help="Training temperature: softmax(logits / T) in the loss.")
    ] = 1.0,
    epochs: Epochs = None,
    seed: Seed = 0,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture (default: the dataset's).")] = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = Path("data"),
    download: Download = False,
    recipe: RecipeName = None,
    device: Device = "auto",
    amp: Amp = "auto",
    num_workers: NumWorkers = 0,
    quiet: Quiet = False,
    resume: Resume = False,
) -> None:
    """Train a teacher at temperature T (T=1 is the ordinary, undefended network).

    Under `torchrun --nproc_per_node N -m defdistill train-teacher ...` N processes train it together."""
    from .train.loop import train_teacher

    _fetch(download, dataset, data_dir)
    result = _call(
        train_teacher,
        dataset=dataset,
        T=T,
        epochs=epochs,
        seed=seed,
        arch=arch,
        runs_dir=runs_dir,
        data_dir=data_dir,
        device=device,
        progress=_reporter(quiet),
        resume=resume,
        recipe=recipe,
        amp=amp,
        num_workers=num_workers,
    )
    if not _main_rank():
        return
    _notes(result.notes)
    m = result.meta
    out.print(
        f"{result.path.name}: test accuracy {m['clean_acc']:.4f} after {m['epochs']} epochs "
        f"({m['wall_seconds']:.1f} s) -> {result.path}",
        highlight=False,
    )


@app.command("distill")
def distill_cmd(
    T: Annotated[float, typer.Option("--T", help="Distillation temperature.")] = 100.0,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Teacher run (default: teacher-T<T>, else teacher-T1).")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", help="Soft-term weight; < 1 mixes in hard-label CE (default: the method's)."),
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="soft (default), hinton, fitnets, at, rkd or sp.")
    ] = None,
    student_arch: Annotated[
        str | None,
        typer.Option("--student-arch", help="Student architecture (default: the teacher's; see archs)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run name (default: student-T<T>[-method][-arch][-transfer set])."),
    ] = None,
    generations: Annotated[
        int, typer.Option("--generations", help="Born-again generations, each teaching the next (NAME-genK).")
    ] = 1,
    transfer_set: Annotated[
        str, typer.Option("--transfer-set", help="train, unlabeled (no labels) or noise (uniform).")
    ] = "train",
    layer: Annotated[
        str | None, typer.Option("--layer", help="Module path a feature method hooks (default: its own).")
    ] = None,
    feature_weight: Annotated[
        float | None,
        typer.Option("--feature-weight", help="A feature method's term weight (default: its paper's)."),
    ] = None,
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    download: Download = False,
    recipe: RecipeName = None,
    device: Device = "auto",
    amp: Amp = "auto",
    num_workers: NumWorkers = 0,
    quiet: Quiet = False,
    resume: Resume = False,
) -> None:
    """Train a student on the teacher's soft labels at T (or a variant); it is deployed at T=1.

    Under `torchrun --nproc_per_node N -m defdistill distill ...` N processes train it together."""
    from .train.distill import distill

    _fetch(download, dataset, data_dir)
    result = _call(
        distill,
        dataset=dataset,
        T=T,
        teacher=teacher,
        alpha=alpha,
        epochs=epochs,
        seed=seed,
        arch=student_arch,
        runs_dir=runs_dir,
        results_dir=results_dir,
        data_dir=data_dir,
        device=device,
        progress=_reporter(quiet),
        method=method,
        name=name,
        generations=generations,
        transfer_set=transfer_set,
        layer=layer,
        feature_weight=feature_weight,
        resume=resume,
        recipe=recipe,
        amp=amp,
        num_workers=num_workers,
    )
    if not _main_rank():
        return
    _notes(result.notes)
    for run in result.generations:
        m = run.meta
        gap = (m["teacher_acc"] - m["clean_acc"]) * 100
        out.print(
            f"{run.path.name} ({m['method']}, {m['arch']}, {m['params']} params): "
            f"test accuracy {m['clean_acc']:.4f} (teacher {m['teacher']} {m['teacher_acc']:.4f}, "
            f"gap {gap:+.2f} pp, {m['wall_seconds']:.1f} s) -> {run.path}",
            highlight=False,
        )


@app.command("attack")
def attack_cmd(
    model: Annotated[
        str, typer.Option("--model", help="A role (teacher, student), a run name or a run directory.")
    ] = "student",
    T: Annotated[
        float | None, typer.Option("--T", help="Pick the run of this temperature when --model is a role.")
    ] = None,
    attacks: Annotated[
        str,
        typer.Option("--attacks", help="Comma-separated: fgsm, pgd, cw, pgd-margin, pgd-t, transfer, hsj."),
    ] = "fgsm,pgd,cw",
    eps: Annotated[
        str, typer.Option("--eps", help="Comma-separated L-inf budgets in [0, 1].")
    ] = "0.05,0.1,0.2,0.3",
    n: Annotated[
        int | None, typer.Option("--n", help="Attack the first n test inputs (default: all).")
    ] = None,
    surrogate: SurrogateOpt = None,
    dataset: Dataset = "digits",
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    download: Download = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Attack one model through Foolbox and record its rows in results/robustness."""
    from .evaluate.attacks import attack_model

    def run():
        return attack_model(
            model=model,
            dataset=dataset,
            attacks=attacks.split(","),
            eps=_float_list(eps, "--eps"),
            n=n,
            T=T,
            seed=seed,
            runs_dir=runs_dir,
            results_dir=results_dir,
            data_dir=data_dir,
            device=device,
            progress=_reporter(quiet),
            surrogate=surrogate,
        )

    _fetch(download, dataset, data_dir)
    report = _call(run)
    if not quiet:
        import pandas as pd

        _print_frame("robustness", pd.DataFrame(report.rows))
    _notes(report.notes)
    best = max(report.rows, key=lambda r: r["success_rate"] if r["success_rate"] == r["success_rate"] else -1)
    out.print(
        f"{report.model_path.name}: {len(report.rows)} rows -> {results_dir / 'robustness.csv'}; "
        f"strongest: {best['attack']} success {best['success_rate']:.3f}",
        highlight=False,
    )


@app.command("tables")
def tables_cmd(results_dir: ResultsDir = Path("results"), quiet: Quiet = False) -> None:
    """Rebuild every table in results/ from the recorded rows."""
    from .store.tables import rebuild_tables

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
    n: Annotated[
        int | None, typer.Option("--n", help="Attack the first n test inputs (default: all).")
    ] = None,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    download: Download = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The whole pipeline: teachers at T=1 and T, student at T, every attack, tables."""
    from .studies.demo import run_demo

    _fetch(download, dataset, data_dir)
    report = _call(
        run_demo,
        dataset=dataset,
        T=T,
        epochs=epochs,
        n=n,
        seed=seed,
        runs_dir=runs_dir,
        results_dir=results_dir,
        data_dir=data_dir,
        device=device,
        progress=_reporter(quiet),
    )
    if not quiet:
        for name, frame in report.tables.items():
            _print_frame(name, frame)
    _notes(report.notes)
    for diagnosis in report.diagnoses:
        out.print(f"{diagnosis.model_path.name}: {diagnosis.verdict}", highlight=False, soft_wrap=True)
    out.print(
        f"demo on {dataset}: {len(report.runs)} models trained and attacked in {report.seconds:.0f} s; "
        f"tables in {results_dir}",
        highlight=False,
    )


@app.command("privacy")
def privacy_cmd(
    T: Annotated[str, typer.Option("--T", help="Comma-separated temperatures, a student each.")] = "1,10,100",
    shadow: Annotated[int, typer.Option("--shadow", help="Shadow pipelines for offline LiRA; 0: none.")] = 4,
    transfer_set: Annotated[
        str,
        typer.Option(
            "--transfer-set",
            help="The students' inputs: public (the other half of the train split, labels unused) or noise.",
        ),
    ] = "public",
    control: Annotated[
        bool,
        typer.Option(
            "--control",
            help="Also train privacy-control: the same network on the public half with its true labels "
            "(no private example), attacked the same way: the floor of a model without members.",
        ),
    ] = False,
    control_only: Annotated[
        bool,
        typer.Option("--control-only", help="Train and attack the control alone (no teacher, no students)."),
    ] = False,
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Membership inference on a teacher trained on private data and on students distilled without it."""
    from .studies.privacy import run_privacy

    def run():
        return run_privacy(
            dataset=dataset,
            temperatures=_float_list(T, "--T"),
            shadows=shadow,
            transfer_set=transfer_set,
            epochs=epochs,
            seed=seed,
            runs_dir=runs_dir,
            results_dir=results_dir,
            data_dir=data_dir,
            device=device,
            progress=_reporter(quiet),
            control=control,
            control_only=control_only,
        )

    report = _call(run)
    if not quiet:
        import pandas as pd

        columns = ["model", "attack", "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc"]
        _print_frame("privacy", pd.DataFrame(report.rows)[columns])
    _notes(report.notes)
    headline = "lira" if shadow else "loss"
    for row in (r for r in report.rows if r["attack"] == headline):
        out.print(
            f"{row['model']}: {headline} AUC {row['auc']:.3f}, TPR@1%FPR {row['tpr_at_1pct_fpr']:.3f}, "
            f"advantage {row['advantage']:.3f}, test accuracy {row['test_acc']:.4f}",
            highlight=False,
        )
    out.print(
        f"privacy on {dataset}: {len(report.models)} models attacked in {report.seconds:.0f} s -> "
        f"{results_dir / 'privacy.csv'}, {report.figure}",
        highlight=False,
    )


@app.command("archs")
def archs_cmd(dataset: Dataset = "digits") -> None:
    """List the architectures (teachers and students) with their parameter counts on a dataset."""
    import pandas as pd

    from .studies.compression import architecture_table

    rows = _call(architecture_table, dataset)
    for row in rows:
        row["params"] = f"{row['params']:,}" if row["params"] is not None else "input too small"
    _print_frame(f"architectures for {dataset}", pd.DataFrame(rows))


@app.command("compression")
def compression_cmd(
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated runs (default: every run of the dataset).")
    ] = None,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Timed forward passes at batch 1 (a fifth of them at 256).")
    ] = 50,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads while timing.")] = 1,
    dataset: Dataset = "digits",
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    quiet: Quiet = False,
) -> None:
    """Parameters, size on disk, CPU latency per input and accuracy of each run -> results/compression."""
    from .studies.compression import measure_compression

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    rows = _call(
        measure_compression,
        dataset=dataset,
        models=names,
        repeats=repeats,
        threads=threads,
        runs_dir=runs_dir,
        results_dir=results_dir,
        progress=_reporter(quiet),
    )
    if not quiet:
        import pandas as pd

        _print_frame("compression", pd.DataFrame(rows))
    out.print(f"{len(rows)} runs measured -> {results_dir / 'compression.csv'}", highlight=False)


@app.command("report")
def report_cmd(
    results_dir: ResultsDir = Path("results"),
    eps: Annotated[float, typer.Option("--eps", help="L-inf budget of the success-against-T plot.")] = 0.3,
    runs_dir: RunsDir = Path("runs"),
    doc: Annotated[
        list[Path] | None,
        typer.Option(
            "--doc",
            help="A document whose generated blocks naming this results folder are rewritten from the tables "
            "(repeatable; default: README.md and REPRODUCTION.md here, when they exist).",
        ),
    ] = None,
) -> None:
    """Plot the tables in results/ (PNG), write results/REPORT.md, and rewrite the docs' generated numbers."""
    from .report import write_report

    docs = (
        doc if doc is not None else [p for p in (Path("README.md"), Path("REPRODUCTION.md")) if p.is_file()]
    )
    result = _call(write_report, results_dir, eps, runs_dir=runs_dir, docs=docs)
    _notes(result.notes)
    changed = f"; rewrote {', '.join(str(p) for p in result.docs)}" if result.docs else ""
    out.print(f"report: {len(result.plots)} plots -> {result.report}{changed}", highlight=False)


@app.command("diagnose")
def diagnose_cmd(
    model: Annotated[
        str, typer.Option("--model", help="A role (teacher, student), a run name or a run directory.")
    ] = "student",
    T: Annotated[
        float | None, typer.Option("--T", help="Pick the run of this temperature when --model is a role.")
    ] = None,
    eps: Annotated[
        str, typer.Option("--eps", help="Comma-separated L-inf budgets in [0, 1].")
    ] = "0.05,0.1,0.2,0.3",
    n: Annotated[int | None, typer.Option("--n", help="Use the first n test inputs (default: all).")] = None,
    surrogate: SurrogateOpt = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Run every attack again instead of reusing recorded rows.")
    ] = False,
    dataset: Dataset = "digits",
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Check one model for gradient masking (Carlini et al. 2019) and record results/diagnostics."""
    from .evaluate.diagnose import diagnose_model

    def run():
        return diagnose_model(
            model=model,
            dataset=dataset,
            T=T,
            eps=_float_list(eps, "--eps"),
            n=n,
            seed=seed,
            surrogate=surrogate,
            fresh=fresh,
            runs_dir=runs_dir,
            results_dir=results_dir,
            data_dir=data_dir,
            device=device,
            progress=_reporter(quiet),
        )

    diagnosis = _call(run)
    if not quiet:
        table = Table(title=f"diagnostics: {diagnosis.model_path.name}", title_justify="left")
        for column in ("check", "value", "passed", "detail"):
            table.add_column(column, justify="right" if column == "value" else "left")
        for c in diagnosis.checks:
            table.add_row(c.name, f"{c.value:.3f}", "yes" if c.passed else "[red]no[/]", c.detail)
        out.print(table)
    out.print(f"{diagnosis.model_path.name}: {diagnosis.verdict}", highlight=False, soft_wrap=True)


@app.command("sweep")
def sweep_cmd(
    spec: Annotated[Path, typer.Argument(help="The sweep's YAML spec (see experiments/sweeps/).")],
    executor: Annotated[
        str,
        typer.Option("--executor", help="local (processes here), slurm, submitit-local or submitit-debug."),
    ] = "local",
    max_parallel: Annotated[
        int | None,
        typer.Option("--max-parallel", help="Configurations at once (default: the spec's max_parallel)."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Slurm: block until the jobs end.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run every unfinished configuration of a sweep here, or submit them to Slurm as an array job."""
    from .studies.sweep import run_sweep

    result = _call(
        run_sweep, spec, executor=executor, max_parallel=max_parallel, wait=wait or None,
        progress=_reporter(quiet),
    )  # fmt: skip
    name = result.spec.name
    for outcome in result.failed:
        err.print(f"[bold red]failed:[/] {outcome.config}: {escape(outcome.error or '')}", highlight=False)
    ran = len(result.outcomes) - len(result.failed)
    if result.job_ids and not result.outcomes:
        out.print(
            f"{name}: submitted {len(result.job_ids)} configurations as Slurm job "
            f"{result.job_ids[0].split('_')[0]} ({len(result.already_done)} already finished); logs in "
            f"{result.log_dir}. Run the same command again when they end: finished configurations are "
            "skipped and the tables rebuilt.",
            highlight=False,
        )
        return
    report = f"; report {result.report}" if result.report else ""
    out.print(
        f"{name}: {ran} configurations run, {len(result.already_done)} already finished, "
        f"{len(result.failed)} failed ({result.executor}){report}",
        highlight=False,
    )
    if result.failed:
        raise typer.Exit(1)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(run())
