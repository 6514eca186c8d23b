"""Scale-out: mixed precision, DataLoader workers, torchrun (DDP) and sweeps on every executor."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_EPOCHS, TrainedRuns, assert_one_line_error, invoke
from torch import nn

from defdistill.errors import DefdistillError
from defdistill.train.loop import Recipe, fit, resolve_amp, temperature_cross_entropy, train_teacher

CPU = torch.device("cpu")


def _digits_train():
    from defdistill.data.registry import load_dataset

    return load_dataset("digits", "train")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# --- precision and data loading --------------------------------------------------------------


def test_amp_auto_is_on_for_cuda_only_and_on_asks_bfloat16_on_the_cpu():
    assert resolve_amp("auto", CPU) is None
    assert resolve_amp("auto", torch.device("cuda")) == "float16"
    assert resolve_amp("on", CPU) == "bfloat16"
    assert resolve_amp("off", torch.device("cuda")) is None
    with pytest.raises(DefdistillError, match="unknown --amp 'maybe'"):
        resolve_amp("maybe", CPU)


def test_dataloader_workers_give_the_weights_of_in_memory_batches():
    x, y = _digits_train()
    recipe = Recipe(epochs=2, batch_size=64)
    weights = []
    for workers in (0, 2):
        model = _mlp()
        fit(model, x, y, y, temperature_cross_entropy(1.0), recipe, CPU, seed=3, num_workers=workers)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_bfloat16_training_on_the_cpu_learns_and_keeps_float32_weights(tmp_path: Path):
    result = train_teacher(T=1, epochs=4, runs_dir=tmp_path, device="cpu", amp="on")
    assert result.meta["amp"] == "bfloat16" and result.meta["world_size"] == 1
    assert result.meta["clean_acc"] > 0.85
    from defdistill.store.runs import load_run

    model, _ = load_run(result.path)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_attacks_keep_full_precision_inside_a_callers_autocast(trained_runs: TrainedRuns):
    from defdistill.data.registry import load_dataset
    from defdistill.evaluate.attacks import run_attack
    from defdistill.store.runs import load_run

    model, _ = load_run(trained_runs.teacher_t1)
    x, y = load_dataset("digits", "test")
    x, y = x[:64], y[:64]
    plain = run_attack(model, x, y, "pgd", [0.1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = run_attack(model, x, y, "pgd", [0.1])
    assert inside[0]["success_rate"] == plain[0]["success_rate"]
    assert inside[0]["median_dist"] == plain[0]["median_dist"]


# --- torchrun / DistributedDataParallel ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from defdistill.core.distributed import session

    x, y = _digits_train()
    x, y = x[:512], y[:512]  # 512 = 8 global batches of 64, each split evenly: no remainder dropped
    with session(CPU) as (w, device):
        model = _mlp()
        fit(model, x, y, y, temperature_cross_entropy(1.0), Recipe(epochs=2, batch_size=64), device, seed=5)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{w.rank}.pt")


def test_two_process_ddp_matches_one_process_on_the_same_global_batches(tmp_path: Path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, y = _digits_train()
    single = _mlp()
    fit(
        single,
        x[:512],
        y[:512],
        y[:512],
        temperature_cross_entropy(1.0),
        Recipe(epochs=2, batch_size=64),
        CPU,
        5,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks disagree on {key}"
        # the mean of two half-batch gradients is the full-batch gradient, up to float rounding
        assert torch.allclose(ranks[0][key], value, atol=1e-4), key


def test_torchrun_trains_one_teacher_with_two_processes(tmp_path: Path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "defdistill", "train-teacher", "--epochs", "3", "--runs-dir", str(tmp_path), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "DEFDISTILL_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("teacher-T1: test accuracy") == 1  # rank 0 alone prints
    meta = json.loads((tmp_path / "digits" / "teacher-T1" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["clean_acc"] > 0.85
    assert not list((tmp_path / "digits" / "teacher-T1").glob("checkpoint*"))


# --- sweeps -------------------------------------------------------------------------------------


def _write_spec(path: Path, runs: Path, results: Path, **extra) -> Path:
    import yaml

    spec = {
        "name": "tiny",
        "dataset": "digits",
        "temperatures": [1, 100],
        "epochs": FIXTURE_EPOCHS,
        "attacks": ["fgsm"],
        "eps": [0.3],
        "n": 60,
        "device": "cpu",
        "runs_dir": str(runs),
        "results_dir": str(results),
        "report": False,
        "gradients": False,
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def local_sweep(trained_runs: TrainedRuns, tmp_path_factory: pytest.TempPathFactory):
    """A two-configuration sweep run by the local executor with two processes: it reuses the
    session's teacher-T1, teacher-T100 and student-T100 and trains only student-T1."""
    from defdistill.studies.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    shutil.copytree(trained_runs.runs_dir, root / "runs")
    spec = _write_spec(root / "tiny.yaml", root / "runs", root / "results")
    return root, spec, run_sweep(spec, executor="local", max_parallel=2)


def test_local_sweep_trains_what_is_missing_and_records_every_model(local_sweep):
    root, _, result = local_sweep
    assert not result.failed, [o.error for o in result.failed]
    by_config = {o.config: o for o in result.outcomes}
    assert by_config["digits-T1"].done == ["train student-T1", "fgsm on teacher-T1", "fgsm on student-T1"]
    assert "train teacher-T100" in by_config["digits-T100"].skipped
    records = {p.name for p in (root / "results" / "records" / "robustness").iterdir()}
    assert {name.rsplit("__w", 1)[0] for name in records} == {  # each name ends with its weights' hash
        f"digits__{m}__fgsm__linf__0.3" for m in ("student-T1", "student-T100", "teacher-T1", "teacher-T100")
    }
    table = (root / "results" / "robustness.csv").read_text()
    assert table.count("fgsm") == 4
    log = json.loads((root / "results" / "sweeps" / "tiny" / "last.json").read_text())
    assert [o["config"] for o in log["outcomes"]] == ["digits-T1", "digits-T100"]


def test_sweep_rows_carry_the_cost_against_teacher_t1(local_sweep):
    import pandas as pd

    root, _, _ = local_sweep
    gap = pd.read_csv(root / "results" / "accuracy_gap.csv").set_index("student")
    row = gap.loc["student-T1"]
    assert row["baseline"] == "teacher-T1" and row["cost_pp"] == pytest.approx(row["gap_pp"])


def test_rerunning_a_sweep_skips_finished_configurations(local_sweep):
    from defdistill.studies.sweep import run_sweep

    root, spec, _ = local_sweep
    before = (root / "results" / "robustness.csv").read_text()
    again = run_sweep(spec, executor="local", max_parallel=2)
    assert again.already_done == ["digits-T1", "digits-T100"] and again.outcomes == []
    assert (root / "results" / "robustness.csv").read_text() == before


def test_sweep_refuses_runs_trained_with_other_settings(local_sweep):
    root, _, _ = local_sweep
    spec = _write_spec(root / "other.yaml", root / "runs", root / "results-other", epochs=3)
    done = invoke("sweep", spec, "--quiet")
    assert done.exit_code == 2  # found before anything runs
    assert "trained with epochs=15, the sweep asks for epochs=3" in done.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntemperatures: [1, -5]\n", "temperatures must be a number or a list of numbers > 0"),
        ("name: x\nattacks: [fgsm, deepfool]\n", "unknown attacks deepfool"),
        ("name: x\ntemperature: [1]\n", "unknown key temperature"),
        ("name: x\nslurm: {partition: gpu, gpus: 2}\n", "unknown slurm key gpus"),
        ("name: x\neps: [0.1, 2]\n", "eps must be a number or a list of numbers in (0, 1]"),
        ("name: [x\n", "is not valid YAML at line"),
        ("- 1\n- 2\n", "a sweep spec is a YAML mapping"),
        (
            "name: x\ntemperatures: [1, 100]\nstudents: [5]\n",
            "students lists T=5, which temperatures does not",
        ),
        ("name: x\nshadows: 4\n", "shadows does not apply to study: robustness"),
        ("name: x\nstudy: privacy\nattacks: [fgsm]\n", "attacks does not apply to study: privacy"),
        ("name: x\nstudy: privacy\nshadows: 1\n", "shadows must be 0 (no LiRA) or an integer >= 2"),
        ("name: x\nvariants: [{name: a, method: dark}]\n", "unknown variants.a.method dark"),
        ("name: x\nvariants: [{name: a}, {name: a}]\n", "variant names must differ"),
        ("name: x\nattacks: [fgsm]\nattack_n: {cw: 10}\n", "attack_n names cw, which attacks does not list"),
        ("name: x\nattacks: [fgsm]\nattack_n: {fgsm: 0}\n", "attack_n.fgsm must be an integer >= 1"),
        ("name: x\ngradients: maybe\n", "gradients must be true or false"),
    ],
)
def test_bad_sweep_specs_are_one_line_errors(tmp_path: Path, text: str, message: str):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    done = invoke("sweep", spec)
    assert done.exit_code == 2
    assert_one_line_error(done, message)


def test_a_missing_spec_and_an_unknown_executor_are_one_line_errors(tmp_path: Path):
    assert_one_line_error(invoke("sweep", tmp_path / "none.yaml"), "no sweep spec at")
    spec = _write_spec(tmp_path / "s.yaml", tmp_path / "runs", tmp_path / "results")
    done = invoke("sweep", spec, "--executor", "kubernetes")
    assert done.exit_code == 2
    assert_one_line_error(done, "unknown executor 'kubernetes'")


@pytest.mark.parametrize("executor", ["submitit-debug", "submitit-local"])
def test_submitit_executors_run_the_same_spec(local_sweep, tmp_path: Path, executor: str):
    from defdistill.studies.sweep import run_sweep

    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    spec = _write_spec(tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results")
    result = run_sweep(spec, executor=executor)
    assert not result.failed, [o.error for o in result.failed]
    assert [o.done for o in result.outcomes] == [
        ["fgsm on teacher-T1", "fgsm on student-T1"],
        ["fgsm on teacher-T100", "fgsm on student-T100"],
    ]
    import pandas as pd

    ours, theirs = (
        pd.read_csv(r / "robustness.csv").drop(columns="seconds")
        for r in (root / "results", tmp_path / "results")
    )
    pd.testing.assert_frame_equal(theirs, ours)  # every column but the wall time


def _fake_slurm(bin_dir: Path, captured: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/usr/bin/env bash\ncp "$1" "{captured}"\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/usr/bin/env bash\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)


def test_slurm_executor_submits_an_array_job_that_a_node_runs(local_sweep, tmp_path: Path, monkeypatch):
    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    spec = _write_spec(
        tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results", max_parallel=2,
        slurm={"partition": "gpu", "timeout_min": 30, "gpus_per_node": 1, "setup": ["module load cuda"],
               "additional": {"mail-type": "END"}},
    )  # fmt: skip
    captured = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", captured)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    done = invoke("sweep", spec, "--executor", "slurm")
    assert done.exit_code == 0, done.output
    assert "submitted 2 configurations as Slurm job 4242" in done.output
    script = captured.read_text()
    for line in (
        "#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=30",
        "#SBATCH --mail-type=END", "module load cuda", "-m submitit.core._submit",
    ):  # fmt: skip
        assert line in script, line
    assert not (tmp_path / "results" / "robustness.csv").exists()  # submitted, not run

    # What a node does with each array task: the same command, with Slurm's environment.
    log_dir = next((tmp_path / "results" / "sweeps" / "tiny").glob("slurm-*"))
    for task in (0, 1):
        env = {
            **os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(5000 + task),
            "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_NTASKS": "1",
            "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_JOB_NODELIST": "node1",
        }  # fmt: skip
        node = [sys.executable, "-u", "-m", "submitit.core._submit", str(log_dir)]
        ran = subprocess.run(node, env=env, capture_output=True, text=True, timeout=240)
        assert ran.returncode == 0, ran.stderr[-2000:]
    again = invoke("sweep", spec, "--executor", "slurm")
    assert again.exit_code == 0, again.output
    assert "0 configurations run, 2 already finished, 0 failed" in again.output
    assert (tmp_path / "results" / "robustness.csv").read_text().count("fgsm") == 4


def test_slurm_without_srun_says_where_to_run(tmp_path: Path, monkeypatch):
    spec = _write_spec(tmp_path / "s.yaml", tmp_path / "runs", tmp_path / "results", temperatures=[5])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    done = invoke("sweep", spec, "--executor", "slurm")
    assert done.exit_code == 2
    assert_one_line_error(done, "cannot submit to Slurm from this machine")


def test_the_shipped_sweep_specs_are_valid():
    from defdistill.studies.sweep import configurations, load_spec

    specs = sorted((Path(__file__).parent.parent / "experiments" / "sweeps").glob("*.yaml"))
    assert {p.stem for p in specs} >= {
        "digits-smoke",
        "digits-temperature",
        "mnist-temperature",
        "cifar10-temperature",
    }
    for path in specs:
        spec = load_spec(path)
        assert spec.name == path.stem
        assert [c.T for c in configurations(spec)] == list(spec.temperatures)
    assert load_spec(specs[0].parent / "cifar10-temperature.yaml").slurm.gpus_per_node == 1


def test_a_sweep_asking_for_another_n_measures_the_attacks_again(local_sweep, tmp_path: Path):
    import pandas as pd

    from defdistill.studies.sweep import run_sweep

    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "results", tmp_path / "results")
    spec = _write_spec(tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results", n=50)
    result = run_sweep(spec, executor="local")
    assert [o.done for o in result.outcomes] == [
        ["fgsm on teacher-T1", "fgsm on student-T1"],
        ["fgsm on teacher-T100", "fgsm on student-T100"],
    ]
    assert set(pd.read_csv(tmp_path / "results" / "robustness.csv")["n"]) == {50}


def test_attack_n_runs_the_listed_attacks_on_the_first_inputs_and_counts_them_finished(
    local_sweep, tmp_path: Path
):
    import pandas as pd

    from defdistill.studies.sweep import run_sweep

    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "results", tmp_path / "results")
    extra = {"attacks": ["fgsm", "pgd"], "attack_n": {"pgd": 20}, "temperatures": [100]}
    spec = _write_spec(tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results", **extra)
    result = run_sweep(spec, executor="local")
    assert result.outcomes[0].done == ["pgd on teacher-T100", "pgd on student-T100"]  # fgsm: already there
    rows = pd.read_csv(tmp_path / "results" / "robustness.csv").set_index(["model", "attack"])
    assert rows.loc[("student-T100", "pgd"), "n"] == 20 and rows.loc[("student-T100", "fgsm"), "n"] == 60
    assert run_sweep(spec, executor="local").already_done == ["digits-T100"]


def test_a_sweep_measures_the_gradient_amplitude_of_every_model_once(local_sweep, tmp_path: Path):
    import pandas as pd

    from defdistill.studies.sweep import run_sweep

    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "results", tmp_path / "results")
    extra = {"gradients": True, "temperatures": [100]}
    spec = _write_spec(tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results", **extra)
    result = run_sweep(spec, executor="local")
    assert result.outcomes[0].done == ["gradients of teacher-T100", "gradients of student-T100"]
    rows = pd.read_csv(tmp_path / "results" / "gradients.csv")
    assert list(rows["model"]) == ["teacher-T100", "student-T100"] and set(rows["n"]) == {60}
    assert run_sweep(spec, executor="local").already_done == ["digits-T100"]


def test_a_spec_without_eps_takes_the_datasets_grid_and_variants_name_their_runs():
    from defdistill.data.registry import get_dataset_spec
    from defdistill.studies.sweep import configurations, parse_spec

    spec = parse_spec(
        {
            "name": "x",
            "temperatures": [1, 100],
            "students": [100],
            "variants": [{"name": "ban", "generations": 2}],
        }
    )
    one, hundred = configurations(spec)
    assert one.eps == hundred.eps == get_dataset_spec("digits").eps_grid
    assert one.models == ["teacher-T1"]
    assert hundred.runs == [
        ("teacher-T100", 0), ("student-T100", 0), ("student-T100-ban-gen1", 0), ("student-T100-ban-gen2", 1),
    ]  # fmt: skip
    privacy = configurations(
        parse_spec({"name": "p", "study": "privacy", "transfer_sets": ["public", "noise"]})
    )
    assert [c.id for c in privacy] == ["digits-privacy-public", "digits-privacy-noise"]


def test_the_sweeps_transfer_attack_crafts_on_a_surrogate_trained_with_the_next_seed(
    local_sweep, tmp_path: Path
):
    from defdistill.studies.sweep import run_sweep

    root, _, _ = local_sweep
    shutil.copytree(root / "runs", tmp_path / "runs")
    spec = _write_spec(
        tmp_path / "t.yaml", tmp_path / "runs", tmp_path / "results", temperatures=[100], students=False,
        attacks=["transfer"],
    )  # fmt: skip
    result = run_sweep(spec)
    assert [o.done for o in result.outcomes] == [["train surrogate-T1", "transfer on teacher-T100"]]
    meta = json.loads((tmp_path / "runs" / "digits" / "surrogate-T1" / "meta.json").read_text())
    assert (meta["T"], meta["seed"], meta["epochs"]) == (1, 1, FIXTURE_EPOCHS)
    (record,) = (tmp_path / "results" / "records" / "robustness").glob("*transfer*.json")
    row = json.loads(record.read_text())
    assert (row["surrogate"], row["surrogate_seed"]) == ("surrogate-T1", 1)
    assert run_sweep(spec).already_done == ["digits-T100"]


# --- the experiment scripts: thin wrappers that write sweep specs ----------------------------------

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _script_specs(script: str, *args: str, **env: str) -> list:
    """The specs `experiments/SCRIPT ARGS --print-spec` prints, each validated by the sweep."""
    import yaml

    from defdistill.studies.sweep import parse_spec

    clean = {
        k: v for k, v in os.environ.items() if k not in {"RUNS_DIR", "RESULTS_DIR", "DATA_DIR", "ATTACKS"}
    }
    path = os.pathsep.join([str(EXPERIMENTS.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        ["bash", str(EXPERIMENTS / script), *args, "--print-spec"],
        env={**clean, "PYTHON": sys.executable, "PYTHONPATH": path, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [parse_spec(doc, path=Path(script)) for doc in yaml.safe_load_all(done.stdout)]


def test_the_temperature_script_writes_one_spec_with_its_options():
    from defdistill.data.registry import get_dataset_spec
    from defdistill.studies.sweep import SWEEP_ATTACKS, configurations

    (spec,) = _script_specs(
        "temperature_sweep.sh", "digits", "-j", "2", "-n", "50", "--epochs", "3", "--runs-dir", "r x",
        "--results-dir", "out", "--data-dir", "d",
    )  # fmt: skip
    assert (spec.name, spec.max_parallel, spec.n, spec.epochs) == ("digits-temperature", 2, 50, 3)
    assert (spec.runs_dir, spec.results_dir, spec.data_dir, spec.report) == ("r x", "out", "d", False)
    assert spec.attacks == SWEEP_ATTACKS and spec.temperatures == (1, 2, 5, 10, 20, 30, 40, 50, 100)
    assert configurations(spec)[0].eps == get_dataset_spec("digits").eps_grid
    (narrow,) = _script_specs("temperature_sweep.sh", "digits", TEMPERATURES="1 100", ATTACKS="fgsm,pgd")
    assert (narrow.temperatures, narrow.attacks) == ((1, 100), ("fgsm", "pgd"))


def test_the_eps_dataset_and_variants_scripts_write_specs_the_sweep_accepts():
    from defdistill.evaluate.attacks import ATTACKS
    from defdistill.studies.sweep import configurations

    (eps,) = _script_specs("eps_sweep.sh", "digits", EPS="0.01,0.5")
    assert (eps.temperatures, eps.students, eps.eps) == ((1, 100), (100,), (0.01, 0.5))
    assert set(eps.attacks) == {name for name, spec in ATTACKS.items() if spec.bounded}
    assert [c.models for c in configurations(eps)] == [["teacher-T1"], ["teacher-T100", "student-T100"]]
    assert [s.dataset for s in _script_specs("dataset_sweep.sh", "digits", "mnist", "digits")] == [
        "digits",
        "mnist",
    ]
    (variants,) = _script_specs("variants.sh", "digits", "-n", "100", GENERATIONS="2")
    models = configurations(variants)[1].models
    assert models[:3] == ["teacher-T100", "student-T100", "student-T100-hinton"]
    assert models[-3:] == ["student-T100-noise", "student-T100-ban-gen1", "student-T100-ban-gen2"]


def test_the_privacy_script_writes_one_spec_per_seed():
    specs = _script_specs(
        "privacy_sweep.sh", "digits", "2", "--epochs", "5", "--runs-dir", "r", "--results-dir", "o"
    )
    assert [(s.study, s.seed, s.shadows, s.transfer_sets) for s in specs] == [
        ("privacy", seed, 2, ("public", "noise")) for seed in (0, 1, 2)
    ]
    assert [(s.runs_dir, s.results_dir) for s in specs] == [("r", "o")] + [
        (f"r/privacy-seed{seed}", f"o/privacy-seeds/seed{seed}") for seed in (1, 2)
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["temperature_sweep.sh", "digits", "-j", "0"], "-j takes a positive integer, got 0"),
        (["eps_sweep.sh", "digits", "--bogus"], "unknown option --bogus"),
        (["privacy_sweep.sh", "digits", "-n", "10"], "-n does not apply to the privacy sweep"),
    ],
)
def test_the_scripts_refuse_bad_options(args: list[str], message: str):
    done = subprocess.run(
        ["bash", str(EXPERIMENTS / args[0]), *args[1:]], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr


def test_the_seeds_script_runs_the_full_evaluation_list_at_each_seed():
    from defdistill.evaluate.worst_case import FULL_EVALUATION_ATTACKS

    specs = _script_specs("seeds.sh", "mnist", "-n", "200", SEEDS="0 2", EPS="0.1,0.2")
    assert [(s.seed, s.attacks, s.eps) for s in specs] == [
        (seed, FULL_EVALUATION_ATTACKS, (0.1, 0.2)) for seed in (0, 2)
    ]
    assert [s.results_dir for s in specs] == ["results", "results/seeds/seed-2"]
