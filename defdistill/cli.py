"""The `defdistill` command line: parses options, calls the library, prints the outcome."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .checks import check_positive_int
from .errors import DefdistillError

# Recent typer vendors click as typer._click and raises that copy's exceptions; older typer
# (pyproject allows typer>=0.12) depends on click itself and raises click's. Type-checked
# against the vendored copy.
if TYPE_CHECKING:
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
else:
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import ClickException

        try:
            from click.exceptions import NoArgsIsHelpError
        except ImportError:  # click < 8.2 prints the help and exits 0 itself

            class NoArgsIsHelpError(ClickException):
                """Never raised by this click."""


INTERRUPTED = "interrupted: finished runs and tables are intact; nothing partial was written"


class _OneLineErrors(TyperGroup):
    """A usage error (bad option value, unknown command) is one line, like every other error;
    an interruption anywhere, even while the library is imported, is one line and exit 130."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **kwargs,
            )
        signal.signal(signal.SIGTERM, _interrupt)
        STATE["interrupt_reported"] = False
        try:
            code = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **kwargs,
            )
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)  # a UsageError's command context
            hint = f" (see {ctx.command_path} --help)" if ctx else ""
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
DEMO_RESULTS_DIR = Path("results") / "demo"  # the demo never rewrites the committed reference tables

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
Force = Annotated[
    bool,
    typer.Option("--force", help="Train over a finished run of the same name (its records then go stale)."),
]
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

AdvEps = Annotated[
    float | None,
    typer.Option(
        "--adv-eps",
        help="Adversarial training's L-inf radius, in [0, 1] (default: the dataset's: digits 0.1, mnist 0.3, "
        "fashion-mnist 0.1, cifar10 8/255).",
    ),
]
AdvSteps = Annotated[
    int | None,
    typer.Option(
        "--adv-steps", help="PGD steps per batch (default: digits 5, mnist 40, fashion-mnist 20, cifar10 10)."
    ),
]
AdvStepSize = Annotated[
    float | None,
    typer.Option(
        "--adv-step-size",
        help="PGD step (default: digits 0.05, mnist 0.01, fashion-mnist 0.0125, cifar10 2/255; "
        "2.5 * eps / steps when --adv-eps or --adv-steps is changed).",
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


class LineProgress:
    """Progress for a log or a pipe: one line on stderr as each task finishes."""

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        started, done = time.perf_counter(), [0]

        def advance(steps: int = 1) -> None:
            done[0] += steps

        yield advance
        err.print(
            f"done: {description} ({done[0]}/{total} steps, {time.perf_counter() - started:.1f} s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _reporter(quiet: bool):
    """Nothing under --quiet; progress bars on a terminal; a line per finished task otherwise."""
    from .core.progress import SILENT, RichProgress

    if quiet:
        return SILENT
    return RichProgress() if err.is_terminal else LineProgress()


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


def _print_text(text: str) -> None:
    """Text exactly as given: no markup, no highlighting, no wrapping or cropping by rich."""
    out.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _print_frame(title: str, frame: Any, table: str | None = None) -> None:
    """A table for a person: the columns a reader scans (every column is in the files), side by
    side when they fit the terminal, one record per block when they do not, never cut; at full
    width when stdout is not a terminal."""
    from .store.render import display_columns, render_frame

    frame = frame[display_columns(table or title, frame)]
    out.print(title, style="bold", markup=False, highlight=False, soft_wrap=True)
    _print_text(render_frame(frame, "table", out.width if out.is_terminal else None))


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
    adv: Annotated[
        str | None,
        typer.Option(
            "--adv",
            help="Train adversarially at T=1: pgd (Madry et al. 2018, teacher-T1-pgdat) or trades "
            "(Zhang et al. 2019, teacher-T1-trades).",
        ),
    ] = None,
    adv_eps: AdvEps = None,
    adv_steps: AdvSteps = None,
    adv_step_size: AdvStepSize = None,
    beta: Annotated[
        float | None,
        typer.Option("--beta", help="TRADES' robust-term weight, >= 0 (default 6, the paper's)."),
    ] = None,
    force: Force = False,
) -> None:
    """Train a teacher at temperature T (T=1 is the ordinary, undefended network), or adversarially (--adv).

    Under `torchrun --nproc_per_node N -m defdistill train-teacher ...` N processes train it together
    (not with --adv, which runs in one process, in float32)."""
    from .train.loop import train_teacher

    _fetch(download, dataset, data_dir)
    result = _call(
        train_teacher, dataset=dataset, T=T, epochs=epochs, seed=seed, arch=arch, runs_dir=runs_dir,
        data_dir=data_dir, device=device, progress=_reporter(quiet), resume=resume, recipe=recipe, amp=amp,
        num_workers=num_workers, adv=adv, adv_eps=adv_eps, adv_steps=adv_steps, adv_step_size=adv_step_size,
        beta=beta, force=force,
    )  # fmt: skip
    if not _main_rank():
        return
    _notes(result.notes)
    m = result.meta
    how = ""
    if m.get("adv_method"):
        trades = f", beta {m['adv_beta']:g}" if m.get("adv_beta") is not None else ""
        steps = f"{m['adv_steps']} steps of {m['adv_step_size']:g}"
        how = f" ({m['adv_method']}, eps {m['adv_eps']:g}, {steps}{trades})"
    out.print(
        f"{result.path.name}{how}: test accuracy {m['clean_acc']:.4f} after {m['epochs']} epochs "
        f"({m['wall_seconds']:.1f} s) -> {result.path}",
        highlight=False,
    )


@app.command("distill")
def distill_cmd(
    T: Annotated[
        float | None,
        typer.Option(
            "--T",
            help="Distillation temperature (default: the method's: 100; ard 30, Goldblum et al.; rslad 1).",
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Teacher run (default: teacher-T<T>, else teacher-T1; ard and rslad need it, "
            "e.g. teacher-T1-pgdat).",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", help="Soft-term weight; < 1 mixes in hard-label CE (default: the method's)."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="soft (default), hinton, fitnets, at, rkd, sp; robust: ard (Goldblum et al. 2020) or rslad "
            "(Zi et al. 2021).",
        ),
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
    adv_eps: AdvEps = None,
    adv_steps: AdvSteps = None,
    adv_step_size: AdvStepSize = None,
    force: Force = False,
) -> None:
    """Train a student on the teacher's soft labels at T (or a variant); it is deployed at T=1.

    --method ard or rslad trains it on adversarial inputs within the --adv-* budget (robust distillation).

    Under `torchrun --nproc_per_node N -m defdistill distill ...` N processes train it together."""
    from .train.distill import distill

    _fetch(download, dataset, data_dir)
    result = _call(
        distill, dataset=dataset, T=T, teacher=teacher, alpha=alpha, epochs=epochs, seed=seed,
        arch=student_arch, runs_dir=runs_dir, results_dir=results_dir, data_dir=data_dir, device=device,
        progress=_reporter(quiet), method=method, name=name, generations=generations,
        transfer_set=transfer_set, layer=layer, feature_weight=feature_weight, resume=resume, recipe=recipe,
        amp=amp, num_workers=num_workers,
        adv_eps=adv_eps, adv_steps=adv_steps, adv_step_size=adv_step_size, force=force,
    )  # fmt: skip
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
        typer.Option(
            "--attacks",
            help="Comma-separated: fgsm, pgd, cw, pgd-margin, pgd-t, transfer, hsj, apgd-ce, apgd-dlr, "
            "apgd-t, square, autoattack, noise, jsma, jsma-z.",
        ),
    ] = "fgsm,pgd,cw",
    eps: Annotated[
        str | None,
        typer.Option("--eps", help="Comma-separated budgets (default: the dataset's grid; digits 0.02-0.3)."),
    ] = None,
    norm: Annotated[
        str, typer.Option("--norm", help="The budget's norm: linf (budgets in [0, 1]) or l2.")
    ] = "linf",
    restarts: Annotated[
        int, typer.Option("--restarts", help="PGD restarts from new random starts, on the inputs left.")
    ] = 1,
    queries: Annotated[
        int, typer.Option("--queries", help="Square Attack's query budget per input (AutoAttack: 5000).")
    ] = 5000,
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
    """Attack one model and record its rows in results/robustness (and its per-input worst case)."""
    from .evaluate.attacks import AttackSettings, attack_model

    def run():
        check_positive_int(restarts, "--restarts")
        check_positive_int(queries, "--queries")
        return attack_model(
            model=model,
            dataset=dataset,
            attacks=attacks.split(","),
            eps=_float_list(eps, "--eps") if eps is not None else None,
            norm=norm,
            settings=AttackSettings(pgd_restarts=restarts, square_queries=queries),
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
def tables_cmd(
    results_dir: ResultsDir = Path("results"), runs_dir: RunsDir = Path("runs"), quiet: Quiet = False
) -> None:
    """Rebuild every table in results/ from the recorded rows; one line says what was rebuilt
    (`defdistill show TABLE` prints one). Derived rows (accuracy gap, worst case) missing or
    stale are recomputed from the runs and the attack records first; records of weights a run no
    longer has are left out, one line per group."""
    from .store.tables import describe_stale
    from .studies.derive import derive

    derived = _call(derive, results_dir, runs_dir)
    _notes(describe_stale(derived.build.stale))
    restored = [
        f"{count} {what}"
        for count, what in ((derived.accuracy_gap, "accuracy-gap"), (derived.worst_case, "worst-case"))
        if count
    ]
    if restored:
        out.print(f"recomputed {' and '.join(restored)} rows from the primary data", highlight=False)
    frames = derived.build.frames
    summary = ", ".join(f"{name} ({len(frame)} rows)" for name, frame in frames.items()) or "no records yet"
    out.print(f"rebuilt {summary} in {results_dir}", highlight=False, soft_wrap=True)


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command("show")
def show_cmd(
    table: Annotated[
        str,
        typer.Argument(
            help="robustness, accuracy_gap, worst_case, diagnostics, privacy or compression.",
            show_default=False,
        ),
    ],
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only these datasets (a,b).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only these runs (a,b).")] = None,
    attack: Annotated[str | None, typer.Option("--attack", help="Only these attacks (a,b).")] = None,
    eps: Annotated[str | None, typer.Option("--eps", help="Only these L-inf budgets (0.1,0.2).")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table (aligned; one record per block when too wide for the terminal), md or csv "
            "(every column).",
        ),
    ] = "table",
    results_dir: ResultsDir = Path("results"),
) -> None:
    """Print one table of results/, filtered; names and numbers are never cut."""
    from .store.query import select_rows
    from .store.render import check_format, display_columns, render_frame

    def run() -> str:
        check_format(fmt)
        budgets = _float_list(eps, "--eps") if eps is not None else None
        frame = select_rows(
            results_dir,
            table,
            dataset=_names(dataset),
            model=_names(model),
            attack=_names(attack),
            eps=budgets,
        )
        if fmt == "table":
            frame = frame[display_columns(table, frame)]
        return render_frame(frame, fmt, out.width if out.is_terminal else None)

    _print_text(_call(run))


@app.command("demo")
def demo_cmd(
    T: Annotated[float, typer.Option("--T", help="Distillation temperature.")] = 100.0,
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Attack the first n test inputs (default: 120 in the demo).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Processes attacking the models at once.")] = 2,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: Annotated[
        Path,
        typer.Option(
            "--results-dir",
            help="Where tables are written (the demo's own folder, not the reference results/).",
        ),
    ] = DEMO_RESULTS_DIR,
    data_dir: DataDir = Path("data"),
    download: Download = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The whole pipeline: teachers at T=1 and T, student at T, every attack, tables; the answer
    on one screen and summary.png."""
    from .studies.demo import DEMO_N, run_demo

    _fetch(download, dataset, data_dir)
    report = _call(
        run_demo,
        dataset=dataset,
        T=T,
        epochs=epochs,
        n=DEMO_N if n is None else n,
        jobs=jobs,
        seed=seed,
        runs_dir=runs_dir,
        results_dir=results_dir,
        data_dir=data_dir,
        device=device,
        progress=_reporter(quiet),
    )
    _notes(report.notes)
    from .report import SUMMARY_FIGURE, plot_demo_summary

    models = [path.name for path in report.runs]
    figure = _call(plot_demo_summary, report.tables, dataset, models, results_dir / SUMMARY_FIGURE)
    if not quiet:
        from .studies.summary import demo_summary

        text = demo_summary(
            report.tables, dataset, models, accuracy=report.accuracy, results_dir=results_dir, figure=figure
        )
        _print_text(text + "\n")
    out.print(
        f"demo on {dataset}: {len(report.runs)} models trained and attacked in {report.seconds:.0f} s; "
        f"tables in {results_dir}",
        highlight=False,
    )


@app.command("defences")
def defences_cmd(
    dataset: Dataset = "digits",
    epochs: Epochs = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Attack the first n test inputs (default: all).")
    ] = None,
    eps: Annotated[
        str, typer.Option("--eps", help="Comma-separated L-inf budgets in [0, 1].")
    ] = "0.05,0.1,0.2,0.3",
    attacks: Annotated[
        str,
        typer.Option(
            "--attacks", help="Comma-separated attacks run on every defence (the diagnosis adds its own)."
        ),
    ] = "fgsm,pgd",
    T: Annotated[float, typer.Option("--T", help="Defensive distillation's temperature.")] = 100.0,
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    download: Download = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Defensive distillation beside PGD-AT, TRADES, ARD and RSLAD, attacked and diagnosed alike.

    Writes results/defences.{csv,md}; finished runs with the same settings are reused."""
    from .studies.defences import run_defences

    def run():
        return run_defences(
            dataset=dataset,
            epochs=epochs,
            n=n,
            eps=_float_list(eps, "--eps"),
            attacks=attacks.split(","),
            T=T,
            seed=seed,
            runs_dir=runs_dir,
            results_dir=results_dir,
            data_dir=data_dir,
            device=device,
            progress=_reporter(quiet),
        )

    _fetch(download, dataset, data_dir)
    report = _call(run)
    mine = report.table[report.table["dataset"] == dataset] if not report.table.empty else report.table
    if not quiet and not mine.empty:  # the terminal gets the headline columns; the files have them all
        robust = [c for c in mine.columns if c.startswith("robust_acc@")]
        _print_frame("defences", mine[["defence", "model", "clean_acc", *robust, "masked", "train_seconds"]])
    _notes(report.notes)
    for diagnosis in report.diagnoses:
        out.print(f"{diagnosis.model_path.name}: {diagnosis.verdict}", highlight=False, soft_wrap=True)
    reused = f", {len(report.reused)} reused" if report.reused else ""
    out.print(
        f"defences on {dataset}: {len(report.runs)} models{reused}, attacked and diagnosed in "
        f"{report.seconds:.0f} s -> {results_dir / 'defences.csv'}",
        highlight=False,
    )


@app.command("privacy")
def privacy_cmd(
    T: Annotated[str, typer.Option("--T", help="Comma-separated temperatures, a student each.")] = "1,10,100",
    shadow: Annotated[
        int | None,
        typer.Option("--shadow", help="Shadow pipelines (offline: default 4, 0: no LiRA; online: 64)."),
    ] = None,
    transfer_set: Annotated[
        str | None,
        typer.Option(
            "--transfer-set",
            help="The students' inputs: public (disjoint from the private data, labels unused) or noise; "
            "online: a comma-separated list of public, private (the teacher's inputs), noise (default all).",
        ),
    ] = None,
    lira: Annotated[
        str,
        typer.Option(
            "--lira",
            help="offline: the private-half study (offline LiRA); online: shadow pipelines on a pool, every "
            "pipeline in turn the target, online and offline LiRA, canaries and DP-SGD teachers.",
        ),
    ] = "offline",
    pool: Annotated[
        int | None, typer.Option("--pool", help="Online: clean pool examples (default 2000; digits 1000).")
    ] = None,
    public: Annotated[
        int | None, typer.Option("--public", help="Online: public examples (default 1000; digits 400).")
    ] = None,
    canary_fraction: Annotated[
        float, typer.Option("--canary-fraction", help="Online: relabelled canaries, as a share of the pool.")
    ] = 0.01,
    dp_epsilon: Annotated[
        str, typer.Option("--dp-epsilon", help="Online: DP-SGD teachers' epsilons (delta 1e-5); '' for none.")
    ] = "1,8",
    dp_T: Annotated[
        str | None, typer.Option("--dp-T", help="Online: the DP teachers' students' T (default --T).")
    ] = None,
    dp_epochs: Annotated[int, typer.Option("--dp-epochs", help="Online: DP-SGD epochs.")] = 30,
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
    if lira == "online":
        _privacy_online(
            dataset, T, shadow, transfer_set, pool, public, canary_fraction, dp_epsilon, dp_T, dp_epochs,
            control or control_only, epochs, seed, runs_dir, results_dir, data_dir, device, quiet,
        )  # fmt: skip
        return
    if lira != "offline":
        _call(_bad_option, f"--lira must be offline or online, got {lira!r}")
    from .studies.privacy import run_privacy

    shadow = 4 if shadow is None else shadow
    transfer_set = transfer_set or "public"

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


def _bad_option(message: str) -> None:
    raise DefdistillError(message)


def _privacy_online(
    dataset: str, T: str, shadow: int | None, transfer_set: str | None, pool: int | None, public: int | None,
    canary_fraction: float, dp_epsilon: str, dp_T: str | None, dp_epochs: int, control: bool,
    epochs: int | None, seed: int, runs_dir: Path, results_dir: Path, data_dir: Path, device: str,
    quiet: bool,
) -> None:  # fmt: skip
    """`privacy --lira online`: parse, run, print the headline rows."""
    from .studies.privacy_online import TRANSFER_SETS, make_config, run_privacy_online

    def run():
        config = make_config(
            dataset, pool=pool, public=public, canary_fraction=canary_fraction,
            shadows=64 if shadow is None else shadow, temperatures=_float_list(T, "--T"),
            transfer_sets=[t.strip() for t in transfer_set.split(",")] if transfer_set else TRANSFER_SETS,
            dp_epsilons=_float_list(dp_epsilon, "--dp-epsilon"),
            dp_temperatures=_float_list(dp_T, "--dp-T") if dp_T else None,
            epochs=50 if epochs is None else epochs, dp_epochs=dp_epochs, seed=seed,
        )  # fmt: skip
        return run_privacy_online(
            config, runs_dir=runs_dir, results_dir=results_dir, data_dir=data_dir, device=device,
            progress=_reporter(quiet),
        )  # fmt: skip

    report = _call(run)
    for row in (r for r in report.rows if r["attack"] == "lira-online"):
        out.print(
            f"{row['model']}: online LiRA AUC {row['auc']:.3f}, TPR@0.1%FPR {row['tpr_at_0_1pct_fpr']:.4f} "
            f"[{row['tpr_at_0_1pct_fpr_lo']:.4f}, {row['tpr_at_0_1pct_fpr_hi']:.4f}], "
            f"test accuracy {row['test_acc']:.4f}",
            highlight=False,
        )
    per = f", {report.seconds_per_pipeline:.1f} s per pipeline" if report.seconds_per_pipeline else ""
    out.print(
        f"privacy (online LiRA) on {dataset}: {report.config.shadows} pipelines ({report.trained} trained now"
        f"{per}) in {report.seconds:.0f} s -> {results_dir / 'privacy.csv'}, "
        + ", ".join(str(f) for f in report.figures),
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


@app.command("gradients")
def gradients_cmd(
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated runs (default: every run of the dataset).")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Use the first n test inputs (default: all).")] = None,
    dataset: Dataset = "digits",
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Papernot et al.'s adversarial-gradient amplitude of each run (softmax, logits) -> results/gradients."""
    from .evaluate.sensitivity import measure_gradients

    rows = _call(
        measure_gradients,
        _names(models),
        dataset=dataset,
        n=n,
        runs_dir=runs_dir,
        results_dir=results_dir,
        data_dir=data_dir,
        device=device,
        progress=_reporter(quiet),
    )
    if not quiet:
        import pandas as pd

        _print_frame("gradients", pd.DataFrame(rows), "gradients")
    plural = "s" if len(rows) != 1 else ""
    out.print(f"{len(rows)} run{plural} measured -> {results_dir / 'gradients.csv'}", highlight=False)


@app.command("report")
def report_cmd(
    results_dir: ResultsDir = Path("results"),
    eps: Annotated[
        float | None,
        typer.Option(
            "--eps", help="L-inf budget of the success-against-T plot (default: the dataset's headline)."
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    doc: Annotated[
        list[Path] | None,
        typer.Option(
            "--doc",
            help="A document whose generated blocks naming this results folder are rewritten from the tables "
            "(repeatable; default: README.md, REPRODUCTION.md and docs/*.md here, when they exist).",
        ),
    ] = None,
) -> None:
    """Plot the tables in results/ (PNG), write results/REPORT.md, and rewrite the docs' generated numbers."""
    from .report import write_report
    from .studies.claims import default_docs

    docs = doc if doc is not None else default_docs(Path("."))
    result = _call(write_report, results_dir, eps=eps, runs_dir=runs_dir, docs=docs)
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
        import pandas as pd

        checks = [
            {
                "check": c.name,
                "value": round(c.value, 3),
                "passed": "yes" if c.passed else "no",
                "detail": c.detail,
            }
            for c in diagnosis.checks
        ]
        _print_frame(f"diagnostics: {diagnosis.model_path.name}", pd.DataFrame(checks), "diagnostics")
    out.print(f"{diagnosis.model_path.name}: {diagnosis.verdict}", highlight=False, soft_wrap=True)


@app.command("audit")
def audit_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="A run (role, name or folder) or a factory: path/to/file.py:function or "
            "package.module:function, returning an nn.Module on [0, 1] images. A factory's code is "
            "imported and run (README, Safety)."
        ),
    ],
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="A safetensors state dict for the factory's module (strict keys)."),
    ] = None,
    norm: Annotated[str, typer.Option("--norm", help="The budget's norm: linf or l2.")] = "linf",
    eps: Annotated[
        str | None,
        typer.Option("--eps", help="Comma-separated budgets (default: the dataset's grid)."),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Audit the first n test inputs.")] = 500,
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            help="standard (the field's: APGD 100 steps, Square 5000 queries, 20 EOT draws) or fast.",
        ),
    ] = "standard",
    name: Annotated[
        str | None,
        typer.Option("--name", help="The audit's folder under results/audit (default: the run or factory)."),
    ] = None,
    dataset: Dataset = "digits",
    seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"),
    results_dir: ResultsDir = Path("results"),
    data_dir: DataDir = Path("data"),
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Audit any model: the full evaluation, a calibrated gradient-masking verdict, and
    results/audit/NAME/audit.{json,md}."""
    from .studies.audit import audit_budgets, audit_model

    def run():
        return audit_model(
            model, weights=weights, dataset=dataset, norm=norm,
            eps=_float_list(eps, "--eps") if eps is not None else None, n=n, seed=seed, name=name,
            budgets=audit_budgets(budget), runs_dir=runs_dir, results_dir=results_dir, data_dir=data_dir,
            device=device, progress=_reporter(quiet),
        )  # fmt: skip

    result, folder = _call(run)
    out.print(f"{result.model}: {result.verdict}: {result.reason}.", highlight=False, soft_wrap=True)
    if not quiet:
        out.print(
            f"clean accuracy {result.clean_accuracy:.3f}, n = {result.n}, {result.norm}; outputs "
            f"{result.outputs}, gradients {result.gradients}, "
            f"randomised {'yes' if result.randomized else 'no'}",
            highlight=False,
        )
        for test in result.tests:
            k = f"{test['eps']:g}"
            nlo, nhi = result.naive_robust_accuracy_ci[k]
            lo, hi = result.robust_accuracy_ci[k]
            out.print(
                f"  eps {k:>6}: naive {result.naive_robust_accuracy[k]:.3f} [{nlo:.3f}, {nhi:.3f}]   "
                f"worst case {result.robust_accuracy[k]:.3f} [{lo:.3f}, {hi:.3f}]   "
                f"gap {test['gap']:.3f} (Holm p {test['p_holm']:.2g})",
                highlight=False,
            )
    out.print(f"-> {folder / 'audit.json'}, {folder / 'audit.md'}", highlight=False, soft_wrap=True)


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
    run()
