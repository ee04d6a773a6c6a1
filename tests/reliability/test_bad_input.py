"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing overwritten.

Covered elsewhere (docs/reliability.md lists them): dataset layout, class count, empty class folder, non-image file
and corrupt PNG (tests/test_data.py), unknown config key, wrong type, repeated seeds (tests/test_config.py).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from saccader.pipeline import config as C
from saccader.pipeline import train as T
from saccader.pipeline.cli import main
from saccader.pipeline.data import check_data
from saccader.errors import UserError
from tiny_runs import make_images, stage_config, write_config, write_inits


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_images(root, per_class=6)
    return root


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_error(argv, capsys) -> str:
    """Run the CLI; it must exit 2 with exactly one line ``error: ... fix ...`` on stderr (no traceback)."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line.split("\r")[-1] for line in err.split("\n") if "error:" in line]  # \r: a cleared progress bar
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "fix" in lines[0] or "use one of" in lines[0], err
    return lines[0]


@pytest.fixture
def finished(data, tmp_path):
    """A finished tiny BagNet run (its folder must survive every bad command untouched)."""
    config, run = stage_config(data, "bagnet", epochs=1)
    out = tmp_path / "run"
    T.train(config, run, 0, out)
    return config, run, out


def train_argv(config, run, out, tmp_path, *extra):
    return ["train", "--config", write_config(config, tmp_path / "c.yaml"), "--run", run, "--seed", 0,
            "--out", out, *extra]


def test_stale_checkpoint_restart(finished, tmp_path, caplog):
    """--stale-checkpoint restart (the workflow's choice when Snakemake reruns a job whose recipe changed) trains
    from scratch, bitwise as in an empty folder, and keeps the old checkpoint under its fingerprint."""
    config, run, out = finished
    old = C.fingerprint(config, run)
    old_ckpt = (out / "checkpoint.pt").read_bytes()
    config["train"][run]["lr"] = 0.2
    (out / ".checkpoint.pt.killed.tmp").write_bytes(b"")  # a kill's leftover, cleaned up on the way
    assert main([str(a) for a in train_argv(config, run, out, tmp_path, "--stale-checkpoint", "restart")]) == 0
    assert not list(out.glob(".*.tmp"))
    assert f"kept as checkpoint.{old}.pt, training from scratch" in caplog.text
    assert (out / f"checkpoint.{old}.pt").read_bytes() == old_ckpt
    fresh = T.train(config, run, 0, tmp_path / "fresh")
    got, want = torch.load(out / "model.pt", weights_only=True), torch.load(fresh, weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (out / "checkpoint.pt").exists() and C.fingerprint(config, run) != old


@pytest.mark.parametrize("key, value, message", [
    ("lr", -0.1, r"train\.bagnet77_lowd\.lr = -0\.1 is out of range; fix: set it > 0"),
    ("lr", 0, r"train\.bagnet77_lowd\.lr = 0 is out of range; fix: set it > 0"),
    ("batch_size", -8, r"train\.bagnet77_lowd\.batch_size = -8 is out of range; fix: set it >= 1"),
    ("batch_size", 0, r"batch_size = 0 is out of range"),
    ("model", "bagnet99", r"train\.\w+\.model = 'bagnet99' is not allowed; use one of .*bagnet77_lowd"),
])
def test_bad_recipe_value(finished, tmp_path, capsys, key, value, message):
    config, run, out = finished
    before = snapshot(out)
    config["train"][run][key] = value
    err = cli_error(train_argv(config, run, out, tmp_path), capsys)
    assert re.search(message, err), err
    assert snapshot(out) == before


def test_unknown_policy_name(finished, tmp_path, capsys):
    config, run, out = finished
    config["evaluate"]["policies"] = ["random", "sobel_max"]
    err = cli_error(train_argv(config, run, out, tmp_path), capsys)
    assert "evaluate.policies.1 = 'sobel_max' is not allowed; use one of" in err


def test_unknown_model_name_of_a_job(finished, tmp_path, capsys):
    config, run, out = finished
    path = write_config(config, tmp_path / "c.yaml")
    err = cli_error(["evaluate", "--config", path, "--kind", "glimpses", "--model", "bagnet99", "--seed", 0,
                     "--out", tmp_path / "e.parquet", "--ckpt", f"bagnet99={out}"], capsys)
    assert "no evaluation job (glimpses, bagnet99)" in err
    # a choice of the command line: argparse names the allowed ones, in the same one line
    err = cli_error(["attack", "--config", path, "--model", "bagnet99", "--seed", 0, "--out", tmp_path / "a.parquet"],
                    capsys)
    assert "invalid choice: 'bagnet99' (choose from" in err
    assert not list(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize("stage", ["location_pretrain", "saccader"])
def test_more_glimpses_than_locations(data, tmp_path, capsys, stage):
    config, run = stage_config(data, stage, epochs=1, num_glimpses=17)  # the tiny grid has 4 x 4 = 16 cells
    inits = write_inits(config, stage, tmp_path / "inits")
    argv = train_argv(config, run, tmp_path / "out", tmp_path, *[a for r, d in inits.items()
                                                                  for a in ("--init", f"{r}={d}")])
    err = cli_error(argv, capsys)
    assert "17" in err and "16" in err, err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_more_glimpses_than_locations_for_an_engineered_policy():
    from baselines import policies

    with pytest.raises(UserError, match="cannot pick 17 distinct glimpses from a grid of 16 locations"):
        policies.ordered_logits(torch.rand(2, 3, 4, 4), 17)
    with pytest.raises(UserError, match="cannot pick 17 distinct glimpses from a grid of 16 locations"):
        policies.random_policy(2, (4, 4), 17)


def test_checkpoint_of_another_run_or_config(finished, data, tmp_path, capsys):
    config, run, out = finished
    before = snapshot(out)
    # the folder of a BagNet run given to a Saccader run (same file names, other model)
    sac, sac_run = stage_config(data, "saccader", epochs=1)
    inits = write_inits(sac, "saccader", tmp_path / "inits")
    err = cli_error(train_argv(sac, sac_run, out, tmp_path, "--init", f"saccader_pretrain={inits['saccader_pretrain']}"),
                    capsys)
    assert "belongs to run bagnet77_lowd (model bagnet77_lowd), not to run saccader (model saccader)" in err
    # the same run under another config (its recipe changed): resuming would mix two configs
    config["train"][run]["lr"] = 0.2
    err = cli_error(train_argv(config, run, out, tmp_path), capsys)
    assert "was written under another config of run bagnet77_lowd" in err
    # the same run under another model width: no state_dict key dump
    config["train"][run]["lr"] = 0.05
    config["models"]["bagnet77_lowd"] = {**config["models"]["bagnet77_lowd"], "lowd_dim": 16}
    err = cli_error(train_argv(config, run, out, tmp_path), capsys)
    assert "another config" in err and "Missing key" not in err and "size mismatch" not in err
    # evaluation given a checkpoint of another model
    err = cli_error(["evaluate", "--config", tmp_path / "c.yaml", "--kind", "full_image", "--model", "bagnet77",
                     "--seed", 0, "--out", tmp_path / "e.parquet", "--ckpt", f"bagnet77={out}"], capsys)
    assert "does not fit model bagnet77" in err
    assert snapshot(out) == before and not (tmp_path / "e.parquet").exists()


def test_checkpoint_without_fingerprint_of_another_model(finished, tmp_path, capsys):
    """A checkpoint from before fingerprints (or edited by hand) that does not fit: still one line."""
    config, run, out = finished
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for key in ("run", "model_name", "fingerprint"):
        state.pop(key)
    state["model"] = {"conv.weight": torch.zeros(1)}
    torch.save(state, out / "checkpoint.pt")
    err = cli_error(train_argv(config, run, out, tmp_path), capsys)
    assert "does not fit run bagnet77_lowd" in err


def _corrupt_jpegs(root: Path) -> list[Path]:
    """Turn the tree into JPEGs; truncate one, replace one with garbage; returns the two bad paths."""
    for png in list(root.rglob("*.png")):
        Image.open(png).convert("RGB").save(png.with_suffix(".JPEG"), quality=90)
        png.unlink()
    victims = sorted((root / "train" / "2").glob("*.JPEG"))[:2]
    victims[0].write_bytes(victims[0].read_bytes()[:200])  # truncated in the middle of the scan
    victims[1].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return victims


def test_corrupt_jpegs_are_listed_with_their_paths_and_training_refuses(data, tmp_path, capsys):
    root = tmp_path / "jpeg"
    shutil.copytree(data, root)
    victims = _corrupt_jpegs(root)
    config, run = stage_config(root, "bagnet", epochs=1)
    with pytest.raises(UserError, match="2 unreadable or non-image files") as info:
        check_data(config)
    assert "\n" not in str(info.value)
    printed = capsys.readouterr().err
    assert all(f"unreadable: {p}" in printed for p in victims), printed
    # a training job started on the tree anyway stops at the first bad file, naming it
    err = cli_error(train_argv(config, run, tmp_path / "out", tmp_path), capsys)
    assert "cannot read image" in err and any(str(p) in err for p in victims), err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
