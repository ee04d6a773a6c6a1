"""A run killed with SIGKILL and started again ends with bitwise the same weights as an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from test_train import TINY_BAGNET, make_images, recipe, tiny_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _command(config_path, out):
    return [sys.executable, "-m", "saccader", "train", "--config", str(config_path), "--run", "saccader",
            "--seed", "3", "--out", str(out)]


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    make_images(tmp_path / "data", per_class=16)
    # Stage 3 (eq 6) from scratch: exercises the sampling generator, BN, augmentation, momentum and the schedule.
    run = recipe(model="saccader", stage="reinforce", num_glimpses=3, lr=0.05, epochs=3, warmup_epochs=1,
                 checkpoint_every=1)
    config = tiny_config(tmp_path / "data", saccader=run)
    config["models"]["saccader"] = TINY_BAGNET
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    whole = tmp_path / "whole"
    subprocess.run(_command(config_path, whole), env=ENV, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(config_path, killed), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists(), "the kill came too late to test anything"

    resumed = subprocess.run(_command(config_path, killed), env=ENV, check=True, capture_output=True, text=True)
    assert "resuming from" in resumed.stderr
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
