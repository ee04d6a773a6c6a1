"""The wet run (`make wet-run`): every job of the paper's DAG for one seed, every model at the paper's size, through
the real Snakefile on a generated miniature ImageNet of JPEG files (config/mini-imagenet.yaml). Slow: it is the
whole workflow at paper size on the CPU (bench/wet_run.py reports its time and memory per job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from saccader import catalog
from saccader.pipeline import config as cfg

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run(*argv, timeout=3600):
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wet(tmp_path_factory):
    """The README's commands (`make wet-run`), with a third overlay moving the results into a temporary folder."""
    tmp = tmp_path_factory.mktemp("wet")
    where = tmp / "where.yaml"
    where.write_text(yaml.safe_dump({"results_dir": str(tmp / "results"), "dataset": {"root": str(tmp / "imagenet")}}))
    run(sys.executable, "-m", "saccader", "make-mini-imagenet", "--config", "config.yaml", "--config",
        "config/mini-imagenet.yaml", "--config", str(where))
    run(sys.executable, "-m", "snakemake", "all", "--configfile", "config/mini-imagenet.yaml", str(where),
        "--cores", "2")
    run(sys.executable, "-m", "snakemake", "--configfile", "config/mini-imagenet.yaml", str(where), "--cores", "2",
        "--report", str(tmp / "results" / "report.html"))
    table = run(sys.executable, "bench/wet_run.py", str(tmp / "results"))
    config = cfg.load(["config.yaml", "config/mini-imagenet.yaml", str(where)])
    return config, tmp / "results", table


def test_the_generated_tree_is_imagenets_layout(wet):
    from PIL import Image

    config, _, _ = wet
    root = Path(config["dataset"]["root"])
    classes = sorted(p.name for p in (root / "train").iterdir())
    assert len(classes) == 1000 and all(len(c) == 9 and c.startswith("n0") for c in classes)
    assert sorted(p.name for p in (root / "val").iterdir()) == classes
    files = sorted(root.glob("*/*/*.JPEG"))
    modes = {Image.open(f).mode for f in files[::7]} | {Image.open(f).mode for f in files if "val" in f.parts[-3]}
    sizes = {Image.open(f).size for f in files[::50]}
    assert {"RGB", "L", "CMYK"} <= modes and len(sizes) > 10
    assert len({round(w / h, 1) for w, h in sizes}) > 5  # varied aspect ratios


def test_every_run_is_paper_size_and_took_a_real_step(wet):
    """Each training run's weights have every tensor shape of the paper's model (config.yaml's models: {}), 1001
    outputs, and its log shows one optimizer step on real images and a dev evaluation."""
    from saccader.pipeline.io import torch_load
    from saccader.models import from_config

    config, results, _ = wet
    assert config["models"] == {} and config["dataset"]["num_classes"] == 1001
    shapes = {}
    for run, rec in config["train"].items():
        log = pd.read_parquet(results / "runs" / run / "seed0" / "train_log.parquet")
        assert len(log) == 1 and log["images_per_s"].iloc[0] > 0 and torch.isfinite(torch.tensor(log["loss"].values)).all()
        assert {"dev_top1", "dev_top5"} <= set(log.columns), run
        if rec["model"] not in shapes:
            model = from_config(rec["model"], config)
            shapes[rec["model"]] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = torch_load(results / "runs" / run / "seed0" / "model.pt")  # the final state_dict
        assert {k: tuple(v.shape) for k, v in state.items()} == shapes[rec["model"]], run
    assert max(sum(torch.Size(s).numel() for s in v.values()) for v in shapes.values()) > 80_000_000  # NASNet-A Large


def test_every_evaluation_and_attack_saw_real_images(wet):
    config, results, _ = wet
    for kind, models in catalog.EVALUATIONS.items():
        for model in models:
            frame = pd.read_parquet(results / "eval" / kind / model / "seed0.parquet")
            assert len(frame) > 0 and (frame["n_images"] >= 1).all(), (kind, model)
            assert set(frame["dataset"]) == {"imagenet"} and set(frame["split"]) == {"val"}
    for model in catalog.ATTACKS:
        frame = pd.read_parquet(results / "attack" / model / "seed0.parquet")
        assert {"clean_acc", "pgd_acc", "spsa_acc"} <= set(frame["metric"]) and (frame["n_images"] >= 1).all(), model


def test_figures_report_and_the_meaningless_banner(wet):
    config, results, _ = wet
    for target in catalog.TARGETS.values():
        for out in target.outputs:
            assert (results / out).is_file(), out
    assert "every number on this page is meaningless" in (results / "index.html").read_text()
    assert "every number on this page is meaningless" in (results / "report.html").read_text()


def test_each_heavy_job_recorded_its_time_and_peak_memory(wet):
    config, results, table = wet
    jobs = pd.read_parquet(results / "benchmarks" / "jobs.parquet")
    expected = 1 + len(config["train"]) + sum(len(m) for m in catalog.EVALUATIONS.values()) + len(catalog.ATTACKS)
    assert len(jobs) == expected and jobs["job"].is_unique
    assert (jobs["cpu_s"] > 0).all() and (jobs["peak_rss_mib"] > 0).all() and (jobs["wall_s"] > 0).all()
    train = jobs[jobs["rule"] == "train"].set_index("job")["peak_rss_mib"]
    assert train["train/nasnet_331/seed0"] > 2 * 1024  # the paper-size NASNet at 331 px held its activations
    assert "heavy jobs: summed wall" in table
