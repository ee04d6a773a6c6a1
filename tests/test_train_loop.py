"""The training loop's host side: no wait for the device per step, uint8 batches standardised bitwise as the
transform does, one loader (persistent workers) per run; ``train()`` is the loop of the public ``Session`` that the
plan and the benchmarks time."""

from __future__ import annotations

import pytest
import torch

from saccader.pipeline import train as T
from saccader.pipeline.data.folder import Standardize, build_dataset
from test_train import make_images, recipe, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_images(root, per_class=12)  # 40 training images
    return root


def _host_reads(monkeypatch, config, out):
    """How many times the host read a tensor's value (each a wait for the device on a GPU) in a whole run."""
    count = [0]
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, **k: (count.__setitem__(0, count[0] + 1),
                                                                                   _real(self, *a, **k))[1])
    T.train(config, "bagnet77_lowd", 0, out)
    monkeypatch.undo()
    return count[0]


def test_a_training_step_never_waits_for_the_device(data, tmp_path, monkeypatch):
    """Two runs that differ only in their number of steps per epoch (5 or 10) read tensors on the host equally often:
    the reads are per epoch (checkpoint, log, dev evaluation), none per step."""
    reads = [_host_reads(monkeypatch, tiny_config(data, bagnet77_lowd=recipe(epochs=1, batch_size=b)),
                         tmp_path / str(b)) for b in (8, 4)]
    assert reads[0] == reads[1] and reads[0] > 0


def test_uint8_batches_standardised_on_the_device_equal_the_transform_bitwise(data):
    config = tiny_config(data, bagnet77_lowd=recipe())
    for train in (False, True):
        floats = build_dataset(config, "dev", train=train)
        uint8 = build_dataset(config, "dev", train=train, uint8=True)
        ref = torch.stack([floats.get(i, torch.Generator().manual_seed(i))[0] for i in range(len(floats))])
        raw = torch.stack([uint8.get(i, torch.Generator().manual_seed(i))[0] for i in range(len(uint8))])
        assert raw.dtype == torch.uint8
        std = Standardize(config["dataset"]["mean"], config["dataset"]["std"])
        assert torch.equal(std(raw), ref)


def test_one_loader_per_run_with_persistent_workers(data, tmp_path, monkeypatch):
    config = tiny_config(data, bagnet77_lowd=recipe(epochs=2))
    config["dataset"]["num_workers"] = 1
    made = []
    real = T._loader
    monkeypatch.setattr(T, "_loader", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    T.train(config, "bagnet77_lowd", 0, tmp_path)
    assert len(made) == 1 and made[0].persistent_workers


@pytest.mark.parametrize("run", ["bagnet77_lowd", "saccader_pretrain"])
def test_the_measured_session_steps_are_the_training_loop_bitwise(data, tmp_path, run):
    """What ``saccader plan --cpu`` and the benchmarks time (a Session and its steps) trains the weights ``train()``
    writes, bitwise: the loop they measure is the real one."""
    recipes = {"bagnet77_lowd": recipe(epochs=1), "saccader_pretrain": recipe(
        model="saccader", stage="location_pretrain", init_from=["bagnet77_lowd"], num_glimpses=6, eval_glimpses=3,
        lr=0.5, weight_decay=0.0, nu=0.0, epochs=1, cache_features=True)}
    config = tiny_config(data, **recipes)
    init = {}
    if run != "bagnet77_lowd":
        init["bagnet77_lowd"] = str(tmp_path / "init")
        T.train(config, "bagnet77_lowd", 0, tmp_path / "init")
    T.train(config, run, 0, tmp_path / "real", init)
    session = T.Session(config, run, 0, init=init, device="cpu")
    for _ in session.steps(0):
        pass
    session.evaluate()
    real = torch.load(tmp_path / "real" / "model.pt", weights_only=True)
    assert real.keys() == session.final.state_dict().keys()
    assert all(torch.equal(real[k], v) for k, v in session.final.state_dict().items())
