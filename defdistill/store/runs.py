"""Run folders: `runs/<dataset>/<role>-T<T>/` with `model.safetensors` and `meta.json`.

Weights are stored with safetensors only. A file that is not a safetensors file (a torch
pickle above all) is refused before any byte of it is interpreted as code.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.faults import crash_point
from ..core.fileio import atomic_paths
from ..data.registry import get_dataset_spec
from ..errors import DefdistillError
from ..models import ImageClassifier, build_model, get_arch_spec

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
ROLES = ("teacher", "student")
# The transfer attack's default source: a T=1 network trained with another seed (train.loop.train_surrogate).
SURROGATE_NAME = "surrogate-T1"
CHECKPOINT_FILE = "checkpoint.safetensors"  # resumable state of an unfinished run
CHECKPOINT_META = "checkpoint.json"
REQUIRED_META = ("dataset", "arch", "role", "T", "weights_sha256")


def format_T(T: float) -> str:
    """Temperature as it appears in run names and tables: 100, 2.5 (no trailing .0)."""
    return f"{T:g}" if float(T) != int(T) else str(int(T))


def run_name(role: str, T: float) -> str:
    """`teacher-T1`, `student-T100`."""
    return f"{role}-T{format_T(T)}"


def run_dir(runs_dir: str | Path, dataset: str, name: str) -> Path:
    """Where the run `name` of `dataset` lives."""
    return Path(runs_dir) / dataset / name


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_run(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write weights and the sidecar that vouches for them (with their SHA-256), atomically.

    Both files are written to temporary names first and renamed together with interrupts
    held back, weights before sidecar: Ctrl-C never leaves a finished run whose meta.json
    describes other weights, and a crash between the renames is caught on load by the hash.
    """
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_paths(directory / WEIGHTS_FILE, directory / META_FILE) as (weights_tmp, meta_tmp):
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        meta = {**meta, "weights_sha256": sha256_file(weights_tmp)}
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    crash_point("after-weights")
    return meta


def check_not_finished(
    directory: str | Path, force: bool, resume: bool = False, new_name: str = "--runs-dir for another folder"
) -> None:
    """Refuse to train over a finished run unless `force`: its weights would change under the
    records that measured them (which then go stale). Resuming a retraining that was forced
    and interrupted (its checkpoint is there) needs no second --force. One line, before any
    training."""
    directory = Path(directory)
    if force or not (directory / META_FILE).is_file():
        return
    if resume and (directory / CHECKPOINT_META).is_file():
        return
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        acc = meta.get("clean_acc") if isinstance(meta, dict) else None
        what = f" (test accuracy {acc:.4f})" if _is_number(acc) else ""
    except (OSError, ValueError, RecursionError, TypeError):
        what = ""
    raise DefdistillError(
        f"{directory} is a finished run{what}: pass --force to train it again (the records of its "
        f"current weights then go stale), or {new_name}"
    )


def _meta_field_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the types of a meta.json's required fields, if anything."""
    for key in ("dataset", "arch", "role"):
        if not isinstance(meta[key], str):
            return f"{key} is {meta[key]!r}, not a name"
    if meta["role"] not in ROLES:
        return f"role is {meta['role']!r}, not one of {', '.join(ROLES)}"
    T = meta["T"]
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        return f"T is {T!r}, not a finite number > 0"
    digest = meta["weights_sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return "weights_sha256 is not a SHA-256 hex digest"
    return _optional_field_problem(meta)


# Optional fields of meta.json that other records copy (accuracy gap, baselines): checked on read,
# so a bad value stops with one line instead of being written into the tables.
FRACTION_META = ("clean_acc", "teacher_acc")
COUNT_META = ("epochs", "params", "teacher_params")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _optional_field_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with an optional field of a meta.json (present and not null), if anything."""
    for key in FRACTION_META:
        value = meta.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            return f"{key} is {value!r}, not a fraction in [0, 1]"
    for key in COUNT_META:
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"{key} is {value!r}, not an integer >= 1"
    seed = meta.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        return f"seed is {seed!r}, not an integer >= 0"
    teacher_T = meta.get("teacher_T")
    if teacher_T is not None and not (_is_number(teacher_T) and teacher_T > 0):
        return f"teacher_T is {teacher_T!r}, not a finite number > 0"
    for key in ("teacher", "method", "study"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is {value!r}, not a name"
    return None


def run_identity(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The columns that name a run in every record of it: dataset, model (the folder's name), role,
    T, and the SHA-256 of the weights measured (records of other weights under the same name, a
    retrained run or another folder of that name, are told apart by it)."""
    return {
        "dataset": meta["dataset"],
        "model": Path(path).name,
        "role": meta["role"],
        "T": float(meta["T"]),
        "weights_sha256": meta["weights_sha256"],
    }


def current_weights(runs_dir: str | Path | None, dataset: str, name: str) -> str | None:
    """The SHA-256 recorded for the weights of run `name` in `runs_dir` (its meta.json), or None
    when there is no such run or its sidecar cannot be read."""
    if runs_dir is None:
        return None
    try:
        meta = json.loads((run_dir(runs_dir, dataset, name) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    digest = meta.get("weights_sha256") if isinstance(meta, dict) else None
    return digest if isinstance(digest, str) else None


def read_meta(directory: str | Path) -> dict[str, Any]:
    """Read and validate a run's meta.json: valid JSON, required fields, their types."""
    directory = Path(directory)
    path = directory / META_FILE
    if not path.is_file():
        refuse_foreign_weights(directory)
        if (directory / CHECKPOINT_META).is_file():
            raise DefdistillError(
                f"{path} is missing: {directory} is an unfinished run; "
                "add --resume to the command that trained it"
            )
        raise DefdistillError(f"{path} is missing: {directory} is not a finished run (train it again)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DefdistillError(
            f"{path} is not valid JSON (or nested too deeply): the run is damaged, train it again"
        ) from None
    if not isinstance(meta, dict):
        raise DefdistillError(f"{path} holds {type(meta).__name__}, not an object: train the run again")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DefdistillError(f"{path} lacks {', '.join(missing)}: it is malformed, train the run again")
    problem = _meta_field_problem(meta)
    if problem:
        raise DefdistillError(f"{path} is malformed ({problem}): train the run again")
    return meta


PICKLE_HINT = (
    "convert it once, in an environment you trust, with "
    "`safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')` "
    "and write a meta.json beside it (see README, Safety)"
)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
# First opcodes of protocol 0/1 pickles: MARK, GLOBAL, EMPTY_DICT/LIST/TUPLE, NONE, INT, FLOAT, ...
_PICKLE_FIRST_OPCODES = b"(c}])NIFLSVGJKMUXTq"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


def looks_like_pickle(path: Path, strict: bool = False) -> bool:
    """Whether `path` holds a pickle or a torch.save archive, judged from its bytes, never unpickled.

    `strict` trusts only the unambiguous magic (zip archive, PROTO opcode), not the weaker
    first-opcode-and-STOP test that an old-protocol pickle needs.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(path.stat().st_size - 1, 0))
            last = handle.read(1)
    except OSError:
        return False
    if head[:4] == b"PK\x03\x04":  # torch.save's zip archive, whose data.pkl is a pickle
        return True
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # PROTO opcode
        return True
    return not strict and head[:1] != b"" and head[:1] in _PICKLE_FIRST_OPCODES and last == b"."  # STOP


def _refuse_pickle(path: Path) -> None:
    if looks_like_pickle(path) or path.suffix.lower() in PICKLE_SUFFIXES:
        raise DefdistillError(f"{path} is a pickle (torch.save) file, which is never loaded: {PICKLE_HINT}")


def refuse_foreign_weights(directory: Path) -> None:
    """Refuse a folder that carries pickled weights where a run's files should be."""
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix in (".json", ".tmp", ".lock"):
            continue
        strict = path.suffix == ".safetensors"
        if path.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(path, strict=strict):
            raise DefdistillError(
                f"{directory} holds {path.name}, a pickle (torch.save) file, which is never loaded: "
                + PICKLE_HINT
            )


def check_safetensors_file(path: Path, fix: str = "train the run again") -> dict[str, Any]:
    """Validate a safetensors file's framing and header without loading it; return the header.

    A pickle is refused before any byte of it is interpreted; a file shorter than its header
    promises is reported as truncated.
    """
    if not path.is_file():
        raise DefdistillError(f"{path} is missing: {fix}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        header_bytes = handle.read(header_len) if 0 < header_len <= MAX_HEADER_BYTES else b""
    if not header_bytes.startswith(b"{"):
        _refuse_pickle(path)
        if size < 9:
            raise DefdistillError(f"{path} is truncated ({size} bytes): {fix}")
        raise DefdistillError(f"{path} is not a safetensors file (corrupt or another format): {fix}")
    if len(header_bytes) < header_len:
        raise DefdistillError(f"{path} is truncated ({size} bytes, header cut short): {fix}")
    try:
        header = json.loads(header_bytes)
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        data_len = max(ends, default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise DefdistillError(f"{path} has a damaged safetensors header: {fix}") from None
    if not isinstance(data_len, int) or 8 + header_len + data_len > size:
        raise DefdistillError(f"{path} is truncated ({size} bytes, its header describes more): {fix}")
    return header


def load_run(
    directory: str | Path, dataset: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Load a run's model (eval mode) and meta, checking files, hash, dataset and architecture."""
    directory = Path(directory)
    if directory.is_file():
        _refuse_pickle(directory)
        raise DefdistillError(f"{directory} is a file: pass the run folder with {WEIGHTS_FILE} and meta.json")
    if not directory.is_dir():
        raise DefdistillError(f"no run at {directory}: train one, or check --runs-dir")
    meta = read_meta(directory)
    if dataset is not None and meta["dataset"] != dataset:
        raise DefdistillError(
            f"{directory} was trained on {meta['dataset']!r}, not {dataset!r}: "
            f"pass --dataset {meta['dataset']} or a run of {dataset!r}"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        refuse_foreign_weights(directory)
    check_safetensors_file(weights)
    if sha256_file(weights) != meta["weights_sha256"]:
        raise DefdistillError(
            f"{weights} does not match the hash in {META_FILE} (corrupt or replaced): train the run again"
        )
    try:
        spec = get_dataset_spec(meta["dataset"])
        arch = get_arch_spec(meta["arch"])
    except DefdistillError as exc:
        raise DefdistillError(f"{directory / META_FILE} names an {exc}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DefdistillError(f"{weights} cannot be read ({exc}): train the run again") from None
    what = f"architecture {meta['arch']!r} of dataset {meta['dataset']!r}"
    try:
        model = build_model(arch.name, spec.shape, spec.num_classes, spec.mean, spec.std)
    except RuntimeError:  # e.g. too many poolings for the input size
        raise DefdistillError(
            f"{directory / META_FILE} names {what}, which does not fit inputs of shape {spec.shape}: "
            "the run is damaged or for another dataset"
        ) from None
    check_state_fits(model.state_dict(), state, weights, what)
    model.load_state_dict(state)
    model.eval()
    return model.to(map_location), meta


def check_finite_weights(model: torch.nn.Module, path: Path) -> None:
    """Refuse a network whose weights hold NaN or infinite values (a diverged run): every attack
    on it would measure nothing, and its rows would look like results."""
    bad = total = 0
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            bad += int((~torch.isfinite(tensor)).sum())
            total += tensor.numel()
    if bad:
        raise DefdistillError(
            f"{path} has {bad} of {total} weights that are NaN or infinite (training diverged): "
            "train it again, e.g. with a lower learning rate"
        )


def check_state_fits(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path, what: str
) -> None:
    """Tensor names, shapes and dtypes of `found` must be those of `expected`."""
    want = {k: (tuple(v.shape), v.dtype) for k, v in expected.items()}
    have = {k: (tuple(v.shape), v.dtype) for k, v in found.items()}
    if want != have:
        diff = sorted({k for k in want.keys() | have.keys() if want.get(k) != have.get(k)})[:3]
        details = ", ".join(f"{k}: expected {want.get(k, 'none')}, found {have.get(k, 'none')}" for k in diff)
        raise DefdistillError(
            f"{path} does not fit {what} ({details}): the checkpoint belongs to another model"
        )


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """Load a run's model in eval mode: inputs in [0, 1], outputs logits at T=1."""
    return load_run(directory, map_location=device)[0]


@dataclass(frozen=True)
class RunRef:
    """A finished run found on disk."""

    path: Path
    name: str
    role: str
    T: float


def list_runs(runs_dir: str | Path, dataset: str, role: str | None = None) -> list[RunRef]:
    """Finished runs (those with a meta.json) of `dataset`, optionally of one role."""
    root = Path(runs_dir) / dataset
    refs = []
    for meta_path in sorted(root.glob(f"*/{META_FILE}")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            ref = RunRef(meta_path.parent, meta_path.parent.name, meta["role"], float(meta["T"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a malformed run is reported when it is loaded by name, not while listing
        # Runs of a side study (meta "study", e.g. privacy-teacher) are reached by name only, so
        # `--model teacher --T 1` keeps meaning teacher-T1.
        if role is None or (ref.role == role and not meta.get("study")):
            refs.append(ref)
    return refs


def resolve_model(spec: str, runs_dir: str | Path, dataset: str, T: float | None = None) -> Path:
    """Turn a --model value (role, run name or run directory) into a run directory."""
    if spec in ROLES:
        candidates = list_runs(runs_dir, dataset, role=spec)
        if T is not None:
            candidates = [c for c in candidates if math.isclose(c.T, T)]
        if len(candidates) == 1:
            return candidates[0].path
        where = Path(runs_dir) / dataset
        if not candidates:
            hint = f" at T={format_T(T)}" if T is not None else ""
            raise DefdistillError(
                f"no {spec} run{hint} in {where}: train one first "
                f"(defdistill {'train-teacher' if spec == 'teacher' else 'distill'})"
            )
        names = ", ".join(c.name for c in candidates)
        raise DefdistillError(
            f"--model {spec} is ambiguous in {where} ({names}): add --T or name the run, "
            f"e.g. --model {candidates[0].name}"
        )
    named = run_dir(runs_dir, dataset, spec)
    if (named / META_FILE).is_file() or named.is_dir():
        return named
    as_path = Path(spec)
    if as_path.is_dir():
        return as_path
    if as_path.is_file():
        _refuse_pickle(as_path)
        raise DefdistillError(f"{spec} is a file: pass the run folder with {WEIGHTS_FILE} and meta.json")
    known = ", ".join(r.name for r in list_runs(runs_dir, dataset)) or "none yet"
    raise DefdistillError(
        f"no run {spec!r} for dataset {dataset!r} in {runs_dir} (known: {known}): "
        "pass a role (teacher, student), a run name or a run directory"
    )


def resolve_models(models: Sequence[str] | None, runs_dir: str | Path, dataset: str) -> list[Path]:
    """Run directories of `models` (roles, run names or folders), or of every finished run of
    `dataset` when none are named; finding none is an error."""
    paths = (
        [resolve_model(m, runs_dir, dataset) for m in models]
        if models
        else [ref.path for ref in list_runs(runs_dir, dataset)]
    )
    if not paths:
        raise DefdistillError(
            f"no runs of {dataset!r} in {Path(runs_dir) / dataset}: "
            "train a teacher and distil a student first"
        )
    return paths
