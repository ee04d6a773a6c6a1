"""Faults inside a job: a non-finite loss, a full disk, an unwritable results folder. Each stops the job with one
line and keeps the last good checkpoint byte for byte."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from saccader import losses

from saccader.pipeline import io
from saccader.pipeline import train as T
from saccader.errors import UserError
from tiny_runs import make_images, stage_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_images(root, per_class=6)  # 16 training images: 2 steps of 8 an epoch
    return root


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, bad):
    config, run = stage_config(data, "bagnet", epochs=3, checkpoint_every=1)
    real, calls, saved = losses.classification_loss, [], {}

    def loss(*args, **kw):  # the 4th step (epoch 2, step 2) goes non-finite
        calls.append(1)
        value = real(*args, **kw)
        return value * bad if len(calls) == 4 else value

    monkeypatch.setattr(losses, "classification_loss", loss)
    real_save = io.torch_save
    monkeypatch.setattr(io, "torch_save", lambda obj, path: (real_save(obj, path),
                                                             saved.update(last=(path.read_bytes()))))
    with pytest.raises(UserError, match=rf"loss is {bad} at epoch 2 step 2; the last good checkpoint .* is kept") as e:
        T.train(config, run, 0, tmp_path)
    assert "\n" not in str(e.value) and "fix: lower train.bagnet77_lowd.lr" in str(e.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved["last"]  # the one after step 3, untouched
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1)
    assert not (tmp_path / "model.pt").exists()
    monkeypatch.setattr(losses, "classification_loss", real)  # the cause gone, the rerun resumes and finishes
    T.train(config, run, 0, tmp_path)
    assert (tmp_path / "model.pt").exists()


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    config, run = stage_config(data, "bagnet", epochs=3, checkpoint_every=1)
    real, writes = torch.save, []

    def save(obj, f, *args, **kw):  # the 3rd checkpoint: half the bytes reach the disk, then ENOSPC
        writes.append(1)
        if len(writes) == 3:
            with open(f, "wb") as fh:
                fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real(obj, f, *args, **kw)

    before = {}
    monkeypatch.setattr(torch, "save", save)
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (real_replace(a, b), before.update(last=open(b, "rb").read())))
    with pytest.raises(UserError, match=r"disk full while writing .*checkpoint\.pt; the previous version is kept; "
                                        r"fix: free disk space and rerun"):
        T.train(config, run, 0, tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before["last"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 0)


def test_results_folder_not_writable_fails_at_job_start(data, tmp_path, monkeypatch):
    config, run = stage_config(data, "bagnet", epochs=1)
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(UserError, match=r"results folder .*file/run is not writable.*fix: choose a writable"):
        T.train(config, run, 0, tmp_path / "file" / "run")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the file system answer as it does for others
        import tempfile

        def refuse(*args, **kw):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(UserError, match=r"results folder .*ro is not writable \(Permission denied\)"):
        T.train(config, run, 0, ro)
    assert list(ro.iterdir()) == []


def test_a_write_removes_the_temporary_files_that_a_kill_left_of_the_same_file(tmp_path):
    """A kill during an atomic write leaves ``.<name>.<random>.tmp``; the rerun's write of that file removes it
    (the chaos test found them beside attack parquets and figures), and nothing of another file."""
    from saccader.pipeline import io

    left = [tmp_path / ".seed0.parquet.3tnn5_lr.tmp", tmp_path / ".seed0.parquet.a1b2c3d4.tmp"]
    kept = [tmp_path / ".seed0.parquet.examples.npz.uzn5g_94.tmp", tmp_path / ".seed1.parquet.abcdefgh.tmp"]
    for path in left + kept:
        path.write_bytes(b"partial")
    io.write_text(tmp_path / "seed0.parquet", "done")
    assert (tmp_path / "seed0.parquet").read_text() == "done"
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)
