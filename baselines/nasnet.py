"""NASNet-A (Zoph et al. 2018) and Saccader-NASNet (Section 4.4, Fig. 6, Tables Supp.2-3).

NASNet-A is timm's ``NASNetALarge`` (a port of TF-slim's ``nasnet_large``), built from scratch: never
``pretrained=True``, nothing is downloaded. At paper scale (stem 96, 4032 features, 1001 classes) it has 88,953,851
parameters counting BN running statistics, which is exactly Table Supp.1's Saccader-NASNet 124,537,764 minus the
Saccader's 35,583,913. Narrow variants (``stem_size``, ``num_features``; channels = num_features // 24) serve the
embedded dataset; depth stays 18 cells, output stride 32.

Saccader-NASNet: a trained Saccader picks ``T`` locations on the base image (224); the pixel boxes of those locations
(``saccader.geometry.location_boxes``: 77 x 77 at 224, or the corresponding 113 x 113 boxes of the 331 image) are
cropped and classified by a NASNet fine-tuned on such crops; the glimpse logits are averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.nasnet import NASNetALarge

from saccader.errors import UserError
from saccader.geometry import location_boxes

__all__ = ["nasnet_a_large", "SaccaderNASNet", "crop_boxes"]


def nasnet_a_large(num_classes: int = 1001, stem_size: int = 96, num_features: int = 4032,
                   channel_multiplier: int = 2, drop_rate: float = 0.3) -> NASNetALarge:
    """NASNet-A Large from timm, randomly initialised.

    Args:
        num_classes: logits (1001 at paper scale).
        stem_size, num_features, channel_multiplier: width (paper: 96, 4032, 2); ``num_features`` must be a
            multiple of 24 and at least 96 (timm: channels = num_features // 24).
        drop_rate: dropout before the classifier. The paper's "dropout of 0.7 on the penultimate layer" is read as
            TF-slim's keep probability (``dense_dropout_keep_prob``), i.e. a drop rate of 0.3 [uncertain].
    """
    if num_features % 24 or num_features < 96:  # timm fails deep inside with "groups must be a positive integer"
        raise UserError(f"nasnet_a_large num_features = {num_features} must be a multiple of 24 and at least 96",
                        "set models.nasnet_a_large.num_features to 96, 192, ... (4032 at paper scale)")
    return NASNetALarge(num_classes=num_classes, stem_size=stem_size, num_features=num_features,
                        channel_multiplier=channel_multiplier, drop_rate=drop_rate)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Crop equal-sized boxes (N, T, 4) from images (N, C, H, W) -> (N*T, C, s, s), optionally resized to ``size``.

    Pure indexing (no interpolation), so a crop holds exactly the pixels of its box.
    """
    n, t = boxes.shape[:2]
    side = int((boxes[..., 2] - boxes[..., 0]).max())
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
        from saccader.models import create  # the registry imports this module lazily; avoid a cycle
        self.saccader = create("saccader", num_classes, **(saccader or {}))
        self.nasnet = create("nasnet_a_large", num_classes, **(nasnet or {}))
        self.patch_size = patch_size

    def crops(self, images: torch.Tensor, locations: torch.Tensor,
              images_high_res: torch.Tensor | None = None) -> torch.Tensor:
        """Crops (N*T, 3, p, p) of the chosen locations, from the high-resolution images when given."""
        base = images.shape[-1]
        source = images if images_high_res is None else images_high_res
        grid_w = self.saccader.grid_size(base)[1]
        boxes = location_boxes(locations, grid_w, self.saccader.receptive_field, self.saccader.stride, base,
                               source.shape[-1])
        return crop_boxes(source, boxes, self.patch_size)

    def forward(self, images: torch.Tensor, num_glimpses: int, images_high_res: torch.Tensor | None = None):
        """(logits (N, C) = mean NASNet logits over the T crops, locations (N, T), policy (N, T, h*w)).

        The Saccader only chooses locations (argmax policy, no gradient); gradients reach the NASNet.
        """
        with torch.no_grad():
            _, locations, policy = self.saccader(images, num_glimpses)
        crops = self.crops(images, locations, images_high_res)
        logits = self.nasnet(crops).view(images.shape[0], num_glimpses, -1)
        return logits.mean(dim=1), locations, policy
