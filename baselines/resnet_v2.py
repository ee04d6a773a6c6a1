"""ResNet-v2-50 (He et al. 2016, pre-activation) as TF-slim's ``resnet_v2_50``: the full-image baseline, the occlusion
classifier (Fig. 5b) and DRAM's glimpse network (Appendix C).

Written by hand rather than taken from timm because Table Supp.1 counts TF-slim's exact layout (reference-notes §1.6):
the stem conv, each unit's last 1x1 conv and the projection shortcuts carry biases (they are not followed by BN),
and the stride sits on the *last* unit of a block. timm's ``ResNetV2`` has no such biases and strides the first
unit, so its count cannot match 25,615,849. TF-slim details kept: SAME padding computed as TF does (asymmetric for
even inputs), an identity shortcut subsampled by striding, a final post-norm BN + ReLU, global average pooling and a
1x1 logits layer with bias; He (fan-in) initialisation and BN momentum 0.997 as ``resnet_arg_scope``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResNetV2", "tf_same_pad"]


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad like TF's SAME: total max((ceil(n/s) - 1) * s + k - n, 0), the extra pixel at the bottom/right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class SameConv2d(nn.Conv2d):
    """Conv2d with TF SAME padding (slim's ``conv2d_same`` pads explicitly and is identical for odd kernels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(tf_same_pad(x, self.kernel_size[0], self.stride[0]))


class PreActBottleneck(nn.Module):
    """slim ``resnet_v2.bottleneck``: BN-ReLU preact; 1x1 -> 3x3 (stride) -> 1x1 with bias; shortcut from preact."""

    def __init__(self, in_channels: int, depth: int, bottleneck: int, stride: int, bn_momentum: float):
        super().__init__()
        self.preact = nn.BatchNorm2d(in_channels, eps=1e-5, momentum=bn_momentum)
        self.stride = stride
        self.shortcut = nn.Conv2d(in_channels, depth, 1, stride=stride, bias=True) if in_channels != depth else None
        self.conv1 = nn.Conv2d(in_channels, bottleneck, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(bottleneck, eps=1e-5, momentum=bn_momentum)
        self.conv2 = SameConv2d(bottleneck, bottleneck, 3, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(bottleneck, eps=1e-5, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(bottleneck, depth, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.preact(x))
        # slim: identity shortcuts subsample the *input* (max_pool 1x1 with stride); projections read the preact.
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.shortcut is None else self.shortcut(preact)
        out = F.relu(self.bn1(self.conv1(preact)))
        out = F.relu(self.bn2(self.conv2(out)))
        return shortcut + self.conv3(out)


class ResNetV2(nn.Module):
    """ResNet-v2 (slim ``resnet_v2_50`` by default).

    Args:
        num_classes: logits (1001 at paper scale); ``None`` drops the logits layer (DRAM's glimpse network), and
            ``forward`` then returns the pooled features.
        in_channels: input channels (3; 15 for DRAM's three 5-channel glimpses).
        layers: units per block (3, 4, 6, 3).
        widths: bottleneck width per block; block outputs are 4x (64, 128, 256, 512).
        strides: stride of each block, applied in its last unit (2, 2, 2, 1).
        stem_channels: channels of the 7x7 stride-2 stem conv (64).
        bn_momentum: PyTorch BN momentum (0.003 = slim's decay 0.997).
    """

    def __init__(self, num_classes: int | None = 1001, in_channels: int = 3, layers=(3, 4, 6, 3),
                 widths=(64, 128, 256, 512), strides=(2, 2, 2, 1), stem_channels: int = 64,
                 bn_momentum: float = 0.003):
        super().__init__()
        self.stem = SameConv2d(in_channels, stem_channels, 7, stride=2, bias=True)
        units, channels = [], stem_channels
        for n, width, stride in zip(layers, widths, strides):
            for i in range(n):
                units.append(PreActBottleneck(channels, 4 * width, width, stride if i == n - 1 else 1, bn_momentum))
                channels = 4 * width
        self.units = nn.Sequential(*units)
        self.postnorm = nn.BatchNorm2d(channels, eps=1e-5, momentum=bn_momentum)
        self.num_features = channels
        self.logits = nn.Conv2d(channels, num_classes, 1, bias=True) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Post-norm feature map (N, 2048, h, w)."""
        x = self.stem(x)
        x = F.max_pool2d(tf_same_pad(x, 3, 2, value=float("-inf")), 3, stride=2)
        return F.relu(self.postnorm(self.units(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes), or the pooled features (N, 2048) when built without a logits layer."""
        pooled = self.forward_features(x).mean(dim=(2, 3), keepdim=True)
        return pooled.flatten(1) if self.logits is None else self.logits(pooled).flatten(1)
