"""Run folders: `runs/<dataset>/<role>-T<T>/` with `model.safetensors` and `meta.json`.

Weights are stored with safetensors only. A file that is not a safetensors file (a torch
pickle above all) is refused before any byte of it is interpreted as code.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import get_dataset_spec
from .errors import DefdistillError
from .fileio import atomic_write_json, atomic_write_with
from .models import ImageClassifier, build_model

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
ROLES = ("teacher", "student")
REQUIRED_META = ("dataset", "arch", "role", "T", "weights_sha256")


def format_T(T: float) -> str:
    """Temperature as it appears in run names and tables: 100, 2.5 (no trailing .0)."""
    return f"{T:g}" if float(T) != int(T) else str(int(T))


def check_temperature(T: float) -> float:
    """Validate a temperature: finite and > 0."""
    if not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise DefdistillError(f"temperature must be a finite number > 0, got {T}: try --T 100")
    return float(T)


def run_name(role: str, T: float) -> str:
    """`teacher-T1`, `student-T100`."""
    return f"{role}-T{format_T(T)}"


def run_dir(runs_dir: str | Path, dataset: str, name: str) -> Path:
    """Where the run `name` of `dataset` lives."""
    return Path(runs_dir) / dataset / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_run(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write weights, then the sidecar that vouches for them (with their SHA-256), atomically.

    The sidecar is renamed last: a run folder whose meta.json is present is a finished run,
    and a crash between the two renames is caught on load by the hash mismatch.
    """
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    atomic_write_with(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    meta = {**meta, "weights_sha256": _sha256(weights)}
    atomic_write_json(directory / META_FILE, meta)
    return meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    """Read and validate a run's meta.json."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise DefdistillError(
            f"{path} is missing: {directory} is not a finished run (train it again)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefdistillError(f"{path} is not valid JSON: the run is damaged, train it again") from None
    if not isinstance(meta, dict) or any(key not in meta for key in REQUIRED_META):
        missing = [k for k in REQUIRED_META if not isinstance(meta, dict) or k not in meta]
        raise DefdistillError(f"{path} lacks {', '.join(missing)}: it is malformed, train the run again")
    return meta


PICKLE_HINT = (
    "convert it once in a trusted environment with "
    "`safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')`"
)


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a safetensors file, without unpickling it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len + 8 <= size:
            return
        raise DefdistillError(f"{path} is truncated ({size} bytes): train the run again")
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive, or a raw pickle
        raise DefdistillError(f"{path} is a pickle (torch.save) file, which is never loaded: {PICKLE_HINT}")
    raise DefdistillError(f"{path} is not a safetensors file (corrupt or truncated): train the run again")


def load_run(
    directory: str | Path, dataset: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Load a run's model (eval mode) and meta, checking files, hash, dataset and architecture."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DefdistillError(f"no run at {directory}: train one, or check --runs-dir")
    meta = read_meta(directory)
    if dataset is not None and meta["dataset"] != dataset:
        raise DefdistillError(
            f"{directory} was trained on {meta['dataset']!r}, not {dataset!r}: pass --dataset {meta['dataset']}"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise DefdistillError(f"{weights} is missing: train the run again")
    _check_safetensors_header(weights)
    if _sha256(weights) != meta["weights_sha256"]:
        raise DefdistillError(
            f"{weights} does not match the hash in {META_FILE} (corrupt or replaced): train the run again"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DefdistillError(f"{weights} cannot be read ({exc}): train the run again") from None
    spec = get_dataset_spec(meta["dataset"])
    model = build_model(meta["arch"], spec.shape, spec.num_classes, spec.mean, spec.std)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise DefdistillError(
            f"{weights} does not fit architecture {meta['arch']!r} of dataset {meta['dataset']!r} "
            f"(first differences: {diff}): the checkpoint belongs to another model"
        )
    model.load_state_dict(state)
    model.eval()
    return model.to(map_location), meta


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
        if role is None or ref.role == role:
            refs.append(ref)
    return refs


def resolve_model(
    spec: str, runs_dir: str | Path, dataset: str, T: float | None = None
) -> Path:
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
            f"--model {spec} is ambiguous in {where} ({names}): add --T or name the run, e.g. --model {candidates[0].name}"
        )
    named = run_dir(runs_dir, dataset, spec)
    if (named / META_FILE).is_file() or named.is_dir():
        return named
    as_path = Path(spec)
    if as_path.is_dir():
        return as_path
    known = ", ".join(r.name for r in list_runs(runs_dir, dataset)) or "none yet"
    raise DefdistillError(
        f"no run {spec!r} for dataset {dataset!r} in {runs_dir} (known: {known}): "
        "pass a role (teacher, student), a run name or a run directory"
    )
