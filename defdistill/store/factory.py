"""A user's model, entered as a factory: `path/to/file.py:function` or `package.module:function`.

The factory is a callable with no required arguments returning a `torch.nn.Module` that maps
images in [0, 1], shaped (N, C, H, W) as the dataset gives them, to class scores. Importing it
runs the user's code with the user's rights: a deliberate act (README, Safety). Weights, when
given, are a safetensors state dict loaded with strict keys; pickles are refused unread.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import DefdistillError
from .runs import _refuse_pickle, check_safetensors_file

FACTORY_HINT = "pass path/to/file.py:function or package.module:function"


def is_factory_spec(spec: str) -> bool:
    """Whether a MODEL argument names a factory (it has a ':' and is not an existing folder)."""
    return ":" in spec and not Path(spec).is_dir()


def _import_target(target: str) -> object:
    """The module `target` names: a .py file (imported under a private name) or a dotted module."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise DefdistillError(f"no factory file {path}: {FACTORY_HINT}")
        name = f"defdistill_factory_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DefdistillError(f"{path} cannot be imported as Python: {FACTORY_HINT}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        parent = str(path.resolve().parent)  # the file's own imports of its siblings work
        added = parent not in sys.path
        if added:
            sys.path.insert(0, parent)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DefdistillError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
        finally:
            if added:
                sys.path.remove(parent)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise DefdistillError(f"cannot import module {target!r} ({exc}): {FACTORY_HINT}") from None


def load_factory(
    spec: str, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Import `spec` ("file.py:function" or "module:function"), call it, load `weights`.

    Returns the module in eval mode on `device`. Errors (no such file or function, a factory
    that needs arguments or returns something else, weights that are a pickle or do not fit
    the module's keys and shapes) are one DefdistillError each.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise DefdistillError(f"{spec!r} is not a factory: {FACTORY_HINT}")
    module = _import_target(target)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise DefdistillError(f"{target} has no callable {attr!r}: {FACTORY_HINT}")
    try:
        model = factory()
    except TypeError as exc:
        raise DefdistillError(f"{spec} must be callable with no arguments ({exc})") from None
    except Exception as exc:
        raise DefdistillError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise DefdistillError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.to(device).eval()


def load_weights(model: torch.nn.Module, weights: str | Path) -> None:
    """Load a safetensors state dict into `model` with strict keys and matching shapes."""
    path = Path(weights)
    if path.is_file():
        _refuse_pickle(path)
    check_safetensors_file(path, fix="pass a safetensors state dict (--weights FILE.safetensors)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DefdistillError(f"{path} cannot be read ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))[:3]
    unexpected = sorted(set(state) - set(expected))[:3]
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(unexpected)}"] if unexpected else []
        parts += [f"shape of {', '.join(wrong[:3])}"] if wrong else []
        raise DefdistillError(f"{path} does not fit the factory's model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
