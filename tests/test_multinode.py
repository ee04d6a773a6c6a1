"""Several nodes: the profile's nodes and micro-batch reach the launcher and the trainer, a bad cut is one line at
parse time, each task takes cuda:LOCAL_RANK, and 2 "nodes" x 2 gloo processes train a sampling stage with
micro-batches, resume after a kill to the same weights, and evaluate the dev split sharded as one process would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from saccader.pipeline import distributed
from test_distributed import _free_port
from test_workflow import snakemake

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from tiny_runs import ENV, make_images, stage_config  # noqa: E402


def test_profile_nodes_and_micro_batch_reach_the_launcher_and_the_trainer(tmp_path):
    args = ("-n", "-p", "--profile", "slurm", "--config", f"results_dir={tmp_path}",
            f"dataset={{root: {tmp_path}/imagenet}}")
    target = f"{tmp_path}/runs/bagnet77_lowd/seed0/model.pt"
    profile = yaml.safe_load(Path("slurm/config.yaml").read_text())["set-resources"]["train"]
    launch = next(line for line in snakemake(*args, target=target).splitlines()
                  if "saccader.pipeline.launch" in line and " train " in line)
    assert f"--nodes {profile['nodes']} --gpus {profile['gpu']}" in launch
    assert f"--micro-batch {profile['micro_batch']} --config " in launch.split(" > ")[0]
    two = snakemake(*args, "--set-resources", "train:nodes=2", "train:gpu=4", "train:micro_batch=8", target=target)
    assert "--nodes 2 --gpus 4" in two and "--micro-batch 8" in two


@pytest.mark.parametrize("resources,message", [
    (("train:gpu=8", "train:micro_batch=48"),
     r"micro-batch 48 does not divide the \d+ images of each of the 8 processes"),
    (("train:gpu=8", "train:nodes=3"), r"batch_size = \d+ does not divide among 24 processes"),
])
def test_a_profile_that_cannot_cut_the_batch_fails_before_any_job(tmp_path, resources, message):
    import re

    out = snakemake("-n", "--profile", "slurm", "--config", f"results_dir={tmp_path}",
                    f"dataset={{root: {tmp_path}/imagenet}}", "--set-resources", *resources, check=False)
    assert re.search(r"UserError .*\nrule train, run \w+: " + message + r"[^\n]* \(profile resources of rule train: "
                     r"nodes=\d+, gpu=8, micro_batch=\d+\); fix: [^\n]*set-resources: train:", out), out[-2000:]
    assert "Job stats" not in out


def test_each_task_takes_the_gpu_of_its_local_rank(monkeypatch):
    """All tasks of a node see every GPU: LOCAL_RANK=3 must use cuda:3 (and bind the process group to it)."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", torch.device(d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.update(backend=backend,
                                                                                                  **kw))
    for var in ("SUBMITIT_EXECUTOR", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert distributed.init() == torch.device("cuda", 3)
    assert torch.backends.cudnn.benchmark  # fixed shapes: cuDNN picks its fastest algorithms once
    assert calls == {"set_device": torch.device("cuda", 3), "backend": "nccl", "device_id": torch.device("cuda", 3),
                     "timeout": calls["timeout"]}
    calls.clear()
    assert distributed.init("cpu") == torch.device("cpu")  # CPU ranks: gloo, no device binding
    assert calls == {"backend": "gloo", "device_id": None, "timeout": calls["timeout"]}
    calls.clear()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("LOCAL_RANK")
    assert distributed.init("cuda") == torch.device("cuda", 0) and "backend" not in calls  # one process: no group


CHILD = """
import logging, os, sys, torch, yaml
logging.basicConfig(level=logging.INFO)
from saccader.pipeline import train, distributed
torch.set_num_threads(1)
stop = int(os.environ.get("STOP_AT_STEP", "0"))
real, steps = train.accumulate_gradients, []
def counted(*a, **k):  # a kill of every task (a requeue) just before global step `stop`
    steps.append(1)
    if len(steps) == stop:
        os._exit(3)
    return real(*a, **k)
train.accumulate_gradients = counted
config = yaml.safe_load(open(sys.argv[1]))
train.train(config, "saccader", 0, sys.argv[2], init={"saccader_pretrain": sys.argv[3]}, micro_batch=2)
"""


def _launch(script, args, world, per_node, stop=0):
    port, procs = str(_free_port()), []
    for rank in range(world):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % per_node),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "STOP_AT_STEP": str(stop)}
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


@pytest.mark.slow
def test_two_nodes_of_two_ranks_resume_after_a_requeue_and_evaluate_sharded(tmp_path):
    from saccader.pipeline import io
    from saccader.pipeline import train as T
    from saccader.pipeline.data.folder import Standardize, build_dataset
    from saccader.models import from_config

    make_images(tmp_path / "data", per_class=14)  # 56 images: 16 dev, 40 train = 2 steps of 16 an epoch
    config, _ = stage_config(tmp_path / "data", "saccader", epochs=3, batch_size=16, checkpoint_every=1)
    config["dataset"]["dev_size"] = 16
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(1)
    io.torch_save(from_config("saccader", config).state_dict(), tmp_path / "init" / "model.pt")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for name, stops in (("whole", [0]), ("requeued", [4, 0])):  # killed before step 4 (epoch 2 step 2), rerun
        for stop in stops:
            results = _launch(script, (path, tmp_path / name, tmp_path / "init"), 4, 2, stop)
            assert all(rc == (3 if stop else 0) for rc, _ in results), results[0][1][-3000:]
    assert "4 images per process in 2 micro-batches of 2" in results[0][1]
    assert "resuming from" in results[0][1] and "at epoch 1 step 1" in results[0][1]  # the step after the kill
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    requeued = torch.load(tmp_path / "requeued" / "model.pt", weights_only=True)
    for key in whole:  # every rank resumed its own random stream (different glimpses per replica)
        assert torch.equal(whole[key], requeued[key]), key

    model = from_config("saccader", config)
    model.load_state_dict(whole)
    rec = config["train"]["saccader"]
    loader = torch.utils.data.DataLoader(build_dataset(config, "dev", uint8=True, resolution=16), batch_size=16)
    std = Standardize(config["dataset"]["mean"], config["dataset"]["std"])
    top1, top5 = T.evaluate(model, rec, loader, torch.device("cpu"), T.autocast_factory(False, None), std)
    log = pd.read_parquet(tmp_path / "whole" / "train_log.parquet").iloc[-1]
    assert (log["dev_top1"], log["dev_top5"]) == (top1, top5)  # 4 shards of 4 images == one process
