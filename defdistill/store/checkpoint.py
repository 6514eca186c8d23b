"""Resumable training state, saved after every epoch without pickle.

`checkpoint.safetensors` holds every tensor: the model's state (`model.<name>`; a loss with
parameters, such as FitNets' regressor, as `loss.<name>`), the optimiser's per-parameter
state (`optimizer.state.<index>.<key>`, e.g. Adam's exp_avg and step) and the random
generators (`rng.<name>`, uint8). `checkpoint.json` holds the rest: the epochs done, their
losses, the optimiser's scalar settings, the settings a resume must share, and the SHA-256
of the tensor file. Both lie in the run folder beside (never over) a finished run's
model.safetensors and meta.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.fileio import atomic_paths
from ..errors import DefdistillError
from .runs import CHECKPOINT_FILE, CHECKPOINT_META, check_safetensors_file, check_state_fits, sha256_file

FORMAT_VERSION = 1
FRESH_START = "drop --resume to train from the first epoch"


def _rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every generator the loop draws from: the batch shuffle, and the default one dropout uses."""
    states = {"rng.shuffle": generator.get_state(), "rng.torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(
    tensors: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    generator.set_state(tensors["rng.shuffle"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimiser state_dict -> (named tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    state_groups = state["param_groups"]
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_groups]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer.state."):
            index, key = name[len("optimizer.state.") :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


@dataclass
class TrainingCheckpoint:
    """Where `fit` keeps its resumable state, and the settings a resume must share.

    `config` holds everything that shapes the trajectory except the number of epochs
    (dataset, architecture, T, seed, batch size, learning rate, teacher...): a checkpoint
    is only resumed by a command that asks for the same run.
    """

    directory: Path
    config: dict[str, Any]
    resume: bool = False

    @property
    def tensors_path(self) -> Path:
        return Path(self.directory) / CHECKPOINT_FILE

    @property
    def meta_path(self) -> Path:
        return Path(self.directory) / CHECKPOINT_META

    def exists(self) -> bool:
        """Whether an unfinished run left a checkpoint here."""
        return self.meta_path.is_file()

    def read_meta(self, epochs: int | None = None) -> dict[str, Any]:
        """Read and validate checkpoint.json against this run's settings (cheap: no tensors)."""
        path = self.meta_path
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DefdistillError(f"cannot read {path} ({exc.strerror}): {FRESH_START}") from None
        except (ValueError, RecursionError):
            raise DefdistillError(f"{path} is not valid JSON: {FRESH_START}") from None
        fields = {
            "format": int, "epoch": int, "losses": list,
            "config": dict, "optimizer": dict, "tensors_sha256": str,
        }  # fmt: skip
        if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in fields.items()):
            raise DefdistillError(f"{path} is malformed: {FRESH_START}")
        if meta["format"] != FORMAT_VERSION:
            raise DefdistillError(f"{path} has format {meta['format']}, not {FORMAT_VERSION}: {FRESH_START}")
        want = json.loads(json.dumps(self.config))  # compare as JSON sees it (tuples become lists)
        for key in sorted(want.keys() | meta["config"].keys()):
            if want.get(key) != meta["config"].get(key):
                raise DefdistillError(
                    f"the checkpoint in {self.directory} was made with {key}={meta['config'].get(key)!r}, "
                    f"this command asks for {key}={want.get(key)!r}: "
                    f"repeat the original settings or {FRESH_START}"
                )
        if epochs is not None and meta["epoch"] > epochs:
            raise DefdistillError(
                f"the checkpoint in {self.directory} has {meta['epoch']} epochs done, "
                f"more than --epochs {epochs}: "
                f"pass --epochs {meta['epoch']} or more, or {FRESH_START}"
            )
        return meta

    def save(
        self,
        epoch: int,
        losses: list[float],
        modules: dict[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        """Keep the state after `epoch` completed epochs; both files are replaced together."""
        tensors = {
            f"{prefix}.{k}": v.detach().cpu().contiguous()
            for prefix, module in modules.items()
            for k, v in module.state_dict().items()
        }
        optimizer_tensors, optimizer_rest = _split_optimizer_state(optimizer.state_dict())
        tensors |= optimizer_tensors | _rng_states(generator, device)
        with atomic_paths(self.tensors_path, self.meta_path) as (tensors_tmp, meta_tmp):
            save_file(tensors, str(tensors_tmp), metadata={"format": "pt"})
            meta = {
                "format": FORMAT_VERSION,
                "epoch": epoch,
                "losses": losses,
                "config": self.config,
                "optimizer": optimizer_rest,
                "tensors_sha256": sha256_file(tensors_tmp),
            }
            meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def load(
        self,
        modules: dict[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        device: torch.device,
        epochs: int | None = None,
    ) -> tuple[int, list[float]]:
        """Restore modules, optimiser and generators; return (epochs done, their losses)."""
        meta = self.read_meta(epochs)
        path = self.tensors_path
        check_safetensors_file(path, fix=FRESH_START)
        if sha256_file(path) != meta["tensors_sha256"]:
            raise DefdistillError(
                f"{path} does not match the hash in {CHECKPOINT_META} (corrupt): {FRESH_START}"
            )
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DefdistillError(f"{path} cannot be read ({exc}): {FRESH_START}") from None
        states = {
            prefix: {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{prefix}.")}
            for prefix in modules
        }
        for prefix, module in modules.items():
            check_state_fits(module.state_dict(), states[prefix], path, f"the {prefix} this command builds")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for name, value in tensors.items():
            if name.startswith("optimizer.state."):
                index = int(name.split(".")[2])
                if index >= len(params) or value.dim() and value.shape != params[index].shape:
                    raise DefdistillError(f"{path} holds optimiser state of another model: {FRESH_START}")
        missing = [k for k in _rng_states(generator, device) if k not in tensors]
        if missing or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in meta["losses"]):
            raise DefdistillError(f"{path} is incomplete ({', '.join(missing) or 'losses'}): {FRESH_START}")
        try:
            optimizer.load_state_dict(_join_optimizer_state(tensors, meta["optimizer"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DefdistillError(
                f"{self.meta_path} has unusable optimiser state ({exc}): {FRESH_START}"
            ) from None
        for prefix, module in modules.items():
            module.load_state_dict(states[prefix])
        _set_rng_states(tensors, generator, device)
        return meta["epoch"], [float(x) for x in meta["losses"]]

    def clear(self) -> None:
        """Remove the checkpoint once the finished run is saved (the sidecar first)."""
        self.meta_path.unlink(missing_ok=True)
        self.tensors_path.unlink(missing_ok=True)
