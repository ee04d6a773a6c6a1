"""NASNet-A (Zoph et al. 2018), the classifier of Saccader-NASNet (Section 4.4, Fig. 6, Tables Supp.2-3).

NASNet-A is timm's ``NASNetALarge`` (a port of TF-slim's ``nasnet_large``), built from scratch: never
``pretrained=True``, nothing is downloaded. At paper scale (stem 96, 4032 features, 1001 classes) it has 88,953,851
parameters counting BN running statistics, which is exactly Table Supp.1's Saccader-NASNet 124,537,764 minus the
Saccader's 35,583,913. Narrow and shallow variants serve the embedded dataset: ``stem_size`` and ``num_features``
(channels = num_features // 24) set the width, ``cells_per_stack`` the N of "N @ F" (6 in NASNet-A Large; each of the
three stacks keeps its first N cells, the reduction cells and the output stride 32 stay).

Scheduled drop path (Zoph et al. 2018, Section 4.1; TF-slim ``nasnet_utils._apply_drop_path``, "v3"): in training,
every operation of every cell except the identity is dropped for a whole example with probability
``(1 - keep) * (cell + 1) / cells * min(1, progress)``, its survivors scaled by 1 / keep-probability; ``cell``
counts the 22 cells of NASNet-A Large in forward order (2 stem cells, 18 normal, 2 reduction), and ``progress`` is the
fraction of the drop-path horizon trained so far (the paper: keep 0.7 over 250 epochs of a 156-epoch run), which
the training loop sets through ``drop_path_progress``. timm's NASNet has no drop path, hence the hooks here.

Saccader-NASNet, the paper's model built on it, is ``saccader/models/saccader_nasnet.py``.
"""

from __future__ import annotations

import torch
from timm.layers import drop_path
from timm.models.nasnet import NASNetALarge

from saccader.errors import UserError

__all__ = ["nasnet_a_large", "NASNetA"]


class NASNetA(NASNetALarge):
    """timm's NASNet-A Large with TF-slim's scheduled drop path on the cell operations (module docstring).

    ``drop_path_progress`` (0 at construction, so off until a training loop sets it) scales the drop probability;
    it is not a weight and is not saved: the loop recomputes it from the step it resumes at.
    """

    def __init__(self, drop_path_keep_prob: float = 0.7, cells_per_stack: int = 6, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < drop_path_keep_prob <= 1.0:
            raise UserError(f"nasnet_a_large drop_path_keep_prob = {drop_path_keep_prob} is outside (0, 1]",
                            "set models.nasnet_a_large.drop_path_keep_prob to 0.7 (the paper) or 1.0 (off)")
        if not 2 <= cells_per_stack <= 6:  # the reduction cells take the last two outputs of a stack
            raise UserError(f"nasnet_a_large cells_per_stack = {cells_per_stack} is outside 2..6",
                            "set models.nasnet_a_large.cells_per_stack to 6 (NASNet-A Large) or fewer, at least 2")
        for stack in range(3):  # timm builds 6 @ F; later normal cells of a stack only repeat in and out widths
            for index in range(stack * 6 + cells_per_stack, stack * 6 + 6):
                delattr(self, f"cell_{index}")
        self.cells_per_stack = cells_per_stack
        self.drop_path_keep_prob, self.drop_path_progress = drop_path_keep_prob, 0.0
        cells = [m for name, m in self.named_children() if name.startswith(("cell_", "reduction_cell_"))]
        for index, cell in enumerate(cells):
            depth = (index + 1) / len(cells)  # TF-slim's layer_ratio (cell_num + 1) / total_num_cells
            for name, op in cell.named_children():
                if name.startswith("comb_iter_"):  # the identity inputs of a cell are plain tensors, never hooked
                    op.register_forward_hook(self._drop_hook(depth))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's wiring for any ``cells_per_stack``: a cell takes the two previous outputs; a reduction cell takes
        the last two of its stack, and the first cell after it takes the reduction's output and the stack's
        second-to-last output (``cell_6(reduction_cell_0, cell_4)`` in NASNet-A Large)."""
        conv0 = self.conv0(x)
        stem0 = self.cell_stem_0(conv0)
        prev, prev_prev = self.cell_stem_1(conv0, stem0), stem0
        for name, cell in self.named_children():
            if name.startswith("cell_") and not name.startswith("cell_stem"):
                prev, prev_prev = cell(prev, prev_prev), prev
            elif name.startswith("reduction_cell_"):
                prev = cell(prev, prev_prev)  # prev_prev stays: the next cell's second input
        return self.act(prev)

    def drop_path_prob(self, depth: float) -> float:
        """Drop probability of an operation at relative depth ``depth`` in (0, 1] at the current progress."""
        return (1.0 - self.drop_path_keep_prob) * depth * min(1.0, max(0.0, self.drop_path_progress))

    def _drop_hook(self, depth: float):
        def hook(module, inputs, output):
            p = self.drop_path_prob(depth)
            return drop_path(output, p, module.training) if p > 0 and module.training else output
        return hook


def nasnet_a_large(num_classes: int = 1001, stem_size: int = 96, num_features: int = 4032,
                   channel_multiplier: int = 2, drop_rate: float = 0.3,
                   drop_path_keep_prob: float = 0.7, cells_per_stack: int = 6) -> NASNetA:
    """NASNet-A Large from timm, randomly initialised, with scheduled drop path.

    Args:
        num_classes: logits (1001 at paper scale).
        stem_size, num_features, channel_multiplier: width (paper: 96, 4032, 2); ``num_features`` must be a
            multiple of 24 and at least 96 (timm: channels = num_features // 24).
        drop_rate: dropout before the classifier. The paper's "dropout of 0.7 on the penultimate layer" is read as
            TF-slim's keep probability (``dense_dropout_keep_prob``), i.e. a drop rate of 0.3 [uncertain].
        drop_path_keep_prob: final keep probability of the deepest cell's operations (0.7; 1.0 turns drop path off).
        cells_per_stack: normal cells per stack, the N of "N @ F" (6 in NASNet-A Large, 2..6).
    """
    if num_features % 24 or num_features < 96:  # timm fails deep inside with "groups must be a positive integer"
        raise UserError(f"nasnet_a_large num_features = {num_features} must be a multiple of 24 and at least 96",
                        "set models.nasnet_a_large.num_features to 96, 192, ... (4032 at paper scale)")
    return NASNetA(drop_path_keep_prob, cells_per_stack, num_classes=num_classes, stem_size=stem_size,
                   num_features=num_features, channel_multiplier=channel_multiplier, drop_rate=drop_rate)
