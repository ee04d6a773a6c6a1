"""``saccader.pipeline.plan.counting``, the torch-private part of the plan: FLOP counts on fake tensors against
published figures, the grouped-convolution fix, the batch-sized storages, and the memory estimate against a
measurement (bench/plan_memory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from saccader.pipeline.config import load
from saccader.pipeline.plan import counting

ROOT = Path(__file__).resolve().parents[1]


def _fake_forward_macs(model_fn, size: int) -> float:
    with counting.fake_mode():
        model = model_fn().eval()
        with torch.no_grad(), counting.Counter() as c:
            model(torch.zeros(1, 3, size, size))
    return c.total() / 2


def test_resnet50_flops_match_the_published_4_1_g_multiply_adds():
    from torchvision.models import resnet50

    assert _fake_forward_macs(resnet50, 224) == pytest.approx(4.1e9, rel=0.05)


def test_grouped_conv_weight_gradient_counts_each_group_once():
    conv = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False)  # depthwise: 9 weights per channel
    x = torch.zeros(2, 8, 10, 10, requires_grad=True)
    with counting.Counter() as c:
        conv(x).sum().backward()
    per_pass = 2 * 2 * 8 * 8 * 8 * 9  # 2 FLOPs x batch x channels x 8x8 outputs x 9 taps
    assert c.total() == 3 * per_pass  # forward, input gradient, weight gradient


@pytest.mark.slow
def test_nasnet_a_large_at_331_matches_zoph_et_al_table_2():
    counts = counting.count_train(load(ROOT / "config.yaml"), "nasnet_331")
    assert counts["fwd_flops"] / 2 == pytest.approx(23.8e9, rel=0.05)
    assert counts["step_flops"] == pytest.approx(3 * counts["fwd_flops"], rel=0.05)  # backward = 2 forwards


@pytest.mark.slow
@pytest.mark.parametrize("run", ["bagnet77_lowd", "resnet_v2_50", "saccader"])
def test_activation_estimate_within_25_percent_of_measured_live_memory(run):
    sys.path.insert(0, str(ROOT / "bench"))
    import plan_memory

    row = plan_memory.measure("config/embedded.yaml", run, small=8, large=72)
    assert row["estimate/measured"] == pytest.approx(1.0, abs=0.25)


def test_counter_tells_batch_sized_storages_from_fixed_ones():
    x, w = torch.zeros(97, 8), torch.zeros(16, 8)
    with counting.Counter(97, (2, 4)) as c:
        y = torch.nn.functional.linear(x, w)  # 97 x 16 floats: grows with the batch
        w2 = w * 2  # 16 x 8 floats: does not
    assert c.fixed == 16 * 8 * 4 and c.grows == 97 * 16 * 4
    assert c.slope() == 16 * 4  # bytes per image
    assert c.peaks[2] == 16 * 8 * 4 + 2 * 16 * 4
    assert c.total() == 2 * 97 * 16 * 8
    del y, w2
