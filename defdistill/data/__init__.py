"""Datasets: the registry of what each dataset is (shape, classes, normalisation, default
architecture) and the readers of its files (IDX, CIFAR batches), all returned as [0, 1] tensors.
"""

from .registry import DATASETS, DatasetSpec, fetch_dataset, get_dataset_spec, load_dataset

__all__ = ["DATASETS", "DatasetSpec", "fetch_dataset", "get_dataset_spec", "load_dataset"]
