"""A sweep's YAML spec: what it holds, and its validation (every problem is one line).

`study: robustness` (the default): a teacher trained at every temperature, a student distilled
from it at T (`students`: all temperatures, none, or a list of them), further students
(`variants`: other methods, architectures, transfer sets, born-again generations) and every
attack in `attacks` on each, at the budgets `eps` (default: the dataset's grid, DatasetSpec.eps_grid).
`study: privacy`: the membership-inference study (studies/privacy.py) once per transfer set, with
`shadows` shadow pipelines. The folders, device and executor settings are shared.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import check_nesting
from ..core.workspace import Workspace
from ..errors import DefdistillError
from ..store.runs import run_name

SWEEPS_DIR = "sweeps"
STUDIES = ("robustness", "privacy")
# Every attack of the registry that a robustness sweep runs by default: gradient, adaptive,
# score-based, decision-based, transfer, noise floor and saliency (L0) attacks.
SWEEP_ATTACKS = (
    "fgsm", "pgd", "pgd-margin", "pgd-t", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack", "noise",
    "transfer", "cw", "hsj", "jsma", "jsma-z",
)  # fmt: skip
PRIVACY_TRANSFER_SETS = ("public", "noise")  # studies.privacy.TRANSFER_SETS
# Keys that only one study reads: given to the other, they are an error, not silently ignored.
STUDY_KEYS = {
    "robustness": (
        "students",
        "variants",
        "recipe",
        "attacks",
        "eps",
        "n",
        "attack_n",
        "gradients",
        "amp",
        "num_workers",
    ),
    "privacy": ("shadows", "transfer_sets"),
}
VARIANT_NAME = re.compile(r"^[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*$")


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
class Variant:
    """A further student distilled from teacher-T<T> at T, saved as `student-T<T>-<name>`
    (`-gen1` ... `-genN` with born-again generations); the fields are `defdistill distill`'s."""

    name: str
    method: str | None = None  # default: Papernot's soft labels
    student_arch: str | None = None  # default: the teacher's
    transfer_set: str = "train"
    generations: int = 1

    def run_names(self, T: float) -> list[str]:
        base = f"{run_name('student', T)}-{self.name}"
        if self.generations == 1:
            return [base]
        return [f"{base}-gen{g}" for g in range(1, self.generations + 1)]


@dataclass(frozen=True)
class SweepSpec:
    """A sweep definition. Paths are relative to the directory the sweep is started from."""

    name: str
    study: str = "robustness"
    dataset: str = "digits"
    temperatures: tuple[float, ...] = (1, 2, 5, 10, 20, 30, 40, 50, 100)
    # robustness: distil a student at every T (True), at none, or at the listed temperatures
    students: bool | tuple[float, ...] = True
    variants: tuple[Variant, ...] = ()
    seed: int = 0
    epochs: int | None = None  # default: the dataset's recipe
    recipe: str | None = None
    attacks: tuple[str, ...] = SWEEP_ATTACKS
    eps: tuple[float, ...] | None = None  # L-inf budgets; default: the dataset's grid
    n: int | None = None  # attack the first n test inputs (default: all)
    # fewer inputs for the listed attacks (the first k of the same n): the saliency attacks
    # cost about as much per input as all the others together
    attack_n: dict[str, int] = field(default_factory=dict)
    gradients: bool = True  # Papernot et al.'s gradient amplitude of every model (evaluate/sensitivity.py)
    shadows: int = 4  # privacy: shadow pipelines for LiRA (0: the threshold attacks only)
    transfer_sets: tuple[str, ...] = ("public",)  # privacy: one configuration each
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = 0
    runs_dir: str = "runs"
    results_dir: str = "results"
    data_dir: str = "data"
    max_parallel: int = 1
    report: bool = True  # write REPORT.md once every configuration is finished
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def workspace(self, base: Path | None = None) -> Workspace:
        """The spec's folders made absolute (against `base`, the current directory by default),
        so that a process started elsewhere, a Slurm node, finds them."""
        folders = Workspace(Path(self.runs_dir), Path(self.results_dir), Path(self.data_dir), self.device)
        return folders.resolved(base)

    def students_at(self, T: float) -> bool:
        return self.students if isinstance(self.students, bool) else T in self.students


# --- validation -------------------------------------------------------------------------------


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


def _check_int(path: Path, key: str, value: Any, minimum: int) -> int:
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


def _check_keys(path: Path, data: dict[Any, Any], allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise _problem(
            path, f"unknown {what} {', '.join(unknown)}: the keys are {', '.join(sorted(allowed))}"
        )


def parse_spec(data: Any, *, path: Path = Path("spec")) -> SweepSpec:
    """Validate a spec's parsed YAML (a mapping) and return it; every problem is one line."""
    if not isinstance(data, dict):
        raise _problem(path, "a sweep spec is a YAML mapping (name: ..., dataset: ..., temperatures: [...])")
    _check_keys(path, data, [f.name for f in fields(SweepSpec)], "key")
    values = dict(data)
    values["name"] = _parse_name(path, values.get("name", path.stem))
    study = values["study"] = _check_names(path, "study", values.get("study", "robustness"), STUDIES)[0]
    for other, keys in STUDY_KEYS.items():
        given = [k for k in keys if k in values and other != study]
        if given:
            raise _problem(
                path, f"{', '.join(given)} does not apply to study: {study} (only to study: {other})"
            )
    _parse_common(path, values)
    _parse_robustness(path, values)
    _parse_privacy(path, values)
    values["slurm"] = _parse_slurm(path, values.get("slurm") or {})
    return SweepSpec(**values)


def _parse_name(path: Path, name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise _problem(path, f"name must be a plain name (it names results/{SWEEPS_DIR}/NAME), got {name!r}")
    return name


def _parse_common(path: Path, values: dict[str, Any]) -> None:
    """The keys both studies read, checked in place."""
    from ..core.runtime import DEVICE_CHOICES
    from ..data.registry import DATASETS

    if "dataset" in values:
        values["dataset"] = _check_names(path, "dataset", values["dataset"], list(DATASETS))[0]
    if "temperatures" in values:
        values["temperatures"] = _check_number_list(path, "temperatures", values["temperatures"], 0, None)
    for key, minimum in (("seed", 0), ("max_parallel", 1)):
        if key in values:
            values[key] = _check_int(path, key, values[key], minimum)
    if values.get("epochs") is not None:
        values["epochs"] = _check_int(path, "epochs", values["epochs"], 1)
    if "device" in values:
        values["device"] = _check_names(path, "device", values["device"], DEVICE_CHOICES)[0]
    if "report" in values and not isinstance(values["report"], bool):
        raise _problem(path, f"report must be true or false, got {values['report']!r}")
    for key in ("runs_dir", "results_dir", "data_dir"):
        if key in values and not (isinstance(values[key], str) and values[key]):
            raise _problem(path, f"{key} must be a path, got {values[key]!r}")


def _parse_robustness(path: Path, values: dict[str, Any]) -> None:
    """The robustness study's keys, checked in place."""
    from ..evaluate.attacks import ATTACKS
    from ..train.loop import AMP_CHOICES, RECIPES

    if "eps" in values and values["eps"] is not None:
        values["eps"] = _check_number_list(path, "eps", values["eps"], 0, 1)
    if "attacks" in values:
        values["attacks"] = _check_names(path, "attacks", values["attacks"], list(ATTACKS))
    if values.get("n") is not None:
        values["n"] = _check_int(path, "n", values["n"], 1)
    if "num_workers" in values:
        values["num_workers"] = _check_int(path, "num_workers", values["num_workers"], 0)
    if "gradients" in values and not isinstance(values["gradients"], bool):
        raise _problem(path, f"gradients must be true or false, got {values['gradients']!r}")
    if values.get("attack_n") is not None:
        values["attack_n"] = _parse_attack_n(path, values["attack_n"], values.get("attacks", SWEEP_ATTACKS))
    else:
        values.pop("attack_n", None)
    if "amp" in values:
        values["amp"] = _check_names(path, "amp", values["amp"], AMP_CHOICES)[0]
    if values.get("recipe") is not None:
        values["recipe"] = _check_names(path, "recipe", values["recipe"], list(RECIPES))[0]
    if "students" in values:
        values["students"] = _parse_students(path, values["students"], values.get("temperatures"))
    if "variants" in values:
        values["variants"] = _parse_variants(path, values["variants"])


def _parse_attack_n(path: Path, value: Any, attacks: Sequence[str]) -> dict[str, int]:
    if not isinstance(value, dict):
        raise _problem(path, f"attack_n must be a mapping of attack names to input counts, got {value!r}")
    stray = [str(a) for a in value if a not in attacks]
    if stray:
        raise _problem(path, f"attack_n names {', '.join(stray)}, which attacks does not list")
    return {str(a): _check_int(path, f"attack_n.{a}", k, 1) for a, k in value.items()}


def _parse_students(
    path: Path, value: Any, temperatures: tuple[float, ...] | None
) -> bool | tuple[float, ...]:
    if isinstance(value, bool):
        return value
    listed = _check_number_list(path, "students", value, 0, None)
    known = temperatures if temperatures is not None else SweepSpec.temperatures
    stray = [f"{T:g}" for T in listed if T not in known]
    if stray:
        raise _problem(path, f"students lists T={', '.join(stray)}, which temperatures does not")
    return listed


def _parse_variants(path: Path, value: Any) -> tuple[Variant, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _problem(path, f"variants must be a list of mappings (name: ..., method: ...), got {value!r}")
    variants = tuple(_parse_variant(path, item) for item in value)
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _problem(path, f"variant names must differ: {', '.join(repeated)} is given twice")
    return variants


def _parse_variant(path: Path, data: Any) -> Variant:
    from ..models import ARCHITECTURES
    from ..train.distill import TRANSFER_SETS
    from ..train.losses import METHODS

    if not isinstance(data, dict):
        raise _problem(path, f"a variant is a mapping (name: ..., method: ...), got {data!r}")
    _check_keys(path, data, [f.name for f in fields(Variant)], "variant key")
    values = dict(data)
    name = values.get("name")
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise _problem(path, f"a variant needs a name of letters, digits and . _ + = -, got {name!r}")
    where = f"variants.{name}."
    if values.get("method") is not None:
        values["method"] = _check_names(path, f"{where}method", values["method"], list(METHODS))[0]
    if values.get("student_arch") is not None:
        arch = values["student_arch"]
        values["student_arch"] = _check_names(path, f"{where}student_arch", arch, list(ARCHITECTURES))[0]
    if "transfer_set" in values:
        ts = values["transfer_set"]
        values["transfer_set"] = _check_names(path, f"{where}transfer_set", ts, TRANSFER_SETS)[0]
    if "generations" in values:
        values["generations"] = _check_int(path, f"{where}generations", values["generations"], 1)
    return Variant(**values)


def _parse_privacy(path: Path, values: dict[str, Any]) -> None:
    """The privacy study's keys, checked in place."""
    if "shadows" in values:
        shadows = values["shadows"]
        if isinstance(shadows, bool) or not isinstance(shadows, int) or shadows < 0 or shadows == 1:
            # checks.check_shadows: LiRA estimates a variance over the shadows
            raise _problem(path, f"shadows must be 0 (no LiRA) or an integer >= 2, got {shadows!r}")
    if "transfer_sets" in values:
        sets = _check_names(path, "transfer_sets", values["transfer_sets"], PRIVACY_TRANSFER_SETS)
        values["transfer_sets"] = tuple(dict.fromkeys(sets))


def _parse_slurm(path: Path, data: Any) -> SlurmSettings:
    if not isinstance(data, dict):
        raise _problem(path, f"slurm must be a mapping (partition: ..., timeout_min: ...), got {data!r}")
    _check_keys(path, data, [f.name for f in fields(SlurmSettings)], "slurm key")
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
    check_nesting(text, f"sweep spec {path}")
    try:
        data = yaml.safe_load(text)  # safe_load: a spec is data, never code
    except RecursionError:
        raise DefdistillError(f"sweep spec {path} nests too deeply: it is not a sweep spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DefdistillError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, path=path)
