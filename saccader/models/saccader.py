"""The Saccader model (Section 3.1, eqs. 1-3, Figs. Supp.4-6), as the official code builds it (reference-notes §2).

Representation network: BagNet-77-lowD (``bagnet.py``) giving features (2048), what features (512) and per-location
logits. Attention ("where") network (Fig. Supp.5): ``attention_groups`` groups of ``attention_layers_per_group``
convolutions on the 2048-d features, group i having ``features / 2**(i+1)`` filters; the last layer of a group is a
3x3 conv with dilation 2, the others 1x1; all SAME-padded, without bias, each followed by BN + ReLU. The where and what
features are concatenated ([where, what], in that order) and mixed by a 1x1 conv with bias and no activation into
F (512 channels).

Saccader cell (eqs. 1-3, Fig. Supp.6), one step, with C the visited mask:
    G  = (F . a) / sqrt(d) - 1e5 C            spatial logits (the paper's eq. 1 calls the left side C, a typo)
    G~ = softmax over the h*w locations       space first
    h~ = softmax over channels of sum_ij F_ij G~_ij      channels second
    R  = sum_k F_k h~_k - 1e5 C;  policy = softmax over locations of R      (mask applied twice)
The location is argmax R at test time and a sample of softmax(R) in training; the prediction is the mean over time
of the representation network's logits gathered at the chosen cells.

Ablation ``saccader_no_attention`` (Fig. Supp.3): the official code has no switch for it, so we drop the attention
network and compute F = mix(what) with the same 1x1 mixing conv (what -> 512, with bias); the cell is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from saccader.errors import UserError
from saccader.models.bagnet import BagNet, bn, init_tf_
from saccader.models.precision import float32, widen

__all__ = ["Saccader", "AttentionNetwork"]

MASK = 1e5  # the official -1e5 * C penalty on visited locations


class AttentionNetwork(nn.Sequential):
    """The "where" network of Fig. Supp.5: 2048 -> 1024 (1x1) -> 1024 (3x3, d2) -> 512 (1x1) -> 512 (3x3, d2)."""

    def __init__(self, in_channels: int, groups: int = 2, layers_per_group: int = 2):
        layers, channels = [], in_channels
        for i in range(groups):
            filters = in_channels // 2 ** (i + 1)
            for j in range(layers_per_group):
                last = j == layers_per_group - 1
                conv = (nn.Conv2d(channels, filters, 3, padding=2, dilation=2, bias=False) if last
                        else nn.Conv2d(channels, filters, 1, bias=False))
                layers += [conv, bn(filters), nn.ReLU(inplace=True)]
                channels = filters
        super().__init__(*layers)
        self.out_channels = channels


class Saccader(nn.Module):
    """Saccader: BagNet-lowD + attention network + mixing conv + Saccader cell.

    Args:
        num_classes: classifier outputs (1001 at paper scale).
        blocks, planes, expansion, strides, kernel3, stem_channels, lowd_dim: the BagNet-lowD (see ``BagNet``).
        attention: build the attention network (False = the ``saccader_no_attention`` ablation).
        attention_groups, attention_layers_per_group: depth of the attention network (2 and 2).
        mixed_dim: d, the channels of the mixed features F and of the cell vector a (512).
    """

    def __init__(self, num_classes: int = 1001, blocks=(3, 4, 6, 3), planes=(64, 128, 256, 512), expansion: int = 4,
                 strides=(2, 2, 2, 1), kernel3=(2, 2, 2, 2), stem_channels: int = 64, lowd_dim: int = 512,
                 attention: bool = True, attention_groups: int = 2, attention_layers_per_group: int = 2,
                 mixed_dim: int = 512):
        super().__init__()
        self.representation = BagNet(num_classes, blocks, planes, expansion, strides, kernel3, stem_channels, lowd_dim)
        rep = self.representation
        rep.float32_logits = True  # cells are ranked by logits2d: no bf16 ties (saccader.models.precision)
        if attention:
            self.attention = AttentionNetwork(rep.num_features, attention_groups, attention_layers_per_group)
            mix_in = self.attention.out_channels + rep.what_dim
        else:
            self.attention = None
            mix_in = rep.what_dim
        self.mix = nn.Conv2d(mix_in, mixed_dim, 1, bias=True)
        init_tf_(self.attention or nn.Identity())
        init_tf_(self.mix)
        # a: the cell's dense(units=1, use_bias=False) kernel, Glorot-uniform over its (d, 1) shape.
        bound = math.sqrt(6.0 / (mixed_dim + 1))
        self.a = nn.Parameter(torch.empty(mixed_dim).uniform_(-bound, bound))

    # The geometry of a location is that of the representation network.
    @property
    def receptive_field(self) -> int:
        return self.representation.receptive_field

    @property
    def stride(self) -> int:
        return self.representation.stride

    def grid_size(self, image_size):
        return self.representation.grid_size(image_size)

    def location_parameters(self):
        """Parameters of the location path (attention net, mixing conv, a): what eq. 5 trains."""
        modules = [self.mix] + ([self.attention] if self.attention is not None else [])
        return [p for m in modules for p in m.parameters()] + [self.a]

    def backbone(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of the networks: features, what, logits2d (representation) and mixed = F (Fig. Supp.4)."""
        out = self.representation.forward_features(images)
        if self.attention is None:
            mixed = self.mix(out["what"])
        else:
            mixed = self.mix(torch.cat([self.attention(out["features"]), out["what"]], dim=1))
        out["mixed"] = mixed
        return out

    def rollout(self, mixed: torch.Tensor, logits2d: torch.Tensor, num_glimpses: int, sample: bool = False,
                generator: torch.Generator | None = None,
                targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Unroll the Saccader cell (eqs. 1-3) for ``num_glimpses`` steps on a given F and logits2d.

        Args:
            mixed: F, (N, d, h, w).
            logits2d: per-location logits (N, C, h, w).
            num_glimpses: T, at most h*w (a location is never visited twice).
            sample: draw each location from the policy (training) instead of taking its argmax (test).
            generator: random generator for the samples.
            targets: (N, T) cells to visit instead of the policy's own choice (location pre-training, eq 5: the
                state C^{t-1} follows the target locations, so pi(l_target^t | X, C^{t-1}) is never masked).

        Returns:
            dict with logits (N, C) = mean over t of the gathered logits, glimpse_logits (N, T, C), locations (N, T)
            flat indices into the h x w grid, policy_logits (N, T, h*w) = the masked R, and log_probs (N, T) of the
            chosen cells under softmax(R).
        """
        with float32(mixed):  # the cell, its samples, argmaxes and log-probs in float32 (precision.py)
            return self._rollout(widen(mixed), widen(logits2d), num_glimpses, sample, generator, targets)

    def _rollout(self, mixed, logits2d, num_glimpses, sample, generator, targets):
        n, d, h, w = mixed.shape
        cells = h * w
        if targets is not None and tuple(targets.shape) != (n, num_glimpses):
            raise ValueError(f"targets must have shape {(n, num_glimpses)}, got {tuple(targets.shape)}")
        if not 1 <= num_glimpses <= cells:
            raise UserError(f"num_glimpses = {num_glimpses} is outside 1..{cells} (the {h}x{w} location grid)",
                            "ask for at most one glimpse per location")
        feats = mixed.flatten(2)                                   # (N, d, L)
        flat_logits = logits2d.flatten(2)                          # (N, C, L)
        # Row-vector x matrix bmm products instead of einsum: einsum lowers two of these contractions to batched
        # matrix-vector products plus a copy of F per step, much slower on CPU (bench/p1_saccader_inference.py).
        feats_t = feats.transpose(1, 2)                           # (N, L, d), a view
        space = (self.a @ feats) / math.sqrt(d)                    # (N, L)
        visited = feats.new_zeros(n, cells)
        locations, policy_logits = [], []
        for _ in range(num_glimpses):
            mask = MASK * visited
            g = torch.softmax(space - mask, dim=1)                                 # eq. 1: softmax over space
            h_t = torch.softmax(torch.bmm(g[:, None], feats_t)[:, 0], dim=1)       # eq. 2: softmax over channels
            r = torch.bmm(h_t[:, None], feats)[:, 0] - mask                        # eq. 3: policy logits
            if targets is not None:
                loc = targets[:, len(locations)]
            elif sample:
                loc = torch.multinomial(torch.softmax(r, dim=1), 1, generator=generator).squeeze(1)
            else:
                loc = r.argmax(dim=1)
            # The mask is a constant of the chosen cells: a new tensor, so autograd keeps earlier steps' values.
            visited = visited.scatter(1, loc[:, None], 1.0)
            locations.append(loc)
            policy_logits.append(r)
        # Everything that does not feed the next step is computed once for all T steps.
        locations = torch.stack(locations, dim=1)                                  # (N, T)
        policy_logits = torch.stack(policy_logits, dim=1)                          # (N, T, L)
        log_probs = torch.log_softmax(policy_logits, dim=2).gather(2, locations[..., None]).squeeze(2)
        index = locations[:, None, :].expand(-1, flat_logits.shape[1], -1)
        glimpse_logits = flat_logits.gather(2, index).transpose(1, 2)              # (N, T, C)
        return {"logits": glimpse_logits.mean(dim=1), "glimpse_logits": glimpse_logits, "locations": locations,
                "policy_logits": policy_logits, "log_probs": log_probs}

    def forward(self, images: torch.Tensor, num_glimpses: int):
        """Test-time Saccader (argmax policy): (logits (N, C), locations (N, T), policy (N, T, h*w) probabilities)."""
        out = self.backbone(images)
        roll = self.rollout(out["mixed"], out["logits2d"], num_glimpses)
        return roll["logits"], roll["locations"], torch.softmax(roll["policy_logits"], dim=-1)
