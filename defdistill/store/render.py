"""Tables as text: aligned columns, a vertical layout, Markdown or CSV. No value is ever cut.

`render_frame(frame, "table", width)` lays the columns out side by side when they fit in
`width` characters, and otherwise one record per block (`column  value` lines), so a narrow
terminal shows every name and number whole. `width=None` (stdout is a file or a pipe) always
gives the aligned columns at their full width. Formatting only: the caller prints.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import pandas as pd

from ..errors import DefdistillError
from .tables import format_value, to_markdown

FORMATS = ("table", "md", "csv")
GUTTER = "  "

# The columns a reader scans in a terminal, per table; the files hold every column.
DISPLAY_COLUMNS: dict[str, Sequence[str]] = {
    "robustness": (
        "model", "attack", "norm", "eps", "n", "clean_acc", "success_rate", "robust_acc", "median_dist",
    ),
    "worst_case": ("model", "eps", "fgsm", "pgd", "worst_success", "worst_attack", "gap", "ensemble_success"),
    "accuracy_gap": ("T", "teacher", "teacher_acc", "student", "student_acc", "gap_pp", "method"),
    "diagnostics": ("model", "check", "value", "passed", "detail"),
    "privacy": ("model", "attack", "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc"),
    "compression": ("model", "arch", "params", "size_bytes", "us_per_input_b1", "clean_acc"),
    "gradients": ("model", "n", "softmax_l1", "softmax_zero", "softmax_log10", "logits_l1"),
}  # fmt: skip


def check_format(fmt: str) -> str:
    """`fmt` if it is one of FORMATS, else one clear error."""
    if fmt not in FORMATS:
        raise DefdistillError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
    return fmt


def display_columns(name: str, frame: pd.DataFrame) -> list[str]:
    """The columns of table `name` worth a terminal's width: its scanned columns (all of an
    unknown table's), with `dataset` first when the rows span more than one dataset."""
    columns = [
        c for c in DISPLAY_COLUMNS.get(name, frame.columns) if c in frame.columns and c != "weights_sha256"
    ]  # the weights' hash binds a record to its run; a reader scans names and numbers
    if "dataset" in frame.columns and frame["dataset"].nunique() > 1 and "dataset" not in columns:
        columns.insert(0, "dataset")
    return columns or list(frame.columns)


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, formatted rows and, per column, whether it is numeric (right-aligned)."""
    headers = [str(c) for c in frame.columns]
    rows = [[format_value(v) for v in row] for row in frame.itertuples(index=False)]
    numeric = [frame[c].dtype.kind in "fiu" for c in frame.columns]
    return headers, rows, numeric


def aligned_text(frame: pd.DataFrame) -> str:
    """Columns side by side at their full width, numbers right-aligned, a rule under the header."""
    headers, rows, numeric = _cells(frame)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric, strict=True)
        ]
        return GUTTER.join(parts).rstrip()

    return "\n".join([line(headers), GUTTER.join("-" * w for w in widths), *(line(r) for r in rows)])


def aligned_width(frame: pd.DataFrame) -> int:
    """How many characters wide `aligned_text(frame)` is."""
    return max((len(line) for line in aligned_text(frame).splitlines()), default=0)


def vertical_text(frame: pd.DataFrame, width: int) -> str:
    """One block per row, `column  value` per line; long values wrap at spaces, never cut."""
    headers, rows, _ = _cells(frame)
    key = max((len(h) for h in headers), default=0)
    room = max(width - key - len(GUTTER), 20)
    blocks = []
    for number, row in enumerate(rows, 1):
        lines = [f"[{number}/{len(rows)}]"]
        for header, value in zip(headers, row, strict=True):
            wrapped = textwrap.wrap(value, room, break_long_words=False, break_on_hyphens=False) or [""]
            lines.append(f"{header.ljust(key)}{GUTTER}{wrapped[0]}".rstrip())
            lines += [f"{' ' * (key + len(GUTTER))}{more}" for more in wrapped[1:]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_frame(frame: pd.DataFrame, fmt: str = "table", width: int | None = None) -> str:
    """`frame` as text: "table" (aligned, or vertical when wider than `width`), "md" or "csv"."""
    check_format(fmt)
    if fmt == "md":
        return to_markdown(frame).rstrip("\n")
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.6g").rstrip("\n")
    if width is not None and len(frame) and aligned_width(frame) > width:
        return vertical_text(frame, width)
    return aligned_text(frame)
