"""Warm start for local submitit jobs: each job is forked from a server that has already imported torch.

submitit's local executor starts every job as a fresh interpreter (``python -u -m submitit.core._submit FOLDER``),
and importing torch, torchvision and timm costs 3-5 s of CPU per job: about 10 job-minutes over the 145 heavy jobs
of the embedded run on 2 cores. With ``executor.warm_start`` the launcher hands submitit
``python -m saccader.pipeline.warmstart --threads N`` as the job's interpreter. This client asks a per-user server
(started on first use, gone after ``IDLE_S`` seconds without jobs) to fork a child that runs the same ``-m`` module with
the
client's argv, stdio, environment and working directory; it forwards every signal submitit or SLURM sends
(USR2 time-out, TERM, INT, ...) to the child and exits with the child's status. When the client dies (submitit
kills it with SIGKILL on cancel), the server kills the child; when the server dies, the kernel kills its children
(Linux) and their clients fail. Anything that prevents the fork (no server could be started, a platform without
``fork`` or ``SCM_RIGHTS``) falls back to exec'ing the plain interpreter command.

The ecosystem has no fork server for submitit (its LocalExecutor only takes an interpreter command), hence this
module. What the child inherits is only third-party modules (``PREIMPORTS``) and this module: the project's own
code is imported fresh by every job, so an edit between jobs is picked up. The server is keyed by the interpreter,
the thread count, the environment variables read at import time and the installed packages, so a changed venv or
setting gets a new server. A forked job computes bitwise what a fresh one does (tests/test_warmstart.py): the
allocator settings, the torch, numpy and ``random`` generators are reset to a fresh interpreter's state.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

PREIMPORTS = ("numpy", "torch", "torch.optim", "torchvision", "timm", "submitit", "yaml", "tqdm")
IDLE_S = 60.0  # a server with no job for this long exits (a Snakemake run keeps it busy; one ends within a minute)
START_TIMEOUT_S = 120.0  # the imports take 3-10 s; a loaded machine may take much longer
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)
ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "TORCH", "PYTORCH", "PYTHON", "LD_", "MALLOC", "CUDA_", "NVIDIA_")
_HEADER = struct.Struct("!I")


class WarmStartUnavailable(RuntimeError):
    """No server could take the job: the client runs it as a plain interpreter instead."""


# ------------------------------------------------------------------------------------------------ the key


def server_env(threads: int, env: dict[str, str]) -> dict[str, str]:
    """The server's environment: the client's, without the per-job submitit variables, with the job's threads as
    saccader.pipeline.launch.SaccaderJob sets them (a value the user set wins, as there)."""
    out = {k: v for k, v in env.items() if not k.startswith("SUBMITIT_")}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        out.setdefault(var, str(threads))
    return out


def server_key(env: dict[str, str]) -> str:
    """What a forked job inherits from the server: interpreter, installed packages, import-time settings."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    here = Path(__file__).resolve().parent
    part = {
        "python": sys.executable,
        "prefix": sys.prefix,
        "site": [(p, os.stat(p).st_mtime_ns) for p in site if os.path.isdir(p)],
        "own": [(f, os.stat(here / f).st_mtime_ns) for f in ("__init__.py", "runtime.py", "warmstart.py")],
        "env": sorted((k, v) for k, v in env.items() if k.startswith(ENV_PREFIXES)),
        "preimports": PREIMPORTS,
    }
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def server_dir() -> Path:
    """A directory only this user can enter: the socket in it runs code as this user."""
    path = Path(tempfile.gettempdir()) / f"saccader-warmstart-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not path.is_dir() or path.is_symlink():
        raise WarmStartUnavailable(f"{path} is not a private directory of this user")
    return path


# ------------------------------------------------------------------------------------------------ messages


def _send(sock: socket.socket, obj, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    payload = _HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [payload], list(fds)) if fds else 0  # the descriptors ride on the first bytes
    sock.sendall(payload[sent:])


def _recv(sock: socket.socket, max_fds: int = 0):
    """One message (and the descriptors sent with it); None when the peer closed the connection first."""
    fds: list[int] = []
    buf = b""
    while len(buf) < _HEADER.size or len(buf) < _HEADER.size + _HEADER.unpack(buf[:_HEADER.size])[0]:
        if max_fds and not fds:
            chunk, got, _, _ = socket.recv_fds(sock, 1 << 16, max_fds)
            fds += got
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None
        buf += chunk
    size = _HEADER.unpack(buf[:_HEADER.size])[0]
    obj = json.loads(buf[_HEADER.size:_HEADER.size + size])
    return (obj, fds) if max_fds else obj


# ------------------------------------------------------------------------------------------------ server


def _reset_generators() -> None:
    """Unseeded generators, as a fresh interpreter has them: without this every child would draw the same numbers."""
    import random

    import numpy as np
    import torch

    random.seed()
    np.random.seed()
    torch.seed()


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this process when ``parent`` (the server) dies. A killed server cannot report the
    job's status, so its client fails, and the rerun starts the job again: this copy must not run on beside it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the client's failure is all that is left
        return
    if os.getppid() != parent:  # the server died before the prctl
        os._exit(70)


def _run_child(request: dict, fds: list[int], server: int) -> None:
    """In the forked child: become the job's interpreter (stdio, env, cwd, argv), run its module, exit."""
    _die_with(server)
    for sig in FORWARDED + (signal.SIGCHLD,):
        signal.signal(sig, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # sys.stdin/stdout/stderr stay the server's objects, now on the job's descriptors: the server runs with -u, so
    # they are unbuffered as a fresh ``python -u`` job's, and the handlers that modules bound to them at import
    # time (submitit's logger) write into the job's files.
    _reset_generators()
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]  # what ``python -m`` puts first
    code, die_by = 0, None
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # an interpreter then dies by SIGINT, after its clean-up
        traceback.print_exc()
        code, die_by = 128 + signal.SIGINT, signal.SIGINT
    except BaseException:  # noqa: BLE001 - what an interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    for thread in threading.enumerate():  # an interpreter waits for its non-daemon threads at exit
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if die_by is not None:
        signal.signal(die_by, signal.SIG_DFL)
        os.kill(os.getpid(), die_by)
    os._exit(code)


class Server:
    """Accepts job requests on a unix socket, forks one child per job, reports each child's wait status."""

    def __init__(self, path: Path, idle_s: float = IDLE_S):
        self.path, self.idle_s = path, idle_s
        self.children: dict[int, socket.socket] = {}  # pid -> its client's connection (watched by the selector)
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.last_busy = time.monotonic()

    def listen(self) -> None:
        old = os.umask(0o077)
        try:
            if self.path.exists():
                self.path.unlink()  # a dead server's socket: the client holding the start lock found none alive
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(self.path))
        finally:
            os.umask(old)
        self.listener.listen(64)
        self.selector.register(self.listener, selectors.EVENT_READ)

    def serve(self) -> None:
        while self.listener is not None or self.children:
            for key, _ in self.selector.select(timeout=0.02):
                if key.fileobj is self.listener:
                    self._accept()
                else:  # a client's connection is readable only when it closed: its child must not outlive it
                    self._client_gone(key.fileobj)
            self._reap()
            if self.children:
                self.last_busy = time.monotonic()
            elif self.listener is not None and time.monotonic() - self.last_busy > self.idle_s:
                self._stop_listening()

    def _stop_listening(self) -> None:
        """Unlink first (a new client then starts a new server), then take the requests already queued."""
        self.path.unlink(missing_ok=True)
        self.listener.setblocking(False)
        while True:
            try:
                self._accept()
            except BlockingIOError:
                break
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.setblocking(True)
        conn.settimeout(10.0)  # a client sends its request at once; one that stalls must not stall the others
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            got = _recv(conn, max_fds=3) if uid == os.getuid() else None
        except (OSError, ValueError):
            got = None
        if got is None or len(got[1]) != 3:
            for fd in got[1] if got else ():
                os.close(fd)
            conn.close()
            return
        request, fds = got
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no process to spare: the client retries, then runs a fresh interpreter
            pid = None
        if pid == 0:
            try:
                self.listener.close()
                for other in self.children.values():
                    other.close()
                conn.close()
                _run_child(request, fds, server)
            except BaseException:  # noqa: BLE001 - the job never started: say why in its stderr
                traceback.print_exc()
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        if pid is None:
            conn.close()
            return
        self.children[pid] = conn
        try:
            _send(conn, {"pid": pid})
        except OSError:
            pass  # the client is gone: _client_gone kills the child on the next select
        self.selector.register(conn, selectors.EVENT_READ)

    def _unwatch(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError):  # already unwatched: its client went away before the child ended
            self.selector.unregister(conn)

    def _client_gone(self, conn: socket.socket) -> None:
        for pid, c in list(self.children.items()):
            if c is conn:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._unwatch(conn)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            try:
                _send(conn, {"status": status})
            except OSError:
                pass
            self._unwatch(conn)
            conn.close()


def serve(path: Path, idle_s: float) -> int:
    """The server process: allocator settings and imports first, then requests until idle."""
    from saccader.pipeline.runtime import keep_freed_memory

    keep_freed_memory()  # as saccader.pipeline.cli does first in a fresh job; the forked children inherit it
    for name in PREIMPORTS:
        __import__(name)
    if os.path.isdir("/proc/self/task") and len(os.listdir("/proc/self/task")) != 1:
        print("warmstart: a preimport started a thread; forking it is unsafe", file=sys.stderr)
        return 1  # the clients fall back to plain interpreters
    server = Server(path, idle_s)
    server.listen()
    print(f"warmstart: serving on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.serve()
    print("warmstart: idle, exiting", file=sys.stderr, flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ client


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return None
        raise
    return sock


def connect_or_start(threads: int, idle_s: float = IDLE_S) -> socket.socket:
    """A connection to the server for this interpreter and settings, starting one (under a lock) if none runs."""
    env = server_env(threads, dict(os.environ))
    key = server_key(env)
    folder = server_dir()
    path = folder / f"{key}.sock"
    sock = _connect(path)
    if sock is not None:
        return sock
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock is not None:
            return sock
        with open(folder / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "saccader.pipeline.warmstart", "--serve", str(path), "--idle-s",
                 str(idle_s)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock
            if proc.poll() is not None:
                raise WarmStartUnavailable(f"the server exited with status {proc.returncode} (see {log.name})")
            time.sleep(0.02)
        raise WarmStartUnavailable(f"no server on {path} after {START_TIMEOUT_S:.0f} s")


def _stdio_fds() -> list[int]:
    """Descriptors 0-2 to hand to the job; a closed one is replaced by /dev/null, as a fresh interpreter has it."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


_PENDING: list[int] = []  # signals caught before the job's pid was known


def run_forked(threads: int, module: str, args: list[str], idle_s: float = IDLE_S) -> int:
    """Run ``python -m module args`` as a child of the server; return its exit code (or die by its signal)."""
    # Signals are caught from before the request: the job can start (and its submitter see it run) before the
    # server's reply with its pid reaches us, and a signal in that gap must reach the job, not kill this client.
    job = {"pid": None}

    def forward(signum, _frame):
        if job["pid"] is None:
            _PENDING.append(signum)
            return
        try:
            os.kill(job["pid"], signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    for _ in range(3):  # a server that went idle between connect and request: start another
        sock = connect_or_start(threads, idle_s)
        request = {"module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}
        try:
            _send(sock, request, fds=_stdio_fds())
            reply = _recv(sock)
        except OSError:
            reply = None
        if reply is not None:
            break
        sock.close()
    else:
        raise WarmStartUnavailable("the server closed every connection before taking the job")
    job["pid"] = reply["pid"]
    while _PENDING:
        forward(_PENDING.pop(0), None)
    # The job has started: from here no error may fall back to a fresh interpreter, which would run it again.
    try:
        reply = _recv(sock)
    except OSError:
        reply = None
    if reply is None:
        print("warmstart: the server ended before the job did", file=sys.stderr)
        return 1
    code = os.waitstatus_to_exitcode(reply["status"])
    if code < 0:  # die by the same signal, as the job did: submitit sees what a plain interpreter would give
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # (these two have no handler to reset)
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def parse_python_args(argv: list[str]) -> tuple[str, list[str]]:
    """``-u -m MODULE ARGS...`` (what submitit runs) -> (MODULE, ARGS); anything else is not forkable."""
    flags = []
    while argv and argv[0].startswith("-") and argv[0] != "-m":
        flags.append(argv.pop(0))
    if set(flags) - {"-u"} or len(argv) < 2 or argv[0] != "-m":
        raise WarmStartUnavailable(f"only [-u] -m MODULE ... can be forked, not {' '.join(flags + argv)}")
    return argv[1], argv[2:]


def main(argv: list[str] | None = None) -> int:
    """``[--threads N] [--idle-s S] PYTHON_ARGS...`` (a client) or ``--serve SOCKET [--idle-s S]`` (the server)."""
    from saccader.pipeline.cli_types import integer, number

    parser = argparse.ArgumentParser(prog="python -m saccader.pipeline.warmstart", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=integer(1), default=1, help="CPU threads of the job (the launcher's --cpus)")
    parser.add_argument("--idle-s", type=number(0, low_open=True), default=IDLE_S,
                        help="a server exits after this long without jobs")
    parser.add_argument("--serve", metavar="SOCKET", help="run the server on SOCKET (started by a client)")
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = []  # this module's options come first; the rest are the interpreter's (-u -m MODULE ...)
    while argv and argv[0] in ("--threads", "--idle-s", "--serve"):
        ours += argv[:2]
        argv = argv[2:]
    args, python_args = parser.parse_args(ours), argv
    if args.serve:
        return serve(Path(args.serve), args.idle_s)
    try:
        module, module_args = parse_python_args(list(python_args))
        return run_forked(args.threads, module, module_args, args.idle_s)
    except (WarmStartUnavailable, OSError) as exc:
        print(f"warmstart: {exc}; running a fresh interpreter instead", file=sys.stderr, flush=True)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        for signum in _PENDING:  # no job started: a signal sent meanwhile acts as on a plain interpreter
            os.kill(os.getpid(), signum)
        os.execv(sys.executable, [sys.executable, *python_args])


if __name__ == "__main__":
    sys.exit(main())
