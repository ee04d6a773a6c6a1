"""Warm start (saccader/pipeline/warmstart.py): local jobs forked from a server with torch imported behave as fresh
ones.

Every test gets its own server (a private TMPDIR, so its own socket) that exits soon after the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os, sys, time, signal
mode = sys.argv[1]
if mode == "usr2":  # before the first line: the test signals once it has read it
    signal.signal(signal.SIGUSR2, lambda *_: sys.exit(7))
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "parent", os.getppid(), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if mode in ("usr2", "sleep"):
    time.sleep(60)
if mode == "term":
    os.kill(os.getpid(), signal.SIGTERM)
if mode == "raise":
    raise ValueError("boom")
if mode == "interrupt":
    raise KeyboardInterrupt
sys.exit(int(mode))
"""


@pytest.fixture
def env(tmp_path):
    """Environment of a client: a private, short TMPDIR (unix socket paths are limited to 107 bytes)."""
    tmp = tempfile.mkdtemp(prefix="ws", dir="/tmp")
    (tmp_path / "probe.py").write_text(PROBE)
    yield {**os.environ, "TMPDIR": tmp, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "OMP_NUM_THREADS": "1"}
    shutil.rmtree(tmp, ignore_errors=True)  # the server, if still up, exits when idle (its socket is gone)


def client(env, *args, cwd, idle="5", **kw):
    return subprocess.Popen([sys.executable, "-m", "saccader.pipeline.warmstart", "--idle-s", idle, "-u", "-m", "probe",
                             *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_a_forked_job_gets_the_clients_argv_cwd_env_stdio_and_exit_code(env, tmp_path):
    first = finish(client({**env, "X": "one"}, "3", "a b", cwd=tmp_path))
    second = finish(client({**env, "X": "two"}, "0", cwd=tmp_path))
    assert first[0] == 3 and second[0] == 0, (first, second)
    assert f"argv ['3', 'a b'] cwd {tmp_path} X one" in first[1]
    assert f"argv ['0'] cwd {tmp_path} X two" in second[1]
    assert first[2].strip().endswith("to stderr") and second[2].strip().endswith("to stderr")
    parents = {re.search(r"parent (\d+)", out)[1] for _, out, _ in (first, second)}
    assert len(parents) == 1, "both jobs are children of the same server"
    assert parents != {str(os.getpid())}


def test_an_uncaught_exception_exits_as_in_a_fresh_interpreter(env, tmp_path):
    code, _, err = finish(client(env, "raise", cwd=tmp_path))
    assert code == 1 and "ValueError: boom" in err
    fresh = subprocess.run([sys.executable, "-m", "probe", "interrupt"], cwd=tmp_path, env=env, capture_output=True)
    code, _, err = finish(client(env, "interrupt", cwd=tmp_path))
    assert code == fresh.returncode == -signal.SIGINT and "KeyboardInterrupt" in err


def test_signals_reach_the_job_and_its_death_by_signal_is_the_clients(env, tmp_path):
    proc = client(env, "usr2", cwd=tmp_path)
    assert "argv" in proc.stdout.readline()  # the job is running and has its handler
    proc.send_signal(signal.SIGUSR2)  # submitit's time-out signal, sent to the process it started
    assert finish(proc)[0] == 7
    assert finish(client(env, "term", cwd=tmp_path))[0] == -signal.SIGTERM


def sleeping_job(env, tmp_path, before: str = "") -> tuple[subprocess.Popen, int]:
    """A client whose forked job runs ``before``, says its pid and sleeps: (the client, the job's pid)."""
    (tmp_path / "probe.py").write_text(PROBE.replace(
        'time.sleep(60)', before + 'open("alive", "w").write(str(os.getpid())); time.sleep(60)'))
    proc = client(env, "sleep", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "alive").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    time.sleep(0.05)  # the pid is written whole
    return proc, int((tmp_path / "alive").read_text())


def test_a_job_killed_with_sigkill_kills_its_client_and_never_runs_again(env, tmp_path):
    """The client dies by SIGKILL as the job did (the OOM killer's signal); it must not take the job's death for a
    failure to fork and run the job a second time in a fresh interpreter."""
    proc, pid = sleeping_job(env, tmp_path, before='open("runs", "a").write("run\\n"); ')
    os.kill(pid, signal.SIGKILL)
    code, _, err = finish(proc)
    assert code == -signal.SIGKILL, err
    time.sleep(1.0)
    assert (tmp_path / "runs").read_text() == "run\n" and "fresh interpreter" not in err


def test_killing_the_client_kills_the_job(env, tmp_path):
    proc, pid = sleeping_job(env, tmp_path)
    proc.kill()  # what submitit does last when it cancels a job
    proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():  # the server kills and reaps it
        assert time.monotonic() < deadline, "the job outlived its client"
        time.sleep(0.01)


def test_killing_the_server_kills_the_job_and_fails_the_client(env, tmp_path):
    """A SIGKILLed server must not leave its jobs running: the rerun would start each a second time beside it."""
    proc, pid = sleeping_job(env, tmp_path)
    server = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(server, signal.SIGKILL)
    try:
        assert proc.wait(timeout=30) == 1
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists():  # (the job holds the client's pipes while it lives)
            assert time.monotonic() < deadline, "the job outlived its server"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert "the server ended before the job did" in proc.stderr.read()


def test_an_idle_server_exits_and_the_next_client_starts_another(env, tmp_path):
    first = finish(client(env, "0", cwd=tmp_path, idle="0.2"))
    time.sleep(1.0)
    assert not list(Path(env["TMPDIR"]).glob("saccader-warmstart-*/*.sock")), "the idle server removed its socket"
    second = finish(client(env, "0", cwd=tmp_path, idle="0.2"))
    assert first[0] == second[0] == 0
    assert re.search(r"parent (\d+)", first[1])[1] != re.search(r"parent (\d+)", second[1])[1]


def test_what_cannot_be_forked_runs_as_a_plain_interpreter(env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "saccader.pipeline.warmstart", "-c", "print('plain')"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "plain\n"
    assert "running a fresh interpreter instead" in proc.stderr


def test_a_launched_training_run_is_bitwise_the_same_warm_or_fresh(tiny_dataset, env, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_dataset))
    weights = {}
    for mode in ("--warm-start", "--no-warm-start"):
        out = tmp_path / mode.strip("-")
        proc = subprocess.run([sys.executable, "-m", "saccader.pipeline.launch", "--folder", str(out / "sub"), mode,
                               "--", "train", "--config", str(config), "--run", "bagnet77_lowd", "--seed", "0",
                               "--out", str(out / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        job_out = next((out / "sub").glob("*_0_log.out")).read_text()
        assert "Job completed successfully" in job_out  # submitit's logger, bound to stdout at import, still lands
        weights[mode] = torch.load(out / "run" / "model.pt", weights_only=True)
    state_warm, state_fresh = weights.values()
    assert state_warm.keys() == state_fresh.keys()
    assert all(torch.equal(state_warm[k], state_fresh[k]) for k in state_warm)
    server_logs = list(Path(env["TMPDIR"]).glob("saccader-warmstart-*/*.log"))
    assert server_logs and "serving on" in server_logs[0].read_text(), "the warm run went through a server"


def test_the_launcher_hands_submitit_the_warm_interpreter_for_local_jobs_only(tmp_path):
    from saccader.pipeline import launch as launcher

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"executor": {"warm_start": True}}))
    command = ["--", "params", "--config", str(tmp_path / "c.yaml")]
    local = launcher.build_executor(launcher.parse_args(["--folder", str(tmp_path), "--cpus", "3", *command]))
    assert local._executor.python.endswith("-m saccader.pipeline.warmstart --threads 3")
    off = launcher.parse_args(["--folder", str(tmp_path), "--no-warm-start", *command])
    assert "warmstart" not in launcher.build_executor(off)._executor.python
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"executor": {}}))
    assert launcher.parse_args(["--folder", str(tmp_path), *command]).warm_start is False  # the schema default
