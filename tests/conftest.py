"""Shared fixtures: a tiny embedded config and dataset built once per test session."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from saccader import config as cfg

REPO = Path(__file__).resolve().parents[1]
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
    from saccader.data.digits import build

    config = tiny_config(tmp_path_factory.mktemp("tiny"))
    build(config)
    return config


@pytest.fixture
def config_copy(tiny_dataset) -> dict:
    return copy.deepcopy(tiny_dataset)
