"""The benchmark harness (benchmarks/run.py) on minimal sizes: its pairing and its output schema.

No timing is asserted: the harness measures, these tests check what it writes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("defdistill_benchmarks", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("clock_name", "timer"), [("cpu", "process_time"), ("wall", "perf_counter")])
def test_paired_timing_alternates_the_order_and_reports_the_median_ratio(
    bench, monkeypatch, clock_name, timer
):
    clock = [0.0]
    calls = []
    other = {"process_time", "perf_counter"} - {timer}
    monkeypatch.setattr(bench.time, timer, lambda: clock[0])
    monkeypatch.setattr(bench.time, other.pop(), lambda: pytest.fail("timed with the other clock"))

    def side(name: str, seconds: float):
        def run(arg):
            calls.append((name, arg))
            clock[0] += seconds

        return run

    setups = iter(range(100))
    ours_s, ref_s, ratio = bench.paired_timing(
        side("ours", 3.0), side("ref", 2.0), 3, setup=lambda: next(setups), clock=clock_name
    )
    assert [name for name, _ in calls] == ["ours", "ref", "ours", "ref", "ref", "ours", "ours", "ref"]
    assert len({arg for _, arg in calls}) == len(calls)  # a fresh setup() for every call
    assert (ours_s, ref_s, ratio) == (3.0, 2.0, 1.5)


def test_harness_on_minimal_sizes_writes_the_documented_json_and_markdown(bench, tmp_path, monkeypatch):
    monkeypatch.setenv(bench.THREADS_ENV, "1")
    tiny = replace(
        bench.QUICK, teacher_epochs=1, train_pairs=1, attack_pairs=1, cw_pairs=1, n_attack=6, pgd_steps=2,
        cw_steps=2, cw_binary_search_steps=1, cw_curve_steps=(2,), cw_curve_search_steps=(1,),
        cw_curve_stepsizes=(0.05,),  # only from 100 steps on: no point here
        throughput_images=8, train_images=64, threads_row=True, torchattacks_pairs=1, images_only_row=True,
        n_reference=4, reference_pairs=1, autoattack_pairs=1, apgd_steps=2, square_queries=5, hsj_steps=1,
        hsj_initial_evals=5, hsj_max_evals=10, hsj_pairs=1, audit_budget="fast",
    )  # fmt: skip
    rows, points = bench.run_benchmarks(tiny, log=lambda line: None)
    json_path, md_path = bench.write_results(
        tmp_path / "results", rows, bench.markdown(rows, points, tiny, {})
    )

    written = json.loads(json_path.read_text())
    assert written == rows
    for row in written:
        assert tuple(row) == bench.ROW_KEYS
        assert isinstance(row["name"], str) and isinstance(row["note"], str) and row["note"]
        for key in ("ours_s", "reference_s", "ratio"):
            assert row[key] is None or (isinstance(row[key], float) and row[key] >= 0), (row["name"], key)
        if row["ratio"] is not None:
            assert row["ours_s"] is not None and row["reference_s"] is not None
    names = {row["name"] for row in written}
    required = {
        "train_epoch_vs_plain_loop", "distill_epoch_vs_plain_loop", "fgsm_vs_raw_foolbox",
        "pgd_vs_raw_foolbox", "cw_vs_raw_foolbox", "pgd_vs_torchattacks", "adv_epoch_vs_plain_epoch",
        "adv_epoch_vs_plain_pgd_at_loop", "hsj_vs_foolbox",
    }  # fmt: skip
    assert required <= names
    assert all(r["ratio"] is not None for r in written if r["name"] in required - {"pgd_vs_torchattacks"})
    if "skipped" not in next(r["note"] for r in written if r["name"] == "pgd_vs_torchattacks"):
        assert "pgd_vs_torchattacks_images_only" in names
    assert "cw_curve_steps2_search1_stepsize0.02" in names  # the curve at the default step size
    assert [(p["steps"], p["binary_search_steps"]) for p in points] == [(2, 1)]
    assert all("DIFFERENT" not in r["note"] for r in written)  # our attacks found what Foolbox found
    if "skipped" not in next(r["note"] for r in written if r["name"] == "pgd_vs_torchattacks"):
        references = {f"{a}_{norm}_vs_torchattacks" for a in ("apgd-ce", "apgd-dlr", "apgd-t", "square")
                      for norm in ("linf", "l2")}  # fmt: skip
        references |= {
            f"{b}_vs_torchattacks_autoattack{s}" for b in ("autoattack", "audit") for s in ("", "_100_steps")
        }
        assert references <= names
        for r in written:
            if r["name"] in references:  # a time is never reported without both robust accuracies
                assert r["ratio"] is not None and "robust accuracy" in r["note"], r

    text = md_path.read_text()
    assert text.startswith("# Benchmarks") and "| train_epoch_vs_plain_loop |" in text
    assert "Carlini-Wagner" in text and "cw_curve_" not in text  # the curve is its own table


def test_cw_convergence_measures_old_new_and_reference_on_the_same_inputs(trained_runs):
    spec = importlib.util.spec_from_file_location(
        "defdistill_cw_convergence", HARNESS.with_name("cw_convergence.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.measure("digits", trained_runs.student_t100, Path("data"), 3, log=lambda line: None)
    assert [r["config"] for r in rows] == ["old", "new", "reference"]
    assert len({r["settings"] for r in rows}) == 3 and {r["n"] for r in rows} == {3}
    reference = rows[-1]
    assert reference["vs_reference"] == 0 and reference["per_input_ratio_median"] == 1
    text = module.markdown(rows, {"inputs per model": "3"})
    assert "| digits | student-T100 | new |" in text and "1000 Adam steps of 0.01 x 9 searches" in text


def test_readme_timing_block_is_the_one_generated_from_the_committed_benchmarks(bench):
    rows = json.loads((HARNESS.parents[1] / "results" / "benchmarks.json").read_text())
    readme = (HARNESS.parents[1] / "README.md").read_text()
    assert (
        bench.readme_block(rows) in readme
    )  # regenerate: benchmarks/run.py --readme README.md --readme-from ...
    assert "machine" in {r["name"] for r in rows}  # the block names the machine it was measured on


def test_image_passes_are_counted_with_and_without_the_inputs_gradient(bench, trained_runs):
    import torch

    from defdistill.store.runs import load_run

    model, _ = load_run(trained_runs.teacher_t1, dataset="digits")
    x = torch.rand(5, 1, 8, 8)
    passes = bench.ImagePasses()
    with bench.counting_image_passes(passes):
        with torch.no_grad():
            model(x)
        model(x.clone().requires_grad_(True)).sum().backward()
        model(x[:2].clone().requires_grad_(True))
    model(x)  # after the block: not counted
    assert (passes.forward, passes.backward) == (5, 7)
    assert passes.cost(1.0, 3.0) == 26.0


def test_only_measures_the_named_rows_again_and_keeps_every_other(bench, tmp_path, monkeypatch):
    results = tmp_path / "results"
    rows = [
        bench.row("machine", None, None, None, "a CPU"),
        bench.row("demo_wall_time", 90.0, 1.0, 90.0, "old"),
    ]
    rows.append(bench.row("train_epoch_vs_plain_loop", 1.0, 1.0, 1.0, "kept"))
    bench.write_results(results, rows, "# Benchmarks\n\nMode: full. torch: x; load average at start: 9.\n")
    monkeypatch.setitem(
        bench.ONLY_ROWS, "demo_wall_time", lambda cfg: [bench.row("demo_wall_time", 60.0, 1.0, 60.0, "new")]
    )
    assert (
        bench.remeasure(["demo_wall_time"], bench.FULL, results, {"load average at start": "0.5"}, None) == 0
    )
    written = json.loads((results / "benchmarks.json").read_text())
    assert [(r["name"], r["note"]) for r in written] == [
        ("machine", "a CPU"),
        ("demo_wall_time", "new"),
        ("train_epoch_vs_plain_loop", "kept"),
    ]
    text = (results / "benchmarks.md").read_text()
    assert "earlier full run: torch: x; load average at start: 9" in text and ": demo_wall_time;" in text
    assert bench.remeasure(["bogus"], bench.FULL, results, {}, None) == 2


def test_the_performance_page_table_is_the_one_generated_from_the_committed_benchmarks(bench):
    rows = json.loads((HARNESS.parents[1] / "results" / "benchmarks.json").read_text())
    page = (HARNESS.parents[1] / "docs" / "performance.md").read_text()
    assert (
        bench.docs_block(rows) in page
    )  # regenerate: benchmarks/run.py --readme README.md --readme-from ...
