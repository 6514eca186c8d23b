"""Dataset registry: every dataset is float images in [0, 1] (N, C, H, W) and int64 labels.

Small datasets are returned as whole in-memory tensors; at these sizes a DataLoader only
adds overhead. `digits` ships inside scikit-learn and needs no download; the others are read
from `data_dir` through torchvision's own loaders.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DefdistillError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the library needs to know about a dataset."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_arch: str
    loader: Callable[[str, Path, bool], tuple[torch.Tensor, torch.Tensor]]
    needs_files: str = ""  # what must lie in data_dir, for the offline error message


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry under `spec.name`."""
    DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name, with an error that lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DefdistillError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
        ) from None


def load_dataset(
    name: str = "digits", split: str = "test", data_dir: str | Path = "data", download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels) of one split: float32 in [0, 1] shaped (N, C, H, W), int64 labels."""
    spec = get_dataset_spec(name)
    if split not in SPLITS:
        raise DefdistillError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    x, y = spec.loader(split, Path(data_dir), download)
    return x.clone(), y.clone()


# --- digits: scikit-learn's 8x8 handwritten digits, shipped with the package -------------


@functools.lru_cache(maxsize=1)
def _digits_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    # A stratified 80/20 split fixed by seed 0, whatever seed the experiment uses, so every
    # run of every command sees the same test set.
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return {
        "train": (torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        "test": (torch.from_numpy(x_te), torch.from_numpy(y_te)),
    }


def _load_digits(split: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _digits_splits()[split]


register_dataset(
    DatasetSpec(
        name="digits",
        num_classes=10,
        shape=(1, 8, 8),
        mean=(0.3054,),
        std=(0.3761,),
        default_arch="digits-cnn",
        loader=_load_digits,
    )
)


# --- torchvision datasets read from --data-dir ---------------------------------------------


def _torchvision_loader(class_name: str, dataset_name: str, expected: str) -> Callable:
    def load(split: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision

        cls = getattr(torchvision.datasets, class_name)
        try:
            ds = cls(root=str(data_dir), train=(split == "train"), download=download)
        except RuntimeError as exc:  # torchvision's "Dataset not found" error
            raise DefdistillError(
                f"dataset {dataset_name!r} is not in {data_dir}: put {expected} there, "
                f"or add --download on a machine with internet ({exc})"
            ) from None
        data = ds.data
        data = torch.as_tensor(np.asarray(data))
        if data.ndim == 3:  # MNIST-like: (N, H, W) uint8
            data = data[:, None, :, :]
        else:  # CIFAR-10: (N, H, W, C) uint8
            data = data.permute(0, 3, 1, 2)
        x = data.to(torch.float32).div_(255.0).contiguous()
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        return x, y

    return load


register_dataset(
    DatasetSpec(
        name="mnist",
        num_classes=10,
        shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        default_arch="papernot-mnist",
        loader=_torchvision_loader(
            "MNIST", "mnist", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
        ),
        needs_files="MNIST/raw/*-ubyte",
    )
)
register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        num_classes=10,
        shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        default_arch="papernot-mnist",
        loader=_torchvision_loader(
            "FashionMNIST",
            "fashion-mnist",
            "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        ),
        needs_files="FashionMNIST/raw/*-ubyte",
    )
)
register_dataset(
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        default_arch="papernot-cifar10",
        loader=_torchvision_loader(
            "CIFAR10", "cifar10", "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"
        ),
        needs_files="cifar-10-batches-py/",
    )
)
