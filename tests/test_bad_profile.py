"""Bad input caught before any job is submitted, in one line: a profile resource with a typo, a dataset.root that
does not exist, `--profile slurm` on a machine without SLURM (workflow/rules/common.smk,
saccader/pipeline/config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saccader.pipeline import config as cfg
from saccader.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_shipped_profile_uses_only_declared_resources_and_rules():
    profile = yaml.safe_load((ROOT / "slurm/config.yaml").read_text())["set-resources"]
    cfg.check_profile_resources(profile, ["check_data", "train", "evaluate", "evaluate_glimpses", "attack"])


def test_the_contracts_execution_keys_are_accepted():
    cfg.check_profile_resources({"train": {"nodes": 2, "gpu": 8, "micro_batch": 32, "gpu_name": "H100-80GB"},
                                 "attack": {"gpu_name": "A100-40GB"}})


@pytest.mark.parametrize("resources, message", [
    ({"train": {"micro_bach": 8}}, r"set-resources of rule train: unknown resource 'micro_bach'; fix: rename it to "
                                   r"'micro_batch'"),
    ({"train": {"gpus": 8}}, r"unknown resource 'gpus'; fix: rename it to 'gpu'"),
    ({"trian": {"gpu": 8}}, r"rule 'trian', which the workflow does not have; fix: rename it to 'train'"),
])
def test_a_typo_names_the_key_and_the_fix(resources, message):
    with pytest.raises(UserError, match=message) as info:
        cfg.check_profile_resources(resources, ["train", "attack"])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key, value, least", [("gpu", -8, 0), ("nodes", 0, 1), ("cpus_per_task", 0, 1),
                                               ("runtime", "soon", 1), ("micro_batch", -1, 0), ("mem_mb", 2.5, 1),
                                               ("nodes", True, 1)])
def test_a_resource_out_of_range_is_one_line(key, value, least, tmp_path, capsys):
    """In Snakemake's profile check and in `saccader plan --profile`: gpu: -8 is not planned as one GPU."""
    with pytest.raises(UserError, match=rf"rule train: {key}: .*; fix: set {key} to a whole number >= {least}"):
        cfg.check_profile_resources({"train": {key: value}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"set-resources": {"train": {key: value}}}))
    from saccader.pipeline.cli import main

    capsys.readouterr()
    assert main(["plan", "--config", str(ROOT / "config.yaml"), "--profile", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_snakemake_stops_at_a_profile_typo_before_planning(tmp_path):
    proc = snakemake("-n", "--profile", "slurm", "--config", f"results_dir={tmp_path}",
                     "--set-resources", "train:micro_bach=4")
    assert proc.returncode != 0
    assert "unknown resource 'micro_bach'; fix: rename it to 'micro_batch'" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr


def test_missing_dataset_root_stops_the_run_before_any_job(tmp_path):
    missing = tmp_path / "imagenet"
    args = [f"{tmp_path}/results/checks/data.ok", "--cores", "1", "--config", f"results_dir={tmp_path}/results",
            f"dataset={{root: {missing}}}"]  # the target first: --config takes several values
    dry = snakemake("-n", *args)
    assert dry.returncode == 0 and f"warning: dataset.root = {missing} does not exist" in dry.stderr
    proc = snakemake(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"dataset.root = {missing} does not exist; fix: set dataset.root in config.yaml" in out
    assert not (tmp_path / "results" / "logs" / "check_data.log").exists()  # nothing was submitted
    assert "Traceback" not in out


def test_slurm_profile_without_slurm_names_the_fix(tmp_path):
    """Tried as a new user would, on a machine without SLURM: one line, not submitit's 'Could not detect srun'."""
    (tmp_path / "imagenet").mkdir()
    bin_dir = Path(sys.executable).parent  # Snakemake itself, but no sbatch/srun
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    if any((Path(d) / "sbatch").exists() for d in env["PATH"].split(os.pathsep)):
        pytest.skip("this machine has SLURM in /usr/bin")
    args = [f"{tmp_path}/results/checks/data.ok", "--profile", "slurm", "--config",
            f"results_dir={tmp_path}/results", f"dataset={{root: {tmp_path / 'imagenet'}}}"]
    line = "the profile submits jobs to SLURM (rules attack, check_data, evaluate, evaluate_glimpses, train), but " \
           "sbatch and srun are not on PATH here; fix: start Snakemake on a SLURM login node"
    dry = snakemake("-n", *args, env=env)  # a dry run submits nothing, but says so
    assert dry.returncode == 0 and f"warning: {line}" in dry.stderr
    proc = snakemake(*args, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert line in out
    assert "Could not detect" not in out and not (tmp_path / "results" / "logs" / "check_data.log").exists()
