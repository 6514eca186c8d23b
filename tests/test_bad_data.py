"""Bad data is rejected first and cheaply: one line, before any heavy work, at a bounded cost."""

from __future__ import annotations

import gzip
import os
import socket
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, invoke
from test_datasets import idx_bytes, write_mnist

from defdistill.data.files import read_idx
from defdistill.errors import DefdistillError


def _bomb(path: Path, count: int, zeros: int) -> Path:
    """A gzip file whose IDX header promises `count` images of 28 x 28 and holds `zeros` bytes."""
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28))
        chunk = bytes(1 << 22)
        for _ in range(zeros // len(chunk)):
            handle.write(chunk)
    return path


def test_a_gzip_bomb_is_refused_after_reading_only_what_its_header_promises(tmp_path: Path):
    bomb = _bomb(tmp_path / "train-images-idx3-ubyte.gz", 60_000, 256 << 20)  # 256 MB inflated
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(DefdistillError, match="holds more bytes of data where its header"):
        read_idx(bomb)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 2 and peak < 100e6, (seconds, peak)  # 47 MB promised, nothing beyond


@pytest.mark.parametrize(
    ("count", "message"),
    [(10_000_000, "promises 10000000 items, more than 100000"), (90_000, "more than a file of")],
)
def test_an_idx_header_promising_too_much_is_refused_before_its_body_is_read(tmp_path, count, message):
    bomb = _bomb(tmp_path / "train-images-idx3-ubyte.gz", count, 0)
    with pytest.raises(DefdistillError, match=message):
        read_idx(bomb)


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_an_empty_split_is_refused_before_training(tmp_path: Path, split: str):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((0,), dtype=np.uint8)))
    done = invoke(
        "train-teacher", "--dataset", "mnist", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs"
    )
    assert_one_line_error(done, "split of 'mnist'", "holds no images")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("meta.json"))


def test_deeply_nested_specs_and_records_are_one_line(tmp_path: Path):
    spec = tmp_path / "deep.yaml"
    spec.write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_one_line_error(invoke("sweep", spec), "deep.yaml nests deeper than 32 levels")
    records = tmp_path / "results" / "records" / "robustness"
    records.mkdir(parents=True)
    (records / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(invoke("tables", "--results-dir", tmp_path / "results"), "deep.json", "too deeply")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from defdistill.train.loop import train_teacher

    runs = tmp_path_factory.mktemp("bad-data") / "runs"
    train_teacher(T=1, epochs=1, runs_dir=runs, device="cpu")
    return runs


def test_an_n_above_the_test_split_says_it_was_clamped(tiny_run: Path, tmp_path: Path):
    result = invoke(
        "attack", "--model", "teacher-T1", "--attacks", "fgsm", "--eps", "0.1", "--n", 5000,
        "--runs-dir", tiny_run, "--results-dir", tmp_path / "results", "--device", "cpu", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--n 5000 is more than the 360 test inputs of digits: attacking all 360" in result.output


def test_non_finite_weights_are_refused_before_an_attack(tiny_run: Path, tmp_path: Path):
    from defdistill.store.runs import load_run, save_run

    model, meta = load_run(tiny_run / "digits" / "teacher-T1")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_run(tmp_path / "runs" / "digits" / "teacher-T1", model, meta)
    result = invoke(
        "attack", "--model", "teacher-T1", "--attacks", "fgsm", "--eps", "0.1", "--n", 20,
        "--runs-dir", tmp_path / "runs", "--results-dir", tmp_path / "results", "--device", "cpu",
    )  # fmt: skip
    assert_one_line_error(result, "weights that are NaN or infinite")
    assert not (tmp_path / "results" / "records").exists()


def test_a_damaged_record_stops_an_attack_before_it_runs(tiny_run: Path, tmp_path: Path):
    records = tmp_path / "results" / "records" / "robustness"
    records.mkdir(parents=True)
    (records / "digits__x__fgsm__linf__0.1.json").write_text("{not json")
    started = time.perf_counter()
    result = invoke(
        "attack", "--model", "teacher-T1", "--attacks", "cw", "--n", 200,
        "--runs-dir", tiny_run, "--results-dir", tmp_path / "results", "--device", "cpu",
    )  # fmt: skip
    assert_one_line_error(result, "digits__x__fgsm__linf__0.1.json cannot be read")
    assert time.perf_counter() - started < 10  # CW on 200 inputs was never started


def test_temporary_files_a_killed_writer_left_are_removed_at_start(tmp_path: Path):
    records = tmp_path / "results" / "records" / "robustness"
    records.mkdir(parents=True)
    host = socket.gethostname()[:24]
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs
    left = records / f".r.json.{host}-{dead}-0123456789ab.tmp"
    live = records / f".r.json.{host}-{os.getpid()}-0123456789ab.tmp"
    old_style = records / ".r.json.0123456789ab.tmp"
    for path in (left, live, old_style):
        path.write_bytes(b"")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    assert invoke("tables", "--results-dir", tmp_path / "results").exit_code == 0
    assert not left.exists() and not old_style.exists()
    assert live.exists()  # a writer still running keeps its file
