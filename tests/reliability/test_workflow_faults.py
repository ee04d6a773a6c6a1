"""Workflow faults: two Snakemake invocations on one results folder (Snakemake's lock), a failed job's stderr tail in
the Snakemake output, and a rerun that picks up from the failed job. Runs the real Snakefile in a scratch working
directory (its own .snakemake/ lock folder) on the tiny digits dataset."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "results/dataset/manifest.json"


def snakemake(cwd: Path, config: str, *targets, popen=False):
    argv = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--workflow-profile",
            str(ROOT / "workflow" / "profiles" / "default"), "--configfile", config, "--cores", "1", *targets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def write(cwd: Path, name: str, digits_seed: int) -> dict:
    config = tiny_config(cwd)
    config.update(results_dir="results")
    config["dataset"]["root"] = "results/dataset"
    config["dataset"]["digits"]["seed"] = digits_seed
    (cwd / name).write_text(yaml.safe_dump(config))
    return config


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_invocations(tmp_path_factory):
    """Invocation A builds the dataset; while its job runs (frozen with SIGSTOP), invocation B, with another
    config, asks for the same output on the same results folder (refused by Snakemake's lock), then C, with that
    other config too, asks for an output outside A's jobs (refused by the results_dir lock). A's job reads its config
    after both."""
    cwd = tmp_path_factory.mktemp("work")
    write(cwd, "a.yaml", 0)
    write(cwd, "b.yaml", 1)
    a = snakemake(cwd, "a.yaml", MANIFEST, popen=True)
    deadline = time.monotonic() + 120
    try:
        while not (cwd / "results" / "logs" / "make_dataset.log").exists():  # A holds the lock and runs its job
            assert a.poll() is None, a.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(a.pid, signal.SIGSTOP)
        config_during_a = (cwd / "results" / "config.yaml").read_text()
        configs_during_a = tree(cwd / "results" / "configs")
        b_code, b_out = snakemake(cwd, "b.yaml", MANIFEST)
        config_after_b = (cwd / "results" / "config.yaml").read_text()
        c_code, c_out = snakemake(cwd, "b.yaml", "results/params.parquet")
        configs_after_c = tree(cwd / "results" / "configs")
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    a_out = a.communicate(timeout=300)[0]
    undisturbed = tmp_path_factory.mktemp("undisturbed")
    write(undisturbed, "a.yaml", 0)
    ref_code, ref_out = snakemake(undisturbed, "a.yaml", MANIFEST)
    assert ref_code == 0, ref_out[-3000:]
    return dict(cwd=cwd, a_code=a.returncode, a_out=a_out, b_code=b_code, b_out=b_out, c_code=c_code, c_out=c_out,
                config_during_a=config_during_a, config_after_b=config_after_b, configs_during_a=configs_during_a,
                configs_after_c=configs_after_c, undisturbed=undisturbed)


def test_second_invocation_is_refused_by_the_lock_and_the_first_completes(two_invocations):
    run = two_invocations
    assert run["b_code"] != 0 and "Directory cannot be locked" in run["b_out"], run["b_out"][-2000:]
    assert run["a_code"] == 0, run["a_out"][-3000:]
    manifest = run["cwd"] / MANIFEST
    assert manifest.is_file()


def test_refused_invocation_leaves_the_results_folder_alone(two_invocations):
    assert two_invocations["config_after_b"] == two_invocations["config_during_a"]


def test_no_invocation_rewrites_what_running_jobs_read(two_invocations):
    """Jobs read a content-addressed copy of their config. C asks only for a job outside A's, which Snakemake's lock
    lets through; the results_dir lock refuses it before it writes anything, naming A, so A's job, resumed after C,
    builds bitwise the dataset of an undisturbed run."""
    run = two_invocations
    assert run["c_code"] != 0 and "is in use by Snakemake pid" in run["c_out"], run["c_out"][-3000:]
    assert len(run["configs_during_a"]) == 1 and run["configs_after_c"] == run["configs_during_a"]
    assert not (run["cwd"] / "results" / "params.parquet").exists()
    disturbed = tree(run["cwd"] / "results" / "dataset")
    assert disturbed and disturbed == tree(run["undisturbed"] / "results" / "dataset")


def test_failed_job_shows_its_stderr_tail_and_the_rerun_picks_up_there(two_invocations):
    cwd = two_invocations["cwd"]
    victim = sorted((cwd / "results" / "dataset" / "train" / "3").glob("*.png"))[0]
    saved = victim.read_bytes()
    victim.write_bytes(saved[:60])  # truncated: check_data (a submitit job through the launcher) fails
    code, out = snakemake(cwd, "a.yaml", "results/checks/data.ok")
    assert code != 0
    # Snakemake prints the rule's log: the launcher's lines and the tail of the job's stderr, which holds the error
    # line and the list of every unreadable file
    assert "launch: last" in out and "error: 1 unreadable or non-image files" in out, out[-3000:]
    assert f"unreadable: {victim.relative_to(cwd)}" in out, out[-3000:]
    assert not (cwd / "results" / "checks" / "data.ok").exists()
    victim.write_bytes(saved)
    code, out = snakemake(cwd, "a.yaml", "results/checks/data.ok")
    assert code == 0, out[-3000:]
    assert "rule check_data" in out and "rule make_dataset" not in out  # only the failed job runs again
    assert (cwd / "results" / "checks" / "data.ok").is_file()


def test_no_profile_turns_the_lock_off():
    profiles = [ROOT / "workflow" / "profiles" / "default" / "config.yaml", ROOT / "slurm" / "config.yaml"]
    for path in profiles:
        settings = yaml.safe_load(path.read_text()) or {}
        assert not settings.get("nolock") and not settings.get("no-lock"), path


def test_launcher_cancels_its_job_when_its_snakemake_is_killed(tiny_dataset, tmp_path):
    """A Snakemake killed with SIGKILL leaves its job processes: the launcher sees its owner (SACCADER_SNAKEMAKE,
    set by the workflow) gone and cancels the job, so that the rerun's copy of the job is the only one."""
    from saccader.pipeline.snakelock import start_time

    dataset = {**tiny_dataset["dataset"], "cache_images": False}  # no decoded-image pack in the shared dataset
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**tiny_dataset, "dataset": dataset}))
    owner = subprocess.Popen(["sleep", "300"])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "SACCADER_SNAKEMAKE": f"{socket.gethostname()}:{owner.pid}:{start_time(owner.pid)}"}
    folder = tmp_path / "sub"
    argv = [sys.executable, "-m", "saccader.pipeline.launch", "--folder", str(folder), "--no-warm-start", "--", "train",
            "--config", str(tmp_path / "c.yaml"), "--run", "bagnet77", "--seed", "0", "--out", str(tmp_path / "o")]
    launcher = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(folder.glob("*_0_log.err")):  # the job runs
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.stderr.read()
            time.sleep(0.05)
        time.sleep(1.0)
        assert launcher.poll() is None  # the owner lives: the job goes on
        owner.kill()
        owner.wait()
        assert launcher.wait(timeout=30) == 1
        assert "is gone: job cancelled" in launcher.stderr.read()
        time.sleep(2.0)  # the controller's SIGINT, then SIGKILL
        alive = [p for p in os.listdir("/proc") if p.isdigit() and str(folder).encode() in _cmdline(p)]
        assert alive == []
    finally:
        owner.kill()
        launcher.kill()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow  # a minute of wall time at least (submitit's time limit is in minutes)
def test_a_local_job_past_its_time_limit_is_requeued_and_resumes(tiny_dataset, tmp_path):
    """submitit's time-out signal (USR2, --signal-delay-s before --time-min) checkpoints and requeues the job, which
    resumes and completes: the exit by which submitit requeues it is not turned into a job failure."""
    # 200 tiny epochs (an idle machine does about 8 a second): still training when the signal comes 20 s in; on a
    # loaded machine each attempt resumes where the last one checkpointed, so allow several
    config = {**tiny_dataset, "train": {"bagnet77": {**tiny_dataset["train"]["bagnet77"], "epochs": 200}},
              "dataset": {**tiny_dataset["dataset"], "cache_images": False}}  # the shared dataset stays as built
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    folder = tmp_path / "sub"
    argv = [sys.executable, "-m", "saccader.pipeline.launch", "--folder", str(folder), "--no-warm-start",
            "--time-min", "1", "--signal-delay-s", "40", "--max-requeues", "12", "--", "train", "--config",
            str(tmp_path / "c.yaml"), "--run", "bagnet77", "--seed", "0", "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    err = "".join(p.read_text() for p in folder.glob("*_log.err"))
    assert "Requeued job" in err, "the job ended before its time-out signal: make it longer"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "o" / "model.pt").is_file()


@pytest.mark.slow  # a minute of wall time at least (the time limit is in minutes)
def test_a_hung_training_job_is_killed_at_its_time_limit_named_and_the_rerun_recovers(tmp_path):
    """A training job stopped with SIGSTOP (a hang) is killed at its rule's runtime (submitit's local controller,
    SLURM on a cluster); Snakemake names the failed job, the launcher says why, the same command then completes."""
    config = write(tmp_path, "a.yaml", 0)
    config["train"] = {"bagnet77": {**config["train"]["bagnet77"], "epochs": 3}}
    config["executor"]["warm_start"] = False  # the job's interpreter is the process that trains: stop that one
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(config))
    target = "results/runs/bagnet77/seed0/model.pt"
    argv = ["--set-resources", "train:runtime=1"]
    proc = snakemake(tmp_path, "a.yaml", target, *argv, popen=True)
    ckpt = tmp_path / "results" / "runs" / "bagnet77" / "seed0" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists():  # the job has made progress: stop it
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    folder = str(tmp_path / "results" / "logs" / "submitit" / "train" / "bagnet77" / "seed0")
    jobs = [int(p) for p in os.listdir("/proc") if p.isdigit() and folder.encode() in _cmdline(p)
            and b"submitit.core._submit" in _cmdline(p)]
    for pid in jobs:
        os.kill(pid, signal.SIGSTOP)
    try:
        out = proc.communicate(timeout=300)[0]
    finally:
        for pid in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert proc.returncode != 0
    assert "Error in rule train" in out and "wildcards: run=bagnet77, seed=0" in out, out[-3000:]
    assert "ran past its time limit of 1 min" in out, out[-3000:]
    code, out = snakemake(tmp_path, "a.yaml", target, *argv)
    assert code == 0 and (tmp_path / target).is_file(), out[-3000:]
