"""Sweeps: one YAML spec, run here in parallel processes or on a Slurm cluster through submitit.

A spec names a dataset, the temperatures and the attacks (see `SweepSpec`). Each temperature is
one configuration: the teacher trained at T, the student distilled from it at T, and every
attack on both (Papernot et al. 2016, Figure 5 and Table 4, with the attacks that expose
their result). A configuration does only what is missing: a run whose folder holds a finished
model is not trained again, and an attack whose rows are recorded is not run again, so an
interrupted sweep, or one whose Slurm jobs partly failed, is finished by running it again.
Results merge through the same locked, atomic table writers the commands use.

Executors: `local` runs `max_parallel` configurations at once in processes on this machine;
`slurm` submits one array job (one task per pending configuration) through submitit and
returns; `submitit-local` and `submitit-debug` run the same submitit job path here (in
subprocesses, or in this process), which is how the Slurm path is tested without a cluster.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..core.progress import SILENT, ProgressReporter
from ..errors import DefdistillError
from ..store.runs import META_FILE, format_T, read_meta, run_dir, run_name

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")
SWEEPS_DIR = "sweeps"
SURROGATE = "teacher-T1"  # the transfer attack crafts on the undefended teacher


@dataclass(frozen=True)
class SlurmSettings:
    """Resources of each array task; anything else sbatch takes goes in `additional`."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    timeout_min: int = 120
    gpus_per_node: int = 1
    cpus_per_task: int = 4
    mem_gb: float = 16
    setup: tuple[str, ...] = ()  # shell lines before each task: module load, source a venv
    additional: dict[str, Any] = field(default_factory=dict)  # e.g. {mail-type: END}


@dataclass(frozen=True)
class SweepSpec:
    """A sweep definition. Paths are relative to the directory the sweep is started from."""

    name: str
    dataset: str = "digits"
    temperatures: tuple[float, ...] = (1, 2, 5, 10, 20, 30, 40, 50, 100)
    students: bool = True  # distil a student at every T from the teacher trained at that T
    seed: int = 0
    epochs: int | None = None  # default: the dataset's recipe
    recipe: str | None = None
    attacks: tuple[str, ...] = ("fgsm", "pgd", "cw", "pgd-margin", "pgd-t", "transfer", "hsj")
    eps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    n: int | None = None  # attack the first n test inputs (default: all)
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = 0
    runs_dir: str = "runs"
    results_dir: str = "results"
    data_dir: str = "data"
    max_parallel: int = 1
    report: bool = True  # write REPORT.md once every configuration is finished
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


@dataclass(frozen=True)
class SweepConfig:
    """One configuration of a sweep: everything a process (here or on a node) needs to run it."""

    sweep: str
    dataset: str
    T: float
    students: bool
    seed: int
    epochs: int | None
    recipe: str | None
    attacks: tuple[str, ...]
    eps: tuple[float, ...]
    n: int | None
    device: str
    amp: str
    num_workers: int
    runs_dir: str
    results_dir: str
    data_dir: str

    @property
    def id(self) -> str:
        return f"{self.dataset}-T{format_T(self.T)}"

    @property
    def models(self) -> list[str]:
        return [run_name("teacher", self.T)] + ([run_name("student", self.T)] if self.students else [])


@dataclass
class ConfigOutcome:
    """What one configuration did: the steps run and skipped, or the error that stopped it."""

    config: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """The outcome of `run_sweep`."""

    spec: SweepSpec
    executor: str
    configs: list[str]
    already_done: list[str]
    outcomes: list[ConfigOutcome] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # Slurm: submitted, not waited for
    log_dir: Path | None = None
    report: Path | None = None

    @property
    def failed(self) -> list[ConfigOutcome]:
        return [o for o in self.outcomes if o.error]


# --- the spec -----------------------------------------------------------------------------


def _problem(path: Path, message: str) -> DefdistillError:
    return DefdistillError(f"{path}: {message}")


def _check_number_list(path: Path, key: str, value: Any, low: float, high: float | None) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= low
        or (high is not None and v > high)
        for v in values
    ):  # fmt: skip
        bound = f"in ({low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise _problem(path, f"{key} must be a number or a list of numbers {bound}, got {value!r}")
    return tuple(float(v) for v in values)


def _check_int(path: Path, key: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _problem(path, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_names(path: Path, key: str, value: Any, known: Sequence[str]) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or any(not isinstance(v, str) for v in values):
        raise _problem(path, f"{key} must be a name or a list of names, got {value!r}")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise _problem(path, f"unknown {key} {', '.join(unknown)}: choose from {', '.join(known)}")
    return tuple(values)


def parse_spec(data: Any, path: Path = Path("spec")) -> SweepSpec:
    """Validate a spec's parsed YAML (a mapping) and return it; every problem is one line."""
    from ..core.runtime import DEVICE_CHOICES
    from ..data.registry import DATASETS
    from ..evaluate.attacks import ATTACKS
    from ..train.loop import AMP_CHOICES, RECIPES

    if not isinstance(data, dict):
        raise _problem(path, "a sweep spec is a YAML mapping (name: ..., dataset: ..., temperatures: [...])")
    allowed = {f.name for f in fields(SweepSpec)}
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise _problem(path, f"unknown key {', '.join(unknown)}: the keys are {', '.join(sorted(allowed))}")
    values = dict(data)
    name = values.get("name", path.stem)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise _problem(path, f"name must be a plain name (it names results/{SWEEPS_DIR}/NAME), got {name!r}")
    values["name"] = name
    if "dataset" in values:
        values["dataset"] = _check_names(path, "dataset", values["dataset"], list(DATASETS))[0]
    if "temperatures" in values:
        values["temperatures"] = _check_number_list(path, "temperatures", values["temperatures"], 0, None)
    if "eps" in values:
        values["eps"] = _check_number_list(path, "eps", values["eps"], 0, 1)
    if "attacks" in values:
        values["attacks"] = _check_names(path, "attacks", values["attacks"], list(ATTACKS))
    for key, minimum, optional in (
        ("seed", 0, False), ("epochs", 1, True), ("n", 1, True), ("num_workers", 0, False),
        ("max_parallel", 1, False),
    ):  # fmt: skip
        if key in values:
            values[key] = _check_int(path, key, values[key], minimum, optional)
    for key, choices in (("device", DEVICE_CHOICES), ("amp", AMP_CHOICES)):
        if key in values:
            values[key] = _check_names(path, key, values[key], choices)[0]
    if values.get("recipe") is not None:
        values["recipe"] = _check_names(path, "recipe", values["recipe"], list(RECIPES))[0]
    for key in ("students", "report"):
        if key in values and not isinstance(values[key], bool):
            raise _problem(path, f"{key} must be true or false, got {values[key]!r}")
    for key in ("runs_dir", "results_dir", "data_dir"):
        if key in values and not (isinstance(values[key], str) and values[key]):
            raise _problem(path, f"{key} must be a path, got {values[key]!r}")
    values["slurm"] = _parse_slurm(path, values.get("slurm") or {})
    return SweepSpec(**values)


def _parse_slurm(path: Path, data: Any) -> SlurmSettings:
    if not isinstance(data, dict):
        raise _problem(path, f"slurm must be a mapping (partition: ..., timeout_min: ...), got {data!r}")
    allowed = {f.name for f in fields(SlurmSettings)}
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise _problem(
            path, f"unknown slurm key {', '.join(unknown)}: the keys are {', '.join(sorted(allowed))}"
        )
    values = dict(data)
    for key in ("partition", "account", "qos", "constraint"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise _problem(path, f"slurm.{key} must be a name, got {values[key]!r}")
    for key, minimum in (("timeout_min", 1), ("gpus_per_node", 0), ("cpus_per_task", 1)):
        if key in values:
            _check_int(path, f"slurm.{key}", values[key], minimum)
    if "mem_gb" in values:
        _check_number_list(path, "slurm.mem_gb", values["mem_gb"], 0, None)
    setup = values.get("setup", [])
    if not isinstance(setup, list) or any(not isinstance(line, str) for line in setup):
        raise _problem(path, f"slurm.setup must be a list of shell lines, got {setup!r}")
    values["setup"] = tuple(setup)
    if not isinstance(values.get("additional", {}), dict):
        raise _problem(path, "slurm.additional must be a mapping of sbatch options")
    return SlurmSettings(**values)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML sweep spec."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefdistillError(f"no sweep spec at {path}: see experiments/sweeps/ for examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefdistillError(f"cannot read sweep spec {path} ({exc})") from None
    try:
        data = yaml.safe_load(text)  # safe_load: a spec is data, never code
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DefdistillError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, path)


def configurations(spec: SweepSpec, base: Path | None = None) -> list[SweepConfig]:
    """One configuration per temperature, with the spec's paths made absolute (against `base`,
    the current directory by default) so that a Slurm node finds them wherever it starts."""
    base = Path.cwd() if base is None else base
    paths = {k: str((base / getattr(spec, k)).resolve()) for k in ("runs_dir", "results_dir", "data_dir")}
    temperatures = list(dict.fromkeys(spec.temperatures))  # a repeated T is one configuration
    return [
        SweepConfig(
            spec.name,
            spec.dataset,
            T,
            spec.students,
            spec.seed,
            spec.epochs,
            spec.recipe,
            spec.attacks,
            spec.eps,
            spec.n,
            spec.device,
            spec.amp,
            spec.num_workers,
            **paths,
        )  # fmt: skip
        for T in temperatures
    ]


# --- one configuration ------------------------------------------------------------------------


def _expected_epochs(config: SweepConfig) -> int:
    from ..train.loop import make_recipe

    return make_recipe(config.dataset, config.epochs, recipe=config.recipe).epochs


def _trained(config: SweepConfig, name: str) -> bool:
    """Whether `name` is a finished run made with this sweep's seed and epochs (an error if it
    was made with others: the sweep would otherwise mix runs of two settings in one table)."""
    folder = run_dir(config.runs_dir, config.dataset, name)
    if not (folder / META_FILE).is_file():
        return False
    meta = read_meta(folder)  # a damaged sidecar is an error that says so
    want = {"seed": config.seed, "epochs": _expected_epochs(config)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise DefdistillError(
                f"{folder} was trained with {key}={meta.get(key)!r}, the sweep asks for "
                f"{key}={value!r}: remove that run or give the sweep another runs_dir"
            )
    return True


def _missing_attacks(config: SweepConfig, model: str) -> list[str]:
    """The attacks on `model` without a recorded row for every budget on the spec's inputs (a
    row measured on another number of inputs is measured again, and its record replaced)."""
    from ..checks import check_eps
    from ..evaluate.attacks import ATTACKS, AttackSettings
    from ..store.tables import read_record

    n = _expected_n(config)
    missing = []
    for attack in config.attacks:
        spec = ATTACKS[attack]
        budgets = check_eps(config.eps) if spec.bounded else [None]
        keys = [
            {"dataset": config.dataset, "model": model, "attack": attack, "norm": spec.norm, "eps": eps}
            for eps in budgets
        ]
        records = [read_record(config.results_dir, "robustness", key) for key in keys]
        want = min(n, AttackSettings().decision_n) if spec.subset else n  # hsj: a subset
        if any(r is None or r.get("n") != want for r in records):
            missing.append(attack)
    return missing


@functools.lru_cache(maxsize=16)
def _test_size(dataset: str, data_dir: str) -> int:
    from ..data.registry import load_dataset

    return len(load_dataset(dataset, "test", data_dir)[1])


def _expected_n(config: SweepConfig) -> int:
    """The number of test inputs the attacks see: the spec's n, at most the test split."""
    size = _test_size(config.dataset, config.data_dir)
    return size if config.n is None else min(config.n, size)


def pending_steps(config: SweepConfig) -> list[str]:
    """What is left of a configuration (empty: finished), judged from the runs and records."""
    steps = []
    for model in config.models:
        if not _trained(config, model):
            steps.append(f"train {model}")
            steps.extend(f"{attack} on {model}" for attack in config.attacks)
            continue
        steps.extend(f"{attack} on {model}" for attack in _missing_attacks(config, model))
    return steps


def _train_once(config: SweepConfig, name: str, train: Callable[[], Any], outcome: ConfigOutcome) -> None:
    """Train `name` unless it is finished; the lock makes a second process that needs the same
    run (the transfer surrogate) wait for the first instead of training it twice."""
    folder = run_dir(config.runs_dir, config.dataset, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{name}.lock")):
        if _trained(config, name):
            outcome.skipped.append(f"train {name}")
            return
        train()
        outcome.done.append(f"train {name}")


def run_configuration(config: SweepConfig, progress: ProgressReporter = SILENT) -> ConfigOutcome:
    """Run what is missing of one configuration; errors are returned, not raised, so one bad
    configuration does not stop the others (the executor reports them at the end)."""
    from ..evaluate.attacks import attack_model
    from ..train.distill import distill
    from ..train.loop import train_teacher

    started = time.perf_counter()
    outcome = ConfigOutcome(config.id)
    common = {
        "dataset": config.dataset, "seed": config.seed, "runs_dir": config.runs_dir,
        "data_dir": config.data_dir, "device": config.device, "progress": progress,
    }  # fmt: skip
    # resume: a run a preempted or timed-out job left half-trained continues from its checkpoint
    training = {
        "epochs": config.epochs, "recipe": config.recipe, "amp": config.amp,
        "num_workers": config.num_workers, "resume": True,
    }  # fmt: skip
    try:
        teacher, student = run_name("teacher", config.T), run_name("student", config.T)
        _train_once(config, teacher, lambda: train_teacher(T=config.T, **common, **training), outcome)
        if config.students:
            distil = lambda: distill(  # noqa: E731
                T=config.T, teacher=teacher, results_dir=config.results_dir, **common, **training
            )
            _train_once(config, student, distil, outcome)
        if any(a == "transfer" for a in config.attacks) and config.T != 1:
            _train_once(config, SURROGATE, lambda: train_teacher(T=1.0, **common, **training), outcome)
        for model in config.models:
            missing = _missing_attacks(config, model)
            outcome.skipped.extend(f"{a} on {model}" for a in config.attacks if a not in missing)
            if missing:
                attack_model(
                    model=model, attacks=missing, eps=list(config.eps), n=config.n,
                    results_dir=config.results_dir, surrogate=SURROGATE, **common,
                )  # fmt: skip
                outcome.done.extend(f"{a} on {model}" for a in missing)
    except DefdistillError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # a worker's unexpected failure is reported with the others
        outcome.error = f"unexpected {type(exc).__name__}: {exc}"
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


# --- executors ----------------------------------------------------------------------------------


def _run_local(
    configs: list[SweepConfig], max_parallel: int, progress: ProgressReporter
) -> list[ConfigOutcome]:
    """Run configurations here, `max_parallel` processes at a time (in this process when 1)."""
    outcomes: list[ConfigOutcome] = []
    with progress.task("sweep", len(configs)) as advance:
        if max_parallel == 1 or len(configs) == 1:
            for config in configs:
                outcomes.append(run_configuration(config))
                advance(1)
            return outcomes
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=max_parallel, mp_context=context) as pool:
            futures = [pool.submit(run_configuration, config) for config in configs]
            for future in concurrent.futures.as_completed(futures):
                outcomes.append(future.result())
                advance(1)
    order = {c.id: i for i, c in enumerate(configs)}
    return sorted(outcomes, key=lambda o: order[o.config])


def submitit_executor(spec: SweepSpec, cluster: str, folder: Path, max_parallel: int):
    """A submitit executor for `cluster` (slurm, local or debug) with the spec's resources."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as exc:  # SlurmExecutor: no srun here
        raise DefdistillError(
            f"cannot submit to Slurm from this machine ({exc}): run the sweep on a cluster login node, "
            "or use --executor local"
        ) from None
    s = spec.slurm
    params: dict[str, Any] = {
        "name": f"defdistill-{spec.name}",
        "timeout_min": s.timeout_min,
        "gpus_per_node": s.gpus_per_node if cluster == "slurm" else 0,
        "cpus_per_task": s.cpus_per_task,
        "mem_gb": s.mem_gb,
        "slurm_array_parallelism": max_parallel,
    }
    if cluster == "slurm":
        params.update(
            {
                f"slurm_{k}": getattr(s, k)
                for k in ("partition", "account", "qos", "constraint")
                if getattr(s, k)
            }
        )
        if s.setup:
            params["slurm_setup"] = list(s.setup)
        if s.additional:
            params["slurm_additional_parameters"] = dict(s.additional)
    executor.update_parameters(**params)
    return executor


def _run_submitit(
    spec: SweepSpec,
    configs: list[SweepConfig],
    cluster: str,
    folder: Path,
    max_parallel: int,
    wait: bool,
    progress: ProgressReporter,
) -> tuple[list[ConfigOutcome], list[str]]:
    """Submit one job per configuration as an array; wait for them unless on Slurm without `wait`."""
    executor = submitit_executor(spec, cluster, folder, max_parallel)
    with executor.batch():
        jobs = [executor.submit(run_configuration, config) for config in configs]
    job_ids = [str(job.job_id) for job in jobs]
    if not wait:
        return [], job_ids
    outcomes = []
    with progress.task(f"sweep ({cluster})", len(jobs)) as advance:
        for config, job in zip(configs, jobs, strict=True):
            try:
                outcomes.append(job.result())
            except Exception as exc:  # the job died (timeout, node failure): its log says why
                first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                outcomes.append(ConfigOutcome(config.id, error=f"job {job.job_id} failed: {first[0]}"))
            advance(1)
    return outcomes, job_ids


def run_sweep(
    spec: SweepSpec | str | Path,
    executor: str = "local",
    max_parallel: int | None = None,
    wait: bool | None = None,
    progress: ProgressReporter = SILENT,
) -> SweepResult:
    """Run (or, on Slurm, submit) every configuration of `spec` that is not finished.

    `max_parallel` overrides the spec's (processes here, or the Slurm array's parallelism).
    `wait` (Slurm only; default False) blocks until the jobs end. Tables are rebuilt, and
    REPORT.md written when the spec asks for it, once nothing is left to run.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if executor not in EXECUTORS:
        raise DefdistillError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    parallel = spec.max_parallel if max_parallel is None else max_parallel
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise DefdistillError(f"--max-parallel must be a positive integer, got {parallel}")
    wait = executor != "slurm" if wait is None else wait
    from ..core.fileio import ensure_writable_dir
    from ..core.runtime import resolve_device

    configs = configurations(spec)
    if executor in ("local", "submitit-local", "submitit-debug"):
        resolve_device(spec.device)  # fails now, not once per configuration
    results_dir = Path(configs[0].results_dir)
    ensure_writable_dir(results_dir, "results_dir")
    ensure_writable_dir(Path(configs[0].runs_dir), "runs_dir")
    already = [c.id for c in configs if not pending_steps(c)]
    todo = [c for c in configs if c.id not in already]
    result = SweepResult(spec, executor, [c.id for c in configs], already)
    if todo:
        if executor == "local":
            result.outcomes = _run_local(todo, parallel, progress)
        else:
            cluster = executor.removeprefix("submitit-")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = results_dir / SWEEPS_DIR / spec.name / f"{cluster}-{stamp}"
            result.log_dir = folder
            result.outcomes, result.job_ids = _run_submitit(
                spec, todo, cluster, folder, parallel, wait, progress
            )
    finished = not result.failed and (not todo or result.outcomes)
    if finished:
        from ..store.tables import rebuild_tables, refresh_accuracy_baselines

        # students recorded before teacher-T1 finished (parallel configurations) get their baseline now
        refresh_accuracy_baselines(results_dir, configs[0].runs_dir)
        rebuild_tables(results_dir)
        if spec.report:
            from ..report import write_report

            result.report = write_report(results_dir, datasets=[spec.dataset]).report
    _write_log(results_dir, result)
    return result


def _write_log(results_dir: Path, result: SweepResult) -> None:
    """Keep the last invocation's outcome beside the results (what ran, what failed, job ids)."""
    from ..core.fileio import atomic_write_json

    log = {
        "spec": asdict(result.spec),
        "executor": result.executor,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "already_done": result.already_done,
        "outcomes": [asdict(o) for o in result.outcomes],
        "job_ids": result.job_ids,
        "log_dir": str(result.log_dir.relative_to(results_dir)) if result.log_dir else None,
    }
    atomic_write_json(results_dir / SWEEPS_DIR / result.spec.name / "last.json", log)
