"""Every check of a user's input, in one place: each raises DefdistillError with one line naming
the problem and the fix. Commands call them before any work (their preflight)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from .errors import DefdistillError


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """A name from a registry (dataset, attack, method...), matched case-insensitively."""
    known = list(choices)
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in known:
        raise DefdistillError(f"unknown {what} {value!r}: choose from {', '.join(known)}")
    return key


def check_names(names: Sequence[str], choices: Iterable[str], what: str) -> list[str]:
    """A comma-list of registry names (order kept, duplicates dropped)."""
    known = list(choices)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise DefdistillError(f"no {what} given: choose from {', '.join(known)}")
    return list(dict.fromkeys(check_choice(n, known, what) for n in names))


def check_positive_int(value: int, option: str) -> int:
    """Validate a count option (epochs, batch size, n)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DefdistillError(f"{option} must be a positive integer, got {value}")
    return value


def check_seed(seed: int) -> int:
    """Validate a seed: an integer torch, NumPy and random all accept."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise DefdistillError(f"--seed must be an integer in [0, 2^63), got {seed}")
    return seed


# Far above any temperature the literature uses (Papernot et al. go to 100); a run is named after
# its T, and 1e308 written out is longer than a file name may be.
MAX_TEMPERATURE = 1e6


def check_temperature(T: float) -> float:
    """Validate a temperature: finite, > 0 and at most MAX_TEMPERATURE."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise DefdistillError(f"temperature must be a finite number > 0, got {T}: try --T 100")
    if T > MAX_TEMPERATURE:
        raise DefdistillError(
            f"temperature {T:g} is above {MAX_TEMPERATURE:g}, the largest accepted: try --T 100"
        )
    return float(T)


def check_temperatures(values: Sequence[float]) -> list[float]:
    """Validate the distillation temperatures (order kept, duplicates dropped)."""
    values = [check_temperature(v) for v in values]
    if not values:
        raise DefdistillError("no temperature given: e.g. --T 1,10,100")
    return list(dict.fromkeys(values))


def check_num_workers(num_workers: int) -> int:
    """Validate --num-workers."""
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise DefdistillError(f"--num-workers must be an integer >= 0, got {num_workers}")
    return num_workers


def check_shadows(shadows: int) -> int:
    """0 (no LiRA) or at least 2 shadow models."""
    if not isinstance(shadows, int) or shadows < 0 or shadows == 1:
        raise DefdistillError(
            f"--shadow must be 0 (skip LiRA) or at least 2 (LiRA estimates a variance), got {shadows}"
        )
    return shadows


def check_eps(values: Sequence[float]) -> list[float]:
    """Validate epsilon budgets: finite, in [0, 1] (the input range)."""
    values = [float(v) for v in values]
    if not values:
        raise DefdistillError("no epsilon given: e.g. --eps 0.05,0.1,0.2,0.3")
    for v in values:
        if not math.isfinite(v) or v < 0 or v > 1:
            raise DefdistillError(f"epsilon must lie in [0, 1] (inputs are in [0, 1]), got {v}")
    return list(dict.fromkeys(values))


# The options that set an adversarial-training budget, by the word train.robust's checks use.
BUDGET_OPTIONS = {
    "eps": "--adv-eps", "steps": "--adv-steps", "step_size": "--adv-step-size", "beta": "--beta"
}  # fmt: skip


def check_budget_options(
    check: Callable[..., None], eps: float, steps: int, step_size: float, beta: float | None = None
) -> None:
    """An L-inf training budget, validated by `check` (train.robust.check_budget, handed in: the
    checks sit below the training layer); its ValueError becomes one line naming the option."""
    try:
        check(eps, steps, step_size, beta)
    except ValueError as exc:
        word, _, rest = str(exc).partition(" ")
        raise DefdistillError(f"{BUDGET_OPTIONS.get(word, word)} {rest}") from None


# Deeper than any spec or record this tool writes (a sweep spec nests 3 levels); a parser would
# recurse once per level and fail with RecursionError far beyond it.
MAX_NESTING = 32


def check_nesting(text: str, what: str, limit: int = MAX_NESTING) -> str:
    """Refuse JSON or YAML text whose brackets nest deeper than `limit`, before it is parsed."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                raise DefdistillError(
                    f"{what} nests deeper than {limit} levels: it is not a file this tool wrote"
                )
        elif char in "]}":
            depth = max(depth - 1, 0)
    return text
