"""Config validation: both shipped configs are valid and share one key tree; mistakes give one clear line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from saccader.pipeline import config as cfg
from saccader.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["config.yaml", "config/embedded.yaml", "config/smoke.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    cfg.load_experiment(REPO / name)


def load_embedded():
    return cfg.load_experiment(REPO / "config/embedded.yaml")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(colour="red"), "unknown config key colour"),
    (lambda c: c["dataset"].update(imgsize=3), "unknown config key dataset.imgsize"),
    (lambda c: c["dataset"].update(image_size="big"), "dataset.image_size .* wrong type"),
    (lambda c: c["dataset"].update(name="my data"), "dataset.name .* is invalid"),  # any name without spaces
    (lambda c: c.update(seeds=[0, 0, 1]), "seeds .*repeated"),
    (lambda c: c["dataset"].update(num_classes=-3), "dataset.num_classes"),
    (lambda c: c["dataset"].pop("root"), "missing 'root'"),
])
def test_mistakes_give_one_line(edit, message):
    config = load_embedded()
    edit(config)
    with pytest.raises(UserError, match=message) as info:
        cfg.validate(config)
    assert "\n" not in str(info.value)


def test_defaults_are_filled():
    config = load_embedded()
    del config["results_dir"]
    assert cfg.validate(copy.deepcopy(config))["results_dir"] == "results"


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cfg.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        cfg.load(bad)


def test_a_subcommand_imports_only_its_own_module():
    """Job start-up: `saccader params` must not import the other subcommands' heavy dependencies."""
    import subprocess
    import sys

    probe = ("import sys, runpy; sys.argv = ['saccader', 'params', '--help']\n"
             "try:\n    runpy.run_module('saccader', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('sklearn', 'cleverhans', 'saccader.pipeline.evaluate', "
             "'saccader.pipeline.attack') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    full = subprocess.run([sys.executable, "-m", "saccader", "--help"], capture_output=True, text=True, cwd=REPO)
    assert all(c in full.stdout for c in ("make-dataset", "check-data", "train", "evaluate", "attack", "params"))
