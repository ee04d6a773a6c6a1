"""Glimpse geometry: location index -> pixel box, union masks, area covered (saccader/geometry.py)."""

import pytest
import torch

from saccader.geometry import area_covered, coverage_mask, location_box, location_boxes

PAPER = dict(grid_width=19, receptive_field=77, stride=8, image_size=224)


@pytest.mark.parametrize("i,j", [(0, 0), (0, 18), (7, 3), (18, 18)])
def test_box_is_the_true_receptive_field_at_224(i, j):
    assert location_box(i * 19 + j, **PAPER) == (8 * i, 8 * j, 8 * i + 77, 8 * j + 77)


def test_last_cell_stops_short_of_the_image_edge():
    # 18 * 8 + 77 = 221: rows/cols 221..223 are never seen by the representation network (reference-notes §1.3)
    assert location_box(360, **PAPER)[2:] == (221, 221)


def test_high_resolution_box_is_the_scaled_113_patch():
    for index in (0, 20, 187, 360):
        y0, x0, y1, x1 = location_box(index, **PAPER, target_size=331)
        i, j = divmod(index, 19)
        assert (y1 - y0, x1 - x0) == (113, 113)  # int(331 / 224 * 77), the official NASNet-113 crop
        assert (y0, x0) == (8 * i * 331 // 224, 8 * j * 331 // 224)
        assert y1 <= 331 and x1 <= 331


def test_vectorised_boxes_match_the_scalar_function():
    locs = torch.tensor([[0, 5, 100], [360, 19, 42]])
    boxes = location_boxes(locs, **PAPER)
    assert boxes.shape == (2, 3, 4)
    for n in range(2):
        for t in range(3):
            assert tuple(boxes[n, t].tolist()) == location_box(int(locs[n, t]), **PAPER)


def test_coverage_mask_is_the_exact_union_of_boxes():
    gen = torch.Generator().manual_seed(0)
    locs = torch.randint(0, 11 * 11, (3, 5), generator=gen)
    boxes = location_boxes(locs, grid_width=11, receptive_field=21, stride=4, image_size=64)
    expected = torch.zeros(3, 64, 64, dtype=torch.bool)
    for n in range(3):
        for y0, x0, y1, x1 in boxes[n].tolist():
            expected[n, y0:y1, x0:x1] = True
    assert torch.equal(coverage_mask(boxes, 64, 64), expected)
    assert torch.allclose(area_covered(boxes, 64, 64), expected.flatten(1).float().mean(1))


def test_area_of_one_and_of_a_repeated_location_is_one_patch():
    one = location_boxes(torch.tensor([[40]]), **PAPER)
    repeated = location_boxes(torch.tensor([[40, 40, 40]]), **PAPER)
    assert area_covered(one, 224, 224).item() == pytest.approx(77 * 77 / 224 ** 2)
    assert area_covered(repeated, 224, 224).item() == pytest.approx(77 * 77 / 224 ** 2)


def test_all_locations_cover_all_but_the_unseen_border():
    boxes = location_boxes(torch.arange(361)[None], **PAPER)
    assert area_covered(boxes, 224, 224).item() == pytest.approx(221 * 221 / 224 ** 2)
