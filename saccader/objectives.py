"""The training objectives of the Saccader and its classifiers (Section 3.2, Appendix C), one class per stage.

A stage (``train.<run>.stage``, declared in ``saccader.catalog.STAGES``) names one ``Objective``: the loss of a
minibatch with the per-image correctness the training log sums, and the test-time logits of the model it trains (dev
accuracy). Each class is registered with ``@objective(stage)`` next to its model's code: the Saccader's and the
full-image classifiers' here, DRAM's in ``baselines/dram.py``. The training loop (``saccader.pipeline.train``) only
looks them up.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from saccader import losses
from saccader.catalog import objective
from saccader.models import class_logits

__all__ = ["Objective", "Classify", "LocationPretrain", "Reinforce", "GlimpseFinetune", "monte_carlo"]


class Objective:
    """One stage's objective. ``global_mean`` averages a scalar over the processes of a distributed run (the
    training loop passes ``saccader.pipeline.distributed.all_reduce_mean``): the REINFORCE baseline b is the accuracy
    over the global minibatch. ``samples``: b depends on the sampled trajectories (micro-batches need a pre-pass)."""

    samples = False

    def __init__(self, global_mean: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
        self.global_mean = global_mean

    def loss(self, model: nn.Module, rec: dict, images, labels: torch.Tensor, generator: torch.Generator,
             baseline: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss of the minibatch, per-image correctness or mean reward)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, rec: dict, images: torch.Tensor) -> torch.Tensor:
        """Test-time class logits (N, C) of the trained model."""
        raise NotImplementedError


def monte_carlo(outs: list[dict], labels: torch.Tensor, loss_fn, reinforce_weight: float, global_mean,
                baseline=None):
    """Eq 6 / the DRAM hybrid loss over S sampled trajectories: stacked logits and log-probs, baseline b = the
    accuracy over the global minibatch (unless given); returns (loss, per-image mean reward)."""
    logits = torch.stack([o["logits"] for o in outs])
    log_probs = torch.stack([o["log_probs"] for o in outs])
    if baseline is None:
        baseline = global_mean(losses.correct(logits, labels.expand(len(outs), -1)).mean())
    loss, rewards = loss_fn(logits, log_probs, labels, baseline, reinforce_weight)
    return loss, rewards.mean(dim=0)


@objective("classify")
class Classify(Objective):
    """Eq 4 / eq 7: cross-entropy of the full-image logits (BagNet-77(-lowD) on mean logits, ResNet-v2-50, NASNet)."""

    def logits(self, model, rec, images):
        return class_logits(model(images))

    def loss(self, model, rec, images, labels, generator, baseline=None):
        logits = self.logits(model, rec, images)
        return losses.classification_loss(logits, labels, rec.get("label_smoothing", 0.0)), losses.correct(logits,
                                                                                                               labels)

    def predict(self, model, rec, images):
        return self.logits(model, rec, images)


class _Passthrough(nn.Module):
    def forward_features(self, cached: dict) -> dict:
        return cached


@contextlib.contextmanager
def _cached_representation(model: nn.Module):
    """Run ``model.backbone`` on cached representation outputs: the frozen representation network is swapped for a
    pass-through for the duration of the call, so the attention net, mixing conv and cell run as in the model."""
    representation = model.representation
    model.representation = _Passthrough()
    try:
        yield
    finally:
        model.representation = representation


class _GreedyRollout(Objective):
    """A Saccader's test-time logits: the greedy (argmax) policy over ``eval_glimpses`` (default: the training T)."""

    def predict(self, model, rec, images):
        out = model.backbone(images)
        t = rec.get("eval_glimpses", rec["num_glimpses"])
        return model.rollout(out["mixed"], out["logits2d"], t, sample=False)["logits"]


@objective("location_pretrain")
class LocationPretrain(_GreedyRollout):
    """Eq 5: the location path learns to emit the cells in descending order of logit, T = 12, the representation
    network frozen (``images`` may be its cached outputs, ``cache_features``); correctness = the fraction of target
    cells the policy would pick."""

    def loss(self, model, rec, images, labels, generator, baseline=None):
        if isinstance(images, dict):  # representation outputs computed once (``cache_features``)
            with _cached_representation(model):
                out = model.backbone(dict(images))
        else:
            out = model.backbone(images)
        targets = losses.ordered_logits_targets(out["logits2d"], rec["num_glimpses"])
        # The cell state follows the targets (eq 5 conditions each step on C^{t-1} of the target sequence).
        roll = model.rollout(out["mixed"], out["logits2d"], rec["num_glimpses"], targets=targets)
        hits = (roll["policy_logits"].argmax(dim=2) == targets).float().mean(dim=1)  # targets the policy would pick
        return losses.location_pretraining_loss(roll["policy_logits"], targets), hits


@objective("reinforce")
class Reinforce(_GreedyRollout):
    """Eq 6: REINFORCE over S sampled trajectories (``mc_samples``) sharing one backbone pass, plus cross-entropy,
    T = 6."""

    samples = True

    def loss(self, model, rec, images, labels, generator, baseline=None):
        out = model.backbone(images)
        rolls = [model.rollout(out["mixed"], out["logits2d"], rec["num_glimpses"], sample=True, generator=generator)
                 for _ in range(rec.get("mc_samples", 2))]
        return monte_carlo(rolls, labels, losses.saccader_loss, rec.get("reinforce_weight", 1.0), self.global_mean,
                           baseline)


@objective("glimpse_finetune")
class GlimpseFinetune(Classify):
    """NASNet-77 / NASNet-113 (Tables Supp.2-3): cross-entropy of a Saccader-NASNet whose frozen Saccader picks the
    patches its NASNet classifies."""

    def logits(self, model, rec, images):
        return class_logits(model(*_base_and_high_res(images, model, rec)))


def _base_and_high_res(images: torch.Tensor, model: nn.Module, rec: dict):
    """Arguments of a Saccader-NASNet: the Saccader sees the image at its base resolution; for ``high_res`` runs
    (NASNet-113) the loader gives the high-resolution image, resized here (bicubic, antialiased, like the data
    transform) for the Saccader, and the NASNet crops the high-resolution one."""
    if rec.get("resolution") != "high_res":
        return images, rec["num_glimpses"]
    base = F.interpolate(images, size=(rec["base_size"],) * 2, mode="bicubic", antialias=True, align_corners=False)
    return base, rec["num_glimpses"], images
