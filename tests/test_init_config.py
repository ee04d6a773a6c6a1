"""``saccader init-config``: a class-folder tree of any images -> a config the whole workflow runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from saccader.pipeline.cli import main
from saccader.pipeline.config import validate

REPO = Path(__file__).resolve().parents[1]


def make_tree(root: Path, classes: int = 5, per_class: int = 24, seed: int = 0) -> Path:
    """One folder per class, non-square JPEG and PNG images of mixed sizes: class c is a bright square of colour c."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{chr(97 + c)}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(50, 90)), int(rng.integers(40, 70))
            img = rng.uniform(0, 0.3, (h, w, 3))
            y, x = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
            img[y:y + 14, x:x + 14] = [(c + 1) % 2, (c // 2) % 2, 0.5 * (c % 3)]
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_one_folder_tree_is_split_and_configured(tmp_path):
    tree = make_tree(tmp_path / "my photos")
    out = tmp_path / "cfg" / "mine.yaml"
    out.parent.mkdir()
    assert main(["init-config", str(tree), "--out", str(out), "--image-size", "48", "--seeds", "2"]) == 0
    text = out.read_text()
    config = validate(yaml.safe_load(text))
    ds = config["dataset"]
    assert ds["name"] == "my_photos" and ds["num_classes"] == 5 and ds["image_size"] == 48
    assert ds["high_res_size"] == 71 and config["seeds"] == [0, 1]
    data = Path(ds["root"])
    train = sorted(p.name for p in (data / "train").iterdir())
    assert train == [f"class_{c}" for c in "abcde"] == sorted(p.name for p in (data / "val").iterdir())
    n_val = [len(list((data / "val" / c).iterdir())) for c in train]
    assert n_val == [4] * 5  # 15 % of 24, per class, by the salted hash
    assert all(p.is_symlink() for p in (data / "val" / "class_a").iterdir())
    # every key of the dataset section carries its reason
    body = text.split("dataset:\n", 1)[1].split("# models", 1)[0]
    assert all("  # " in line for line in body.splitlines() if not line.startswith("  num_workers"))
    assert "chance top-1 20.0%" in text
    # the split is the same on a second call (hash, not listing order), and nothing is overwritten
    assert main(["init-config", str(tree), "--out", str(out)]) == 2
    assert out.read_text() == text


def test_bad_trees(tmp_path, capsys):
    one = tmp_path / "one"
    (one / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "a" / "x.png")
    empty = make_tree(tmp_path / "empty", classes=2, per_class=3)
    (empty / "class_z").mkdir()
    cases = [(one, r"holds 1 class folder\(s\); a classifier needs at least 2"),
             (empty, r"class folder\(s\) .*class_z hold no image"),
             (tmp_path / "missing", "is not a folder")]
    import re

    for root, message in cases:
        assert main(["init-config", str(root), "--out", str(tmp_path / "x.yaml")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]) and "fix:" in err[0], err
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.slow
def test_generated_config_runs_the_whole_workflow(tmp_path):
    """5 classes, non-square images of mixed sizes, 48 px: every figure, table, claim and the index page, with
    chance and labels from this data."""
    tree = make_tree(tmp_path / "shapes")
    cfg = tmp_path / "shapes.yaml"
    assert main(["init-config", str(tree), "--out", str(cfg), "--image-size", "48", "--seeds", "1",
                 "--minutes", "0.001"]) == 0  # one seed: the DAG's shape does not depend on their number
    config = yaml.safe_load(cfg.read_text())
    assert all(r["epochs"] == 1 for r in config["train"].values())
    config["results_dir"] = str(tmp_path / "results")
    config["attack"].update(subset_size=8, spsa_samples=8, pgd_iters=5)  # the attacks were half the job time
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all", "--configfile", str(cfg)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = tmp_path / "results"
    for name in ("fig3", "fig4", "fig5", "fig6", "fig_supp1", "fig_supp2", "fig_supp3"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 1000
    claims = pd.read_csv(res / "claims.csv")
    assert len(claims) == 9 and "chance (20.0%)" in claims["test"].iloc[-1]
    assert set(claims["verdict"]) == {"not tested"}  # one seed: no interval, no verdict
    summary = (res / "tables" / "table_summary.md").read_text()
    assert "reproduced (shapes)" in summary
    page = (res / "index.html").read_text()
    assert "5 classes, 48 px" in page and "claims on this run: " in page
    card = yaml.safe_load((res / "runs" / "saccader" / "seed0" / "card.json").read_text())
    assert card["class_names"] == [f"class_{c}" for c in "abcde"] and card["input"]["image_size"] == 48
    from analysis.glimpses import plot_fig3

    labels = plot_fig3(res).axes[0].get_legend_handles_labels()[1]
    assert "chance (5 classes)" in labels
