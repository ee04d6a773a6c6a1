"""Micro-batching: k accumulated micro-batches give the update of one step on the whole batch, for every objective;
the REINFORCE baseline stays the one of the whole batch; the batch cuts are checked with one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from saccader.pipeline import train as T
from saccader.errors import UserError
from saccader.models import from_config

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from tiny_runs import STAGES, stage_config  # noqa: E402

STAGE_OF = {"classify": "bagnet", "location_pretrain": "location_pretrain", "reinforce": "saccader",
            "dram_pretrain": "dram_pretrain", "dram": "dram", "glimpse_finetune": "nasnet_finetune"}


@pytest.fixture
def batch_invariant_sampling(monkeypatch):
    """Samplers whose draw for an image does not depend on which other images share its batch (the real ones draw
    a batch's values in one sequence, so cutting the batch moves every draw). They still consume the generator;
    calls without a generator (the test's own data) are left alone."""
    multinomial, randn, rand = torch.multinomial, torch.randn, torch.rand

    def fake_multinomial(probs, n, *args, generator=None, **kw):
        multinomial(probs, n, *args, generator=generator, **kw)
        return probs.argmax(dim=-1, keepdim=True)

    def fake_randn(shape, *args, generator=None, **kw):
        if generator is None:
            return randn(shape, *args, **kw)
        randn(shape, *args, generator=generator, **kw)
        return torch.full(shape, 0.5, *args, **kw)  # not 0: DRAM's REINFORCE gradient vanishes at the mean

    def fake_rand(shape, *args, generator=None, **kw):
        if generator is None:
            return rand(shape, *args, **kw)
        return rand(shape, *args, generator=generator, **kw) * 0 + 0.3

    monkeypatch.setattr(torch, "multinomial", fake_multinomial)
    monkeypatch.setattr(torch, "randn", fake_randn)
    monkeypatch.setattr(torch, "rand", fake_rand)


def _setup(stage, tmp_path, seed=0):
    config, run = stage_config(tmp_path, STAGE_OF[stage])
    rec = {**config["train"][run], "base_size": config["dataset"]["image_size"]}
    torch.manual_seed(seed)
    model = from_config(rec["model"], config)
    with torch.no_grad():  # away from the initialisation, where some layers start at zero (vanishing gradients)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    params = [p for g in T.param_groups(model, rec) for p in g["params"]]
    return model, rec, params


def _grads(model, rec, params, images, labels, micro):
    model.zero_grad(set_to_none=True)
    loss, right = T.accumulate_gradients(model, rec, images, labels, torch.Generator().manual_seed(3), micro)
    return loss, right, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _mixed_labels(model, rec, images):
    """Labels right for the first three images, wrong for the rest: the chunks' accuracies differ (1, 1/2, 0, 0
    for chunks of two), so a per-chunk baseline b would change the REINFORCE gradient."""
    right = [T.step_loss(model, rec, images, torch.full((len(images),), c), torch.Generator().manual_seed(3))[1]
             for c in range(4)]
    pred = torch.stack(right).argmax(dim=0)  # the class each image is predicted (deterministic samplers)
    return torch.where(torch.arange(len(images)) < 3, pred, (pred + 1) % 4)


@pytest.mark.parametrize("stage", T.STAGES)
def test_accumulated_micro_batches_give_the_whole_batch_update(stage, tmp_path, batch_invariant_sampling):
    model, rec, params = _setup(stage, tmp_path)
    model.eval()  # batch-norm statistics are per micro-batch by design: compare with frozen statistics
    torch.manual_seed(1)
    images = torch.randn(8, 3, 16, 16)
    labels = (_mixed_labels(model, rec, images) if stage in T.SAMPLING_STAGES
              else torch.randint(0, 4, (8,)))
    loss1, right1, whole = _grads(model, rec, params, images, labels, 0)
    loss4, right4, micro = _grads(model, rec, params, images, labels, 2)
    assert any(g.abs().sum() > 0 for g in whole)
    torch.testing.assert_close(loss4, loss1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(right4, right1)
    for a, b in zip(micro, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float sums in another order
    if stage in T.SAMPLING_STAGES:  # the rewards vary over the chunks: a per-chunk b would not pass the above
        assert 0 < right1.mean() < 1 and right1[:2].mean() != right1[4:].mean()


@pytest.mark.parametrize("stage", T.SAMPLING_STAGES)
def test_the_baseline_pre_pass_leaves_the_draws_and_batch_norm_as_without_it(stage, tmp_path):
    """Real samplers, training mode: the no-grad pass that computes b over the whole batch rewinds the generator
    and restores the batch-norm statistics, so the training pass draws what it would have drawn without it."""
    model, rec, params = _setup(stage, tmp_path)
    model.train()
    torch.manual_seed(1)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    _, right = T.accumulate_gradients(model, rec, images, labels, gen, 2)
    after = {k: v.clone() for k, v in model.state_dict().items()}

    model.load_state_dict(start)
    ref_gen, ref_right = torch.Generator().manual_seed(3), []
    for x, y in zip(images.split(2), labels.split(2)):  # the training pass alone (any baseline: same samples)
        ref_right.append(T.step_loss(model, rec, x, y, ref_gen, baseline=0.0)[1])
    assert torch.equal(gen.get_state(), ref_gen.get_state())
    assert torch.equal(right, torch.cat(ref_right))
    for key, value in model.state_dict().items():
        assert torch.equal(after[key], value), key  # running statistics updated once per chunk, not twice


def test_no_micro_batch_is_the_single_pass(tmp_path, monkeypatch):
    """0, or a micro-batch of the whole share, runs today's single forward and backward (bitwise the same step)."""
    model, rec, params = _setup("reinforce", tmp_path)
    calls = []
    real = T.step_loss
    monkeypatch.setattr(T, "step_loss", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    _, _, g0 = _grads(model, rec, params, images, labels, 0)
    _, _, g8 = _grads(model, rec, params, images, labels, 8)
    assert calls == [8, 8]
    assert all(torch.equal(a, b) for a, b in zip(g0, g8))
    calls.clear()
    _grads(model, rec, params, images, labels, 4)
    assert calls == [4, 4, 4, 4]  # two for the baseline pre-pass, two with gradients


@pytest.mark.parametrize("batch,world,micro,message", [
    (32, 3, 0, r"batch_size = 32 does not divide among 3 processes"),
    (32, 2, 5, r"micro-batch 5 does not divide the 16 images of each of the 2 processes.*use a micro-batch that "
               r"divides 16"),
    (32, 1, -1, r"micro-batch -1 is negative"),
])
def test_a_batch_that_cannot_be_cut_is_one_line(batch, world, micro, message):
    rec = {"model": "m", "stage": "classify", "lr": 0.1, "batch_size": batch, "epochs": 1}
    with pytest.raises(UserError, match=message) as err:
        T._check_recipe("net", rec, world, micro)
    assert "\n" not in str(err.value)
    assert T.split_problem(32, 4, 8) is None and T.split_problem(32, 2, 0) is None

