"""Saccader-NASNet (Section 4.4, Fig. 6, Tables Supp.2-3): a trained Saccader picks ``T`` locations on the base
image (224); the pixel boxes of those locations (``saccader.geometry.location_boxes``: 77 x 77 at 224, or the
corresponding 113 x 113 boxes of the 331 image) are cropped and classified by a NASNet fine-tuned on such crops; the
glimpse logits are averaged. Both parts are built by name from the model registry (the NASNet-A of
``baselines/nasnet.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from saccader.geometry import location_boxes
from saccader.models import create

__all__ = ["SaccaderNASNet", "crop_boxes"]


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, side: int, size: int | None = None) -> torch.Tensor:
    """Crop boxes (N, T, 4) of side ``side`` from images (N, C, H, W) -> (N*T, C, s, s), optionally resized to
    ``size``.

    Pure indexing (no interpolation), so a crop holds exactly the pixels of its box. ``side`` is a Python int
    given by the caller (the geometry knows it): reading it from ``boxes`` would make the host wait for the GPU.
    """
    n, t = boxes.shape[:2]
    offsets = torch.arange(side, device=images.device)
    rows = (boxes[..., 0, None] + offsets).clamp(max=images.shape[-2] - 1)  # (N, T, s)
    cols = (boxes[..., 1, None] + offsets).clamp(max=images.shape[-1] - 1)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    crops = images.permute(0, 2, 3, 1)[batch, rows[..., :, None], cols[..., None, :]]  # (N, T, s, s, C)
    crops = crops.reshape(n * t, side, side, -1).permute(0, 3, 1, 2)
    if size is not None and size != side:
        crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return crops


class SaccaderNASNet(nn.Module):
    """A Saccader that chooses locations and a NASNet that classifies the corresponding crops.

    Args:
        num_classes: classifier outputs (1001 at paper scale).
        saccader: constructor overrides of the Saccader (registry name ``saccader``).
        nasnet: constructor overrides of the NASNet (registry name ``nasnet_a_large``).
        patch_size: side the crops are resized to before the NASNet; None feeds them at their own size (77 or 113).
    """

    def __init__(self, num_classes: int = 1001, saccader: dict | None = None, nasnet: dict | None = None,
                 patch_size: int | None = None):
        super().__init__()
        self.saccader = create("saccader", num_classes, **(saccader or {}))
        self.nasnet = create("nasnet_a_large", num_classes, **(nasnet or {}))
        self.patch_size = patch_size

    def crops(self, images: torch.Tensor, locations: torch.Tensor,
              images_high_res: torch.Tensor | None = None) -> torch.Tensor:
        """Crops (N*T, 3, p, p) of the chosen locations, from the high-resolution images when given."""
        base = images.shape[-1]
        source = images if images_high_res is None else images_high_res
        grid_w = self.saccader.grid_size(base)[1]
        q, stride, target = self.saccader.receptive_field, self.saccader.stride, source.shape[-1]
        boxes = location_boxes(locations, grid_w, q, stride, base, target)
        return crop_boxes(source, boxes, (q * target) // base, self.patch_size)  # location_boxes' side

    def forward(self, images: torch.Tensor, num_glimpses: int, images_high_res: torch.Tensor | None = None):
        """(logits (N, C) = mean NASNet logits over the T crops, locations (N, T), policy (N, T, h*w)).

        The Saccader only chooses locations (argmax policy, no gradient); gradients reach the NASNet.
        """
        with torch.no_grad():
            _, locations, policy = self.saccader(images, num_glimpses)
        crops = self.crops(images, locations, images_high_res)
        logits = self.nasnet(crops).view(images.shape[0], num_glimpses, -1)
        return logits.mean(dim=1), locations, policy
