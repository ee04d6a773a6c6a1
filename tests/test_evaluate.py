"""Evaluation jobs: exact area, exact occlusion, and end-to-end parquet/npz on a tiny dataset and tiny models."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saccader import catalog, geometry, models

from saccader.pipeline import evaluate, results
from saccader.pipeline.config import load, load_experiment
from saccader.errors import UserError

TINY = dict(blocks=[1, 1], planes=[4, 8], expansion=2, strides=[2, 1], kernel3=[1, 1], stem_channels=4, lowd_dim=8)


def test_area_is_exact_on_known_boxes():
    bagnet = models.create("bagnet77_lowd", 3, **TINY)  # q = 9, stride 2, 4 x 4 grid at 16 px
    boxes = evaluate.grid_boxes(bagnet, torch.tensor([[0, 1, 5]]), 16)
    assert boxes.tolist() == [[[0, 0, 9, 9], [0, 2, 9, 11], [2, 2, 11, 11]]]
    # union: rows 0-8 x cols 0-10 (99 px) plus rows 9-10 x cols 2-10 (18 px)
    assert geometry.area_covered(boxes, 16, 16).item() == pytest.approx(117 / 256, abs=0)
    # a repeated location covers the patch once (official patches_masks test)
    assert geometry.area_covered(evaluate.grid_boxes(bagnet, torch.tensor([[5, 5]]), 16), 16, 16).item() == 81 / 256


def test_occlusion_sets_exactly_the_box_pixels():
    images = torch.rand(2, 3, 12, 12) + 1.0  # never equal to the fill
    boxes = torch.tensor([[[2, 3, 5, 7], [4, 6, 8, 9]], [[0, 0, 12, 1], [0, 0, 12, 1]]])
    fill = torch.tensor([0.0, -1.0, 2.5])
    out = evaluate.occlude(images, boxes, fill)
    expected = torch.zeros(2, 12, 12, dtype=torch.bool)
    expected[0, 2:5, 3:7] = True
    expected[0, 4:8, 6:9] = True
    expected[1, :, 0:1] = True
    for c in range(3):
        assert torch.equal(out[:, c] == fill[c], expected)
    assert torch.equal(out[~expected.unsqueeze(1).expand_as(out)], images[~expected.unsqueeze(1).expand_as(images)])


def test_required_runs_and_jobs():
    assert catalog.required_runs("glimpses", "saccader_no_pretrain") == ["saccader_no_pretrain"]
    assert set(catalog.required_runs("occlusion", "resnet_v2_50")) == {"resnet_v2_50", "bagnet77_lowd", "saccader",
                                                                        "dram"}
    assert catalog.required_runs("nasnet", "saccader_nasnet") == ["saccader", "nasnet_77", "nasnet_113"]
    with pytest.raises(UserError, match="no evaluation job"):
        catalog.required_runs("glimpses", "resnet_v2_50")
    with pytest.raises(UserError, match="RUN=DIR"):
        evaluate.parse_ckpts(["saccader"])


@pytest.fixture
def tiny_setup(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = tmp_path / "data" / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(5):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    config = copy.deepcopy(load_experiment("config/smoke.yaml"))
    config["dataset"].update(root=str(tmp_path / "data"), num_classes=3, image_size=16, high_res_size=24,
                             dev_size=2)
    small = dict(layers=[1, 1], widths=[4, 8], strides=[2, 1], stem_channels=4)
    config["models"] = {"bagnet77_lowd": dict(TINY), "saccader": dict(TINY, mixed_dim=8), "resnet_v2_50": small,
                        "dram": dict(small, glimpse_size=8, lstm_units=8, location_units=8),
                        "nasnet_a_large": dict(stem_size=8, num_features=96)}
    config["train"] = {"saccader_no_pretrain": {"model": "saccader"}, "nasnet_77": {"model": "nasnet_a_large"},
                       "nasnet_113": {"model": "saccader_nasnet"}}
    config["evaluate"].update(max_glimpses=3, train_glimpses=2, batch_size=4, max_images=None, examples=3)
    ckpts = {}
    for run, name in (("bagnet77_lowd", "bagnet77_lowd"), ("saccader", "saccader"),
                      ("saccader_no_pretrain", "saccader"), ("resnet_v2_50", "resnet_v2_50"), ("dram", "dram"),
                      ("nasnet_77", "nasnet_a_large"), ("nasnet_113", "saccader_nasnet")):
        (tmp_path / run).mkdir()
        model = models.from_config(name, config)
        torch.save(model.state_dict(), tmp_path / run / "model.pt")
        ckpts[run] = tmp_path / run
    return config, ckpts, tmp_path


def test_glimpses_job_writes_every_policy_and_t(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    out = tmp_path / "eval" / "seed1.parquet"
    evaluate.evaluate(config, "glimpses", "bagnet77_lowd", 1, ckpts, out)
    frame = results.load(out)
    policies = config["evaluate"]["policies"]
    assert len(frame) == len(policies) * 3 * 3  # policies x T x (top1, top5, area)
    assert set(frame["policy"]) == set(policies) >= {"random", "ordered_logits", "sobel_mean", "sobel_var"}
    assert (frame["n_images"] == 15).all() and (frame["seed"] == 1).all()
    top5 = frame[frame.metric == "top5"]
    assert (top5["value"] == 1.0).all()  # 3 classes: the label is always among the top 5
    area = frame[frame.metric == "area"].pivot(index="num_glimpses", columns="policy", values="value")
    assert (area.diff().dropna() >= 0).all().all() and area.loc[1].eq(81 / 256).all()
    per_image = pd.read_parquet(catalog.images_path(out))  # every measurement, image by image
    assert len(per_image) == len(frame) * 15 and set(per_image["image"]) == set(range(15))
    means = per_image.groupby(["policy", "num_glimpses", "metric"])["value"].mean()
    assert np.allclose(frame.set_index(["policy", "num_glimpses", "metric"])["value"].sort_index(),
                       means.sort_index(), atol=1e-6)
    ex = np.load(evaluate.examples_path(out))
    assert ex["images"].shape == (3, 16, 16, 3) and ex["images"].dtype == np.uint8
    assert ex["boxes_ordered_logits"].shape == (3, 2, 4) and ex["pred_random"].shape == (3,)


def test_saccader_ablation_uses_its_run_and_same_example_images(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame = evaluate.evaluate(config, "glimpses", "saccader_no_pretrain", 0, ckpts, a)
    evaluate.evaluate(config, "glimpses", "bagnet77_lowd", 0, ckpts, b)
    assert set(frame["policy"]) == {"saccader"} and set(frame["model"]) == {"saccader_no_pretrain"}
    ea, eb = np.load(evaluate.examples_path(a)), np.load(evaluate.examples_path(b))
    assert np.array_equal(ea["indices"], eb["indices"]) and np.array_equal(ea["images"], eb["images"])
    # saccader never revisits a cell, so the area grows strictly with T
    area = frame[frame.metric == "area"].sort_values("num_glimpses")["value"].to_numpy()
    assert (np.diff(area) > 0).all()


def test_full_image_bagnet_matches_mean_of_logits(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    frame = evaluate.evaluate(config, "full_image", "bagnet77_lowd", 0, ckpts, tmp_path / "f.parquet")
    assert set(frame["metric"]) == {"top1", "top5"} and (frame["num_glimpses"] == 0).all()
    model = evaluate.load_run(config, "bagnet77_lowd", ckpts)
    from saccader.pipeline.data.folder import build_dataset

    ds = build_dataset(config, "test")
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        acc = (model(x).mean((2, 3)).argmax(1) == y).float().mean().item()
    assert frame.loc[frame.metric == "top1", "value"].item() == pytest.approx(acc)


def test_a_run_trained_channels_last_is_evaluated_channels_last_with_the_same_logits(tiny_setup):
    config, ckpts, _ = tiny_setup
    x = torch.randn(4, 3, 16, 16)
    config["train"]["resnet_v2_50"] = {"model": "resnet_v2_50", "channels_last": False}
    plain = evaluate.load_run(config, "resnet_v2_50", ckpts, torch.device("cpu"))
    config["train"]["resnet_v2_50"]["channels_last"] = True
    fast = evaluate.load_run(config, "resnet_v2_50", ckpts, torch.device("cpu"))
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        torch.testing.assert_close(models.image_logits(fast, x), models.image_logits(plain, x))


def test_missing_checkpoint_is_a_user_error(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    with pytest.raises(UserError, match="--ckpt"):
        evaluate.evaluate(config, "glimpses", "saccader", 0, {}, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_occlusion_job_covers_every_policy(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    frame = evaluate.evaluate(config, "occlusion", "resnet_v2_50", 0, ckpts, tmp_path / "o.parquet")
    policies = {"saccader", "dram", *config["evaluate"]["policies"]}
    assert set(frame["policy"]) == policies and "sobel_var" in policies
    assert set(frame["metric"]) == {"occluded_top1", "occluded_top5", "area"}
    assert len(frame) == len(policies) * 3 * 3 and set(frame["num_glimpses"]) == {1, 2, 3}
    dram_area = frame[(frame.policy == "dram") & (frame.metric == "area") & (frame.num_glimpses == 1)]
    assert dram_area["value"].item() == 64 / 256  # one 8 x 8 DRAM glimpse inside the 16 x 16 image


def test_nasnet_job_reports_both_resolutions(tiny_setup):
    config, ckpts, tmp_path = tiny_setup
    frame = evaluate.evaluate(config, "nasnet", "saccader_nasnet", 0, ckpts, tmp_path / "n.parquet")
    assert set(frame["resolution"]) == {16, 24} and set(frame["policy"]) == {"saccader"}
    area = frame[(frame.metric == "area") & (frame.num_glimpses == 1)].set_index("resolution")["value"]
    assert area[16] == 81 / 256  # int(24/16 * 9) = 13 px patches at 24:
    assert area[24] == pytest.approx(13 * 13 / 576, abs=1e-7)
