"""Each engineered policy's choice on hand-made inputs."""

import pytest
import torch

from baselines import policies
from saccader.errors import UserError


def test_ordered_logits_ranks_cells_by_predicted_class_logit():
    logits2d = torch.zeros(1, 3, 2, 3)
    # class 1 is predicted (largest spatial mean); class 2 has the single largest logit anywhere, at cell 0.
    logits2d[0, 1] = torch.tensor([[1.0, 5.0, 2.0], [4.0, 3.0, 0.5]])
    logits2d[0, 2, 0, 0] = 9.0
    locations = policies.ordered_logits(logits2d, 4)
    assert locations.tolist() == [[1, 3, 4, 2]]  # by logit of class 1, largest first; class 2's peak ignored


def test_sobel_mean_picks_the_patch_with_the_strongest_edges():
    images = torch.zeros(2, 3, 16, 16)
    images[0, :, 10:14, 10:14] = 1.0  # a bright square in the lower right: edges only there
    images[1, :, 1:5, 1:5] = 1.0      # upper left
    locations = policies.sobel_mean(images, 1, patch=8, stride=4, grid=(3, 3))
    assert locations[:, 0].tolist() == [8, 0]  # cell (2, 2) covers [8, 16); cell (0, 0) covers [0, 8)


def test_sobel_var_prefers_varied_edges_over_uniform_ones():
    images = torch.zeros(1, 3, 16, 8)
    # top patch: stripes, edges everywhere (large mean, even magnitude); bottom patch: one small block
    # (weaker mean edge, but concentrated, so a larger variance).
    images[0, :, :8, :] = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    images[0, :, 11:13, 3:5] = 2.0
    assert policies.sobel_mean(images, 1, patch=8, stride=8, grid=(2, 1)).item() == 0
    assert policies.sobel_var(images, 1, patch=8, stride=8, grid=(2, 1)).item() == 1


def test_sobel_variance_is_unbiased_patch_variance():
    images = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    edges = policies.sobel_edges(images)[0, 0]
    scores = policies.sobel_scores(images, 6, 3, (3, 3), "var")
    assert torch.allclose(scores[0, 1, 2], edges[3:9, 6:12].var(unbiased=True), atol=1e-5)


def test_random_policy_never_repeats_and_is_seeded():
    a = policies.random_policy(50, (3, 4), 12, torch.Generator().manual_seed(3))
    b = policies.random_policy(50, (3, 4), 12, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert all(sorted(row) == list(range(12)) for row in a.tolist())
    first = torch.bincount(a[:, 0], minlength=12)
    assert (first > 0).sum() >= 10  # spread over the grid, not a fixed order


def test_gather_and_cumulative_logits_average_the_chosen_cells():
    logits2d = torch.arange(2 * 4 * 2, dtype=torch.float32).view(1, 2, 4, 2)  # (N, C, h, w)
    picked = policies.gather_logits(logits2d, torch.tensor([[7, 0, 3]]))
    assert picked.tolist() == [[[7.0, 15.0], [0.0, 8.0], [3.0, 11.0]]]
    running = policies.cumulative_logits(picked)
    assert torch.allclose(running[0, 1], torch.tensor([3.5, 11.5]))
    assert torch.allclose(running[0, 2], torch.tensor([10 / 3, 34 / 3]))


def test_top_t_of_k_is_the_t_glimpse_choice():
    logits2d = torch.randn(4, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(policies.ordered_logits(logits2d, 7)[:, :3], policies.ordered_logits(logits2d, 3))


def test_more_glimpses_than_cells_is_a_user_error():
    with pytest.raises(UserError, match="max_glimpses"):
        policies.ordered_logits(torch.zeros(1, 2, 2, 2), 5)
    with pytest.raises(UserError, match="max_glimpses"):
        policies.random_policy(1, (2, 2), 5)


def test_center_takes_the_cells_nearest_the_image_centre_nearest_first():
    from baselines.policies.center import center

    # 3 x 3 cells of 8 px at stride 4 on a 16 px image: cell centres at 3.5, 7.5, 11.5; the image centre 7.5
    cells = policies.Cells(torch.zeros(2, 5, 3, 3), torch.zeros(2, 3, 16, 16), patch=8, stride=4)
    picked = center(9, cells)
    assert picked.tolist() == [[4, 1, 3, 5, 7, 0, 2, 6, 8]] * 2  # the centre, its 4 neighbours, the corners
    assert torch.equal(center(3, cells), picked[:, :3])  # its T-glimpse choice is the first T of any longer one
    # 4 x 4 cells: the four central cells tie, taken row by row
    cells = policies.Cells(torch.zeros(1, 5, 4, 4), torch.zeros(1, 3, 20, 20), patch=8, stride=4)
    assert center(4, cells).tolist() == [[5, 6, 9, 10]]
    with pytest.raises(UserError, match="cannot pick 17 distinct glimpses"):
        center(17, cells)
    assert policies.choose("center", 2, logits2d=cells.logits2d, images=cells.images, patch=8, stride=4).tolist() == [
        [5, 6]]
