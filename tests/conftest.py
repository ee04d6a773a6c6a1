"""Shared fixtures: a tiny embedded config and dataset built once per test session."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from saccader.pipeline import config as cfg

REPO = Path(__file__).resolve().parents[1]
# the CLI's last-resort handler re-raises: a test sees the real exception, not the one line a user gets
os.environ["SACCADER_DEBUG"] = "1"
torch.set_num_threads(1)  # tests run beside other work on 2 cores; one thread is also the fastest for tiny nets


def tiny_config(root: Path) -> dict:
    """The smoke config, shrunk further, pointing at ``root``."""
    config = cfg.load_experiment(REPO / "config" / "smoke.yaml")
    config["results_dir"] = str(root / "results")
    config["dataset"]["root"] = str(root / "dataset")
    config["dataset"]["dev_size"] = 20
    config["dataset"]["digits"].update(train_images=100, val_images=40)
    return cfg.validate(config)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """A built tiny cluttered-digits dataset; returns its (validated) config. Do not modify the files."""
    from saccader.pipeline.data.digits import build

    config = tiny_config(tmp_path_factory.mktemp("tiny"))
    build(config)
    return config


@pytest.fixture
def config_copy(tiny_dataset) -> dict:
    return copy.deepcopy(tiny_dataset)


def smoke_snakemake(*args, cwd=REPO):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def smoke_config(root: Path) -> Path:
    """The smoke experiment (config/smoke.yaml over config.yaml) with its results and dataset under ``root``: the
    file to pass as --configfile."""
    config = cfg.load_experiment(REPO / "config" / "smoke.yaml")
    config["results_dir"] = str(root / "results")
    config["dataset"]["root"] = str(root / "dataset")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke experiment, undisturbed (slow tests only): (config, results folder, config path). Shared by
    tests/test_smoke_run.py and the chaos test, which compares its outcome with this one."""
    root = tmp_path_factory.mktemp("smoke")
    path = smoke_config(root)
    smoke_snakemake("all", "--configfile", str(path))  # the target first: --configfile takes several values
    smoke_snakemake("--configfile", str(path), "--report", str(root / "results" / "report.html"))
    return yaml.safe_load(path.read_text()), root / "results", path


def _checksums(folder: Path) -> dict[str, str]:
    """Every file and link under ``folder`` (relative path -> sha256 of its bytes, or its link target)."""
    import hashlib

    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {path.readlink()}"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def checksums():
    """The data-loss tests' yardstick: a victim folder's checksums must not change."""
    return _checksums
