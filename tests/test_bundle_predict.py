"""Model bundles (card.json beside model.pt, saccader.models.load) and ``saccader predict`` on tiny trained runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saccader import models
from saccader.models import bundle as models_bundle
from saccader.pipeline import bundle
from saccader.pipeline.cli import main
from saccader.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from tiny_runs import ENV, ROOT, make_images, stage_config, write_config, write_inits  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny ImageFolder, a trained Saccader (stage 3 from random stage-2 weights), a trained BagNet-lowD and their
    evaluation jobs' parquets in the workflow's layout (results/runs/..., results/eval/...)."""
    from saccader.pipeline import evaluate, train

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("bundle")
    data = tmp / "data"
    make_images(data)
    res = tmp / "results"
    config, run = stage_config(data, "saccader", epochs=1)
    bag_config, bag_run = stage_config(data, "bagnet", epochs=2)
    config["train"][bag_run] = bag_config["train"][bag_run]
    config["evaluate"].update(max_glimpses=4, batch_size=64)
    inits = write_inits(config, "saccader", tmp / "inits")
    out = {}
    for name, init in ((run, inits), (bag_run, {})):
        folder = res / "runs" / name / "seed0"
        train.train(config, name, 0, folder, init)
        evaluate.evaluate(config, "glimpses", name, 0, {name: folder},
                          res / "eval" / "glimpses" / name / "seed0.parquet")
        out[name] = folder
    evaluate.evaluate(config, "full_image", bag_run, 0, {bag_run: out[bag_run]},
                      res / "eval" / "full_image" / bag_run / "seed0.parquet")
    return {"config": config, "data": data, "dirs": out, "tmp": tmp,
            "config_path": write_config(config, tmp / "config.yaml")}


def test_training_writes_a_card(runs):
    card = json.loads((runs["dirs"]["saccader"] / "card.json").read_text())
    assert card["format"] == models_bundle.FORMAT and card["model"] == "saccader" and card["run"] == "saccader"
    assert card["class_names"] == ["0", "1", "2", "3"] and card["num_classes"] == 4 and card["label_offset"] == 0
    assert card["input"]["image_size"] == 16 and card["input"]["mean"] == [0.2] * 3
    from saccader.pipeline.config import fingerprint

    assert card["fingerprint"] == fingerprint(runs["config"], "saccader")
    assert 0.0 <= card["dev_top1"] <= 1.0
    assert card["glimpses"] == runs["config"]["train"]["saccader"]["num_glimpses"]


# Runs in a fresh interpreter: the bundle alone, no config, scores the val/ images at every T as the evaluation job.
_FRESH = r"""
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from saccader.models import load
from saccader.pipeline.predict import predict_batch, open_image, preprocess
model = load(sys.argv[1], "cpu")
card = model.card
assert not model.training
val = Path(sys.argv[2]) / "val"
files = [(p, card["label_offset"] + k) for k, c in enumerate(card["class_names"]) for p in sorted((val / c).iterdir())]
images = torch.stack([preprocess(card, open_image(p))[0] for p, _ in files])
labels = torch.tensor([y for _, y in files])
out = predict_batch(model, card, images, int(sys.argv[3]), sys.argv[4])
hits = out["logits"].argmax(-1) == labels[:, None]
print(json.dumps([hits[:, t].float().mean().item() for t in range(hits.shape[1])]))
"""


@pytest.mark.parametrize("run,policy", [("saccader", "ordered_logits"), ("bagnet77_lowd", "ordered_logits"),
                                        ("bagnet77_lowd", "sobel_mean")])
def test_loaded_bundle_reproduces_evaluation_top1_in_a_fresh_process(runs, run, policy):
    import pandas as pd

    folder = runs["dirs"][run].parents[2] / "models" / run / "seed0"  # the exported bundle, test accuracy included
    bundle.export(runs["dirs"][run], folder, sorted(runs["dirs"][run].parents[2].glob(f"eval/*/{run}/seed0.parquet")))
    t_max = runs["config"]["evaluate"]["max_glimpses"]
    done = subprocess.run([sys.executable, "-c", _FRESH, str(folder), str(runs["data"]), str(t_max), policy],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    results = runs["dirs"][run].parents[2]
    frame = pd.read_parquet(results / "eval" / "glimpses" / run / "seed0.parquet")
    name = "saccader" if run == "saccader" else policy
    theirs = frame[(frame.policy == name) & (frame.metric == "top1")].sort_values("num_glimpses")["value"].tolist()
    assert ours == theirs  # exactly, at every T
    card = json.loads((folder / "card.json").read_text())
    own = [r["top1"] for r in card["test"] if r["evaluation"] == f"glimpses/{run}"]
    if run == "saccader":  # its card's test accuracy is at its T; its rows are its own policy's at every T
        assert card["test_top1"] == theirs[card["glimpses"] - 1] and card["test_glimpses"] == card["glimpses"]
        assert own == theirs
    else:  # a classifier's card: its full-image accuracy, and its rows under the paper's best engineered policy
        full = pd.read_parquet(results / "eval" / "full_image" / run / "seed0.parquet")
        assert card["test_top1"] == full[full.metric == "top1"]["value"].item() and card["test_glimpses"] == 0
        assert own == frame[(frame.policy == "ordered_logits") & (frame.metric == "top1")].sort_values(
            "num_glimpses")["value"].tolist()


def test_export_without_test_results_is_one_line(runs, tmp_path):
    with pytest.raises(UserError, match=r"no test results of run saccader.*fix: pass the parquet"):
        bundle.export(runs["dirs"]["saccader"], tmp_path / "b", [])
    with pytest.raises(UserError, match=r"evaluation results .*nowhere.parquet do not exist.*fix: run the run's"):
        bundle.export(runs["dirs"]["saccader"], tmp_path / "b", [tmp_path / "nowhere.parquet"])
    assert not (tmp_path / "b").exists()


def test_export_never_writes_over_its_run(runs, checksums):
    run = runs["dirs"]["saccader"]
    before = checksums(run)
    evals = sorted((runs["tmp"] / "results" / "eval").rglob("saccader/seed0.parquet"))
    with pytest.raises(UserError, match=r"is the run folder; export never writes over .*; fix: pass another --out"):
        bundle.export(run, run / ".." / run.name, evals)
    assert checksums(run) == before


def _rewrite_card(folder: Path, tmp: Path, **changes) -> Path:
    import shutil

    copy = tmp / f"copy{len(list(tmp.iterdir()))}"
    shutil.copytree(folder, copy)
    card = json.loads((copy / "card.json").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    (copy / "card.json").write_text(json.dumps(card))
    return copy


def test_bad_bundles_are_one_line_errors(runs, tmp_path):
    folder = runs["dirs"]["saccader"]
    with pytest.raises(UserError, match=r"bundle of saccader 0\.0\.1.*fix: load it with that version"):
        models.load(_rewrite_card(folder, tmp_path, saccader_version="0.0.1"))
    with pytest.raises(UserError, match=r"is missing 'class_names'.*fix: rewrite it with `saccader card"):
        models.load(_rewrite_card(folder, tmp_path, class_names=None))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.pt").write_bytes((folder / "model.pt").read_bytes())
    with pytest.raises(UserError, match="has no card.json.*saccader card"):
        models.load(bare)
    with pytest.raises(UserError, match="does not fit the model its card describes"):
        models.load(_rewrite_card(folder, tmp_path, num_classes=7))


def test_card_command_writes_a_card_for_an_old_run(runs, tmp_path, capsys):
    import shutil

    old = tmp_path / "seed0"
    shutil.copytree(runs["dirs"]["saccader"], old)
    (old / "card.json").unlink()
    assert main(["card", str(old), "--config", str(runs["config_path"]), "--run", "saccader"]) == 0
    assert json.loads((old / "card.json").read_text()) == {
        **json.loads((runs["dirs"]["saccader"] / "card.json").read_text()),
        "code_version": json.loads((old / "card.json").read_text())["code_version"]}


def _odd_images(folder: Path) -> None:
    """JPEG / PNG in every mode people have: grayscale, CMYK, RGBA, palette, EXIF-rotated, tiny and wide."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    folder.mkdir()
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("P").save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: upright it is 30 wide, 50 high
    rgb.save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 255, (7, 9, 3), dtype=np.uint8)).save(folder / "tiny.png")
    (folder / "sub").mkdir()
    rgb.resize((200, 40)).save(folder / "sub" / "wide.jpeg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")


def test_predict_any_image_mode_and_an_unreadable_file(runs, tmp_path, capsys):
    images = tmp_path / "images"
    _odd_images(images)
    out = tmp_path / "out"
    assert main(["predict", str(runs["dirs"]["saccader"]), str(images), "--glimpses", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "cannot read" in err and "broken.jpg" in err
    names = {"gray", "cmyk", "rgba", "palette", "rotated", "tiny", "sub_wide"}
    assert {p.stem for p in out.glob("*.png")} == names and {p.stem for p in out.glob("*.json")} == names
    rot = json.loads((out / "rotated.json").read_text())
    assert rot["image_size"] == [30, 50]  # EXIF orientation applied
    assert [g["t"] for g in rot["glimpses"]] == [1, 2, 3]
    assert len(rot["top5"]) == 4 and rot["top5"][0]["class"] in "0123"
    assert abs(sum(c["probability"] for c in rot["top5"]) - 1) < 1e-4
    for name in names:
        rec = json.loads((out / f"{name}.json").read_text())
        w, h = rec["image_size"]
        for g in rec["glimpses"]:
            x0, y0, x1, y1 = g["box_xyxy"]
            assert 0 <= x0 < x1 <= w + 0.05 and 0 <= y0 < y1 <= h + 0.05
    # a wide image: the eval transform's centre square crop, so every box lies inside the middle 40 x 40 pixels
    for g in json.loads((out / "sub_wide.json").read_text())["glimpses"]:
        assert g["box_xyxy"][0] >= 80 and g["box_xyxy"][2] <= 120
    assert Image.open(out / "gray.png").size[0] > 480


def test_boxes_map_to_the_original_pixels(runs):
    """A box in model pixels maps back onto the pixels the crop + resize took it from: on an image that is an
    exact 3x upscale of a 16 px input (no crop padding), box coordinates scale by 3."""
    from saccader.models import load
    from saccader.pipeline.predict import predict_image

    model = load(runs["dirs"]["saccader"], "cpu")
    img = Image.fromarray(np.zeros((48, 60, 3), dtype=np.uint8))  # centre 48 x 48 crop starts at x = 6
    rec = predict_image(model, model.card, img, 2)
    from saccader.pipeline.evaluate import grid_boxes

    boxes = [g["box_xyxy"] for g in rec["glimpses"]]
    # every box has side q * 3 and starts on the stride grid, shifted by the crop's left edge
    q, s = model.receptive_field, model.stride
    for x0, y0, x1, y1 in boxes:
        assert x1 - x0 == pytest.approx(q * 3) and y1 - y0 == pytest.approx(q * 3)
        assert (x0 - 6) % (3 * s) == pytest.approx(0) and y0 % (3 * s) == pytest.approx(0)
    assert grid_boxes  # the function the evaluation uses is the one predict calls


def test_predict_bad_input(runs, tmp_path, capsys):
    folder = str(runs["dirs"]["saccader"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    cases = [([folder, str(empty)], "holds no JPEG or PNG image"),
             ([folder, str(tmp_path / "nope.jpg")], "does not exist"),
             ([folder, str(empty / "notes.txt"), "--out", str(tmp_path / "o1")], "none of the 1 image"),
             ([folder, str(empty), "--glimpses", "17"], r"--glimpses 17 exceeds the 16 locations"),
             ([folder, str(empty), "--glimpses", "0"], "--glimpses: 0 is out of range")]
    for args, message in cases:
        assert main(["predict", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 or "cannot read" in err[0], err
        assert message in err[-1] and "fix:" in err[-1]


def test_full_image_model_refuses_glimpses(runs, tmp_path, capsys):
    """A model that classifies the whole image (here a BagNet bundle relabelled as ResNet's card would read)."""
    from saccader.models import create
    from saccader.pipeline.io import torch_save

    folder = tmp_path / "resnet"
    folder.mkdir()
    card = json.loads((runs["dirs"]["bagnet77_lowd"] / "card.json").read_text())
    overrides = {"layers": [1, 1, 1, 1], "widths": [4, 4, 8, 8], "stem_channels": 4}
    card.update(model="resnet_v2_50", run="resnet_v2_50", overrides=overrides)
    torch_save(create("resnet_v2_50", 4, **overrides).state_dict(), folder / "model.pt")
    (folder / "card.json").write_text(json.dumps(card))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(img)
    assert main(["predict", str(folder), str(img), "--glimpses", "3"]) == 2
    assert "classifies the full image and takes no glimpses" in capsys.readouterr().err
    assert main(["predict", str(folder), str(img), "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "a.json").read_text())
    assert "glimpses" not in rec and len(rec["top5"]) == 4


def test_imagenet_wnids_get_names():
    card = {"label_offset": 1, "class_names": ["n01443537", "my_class"]}
    assert models_bundle.class_label(card, 1) == "goldfish"
    assert models_bundle.class_label(card, 2) == "my_class"
    assert models_bundle.class_label(card, 0) == "background"


@pytest.mark.parametrize("stage,t", [("dram", 3), ("nasnet_finetune", 2), ("nasnet_finetune_high", 2)])
def test_predict_dram_and_saccader_nasnet(runs, tmp_path, stage, t):
    """DRAM's continuous glimpses and Saccader-NASNet's (base and high-resolution patches) come out as boxes in the
    original image's pixels, one per glimpse."""
    from saccader.pipeline.io import torch_save
    from saccader.models import from_config
    from saccader.pipeline.predict import predict

    high = stage.endswith("_high")
    config, run = stage_config(runs["data"], stage.removesuffix("_high"),
                               **({"resolution": "high_res"} if high else {}))
    rec = config["train"][run]
    torch.manual_seed(0)
    folder = tmp_path / run
    torch_save(from_config(rec["model"], config).state_dict(), folder / "model.pt")
    bundle.write_card(config, run, 0, folder)
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(img)
    (record,) = predict(folder, [img], t, tmp_path / "out")
    assert [g["t"] for g in record["glimpses"]] == list(range(1, t + 1))
    for g in record["glimpses"]:
        x0, y0, x1, y1 = g["box_xyxy"]
        assert 0 <= x0 < x1 <= 30 and 5 <= y0 < y1 <= 35  # inside the centre 30 x 30 crop
    assert (tmp_path / "out" / "a.png").exists()


def test_predict_never_writes_among_its_inputs(runs, tmp_path, capsys, checksums):
    """`predict MODEL photos/ --out photos/` drew over cat.png and replaced the user's dog.json beside dog.jpg."""
    model = str(runs["dirs"]["saccader"])
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photos / "cat.png")
    Image.new("RGB", (30, 40), (30, 30, 200)).save(photos / "dog.jpg")
    (photos / "dog.json").write_text('{"mine": true}\n')
    before = checksums(tmp_path)
    mine = tmp_path / "elsewhere"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    for out, message in ((photos, "is the input"), (photos / "preds", "sits inside the input"),
                         (tmp_path, "holds the input"), (mine, "did not write (notes.txt)")):
        assert main(["predict", model, str(photos), "--glimpses", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "fix:" in err[0], err
    assert main(["predict", model, str(photos / "cat.png"), "--glimpses", "2", "--out", str(photos)]) == 2
    assert checksums(tmp_path) == {**before, "elsewhere/notes.txt": checksums(mine)["notes.txt"]}
    out = tmp_path / "preds"
    for _ in range(2):  # its own outputs it may replace
        assert main(["predict", model, str(photos), "--glimpses", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".saccader-predict", "cat.json", "cat.png", "dog.json",
                                                     "dog.png"]
    assert checksums(photos) == {k[len("photos/"):]: v for k, v in before.items() if k.startswith("photos/")}
