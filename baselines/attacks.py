"""Adversarial robustness (Appendix D, Table Supp.6): the attacked function and the attacks (PGD, SPSA at l-inf
eps = 2/255). The job that runs them on a trained model is ``saccader attack`` (``saccader/pipeline/attack.py``).

A fixed random subset of the reporting split (``attack.subset_size``; 3,906 images at paper scale) is attacked in
[0, 1] pixel space: images are clipped to [0, 1] (clean accuracy is measured after clipping) and standardisation
happens inside the attacked model. PGD is CleverHans 4's ``projected_gradient_descent`` (step 0.5/255, 300
iterations, random start); for the Saccader and DRAM the gradient flows through the classification path at the
chosen locations, which are recomputed at every forward and are themselves not differentiable. SPSA follows
Uesato et al. 2018 (App. B: 8192 evaluations per step, 100 steps, delta 0.01, Adam lr 0.01, margin loss, early stop
on success), batched over images, with the fix for CleverHans issue 1249 (``spsa`` below).
"""

from __future__ import annotations

import numpy as np
import torch
from cleverhans.torch.attacks.spsa import _margin_logit_loss, _project_perturbation
from torch import nn

from saccader.models import image_logits

__all__ = ["Standardized", "spsa", "spsa_gradient"]


class Standardized(nn.Module):
    """The attacked function: [0, 1] pixels -> class logits, standardising inside (reference-notes section 6)."""

    def __init__(self, model: nn.Module, mean, std, num_glimpses: int | None = None, bf16: bool = False):
        super().__init__()
        self.model, self.num_glimpses, self.bf16 = model, num_glimpses, bf16
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in float32 whatever the precision of the network: the attack losses (PGD's cross-entropy, SPSA's
        margin) and their gradients with respect to ``x`` are then float32 arithmetic on float32 logits."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return image_logits(self.model, (x - self.mean) / self.std, self.num_glimpses).float()


def spsa_gradient(loss_fn, x: torch.Tensor, perturbation: torch.Tensor, delta: float, samples: int,
                  eval_batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SPSA estimate of d loss / d perturbation at ``x + perturbation``, for a batch of images at once.

    ``samples`` model evaluations per image: samples/2 Rademacher directions v, each evaluated at +delta v and
    -delta v (antithetic pairs, as the TF CleverHans ``SPSAAdam``: num_samples // 2 mirrored), estimate
    mean(loss * v) / delta. This is the fix of CleverHans issue 1249: upstream torch ``_compute_spsa_gradient`` is
    called with ``x`` and then evaluates ``loss_fn(x + delta_x)`` where ``loss_fn(p)`` is ``model(x + p)`` -- the
    model sees 2x + delta_x, not the current adversarial point. Here the loss is evaluated at
    x + perturbation +- delta v. Directions are drawn in chunks so at most ``eval_batch_size`` inputs are in memory.

    Args:
        loss_fn: (x_batch (M, ...), image_index (M,)) -> per-input loss (M,).
        x, perturbation: (B, ...) clean images and current perturbations.
    """
    b, shape = x.shape[0], x.shape[1:]
    pairs = max(1, samples // 2)
    chunk = max(1, eval_batch_size // (2 * b))
    point = (x + perturbation).detach()
    grad = torch.zeros_like(point)
    index = torch.arange(b, device=x.device)
    for start in range(0, pairs, chunk):
        k = min(chunk, pairs - start)
        # Drawn where the queries are, from a generator of that device: a CPU draw plus copy is ~77 M values per
        # 1024-query chunk at paper scale. On CPU this is the same call as a CPU draw (bitwise the same stream).
        v = torch.randint(0, 2, (b, k, *shape), generator=generator, device=point.device).to(point) * 2 - 1
        queries = torch.cat([point.unsqueeze(1) + delta * v, point.unsqueeze(1) - delta * v], dim=1)
        with torch.no_grad():
            loss = loss_fn(queries.flatten(0, 1), index.repeat_interleave(2 * k)).view(b, 2 * k)
        signs = torch.cat([v, -v], dim=1)
        grad += (loss.view(b, 2 * k, *([1] * len(shape))) * signs).sum(dim=1)
    return grad / (2 * pairs * delta)


def spsa(model_fn, x: torch.Tensor, y: torch.Tensor, eps: float, nb_iter: int, *, clip_min: float = 0.0,
         clip_max: float = 1.0, learning_rate: float = 0.01, delta: float = 0.01, spsa_samples: int = 128,
         early_stop_loss_threshold: float | None = 0.0, eval_batch_size: int = 8192,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted l-inf SPSA (Uesato et al. 2018) on a batch of images; returns the adversarial images.

    CleverHans 4's torch ``spsa`` minus its bug (issue 1249, see ``spsa_gradient``) and its one-image-at-a-time
    loop: every image keeps its own perturbation and Adam moments (Adam is element-wise, so one optimiser over the
    batch equals one per image), and an image whose margin loss falls below ``early_stop_loss_threshold`` stops
    being queried and updated -- the per-image early stop of the upstream loop.
    """
    if eps == 0:
        return x.clone()
    perturbation = ((torch.rand(x.shape, generator=generator, device=x.device).to(x) * 2 - 1) * eps)
    _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
    optimizer = torch.optim.Adam([perturbation], lr=learning_rate)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)

    def loss_fn(inputs, index):
        # untargeted margin: correct logit - best other logit (upstream: -_margin_logit_loss)
        return -_margin_logit_loss(model_fn(inputs), y[index])

    early_stop = early_stop_loss_threshold is not None
    everyone = torch.arange(len(x), device=x.device)
    for _ in range(nb_iter):
        # With early stop the active set decides which images are queried: one host wait an iteration (none in the
        # chunks of spsa_gradient); without it every image is queried and nothing waits.
        idx = active.nonzero().squeeze(1) if early_stop else everyone
        grad = torch.zeros_like(perturbation)
        grad[idx] = spsa_gradient(lambda q, i: loss_fn(q, idx[i]), x[idx], perturbation[idx].detach(), delta,
                                  spsa_samples, eval_batch_size, generator)
        if early_stop:
            frozen = perturbation.detach()[~active].clone()
        perturbation.grad = grad
        optimizer.step()
        with torch.no_grad():
            if early_stop:
                perturbation[~active] = frozen
            _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
            if early_stop:
                loss = loss_fn(x[idx] + perturbation[idx], idx)
                active[idx[loss < early_stop_loss_threshold]] = False
        if early_stop and not active.any():
            break
    return torch.clamp((x + perturbation).detach(), clip_min, clip_max)
