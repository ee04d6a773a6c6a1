"""Engineered glimpse policies of Section 4.1 (Figure 3, 4c-d, 5) on a BagNet-77-lowD location grid.

Each policy is a function ``fn(k, cells: Cells)`` declared with ``@saccader.catalog.policy(name, label=...,
order=...)``, here or in a module of its own in this folder (``center.py``); the catalog finds it there, and
``evaluate.policies`` of the config names the ones an experiment runs. Every policy returns, per image, K distinct
flat cell indices ``i * w + j`` of the ``(h, w)`` grid of ``logits2d``, ordered from the first glimpse to the last.
Because each policy ranks cells once and takes the top K, the first T of its K glimpses are exactly its T-glimpse
choice, so one call with K = T_max serves every T <= T_max.
Classification is the same for all of them and for the Saccader (reference-notes section 2, step 8): the mean over
the chosen cells of the raw ``logits2d`` vectors.

Sources: official code ``saccader.engineered_policies`` (reference-notes section 3), paper Section 4.1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from saccader import catalog
from saccader.catalog import policy
from saccader.errors import UserError

__all__ = ["POLICIES", "Cells", "check_glimpses", "ordered_logits", "sobel_edges", "sobel_scores", "sobel_mean",
           "sobel_var", "random_policy", "choose", "gather_logits", "cumulative_logits"]

POLICIES = tuple(catalog.engineered_policies())  # those of this folder, in figure order


class Cells(NamedTuple):
    """What a policy may look at on one batch: the per-cell logits (N, C, h, w) of BagNet-77-lowD, the standardised
    images (N, 3, H, W), the side ``patch`` and ``stride`` in pixels of a cell's receptive field, and the generator
    of a random policy (a generator of the images' device)."""

    logits2d: torch.Tensor
    images: torch.Tensor
    patch: int
    stride: int
    generator: torch.Generator | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.logits2d.shape[2:])


def check_glimpses(k: int, cells: int) -> None:
    """Refuse more glimpses than a policy can pick without repeating a location."""
    if k > cells:
        raise UserError(f"cannot pick {k} distinct glimpses from a grid of {cells} locations",
                        "lower evaluate.max_glimpses")


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the k largest cells of (N, h, w) scores, descending (``utils.sort2d``; no NMS)."""
    flat = scores.flatten(1)
    check_glimpses(k, flat.shape[1])
    return flat.topk(k, dim=1, sorted=True).indices


def ordered_logits(logits2d: torch.Tensor, k: int) -> torch.Tensor:
    """Ordered-logits policy (Section 4.1, Fig 4c): cells by descending logit of the image's predicted class.

    The paper's text says "largest class logits"; the official code scores cell (i, j) by
    ``logits2d[i, j, pred]`` where ``pred`` is the argmax of the spatially averaged logits (the BagNet prediction).
    We follow the code: it is what produced the figures, and it ranks cells by evidence for the class the model
    will output rather than by evidence for any class.

    Args:
        logits2d: (N, C, h, w) per-location logits of BagNet-77-lowD.
        k: number of glimpses.
    Returns:
        (N, k) flat cell indices.
    """
    pred = logits2d.mean(dim=(2, 3)).argmax(dim=1)
    scores = logits2d[torch.arange(len(pred), device=pred.device), pred]  # (N, h, w)
    return _top_k(scores, k)


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude sqrt(dy^2 + dx^2) of the grayscale image, (N, 3, H, W) -> (N, 1, H, W).

    Written as a fixed 3x3 convolution because torchvision has no Sobel operator (kornia's is one line but not a
    dependency here). Reflect padding and grayscale weights follow ``tf.image.sobel_edges`` / ``rgb_to_grayscale``
    as used on the (standardised) model input by the official code.
    """
    gray = rgb_to_grayscale(images)
    ky = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]], device=images.device,
                      dtype=images.dtype)
    kernels = torch.stack([ky, ky.t()]).unsqueeze(1)  # (2, 1, 3, 3): dy, dx
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="reflect"), kernels)
    return grad.pow(2).sum(dim=1, keepdim=True).sqrt()


def sobel_scores(images: torch.Tensor, patch: int, stride: int, grid: tuple[int, int], stat: str) -> torch.Tensor:
    """Per-patch mean or unbiased variance of the Sobel magnitude, one score per grid cell (Section 4.1).

    Patches are ``patch`` x ``patch`` windows at stride ``stride`` (VALID), i.e. cell (i, j) covers
    [stride*i, stride*i + patch) in both axes -- the receptive field of BagNet cell (i, j). Variance is
    n/(n-1) (E[e^2] - E[e]^2) with n = patch^2, as the official code.

    Returns:
        (N, h, w) scores for the ``grid`` = (h, w) of the classifier.
    """
    edges = sobel_edges(images)
    mean = F.avg_pool2d(edges, patch, stride)
    if stat == "mean":
        score = mean
    elif stat == "var":
        n = patch * patch
        score = (F.avg_pool2d(edges.pow(2), patch, stride) - mean.pow(2)) * n / (n - 1)
    else:
        raise ValueError(f"unknown Sobel statistic {stat!r}")
    h, w = grid
    if score.shape[2] < h or score.shape[3] < w:
        raise ValueError(f"Sobel patch grid {tuple(score.shape[2:])} is smaller than the classifier grid {grid}")
    return score[:, 0, :h, :w]


def sobel_mean(images: torch.Tensor, k: int, patch: int, stride: int, grid: tuple[int, int]) -> torch.Tensor:
    """Sobel-mean policy: the k cells whose patches have the largest mean edge magnitude, descending."""
    return _top_k(sobel_scores(images, patch, stride, grid, "mean"), k)


def sobel_var(images: torch.Tensor, k: int, patch: int, stride: int, grid: tuple[int, int]) -> torch.Tensor:
    """Sobel-variance policy: the k cells whose patches have the largest edge-magnitude variance, descending."""
    return _top_k(sobel_scores(images, patch, stride, grid, "var"), k)


def random_policy(n: int, grid: tuple[int, int], k: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """Random policy (Section 4.1, Fig 4d): k cells uniform over the grid, without repeating a location.

    The paper says locations are "picked uniformly from the image". The official cell samples a continuous
    location and rounds it to the grid, which halves the probability of edge cells and allows repeats; we
    follow the paper and the issue (uniform over cells, no repeats), so T glimpses always cover T distinct cells
    like every other policy. A random permutation per image gives this for every T at once. The scores are drawn
    on ``device`` from ``generator``, which must be a generator of that device (no draw on the host and copy).
    """
    cells = grid[0] * grid[1]
    check_glimpses(k, cells)
    noise = torch.rand(n, cells, generator=generator, device=device)
    return noise.argsort(dim=1)[:, :k]


# The four policies of Section 4.1 under the catalog's calling convention (figure order as in the paper's legend).
@policy("ordered_logits", label="Ordered logits", order=20)
def _ordered_logits(k: int, cells: Cells) -> torch.Tensor:
    return ordered_logits(cells.logits2d, k)


@policy("random", label="Random", order=30)
def _random(k: int, cells: Cells) -> torch.Tensor:
    return random_policy(len(cells.logits2d), cells.grid, k, cells.generator, cells.logits2d.device)


@policy("sobel_mean", label="Sobel mean", order=40)
def _sobel_mean(k: int, cells: Cells) -> torch.Tensor:
    return sobel_mean(cells.images, k, cells.patch, cells.stride, cells.grid)


@policy("sobel_var", label="Sobel variance", order=50)
def _sobel_var(k: int, cells: Cells) -> torch.Tensor:
    return sobel_var(cells.images, k, cells.patch, cells.stride, cells.grid)


def choose(name: str, k: int, *, logits2d: torch.Tensor, images: torch.Tensor, patch: int, stride: int,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Run engineered policy ``name`` (any the catalog knows) on a batch; returns (N, k) flat cell indices."""
    return catalog.policy_function(name)(k, Cells(logits2d, images, patch, stride, generator))


def gather_logits(logits2d: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """Logit vectors of the chosen cells: (N, C, h, w), (N, T) flat indices -> (N, T, C) (``gather_2d``)."""
    flat = logits2d.flatten(2)  # (N, C, h*w)
    index = locations.unsqueeze(1).expand(-1, flat.shape[1], -1)
    return flat.gather(2, index).transpose(1, 2)


def cumulative_logits(step_logits: torch.Tensor) -> torch.Tensor:
    """Prediction after t = 1..T glimpses: running mean of the glimpse logits, (N, T, C) -> (N, T, C) (eq. 4/6)."""
    counts = torch.arange(1, step_logits.shape[1] + 1, device=step_logits.device, dtype=step_logits.dtype)
    return step_logits.cumsum(dim=1) / counts.view(1, -1, 1)
