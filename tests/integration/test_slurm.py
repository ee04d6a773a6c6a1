"""`snakemake --profile slurm` on a real single-node SLURM, with a training job requeued mid-run.

Needs a running SLURM with accounting: `bash tests/integration/slurm.sh start` (installs it with apt-get if needed),
then `pytest -m slurm tests/integration`, then `bash tests/integration/slurm.sh stop`. Runs the data stage and one
small training job of the smoke configuration through the repository's slurm/ profile (resources shrunk to this
machine on the command line), requeues the training job with `scontrol requeue` once it has written a checkpoint,
and checks that Snakemake still sees one successful job whose weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from saccader.pipeline.config import load_experiment

ROOT = Path(__file__).resolve().parents[2]
RUN = "bagnet77_lowd"

pytestmark = pytest.mark.slurm


def small_config(tmp_path: Path) -> Path:
    """The smoke experiment with a training run long enough to be requeued in the middle."""
    config = load_experiment(ROOT / "config/smoke.yaml")
    config["results_dir"] = str(tmp_path / "results")
    config["dataset"]["root"] = str(tmp_path / "results/dataset")
    config["train"][RUN].update(epochs=20, checkpoint_every=3)  # ~25 s on a quiet machine: requeued mid-run
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def resources(rule: str) -> list[str]:
    sizes = dict(submitit_cluster="slurm", slurm_partition="debug", gpu=0, cpus_per_task=1, mem_mb=1000, runtime=30)
    return [f"{rule}:{key}={value}" for key, value in sizes.items()]


def squeue_job(name: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
    ids = out.stdout.split()
    return ids[0] if ids else None


@pytest.fixture(scope="module", autouse=True)
def slurm_is_up():
    if shutil.which("sinfo") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.fail("no running SLURM: run `bash tests/integration/slurm.sh start` first")


def test_profile_slurm_runs_and_a_requeued_training_job_resumes(tmp_path):
    config = small_config(tmp_path)
    results = tmp_path / "results"
    model = results / "runs" / RUN / "seed0" / "model.pt"
    cmd = [sys.executable, "-m", "snakemake", str(model), "--profile", "slurm", "--configfile", str(config),
           "--set-resources", *resources("check_data"), *resources("train")]
    log = (tmp_path / "snakemake.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        ckpt = results / "runs" / RUN / "seed0" / "checkpoint.pt"
        deadline = time.time() + 400
        job = None
        while time.time() < deadline and proc.poll() is None:
            job = squeue_job("train")
            if job and ckpt.exists():
                break
            time.sleep(0.5)
        assert job and ckpt.exists(), f"training never ran with a checkpoint:\n{(tmp_path / 'snakemake.log').read_text()}"
        subprocess.run(["scontrol", "requeue", job], check=True)
        assert proc.wait(timeout=600) == 0, (tmp_path / "snakemake.log").read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    assert model.is_file()
    train_log = (results / "logs" / "train" / RUN / "seed0.log").read_text()
    assert f"slurm job {job}" in train_log and f"job {job} done" in train_log  # one SLURM job, seen as one success
    job_err = (results / "logs/submitit/train" / RUN / "seed0" / f"{job}_0_log.err").read_text()
    assert "resuming from" in job_err  # the second start of the same job id continued from checkpoint.pt
    for _ in range(120):  # accounting lags the job's own end (its result file) by a few seconds
        states = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-D", "-o", "State"], capture_output=True,
                                text=True).stdout.split()
        if states[-1:] == ["COMPLETED"]:
            break
        time.sleep(0.5)
    assert states[-1] == "COMPLETED" and "REQUEUED" in states, states  # one job id: requeued once, then done

    # The same run without interruption, same code path (local submitit job, 1 thread): identical weights.
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "saccader.pipeline.launch", "--folder", str(tmp_path / "ref-submitit"),
                    "--cpus", "1", "--", "train", "--config", str(results / "config.yaml"), "--run", RUN, "--seed", "0",
                    "--out", str(reference)], cwd=ROOT, check=True, timeout=600)
    import torch

    requeued = torch.load(model, weights_only=True)
    uninterrupted = torch.load(reference / "model.pt", weights_only=True)
    assert requeued.keys() == uninterrupted.keys()
    for key in requeued:
        assert torch.equal(requeued[key], uninterrupted[key]), key
