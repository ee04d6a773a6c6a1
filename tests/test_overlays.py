"""Overlay configs: config/*.yaml hold only their deviations from config.yaml; the merged result is the experiment."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from saccader.pipeline import config as cfg
from saccader.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# The last commit whose config/embedded.yaml and config/smoke.yaml were full copies of the experiment.
FULL_FILES_COMMIT = "3679008"


def old_full_file(name: str) -> dict:
    proc = subprocess.run(["git", "show", f"{FULL_FILES_COMMIT}:{name}"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"git history with commit {FULL_FILES_COMMIT} not available ({proc.stderr.strip()})")
    return cfg.validate(yaml.safe_load(proc.stdout))


@pytest.mark.parametrize("name, results", [("config/embedded.yaml", "results/embedded"),
                                           ("config/smoke.yaml", "results/smoke")])
def test_overlay_equals_the_old_full_file(name, results):
    """config.yaml + the overlay, validated, is the old full file, validated, except where results go: so the
    experiment's arithmetic (every digest but the paths) is unchanged by the move to overlays."""
    old, new = old_full_file(name), cfg.load_experiment(REPO / name)
    old["evaluate"]["policies"].append("center")  # added since: the centre policy, in every experiment
    assert new["results_dir"] == results and new["dataset"]["root"] == f"{results}/dataset"
    for config in (old, new):
        config.pop("results_dir")
        config["dataset"].pop("root")
    assert new == old


def test_experiments_write_to_their_own_folders():
    folders = [cfg.load_experiment(REPO / name)["results_dir"]
               for name in ["config.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "config").glob("*.yaml"))]]
    assert len(set(folders)) == len(folders) and "results" not in folders


def test_merge_is_snakemakes():
    from snakemake.utils import update_config

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    overlay = yaml.safe_load((REPO / "config/embedded.yaml").read_text())
    expected = copy.deepcopy(base)
    update_config(expected, overlay)
    assert cfg.merge(copy.deepcopy(base), overlay) == expected
    assert cfg.merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}, "d": 4}) == {"a": {"b": 1, "c": [3]}, "d": 4}


@pytest.mark.parametrize("name", ["config/embedded.yaml", "config/smoke.yaml", "config/mini-imagenet.yaml"])
def test_an_overlay_alone_names_the_fix(name):
    with pytest.raises(UserError, match=rf"fix: if {name} is an overlay on config.yaml, pass "
                                        rf"--config config.yaml --config {name}"):
        cfg.load(name)


def test_repeated_config_merges_in_order(tmp_path):
    """The CLI's --config, repeated, builds what `snakemake --configfile A B` builds."""
    import argparse

    (tmp_path / "more.yaml").write_text("attack: {pgd_iters: 7}\nseeds: [3]\n")
    parser = argparse.ArgumentParser()
    cfg.add_config_argument(parser)
    args = parser.parse_args(["--config", str(REPO / "config.yaml"), "--config", str(REPO / "config/smoke.yaml"),
                              "--config", str(tmp_path / "more.yaml")])
    config = cfg.load(args.config)
    assert config["attack"]["pgd_iters"] == 7 and config["seeds"] == [3]
    assert config["attack"]["spsa_iters"] == 2 and config["dataset"]["name"] == "digits"  # from smoke.yaml
    assert config["train"]["saccader"]["paper_lr"] == 0.01  # from config.yaml


def test_make_finds_each_experiments_results_folder():
    """`make run EXPERIMENT=X` reads config/X.yaml and reports into results/X: the overlay's results_dir."""
    for path in sorted((REPO / "config").glob("*.yaml")):
        assert cfg.load_experiment(path)["results_dir"] == f"results/{path.stem}", path


# What the wet run may change: budgets (and where its files go), nothing that defines a model or an objective.
WET_RUN_KEYS = {"results_dir", "notice", "seeds", "dataset.root", "dataset.dev_size", "dataset.num_workers",
                "evaluate.batch_size", "evaluate.max_images", "evaluate.examples", "attack.subset_size",
                "attack.batch_size", "attack.eval_batch_size", "attack.pgd_iters", "attack.spsa_samples",
                "attack.spsa_iters"}
WET_RUN_RECIPE_KEYS = {"batch_size", "lr", "epochs", "steps_per_epoch", "warmup_epochs"}


def test_the_wet_run_changes_only_budgets():
    import math

    overlay = yaml.safe_load((REPO / "config/mini-imagenet.yaml").read_text())
    paper = cfg.load_experiment(REPO / "config.yaml")
    flat = {f"{k}.{kk}" if isinstance(v, dict) and k != "train" else k: None
            for k, v in overlay.items() for kk in (v if isinstance(v, dict) and k != "train" else [None])}
    assert set(flat) - {"train"} <= WET_RUN_KEYS
    assert set(overlay["train"]) == set(paper["train"])  # every run of the paper's DAG
    wet = cfg.load_experiment(REPO / "config/mini-imagenet.yaml")
    assert wet["models"] == {} and wet["dataset"]["num_classes"] == 1001 and wet["dataset"]["label_offset"] == 1
    for run, rec in overlay["train"].items():
        assert set(rec) <= WET_RUN_RECIPE_KEYS, run
        full = wet["train"][run]
        assert math.isclose(full["lr"], full["paper_lr"] * full["batch_size"] / full["paper_batch_size"]), run
        assert math.isclose(full["warmup_epochs"] / full["epochs"], 10 / paper["train"][run]["epochs"], rel_tol=0.05)
