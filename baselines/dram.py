"""DRAM, the Deep Recurrent Attention Model (Ba et al. 2014; Sermanet et al. 2015) as the Saccader paper adapts it
(Appendix C) and the official code builds it (``visual_attention/dram.py``, reference-notes §4).

Per step: multi-resolution glimpses around the current location (fields of view linspace(g/H, 1, 3) * H, i.e. 77,
150, 224 px at paper scale, each resized to g x g), with 2 coordinate channels (y, x in [-1, 1], CoordConv) appended
to the image before cropping, are stacked on channels (15 = 3 x 5) and encoded by a ResNet-v2-50 without logits;
classification LSTM (1024) -> logits; location LSTM (1024) -> emission Linear(1024, 2) -> tanh, scaled by
1 - g/H so that a glimpse stays inside the image. The classification path sees only the high-resolution glimpse: the
middle and low resolutions are replaced by their per-channel spatial mean (constant maps, no gradient). Before the
first glimpse a "pre-time" step at the centre uses all three resolutions; its classification state is then reset and
its location state kept, so its emitted location is glimpse 1 (the only way the location path sees the wide field).

Emission network: the paper's text has a hidden FC of 1024 units with ReLU before the 2-d tanh layer, but the
released config has none (``num_units_fc_layers=None``) and only that matches Table Supp.1 (45,610,219; the FC adds
1,049,600 = 1024*1024 + 1024). ``emission_hidden`` builds it on request; the default follows the count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.resnet_v2 import ResNetV2
from saccader import losses
from saccader.catalog import objective
from saccader.errors import UserError
from saccader.models.precision import float32, widen
from saccader.objectives import Objective, monte_carlo

__all__ = ["DRAM", "TFLSTMCell", "position_channels", "DRAMPretrain", "DRAMHybrid"]


class TFLSTMCell(nn.Module):
    """TF1 ``LSTMCell``: one kernel over [x, h], one bias, gates (i, j, f, o), forget_bias 1.0 added at run time.

    Written by hand because ``torch.nn.LSTMCell`` has two bias vectors, which adds 4 * units parameters per cell and
    would break the Table Supp.1 count; the dynamics are otherwise the same.
    """

    def __init__(self, input_size: int, units: int, forget_bias: float = 1.0):
        super().__init__()
        self.units, self.forget_bias = units, forget_bias
        self.kernel = nn.Linear(input_size + units, 4 * units)
        nn.init.xavier_uniform_(self.kernel.weight)
        nn.init.zeros_(self.kernel.bias)

    def zero_state(self, batch: int, like: torch.Tensor):
        zeros = like.new_zeros(batch, self.units)
        return zeros, zeros

    def forward(self, x: torch.Tensor, state):
        c, h = state
        i, j, f, o = self.kernel(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(j)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (c, h)


def position_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) coordinates: channel 0 = y, 1 = x, from -1 (top/left) to 1 (bottom/right), as ``utils``."""
    n, _, h, w = images.shape
    ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
    return grid.expand(n, -1, -1, -1)


class DRAM(nn.Module):
    """DRAM with a ResNet-v2 glimpse network.

    Args:
        num_classes: classifier outputs (1001 at paper scale).
        glimpse_size: g, side of every glimpse after resizing, and the high-resolution field of view (77).
        num_resolutions: glimpse scales (3).
        layers, widths, strides, stem_channels, bn_momentum: the glimpse ResNet-v2 (see ``ResNetV2``).
        lstm_units: classification LSTM size (1024).
        location_units: location LSTM size (1024).
        emission_hidden: hidden ReLU FC of the emission network (paper text: 1024); None = released config.
        sampling_stddev: sigma of the Gaussian location policy in training (0.1).
        glimpse_gradient: let gradients flow into the image through the glimpses (the official code stops them;
            PGD needs them, reference-notes §6).
    """

    def __init__(self, num_classes: int = 1001, glimpse_size: int = 77, num_resolutions: int = 3,
                 layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), strides=(2, 2, 2, 1), stem_channels: int = 64,
                 bn_momentum: float = 0.003, lstm_units: int = 1024, location_units: int = 1024,
                 emission_hidden: int | None = None, sampling_stddev: float = 0.1, glimpse_gradient: bool = False):
        super().__init__()
        self.glimpse_size, self.num_resolutions = glimpse_size, num_resolutions
        self.sampling_stddev, self.glimpse_gradient = sampling_stddev, glimpse_gradient
        self.glimpse_net = ResNetV2(None, 5 * num_resolutions, layers, widths, strides, stem_channels, bn_momentum)
        self.classification_lstm = TFLSTMCell(self.glimpse_net.num_features, lstm_units)
        self.classifier = nn.Linear(lstm_units, num_classes)
        self.location_lstm = TFLSTMCell(lstm_units, location_units)
        hidden = [nn.Linear(location_units, emission_hidden), nn.ReLU(inplace=True)] if emission_hidden else []
        self.emission = nn.Sequential(*hidden, nn.Linear(emission_hidden or location_units, 2))
        for m in [self.classifier, *self.emission]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # -- glimpses -----------------------------------------------------------------------------------------------
    def fields_of_view(self, image_size: int, glimpse_size: int) -> list[int]:
        """Sides of the crops: g, then int(linspace(g/H, 1, R)[r] * H) (77, 150, 224 at paper scale)."""
        r = self.num_resolutions
        # int((g/H + (1 - g/H) * k/(R-1)) * H) in exact integer arithmetic (no 223.999 at the full image).
        return [glimpse_size] + [(glimpse_size * (r - 1) + (image_size - glimpse_size) * k) // (r - 1)
                                 for k in range(1, r)]

    def glimpses(self, images: torch.Tensor, locations: torch.Tensor, glimpse_size: int,
                 use_resolution: list[bool]) -> torch.Tensor:
        """(N, 5R, g, g): crops of [image, y, x] centred at ``locations`` (y, x in [-1, 1]), resized to g.

        Crop-then-bilinear-resize is one ``grid_sample`` over an affine grid whose output pixel centres sit at
        ``centre + fov * ((2u + 1) / g - 1) / 2``; border padding edge-replicates like the official
        ``extract_glimpse``. A masked resolution becomes its per-channel spatial mean, without gradient.
        """
        return self._crop(self._source(images), locations, glimpse_size, use_resolution)

    def _source(self, images: torch.Tensor) -> torch.Tensor:
        """[image, y, x]: built once per unroll, not once per step (a per-step concatenation weighs on a CPU step)."""
        n, _, h, w = images.shape
        if h != w:
            raise UserError(f"DRAM needs square images, got {h}x{w}", "resize the images to a square")
        source = torch.cat([images, position_channels(images)], dim=1)
        return source if self.glimpse_gradient else source.detach()

    def _crop(self, source: torch.Tensor, locations: torch.Tensor, glimpse_size: int,
              use_resolution: list[bool]) -> torch.Tensor:
        n, c, h, _ = source.shape
        out = []
        for fov, use in zip(self.fields_of_view(h, glimpse_size), use_resolution):
            theta = source.new_zeros(n, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = fov / h
            theta[:, 0, 2], theta[:, 1, 2] = locations[:, 1], locations[:, 0]  # affine_grid wants (x, y)
            grid = F.affine_grid(theta, (n, c, glimpse_size, glimpse_size), align_corners=False)
            g = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
            out.append(g if use else g.mean(dim=(2, 3), keepdim=True).detach().expand_as(g))
        # grid_sample writes NCHW; a channels_last glimpse network would convert its padded input at every step.
        return torch.cat(out, dim=1).contiguous(memory_format=self._glimpse_format())

    def _glimpse_format(self) -> torch.memory_format:
        w = self.glimpse_net.stem.weight
        cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        return torch.channels_last if cl else torch.contiguous_format

    # -- one cell step ------------------------------------------------------------------------------------------
    def _cell(self, source, locations, state, glimpse_size, use_resolution):
        feats = self.glimpse_net(self._crop(source, locations, glimpse_size, use_resolution))
        out0, state0 = self.classification_lstm(feats, state[0])
        logits = self.classifier(out0)
        out1, state1 = self.location_lstm(out0, state[1])
        return logits, out1, (state0, state1)

    def _emit(self, out1, scale: float, sample: bool, generator):
        """Location mean tanh(W h) * scale; in training a Gaussian sample (sigma), clipped, without gradient.

        The mean, noise, location and log-probability are float32 under autocast (``saccader.models.precision``):
        in bf16 a location has about 2-3 significant digits and its log-probability's rounding enters REINFORCE.
        """
        with float32(out1):
            mean = torch.tanh(self.emission(widen(out1))) * scale
            if not sample:
                return mean, mean, torch.zeros_like(mean[:, 0])
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            loc = (mean + self.sampling_stddev * noise).clamp(-scale, scale).detach()
            # validate_args=False: validation checks loc, scale and the sample with bool(tensor.all()), three host
            # waits per glimpse on a GPU; the arguments are finite by construction (tanh, a positive constant).
            normal = torch.distributions.Normal(mean, self.sampling_stddev, validate_args=False)
            return loc, mean, normal.log_prob(loc).sum(dim=1)

    def forward(self, images: torch.Tensor, num_glimpses: int, sample: bool = False,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Unroll DRAM for T = ``num_glimpses`` steps after the pre-time step.

        Returns:
            dict with logits (N, C) of the last step (the prediction), step_logits (N, T, C), locations (N, T, 2)
            glimpse centres (y, x) in [-1, 1], means (N, T, 2) the emitted means, log_probs (N, T) of the sampled
            locations under the Gaussian policy (zeros when not sampling).
        """
        if num_glimpses < 1:
            raise UserError(f"num_glimpses = {num_glimpses} must be at least 1", "ask for one glimpse or more")
        n, g = images.shape[0], self.glimpse_size
        scale = 1.0 - g / images.shape[-1]
        all_res = [True] * self.num_resolutions
        high_only = [True] + [False] * (self.num_resolutions - 1)
        zero0 = self.classification_lstm.zero_state(n, images)
        state = (zero0, self.location_lstm.zero_state(n, images))
        source = self._source(images)
        _, out1, state = self._cell(source, images.new_zeros(n, 2), state, g, all_res)
        state = (zero0, state[1])  # pre-time: reset the classification state, keep the location state
        loc, mean, log_prob = self._emit(out1, scale, sample, generator)
        step_logits, locations, means, log_probs = [], [], [], []
        for _ in range(num_glimpses):
            locations.append(loc), means.append(mean), log_probs.append(log_prob)
            logits, out1, state = self._cell(source, loc, state, g, high_only)
            step_logits.append(logits)
            loc, mean, log_prob = self._emit(out1, scale, sample, generator)
        step_logits = torch.stack(step_logits, dim=1)
        return {"logits": step_logits[:, -1], "step_logits": step_logits, "locations": torch.stack(locations, 1),
                "means": torch.stack(means, 1), "log_probs": torch.stack(log_probs, 1)}

    def pretrain_forward(self, images: torch.Tensor, glimpse_size: int | None = None, num_steps: int = 2,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Classification pretraining (Appendix C): uniform random locations, ``num_steps`` steps, mean logits.

        The paper pretrains in two stages, first with a 200 x 200 high-resolution field of view, then 77 x 77
        (``glimpse_size``); the logits of all steps are averaged into one cross-entropy. The classification path is
        the one used in full training (high resolution only). Returns (N, C) averaged logits.
        """
        g = glimpse_size or self.glimpse_size
        if not 1 <= g <= images.shape[-1]:
            raise UserError(f"DRAM pretraining glimpse size {g} is outside 1..{images.shape[-1]}",
                            "use a glimpse no larger than the image")
        n, scale = images.shape[0], 1.0 - g / images.shape[-1]
        high_only = [True] + [False] * (self.num_resolutions - 1)
        state = (self.classification_lstm.zero_state(n, images), self.location_lstm.zero_state(n, images))
        source, logits = self._source(images), []
        for _ in range(num_steps):
            u = torch.rand((n, 2), generator=generator, device=images.device, dtype=images.dtype)
            logit, _, state = self._cell(source, (2 * u - 1) * scale, state, g, high_only)
            logits.append(logit)
        return torch.stack(logits, dim=1).mean(dim=1)

    @staticmethod
    def locations_to_pixels(locations: torch.Tensor, image_size: int, glimpse_size: int) -> torch.Tensor:
        """(…, 2) centres in [-1, 1] -> (…, 4) boxes (y0, x0, y1, x1) of the g x g high-resolution glimpse."""
        centre = (locations + 1) * image_size / 2
        y0x0 = torch.floor(centre - glimpse_size / 2).long().clamp(0, image_size - glimpse_size)
        return torch.cat([y0x0, y0x0 + glimpse_size], dim=-1)



@objective("dram_pretrain")
class DRAMPretrain(Objective):
    """DRAM classification pre-training (Appendix C): cross-entropy of the logits averaged over ``num_glimpses``
    uniformly random glimpses of side ``glimpse_size`` (``DRAM.pretrain_forward``)."""

    def _logits(self, model, rec, images, generator=None):
        return model.pretrain_forward(images, glimpse_size=rec.get("glimpse_size"), num_steps=rec["num_glimpses"],
                                      generator=generator)

    def loss(self, model, rec, images, labels, generator, baseline=None):
        logits = self._logits(model, rec, images, generator)
        return losses.classification_loss(logits, labels), losses.correct(logits, labels)

    def predict(self, model, rec, images):
        return self._logits(model, rec, images)


@objective("dram")
class DRAMHybrid(Objective):
    """The DRAM hybrid loss (Ba et al. 2014; Appendix C): cross-entropy plus ``reinforce_weight`` (0.1) times
    REINFORCE over S sampled trajectories (``mc_samples``), unrolled as one batch of S * N images as tiling the batch
    does in TF; test time: the mean-location policy."""

    samples = True

    def loss(self, model, rec, images, labels, generator, baseline=None):
        s = rec.get("mc_samples", 2)
        out = model(torch.cat([images] * s), rec["num_glimpses"], sample=True, generator=generator)
        outs = [{"logits": lg, "log_probs": lp} for lg, lp in zip(out["logits"].chunk(s), out["log_probs"].chunk(s))]
        return monte_carlo(outs, labels, losses.dram_hybrid_loss, rec.get("reinforce_weight", 0.1), self.global_mean,
                           baseline)

    def predict(self, model, rec, images):
        return model(images, rec["num_glimpses"], sample=False)["logits"]
