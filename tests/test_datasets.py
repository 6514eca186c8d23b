"""MNIST, Fashion-MNIST and CIFAR-10 loaders on tiny files in the real formats and layouts.

The files are written here byte for byte as their authors distribute them (IDX with a
big-endian header, raw or gzip; CIFAR-10's python batches pickled the way Python 2 wrote
them) and read through `load_dataset`, the path every command takes.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, invoke

from defdistill.data.files import CIFAR_BATCHES, read_cifar_batch
from defdistill.data.registry import fetch_dataset, load_dataset
from defdistill.errors import DefdistillError

N_TRAIN, N_TEST = 24, 12


# --- writers in the real formats ---------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, then each
    dimension as a big-endian uint32, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny train and test splits in <root>/<folder>/raw/, as torchvision lays them out."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = np.arange(n, dtype=np.uint8) % 10
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return arrays


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), as the original CIFAR-10
    batches were written by cPickle; Python 3's pickler would write `_codecs.encode` calls."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def cifar_batch(n: int, offset: int, rng: np.random.Generator) -> dict:
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in (np.arange(n) + offset) % 10],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{offset + i}.png".encode() for i in range(n)],
    }


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, dict]:
    """Tiny cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) as Python 2 wrote it."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate((*CIFAR_BATCHES["train"], "test_batch")):
        batches[name] = cifar_batch(per_batch, i * per_batch, rng)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    for name, content in [*batches.items(), ("batches.meta", meta)]:
        with open(folder / name, "wb") as handle:
            Python2Pickler(handle, protocol=2).dump(content)
    return batches


# --- loading ------------------------------------------------------------------------------------


def test_mnist_loads_from_raw_idx_files(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    x, y = load_dataset("mnist", "train", tmp_path)
    assert x.shape == (N_TRAIN, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0)
    assert torch.equal(x[:, 0], expected)
    assert y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    x_test, y_test = load_dataset("mnist", "test", tmp_path)
    assert x_test.shape == (N_TEST, 1, 28, 28) and len(y_test) == N_TEST


def test_fashion_mnist_loads_from_gzipped_idx_files(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, folder="FashionMNIST", gz=True, seed=1)
    x, y = load_dataset("fashion-mnist", "test", tmp_path)
    assert torch.equal(x[:, 0] * 255, torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.float32)))
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_cifar10_loads_python2_batches_with_channels_first(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    x, y = load_dataset("cifar10", "train", tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.tolist() == [i % 10 for i in range(20)]
    first = batches["data_batch_1"][b"data"][0]
    # A row is 1024 red bytes, then 1024 green, then 1024 blue, each 32 x 32 row-major.
    for channel, row, col in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert x[0, channel, row, col].item() == pytest.approx(first[channel * 1024 + row * 32 + col] / 255.0)
    x_test, y_test = load_dataset("cifar10", "test", tmp_path)
    assert x_test.shape == (4, 3, 32, 32)
    assert torch.equal(x_test[3].flatten() * 255, torch.from_numpy(batches["test_batch"][b"data"][3]).float())


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batch_repickled_by_python3_loads(tmp_path: Path, protocol: int) -> None:
    """Python 3 writes bytes through _codecs.encode at protocol 2 and numpy arrays through
    _frombuffer at protocol 5; both are what a re-saved batch holds."""
    batch = cifar_batch(3, 0, np.random.default_rng(2))
    batch = {k.decode(): v for k, v in batch.items()}  # str keys, as Python 3 code would write them
    batch["labels"] = np.array(batch["labels"], dtype=np.int64)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = read_cifar_batch(path)
    assert np.array_equal(images.reshape(3, -1), batch["data"])
    assert labels.tolist() == batch["labels"].tolist()


# --- untrusted pickles --------------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_malicious_cifar_batch_is_refused_without_running(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _RunsCommand(f"touch {marker}"), "labels": [0]}, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(DefdistillError, match=r"asks for posix\.system, which is refused") as caught:
        load_dataset("cifar10", "test", tmp_path)
    assert not marker.exists()
    assert "\n" not in str(caught.value)
    pickle.loads(payload)  # the payload is real: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"data": np.array([1, 2], dtype=object), "labels": [0, 1]}, protocol=2),  # object array
        pickle.dumps(b"x", protocol=2).replace(b"latin1", b"base64"),  # _codecs with another codec
        b"\x80\x02cbuiltins\neval\nq\x00X\x04\x00\x00\x001+1q\x01\x85q\x02Rq\x03.",  # eval('1+1')
    ],
    ids=["object-array", "codecs-base64", "builtins-eval"],
)
def test_cifar_reader_refuses_what_a_batch_never_needs(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(DefdistillError, match="not a"):
        read_cifar_batch(path)


# --- missing and damaged files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "folder", "some_files"),
    [
        ("mnist", "MNIST/raw", ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        ("fashion-mnist", "FashionMNIST/raw", ("train-labels-idx1-ubyte",)),
        ("cifar10", "cifar-10-batches-py", ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")),
    ],
)
def test_missing_files_offline_name_the_files_and_where_to_put_them(
    tmp_path: Path, dataset: str, folder: str, some_files: tuple[str, ...]
) -> None:
    with pytest.raises(DefdistillError) as caught:
        load_dataset(dataset, "train", tmp_path / "data")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "data" / folder) in message
    assert all(name in message for name in some_files)
    assert "--download" in message


def test_missing_dataset_through_the_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke("train-teacher", "--dataset", "mnist", "--data-dir", tmp_path, "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert_one_line_error(result, "train-images-idx3-ubyte", "--download")


def test_truncated_idx_file_is_reported_not_misread(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DefdistillError, match="truncated or damaged"):
        load_dataset("mnist", "test", tmp_path)


def _corrupt(raw: Path, name: str, fault: str) -> None:
    path = raw / name
    data = path.read_bytes()
    if fault == "truncated":
        path.write_bytes(data[:-100])
    elif fault == "wrong magic":
        path.write_bytes(bytes([0, 0, 0x0D]) + data[3:])  # 0x0D: float32, which MNIST never uses
    elif fault == "label out of range":
        path.write_bytes(data[:-1] + bytes([11]))
    elif fault == "labels of another file":
        labels = np.frombuffer(data, dtype=np.uint8, offset=8)
        path.write_bytes(idx_bytes(labels[:-5]))


@pytest.mark.parametrize(
    ("name", "fault", "message"),
    [
        ("t10k-images-idx3-ubyte", "truncated", "truncated or damaged"),
        ("t10k-labels-idx1-ubyte", "wrong magic", "is not an IDX file of unsigned bytes (header 00000d01)"),
        ("t10k-labels-idx1-ubyte", "label out of range", "has label 11, but mnist has 10 classes"),
        ("t10k-labels-idx1-ubyte", "labels of another file", "the two files do not belong together"),
    ],
)
def test_damaged_idx_files_are_one_line_naming_the_file(tmp_path: Path, name: str, fault: str, message: str):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    _corrupt(raw, name, fault)
    done = invoke(
        "train-teacher", "--dataset", "mnist", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs"
    )
    assert done.exit_code == 2
    assert_one_line_error(done, str(raw / name), message)


def test_an_official_size_file_with_other_bytes_fails_its_checksum(tmp_path: Path) -> None:
    """A file holding the official 10,000 labels, one of them changed (still a valid digit):
    only the official checksum can tell it from the real one."""
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((10_000, 28, 28), dtype=np.uint8)))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(10_000, dtype=np.uint8) % 10))
    done = invoke(
        "train-teacher", "--dataset", "mnist", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs"
    )
    assert done.exit_code == 2
    line = assert_one_line_error(done, str(raw / "t10k-images-idx3-ubyte"), "not the official content")
    assert "expected 2646ac647ad5339dbf082846283269ea" in line and "fetch it again" in line


SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.skipif(
    not (SHARED_MNIST / "MNIST" / "raw").is_dir(),
    reason="the official MNIST files are not in ../shared/datasets",
)
def test_the_official_mnist_files_load_and_pass_their_checksums() -> None:
    x, y = load_dataset("mnist", "test", SHARED_MNIST)
    assert x.shape == (10_000, 1, 28, 28) and float(x.min()) == 0 and float(x.max()) == 1
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x_train, y_train = load_dataset("mnist", "train", SHARED_MNIST)
    assert x_train.shape == (60_000, 1, 28, 28) and torch.bincount(y_train).tolist()[1] == 6742


@pytest.mark.skipif(
    not (SHARED_MNIST / "MNIST" / "raw").is_dir(),
    reason="the official MNIST files are not in ../shared/datasets",
)
def test_a_flipped_label_in_the_official_test_file_fails_its_checksum(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(
            gzip.decompress((SHARED_MNIST / "MNIST" / "raw" / f"{name}.gz").read_bytes())
        )
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[8] = (labels[8] + 1) % 10  # the first label, 7, becomes 8: a mislabelled, in-range file
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(
        DefdistillError, match="t10k-labels-idx1-ubyte has the official size but not the official"
    ):
        load_dataset("mnist", "test", tmp_path)


# --- --download, with torchvision's downloader replaced (no network in tests) -------------------


def test_download_fetches_only_missing_files_through_torchvision(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    source = tmp_path / "source"
    write_mnist(source, gz=True)
    (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True)
    kept = tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    kept.write_bytes(gzip.decompress((source / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    fetched = []

    def fake_download_url(url: str, root: str, filename: str, md5: str) -> None:
        assert md5 and url.endswith(filename)
        fetched.append(filename)
        (Path(root) / filename).write_bytes((source / "MNIST" / "raw" / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    fetch_dataset("mnist", tmp_path / "data")
    assert sorted(fetched) == [
        "t10k-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    x, _ = load_dataset("mnist", "train", tmp_path / "data")
    assert x.shape == (N_TRAIN, 1, 28, 28)
    assert not list((tmp_path / "data" / "MNIST" / "raw").glob(".download-*"))  # staging folders removed


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def offline(url: str, root: str, filename: str, md5: str) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(
        DefdistillError, match=r"could not download train-images-idx3-ubyte\.gz .*by hand"
    ) as caught:
        fetch_dataset("mnist", tmp_path)
    assert "\n" not in str(caught.value)


# --- the MNIST and CIFAR-10 paths, end to end on the tiny files ---------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_papers_datasets_run_train_distill_attack_end_to_end(tmp_path: Path, dataset: str) -> None:
    import pandas as pd

    data = tmp_path / "data"
    write_mnist(data) if dataset == "mnist" else write_cifar10(data)
    common = ["--dataset", dataset, "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    results = ["--results-dir", str(tmp_path / "results")]
    for args in (
        ["train-teacher", "--T", "10", "--epochs", "1"],
        ["distill", "--T", "10", "--epochs", "1", *results],
        ["attack", "--model", "student-T10", "--attacks", "fgsm,cw", "--eps", "0.1", "--n", "3", *results],
    ):
        outcome = invoke(*args, *common)
        assert outcome.exit_code == 0, outcome.output
    import json

    meta = json.loads((tmp_path / "runs" / dataset / "student-T10" / "meta.json").read_text())
    assert (
        meta["arch"] == f"papernot-{dataset}"
        and meta["optimizer"] == "sgd"
        and meta["warmup_epochs_at_T1"] == 1
    )
    rows = pd.read_csv(tmp_path / "results" / "robustness.csv")
    assert sorted(rows["attack"]) == ["cw", "fgsm"] and set(rows["n"]) == {3}
