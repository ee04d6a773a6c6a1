"""Stale Snakemake locks (saccader/pipeline/snakelock.py): released when their owner is dead, kept while another
runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from saccader.pipeline import snakelock


def locks(folder):
    (folder / "locks").mkdir(parents=True, exist_ok=True)
    for name in ("0.input.lock", "0.output.lock"):
        (folder / "locks" / name).write_text("results/x\n")
    return sorted((folder / "locks").iterdir())


def register(folder, pid, start):
    (folder / snakelock.REGISTRY).mkdir(parents=True, exist_ok=True)
    (folder / snakelock.REGISTRY / f"{socket.gethostname()}.{pid}").write_text(start)


def test_locks_of_a_killed_invocation_are_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    register(tmp_path, dead.pid, "123")
    register(tmp_path, os.getppid(), "1")  # a live PID with another start time: a reused PID, not the owner
    held = locks(tmp_path)
    lines = []
    assert snakelock.release_stale_locks(tmp_path, log=lines.append) == held
    assert not any((tmp_path / "locks").iterdir()) and "stale lock" in lines[0]
    assert not any((tmp_path / snakelock.REGISTRY).iterdir())  # the dead entries went with the locks


def test_without_lock_files_nothing_is_written(tmp_path):
    """What every parse of the workflow does (dry runs included): read, and write nothing."""
    assert snakelock.release_stale_locks(tmp_path / ".snakemake", log=print) == []
    assert not (tmp_path / ".snakemake").exists()


def test_locks_are_kept_while_another_invocation_runs(tmp_path):
    """Registered as the workflow's onstart registers it; once that process is gone, its locks are stale."""
    code = ("import sys, time; from saccader.pipeline import snakelock as s; s.register_invocation(sys.argv[1]); "
            "print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        held = locks(tmp_path)
        assert snakelock.release_stale_locks(tmp_path, log=print) == []
        assert sorted((tmp_path / "locks").iterdir()) == held
    finally:
        proc.terminate()
        proc.wait()
    assert snakelock.release_stale_locks(tmp_path, log=print) == held  # SIGTERM: atexit did not run, PID is gone


def test_an_invocation_on_another_host_counts_as_alive(tmp_path):
    (tmp_path / snakelock.REGISTRY).mkdir(parents=True)
    (tmp_path / snakelock.REGISTRY / "some-other-host.1").write_text("1")
    locks(tmp_path)
    assert snakelock.release_stale_locks(tmp_path, log=print) == []


def test_a_job_exits_once_its_snakemake_is_gone_and_not_on_another_host(tmp_path):
    owner = subprocess.Popen(["sleep", "300"])
    value = f"{socket.gethostname()}:{owner.pid}:{snakelock.start_time(owner.pid)}"
    job = subprocess.Popen([sys.executable, "-c", "from saccader.pipeline.snakelock import exit_with_snakemake as e; "
                            "import time; e(0.05); print('up', flush=True); time.sleep(60)"],
                           env={**os.environ, snakelock.OWNER: value}, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline() == "up\n" and not snakelock.owner_gone(value)
        owner.kill()
        owner.wait()
        assert job.wait(timeout=10) == -9 and snakelock.owner_gone(value)
        assert not snakelock.owner_gone(f"some-other-host:{owner.pid}:1")  # a SLURM node cannot check it
    finally:
        owner.kill()
        job.kill()


def test_one_results_lock_per_resolved_folder_released_when_its_holder_dies(tmp_path):
    """A second Snakemake on the same results_dir, from another checkout (another path to the same folder: a
    symbolic link here) is refused, naming the holder; a holder killed with SIGKILL leaves no stale lock."""
    from saccader.errors import UserError

    results = tmp_path / "results"
    (tmp_path / "checkout2").mkdir()
    (tmp_path / "checkout2" / "results").symlink_to(results)
    code = ("import sys, time; from saccader.pipeline import snakelock as s; s.lock_results_dir(sys.argv[1]); "
            "print('up', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(results)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "up\n"
        with pytest.raises(UserError, match=rf"results_dir {results} is in use by Snakemake pid {holder.pid} of "):
            snakelock.lock_results_dir(tmp_path / "checkout2" / "results")
    finally:
        holder.kill()
        holder.wait()
    assert snakelock.lock_results_dir(tmp_path / "checkout2" / "results") == results / snakelock.RESULTS_LOCK
