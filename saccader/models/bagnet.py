"""BagNet-q and BagNet-q-lowD: the Saccader's representation network (Section 3.1, Fig. Supp.4).

Brendel & Bethge (ICLR 2019) BagNets, as built by the official Saccader code (``feedforward/bagnet_model.py``,
reference-notes §1): a ResNet-50 bottleneck layout in which block i of group g uses a 3x3 convolution only if
``i < kernel3[g]`` (1x1 otherwise) and every convolution is VALID, so output cell (i, j) sees exactly the pixels
``[stride*i, stride*i + q)`` of the input. Paper scale: kernel3 (2, 2, 2, 2), strides (2, 2, 2, 1) give q = 77,
stride 8 and a 19 x 19 grid at 224. BagNet-77-lowD adds a 1x1 conv + BN + ReLU to 512 "what" features before the
per-location 1x1 classifier; BagNet-77 classifies the 2048-d features directly. The image logits are the spatial mean
of the per-location logits (eq. 4 / eq. 7), taken by the training code.

Differences from the official TF code, all without effect on the parameter count:
- the official projection shortcut applies its BatchNorm to the main branch a second time instead of to the
  projected residual (reference-notes §1.1); we put the BN on the shortcut, as torchvision's ResNet does.
- initialisation follows TF's ``tf.layers`` defaults (Glorot-uniform kernels, zero biases) and the official zero
  gamma in each block's last BN.
Differences from the PyTorch BagNet of Brendel & Bethge: a single 3x3 stem conv, residuals cropped centrally (not
top-left) before the projection, and the optional lowD bottleneck (reference-notes §1.4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from saccader.models.precision import float32, widen

__all__ = ["BagNet", "Bottleneck"]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # TF momentum 0.9 = PyTorch 0.1


def bn(channels: int, zero_gamma: bool = False) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if zero_gamma:
        nn.init.zeros_(layer.weight)
    return layer


def init_tf_(module: nn.Module) -> None:
    """TF ``tf.layers`` defaults: Glorot-uniform conv/dense kernels, zero biases (BN layers are left as built)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Bottleneck(nn.Module):
    """1x1 -> kxk (VALID, carries the stride) -> 1x1 (x expansion), residual cropped to the VALID output."""

    def __init__(self, in_channels: int, planes: int, expansion: int, stride: int, kernel_size: int):
        super().__init__()
        out_channels = planes * expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, stride=stride, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = bn(out_channels, zero_gamma=True)
        self.relu = nn.ReLU(inplace=True)
        self.crop = (kernel_size - 1) // 2
        self.downsample, self.shortcut_stride = None, stride
        if stride != 1 or in_channels != out_channels:
            # The projection is a 1x1 conv with stride s, run as a 1x1 conv of every s-th pixel (the same sum):
            # torch 2.14's oneDNN backward of the strided 1x1 conv corrupts memory in channels_last on CPU (8 input
            # channels, 60 x 60), and slicing first also makes an NCHW step faster (bench/README.md, channels_last).
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), bn(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x
        if self.crop:  # the VALID kxk conv lost `crop` pixels per side; centre the shortcut on the same pixels
            c = self.crop
            residual = residual[:, :, c:-c, c:-c]
        if self.downsample is not None:
            s = self.shortcut_stride
            residual = self.downsample(residual[:, :, ::s, ::s] if s > 1 else residual)
        return self.relu(out + residual)


class BagNet(nn.Module):
    """BagNet-q(-lowD). ``forward`` returns per-location logits (N, num_classes, h, w).

    Args:
        num_classes: classifier outputs (1001 at paper scale: label 0 is the background class of the official code).
        blocks: bottleneck blocks per group (ResNet-50: 3, 4, 6, 3).
        planes: bottleneck widths per group; group outputs are ``planes * expansion``.
        expansion: bottleneck expansion (4).
        strides: stride of the first block of each group.
        kernel3: per group, how many leading blocks use a 3x3 conv (the rest use 1x1); sets q.
        stem_channels: width of the 3x3 VALID stem conv.
        lowd_dim: width of the lowD "what" bottleneck (512); ``None`` builds the plain BagNet (no bottleneck).
    """

    def __init__(self, num_classes: int = 1001, blocks=(3, 4, 6, 3), planes=(64, 128, 256, 512), expansion: int = 4,
                 strides=(2, 2, 2, 1), kernel3=(2, 2, 2, 2), stem_channels: int = 64, lowd_dim: int | None = 512):
        super().__init__()
        if not len(blocks) == len(planes) == len(strides) == len(kernel3):
            raise ValueError("blocks, planes, strides and kernel3 need one entry per group")
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, bias=False), bn(stem_channels), nn.ReLU(inplace=True))
        # (kernel, stride) of every conv on the spatial path, for the receptive field and the grid size.
        self._spatial = [(3, 1)]
        groups, channels = [], stem_channels
        for n, width, stride, k3 in zip(blocks, planes, strides, kernel3):
            layers = []
            for i in range(n):
                k, s = (3 if i < k3 else 1), (stride if i == 0 else 1)
                layers.append(Bottleneck(channels, width, expansion, s, k))
                self._spatial.append((k, s))
                channels = width * expansion
            groups.append(nn.Sequential(*layers))
        self.groups = nn.Sequential(*groups)
        self.num_features = channels
        if lowd_dim is None:
            self.lowd = None
            self.what_dim = channels
        else:
            self.lowd = nn.Sequential(nn.Conv2d(channels, lowd_dim, 1, bias=False), bn(lowd_dim), nn.ReLU(inplace=True))
            self.what_dim = lowd_dim
        self.classifier = nn.Conv2d(self.what_dim, num_classes, 1, bias=True)
        # The Saccader ranks cells by these logits (eq 5 targets, rewards): it asks for them in float32 under autocast,
        # where bf16 rounding ties neighbouring cells (saccader.models.precision). A BagNet alone needs no such thing.
        self.float32_logits = False
        init_tf_(self)

    @property
    def receptive_field(self) -> int:
        """q: side in pixels of the patch one output location sees (rf += jump*(k-1); jump *= s)."""
        rf, jump = 1, 1
        for k, s in self._spatial:
            rf, jump = rf + jump * (k - 1), jump * s
        return rf

    @property
    def stride(self) -> int:
        """Pixels between neighbouring output locations."""
        return math.prod(s for _, s in self._spatial)

    def grid_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the location grid for an input of ``image_size`` (VALID: out = ceil((in - k + 1) / s))."""
        sizes = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        out = []
        for n in sizes:
            for k, s in self._spatial:
                n = -(-(n - k + 1) // s)
            out.append(n)
        return tuple(out)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (N, 2048, h, w); what (N, 512, h, w) = the lowD features (= features without lowD); logits2d."""
        features = self.groups(self.stem(x))
        what = features if self.lowd is None else self.lowd(features)
        if not self.float32_logits:
            return {"features": features, "what": what, "logits2d": self.classifier(what)}
        with float32(what):
            return {"features": features, "what": what, "logits2d": self.classifier(widen(what))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["logits2d"]
