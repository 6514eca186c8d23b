"""What a student costs: parameters, bytes on disk and CPU latency, beside its accuracy.

`architecture_table` lists the registered architectures with their parameter counts for a
dataset's input shape; `measure_compression` times every run of a dataset on the CPU and
records one row per run in results/compression.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.progress import SILENT, ProgressReporter
from ..data.registry import get_dataset_spec
from ..errors import DefdistillError
from ..models import ARCHITECTURES, build_model, count_parameters
from ..store.runs import WEIGHTS_FILE, load_run, resolve_models
from ..store.tables import record_rows

LATENCY_BATCHES = (1, 256)


def architecture_table(dataset: str = "digits") -> list[dict[str, Any]]:
    """Every registered architecture with its parameter count on `dataset`'s inputs.

    An architecture too deep for the input (its convolutions would shrink the image below the
    kernel) is listed with `params` None.
    """
    spec = get_dataset_spec(dataset)
    rows = []
    for name, arch in ARCHITECTURES.items():
        try:
            params: int | None = count_parameters(
                build_model(name, spec.shape, spec.num_classes, spec.mean, spec.std)
            )
        except RuntimeError:  # e.g. 3x3 convolutions on a 2x2 map
            params = None
        default = " (default)" if name == spec.default_arch else ""
        rows.append({"arch": name + default, "params": params, "description": arch.description})
    return rows


def cpu_latency(
    model: nn.Module, shape: tuple[int, int, int], batch: int, repeats: int, warmup: int = 3
) -> float:
    """Median wall time per input (microseconds) of a forward pass at `batch` on the CPU."""
    model = model.cpu().eval()
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times) / batch * 1e6


def compression_row(path: Path, repeats: int = 50, threads: int = 1) -> dict[str, Any]:
    """The compression-table row of one run: size, parameters, latency, accuracy.

    Latency is measured with `threads` intra-op threads (1 by default: a single-stream
    deployment, and far less sensitive to other processes on the machine than a thread pool).
    """
    model, meta = load_run(path)
    spec = get_dataset_spec(meta["dataset"])
    row: dict[str, Any] = {
        "dataset": meta["dataset"],
        "model": path.name,
        "role": meta["role"],
        "arch": meta["arch"],
        "method": meta.get("method") if meta["role"] == "student" else None,
        "params": count_parameters(model),
        "size_bytes": (path / WEIGHTS_FILE).stat().st_size,
        "clean_acc": meta.get("clean_acc"),
        "threads": threads,
    }
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in LATENCY_BATCHES:
            # Fewer repeats at the large batch: each pass already averages over 256 inputs.
            n = repeats if batch == 1 else max(5, repeats // 5)
            row[f"us_per_input_b{batch}"] = cpu_latency(model, spec.shape, batch, n)
    finally:
        torch.set_num_threads(previous)
    return row


def measure_compression(
    dataset: str = "digits",
    models: Sequence[str] | None = None,
    repeats: int = 50,
    threads: int = 1,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    progress: ProgressReporter = SILENT,
) -> list[dict[str, Any]]:
    """Measure `models` (run names, roles or folders; default: every run of `dataset`) and
    record their rows in results/compression."""
    get_dataset_spec(dataset)
    if not isinstance(repeats, int) or repeats <= 0:
        raise DefdistillError(f"--repeats must be a positive integer, got {repeats}")
    if not isinstance(threads, int) or threads <= 0:
        raise DefdistillError(f"--threads must be a positive integer, got {threads}")
    paths = resolve_models(models, runs_dir, dataset)
    rows = []
    with progress.task(f"{dataset} compression", len(paths)) as advance:
        for path in paths:
            rows.append(compression_row(path, repeats, threads))
            advance(1)
    record_rows(results_dir, "compression", rows)
    return rows
