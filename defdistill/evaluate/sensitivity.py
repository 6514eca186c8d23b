"""Papernot et al.'s (2016, Section V.B) adversarial-gradient amplitude, and why it misleads.

Papernot et al. explain distillation's effect by the amplitude of the gradients an attack
follows: the Jacobian of the softmax output F at deployment (T=1) with respect to the input,
which JSMA-F and FGSM use. A network trained at T has logits about T times larger, its softmax
saturates at T=1, and the amplitude falls by many orders of magnitude (their abstract: up to
10^30). Measured here per input as the mean over the classes of the L1 norm of dF_j/dx:

- `softmax_l1`: in float32, as an attack sees it (`softmax_zero`: the share of inputs where it
  is exactly zero, where a gradient attack has nothing to follow);
- `softmax_log10`: its exact exponent, computed in log space (float arithmetic underflows long
  before the true value, about 10^-500 on MNIST at T=100), averaged over the inputs;
- `logits_l1`: the Jacobian of the logits Z (JSMA-Z's and Carlini-Wagner's): if it does not
  fall with T, the network is as sensitive as before and only its softmax hides it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device
from ..data.registry import load_dataset
from ..store.runs import load_run, resolve_models
from ..store.tables import record_rows


def jacobian(forward: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(outputs (n, C), their Jacobian (n, C, features)) of `forward` at `x`: one backward pass
    per output; the inputs of a batch are independent, so summing over it is exact."""
    x = x.detach().clone().requires_grad_(True)
    out = forward(x)
    rows = []
    for j in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, j].sum(), x, retain_graph=j + 1 < out.shape[1])
        rows.append(grad.flatten(1))
    return out.detach(), torch.stack(rows, dim=1)


def softmax_log_amplitude(logits: Tensor, jac: Tensor) -> Tensor:
    """log10 of the mean over j of ||dF_j/dx||_1, F = softmax(logits), from the logits and
    their Jacobian, computed in log space so that it never underflows.

    dF_j/dx = p_j g_j with g_j = dz_j - sum_k p_k dz_k. For the top class g_top equals
    sum_{k != top} p_k (dz_top - dz_k), which is factored by its largest p_k before summing,
    so a saturated softmax (p_k = 10^-40 and below) still gives the exact exponent.
    """
    logits, jac = logits.double(), jac.double()
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    mixed = torch.einsum("nc,ncd->nd", p, jac)
    log_terms = log_p + torch.log((jac - mixed[:, None]).abs().sum(dim=2))  # right for every j but the top
    top = logits.argmax(dim=1)
    others = log_p.scatter(1, top[:, None], -torch.inf)
    largest = others.max(dim=1).values
    weights = (others - largest[:, None]).exp()  # 0 at the top class
    top_jac = jac[torch.arange(len(jac)), top]
    g_top = torch.einsum("nc,ncd->nd", weights, top_jac[:, None] - jac)
    log_top = log_p.gather(1, top[:, None])[:, 0] + largest + torch.log(g_top.abs().sum(dim=1))
    log_terms = log_terms.scatter(1, top[:, None], log_top[:, None])
    return (torch.logsumexp(log_terms, dim=1) - math.log(logits.shape[1])) / math.log(10)


@dataclass(frozen=True)
class GradientAmplitudes:
    """Per-input amplitudes (float64 tensors on the CPU)."""

    softmax: Tensor  # mean_j ||dF_j/dx||_1 with float32 arithmetic: what an attack sees
    softmax_log10: Tensor  # log10 of the same, exact (log space)
    logits: Tensor  # mean_j ||dz_j/dx||_1

    def summary(self) -> dict[str, float]:
        return {
            "softmax_l1": float(self.softmax.mean()),
            "softmax_zero": float((self.softmax == 0).double().mean()),
            "softmax_log10": float(self.softmax_log10.mean()),
            "softmax_log10_median": float(self.softmax_log10.median()),
            "logits_l1": float(self.logits.mean()),
        }


def gradient_amplitudes(
    net: nn.Module, x: Tensor, *, batch_size: int = 250, advance: Callable[[int], None] | None = None
) -> GradientAmplitudes:
    """The amplitudes of `net` (eval mode, logits at T=1) on inputs `x`."""
    parts: dict[str, list[Tensor]] = {"softmax": [], "softmax_log10": [], "logits": []}
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        _, attacked = jacobian(lambda v: torch.softmax(net(v), dim=1), batch)
        logits, jac = jacobian(net, batch)
        parts["softmax"].append(attacked.abs().sum(dim=2).mean(dim=1))
        parts["softmax_log10"].append(softmax_log_amplitude(logits, jac))
        parts["logits"].append(jac.abs().sum(dim=2).mean(dim=1))
        if advance is not None:
            advance(len(batch))
    return GradientAmplitudes(**{k: torch.cat(v).double().cpu() for k, v in parts.items()})


def measure_gradients(
    models: Sequence[str] | None = None,
    *,
    dataset: str = "digits",
    n: int | None = None,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> list[dict[str, Any]]:
    """Measure the gradient amplitudes of `models` (run names, roles or folders; default: every
    run of `dataset`) on the first n test inputs; record one row per model (table `gradients`)."""
    if n is not None:
        check_positive_int(n, "--n")
    ensure_writable_dir(results_dir, "--results-dir")
    paths = resolve_models(models, runs_dir, dataset)
    x, _ = load_dataset(dataset, "test", data_dir)
    x = x[:n] if n is not None else x
    torch_device = resolve_device(device)
    rows = []
    for path in paths:
        net, meta = load_run(path, dataset=dataset, map_location=torch_device)
        started = time.perf_counter()
        with progress.task(f"gradient amplitude of {path.name}", total=len(x)) as advance:
            amplitudes = gradient_amplitudes(net, x.to(torch_device), advance=advance)
        row = {
            "dataset": dataset,
            "model": path.name,
            "role": meta["role"],
            "T": float(meta["T"]),
            "n": len(x),
            **amplitudes.summary(),
            "seconds": round(time.perf_counter() - started, 3),
            "weights_sha256": meta["weights_sha256"],
        }
        record_rows(results_dir, "gradients", [row], runs_dir)
        rows.append(row)
    return rows
