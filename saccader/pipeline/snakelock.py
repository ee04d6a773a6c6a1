"""Stale Snakemake locks: release the locks of a Snakemake that was killed, so that rerunning the same command works.

Snakemake locks the files of the jobs it runs (``.snakemake/locks/N.input.lock``, ``N.output.lock``) and removes the
locks when it ends, also on SIGTERM or SIGINT; a SIGKILL (the OOM killer, a lost login-node session) leaves them,
and every later invocation that needs one of those files stops with "Directory cannot be locked" until someone
runs ``snakemake --unlock``. The lock files name no owner, and Snakemake offers no hook before it takes its lock, so
the workflow registers each invocation while it parses the Snakefile (before any lock can be taken) in
``.snakemake/saccader-invocations/HOST.PID`` (holding the process's start time, so a reused PID is not mistaken for
it) and removes the entry when the interpreter exits. When no other registered invocation is alive, any lock file
left is stale: this module removes it and says so in one line. An invocation on another host (a shared file system)
counts as alive, since its process cannot be checked from here.

The jobs of a Snakemake killed with SIGKILL keep running, and its rerun would start each of them a second time beside
the first. The workflow names itself to its jobs in ``SACCADER_SNAKEMAKE`` (host:pid:start time): the launcher
cancels its job and every ``saccader`` or ``analysis`` command exits once that Snakemake is gone (``owner_gone``,
``exit_with_snakemake``). A job on another host (SLURM) cannot check it and runs on.
"""

from __future__ import annotations

import atexit
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


def release_stale_locks(snakemake_dir: str | os.PathLike = ".snakemake", log=print) -> list[Path]:
    """Register this process as an invocation, then remove the lock files when no other invocation is alive.
    Returns the lock files removed."""
    folder = Path(snakemake_dir)
    registry = folder / REGISTRY
    registry.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = registry / f"{host}.{os.getpid()}"
    me.write_text(start_time(os.getpid()) or "")
    atexit.register(me.unlink, missing_ok=True)
    others_alive = False
    for entry in registry.iterdir():
        entry_host, _, pid = entry.name.rpartition(".")
        if entry == me or not pid.isdigit():
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
            entry.unlink(missing_ok=True)  # a killed invocation's entry
    stale = [] if others_alive else sorted((folder / "locks").glob("*.lock"))
    for lock in stale:
        lock.unlink(missing_ok=True)
    if stale:
        log(f"released {len(stale)} stale lock file(s) of a Snakemake that was killed (no other Snakemake runs "
            f"here); its unfinished jobs are rerun")
    return stale


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
