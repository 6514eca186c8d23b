"""Atomic writes: every file under runs/ and results/ appears whole or not at all."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DefdistillError

# A temporary file is named after its writer: `.<name>.<host>-<pid>-<token>.tmp`, so one that a
# killed writer left behind (SIGKILL runs no cleanup) is told from one still being written.
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]{1,24})-(?P<pid>[0-9]+)-[0-9a-f]{12}\.tmp$")
ORPHAN_AGE_S = 24 * 3600  # a temporary file of another machine counts as left over after a day
# The name older versions gave them, without the writer: left over once an hour old.
_LEGACY_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
LEGACY_ORPHAN_AGE_S = 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:24] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_orphan_temps(directory: str | Path, depth: int = 3) -> list[Path]:
    """Remove the temporary files that killed writers left in `directory` (and up to `depth`
    levels of folders below it): those of a process of this machine that no longer runs, or of
    another machine, a day old. Returns them."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    host, now = _host(), time.time()
    for level in range(depth + 1):
        for path in directory.glob("/".join(["*"] * level + [f".*{TEMP_SUFFIX}"])):
            match = _TEMP_NAME.match(path.name)
            legacy = match is None and _LEGACY_TEMP_NAME.match(path.name) is not None
            if (match is None and not legacy) or not path.is_file():
                continue
            try:
                age = now - path.stat().st_mtime
                if legacy:
                    left_over = age > LEGACY_ORPHAN_AGE_S
                elif match is not None and match["host"] == host:
                    left_over = not _alive(int(match["pid"]))
                else:
                    left_over = age > ORPHAN_AGE_S
                if left_over:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue  # gone already, or not ours to remove
    return removed


def _new_temp_file(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named file beside `path`; return it and its permission bits.

    Created the way a plain write creates a file (0o666 less the process's umask at this moment,
    as the kernel applies it; mkstemp would give 0o600), so the bits can be put back if a writer
    replaces the file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{_host()}-{os.getpid()}-{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, os.fstat(fd).st_mode & 0o7777
        finally:
            os.close(fd)
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs, then deliver them.

    Used around renames that must happen together (weights, then the sidecar vouching for
    them): an interrupt between them would leave a sidecar that no longer matches its weights.
    Only the main thread can set handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda sig, frame: received.append(sig)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            handler = previous[signal.Signals(received[0])]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of `paths`; if the block succeeds, rename them over
    `paths` in order, with interrupts held back, so the set is never half replaced.

    Whatever ends the block early (an error, Ctrl-C, SIGTERM), the temporary files are removed.
    Each file ends with the permissions of a plain write (0o666 less the umask), even when the
    block's writer replaced the temporary file with its own (safetensors' save_file writes a
    0o600 file and renames it over the path it is given).
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    modes: list[int] = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp, mode = _new_temp_file(path)
            temps.append(tmp)
            modes.append(mode)
        yield list(temps)
        for tmp, mode in zip(temps, modes, strict=True):
            if tmp.stat().st_mode & 0o7777 != mode:  # the writer put its own file in our place
                os.chmod(tmp, mode)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        with deferred_interrupts():
            for tmp, path in zip(temps, targets, strict=True):
                os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)  # already renamed on success; removed on any failure


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_png(path: str | Path, figure: Any, dpi: int) -> Path:
    """A matplotlib `figure` as a PNG at `path`, atomically; without the library's version in
    the metadata, so the same figure gives the same bytes on every machine."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let `writer` fill a temporary file, then rename it over `path`."""
    with atomic_path(path) as tmp:
        writer(tmp)


def ensure_writable_dir(directory: str | Path, option: str) -> Path:
    """Create `directory` if needed and prove it writable by creating a file in it.

    A real write, not os.access: access() answers yes to root on a read-only mount.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DefdistillError(f"{directory} is a file, not a folder: pass a writable {option}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DefdistillError(f"cannot write to {directory} ({reason}): pass a writable {option}") from None
    remove_orphan_temps(directory)  # what a killed writer left behind, before new work starts
    return directory
