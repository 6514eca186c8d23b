"""Worker processes that never outlive the command that started them.

A sweep runs its configurations in child processes. Each child asks the kernel to send it
SIGTERM when its parent dies (Linux: prctl PR_SET_PDEATHSIG; elsewhere a thread watching the
parent's id), and turns SIGINT and SIGTERM into KeyboardInterrupt, so an interrupt unwinds it
the way Ctrl-C unwinds the command itself: temporary files are removed and nothing partial is
renamed into place. `stop_processes` is the parent's side: SIGTERM to every child still
running, a short wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from multiprocessing.process import BaseProcess
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0
STOP_GRACE_S = 10.0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in this process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int | None = None) -> None:
    """Have SIGTERM sent to this process when its parent (`parent`, default the current one) dies.

    On Linux the kernel does it (PR_SET_PDEATHSIG); a parent that died before the call is caught
    by comparing the parent's id. Elsewhere, and where prctl is unavailable, a daemon thread
    polls the parent's id every second.
    """
    parent = os.getppid() if parent is None else parent
    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def child_main(connection: Any, parent: int, payload: bytes) -> None:
    """The whole life of a child process that runs `fn(*args)` from `payload` (pickled by
    `child_payload`): die with `parent`, turn SIGINT and SIGTERM into an interrupt, and only then
    unpickle the call (which imports torch, seconds on a busy machine, during which the child
    must already die with its parent), run it and send its result back on `connection`."""
    import pickle

    die_with_parent(parent)
    interrupt_on_signals()
    try:
        fn, args = pickle.loads(payload)
        connection.send(fn(*args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        connection.close()


def child_payload(fn: Any, *args: Any) -> bytes:
    """`fn` and `args` pickled for `child_main` (unpickled in the child only after it is armed)."""
    import pickle

    return pickle.dumps((fn, args))


def stop_processes(processes: Iterable[BaseProcess], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every process still alive, wait up to `grace` seconds for all, SIGKILL the rest."""
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        with contextlib.suppress(OSError):
            process.terminate()
    deadline = time.monotonic() + grace
    for process in alive:
        process.join(max(deadline - time.monotonic(), 0.0))
    for process in alive:
        if process.is_alive():
            with contextlib.suppress(OSError):
                process.kill()
            process.join(1.0)
