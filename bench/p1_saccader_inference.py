"""P1: Saccader inference (T = 6, argmax policy) vs the forward of its networks alone on the same batch.

    python bench/p1_saccader_inference.py [--scale embedded|paper] [--batch N] [--rounds R] [--out FILE.json]

Variants, each timed in eval mode without gradients on one fixed batch:
    saccader   model(images, T): BagNet-lowD + attention network + mixing conv + T cell steps (what evaluation runs)
    networks   model.backbone(images): the networks alone (BagNet-lowD + attention network + mixing conv)
    bagnet     model.representation(images): BagNet-lowD alone
    cell       model.rollout(F, logits2d, T) on precomputed F: the cell loop, masking and glimpse gathering
Targets: saccader / networks <= 1.05; saccader / bagnet about 1.4 at 224 (the attention network's share).
``(networks+cell)/networks`` is the same ratio from the parts: ``Saccader.forward`` is ``backbone`` then ``rollout``,
and at paper scale on a CPU a few rounds of a one-second forward are noisier than the cell itself.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (puts the repository on sys.path)
import torch

from common import embedded_config, interleaved, report, setup_threads


def build(scale: str):
    """(model, image size): the embedded Saccader of config/embedded.yaml, or the paper's at 224."""
    from saccader.models import create, from_config

    if scale == "paper":
        return create("saccader", 1001), 224
    config = embedded_config()
    return from_config("saccader", config), config["dataset"]["image_size"]


def measure(scale: str = "embedded", batch: int = 64, glimpses: int = 6, rounds: int = 15, seed: int = 0) -> dict:
    """Median seconds of each variant and the P1 ratios."""
    torch.manual_seed(seed)
    model, size = build(scale)
    model.eval()
    images = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        out = model.backbone(images)
        mixed, logits2d = out["mixed"], out["logits2d"]
        t = interleaved({
            "saccader": lambda: model(images, glimpses),
            "networks": lambda: model.backbone(images),
            "bagnet": lambda: model.representation(images),
            "cell": lambda: model.rollout(mixed, logits2d, glimpses),
        }, rounds=rounds)
    return {"scale": scale, "image_size": size, "batch": batch, "T": glimpses,
            "saccader_s": t["saccader"], "networks_s": t["networks"], "bagnet_s": t["bagnet"], "cell_s": t["cell"],
            "saccader/networks": t["saccader"] / t["networks"], "saccader/bagnet": t["saccader"] / t["bagnet"],
            # the forward is backbone + rollout, so this is the same ratio with the noise of one big timing removed
            "(networks+cell)/networks": (t["networks"] + t["cell"]) / t["networks"],
            "cell/bagnet": t["cell"] / t["bagnet"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=["embedded", "paper"], default="embedded")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 64 embedded, 4 paper)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 15 embedded, 5 paper)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    paper = args.scale == "paper"
    row = measure(args.scale, args.batch or (4 if paper else 64), rounds=args.rounds or (5 if paper else 15))
    report("P1 Saccader inference", [row], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
