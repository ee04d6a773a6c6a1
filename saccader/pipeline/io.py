"""Atomic file writes: a result exists whole or not at all (write to a temporary name, then rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from saccader.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path`` (same file system)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:
        raise UserError(f"results folder {path.parent} is not writable ({exc.strerror})",
                        "choose a writable results_dir in the config or fix the folder's permissions") from None
    # mkstemp creates the file 0600; results are shared on clusters, so give it the mode a plain open() would.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
        # what a kill during an earlier write of this file left (mkstemp's names: 8 random characters)
        stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
        for other in path.parent.iterdir():
            if stale.fullmatch(other.name):
                other.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"disk full while writing {path}; the previous version is kept",
                            "free disk space and rerun") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and check now that files can be written there, so that a job fails at its start with one
    line instead of after hours of work. Returns the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            raise
        raise UserError(f"results folder {folder} is not writable ({exc.strerror})",
                        "choose a writable results_dir in the config or fix the folder's permissions") from None
    return folder


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_file(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy ``src`` to ``path`` atomically, with a fresh modification time. Not a hard link: a link shares its
    source's time, and Snakemake would rerun the job of an output older than its other inputs, every time."""
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)


def torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so a kill never leaves a half-written checkpoint."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: str | os.PathLike, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    import torch

    if not Path(path).exists():
        raise UserError(f"checkpoint {path} does not exist", "run the job that produces it first")
    return torch.load(path, map_location=map_location, weights_only=True)
