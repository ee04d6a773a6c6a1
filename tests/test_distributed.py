"""Two gloo processes on CPU, each with half of every global batch, train to the same weights as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from torch import nn

from test_train import make_images, recipe, tiny_config

ROOT = Path(__file__).resolve().parents[1]

# The child: train with a batch-norm-free model (BN statistics are per replica by design, as on TPU cores, so
# only a model without BN can be compared exactly with the single-process run).
CHILD = """
import logging, sys, torch, yaml
logging.basicConfig(level=logging.INFO)
from torch import nn
import saccader.models
from saccader.pipeline import train
torch.set_num_threads(1)

def tiny(name, config):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 1))

saccader.models.from_config = tiny
train.train(yaml.safe_load(open(sys.argv[1])), "net", 0, sys.argv[2])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script, config_path, out, world):
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, str(script), str(config_path), str(out)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        errs.append(err)
    return errs


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    make_images(tmp_path / "data")
    config = tiny_config(tmp_path / "data", net=recipe(lr=0.2, epochs=2, warmup_epochs=1, batch_size=8))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    _launch(script, config_path, tmp_path / "one", 1)
    errs = _launch(script, config_path, tmp_path / "two", 2)
    assert "2 process(es)" in errs[0]  # really data parallel, not two independent runs
    one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)  # the run's initial weights: training moved them far beyond the tolerance
    start = nn.Conv2d(3, 8, 3).weight
    assert (one["0.weight"] - start).abs().max() > 1e-2
