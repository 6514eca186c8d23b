"""Every number README.md and REPRODUCTION.md quote from results/ is regenerated from the committed tables."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from defdistill.studies.claims import blocks, regenerate, render_block, stale_blocks, update_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = {
    "README.md": {"measured-figures", "small-budget-answer"},
    "docs/privacy.md": {"privacy-results"},
    "docs/defences.md": {"defences-headline"},
    "REPRODUCTION.md": {
        "paper-comparison",
        "papernot-measurements",
        "student-success",
        "temperature-findings",
        "sweep-cost",
        "accuracy-noise",
        "small-budget",
    },
}


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_generated_block_in_the_docs_matches_the_committed_tables(doc: str) -> None:
    path = ROOT / doc
    found = {match["name"] for match in blocks(path.read_text(encoding="utf-8"))}
    assert found == DOCS[doc], f"{doc}: blocks added or removed; update DOCS here and the renderers"
    stale = stale_blocks(path)
    assert stale == [], (
        f"{doc}: the blocks {stale} do not say what results/ says; run `defdistill report` "
        "(never edit a generated block by hand)"
    )


def test_the_docs_quote_the_cost_against_teacher_t1_and_no_stale_figure() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    reproduction = (ROOT / "REPRODUCTION.md").read_text(encoding="utf-8")
    assert "`cost_pp`" in readme and "below the undefended teacher-T1" in reproduction
    assert "100 steps x 5 binary searches" not in reproduction  # the committed rows ran 200 x 3
    assert "Papernot's result" not in readme  # the S&P paper attacked with JSMA only
    assert "twice" not in readme  # the students see the 719 public images, not twice the inputs
    assert "named the failure gradient masking" not in readme


def copy_results(tmp_path: Path) -> Path:
    """A scratch copy of the committed results (records and tables), and a doc quoting them."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results, ignore=shutil.ignore_patterns("*.png"))
    return results


def block_doc(path: Path, name: str, results: str = "results") -> None:
    path.write_text(
        f"Intro.\n\n<!-- begin generated: {name} results={results} dataset=digits (note) -->\nstale\n"
        f"<!-- end generated: {name} -->\n\nOutro.\n",
        encoding="utf-8",
    )


def test_a_number_edited_by_hand_in_a_block_is_caught(tmp_path: Path) -> None:
    copy_results(tmp_path)
    doc = tmp_path / "DOC.md"
    block_doc(doc, "sweep-cost")
    assert stale_blocks(doc) == ["sweep-cost"]
    doc.write_text(regenerate(doc), encoding="utf-8")
    assert stale_blocks(doc) == []
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("Intro.\n\n<!-- begin generated: sweep-cost") and text.endswith("\n\nOutro.\n")
    import re

    quoted = re.search(r"of which CW is (\d+)%", text)
    assert quoted, text
    edited = f"of which CW is {int(quoted[1]) + 1}%"
    doc.write_text(text.replace(quoted[0], edited), encoding="utf-8")
    assert stale_blocks(doc) == ["sweep-cost"]


def test_a_changed_table_changes_the_sentence_that_quotes_it(tmp_path: Path) -> None:
    import json

    results = copy_results(tmp_path)
    before = render_block("measured-figures", tmp_path, {"results": "results"})
    record = results / "records" / "robustness" / "digits__student-T100__fgsm__linf__0.1.json"  # headline
    row = json.loads(record.read_text())
    record.write_text(json.dumps(row | {"success_rate": 0.5}))
    after = render_block("measured-figures", tmp_path, {"results": "results"})
    assert before != after and "| student-T100 | 0.500 |" in after


def test_report_rewrites_only_the_blocks_that_name_its_results_folder(tmp_path: Path) -> None:
    from defdistill.report import write_report

    results = copy_results(tmp_path)
    mine, other = tmp_path / "MINE.md", tmp_path / "OTHER.md"
    block_doc(mine, "student-success")
    block_doc(other, "student-success", results="elsewhere")
    result = write_report(results, docs=[mine, other])
    assert result.docs == [mine]
    assert "| FGSM |" in mine.read_text(encoding="utf-8") and "\nstale\n" not in mine.read_text(
        encoding="utf-8"
    )
    assert "\nstale\n" in other.read_text(encoding="utf-8")
    assert update_docs([mine], results) == []  # already current: nothing rewritten


def _rows(table: str) -> Any:
    import pandas as pd

    return pd.read_csv(ROOT / "results" / f"{table}.csv")


def test_the_prose_about_mnist_agrees_with_the_tables_it_quotes() -> None:
    """The sentences of REPRODUCTION.md outside the blocks that state a number from a table."""
    text = " ".join((ROOT / "REPRODUCTION.md").read_text(encoding="utf-8").split())
    gaps = _rows("accuracy_gap")
    sweep = gaps["student"] == "student-T" + gaps["T"].map("{:g}".format)
    mnist = gaps[(gaps["dataset"] == "mnist") & sweep]
    assert "stays below half a point at every T" in text
    assert (mnist["cost_pp"].astype(float) < 0.5).all()
    assert "**Accuracy** is 0.2 to 0.3 points below the paper's" in text  # about 99.5% at T=1
    assert 0.2 <= 99.5 - 100 * float(mnist["baseline_acc"].iloc[0]) <= 0.3
    robustness = _rows("robustness")
    jsma = robustness[(robustness["dataset"] == "mnist") & (robustness["model"] == "teacher-T1")]
    jsma = jsma[jsma["attack"] == "jsma"]
    assert "**JSMA-F** at T=1 is about a point below the paper's 95.89%" in text
    assert 0.5 <= 95.89 - 100 * float(jsma["success_rate"].iloc[0]) <= 1.5


def test_the_readme_says_the_demo_prints_other_numbers_than_the_committed_tables() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "reproduces them" not in readme and "`make demo` reproduces" not in readme
    assert "so its numbers are not those of `results/`" in readme
    defences = " ".join((ROOT / "docs" / "defences.md").read_text(encoding="utf-8").split())
    assert "not committed yet" not in defences  # the committed table is results/defences/defences.md
    assert (ROOT / "results" / "defences" / "defences.md").is_file()
