"""Training loop: every objective runs and learns on a tiny synthetic ImageFolder; recipes, init and errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saccader.pipeline import config as C
from saccader.pipeline import train as T
from saccader.pipeline.config import validate
from saccader.errors import UserError
from saccader.pipeline.io import torch_load
from saccader.models import from_config

TINY_BAGNET = {"blocks": [1, 1], "planes": [4, 8], "expansion": 2, "strides": [2, 1], "kernel3": [1, 1],
               "stem_channels": 4, "lowd_dim": 8}  # RF 9, stride 2: a 4x4 grid on 16x16 images


def make_images(root, per_class: int = 12, classes: int = 4, size: int = 16, seed: int = 0) -> None:
    """A learnable ImageFolder: class c is a bright 5x5 square in quadrant c, on noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", 4)):
        for c in range(classes):
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.uniform(0, 0.3, (size, size, 3))
                y, x = (c // 2) * 8 + rng.integers(0, 3), (c % 2) * 8 + rng.integers(0, 3)
                img[y:y + 5, x:x + 5] = 1.0
                Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.png")


def recipe(**kw) -> dict:
    base = {"model": "bagnet77_lowd", "stage": "classify", "init_from": [], "lr": 0.05, "paper_lr": 0.5,
            "batch_size": 8, "paper_batch_size": 2048, "epochs": 2, "warmup_epochs": 0, "weight_decay": 8e-5}
    return {**base, **kw}


def tiny_config(root, **runs) -> dict:
    config = {"seeds": [0], "dataset": {"name": "digits", "root": str(root), "num_classes": 4, "image_size": 16,
                                        "high_res_size": 24, "dev_size": 8, "mean": [0.2] * 3, "std": [0.3] * 3,
                                        "crop_padding_fraction": 0.0, "train_crop_scale": [0.9, 1.0],
                                        "hflip": False},
              "models": {"bagnet77_lowd": TINY_BAGNET, "saccader": TINY_BAGNET,
                         "saccader_no_attention": {k: v for k, v in TINY_BAGNET.items()}},
              "train": runs}
    return validate(config)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    make_images(root)
    return root


@pytest.fixture(scope="module")
def bagnet_run(data, tmp_path_factory):
    config = tiny_config(data, bagnet77_lowd=recipe(epochs=6, lr=0.1, warmup_epochs=1))
    out = tmp_path_factory.mktemp("bagnet")
    T.train(config, "bagnet77_lowd", 0, out)
    return config, out


def test_classify_learns_and_writes_outputs(bagnet_run):
    _, out = bagnet_run
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(log.epoch) == list(range(1, 7))
    assert {"loss", "dev_top1", "dev_top5", "lr", "images_per_s"} <= set(log.columns)
    assert log.loss.iloc[-1] < log.loss.iloc[0]
    assert log.dev_top1.iloc[-1] > 0.5  # chance is 0.25
    assert log.lr.iloc[-1] == 0.0  # cosine ends at 0 after the last step
    assert (log.dev_top5 == 1.0).all()  # 4 classes: top-5 holds them all
    state = torch_load(out / "model.pt")
    assert "classifier.weight" in state
    assert (out / "checkpoint.pt").exists()


def test_saccader_stages_run_and_start_from_their_init(data, bagnet_run, tmp_path):
    config, bagnet_dir = bagnet_run
    bag = torch_load(bagnet_dir / "model.pt")
    runs = {"saccader_pretrain": recipe(model="saccader", stage="location_pretrain", init_from=["bagnet77_lowd"],
                                        num_glimpses=6, eval_glimpses=3, lr=0.5, weight_decay=0.0, nu=0.0,
                                        epochs=8, cache_features=True),
            "saccader": recipe(model="saccader", stage="reinforce", init_from=["saccader_pretrain"], num_glimpses=3,
                               mc_samples=2, lr=0.01, nu=8e-5),
            "saccader_no_attention": recipe(model="saccader_no_attention", stage="reinforce",
                                            init_from=["bagnet77_lowd"], num_glimpses=3, lr=0.01, epochs=1)}
    config = tiny_config(data, **runs)
    pre = T.train(config, "saccader_pretrain", 0, tmp_path / "pre", {"bagnet77_lowd": str(bagnet_dir)})
    pre_state = torch_load(pre)
    # eq 5 trains only the location path: the representation is exactly the BagNet's, BN statistics included.
    for key, value in bag.items():
        assert torch.equal(pre_state["representation." + key], value), key
    log = pd.read_parquet(tmp_path / "pre" / "train_log.parquet")
    assert len(log) == 8 and log.loss.notna().all()
    torch.manual_seed(0)  # the run's own seed: the same initial location weights
    fresh = from_config("saccader", config).state_dict()
    assert not torch.equal(pre_state["mix.weight"], fresh["mix.weight"])
    assert not torch.equal(pre_state["a"], fresh["a"])
    full = T.train(config, "saccader", 0, tmp_path / "rl", {"saccader_pretrain": str(tmp_path / "pre")})
    assert not torch.equal(torch_load(full)["representation.classifier.weight"], bag["classifier.weight"])
    log = pd.read_parquet(tmp_path / "rl" / "train_log.parquet")
    assert log.dev_top1.iloc[-1] > 0.25
    T.train(config, "saccader_no_attention", 0, tmp_path / "abl", {"bagnet77_lowd": str(bagnet_dir)})
    config["train"]["saccader_pretrain"].update(cache_features=False, epochs=1)  # the uncached path of eq 5
    uncached = torch_load(T.train(config, "saccader_pretrain", 0, tmp_path / "pre2",
                                  {"bagnet77_lowd": str(bagnet_dir)}))
    assert torch.equal(uncached["representation.classifier.weight"], bag["classifier.weight"])


def test_init_runs_and_missing_init(data):
    config = tiny_config(data, a=recipe(), b=recipe(init_from=["a"]))
    assert C.init_runs("b", config) == ["a"] and C.init_runs("a", config) == []
    with pytest.raises(UserError, match="--init a=DIR"):
        T.train(config, "b", 0, "/nonexistent")
    with pytest.raises(UserError, match="unknown training run 'c'"):
        C.init_runs("c", config)


def test_nan_loss_stops_with_user_error_and_keeps_checkpoint(data, tmp_path):
    config = tiny_config(data, bagnet77_lowd=recipe(epochs=3, lr=1e30, checkpoint_every=1))
    with pytest.raises(UserError, match=r"(loss is (nan|inf)|weights became non-finite).*last good checkpoint"):
        T.train(config, "bagnet77_lowd", 0, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.pt").exists()


def test_schema_rejects_unknown_recipe_key(data):
    bad = recipe(lr_typo=1.0)
    with pytest.raises(UserError, match="lr_typo"):
        tiny_config(data, x=bad)


def test_shipped_configs_are_consistent():
    """Every shipped recipe validates and starts only from runs that exist; the paper-scale recipes use the paper's
    rates at the paper's batch sizes (the embedded ones document each deviation from linear scaling in a comment)."""
    from saccader.pipeline.config import load_experiment

    for path in ("config.yaml", "config/embedded.yaml", "config/smoke.yaml"):
        config = load_experiment(path)
        runs = config["train"]
        for name, rec in runs.items():
            assert set(rec["init_from"]) <= set(runs), (path, name)
        if path == "config.yaml":
            for name, rec in runs.items():
                assert math.isclose(rec["lr"], rec["paper_lr"] * rec["batch_size"] / rec["paper_batch_size"]), name


def test_nasnet_drop_path_progress_follows_the_step(data, monkeypatch, tmp_path):
    """The loop tells NASNet how far along drop_path_epochs it is before every step (resumable: a function of the
    step alone), and a run without drop_path_epochs never turns it on."""
    seen = []
    real = T.set_drop_path_progress
    monkeypatch.setattr(T, "set_drop_path_progress", lambda model, p: (seen.append(p), real(model, p)))
    models = {"nasnet_a_large": {"stem_size": 8, "num_features": 96}}
    config = tiny_config(data, nasnet=recipe(model="nasnet_a_large", drop_path_epochs=4.0, channels_last=True))
    config["models"].update(models)
    T.train(config, "nasnet", 0, tmp_path / "a")
    steps = len(seen) // 2  # 2 epochs
    assert seen == pytest.approx([s / (4 * steps) for s in range(2 * steps)])
    seen.clear()
    config = tiny_config(data, nasnet=recipe(model="nasnet_a_large"))
    config["models"].update(models)
    T.train(config, "nasnet", 0, tmp_path / "b")
    assert seen == []


def test_dev_evaluations_do_not_change_the_trained_weights(data, tmp_path):
    """Evaluating on dev after every epoch or only at the end trains the same weights (NASNet: dropout draws from
    the global RNG, which a dev DataLoader pass would otherwise advance)."""
    models = {"nasnet_a_large": {"stem_size": 8, "num_features": 96, "cells_per_stack": 2}}
    weights = []
    for every in (1, 2):
        config = tiny_config(data, nasnet=recipe(model="nasnet_a_large", eval_every=every))
        config["models"].update(models)
        weights.append(torch.load(T.train(config, "nasnet", 0, tmp_path / str(every)), weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (False, False)])
def test_bf16_is_a_recipe_choice_that_needs_native_bf16_on_cpu(monkeypatch, caplog, amx, avx512_bf16):
    """bf16 defaults to CUDA only; on CPU a recipe's bf16 applies only where the CPU has AMX tiles or AVX512-BF16."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert T.use_bf16({}, cuda) and not T.use_bf16({}, cpu) and not T.use_bf16({"bf16": False}, cuda)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    with caplog.at_level("WARNING", logger="saccader.pipeline.train"):
        assert T.use_bf16({"bf16": True}, cpu) == (amx or avx512_bf16)
    assert ("neither AMX tiles nor AVX512-BF16" in caplog.text) == (not (amx or avx512_bf16))


def test_bf16_training_autocasts_the_forward(data, monkeypatch, tmp_path):
    """With bf16 on, the training forward runs under CPU autocast (the weights stay fp32 and differ from an fp32
    run of the same seed); without it, it does not."""
    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: True)  # emulated where the CPU has no native bf16
    seen = []
    real = T.step_loss
    monkeypatch.setattr(T, "step_loss", lambda *a, **k: (seen.append(torch.is_autocast_enabled("cpu")), real(*a, **k))[1])
    weights = {}
    for bf16 in (False, True):
        seen.clear()
        config = tiny_config(data, bagnet77_lowd=recipe(epochs=1, bf16=bf16))
        weights[bf16] = torch.load(T.train(config, "bagnet77_lowd", 0, tmp_path / str(bf16)), weights_only=True)
        assert seen and set(seen) == {bf16}
    assert all(v.dtype == torch.float32 for v in weights[True].values() if v.is_floating_point())
    assert any(not torch.equal(weights[False][k], weights[True][k]) for k in weights[False])


def test_dram_hybrid_step_unrolls_its_monte_carlo_samples_as_one_batch(monkeypatch):
    """The S = 2 trajectories of the hybrid loss run as one unroll of the batch tiled S times: each image gets two
    different sampled location sequences, and the reward and baseline cover both."""
    from baselines.dram import DRAM

    torch.manual_seed(0)
    model = DRAM(num_classes=4, glimpse_size=6, layers=(1,), widths=(4,), strides=(1,), stem_channels=4,
                 lstm_units=8, location_units=8, bn_momentum=0.1).train()
    calls = []
    real = DRAM.forward
    monkeypatch.setattr(DRAM, "forward", lambda self, x, *a, **k: calls.append((x, real(self, x, *a, **k)))
                        or calls[-1][1])
    rec = recipe(model="dram", stage="dram", num_glimpses=3, mc_samples=2, reinforce_weight=0.1)
    x, labels = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0])
    loss, rewards = T.step_loss(model, rec, x, labels, torch.Generator().manual_seed(0))
    (images, out), = calls
    assert torch.equal(images, torch.cat([x, x]))
    first, second = out["locations"].chunk(2)
    assert not torch.allclose(first, second)
    expected = ((out["logits"].argmax(1) == torch.cat([labels, labels])).float().view(2, 5)).mean(0)
    assert torch.equal(rewards, expected)
    loss.backward()
    assert model.emission[0].weight.grad.abs().sum() > 0  # REINFORCE reaches the location weights


@pytest.mark.parametrize("budget, steps", [(2, 2), (50, 5), (None, 5)])
def test_steps_per_epoch_caps_an_epoch_never_extends_it(data, tmp_path, budget, steps):
    # 48 train images - 8 dev = 40 at batch 8: 5 steps an epoch; the wet run's budget cuts an epoch short
    budgets = {} if budget is None else {"steps_per_epoch": budget}
    T.train(tiny_config(data, bagnet77_lowd=recipe(epochs=2, **budgets)), "bagnet77_lowd", 0, tmp_path)
    assert torch_load(tmp_path / "checkpoint.pt")["scheduler"]["last_epoch"] == 2 * steps  # optimiser steps taken
