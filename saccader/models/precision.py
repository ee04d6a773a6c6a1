"""Float32 regions inside a bf16 autocast forward: sampling, log-probabilities and rankings.

Under autocast the matmuls of the Saccader cell and DRAM's emission layer return bf16 (8-bit mantissa): argmax and
top-k then see ties between nearby logits, samples and log-probabilities of the policy carry bf16 rounding, and
REINFORCE multiplies that rounding into the gradient. These few small tensors are computed in float32 instead. Outside
autocast (fp32 training, evaluation) ``float32`` is a no-op context and ``widen`` returns its input, so fp32
results are bitwise those of code without these regions.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["float32", "widen"]


def float32(tensor: torch.Tensor):
    """A context computing in float32 on ``tensor``'s device: autocast off when it is on there, else nothing."""
    kind = tensor.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def widen(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is in a narrower float type (bf16, fp16); float32 and float64 are kept."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor
