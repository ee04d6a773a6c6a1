"""Glimpse geometry: which pixels one location of the representation grid sees (Section 3.1, Fig. 5).

A BagNet output cell (i, j) of an h x w grid sees exactly the input pixels ``[stride*i, stride*i + q)`` x
``[stride*j, stride*j + q)`` (all its convolutions are VALID, reference-notes §1.3), so ``location_boxes`` returns
that true receptive field. It is the one mapping used for glimpse pictures, the area-covered metric (Fig. 5a), the
occlusion study (Fig. 5b) and the Saccader-NASNet crops (Table 1).

Deviation from the official code, on purpose: the TF code draws and masks glimpses through ``extract_glimpse`` at a
centre interpolated linearly between the first and last cell, which spans (image - q) / (h - 1) = 147/18 = 8.17 px
per cell at 224 instead of 8, so its boxes drift up to 3 px from the pixels the network saw (reference-notes §2).
We use the true receptive field; area and occlusion numbers can differ from the paper's by those few pixels.

At the high resolution (e.g. 331 for NASNet-113) a box is the base box scaled by ``target/image_size``: its corner
is ``floor(stride*i * target/image_size)`` and its side ``int(target/image_size * q)``, the official code's
``int(331/224*77) = 113`` patch.
"""

from __future__ import annotations

import torch

__all__ = ["location_boxes", "location_box", "coverage_mask", "area_covered"]


def location_boxes(locations, grid_width: int, receptive_field: int, stride: int, image_size: int,
                   target_size: int | None = None) -> torch.Tensor:
    """Pixel boxes ``(y0, x0, y1, x1)`` (y1, x1 exclusive) of flat grid locations.

    Args:
        locations: integer tensor of any shape (e.g. (N, T)) of flat indices ``i * grid_width + j``.
        grid_width: w of the h x w location grid.
        receptive_field: q, the side of one location's patch at ``image_size``.
        stride: pixels between neighbouring locations at ``image_size``.
        image_size: side of the image the representation network saw (224 in the paper).
        target_size: side of the image the box is wanted in (331 for the high-resolution crops); default
            ``image_size``.

    Returns:
        long tensor of shape ``locations.shape + (4,)``, clipped to the target image.
    """
    locations = torch.as_tensor(locations).long()
    target_size = image_size if target_size is None else target_size
    row, col = locations // grid_width, locations % grid_width
    # Integer arithmetic (a*target)//image_size keeps the base resolution exact (scale 1 gives stride*i).
    y0 = (stride * row * target_size) // image_size
    x0 = (stride * col * target_size) // image_size
    side = (receptive_field * target_size) // image_size
    boxes = torch.stack([y0, x0, y0 + side, x0 + side], dim=-1)
    return boxes.clamp(0, target_size)


def location_box(index: int, grid_width: int, receptive_field: int, stride: int, image_size: int,
                 target_size: int | None = None) -> tuple[int, int, int, int]:
    """``location_boxes`` for one python index; returns ``(y0, x0, y1, x1)`` as ints."""
    return tuple(int(v) for v in location_boxes(torch.tensor(index), grid_width, receptive_field, stride,
                                                image_size, target_size))


def coverage_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of boxes as a boolean pixel mask, exact to the pixel.

    Args:
        boxes: (N, T, 4) boxes from ``location_boxes``.
    Returns:
        (N, height, width) bool, True where at least one of the T boxes covers the pixel.
    """
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_y = (rows >= boxes[..., 0:1]) & (rows < boxes[..., 2:3])  # (N, T, H)
    in_x = (cols >= boxes[..., 1:2]) & (cols < boxes[..., 3:4])  # (N, T, W)
    # A pixel is covered iff some box contains both its row and column: a (H,T)x(T,W) product counts those boxes,
    # without the (N, T, H, W) tensor that a broadcast would need for T = 361 glimpses.
    hits = torch.bmm(in_y.transpose(1, 2).float(), in_x.float())
    return hits > 0


def area_covered(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fraction of the image covered by the union of each image's boxes (Fig. 5a); shape (N,)."""
    return coverage_mask(boxes, height, width).flatten(1).float().mean(1)
