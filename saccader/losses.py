"""Training objectives of the paper: eqs 4 and 7 (cross-entropy), 5 (location pre-training), 6 (REINFORCE + CE), and
the DRAM hybrid loss (Appendix C, Ba et al. 2014).

The l2 terms (lambda/2 |theta|^2, nu/2 |eta|^2) are not here: their gradient is lambda*theta, which is exactly SGD's
``weight_decay``, so ``saccader.pipeline.train`` puts lambda and nu on the optimizer's parameter groups.

Reductions follow the official loss functions (google-research saccader/visual_attention/losses.py): eq 5 and the
REINFORCE term of eq 6 are *means* over glimpses, trajectories and images, where the paper writes a sum over t. The
two differ by the constant T, which the learning rates of Tables Supp.4-5 were tuned with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saccader.models.precision import widen

__all__ = ["mean_logits", "classification_loss", "ordered_logits_targets", "location_pretraining_loss",
           "correct", "reinforce_loss", "saccader_loss", "dram_hybrid_loss"]


def mean_logits(logits2d: torch.Tensor) -> torch.Tensor:
    """Image logits of a BagNet: the spatial mean of the per-location logits (N, C, h, w) -> (N, C).

    The softmax of the mean logit is the normalised geometric mean of the per-location probabilities of eq 4.
    """
    return logits2d.mean(dim=(2, 3))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of eq 4 / eq 7 (label smoothing 0.1 for NASNet, Appendix C). 4-D logits are BagNet logits2d."""
    if logits.dim() == 4:
        logits = mean_logits(logits)
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


@torch.no_grad()
def ordered_logits_targets(logits2d: torch.Tensor, num_glimpses: int) -> torch.Tensor:
    """Target locations of eq 5: the ``num_glimpses`` cells in descending order of logit (N, T) flat indices.

    As the official ``engineered_policies(..., "ordered_logits")``, a cell is ranked by the logit of the image-level
    predicted class (argmax of the mean logits), each cell used once. Ranked in float32: under bf16 autocast the
    logits of neighbouring cells tie, and top-k would order them by index, not by evidence.
    """
    h, w = logits2d.shape[-2:]
    if not 1 <= num_glimpses <= h * w:  # topk would fail with "selected index k out of range"
        from saccader.errors import UserError

        raise UserError(f"num_glimpses = {num_glimpses} is outside 1..{h * w} (the {h}x{w} location grid)",
                        "ask for at most one glimpse per location")
    logits2d = widen(logits2d)
    pred = mean_logits(logits2d).argmax(dim=1)
    score = logits2d[torch.arange(len(pred), device=pred.device), pred].flatten(1)  # (N, h*w)
    return score.topk(num_glimpses, dim=1, sorted=True).indices


def location_pretraining_loss(policy_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq 5 without the nu term: cross-entropy between the masked location logits R (N, T, hw) and the target cells
    (N, T), averaged over glimpses and images (official ``saccader_pretraining_loss``).

    The visited mask of R follows the target cells (``Saccader.rollout(targets=...)``), as eq 5 conditions each step
    on the state of the target sequence, so no target is ever masked. (The released code masks the model's own
    sampled cells instead, which puts an already-visited target at -1e5 and adds ~1e5 to the loss value.)
    """
    return F.cross_entropy(policy_logits.flatten(0, 1).float(), targets.flatten())


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reward of eq 6: 1 where the final prediction is right, else 0 (float)."""
    return (logits.argmax(dim=-1) == labels).float()


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor | float) -> torch.Tensor:
    """REINFORCE term of eq 6: -mean((r - b) * log pi(l^t)) over trajectories, images and glimpses.

    Args:
        log_probs: (..., T) log-probability of each sampled location.
        rewards: (...) reward of each trajectory (no gradient flows through it).
        baseline: b, the minibatch accuracy (a constant).
    """
    advantage = (rewards - baseline).detach()
    return -(advantage.unsqueeze(-1) * log_probs.float()).mean()


def saccader_loss(logits: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor,
                  baseline: torch.Tensor | float | None = None, reinforce_weight: float = 1.0):
    """Eq 6 without the l2 terms, for S trajectories stacked on the first axis.

    Args:
        logits: (S, N, C) final logits of each trajectory (mean of the glimpse logits).
        log_probs: (S, N, T) log pi of the sampled locations.
        labels: (N,) targets.
        baseline: b; by default the accuracy over this minibatch's S*N trajectories. Data-parallel training passes the
            accuracy over the global batch so that every replica uses the same b.

    Returns:
        (loss, rewards (S, N)).
    """
    labels_s = labels.expand(logits.shape[0], -1)
    rewards = correct(logits, labels_s)
    b = rewards.mean() if baseline is None else baseline
    xent = F.cross_entropy(logits.flatten(0, 1).float(), labels_s.flatten())
    return xent + reinforce_weight * reinforce_loss(log_probs, rewards, b), rewards


def dram_hybrid_loss(logits: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor,
                     baseline: torch.Tensor | float | None = None, reinforce_weight: float = 0.1):
    """The DRAM hybrid loss (Ba et al. 2014; Appendix C): cross-entropy of the final prediction plus
    ``reinforce_weight`` (0.1) times REINFORCE with Gaussian location log-probabilities and the accuracy baseline.
    Shapes as :func:`saccader_loss` (S Monte Carlo samples first)."""
    return saccader_loss(logits, log_probs, labels, baseline, reinforce_weight)
