"""Learning-rate schedules of Appendix C.

Every model but NASNet: cosine decay with a linear warm-up over the first 10 epochs (official
``utils.cosine_decay_with_warmup``: linear from 0 to the base rate over the warm-up steps, then
``0.5 * base * (1 + cos(pi * (step - warmup) / (total - warmup)))``, and 0 after ``total``).
NASNet: linear warm-up to 1.6 over 10 epochs, then the rate is multiplied by 0.975 once per epoch.

The schedules are multiplicative factors for ``torch.optim.lr_scheduler.LambdaLR`` so that the scheduler's state
(``last_epoch``, the step counter) is checkpointed with the optimizer.
"""

from __future__ import annotations

import math
from functools import partial

import torch

__all__ = ["cosine_with_warmup", "exponential_with_warmup", "build_scheduler"]


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int) -> float:
    """Factor of the base rate at ``step`` (Appendix C; official ``cosine_decay_with_warmup``)."""
    if step >= total_steps:
        return 0.0
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def exponential_with_warmup(step: int, warmup_steps: int, steps_per_epoch: int, decay: float) -> float:
    """Factor at ``step`` for NASNet (Appendix C): linear warm-up, then ``decay`` per completed epoch after it."""
    if step < warmup_steps:
        return step / warmup_steps
    return decay ** ((step - warmup_steps) // steps_per_epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: dict, steps_per_epoch: int):
    """The LambdaLR of a recipe: ``schedule`` is ``cosine`` (default) or ``exponential`` (NASNet)."""
    total = recipe["epochs"] * steps_per_epoch
    warmup = min(round(recipe.get("warmup_epochs", 0) * steps_per_epoch), total)
    if recipe.get("schedule", "cosine") == "exponential":
        factor = partial(exponential_with_warmup, warmup_steps=warmup, steps_per_epoch=steps_per_epoch,
                         decay=recipe.get("lr_decay", 0.975))
    else:
        factor = partial(cosine_with_warmup, total_steps=total, warmup_steps=warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
