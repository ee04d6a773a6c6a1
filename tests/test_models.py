"""The model zoo (saccader/models, baselines/): shapes, receptive field, the Saccader cell, every model fwd+bwd."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from saccader.errors import UserError
from saccader.geometry import location_boxes
from saccader.pipeline.config import load_experiment
from saccader.models import create, from_config, list_models

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = load_experiment(REPO / "config" / "embedded.yaml")
EMBEDDED_SIZE = EMBEDDED["dataset"]["image_size"]
# Paper geometry (blocks, strides, kernel3) with tiny widths: the grid and the receptive field depend only on it.
PAPER_GEOMETRY_NARROW = dict(planes=(2, 2, 2, 2), expansion=2, stem_channels=2, lowd_dim=4)


def embedded(name, **extra):
    torch.manual_seed(0)
    return from_config(name, {**EMBEDDED, "models": {**EMBEDDED["models"], name: {**EMBEDDED["models"][name], **extra}}})


def randomise_bn_(model):
    """Random BN affine/statistics: the official zero-init gammas would otherwise hide every residual branch."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=gen) - 0.5
            m.running_var.data = torch.rand(m.running_var.shape, generator=gen) + 0.5


# -- BagNet -------------------------------------------------------------------------------------------------------

def test_paper_bagnet_geometry_and_shapes_at_224_and_331():
    model = create("bagnet77_lowd", 7, **PAPER_GEOMETRY_NARROW).eval()
    assert (model.receptive_field, model.stride) == (77, 8)
    assert model.grid_size(224) == (19, 19) and model.grid_size(331) == (32, 32)
    with torch.no_grad():
        for size, grid in ((224, 19), (331, 32)):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 7, grid, grid)


def test_paper_bagnet_lowd_features_at_224():
    model = create("bagnet77_lowd", 1001).eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(1, 3, 224, 224))
    assert out["features"].shape == (1, 2048, 19, 19)
    assert out["what"].shape == (1, 512, 19, 19)
    assert out["logits2d"].shape == (1, 1001, 19, 19)


def test_receptive_field_is_exactly_77_px_and_neighbours_8_px_apart():
    """Input gradient of single output locations of the paper-scale BagNet (BN in eval mode)."""
    model = create("bagnet77_lowd", 1001)
    randomise_bn_(model)
    model.eval()
    # image k backpropagates from its own cells only (eval-mode BN has no batch coupling); the two corner cells of
    # image 0 have disjoint patches, told apart by the quadrant they fall in
    cells = [[(0, 0), (18, 18)], [(9, 4)], [(9, 5)]]
    x = torch.randn(1, 3, 224, 224).repeat(len(cells), 1, 1, 1).requires_grad_(True)
    logits2d = model(x)
    sum(logits2d[k, :, i, j].sum() for k, group in enumerate(cells) for i, j in group).backward()

    def box(grad):
        seen = grad.abs().sum(0) > 0
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        return rows.min().item(), cols.min().item(), rows.max().item() + 1, cols.max().item() + 1

    found = {(0, 0): box(x.grad[0, :, :112, :112]),
             (18, 18): tuple(v + 112 for v in box(x.grad[0, :, 112:, 112:])),
             (9, 4): box(x.grad[1]), (9, 5): box(x.grad[2])}
    for (i, j), got in found.items():
        assert got == (8 * i, 8 * j, 8 * i + 77, 8 * j + 77)
        assert got == tuple(location_boxes(torch.tensor(i * 19 + j), 19, 77, 8, 224).tolist())
    # neighbouring cells see patches shifted by exactly the stride
    assert found[(9, 5)][1] - found[(9, 4)][1] == 8


def test_embedded_bagnet_geometry():
    model = embedded("bagnet77_lowd")
    assert (model.receptive_field, model.stride) == (21, 4)
    h, w = model.grid_size(EMBEDDED_SIZE)
    assert h * w >= 100
    assert model(torch.randn(2, 3, EMBEDDED_SIZE, EMBEDDED_SIZE)).shape == (2, 10, h, w)


def test_bottleneck_projection_is_the_strided_1x1_conv():
    """The projection shortcut slices every s-th pixel before its 1x1 conv: the same sum as a stride-s 1x1 conv
    over the cropped input, on the pixels the VALID 3x3 conv centres on."""
    from saccader.models.bagnet import Bottleneck

    torch.manual_seed(0)
    block = Bottleneck(8, 8, 2, stride=2, kernel_size=3)
    randomise_bn_(block)
    block.eval()
    x = torch.randn(2, 8, 62, 62)
    main = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
    conv, norm = block.downsample
    shortcut = norm(F.conv2d(x[:, :, 1:-1, 1:-1], conv.weight, stride=2))
    torch.testing.assert_close(block(x), torch.relu(main + shortcut))


@pytest.mark.parametrize("name", ["bagnet77_lowd", "saccader"])
def test_bagnet_family_trains_in_channels_last_as_in_nchw(name):
    """channels_last (the recipes' key on CPU) gives the NCHW loss and gradients; torch 2.14's strided 1x1 conv
    backward corrupted memory here before the projection sliced its input."""
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        model = embedded(name).train().to(memory_format=memory_format)
        torch.manual_seed(1)
        x = torch.randn(8, 3, 64, 64).contiguous(memory_format=memory_format)
        _loss(name, model, x, None, torch.arange(8) % 10).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    # torch's channels_last BatchNorm is less exact on CPU (one layer, one thread: 6e-6 from fp64 against 7e-8 in
    # NCHW); through the network the whole gradient lands about 1e-3 from NCHW's. A wrong pixel would be O(1) off.
    nchw, cl = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    assert (cl - nchw).norm() / nchw.norm() < 1e-2


# -- Saccader cell ------------------------------------------------------------------------------------------------

def reference_cell(mixed, logits2d, a, num_glimpses):
    """Eqs. 1-3 for one image, written out per location and channel (no shared code with the model)."""
    d, h, w = mixed.shape
    visited = torch.zeros(h, w, dtype=mixed.dtype)
    locs, policies, logits = [], [], []
    for _ in range(num_glimpses):
        g = torch.empty(h, w, dtype=mixed.dtype)
        for i in range(h):
            for j in range(w):
                g[i, j] = sum(mixed[k, i, j] * a[k] for k in range(d)) / math.sqrt(d) - 1e5 * visited[i, j]
        g_tilde = torch.exp(g - g.max()) / torch.exp(g - g.max()).sum()               # softmax over space
        hk = torch.stack([(mixed[k] * g_tilde).sum() for k in range(d)])
        h_tilde = torch.exp(hk - hk.max()) / torch.exp(hk - hk.max()).sum()           # softmax over channels
        r = sum(mixed[k] * h_tilde[k] for k in range(d)) - 1e5 * visited
        best = int(r.flatten().argmax())
        i, j = divmod(best, w)
        visited[i, j] = 1.0
        locs.append(best)
        policies.append(r.flatten())
        logits.append(logits2d[:, i, j])
    return torch.tensor(locs), torch.stack(policies), torch.stack(logits).mean(0)


def test_cell_matches_eqs_1_to_3_computed_independently():
    torch.manual_seed(0)
    model = create("saccader", 5, **PAPER_GEOMETRY_NARROW, mixed_dim=6).double()
    gen = torch.Generator().manual_seed(1)
    mixed = torch.randn(3, 6, 4, 5, generator=gen, dtype=torch.float64) * 3
    logits2d = torch.randn(3, 5, 4, 5, generator=gen, dtype=torch.float64)
    out = model.rollout(mixed, logits2d, num_glimpses=7)
    for n in range(3):
        locs, policy, logits = reference_cell(mixed[n], logits2d[n], model.a.detach(), 7)
        assert torch.equal(out["locations"][n], locs)
        assert torch.allclose(out["policy_logits"][n], policy)
        assert torch.allclose(out["logits"][n], logits)
        assert torch.allclose(out["log_probs"][n], torch.log_softmax(policy, 1)[torch.arange(7), locs])


@pytest.mark.parametrize("sample", [False, True])
def test_all_steps_give_a_permutation_of_the_grid(sample):
    model = embedded("saccader")
    h, w = model.grid_size(EMBEDDED_SIZE)
    with torch.no_grad():
        out = model.backbone(torch.randn(2, 3, EMBEDDED_SIZE, EMBEDDED_SIZE))
        roll = model.rollout(out["mixed"], out["logits2d"], h * w, sample=sample,
                             generator=torch.Generator().manual_seed(0))
    for n in range(2):
        assert torch.equal(roll["locations"][n].sort().values, torch.arange(h * w))


def test_argmax_policy_is_deterministic_and_batch_independent():
    model = embedded("saccader").eval()
    x = torch.randn(4, 3, EMBEDDED_SIZE, EMBEDDED_SIZE)
    with torch.no_grad():
        logits_a, locs_a, policy_a = model(x, 6)
        logits_b, locs_b, _ = model(x, 6)
        _, locs_single, _ = model(x[2:3], 6)
    assert torch.equal(locs_a, locs_b) and torch.equal(logits_a, logits_b)
    assert torch.equal(locs_single[0], locs_a[2])
    h, w = model.grid_size(EMBEDDED_SIZE)
    assert logits_a.shape == (4, 10) and locs_a.shape == (4, 6) and policy_a.shape == (4, 6, h * w)
    assert torch.allclose(policy_a.sum(-1), torch.ones(4, 6, dtype=policy_a.dtype))
    # a visited cell has zero probability afterwards
    assert policy_a[0, 1, locs_a[0, 0]] == 0


def test_sampling_follows_the_generator():
    model = embedded("saccader")
    with torch.no_grad():
        out = model.backbone(torch.randn(3, 3, EMBEDDED_SIZE, EMBEDDED_SIZE))
        run = [model.rollout(out["mixed"], out["logits2d"], 6, sample=True,
                             generator=torch.Generator().manual_seed(s))["locations"] for s in (5, 5)]
    assert torch.equal(run[0], run[1])


def test_targets_drive_the_cell_state_for_location_pretraining():
    """Eq 5: with targets the cell visits them in order, each step masks exactly the earlier targets, and a target
    is never masked (its logit is finite), unlike the model's own choices."""
    model = embedded("saccader")
    with torch.no_grad():
        out = model.backbone(torch.randn(2, 3, EMBEDDED_SIZE, EMBEDDED_SIZE))
        free = model.rollout(out["mixed"], out["logits2d"], 5)["locations"]
        targets = free.flip(1)  # the same cells in reverse order: the argmax policy would have masked them early
        roll = model.rollout(out["mixed"], out["logits2d"], 5, targets=targets)
    assert torch.equal(roll["locations"], targets)
    at_target = roll["policy_logits"].gather(2, targets[..., None]).squeeze(2)
    assert (at_target > -1e4).all()
    for t in range(1, 5):  # the earlier targets, and only those, are masked at step t
        masked = (roll["policy_logits"][:, t] < -1e4).nonzero()
        assert sorted(map(tuple, masked.tolist())) == sorted((n, int(c)) for n in range(2) for c in targets[n, :t])


def test_too_many_glimpses_is_a_user_error():
    model = embedded("saccader")
    h, w = model.grid_size(EMBEDDED_SIZE)
    with pytest.raises(UserError, match="num_glimpses"):
        model(torch.randn(1, 3, EMBEDDED_SIZE, EMBEDDED_SIZE), h * w + 1)


def test_no_attention_ablation_mixes_only_the_what_features():
    model = embedded("saccader_no_attention")
    assert model.attention is None and model.mix.in_channels == model.representation.what_dim


# -- DRAM ---------------------------------------------------------------------------------------------------------

def test_dram_high_resolution_glimpse_is_the_image_crop():
    model = embedded("dram")
    g, size = model.glimpse_size, EMBEDDED_SIZE
    x = torch.randn(2, 3, size, size)
    # a centre at pixel k + g/2 puts the g samples of the unscaled crop exactly on pixels k .. k+g-1
    corner = torch.tensor([[5, 30], [0, size - g]])
    locations = 2 * (corner + g / 2) / size - 1
    glimpses = model.glimpses(x, locations, g, [True, False, False])
    assert glimpses.shape == (2, 15, g, g)
    for n, (y0, x0) in enumerate(corner.tolist()):
        assert torch.allclose(glimpses[n, :3], x[n, :, y0:y0 + g, x0:x0 + g], atol=1e-5)
    # the pixel box of a DRAM location is that high-resolution crop
    boxes = model.locations_to_pixels(locations, size, g)
    assert boxes.tolist() == [[y0, x0, y0 + g, x0 + g] for y0, x0 in corner.tolist()]
    # masked resolutions are constant maps (their per-channel mean)
    assert torch.allclose(glimpses[:, 5:].std(dim=(2, 3)), torch.zeros(2, 10), atol=1e-6)
    assert model.fields_of_view(224, 77) == [77, 150, 224]


def test_dram_glimpses_reach_the_glimpse_network_in_its_memory_format():
    """A channels_last glimpse network gets channels_last glimpses (else its padded stem input is converted at every
    step), with the same values as NCHW's; the unroll gives the same logits and gradients in either format."""
    x, locations = torch.randn(4, 3, 64, 64), torch.rand(4, 2) * 1.2 - 0.6
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = embedded("dram").eval().to(memory_format=memory_format)  # train-mode BN on 4 images amplifies ulps
        xf = x.contiguous(memory_format=memory_format)
        crop = model.glimpses(xf, locations, model.glimpse_size, [True, False, False])
        assert crop.is_contiguous(memory_format=memory_format)
        out = model(xf, 3, sample=True, generator=torch.Generator().manual_seed(0))
        (out["logits"].logsumexp(1).sum() + out["log_probs"].sum()).backward()
        results.append((crop, out["logits"], torch.cat([p.grad.flatten() for p in model.parameters()])))
    (crop0, logits0, grad0), (crop1, logits1, grad1) = results
    assert torch.equal(crop0, crop1)
    torch.testing.assert_close(logits1, logits0, rtol=1e-4, atol=1e-4)
    assert (grad1 - grad0).norm() / grad0.norm() < 1e-4


def test_dram_position_channels_corners():
    model = embedded("dram")
    crop = model.glimpses(torch.zeros(1, 3, 64, 64), torch.zeros(1, 2), 64, [True, True, True])
    y, x = crop[0, 3], crop[0, 4]
    # upper-left (-1, -1), upper-right (-1, 1), lower-left (1, -1), lower-right (1, 1), as the official utils
    assert [(y[r, c].item(), x[r, c].item()) for r, c in ((0, 0), (0, -1), (-1, 0), (-1, -1))] == \
           [(-1, -1), (-1, 1), (1, -1), (1, 1)]


@pytest.mark.parametrize("gradient", [False, True])
def test_dram_image_gradient_only_when_asked(gradient):
    model = embedded("dram", glimpse_gradient=gradient).eval()
    x = torch.randn(2, 3, EMBEDDED_SIZE, EMBEDDED_SIZE, requires_grad=True)
    out = model(x, 2)
    if gradient:
        out["logits"].sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    else:
        out["logits"].sum().backward()
        assert x.grad is None


def test_dram_outputs_and_pretraining():
    model = embedded("dram")
    x = torch.randn(3, 3, EMBEDDED_SIZE, EMBEDDED_SIZE)
    out = model(x, 4, sample=True, generator=torch.Generator().manual_seed(0))
    scale = 1 - model.glimpse_size / EMBEDDED_SIZE
    assert out["logits"].shape == (3, 10) and out["step_logits"].shape == (3, 4, 10)
    assert torch.equal(out["logits"], out["step_logits"][:, -1])
    assert out["locations"].shape == out["means"].shape == (3, 4, 2)
    assert out["locations"].abs().max() <= scale + 1e-6
    assert out["log_probs"].shape == (3, 4) and torch.isfinite(out["log_probs"]).all()
    wide = int(EMBEDDED_SIZE * 200 / 224)  # the paper's 200 x 200 first pretraining stage, scaled
    assert model.pretrain_forward(x, glimpse_size=wide).shape == (3, 10)
    assert model.pretrain_forward(x).shape == (3, 10)


# -- Saccader-NASNet ----------------------------------------------------------------------------------------------

def test_saccader_nasnet_crops_come_from_the_high_resolution_image():
    model = embedded("saccader_nasnet").eval()
    x, x_high = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 95, 95)
    locs = torch.tensor([[0, 12], [120, 5]])
    crops = model.crops(x, locs, x_high)
    side = 21 * 95 // 64
    assert crops.shape == (4, 3, side, side)
    y0, x0 = 4 * 1 * 95 // 64, 4 * 1 * 95 // 64  # location 12 = cell (1, 1) of the 11 x 11 grid
    assert torch.equal(crops[1], x_high[0, :, y0:y0 + side, x0:x0 + side])
    with torch.no_grad():
        logits, locations, _ = model(x, 3, x_high)
    assert logits.shape == (2, 10) and locations.shape == (2, 3)


# -- every model, forward and backward at embedded size ------------------------------------------------------------

def _loss(name, model, x, x_high, y):
    if name.startswith("bagnet"):
        return F.cross_entropy(model(x).mean((2, 3)), y)
    if name in ("resnet_v2_50", "nasnet_a_large"):
        return F.cross_entropy(model(x), y)
    if name == "dram":
        out = model(x, 3, sample=True)
        return F.cross_entropy(out["logits"], y) - out["log_probs"].mean()
    if name == "saccader_nasnet":
        return F.cross_entropy(model(x, 3, x_high)[0], y)
    out = model.backbone(x)
    roll = model.rollout(out["mixed"], out["logits2d"], 3, sample=True)
    return F.cross_entropy(roll["logits"], y) - roll["log_probs"].mean()


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_at_embedded_size(name):
    model = embedded(name).train()
    x, x_high = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 95, 95)
    _loss(name, model, x, x_high, torch.arange(4)).backward()
    trained = model.nasnet if name == "saccader_nasnet" else model  # its Saccader only chooses locations
    missing = [n for n, p in trained.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trained.parameters())


# -- registry ------------------------------------------------------------------------------------------------------

def test_registry_names_and_errors():
    assert {"bagnet77_lowd", "bagnet77", "resnet_v2_50", "saccader", "saccader_no_attention", "dram",
            "nasnet_a_large", "saccader_nasnet"} <= set(list_models())
    with pytest.raises(UserError, match="unknown override 'width'.*planes"):
        create("bagnet77_lowd", 10, width=3)
    with pytest.raises(UserError, match="unknown model 'resnet50'"):
        create("resnet50", 10)
    with pytest.raises(UserError, match="lowd_dim"):  # the variant-defining argument is not an override
        create("bagnet77", 10, lowd_dim=8)


@pytest.mark.parametrize("config", ["config/embedded.yaml", "config/smoke.yaml"])
def test_every_configured_model_builds(config):
    loaded = load_experiment(REPO / config)
    for name in loaded["models"]:
        assert from_config(name, loaded).training


@pytest.mark.parametrize("config", ["config/embedded.yaml", "config/smoke.yaml", "config.yaml"])
def test_saccader_representation_is_the_configured_bagnet_lowd(config):
    """The Saccader starts from the trained BagNet-lowD weights, so both must have the same shapes."""
    loaded = load_experiment(REPO / config)
    shapes = lambda sd: {k: tuple(v.shape) for k, v in sd.items()}  # noqa: E731
    bagnet = shapes(from_config("bagnet77_lowd", loaded).state_dict())
    for name in ("saccader", "saccader_no_attention"):
        assert shapes(from_config(name, loaded).representation.state_dict()) == bagnet


# -- NASNet scheduled drop path ------------------------------------------------------------------------------------

def _deepest_op_outputs(model, x):
    """Output of the deepest cell's first operation, after the drop-path hook."""
    seen = []
    deepest = [m for name, m in model.named_children() if name.startswith("cell_")][-1]
    deepest.comb_iter_0_left.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    model(x)
    return seen[-1]


def test_nasnet_drop_path_is_off_until_scheduled_and_in_eval():
    model = embedded("nasnet_a_large", drop_path_keep_prob=0.7).train()  # the paper's (the embedded config: 1.0)
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(a, model(x)), "progress 0: no drop path, so only dropout (same seed) varies"
    model.drop_path_progress = 1.0
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_nasnet_keep_prob_one_never_drops_a_path():
    model = embedded("nasnet_a_large", drop_path_keep_prob=1.0).train()
    model.drop_path_progress = 1.0
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    a = _deepest_op_outputs(model, x)
    torch.manual_seed(2)  # other draws: with drop path on, other paths would be dropped
    assert torch.equal(a, _deepest_op_outputs(model, x))


def test_nasnet_drop_path_rate_follows_depth_and_progress():
    """TF-slim v3: drop = (1 - keep) * (cell + 1) / 22 * min(1, progress), for every operation but the identity."""
    model = embedded("nasnet_a_large", drop_path_keep_prob=0.7)
    hooked = sum(len(op._forward_hooks) for name, op in model.named_modules() if ".comb_iter_" in name)
    ops = sum(1 for name, _ in model.named_modules() if name.count(".") == 1 and ".comb_iter_" in name)
    assert hooked == ops > 0
    model.drop_path_progress = 0.5
    assert math.isclose(model.drop_path_prob(1.0), 0.15) and math.isclose(model.drop_path_prob(1 / 22), 0.15 / 22)
    model.drop_path_progress = 2.0  # past the horizon: capped
    assert math.isclose(model.drop_path_prob(1.0), 0.3)
    model.train()
    torch.manual_seed(0)
    out = _deepest_op_outputs(model, torch.randn(400, 3, 64, 64))
    dropped = (out.flatten(1).abs().sum(dim=1) == 0).float().mean().item()
    assert 0.22 < dropped < 0.38, dropped  # 0.3 of the examples; the survivors are scaled by 1 / 0.7


def test_nasnet_drop_path_keep_prob_is_checked():
    with pytest.raises(UserError, match="drop_path_keep_prob"):
        embedded("nasnet_a_large", drop_path_keep_prob=0.0)


def test_nasnet_six_cells_per_stack_is_timms_nasnet_a_large():
    """The generic cell loop wires 6 @ F exactly as timm's hand-written forward."""
    from timm.models.nasnet import NASNetALarge

    model = embedded("nasnet_a_large", cells_per_stack=6).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), NASNetALarge.forward_features(model, x))


@pytest.mark.parametrize("n", [2, 3])
def test_nasnet_fewer_cells_per_stack(n):
    """N @ F keeps the first N normal cells of each stack; drop path counts the cells that are left."""
    model = embedded("nasnet_a_large", cells_per_stack=n, drop_path_keep_prob=0.7)
    names = [name for name, _ in model.named_children() if name.startswith(("cell_", "reduction_cell_"))]
    assert len(names) == 3 * n + 4  # 2 stem cells, 3 stacks, 2 reduction cells
    assert "cell_6" in names and f"cell_{6 + n}" not in names
    full = embedded("nasnet_a_large", cells_per_stack=6)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    model.drop_path_progress = 1.0
    torch.manual_seed(0)
    dropped = (_deepest_op_outputs(model.train(), torch.randn(400, 3, 64, 64)).flatten(1).abs().sum(1) == 0)
    assert 0.22 < dropped.float().mean().item() < 0.38  # the deepest remaining cell gets the full 0.3
    out = model.eval()(torch.randn(2, 3, 21, 21))  # a Saccader-NASNet glimpse
    assert out.shape == (2, EMBEDDED["dataset"]["num_classes"])


def test_nasnet_cells_per_stack_is_checked():
    with pytest.raises(UserError, match="cells_per_stack"):
        embedded("nasnet_a_large", cells_per_stack=1)
