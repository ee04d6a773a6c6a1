"""Centre policy: the cells nearest the image centre, nearest first, without repeating a location.

The released Saccader cell has a ``center`` policy beside ``random`` and ``learned`` that looks at the centre cell
only. As for the engineered policies of Section 4.1, this one ranks cells once and takes the first K, so that its
first T glimpses are its T-glimpse choice and T glimpses cover T distinct cells: the centre cell, then the cells
whose receptive fields' centres are next nearest the image centre (Euclidean distance in pixels; ties by flat
index, so rings of equal distance are taken row by row). It ignores the image: what a policy gains over it is what
it gains over the photographer's habit of centring the object.
"""

from __future__ import annotations

import torch

from baselines.policies import Cells, check_glimpses
from saccader.catalog import policy


@policy("center", label="Centre", order=60)
def center(k: int, cells: Cells) -> torch.Tensor:
    """(N, k) flat indices of the k cells nearest the image centre, nearest first (the same for every image)."""
    (h, w), (height, width) = cells.grid, cells.images.shape[2:]
    check_glimpses(k, h * w)
    device = cells.logits2d.device
    # Cell (i, j) sees pixels [stride*i, stride*i + patch) (saccader.geometry): its centre is stride*i + (patch-1)/2.
    rows = torch.arange(h, device=device, dtype=torch.float64) * cells.stride + (cells.patch - 1) / 2
    cols = torch.arange(w, device=device, dtype=torch.float64) * cells.stride + (cells.patch - 1) / 2
    distance = (rows[:, None] - (height - 1) / 2) ** 2 + (cols[None, :] - (width - 1) / 2) ** 2
    nearest = torch.sort(distance.flatten(), stable=True).indices[:k]
    return nearest.unsqueeze(0).repeat(len(cells.logits2d), 1)
