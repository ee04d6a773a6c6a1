"""Stale Snakemake locks: release the locks of a Snakemake that was killed, so that rerunning the same command works.

Snakemake locks the files of the jobs it runs (``.snakemake/locks/N.input.lock``, ``N.output.lock``) and removes the
locks when it ends, also on SIGTERM or SIGINT; a SIGKILL (the OOM killer, a lost login-node session) leaves them,
and every later invocation that needs one of those files stops with "Directory cannot be locked" until someone
runs ``snakemake --unlock``. The lock files name no owner, and Snakemake offers no hook before it takes its lock, so
each invocation that runs jobs registers itself in ``onstart:`` in ``.snakemake/saccader-invocations/HOST.PID``
(holding the process's start time, so a reused PID is not mistaken for it) and removes the entry when the
interpreter exits. While the next invocation parses the Snakefile (Snakemake takes its lock after parsing, before
``onstart:``), lock files left when no other registered invocation is alive are stale: this module removes them and
says so in one line; with no lock file there, it writes nothing. An invocation on another host (a shared file system)
counts as alive, since its process cannot be checked from here.

The jobs of a Snakemake killed with SIGKILL keep running, and its rerun would start each of them a second time beside
the first. The workflow names itself to its jobs in ``SACCADER_SNAKEMAKE`` (host:pid:start time): the launcher
cancels its job and every ``saccader`` or ``analysis`` command exits once that Snakemake is gone (``owner_gone``,
``exit_with_snakemake``). A job on another host (SLURM) cannot check it and runs on.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import signal
import socket
import threading
import time
from pathlib import Path

REGISTRY = "saccader-invocations"


def start_time(pid: int) -> str | None:
    """The start time of a live process (its /proc stat field), '' where /proc is missing, None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        if not os.path.isdir("/proc"):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return ""
        return None
    except (OSError, IndexError):
        return None


def register_invocation(snakemake_dir: str | os.PathLike = ".snakemake") -> Path:
    """Register this process as a live invocation until the interpreter exits (the workflow's onstart: only an
    invocation that runs jobs holds locks). Returns its entry."""
    registry = Path(snakemake_dir) / REGISTRY
    registry.mkdir(parents=True, exist_ok=True)
    me = registry / f"{socket.gethostname()}.{os.getpid()}"
    me.write_text(start_time(os.getpid()) or "")
    atexit.register(me.unlink, missing_ok=True)
    return me


def release_stale_locks(snakemake_dir: str | os.PathLike = ".snakemake", log=print) -> list[Path]:
    """Remove the lock files when no other registered invocation is alive. Writes nothing when there is no lock file
    (a dry run after a clean exit). Returns the lock files removed."""
    folder = Path(snakemake_dir)
    held = sorted((folder / "locks").glob("*.lock"))
    if not held:
        return []
    registry = folder / REGISTRY
    host = socket.gethostname()
    mine = f"{host}.{os.getpid()}"
    others_alive, dead = False, []
    for entry in registry.iterdir() if registry.is_dir() else ():
        entry_host, _, pid = entry.name.rpartition(".")
        if entry.name == mine or not pid.isdigit():
            continue
        if entry_host != host:
            others_alive = True
            continue
        try:
            recorded = entry.read_text()
        except FileNotFoundError:  # it just ended
            continue
        now = start_time(int(pid))
        if now is not None and (now == recorded or not recorded):
            others_alive = True
        else:
            dead.append(entry)  # a killed invocation's entry
    if others_alive:
        return []
    for path in dead + held:
        path.unlink(missing_ok=True)
    log(f"released {len(held)} stale lock file(s) of a Snakemake that was killed (no other Snakemake runs here); "
        "its unfinished jobs are rerun")
    return held


# ------------------------------------------------------------------------------------------ the results lock
# Snakemake's own lock lives in the checkout's .snakemake/ and covers only the files of the jobs it runs: a second
# checkout, or another user, on the same results_dir is not refused by it. This lock is a kernel lock (flock) on a
# file inside the resolved results_dir, so every process on that file system sees it (NFS emulates flock with
# byte-range locks), and it goes with the process that holds it: a killed Snakemake leaves no stale lock.
RESULTS_LOCK = ".saccader.lock"  # also marks the folder as an experiment's results_dir
_held: dict[Path, int] = {}


def lock_results_dir(results_dir: str | os.PathLike) -> Path:
    """Hold the lock of ``results_dir`` until this process exits; a UserError naming the holder if another process
    holds it. Returns the lock file."""
    import fcntl

    from saccader.errors import UserError

    folder = Path(results_dir).resolve()
    path = folder / RESULTS_LOCK
    if path in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's results_dir: a read-only descriptor still takes the lock
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Path(path).read_text().strip() or "another process"
        os.close(fd)
        raise UserError(f"results_dir {folder} is in use by {holder}",
                        "wait for that run to end, or give this experiment its own results_dir") from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"Snakemake pid {os.getpid()} of {getpass.getuser()} on {socket.gethostname()} in "
                     f"{os.getcwd()}\n".encode())
    _held[path] = fd
    return path


OWNER = "SACCADER_SNAKEMAKE"


def owner_value() -> str:
    """What the workflow puts in ``SACCADER_SNAKEMAKE`` for its jobs: this process, as host:pid:start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_time(os.getpid())}"


def owner_gone(value: str | None = None) -> bool:
    """Whether the Snakemake named by ``SACCADER_SNAKEMAKE`` is gone (False when unset or on another host)."""
    host, _, rest = (os.environ.get(OWNER, "") if value is None else value).partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return start_time(int(pid)) not in (started, "")


def exit_with_snakemake(poll_s: float = 0.5) -> None:
    """In a job started by the workflow: kill this process once its Snakemake is gone (a daemon thread)."""
    value = os.environ.get(OWNER)
    if not value or owner_gone(value):
        return

    def watch():
        while not owner_gone(value):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)  # the rerun redoes the job; its real outputs are never half-written

    threading.Thread(target=watch, name="exit-with-snakemake", daemon=True).start()
