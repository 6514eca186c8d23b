"""Reading one table back from results/ and keeping the rows a reader asked for.

`select_rows(results_dir, "robustness", model=["student-T100"], eps=[0.2])` reads the table that
`rebuild_tables` wrote (its .csv) and filters it; an unknown table, a filter on a column the
table lacks and a filter that keeps no row are each one clear DefdistillError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..errors import DefdistillError
from .tables import TITLES

# filter -> the columns it matches, in the order tried (accuracy_gap names its models teacher and student)
FILTER_COLUMNS: dict[str, Sequence[str]] = {
    "dataset": ("dataset",),
    "model": ("model", "teacher", "student"),
    "attack": ("attack",),
    "eps": ("eps",),
}
SHOWN_VALUES = 12  # at most this many values listed in a "no rows" message


def table_names() -> list[str]:
    """Every table `rebuild_tables` can write."""
    return list(TITLES)


def read_table(results_dir: str | Path, name: str) -> pd.DataFrame:
    """Table `name` as `rebuild_tables` last wrote it in results_dir."""
    if name not in TITLES:
        raise DefdistillError(f"unknown table {name!r}: choose {', '.join(table_names())}")
    path = Path(results_dir) / f"{name}.csv"
    if not path.is_file():
        raise DefdistillError(
            f"no {name} table in {results_dir} (no {path.name}): record rows first, "
            f"or run `defdistill tables --results-dir {results_dir}`"
        )
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DefdistillError(
            f"{path} cannot be read ({exc}); rebuild it with `defdistill tables --results-dir {results_dir}`"
        ) from None


def _listing(values: pd.Series) -> str:
    shown = [str(v) for v in dict.fromkeys(values.dropna())]
    more = f", ... ({len(shown) - SHOWN_VALUES} more)" if len(shown) > SHOWN_VALUES else ""
    return ", ".join(shown[:SHOWN_VALUES]) + more if shown else "none"


def filter_rows(
    frame: pd.DataFrame,
    name: str,
    dataset: Sequence[str] | None = None,
    model: Sequence[str] | None = None,
    attack: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
) -> pd.DataFrame:
    """The rows of table `name` that match every filter given (a filter keeps any of its values)."""
    wanted = {"dataset": dataset, "model": model, "attack": attack, "eps": eps}
    if frame.empty:
        raise DefdistillError(f"the {name} table has no rows yet")
    for key, values in wanted.items():
        if not values:
            continue
        columns = [c for c in FILTER_COLUMNS[key] if c in frame.columns]
        if not columns:
            raise DefdistillError(f"the {name} table has no {key} column: leave out --{key}")
        keep = pd.Series(False, index=frame.index)
        for column in columns:
            if key == "eps":
                budgets = pd.to_numeric(frame[column], errors="coerce")
                for value in values:
                    keep |= budgets.map(lambda b, v=float(value): not math.isnan(b) and math.isclose(b, v))
            else:
                keep |= frame[column].astype(str).isin([str(v) for v in values])
        if not keep.any():
            shown = ", ".join(str(v) for v in values)
            present = _listing(pd.concat([frame[c] for c in columns]))
            raise DefdistillError(f"no {name} rows with {key} {shown} (it has {present})")
        frame = frame[keep]
    return frame.reset_index(drop=True)


def select_rows(
    results_dir: str | Path,
    name: str,
    dataset: Sequence[str] | None = None,
    model: Sequence[str] | None = None,
    attack: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Table `name` from results_dir, filtered (see `filter_rows`)."""
    return filter_rows(read_table(results_dir, name), name, dataset, model, attack, eps)
