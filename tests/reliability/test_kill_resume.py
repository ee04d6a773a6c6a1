"""Faults: SIGKILL at a random moment of each training stage, then a rerun resumes from the last checkpoint and ends
with bitwise the same weights as an uninterrupted run (CPU); no half-written file ever carries a real name.

The killed run is a forked child of this process (torch already imported: no interpreter start-up per stage); the
signal is the real ``kill -9``, landing anywhere in a step, the data loading or a checkpoint write.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pandas as pd
import pytest
import torch

from saccader.pipeline import checkpoint
from saccader.pipeline import train as T
from tiny_runs import STAGES, make_images, stage_config, write_inits

EPOCHS = 2  # of 6 steps (8 images a step, 48 training images after the dev split)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_images(root, per_class=14)
    return root


def _child(config, run, out, inits):
    torch.set_num_threads(1)
    T.train(config, run, 0, out, inits)


def _kill_at_random_moment(config, run, out, inits, rng) -> float:
    """Start the run in a child, SIGKILL it at a random moment after its first checkpoint; return the delay."""
    delay = rng.uniform(0.0, 0.3)
    for _ in range(6):  # a kill after the run ended tests nothing: retry sooner
        proc = multiprocessing.get_context("fork").Process(target=_child, args=(config, run, out, inits))
        proc.start()
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.pt").exists() and proc.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        if not (out / "model.pt").exists():
            assert proc.exitcode == -signal.SIGKILL, f"the run failed on its own (exit {proc.exitcode})"
            return delay
        for f in out.iterdir():
            f.unlink()
        delay /= 4
    pytest.fail("the run always finished before the kill")


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_a_random_moment_then_resume_is_bitwise_identical(stage, data, tmp_path):
    epochs = 1 if stage == "nasnet_finetune" else EPOCHS  # NASNet steps are the slowest (0.3 s)
    config, run = stage_config(data, stage, epochs=epochs, checkpoint_every=1, warmup_epochs=1)
    inits = write_inits(config, stage, tmp_path / "inits")
    rng = random.Random()
    killed = tmp_path / "killed"
    delay = _kill_at_random_moment(config, run, killed, inits, rng)
    # whatever the moment, the checkpoint under its real name is whole (written to a temporary name, then renamed)
    state = checkpoint.load(killed / "checkpoint.pt")
    assert (state["epoch"], state["step"]) <= (epochs, 0), delay  # the kill may land after the last save

    T.train(config, run, 0, killed, inits)  # the rerun: resumes
    T.train(config, run, 0, tmp_path / "whole", inits)  # uninterrupted
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{stage}: {key} differs after a kill {delay:.3f} s after the first " \
                                            f"checkpoint (resumed at epoch {state['epoch']} step {state['step']})"
    logs = [pd.read_parquet(d / "train_log.parquet") for d in (tmp_path / "whole", killed)]
    assert logs[0].loss.tolist() == logs[1].loss.tolist()
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")], "temporary files left behind"
