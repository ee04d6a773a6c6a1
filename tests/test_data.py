"""The embedded dataset (determinism, no leakage, layout) and the ImageFolder path shared with ImageNet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saccader.pipeline.data import build_dataset, check_data, list_split, split_train_dev
from saccader.pipeline.data.digits import build, source_splits
from saccader.errors import UserError


def test_same_seed_gives_byte_identical_dataset(tiny_dataset, tmp_path):
    again = build(tiny_dataset, tmp_path / "again")
    first = json.loads((Path(tiny_dataset["dataset"]["root"]) / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first["sha256"] == second["sha256"]
    files = sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert files and all((again / f).read_bytes() == (Path(tiny_dataset["dataset"]["root"]) / f).read_bytes()
                         for f in files[:20])


def test_other_seed_gives_other_dataset(tiny_dataset, tmp_path):
    config = {**tiny_dataset, "dataset": {**tiny_dataset["dataset"],
                                          "digits": {**tiny_dataset["dataset"]["digits"], "seed": 1}}}
    other = build(config, tmp_path / "other")
    first = json.loads((Path(tiny_dataset["dataset"]["root"]) / "manifest.json").read_text())
    assert json.loads((other / "manifest.json").read_text())["sha256"] != first["sha256"]


def test_source_digits_are_split_disjointly():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    pools = source_splits(targets, (0.7, 0.15), seed=0)
    assert not set(pools["train"]) & set(pools["dev"])
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["dev"]) & set(pools["test"])
    assert sum(len(v) for v in pools.values()) == len(targets) == 1797
    assert set(targets[pools["test"]]) == set(range(10))


def test_layout_counts_and_manifest(tiny_dataset):
    root = Path(tiny_dataset["dataset"]["root"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert sorted(p.name for p in (root / "train").iterdir()) == [str(c) for c in range(10)]
    assert sum(manifest["counts"]["dev"].values()) == tiny_dataset["dataset"]["dev_size"]
    assert sum(manifest["counts"]["train"].values()) + 20 == 100
    assert sum(manifest["counts"]["val"].values()) == 40
    train, _ = list_split(tiny_dataset, "train")
    dev, _ = list_split(tiny_dataset, "dev")
    test, _ = list_split(tiny_dataset, "test")
    assert (len(train), len(dev), len(test)) == (80, 20, 40)
    assert not {p for p, _ in train} & {p for p, _ in dev}


def test_geometry_matches_high_res(tiny_dataset):
    root = Path(tiny_dataset["dataset"]["root"])
    img = Image.open(next((root / "val").rglob("*.png")))
    assert img.size == (tiny_dataset["dataset"]["high_res_size"],) * 2
    pixels = np.asarray(img)
    assert pixels.max() > 200 and (pixels == 0).mean() > 0.3  # a bright digit on a dark, cluttered canvas


def test_split_is_deterministic_and_order_free():
    names = [f"train/c{i % 7}/img{i}.JPEG" for i in range(1000)]
    train, dev = split_train_dev(names, 50)
    train2, dev2 = split_train_dev(list(reversed(names)), 50)
    assert len(dev) == 50 and sorted(dev) == sorted(dev2) and len(train) == 950


@pytest.mark.parametrize("train", [False, True])
def test_transforms_shape_and_normalisation(tiny_dataset, train):
    ds = build_dataset(tiny_dataset, "test", train=train)
    x, y = ds[0]
    size = tiny_dataset["dataset"]["image_size"]
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and 0 <= y < 10
    raw = build_dataset(tiny_dataset, "test", resolution=tiny_dataset["dataset"]["high_res_size"], normalize=False)
    x_raw, _ = raw[0]
    assert x_raw.shape[-1] == tiny_dataset["dataset"]["high_res_size"] and 0 <= x_raw.min() and x_raw.max() <= 1


def test_zero_image_maps_to_minus_mean_over_std(tiny_dataset):
    from saccader.pipeline.data import build_transform

    ds = tiny_dataset["dataset"]
    out = build_transform(tiny_dataset, train=False)(Image.new("RGB", (80, 80)))
    expected = -torch.tensor(ds["mean"]) / torch.tensor(ds["std"])
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("train,hflip,size", [(True, False, None), (True, True, None), (False, False, None),
                                              (False, False, "high_res_size")])
def test_transform_is_bitwise_torchvisions_compose(tiny_dataset, train, hflip, size):
    """AppendixC (functional kernels) = the v2.Compose it stands for, same random draws, PIL or tensor input."""
    from saccader.pipeline.data import build_transform
    from saccader.pipeline.data.folder import load_rgb

    ds = tiny_dataset["dataset"]
    config = {**tiny_dataset, "dataset": {**ds, "hflip": hflip, "crop_padding_fraction": 0.1}}
    transform = build_transform(config, train=train, resolution=ds[size] if size else None)
    reference = transform.reference_compose()
    samples, _ = list_split(tiny_dataset, "train")
    for path, _ in samples[:12]:
        pil = Image.open(path).convert("RGB")
        torch.manual_seed(7)
        expected = reference(pil)
        torch.manual_seed(7)
        assert torch.equal(transform(load_rgb(path)), expected)
        torch.manual_seed(7)
        assert torch.equal(transform(pil), expected)


def test_cached_images_give_the_same_items_and_pack_the_split(tiny_dataset, tmp_path, caplog):
    root = tmp_path / "copy"
    # without the packs other tests of the session may have left in the shared dataset
    shutil.copytree(tiny_dataset["dataset"]["root"], root, ignore=shutil.ignore_patterns(".decoded-*"))
    on, off = ({**tiny_dataset, "dataset": {**tiny_dataset["dataset"], "root": str(root), "cache_images": c}}
               for c in (True, False))
    plain = build_dataset(off, "train", train=True)
    torch.manual_seed(0)
    plain_first = plain[0][0]
    pack = root / ".decoded-train.pt"
    for n in range(2):  # the first dataset decodes and writes the pack, the second loads it
        cached = build_dataset(on, "train", train=True)
        with caplog.at_level("INFO", logger="saccader.pipeline.data"):
            caplog.clear()
            for i in range(5):
                torch.manual_seed(i)
                a = cached[i]
                torch.manual_seed(i)
                assert torch.equal(a[0], plain[i][0]) and a[1] == plain[i][1]
        assert pack.exists() and ("decoded 80 images" in caplog.text) == (n == 0)
    assert len(cached._decoded) == len(plain) and plain._decoded is None and not (root / ".decoded-dev.pt").exists()
    pack.write_bytes(b"half-written by something else")  # an unreadable pack is decoded again, with a warning
    with caplog.at_level("INFO", logger="saccader.pipeline.data"):
        caplog.clear()
        torch.manual_seed(0)
        assert torch.equal(build_dataset(on, "train", train=True)[0][0], plain_first)
        assert "unreadable" in caplog.text and "decoded 80 images" in caplog.text
    # an image that changes invalidates the pack: decoded again, and the new pixels are served
    victim = Path(plain.samples[3][0])
    Image.new("RGB", Image.open(victim).size, (255, 0, 0)).save(victim)
    with caplog.at_level("INFO", logger="saccader.pipeline.data"):
        caplog.clear()
        fresh = build_dataset(on, "train", train=False, normalize=False)
        assert torch.equal(fresh[3][0][0], torch.ones_like(fresh[3][0][0])) and "decoded 80 images" in caplog.text


def test_unwritable_pack_is_skipped(tiny_dataset, tmp_path, monkeypatch):
    from saccader.pipeline.data.folder import FolderDataset

    samples, _ = list_split(tiny_dataset, "test")
    transform = lambda img, generator=None: img  # noqa: E731
    ds = FolderDataset(samples[:3], transform, cache=True, pack=tmp_path / "no" / "such" / "dir" / "p.pt")
    monkeypatch.setattr("saccader.pipeline.io.atomic_path", _raise_oserror)
    assert ds[2][0].dtype == torch.uint8 and not (tmp_path / "no").exists()


def _raise_oserror(path):
    raise PermissionError(13, "read-only file system")


def test_item_generator_gives_the_global_generators_draws(tiny_dataset):
    """FolderDataset.get(i, generator) = dataset[i] with the global generator seeded alike (crops, flips)."""
    config = {**tiny_dataset, "dataset": {**tiny_dataset["dataset"], "hflip": True, "train_crop_scale": [0.08, 1.0]}}
    ds = build_dataset(config, "train", train=True)
    for i in range(12):
        torch.manual_seed(100 + i)
        expected = ds[i][0]
        assert torch.equal(ds.get(i, torch.Generator().manual_seed(100 + i))[0], expected)


def test_check_data_passes_then_lists_every_corrupt_file(tiny_dataset, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset["dataset"]["root"], root)
    report = check_data(tiny_dataset, str(root))
    assert report["images"] == {"train": 80, "dev": 20, "test": 40} and not report["bad"]
    victims = sorted((root / "train" / "3").glob("*.png"))[:2]
    victims[0].write_bytes(victims[0].read_bytes()[:60])  # truncated
    victims[1].write_bytes(b"not an image at all")
    (root / "val" / "1" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="3 unreadable"):
        check_data(tiny_dataset, str(root))
    err = capsys.readouterr().err
    assert all(str(p) in err for p in victims) and "notes.txt" in err


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.rmtree(r), "does not exist"),
    (lambda r: shutil.rmtree(r / "val"), "split folder"),
    (lambda r: shutil.rmtree(r / "train" / "9"), "different class folders"),
    (lambda r: [shutil.rmtree(r / s / "9") for s in ("train", "val")], "expects 10"),
    (lambda r: [p.unlink() for p in (r / "val" / "4").iterdir()], "is empty"),
])
def test_bad_layouts_give_one_clear_line(tiny_dataset, tmp_path, damage, message):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset["dataset"]["root"], root)
    damage(root)
    with pytest.raises(UserError, match=message) as info:
        check_data(tiny_dataset, str(root))
    assert "\n" not in str(info.value) and "fix:" in str(info.value)


def test_make_dataset_cli_refuses_imagenet_config(tmp_path, capsys):
    from saccader.pipeline.cli import main

    assert main(["make-dataset", "--config", "config.yaml"]) == 2
    assert "error:" in capsys.readouterr().err


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Results are shared: an atomically written file gets 0666 & ~umask like open(), not mkstemp's 0600."""
    import os

    from saccader.pipeline.io import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
