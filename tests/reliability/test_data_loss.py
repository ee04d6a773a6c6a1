"""Nothing of the user's is lost: a command writes, replaces and deletes only its own outputs. Each test puts a
victim folder where a careless or hostile input would aim a command at it, and requires its checksums unchanged.
(predict, which needs a trained bundle: tests/test_bundle_predict.py::test_predict_never_writes_among_its_inputs.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from saccader.errors import UserError
from saccader.pipeline import config as cfg
from saccader.pipeline import io
from saccader.pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def victim(checksums):
    """Makes a folder of the user's (pictures, notes, a JSON file, a sub-folder); returns its checksums."""
    return lambda folder: _victim(folder, checksums)


def _victim(folder: Path, checksums) -> dict[str, str]:
    (folder / "album").mkdir(parents=True)
    Image.new("RGB", (20, 12), (200, 30, 30)).save(folder / "cat.png")
    (folder / "dog.json").write_text('{"mine": true}\n')
    (folder / "notes.txt").write_text("thesis draft\n")
    (folder / "album" / "2019.png").write_bytes((folder / "cat.png").read_bytes())
    return checksums(folder)


def one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "fix: " in err[0], err
    assert all(n in err[0] for n in needles), err[0]
    return err[0]


# ------------------------------------------------------------------------------ make-dataset, make-mini-imagenet


def test_make_dataset_refuses_a_folder_it_did_not_write(config_copy, tmp_path, capsys, victim, checksums):
    """Case 2: `make-dataset --root DIR` on a folder of the user's deleted it whole."""
    target = tmp_path / "photos"
    before = victim(target)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_copy))
    assert main(["make-dataset", "--config", str(config), "--root", str(target)]) == 2
    one_line(capsys, str(target), "did not write", "cat.png", "and 1 more")
    assert checksums(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "photos"]  # no build folder was started


def test_a_rebuild_deletes_only_what_the_manifest_lists(config_copy, tmp_path, checksums):
    from saccader.pipeline.data.digits import build

    root = tmp_path / "dataset"
    build(config_copy, root)
    listed = json.loads((root / "manifest.json").read_text())["files"]
    assert set(checksums(root)) == {*listed, "manifest.json", io.OWNED}
    (root / ".decoded-train.pt").write_bytes(b"a cache of the training split")  # the project's derived file
    config_copy["dataset"]["digits"]["seed"] += 1
    build(config_copy, root)  # its own tree (and cache): replaced
    assert ".decoded-train.pt" not in checksums(root)
    (root / "train" / "0" / "mine.png").write_bytes(b"a file of the user's")
    before = checksums(root)
    config_copy["dataset"]["digits"]["seed"] += 1
    with pytest.raises(UserError, match=r"did not write \(train/0/mine.png\)"):
        build(config_copy, root)
    assert checksums(root) == before


def test_a_build_folder_that_is_not_ours_is_refused(config_copy, tmp_path, victim, checksums):
    from saccader.pipeline.data.digits import build

    before = victim(tmp_path / ".dataset.building")
    with pytest.raises(UserError, match="was not left by it"):
        build(config_copy, tmp_path / "dataset")
    assert checksums(tmp_path / ".dataset.building") == before


def test_make_mini_imagenet_refuses_a_folder_it_did_not_write(tmp_path, victim, checksums):
    from saccader.pipeline.data import mini_imagenet

    before = victim(tmp_path / "photos")
    with pytest.raises(UserError, match="make-mini-imagenet did not write"):
        mini_imagenet.build(tmp_path / "photos", classes=2, train_per_class=1, val_per_class=1)
    assert checksums(tmp_path / "photos") == before
    built = mini_imagenet.build(tmp_path / "mini", classes=2, train_per_class=1, val_per_class=1)
    mini_imagenet.build(built, classes=3, train_per_class=1, val_per_class=1)  # its own tree: rebuilt
    assert len(list((built / "train").iterdir())) == 3


def test_io_replace_folder_keeps_everything_when_the_build_fails(tmp_path, checksums):
    root = tmp_path / "out"
    with io.replace_folder(root, "manifest.json", "test") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "manifest.json").write_text(json.dumps({"files": ["a.txt"]}))
    before = checksums(root)
    with pytest.raises(RuntimeError), io.replace_folder(root, "manifest.json", "test") as tmp:
        raise RuntimeError("failed half-way")
    assert checksums(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_io_replace_folder_rebuilds_its_tree_after_snakemake_deleted_the_manifest(tmp_path, checksums):
    """A job killed after its tree was in place fails, and Snakemake deletes its declared output, the manifest: the
    owner record beside it still names the tree as the command's, so the rerun replaces it (and a user's file that
    appeared meanwhile is still refused)."""
    root = tmp_path / "out"
    with io.replace_folder(root, "manifest.json", "test") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "manifest.json").write_text(json.dumps({"files": ["a.txt"]}))
    (root / "manifest.json").unlink()
    with io.replace_folder(root, "manifest.json", "test") as tmp:
        (tmp / "b.txt").write_text("2")
        (tmp / "manifest.json").write_text(json.dumps({"files": ["b.txt"]}))
    assert sorted(p.name for p in root.iterdir()) == [io.OWNED, "b.txt", "manifest.json"]
    (root / "manifest.json").unlink()
    (root / "mine.txt").write_text("the user's")
    before = checksums(root)
    with pytest.raises(UserError, match="mine.txt"), io.replace_folder(root, "manifest.json", "test"):
        pass
    assert checksums(root) == before


# ----------------------------------------------------------------------------------------------------- init-config


def tree(root: Path, names: list[str], per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            pixels[:12, :12] = 60 * c
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_init_config_refuses_a_class_name_that_would_inject_yaml(tmp_path, capsys, victim, checksums):
    """Case 3: a class folder named `x<newline>  name: digits<newline>  root: victim #` gave a valid config whose
    dataset was the digits, at the victim's folder (which make-dataset then wiped)."""
    before = victim(tmp_path / "victim")
    images = tree(tmp_path / "images", ["cats", f"x\n  name: digits\n  root: {tmp_path / 'victim'} #"])
    assert main(["init-config", str(images), "--out", str(tmp_path / "my.yaml"), "--minutes", "1"]) == 2
    one_line(capsys, "line break", "rename it")
    assert not (tmp_path / "my.yaml").exists() and not (tmp_path / "my-data").exists()
    assert checksums(tmp_path / "victim") == before


@pytest.mark.parametrize("name", ["a: b # c", "it's \"quoted\"", "- [x, y]", "&anchor *alias",
                                  "!!python_object:os.system", "%YAML 1.1", "ünïcödé 猫"])
def test_init_config_writes_any_printable_name_as_data(tmp_path, name):
    """The YAML comes from PyYAML, so a name is a name: the file reads back as the config init-config built."""
    from saccader.pipeline.init_config import init_config

    images = tree(tmp_path / name, ["plain", name])
    out = init_config(images, tmp_path / "my.yaml", minutes=1, seeds=1)
    config = cfg.validate(yaml.safe_load(out.read_text()))
    assert config["dataset"]["name"] != "digits" and config["dataset"]["num_classes"] == 2
    assert config["dataset"]["root"] == str((tmp_path / "my-data").resolve())
    assert sorted(p.name for p in (tmp_path / "my-data" / "train").iterdir()) == sorted(["plain", name])


# ----------------------------------------------------------------------------------------------------- results_dir


@pytest.mark.parametrize("where", ["/", "home", "repository", "above the repository"])
def test_results_dir_never_a_folder_the_experiment_cannot_own(where):
    path = {"/": "/", "home": str(Path.home()), "repository": str(REPO), "above the repository": str(REPO.parent)}
    with pytest.raises(UserError, match=r"results_dir .* (is|holds) .*; fix: set results_dir to a folder"):
        cfg.check_results_dir(path[where], entries=())


def test_results_dir_holding_the_users_files_is_refused_and_a_run_marks_its_own(tmp_path, victim, checksums):
    before = victim(tmp_path / "victim")
    with pytest.raises(UserError, match=r"did not write \(album, cat.png, dog.json, \.\.\.\)"):
        cfg.check_results_dir(tmp_path / "victim", entries={"runs", "eval"})
    assert checksums(tmp_path / "victim") == before
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "runs").mkdir()  # results written before the lock file marked them
    (tmp_path / "old" / ".params.parquet.abcd1234.tmp").write_text("")  # what a killed write left
    cfg.check_results_dir(tmp_path / "old", entries={"runs", "eval"})
    (tmp_path / "old" / "mine.txt").write_text("")
    (tmp_path / "old" / ".saccader.lock").write_text("")  # a run took the lock there: the folder is the experiment's
    cfg.check_results_dir(tmp_path / "old", entries={"runs", "eval"})


def test_snakemake_refuses_a_results_dir_holding_the_users_files(tmp_path, victim, checksums):
    """Case 4: `results_dir: /` had even `snakemake -n` write /configs/<hash>.yaml."""
    before = victim(tmp_path / "victim")
    base = [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/smoke.yaml", "--config"]
    for results, message in ((tmp_path / "victim", "holds files this workflow did not write"),
                             (Path("/"), "is the file system root")):
        proc = subprocess.run([*base, f"results_dir={results}"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"results_dir {results} {message}" in out and "; fix: " in out
        assert "Job stats" not in proc.stdout + proc.stderr
    assert checksums(tmp_path / "victim") == before
    assert not Path("/configs").exists()
