"""Losses (eqs 4-6) and schedules (Appendix C) against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from saccader import losses, schedule


def test_mean_logits_is_normalised_geometric_mean_of_probabilities():  # eq 4
    logits2d = torch.randn(3, 5, 4, 4)
    probs = torch.softmax(logits2d, dim=1)
    geo = probs.log().mean(dim=(2, 3)).exp()
    torch.testing.assert_close(torch.softmax(losses.mean_logits(logits2d), 1), geo / geo.sum(1, keepdim=True))


def test_ordered_logits_targets_rank_cells_by_predicted_class_logit():
    logits2d = torch.randn(2, 3, 3, 3)
    targets = losses.ordered_logits_targets(logits2d, 4)
    for n in range(2):
        pred = logits2d[n].mean(dim=(1, 2)).argmax()
        expect = torch.argsort(logits2d[n, pred].flatten(), descending=True)[:4]
        assert torch.equal(targets[n], expect)


def test_location_pretraining_loss_is_mean_cross_entropy_over_glimpses():  # eq 5
    r = torch.randn(2, 3, 9)
    t = torch.randint(0, 9, (2, 3))
    expect = -torch.log_softmax(r, -1).gather(2, t[..., None]).mean()
    torch.testing.assert_close(losses.location_pretraining_loss(r, t), expect)


def test_saccader_loss_reinforce_gradient_and_baseline():  # eq 6
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]])  # (S=2, N=2, C=2)
    labels = torch.tensor([0, 1])
    log_probs = torch.zeros(2, 2, 3, requires_grad=True)
    loss, rewards = losses.saccader_loss(logits, log_probs, labels)
    assert rewards.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    loss.backward()
    b = 0.75  # minibatch accuracy
    expect = -(rewards - b)[..., None].expand(2, 2, 3) / 12
    torch.testing.assert_close(log_probs.grad, expect)
    xent = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.repeat(2))
    torch.testing.assert_close(loss, xent)  # log pi = 0: only the CE term remains


def test_cosine_schedule_matches_official_formula():
    assert schedule.cosine_with_warmup(0, 100, 0) == 1.0  # official test: base rate at step 0 without warm-up
    assert schedule.cosine_with_warmup(100, 100, 10) == 0.0
    assert schedule.cosine_with_warmup(5, 100, 10) == 0.5
    assert schedule.cosine_with_warmup(55, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_exponential_schedule_decays_per_epoch_after_warmup():
    f = [schedule.exponential_with_warmup(s, warmup_steps=10, steps_per_epoch=5, decay=0.975) for s in range(25)]
    assert f[5] == 0.5 and f[10] == 1.0 and f[14] == 1.0 and f[15] == 0.975 and f[24] == 0.975 ** 2


def test_build_scheduler_steps_lambda_lr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.4)
    sched = schedule.build_scheduler(opt, {"epochs": 4, "warmup_epochs": 1}, steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 0.2, 0.4] and lrs[-1] < 0.1 and opt.param_groups[0]["lr"] == 0.0
