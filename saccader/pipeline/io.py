"""Atomic file writes: a result exists whole or not at all (write to a temporary name, then rename)."""

from __future__ import annotations

import contextlib
import errno
import json
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


# ------------------------------------------------------------------------------ folders a command owns
# A command that replaces a whole folder (make-dataset, make-mini-imagenet) or writes many files into one (predict)
# lists what it wrote in a manifest there; it deletes or overwrites only files that manifest lists, and refuses a
# non-empty folder it did not write. Hand-written: no library offers "delete only what I wrote".
BUILDING = ".saccader-building"  # inside a folder being built beside its destination
OWNED = ".saccader-owned.json"  # in a folder replace_folder built: the files it wrote, beside the manifest


def owned_files(folder: str | os.PathLike, manifest: str) -> set[str] | None:
    """Relative paths (POSIX) that ``folder/manifest`` lists under "files", the manifest and the owner record
    included; None if the folder has neither a manifest nor an owner record that lists files (not written by this
    project's commands). The owner record (``OWNED``, written by ``replace_folder``) stands in for a manifest that
    Snakemake deleted: it removes a killed job's declared output, and the manifest is make-dataset's."""
    folder = Path(folder)
    files = _listed_files(folder / manifest)
    if files is None:
        files = _listed_files(folder / OWNED)
    return None if files is None else {*files, manifest, OWNED}


def _listed_files(path: Path) -> list[str] | None:
    try:
        files = json.loads(path.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return files


def _contents(folder: Path) -> set[str]:
    """Every entry that is not a real folder (files, links), relative; links are not followed."""
    out = set()
    for top, dirs, files in os.walk(folder):
        base = Path(top).relative_to(folder)
        out |= {(base / f).as_posix() for f in files}
        out |= {(base / d).as_posix() for d in dirs if os.path.islink(os.path.join(top, d))}
    return out


def foreign_files(folder: str | os.PathLike, manifest: str, extra: re.Pattern | None = None) -> list[str]:
    """Files in ``folder`` that its manifest does not list (all of them if it has none), sorted; files matching
    ``extra`` (a command's own derived files, such as caches) count as listed."""
    folder = Path(folder)
    if not folder.exists():
        return []
    if not folder.is_dir():
        return [folder.name]
    owned = owned_files(folder, manifest) or set()
    return sorted(f for f in _contents(folder) if f not in owned and not (extra and extra.fullmatch(f)))


def refuse_foreign(folder: str | os.PathLike, manifest: str, command: str, extra: re.Pattern | None = None) -> None:
    """UserError unless ``folder`` is missing, empty, or holds only files its manifest lists."""
    foreign = foreign_files(folder, manifest, extra)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"{folder} holds files that {command} did not write ({shown}); nothing was changed",
                        f"point {command} at a new or empty folder, or move those files away")


@contextlib.contextmanager
def replace_folder(root: str | os.PathLike, manifest: str, command: str,
                   extra: re.Pattern | None = None) -> Iterator[Path]:
    """Yield an empty folder beside ``root`` to build a tree in (its ``manifest`` listing its files); on success the
    tree replaces ``root`` whole. ``root`` must be missing, empty or an earlier tree of the command (every file
    listed in its manifest, or matching ``extra``): anything else is refused before and after the build, and only
    listed files are ever deleted."""
    root = Path(root)
    refuse_foreign(root, manifest, command, extra)
    tmp = root.with_name(f".{root.name}.building")
    if tmp.exists():  # what a killed build left: ours only if it carries the marker
        if not (tmp / BUILDING).is_file():
            raise UserError(f"{tmp} is in the way of {command} and was not left by it",
                            "move that folder away")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / BUILDING).touch()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-built tree of this build only; root is untouched
        raise
    (tmp / BUILDING).unlink()
    if (files := _listed_files(tmp / manifest)) is not None:
        (tmp / OWNED).write_text(json.dumps({"files": sorted(files)}))
    refuse_foreign(root, manifest, command, extra)
    if root.exists():
        for rel in sorted(_contents(root), reverse=True):
            (root / rel).unlink()
        for top, _, _ in os.walk(root, topdown=False):
            os.rmdir(top)
    tmp.rename(root)
