"""Online LiRA over shadow pipelines, canaries and DP-SGD teachers (`privacy --lira online`)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, invoke

from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.studies.privacy import membership_metrics, roc_curve, tpr_at_fpr
from defdistill.studies.privacy_online import (
    POOL_RUN,
    lira_scores,
    low_fpr_threshold,
    make_config,
    pipeline_mask,
)
from defdistill.train.dp import DPRecipe, train_dp_sgd


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _masks(K: int, n: int, canaries: int = 0) -> np.ndarray:
    is_canary = np.zeros(n, dtype=bool)
    is_canary[n - canaries :] = True
    return np.stack([pipeline_mask(0, k, is_canary) for k in range(K)])


def test_pipeline_masks_are_exact_halves_and_every_example_is_in_half_the_pipelines():
    masks = _masks(8, 210, canaries=10)
    assert (masks[:, :200].sum(1) == 100).all() and (masks[:, 200:].sum(1) == 5).all()
    assert (masks.sum(0) == 4).all()  # complementary pairs: IN for exactly K/2 pipelines
    assert np.array_equal(masks[1], ~masks[0]) and not np.array_equal(masks[2], masks[0])


def test_online_lira_finds_members_and_gives_chance_on_a_model_without_them():
    rng = np.random.default_rng(0)
    K, n = 16, 600
    masks = _masks(K, n)
    difficulty = rng.normal(0, 4, n)  # per-example difficulty swamps a global threshold
    noise = rng.normal(0, 1, (K, n))
    leaky, blind = difficulty + noise + 1.5 * masks, difficulty + noise
    aucs = {"leaky": [], "blind": []}
    for k in range(K):
        for name, phi in (("leaky", leaky), ("blind", blind)):
            online, offline = lira_scores(phi, masks, k, per_example_variance=True)
            aucs[name].append(membership_metrics(online[masks[k]], online[~masks[k]])["auc"])
            if name == "leaky":
                assert membership_metrics(offline[masks[k]], offline[~masks[k]])["auc"] > 0.75
    assert np.mean(aucs["leaky"]) > 0.8
    # Leaving the target's complement out balances IN and OUT references: no bias below 0.5.
    assert abs(np.mean(aucs["blind"]) - 0.5) < 0.02, np.mean(aucs["blind"])


def test_low_fpr_threshold_gives_the_same_tpr_as_the_roc():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(1, 1, 1000), rng.normal(0, 1, 1000)
    threshold = low_fpr_threshold(nonmembers, 0.001)
    assert (nonmembers > threshold).sum() == 1  # 0.1% of 1,000 allows one false positive
    assert (members > threshold).mean() == pytest.approx(tpr_at_fpr(roc_curve(members, nonmembers), 0.001))


def test_dp_sgd_stays_within_its_budget_and_learns():
    x, y = load_dataset("digits", "train")
    x, y = x[:300], y[:300]
    from defdistill.models import build_model

    model = build_model("digits-mlp", (1, 8, 8), 10, (0.0,), (1.0,))
    result = train_dp_sgd(
        model, x, y, DPRecipe(epsilon=8.0, epochs=6, batch_size=100), 0, torch.device("cpu")
    )
    assert result.epsilon <= 8.0 + 1e-6 and result.epsilon > 4.0
    assert result.accountant == "rdp" and result.noise_multiplier > 0.5
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # a plain module again
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.3  # chance is 0.1


def test_missing_opacus_is_one_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_opacus(name, *args, **kwargs):
        if name == "opacus" or name.startswith("opacus."):
            raise ImportError("No module named 'opacus'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opacus)
    x, y = load_dataset("digits", "train")
    from defdistill.models import build_model

    with pytest.raises(DefdistillError, match=r"pip install 'defdistill\[privacy\]'"):
        train_dp_sgd(
            build_model("digits-mlp", (1, 8, 8), 10, (0.0,), (1.0,)),
            x[:50],
            y[:50],
            DPRecipe(8.0),
            0,
            torch.device("cpu"),
        )


@pytest.mark.slow  # ~15 s of CPU: eight pipelines of seven models, three commands
def test_online_command_writes_rows_canaries_and_figures_and_resumes_finished_pipelines(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = ["privacy", "--lira", "online", "--epochs", "2", "--dp-epochs", "2", "--pool", "200",
              "--public", "100", "--T", "1", "--dp-epsilon", "8", "--device", "cpu", "--quiet",
              "--runs-dir", runs, "--results-dir", results]  # fmt: skip
    result = invoke(*common, "--shadow", "4")
    assert result.exit_code == 0, result.output
    assert "4 trained now" in result.output
    table = pd.read_csv(results / "privacy.csv", keep_default_na=False)
    models = {
        "pool-teacher", "pool-control", "pool-student-public-T1", "pool-student-private-T1",
        "pool-student-noise-T1", "pool-dp8-teacher", "pool-dp8-student-public-T1",
    }  # fmt: skip
    assert set(table["model"]) == models and len(table) == 5 * len(models)
    online = table[table["attack"] == "lira-online"]
    assert (online["lira"] == "online").all() and (table[table["attack"] == "loss"]["lira"] == "").all()
    assert set(table["transfer_set"]) == {"-", "public", "private", "noise"}
    dp = table[table["model"].str.contains("dp8")]
    assert (dp["dp_epsilon"].astype(float) == 8.0).all()
    assert (table[~table["model"].str.contains("dp8")]["dp_epsilon"] == "").all()
    assert (table["shadows"] == 4).all() and (table["n_members"] == 100).all()
    assert (table["n_nonmembers"] == 100).all()
    assert (table["tpr_at_0_1pct_fpr_lo"] <= table["tpr_at_0_1pct_fpr"]).all()
    canaries = pd.read_csv(results / "privacy_canaries.csv")
    assert set(canaries["model"]) == models and (canaries["canaries"] == 2).all()
    assert (
        canaries[["extraction_in", "lira_online_tpr_at_0_1pct_fpr"]]
        .apply(lambda c: c.between(0, 1))
        .all()
        .all()
    )
    assert (results / "privacy_canaries.md").read_text().startswith("# Planted canaries")
    for figure in ("privacy_frontier_digits.png", "privacy_roc_digits.png"):
        assert (results / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = runs / "digits" / POOL_RUN
    assert sorted(p.name for p in folder.glob("shadow-*.npz")) == [f"shadow-00{k}.npz" for k in range(4)]

    again = invoke(*common, "--shadow", "6")  # two more pipelines; the four stored ones are reused
    assert again.exit_code == 0, again.output
    assert "6 pipelines (2 trained now" in again.output
    assert (pd.read_csv(results / "privacy.csv")["shadows"] == 6).all()
    changed = invoke(*[c if c != "2" else "3" for c in common], "--shadow", "6")  # other epochs
    assert changed.exit_code == 2
    assert_one_line_error(changed, "another configuration")
    assert json.loads((folder / "config.json").read_text())["epochs"] == 2


def test_online_options_are_checked_before_training(tmp_path):
    for bad in (
        ["--shadow", "5"],
        ["--transfer-set", "imagenet"],
        ["--canary-fraction", "0.7"],
        ["--lira", "x"],
    ):
        result = invoke("privacy", "--lira", "online", *bad, "--results-dir", tmp_path / "r", "--quiet")
        if bad[0] == "--lira":
            result = invoke("privacy", *bad, "--results-dir", tmp_path / "r", "--quiet")
        assert result.exit_code == 2, (bad, result.output)
        assert_one_line_error(result)
    assert not (tmp_path / "r").exists()
    with pytest.raises(DefdistillError, match="--dp-epsilon"):
        make_config("digits", dp_epsilons=(0.0,))


def test_readme_privacy_answer_quotes_the_committed_mnist_rows():
    """README's privacy sentence states figures of results/privacy.csv: each must be the table's."""
    repo = Path(__file__).resolve().parents[1]
    rows = pd.read_csv(repo / "results" / "privacy.csv")
    online = rows[(rows["dataset"] == "mnist") & (rows["attack"] == "lira-online")].set_index("model")
    text = " ".join((repo / "README.md").read_text(encoding="utf-8").split())
    tpr = online["tpr_at_0_1pct_fpr"]
    quoted = {
        "pool-teacher": f"{tpr['pool-teacher'] * 100:.1f}%",
        "pool-student-public-T100": f"{tpr['pool-student-public-T100'] * 100:.1f}%",
        "pool-dp8-teacher": f"{tpr['pool-dp8-teacher'] * 100:.2f}%",
        "pool-control": f"{tpr['pool-control'] * 100:.2f}%",
    }
    for model, figure in quoted.items():
        assert figure in text, (model, figure)
    accuracies = ", ".join(
        f"{online.loc[m, 'test_acc']:.3f}"
        for m in ("pool-teacher", "pool-student-public-T100", "pool-dp8-teacher")
    )
    assert f"test accuracies of {accuracies.rsplit(', ', 1)[0]} and {accuracies.rsplit(', ', 1)[1]}" in text
    assert int(online["shadows"].iloc[0]) == 64 and "64 shadow pipelines" in text
