"""Named crash points, for the crash-consistency tests: `DEFDISTILL_CRASH_AT=POINT[:K]` makes
the K-th (default first) pass of this process through `crash_point(POINT)` end it with SIGKILL,
the one ending no code can clean up after. Without the variable a crash point does nothing."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "DEFDISTILL_CRASH_AT"
POINTS = ("after-weights", "after-attack-records")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here if DEFDISTILL_CRASH_AT names this point and pass."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
