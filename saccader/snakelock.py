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
"""

from __future__ import annotations

import atexit
import os
import socket
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
