"""Fault injection: foreign checkpoints, damaged files, bad input, interruptions, concurrent
writers and numerical faults. Each must end in one clear line (or exit 130), never run foreign
code, and leave every earlier result and run readable."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, invoke
from safetensors.torch import load_file, save_file

from defdistill.core import fileio
from defdistill.core.fileio import atomic_path, atomic_write_text, deferred_interrupts
from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.evaluate.attacks import attack_model
from defdistill.models import build_model
from defdistill.store.runs import load_run, save_run, sha256_file
from defdistill.train import loop as training
from defdistill.train.distill import distill
from defdistill.train.loop import train_teacher

TIMEOUT = 120  # seconds for any subprocess; a hang fails the test instead of blocking the suite


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*.tmp")]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def cli_process(*args: object, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GIT_PYTHON_REFRESH": "quiet"}
    return subprocess.Popen(
        [sys.executable, "-m", "defdistill.cli", *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, errs = process.communicate()
            pytest.fail(f"the command ended (rc {process.returncode}) before {what}:\n{out}\n{errs}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class InterruptAfter:
    """A progress reporter that raises KeyboardInterrupt (as Ctrl-C would) after k steps."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        def advance(steps: int = 1) -> None:
            self.done += steps
            if self.done >= self.steps:
                raise KeyboardInterrupt

        yield advance


# --- foreign and damaged checkpoints ----------------------------------------------------------


class _CreatesFileWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _write_pickle(path: Path, kind: str, marker: Path) -> None:
    payload = {"features.0.weight": _CreatesFileWhenUnpickled(marker)}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=0 if kind == "protocol-0" else 4))


@pytest.fixture
def forbid_unpickling(monkeypatch):
    """Fail the test if anything reaches for an unpickler, weights_only or not."""

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("kind", ["torch.save", "protocol-4", "protocol-0"])
def test_pickle_under_the_weights_name_is_refused_and_never_unpickled(kind, runs_copy, tmp_path):
    control = tmp_path / "control-marker"
    _write_pickle(tmp_path / "control.pkl", kind, control)
    if kind != "torch.save":
        pickle.loads((tmp_path / "control.pkl").read_bytes())  # the payload is live: unpickling runs it
        assert control.exists()
    marker = tmp_path / "pwned"
    run = runs_copy / "digits" / "teacher-T1"
    _write_pickle(run / "model.safetensors", kind, marker)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
        patch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads was called"))
        with pytest.raises(DefdistillError, match="is a pickle") as caught:
            load_run(run, dataset="digits")
    assert "model.safetensors" in str(caught.value) and "save_file" in str(caught.value)
    assert not marker.exists()


def test_pickle_passed_as_teacher_or_model_is_refused_by_name(runs_copy, tmp_path, forbid_unpickling):
    marker = tmp_path / "pwned"
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    _write_pickle(downloaded / "model.pt", "protocol-4", marker)
    result = invoke("distill", "--teacher", downloaded / "model.pt", "--runs-dir", runs_copy,
                    "--results-dir", tmp_path / "results", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "model.pt", "pickle", "never loaded", "safetensors")
    result = invoke("attack", "--model", downloaded, "--runs-dir", runs_copy,
                    "--results-dir", tmp_path / "results", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "model.pt", "pickle")
    assert not marker.exists()
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("keep", [4, 200, "half"])
def test_truncated_weights_are_reported_as_truncated(keep, runs_copy):
    weights = runs_copy / "digits" / "teacher-T1" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2 if keep == "half" else keep])
    with pytest.raises(DefdistillError, match="truncated"):
        load_run(weights.parent, dataset="digits")


def test_flipped_byte_in_the_weights_fails_the_hash_check(runs_copy):
    weights = runs_copy / "digits" / "teacher-T1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DefdistillError, match="does not match the hash"):
        load_run(weights.parent, dataset="digits")


def _edit_meta(run: Path, edit) -> None:
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps(edit(meta)))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        (lambda m: {k: v for k, v in m.items() if k != "arch"}, "lacks arch"),
        (lambda m: m | {"T": "hot"}, "T is 'hot'"),
        (lambda m: m | {"T": -1}, "not a finite number > 0"),
        (lambda m: m | {"dataset": ["digits"]}, "dataset is ['digits']"),
        (lambda m: m | {"role": "oracle"}, "role is 'oracle'"),
        (lambda m: m | {"weights_sha256": 42}, "weights_sha256"),
        (lambda m: m | {"arch": "resnet-9000"}, "unknown architecture 'resnet-9000'"),
        (lambda m: m | {"arch": "papernot-mnist"}, "architecture 'papernot-mnist' of dataset 'digits'"),
        (lambda m: m | {"dataset": "mnist"}, "trained on 'mnist', not 'digits'"),
    ],
)
def test_malformed_or_foreign_meta_json_is_one_line(edit, fragment, runs_copy, tmp_path):
    run = runs_copy / "digits" / "teacher-T1"
    if isinstance(edit, str):
        (run / "meta.json").write_text(edit)
    else:
        _edit_meta(run, edit)
    result = invoke("attack", "--model", run, "--runs-dir", runs_copy, "--results-dir", tmp_path / "r",
                    "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, fragment)


def test_weights_of_another_architecture_are_refused(runs_copy):
    run = runs_copy / "digits" / "teacher-T1"
    state = load_file(str(run / "model.safetensors"))
    state["classifier.1.weight"] = state["classifier.1.weight"][:64].contiguous()  # a narrower layer
    save_file(state, str(run / "model.safetensors"))
    _edit_meta(run, lambda m: m | {"weights_sha256": sha256_file(run / "model.safetensors")})
    with pytest.raises(DefdistillError, match="does not fit architecture 'digits-cnn'.*classifier.1.weight"):
        load_run(run, dataset="digits")


# --- atomic writes and interrupts -------------------------------------------------------------


def test_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half a ta")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert temp_files(tmp_path) == []


def test_sigint_during_save_run_is_delivered_after_weights_and_sidecar_agree(runs_copy, monkeypatch):
    run = runs_copy / "digits" / "teacher-T1"
    renamed = []

    def replace_then_interrupt(src, dst):
        renamed.append(Path(dst).name)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two renames
        os.rename(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace_then_interrupt)
    other = build_model("digits-cnn", (1, 8, 8), 10, (0.3054,), (0.3761,))
    with pytest.raises(KeyboardInterrupt):
        save_run(run, other, json.loads((run / "meta.json").read_text()))
    assert renamed == ["model.safetensors", "meta.json"]  # both renames ran before the interrupt
    model, _ = load_run(run, dataset="digits")  # the sidecar vouches for the new weights
    assert torch.equal(model.classifier[1].weight, other.classifier[1].weight)
    assert temp_files(run) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027], ids=lambda m: f"umask-{m:03o}")
def test_saved_weights_get_the_permissions_of_a_plain_write_as_meta_json_does(umask, tmp_path):
    model = build_model("digits-cnn", (1, 8, 8), 10, (0.3054,), (0.3761,))
    cache = tmp_path / "cache.safetensors"
    previous = os.umask(umask)
    try:
        save_run(tmp_path / "run", model, {"role": "teacher"})
        # any writer that puts its own file in place of the temporary one, as save_file does
        fileio.atomic_write_with(cache, lambda tmp: save_file({"x": torch.zeros(2)}, str(tmp)))
        (tmp_path / "plain.txt").write_text("a plain write\n")
    finally:
        os.umask(previous)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o666 & ~umask
    for path in (tmp_path / "run" / "model.safetensors", tmp_path / "run" / "meta.json", cache):
        assert oct(path.stat().st_mode & 0o777) == oct(plain), path.name
    assert load_file(cache)["x"].tolist() == [0.0, 0.0]
    assert temp_files(tmp_path) == []


def test_deferred_interrupts_restore_the_previous_handlers():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        finished = True
    assert finished
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_during_an_attack_exits_130_and_keeps_earlier_results(trained_runs, tmp_path):
    results = tmp_path / "results"
    attack_model(model="teacher-T100", attacks=["fgsm"], eps=[0.1], n=20, runs_dir=trained_runs.runs_dir,
                 results_dir=results, device="cpu")  # fmt: skip
    earlier = snapshot(results / "records")
    process = cli_process(
        "attack", "--model", "teacher-T1", "--attacks", "fgsm,cw", "--eps", "0.1", "--n", "200",
        "--runs-dir", trained_runs.runs_dir, "--results-dir", results, "--device", "cpu", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    csv = results / "robustness.csv"
    wait_for(lambda: "teacher-T1,teacher,1,fgsm" in csv.read_text(), process, "the fgsm row was recorded")
    process.send_signal(signal.SIGTERM)  # now inside the Carlini-Wagner attack
    out, errs = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, (out, errs)
    assert errs.strip().splitlines() == [
        "interrupted: finished runs and tables are intact; nothing partial was written"
    ]
    assert all((results / "records" / name).read_bytes() == data for name, data in earlier.items())
    table = pd.read_csv(csv)
    assert set(zip(table["model"], table["attack"], strict=True)) == {
        ("teacher-T100", "fgsm"),
        ("teacher-T1", "fgsm"),
    }
    assert temp_files(results, trained_runs.runs_dir) == []


@pytest.fixture(scope="module")
def reference_teacher(tmp_path_factory) -> dict:
    """teacher-T1 trained 4 epochs with seed 3, uninterrupted: what a resumed run must equal."""
    runs = tmp_path_factory.mktemp("reference") / "runs"
    return train_teacher(T=1, epochs=4, seed=3, runs_dir=runs, device="cpu").meta


def test_sigint_during_training_keeps_the_finished_run_and_resume_gives_identical_weights(
    runs_copy, tmp_path, reference_teacher
):
    run = runs_copy / "digits" / "teacher-T1"
    finished = snapshot(run)
    args = ["--T", "1", "--epochs", "4", "--seed", "3", "--runs-dir", runs_copy, "--device", "cpu", "--quiet"]
    args.append("--force")  # over the finished run, which must survive the interrupt
    process = cli_process("train-teacher", *args, cwd=tmp_path)
    wait_for(lambda: (run / "checkpoint.json").exists(), process, "the first epoch's checkpoint")
    process.send_signal(signal.SIGINT)
    out, errs = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, (out, errs)
    assert "interrupted" in errs and "Traceback" not in errs, errs
    assert {k: v for k, v in snapshot(run).items() if not k.startswith("checkpoint")} == finished
    assert load_run(run, dataset="digits")[1]["epochs"] == 15  # the earlier finished run, still readable
    assert temp_files(runs_copy) == []
    epochs_done = json.loads((run / "checkpoint.json").read_text())["epoch"]
    assert 1 <= epochs_done < 4, epochs_done

    result = invoke("train-teacher", *args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resuming teacher-T1 after epoch {epochs_done} of 4" in result.output, result.output
    meta = json.loads((run / "meta.json").read_text())
    assert meta["final_train_loss"] == reference_teacher["final_train_loss"], (epochs_done, meta)
    assert meta["weights_sha256"] == reference_teacher["weights_sha256"]
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoint.safetensors").exists()


def test_interrupted_distillation_resumes_to_the_uninterrupted_weights(trained_runs, runs_copy, tmp_path):
    settings = dict(T=100, epochs=3, seed=5, device="cpu")
    reference_runs = tmp_path / "reference"
    shutil.copytree(trained_runs.runs_dir, reference_runs)
    reference = distill(**settings, runs_dir=reference_runs, results_dir=tmp_path / "ref-results", force=True)

    with pytest.raises(KeyboardInterrupt):
        distill(
            **settings,
            runs_dir=runs_copy,
            results_dir=tmp_path / "results",
            progress=InterruptAfter(2),
            force=True,
        )
    run = runs_copy / "digits" / "student-T100"
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 2
    with pytest.raises(DefdistillError, match="made with seed=5, this command asks for seed=6"):
        distill(**(settings | {"seed": 6}), runs_dir=runs_copy, results_dir=tmp_path / "results", resume=True)
    resumed = distill(**settings, runs_dir=runs_copy, results_dir=tmp_path / "results", resume=True)
    assert resumed.meta["weights_sha256"] == reference.meta["weights_sha256"]
    reference_gap = pd.read_csv(tmp_path / "ref-results" / "accuracy_gap.csv")
    assert pd.read_csv(tmp_path / "results" / "accuracy_gap.csv").equals(reference_gap)


def test_damaged_training_checkpoint_refuses_to_resume(runs_copy, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_teacher(T=1, epochs=3, runs_dir=runs_copy, device="cpu", progress=InterruptAfter(1), force=True)
    tensors = runs_copy / "digits" / "teacher-T1" / "checkpoint.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])
    result = invoke("train-teacher", "--T", "1", "--epochs", "3", "--runs-dir", runs_copy, "--device", "cpu",
                    "--resume")  # fmt: skip
    assert_one_line_error(result, "checkpoint.safetensors", "truncated", "drop --resume")
    assert load_run(tensors.parent, dataset="digits")[1]["epochs"] == 15  # the finished run beside it


# --- numerical faults -------------------------------------------------------------------------


def test_nan_loss_stops_training_and_keeps_the_finished_run_and_last_good_checkpoint(runs_copy, monkeypatch):
    x_train, _ = load_dataset("digits", "train")
    batches_per_epoch = math.ceil(len(x_train) / training.recipe_for("digits").batch_size)
    calls = []

    def nan_from_epoch_two(T):
        def loss(logits, targets, labels):
            calls.append(1)
            value = torch.nn.functional.cross_entropy(logits / T, labels)
            return value * float("nan") if len(calls) > batches_per_epoch else value

        return loss

    monkeypatch.setattr(training, "temperature_cross_entropy", nan_from_epoch_two)
    run = runs_copy / "digits" / "teacher-T1"
    finished = snapshot(run)
    result = invoke("train-teacher", "--T", "1", "--epochs", "3", "--runs-dir", runs_copy, "--device", "cpu",
                    "--quiet", "--force")  # fmt: skip
    assert_one_line_error(result, "loss became nan in epoch 2", "lower the learning rate", "after epoch 1")
    assert {k: v for k, v in snapshot(run).items() if not k.startswith("checkpoint")} == finished
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 1
    assert all(map(math.isfinite, json.loads((run / "checkpoint.json").read_text())["losses"]))
    load_run(run, dataset="digits")
    assert temp_files(runs_copy) == []


# --- concurrent writers -----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from defdistill.store.tables import record_rows

    results, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    (results.parent / f"ready-{who}").touch()
    while len(list(results.parent.glob("ready-*"))) < 2:  # start together
        time.sleep(0.005)
    for i in range(count):
        row = dict(dataset="digits", model=f"{who}-{i}", role="teacher", T=1.0, attack="fgsm",
                   norm="linf", eps=0.1, n=10, clean_acc=1.0, robust_acc=0.5, success_rate=0.5,
                   median_dist=0.1, seconds=0.0)
        shared = dict(row, model="shared", eps=round(0.01 * i, 2))  # the same configurations from both
        record_rows(results, "robustness", [row, shared])
    """
)


def test_two_concurrent_writers_lose_and_duplicate_no_row(tmp_path):
    results, count = tmp_path / "results", 15
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(results), who, str(count)], stderr=subprocess.PIPE
        )
        for who in ("a", "b")
    ]
    for writer in writers:
        _, errs = writer.communicate(timeout=TIMEOUT)
        assert writer.returncode == 0, errs.decode()
    table = pd.read_csv(results / "robustness.csv")
    expected = {f"{who}-{i}" for who in "ab" for i in range(count)}
    assert len(table) == 3 * count
    assert set(table["model"]) == expected | {"shared"}
    assert not table.duplicated(["model", "eps"]).any()
    assert (table["model"] == "shared").sum() == count
    assert temp_files(results) == []


# --- bad input, before any heavy work ---------------------------------------------------------


def test_unwritable_results_or_runs_folder_fails_before_any_work(runs_copy, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    student = runs_copy / "digits" / "student-T100"
    before = snapshot(student)
    result = invoke("attack", "--model", "teacher-T1", "--runs-dir", runs_copy, "--results-dir", a_file,
                    "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "not-a-folder", "--results-dir")
    result = invoke("distill", "--T", "100", "--epochs", "1", "--runs-dir", runs_copy,
                    "--results-dir", a_file, "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "--results-dir")
    assert snapshot(student) == before  # nothing trained, nothing replaced
    result = invoke("train-teacher", "--epochs", "1", "--runs-dir", a_file / "runs", "--device", "cpu")
    assert_one_line_error(result, "--runs-dir")
    result = invoke("demo", "--epochs", "1", "--runs-dir", tmp_path / "demo-runs", "--results-dir", a_file)
    assert_one_line_error(result, "--results-dir")
    assert not (tmp_path / "demo-runs" / "digits" / "teacher-T1").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_results_folder_is_one_line(trained_runs, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o500)
    try:
        result = invoke("attack", "--model", "teacher-T1", "--runs-dir", trained_runs.runs_dir,
                        "--results-dir", results, "--device", "cpu")  # fmt: skip
        assert_one_line_error(result, "cannot write", "--results-dir")
    finally:
        results.chmod(0o700)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train-teacher", "--T", "0"], "temperature must be"),
        (["train-teacher", "--T", "-2"], "temperature must be"),
        (["train-teacher", "--T", "nan"], "temperature must be"),
        (["train-teacher", "--T", "inf"], "temperature must be"),
        (["distill", "--T", "-inf"], "temperature must be"),
        (["demo", "--T", "nan"], "temperature must be"),
        (["attack", "--model", "teacher", "--T", "0"], "temperature must be"),
        (["attack", "--model", "teacher-T1", "--eps", "1.5"], "epsilon must lie in [0, 1]"),
        (["attack", "--model", "teacher-T1", "--eps", "-0.1"], "epsilon must lie in [0, 1]"),
        (["attack", "--model", "teacher-T1", "--eps", "nan"], "epsilon must lie in [0, 1]"),
        (["attack", "--model", "teacher-T1", "--eps", "0.1,x"], "comma-separated numbers"),
        (["attack", "--model", "teacher-T1", "--attacks", "fgsm,deepfool"], "unknown attack 'deepfool'"),
        (["attack", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train-teacher", "--arch", "resnet-9000"], "unknown architecture 'resnet-9000'"),
        (["distill", "--method", "telepathy"], "unknown distillation method 'telepathy'"),
        (["train-teacher", "--device", "tpu"], "unknown device 'tpu'"),
        (["attack", "--model", "teacher-T1", "--device", "quantum"], "unknown device 'quantum'"),
        (["attack", "--model", "teacher-T1", "--n", "0"], "--n must be a positive integer"),
        (["attack", "--model", "teacher-T1", "--n", "-5"], "--n must be a positive integer"),
        (["demo", "--n", "0"], "--n must be a positive integer"),
        (["train-teacher", "--epochs", "0"], "--epochs must be a positive integer"),
        (["distill", "--epochs", "-1"], "--epochs must be a positive integer"),
        (["demo", "--epochs", "0"], "--epochs must be a positive integer"),
        (["train-teacher", "--seed", "-1"], "--seed must be an integer"),
        (["attack", "--model", "student-T7"], "no run 'student-T7'"),
        (["attack", "--n", "ten"], "Invalid value for '--n'"),
        (["attack", "--model", "teacher-T1", "--bogus"], "No such option"),
        (["no-such-command"], "No such command"),
        (["train-teacher", "--dataset", "mnist"], "dataset 'mnist'"),
    ],
)
def test_every_bad_input_is_one_line_without_traceback(args, fragment, trained_runs, tmp_path):
    runs = (
        trained_runs.runs_dir if args[0] == "attack" else tmp_path / "runs"
    )  # the shared runs stay read-only
    folders = ["--runs-dir", runs, "--data-dir", tmp_path / "no-data"]
    if args[0] != "train-teacher":  # the one command that writes no table
        folders += ["--results-dir", tmp_path / "results"]
    started = time.perf_counter()
    result = invoke(*args, *folders)
    assert_one_line_error(result, fragment)
    assert time.perf_counter() - started < 10  # refused before any training or attack
    assert not (tmp_path / "results" / "robustness.csv").exists()


def test_debug_shows_the_traceback_of_a_user_error():
    result = invoke("--debug", "train-teacher", "--T", "0")
    assert isinstance(result.exception, DefdistillError)
    assert result.exc_info is not None and result.exc_info[2] is not None


# --- determinism ------------------------------------------------------------------------------


def test_same_command_with_the_same_seed_gives_identical_tables(trained_runs, tmp_path):
    tables = []
    for name in ("first", "second"):
        results = tmp_path / name
        result = invoke("attack", "--model", "teacher-T1", "--attacks", "fgsm,pgd,cw", "--eps", "0.1,0.3",
                        "--n", "20", "--seed", "7", "--runs-dir", trained_runs.runs_dir,
                        "--results-dir", results, "--device", "cpu", "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.output
        tables.append(pd.read_csv(results / "robustness.csv").drop(columns=["seconds"]).to_csv(index=False))
    assert tables[0] == tables[1]
    assert len(tables[0].splitlines()) == 1 + 5


def test_a_corrupt_record_stops_tables_with_one_line_naming_the_file(tmp_path):
    from defdistill.store.tables import record_rows

    row = {"dataset": "digits", "model": "teacher-T1", "role": "teacher", "T": 1.0, "attack": "fgsm",
           "norm": "linf", "eps": 0.1, "n": 10, "clean_acc": 1.0, "robust_acc": 0.5, "success_rate": 0.5,
           "median_dist": 0.1, "seconds": 0.1}  # fmt: skip
    record_rows(tmp_path, "robustness", [row])
    record = next((tmp_path / "records" / "robustness").glob("*.json"))
    record.write_text("{not json")
    line = assert_one_line_error(invoke("tables", "--results-dir", tmp_path), record.name, "cannot be read")
    assert "delete it" in line


@pytest.mark.parametrize(
    "change, fault",
    [({"robust_acc": "lots"}, "robust_acc is 'lots', not a number"),
     ({"n": -5}, "n is -5, not an integer >= 1"),
     ({"success_rate": 1.5}, "success_rate is 1.5, outside [0, 1]"), ({"norm": "l7"}, "norm is 'l7'")],
)  # fmt: skip
def test_a_record_that_breaks_the_schema_is_refused_not_tabulated(tmp_path, change, fault):
    import json

    from defdistill.store.tables import record_rows

    row = {"dataset": "digits", "model": "teacher-T1", "role": "teacher", "T": 1.0, "attack": "fgsm",
           "norm": "linf", "eps": 0.1, "n": 10, "clean_acc": 1.0, "robust_acc": 0.5, "success_rate": 0.5,
           "median_dist": 0.1, "seconds": 0.1}  # fmt: skip
    record_rows(tmp_path, "robustness", [row])
    record = next((tmp_path / "records" / "robustness").glob("*.json"))
    record.write_text(json.dumps(json.loads(record.read_text()) | change))
    assert_one_line_error(invoke("tables", "--results-dir", tmp_path), record.name, fault)


def test_privacy_rejects_a_bad_seed_and_a_results_file_before_training(tmp_path):
    import time

    started = time.perf_counter()
    assert_one_line_error(invoke("privacy", "--seed", "-1", "--runs-dir", tmp_path / "runs"), "--seed")
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("x")
    assert_one_line_error(
        invoke("privacy", "--results-dir", not_a_folder, "--runs-dir", tmp_path / "runs"), "--results-dir"
    )
    assert not (tmp_path / "runs").exists()  # nothing trained or saved
    assert time.perf_counter() - started < 5 * 2  # both refused within seconds
