"""Readers for MNIST, Fashion-MNIST and CIFAR-10 files as their authors distribute them.

IDX files (LeCun et al.'s MNIST format, which Fashion-MNIST shares) are parsed here, raw or
gzip-compressed, in the layout torchvision uses (`<data_dir>/MNIST/raw/`). CIFAR-10's python
batches are pickles, so they are never handed to `pickle.load` (nor to torchvision, which
does exactly that): `CifarBatchUnpickler` resolves only the globals a batch needs to rebuild
its numpy array, and even those build inert stand-ins that are turned into an array by
`np.frombuffer` afterwards; every other global is refused, so a batch file cannot run code.
torchvision is used only to download, with its own URLs and MD5 checksums.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DefdistillError

DOWNLOAD_HINT = "or add --download on a machine with internet"

# --- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------------

IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST-format files use


def idx_names(split: str) -> tuple[str, str]:
    """The image and label file names of one split, without `.gz`."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


IDX_FILES = (*idx_names("train"), *idx_names("test"))


# The MD5 of each official MNIST file's uncompressed bytes (LeCun et al.'s files, as torchvision
# fetches them): a file whose header promises the official number of items must match it. Files
# of another size (a subset a user made) are not the official ones and are not checked.
OFFICIAL_IDX_MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}
OFFICIAL_IDX_COUNT = {"train": 60_000, "t10k": 10_000}


# The most items an IDX file may hold (MNIST and Fashion-MNIST have 60,000 training images): a header
# promising more is refused before its body is read, so a forged one cannot make the reader allocate
# more than about 80 MB (28 x 28 bytes an item).
MAX_IDX_ITEMS = 100_000
# Deflate compresses at most about 1032:1, so a .gz file that promises more bytes than that
# times its own size cannot hold them (truncated, or lying about its size).
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


def _idx_fault(path: Path, message: str) -> DefdistillError:
    return DefdistillError(f"{path} {message}: delete it and fetch it again")


def read_idx(
    path: str | Path, *, official_md5: str | None = None, item_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw, or gzip-compressed if it ends in .gz).

    The file is streamed: its header is read and checked first (magic, dimensions, `item_shape`
    when given, at most MAX_IDX_ITEMS items), then exactly the number of bytes the header
    promises is decompressed, so a gzip bomb is refused after a bounded read, not after it has
    been inflated into memory. `official_md5`: the MD5 of the official file's uncompressed
    bytes; a file that holds the official number of items but other bytes is refused.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != IDX_UBYTE or head[3] == 0:
                raise _idx_fault(
                    path, f"is not an IDX file of unsigned bytes (header {head[:4].hex() or 'empty'})"
                )
            ndim = head[3]
            shape = handle.read(4 * ndim)
            if len(shape) < 4 * ndim:
                raise _idx_fault(path, "is truncated in its header")
            dims = struct.unpack(f">{ndim}I", shape)
            if item_shape is not None and tuple(dims[1:]) != tuple(item_shape):
                raise DefdistillError(
                    f"{path} holds items of shape {tuple(dims[1:])}, not {tuple(item_shape)}: "
                    "it is not a file of this dataset"
                )
            if dims[0] > MAX_IDX_ITEMS:
                raise _idx_fault(path, f"promises {dims[0]} items, more than {MAX_IDX_ITEMS}")
            count = math.prod(dims)
            if path.suffix == ".gz" and count > MAX_DEFLATE_RATIO * max(path.stat().st_size, 1):
                raise _idx_fault(
                    path, f"promises {count} bytes, more than a file of {path.stat().st_size} can hold"
                )
            body = bytearray(count)
            view, filled = memoryview(body), 0
            while filled < count:
                got = handle.readinto(view[filled : filled + _CHUNK])
                if not got:
                    break
                filled += got
            extra = handle.read(1)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DefdistillError(f"{path} cannot be read ({exc}): delete it and fetch it again") from None
    if filled != count or extra:
        found = f"{filled} bytes" if filled != count else "more bytes"
        raise _idx_fault(
            path, f"holds {found} of data where its header {dims} promises {count} (truncated or damaged)"
        )
    prefix = path.name.split("-")[0]
    if official_md5 is not None and dims[0] == OFFICIAL_IDX_COUNT.get(prefix):
        digest = hashlib.md5(head + shape, usedforsecurity=False)
        digest.update(body)
        found_md5 = digest.hexdigest()
        if found_md5 != official_md5:
            raise DefdistillError(
                f"{path} has the official size but not the official content (MD5 of its uncompressed "
                f"bytes {found_md5}, expected {official_md5}): it is damaged or altered; delete it and "
                f"fetch it again ({DOWNLOAD_HINT.removeprefix('or ')})"
            )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(
    dataset: str,
    folder: str,
    torchvision_class: str,
    split: str,
    data_dir: Path,
    download: bool,
    image_size: tuple[int, int],
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 of one split from `<data_dir>/<folder>/raw/`."""
    raw = Path(data_dir) / folder / "raw"
    names = idx_names(split)
    paths = [_find_idx(raw, name) for name in names]
    if None in paths and download:
        _download_idx(torchvision_class, raw)
        paths = [_find_idx(raw, name) for name in names]
    found = [path for path in paths if path is not None]
    if len(found) < len(names):
        missing = [name for name, path in zip(names, paths, strict=True) if path is None]
        raise DefdistillError(
            f"dataset {dataset!r} is not in {raw}: put {', '.join(IDX_FILES)} there (raw or .gz; "
            f"missing: {', '.join(missing)}), {DOWNLOAD_HINT}"
        )
    image_path, label_path = found
    checksums = OFFICIAL_IDX_MD5.get(folder, {})
    images = read_idx(image_path, official_md5=checksums.get(names[0]), item_shape=image_size)
    labels = read_idx(label_path, official_md5=checksums.get(names[1]), item_shape=())
    if images.ndim != 3 or images.shape[1:] != image_size:
        raise DefdistillError(
            f"{image_path} holds images of shape {images.shape[1:]}, not {image_size}: "
            f"it is not a {dataset} image file"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DefdistillError(
            f"{label_path} holds {labels.shape} labels for {len(images)} images in {image_path}: "
            "the two files do not belong together"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DefdistillError(
            f"{label_path} has label {int(labels.max())}, but {dataset} has {num_classes} classes"
        )
    return images, labels.astype(np.int64)


# --- CIFAR-10 python batches --------------------------------------------------------------------

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_FILES = (*CIFAR_BATCHES["train"], *CIFAR_BATCHES["test"], "batches.meta")
CIFAR_ROW = 3 * 32 * 32  # one image: 1024 red, then 1024 green, then 1024 blue bytes, row-major
INTEGER_CODES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"})


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global a CIFAR batch does not need."""


class _NdarrayType:
    """What `numpy.ndarray` resolves to: a marker, never numpy's class."""


class _ArrayStub:
    """Stands in for an array while unpickling: keeps its pickled state, runs no numpy code."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DtypeStub:
    """Stands in for `numpy.dtype(code, ...)`: keeps the type code and state."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _reconstruct(subtype: Any, shape: Any, code: Any) -> _ArrayStub:
    # numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'): an empty array that BUILD then fills.
    if subtype is not _NdarrayType:
        raise RefusedGlobal("_reconstruct of anything but numpy.ndarray")
    return _ArrayStub()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> _ArrayStub:
    # numpy >= 1.16 writes arrays this way at pickle protocol 5.
    stub = _ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Python 3 writes bytes as _codecs.encode(str, 'latin1') at pickle protocols 0 to 2.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class CifarBatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR python batches and nothing else.

    A batch is a dict of strings, a list of int labels and one uint8 array; rebuilding the
    array is the only thing it needs a global for. Those globals resolve to inert stand-ins
    (`_ArrayStub`, `_DtypeStub`); every other global raises `RefusedGlobal` before anything
    is called. `cifar_array` then checks a stand-in and reads it with `np.frombuffer`.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # files written with numpy 1
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # and with numpy 2
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): _DtypeStub,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("a persistent id")


def _dtype(stub: Any) -> np.dtype:
    if not isinstance(stub, _DtypeStub) or not stub.args or stub.args[0] not in INTEGER_CODES:
        code = stub.args[0] if isinstance(stub, _DtypeStub) and stub.args else type(stub).__name__
        raise ValueError(f"array type {code!r} is not an integer type")
    byteorder = stub.state[1] if isinstance(stub.state, tuple) and len(stub.state) > 1 else "|"
    if byteorder not in ("<", ">", "=", "|"):
        raise ValueError(f"byte order {byteorder!r}")
    return np.dtype(("" if byteorder == "|" else byteorder) + stub.args[0])


def cifar_array(stub: Any) -> np.ndarray:
    """Turn an unpickled array stand-in into an integer numpy array, checking every field."""
    if not isinstance(stub, _ArrayStub) or not isinstance(stub.state, tuple) or len(stub.state) != 5:
        raise ValueError(f"expected a numpy array, found {type(stub).__name__}")
    _, shape, dtype_stub, fortran, raw = stub.state
    dtype = _dtype(dtype_stub)
    if isinstance(raw, str):  # a Python 2 byte string, decoded as latin-1 on the way in
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError(f"array data of type {type(raw).__name__}")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"array shape {shape!r}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"{len(raw)} bytes for an array of shape {shape}")
    return np.frombuffer(bytes(raw), dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


def read_cifar_batch(path: str | Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR-10 python batch."""
    path = Path(path)
    fix = "delete it and fetch it again"
    try:
        with open(path, "rb") as handle:
            batch = CifarBatchUnpickler(handle, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DefdistillError(
            f"{path} is not a CIFAR-10 batch: "
            f"it asks for {exc}, which is refused (a pickle can run code): {fix}"
        ) from None
    except Exception as exc:  # any failure to parse untrusted bytes means: not a batch
        raise DefdistillError(f"{path} is not a readable CIFAR-10 python batch ({exc}): {fix}") from None
    if not isinstance(batch, dict):
        raise DefdistillError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict): {fix}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DefdistillError(f"{path} lacks 'data' or 'labels': it is not a CIFAR-10 batch, {fix}")
    try:
        data = cifar_array(batch["data"])
        labels_in = batch["labels"]
        labels = cifar_array(labels_in) if isinstance(labels_in, _ArrayStub) else labels_in
        if isinstance(labels, list) and not all(type(v) is int for v in labels):
            raise ValueError("labels that are not integers")
        labels = np.asarray(labels, dtype=np.int64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DefdistillError(f"{path} is not a CIFAR-10 batch ({exc}): {fix}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        raise DefdistillError(
            f"{path} holds data of type {data.dtype} and shape {data.shape}, "
            f"not (N, {CIFAR_ROW}) bytes: {fix}"
        )
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DefdistillError(
            f"{path} has labels that do not match its {len(data)} images or 0..{num_classes - 1}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar_split(
    dataset: str, split: str, data_dir: Path, download: bool, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one split from `<data_dir>/cifar-10-batches-py/`."""
    folder = Path(data_dir) / CIFAR_FOLDER
    names = CIFAR_BATCHES[split]
    if download and not all((folder / name).is_file() for name in CIFAR_FILES):
        _download_cifar10(Path(data_dir))
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DefdistillError(
            f"dataset {dataset!r} is not in {folder}: put {', '.join(CIFAR_FILES)} there (missing: "
            f"{', '.join(missing)}; unpack cifar-10-python.tar.gz in {data_dir}), {DOWNLOAD_HINT}"
        )
    parts = [read_cifar_batch(folder / name, num_classes) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- downloads (through torchvision's URLs and checksums) ---------------------------------------


def _download_error(what: str, exc: Exception, where: Path) -> DefdistillError:
    return DefdistillError(
        f"could not download {what} ({type(exc).__name__}: {exc}): check the connection, "
        f"or put the files in {where} by hand"
    )


def _download_idx(torchvision_class: str, raw: Path) -> None:
    """Fetch the missing .gz files of an MNIST-format dataset into `raw`, each MD5-checked."""
    import torchvision.datasets
    from torchvision.datasets.utils import download_url

    cls = getattr(torchvision.datasets, torchvision_class)
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in cls.resources:
        if _find_idx(raw, filename.removesuffix(".gz")) is not None:
            continue
        error: Exception | None = None
        for mirror in cls.mirrors:
            try:
                with _staging(raw) as tmp:
                    download_url(f"{mirror}{filename}", str(tmp), filename, md5)
                    os.replace(tmp / filename, raw / filename)
                break
            except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
                error = exc
        else:
            raise _download_error(filename, error or RuntimeError("no mirror"), raw)


def _download_cifar10(data_dir: Path) -> None:
    """Fetch and unpack cifar-10-python.tar.gz (MD5-checked); keep batch files already there."""
    import torchvision.datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = torchvision.datasets.CIFAR10
    target = data_dir / CIFAR_FOLDER
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _staging(data_dir) as tmp:
            download_and_extract_archive(cls.url, str(tmp), filename=cls.filename, md5=cls.tgz_md5)
            target.mkdir(exist_ok=True)
            for name in CIFAR_FILES:
                if not (target / name).is_file():
                    os.replace(tmp / CIFAR_FOLDER / name, target / name)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _download_error(cls.filename, exc, target) from None


@contextlib.contextmanager
def _staging(parent: Path) -> Iterator[Path]:
    """A temporary folder beside the destination (same file system, so os.replace is atomic)."""
    path = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def expected_files(dataset_folder: str, names: Sequence[str]) -> str:
    """`MNIST/raw/{a, b}`: for listings of what a dataset needs on disk."""
    return f"{dataset_folder}/{{{', '.join(names)}}}"
