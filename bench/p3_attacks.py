"""P3: SPSA and PGD throughput on the embedded Saccader (Appendix D attacks, ``baselines/attacks.py``).

    python bench/p3_attacks.py [--images 8] [--iters 5] [--out FILE.json]

On ``--images`` images of the embedded test split (random pixels if the dataset is not built), attacked at the
config's eps, with labels = the model's own clean predictions (so every image starts correctly classified and the
success rate is meaningful for an untrained model too):
    spsa_fwd_share       time inside model forwards / time of ``attacks.spsa`` (target >= 0.9)
    spsa/plain_evals     model evaluations/s inside ``attacks.spsa`` / a plain no-grad forward loop at the same batch
                         size (target >= 0.9)
    spsa_vs_upstream     seconds per image of CleverHans 4's per-image ``spsa`` / ours, same iterations, same
                         evaluations per step (upstream: spsa_samples/2 mirrored pairs), same early stop; with
                         both success rates (target >= 10x at equal success; upstream also has bug 1249)
    spsa_vs_upstream_equal_success
                         with ``--match K``: upstream reruns with 2, 4, ... K x the iterations until its success
                         reaches ours; its seconds then / ours. When it never does, the ratio at K x is a lower
                         bound (``upstream_matched`` False)
    pgd/plain_fwd_bwd    throughput of CleverHans' ``projected_gradient_descent`` / a plain loop of forward +
                         backward to the input at the same batch (target >= 0.9)
    fwd_img_s_b<B>       forward images/s of the attacked model at batch B (the best ``attack.eval_batch_size``)
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401
import numpy as np
import torch
from torch import nn

from common import embedded_config, interleaved, report, setup_threads


class Counting(nn.Module):
    """Wraps the attacked function; counts the inputs it evaluates and the seconds spent in it."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn, self.inputs, self.seconds = fn, 0, 0.0

    def forward(self, x):
        tick = time.perf_counter()
        out = self.fn(x)
        self.seconds += time.perf_counter() - tick
        self.inputs += len(x)
        return out

    def reset(self):
        self.inputs, self.seconds = 0, 0.0


def attacked(config: dict, seed: int = 0) -> nn.Module:
    """The embedded Saccader as the attack job sees it: [0, 1] pixels -> logits at T = attack.num_glimpses."""
    from baselines.attacks import Standardized
    from saccader.models import from_config

    torch.manual_seed(seed)
    net = from_config("saccader", config).eval().requires_grad_(False)
    ds = config["dataset"]
    return Standardized(net, ds["mean"], ds["std"], config["attack"]["num_glimpses"]).eval()


def pretrain(fn: nn.Module, config: dict, steps: int, batch: int = 64, lr: float = 0.4) -> float:
    """A few SGD steps of the Saccader's representation network (eq 4 on the embedded train split), so that the
    attacked model classifies and success rates mean something without a finished workflow run; returns the
    final training-batch accuracy of the BagNet."""
    from saccader.pipeline.data.folder import build_dataset

    bagnet = fn.model.representation
    data = build_dataset(config, "train", train=False)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(bagnet.parameters(), lr=lr, momentum=0.9, nesterov=True)
    bagnet.requires_grad_(True).train()
    acc, it = 0.0, iter(loader)
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        logits = bagnet(x).mean(dim=(2, 3))
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = (logits.argmax(1) == y).float().mean().item()
    bagnet.requires_grad_(False).eval()
    return acc


def images(config: dict, n: int) -> torch.Tensor:
    try:
        from saccader.pipeline.attack import attack_subset

        subset = attack_subset(config)
        return torch.stack([subset[i][0] for i in range(min(n, len(subset)))]).clamp(0, 1)
    except Exception:  # dataset not built: the throughput does not depend on the pixels
        size = config["dataset"]["image_size"]
        return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def batch_sweep(fn: nn.Module, shape, batches=(16, 64, 256, 1024), images: int = 1024) -> dict[str, float]:
    """No-grad forward images/s of the attacked function at several batch sizes (what attack.eval_batch_size sets)."""
    xs = {b: torch.rand(b, *shape) for b in batches}
    with torch.no_grad():
        t = interleaved({b: (lambda b=b: [fn(xs[b]) for _ in range(max(1, images // b))]) for b in batches},
                        rounds=3)
    return {f"fwd_img_s_b{b}": max(1, images // b) * b / t[b] for b in batches}


def measure(n: int = 8, iters: int = 5, config: dict | None = None, eps_255: float | None = None,
            ckpt: str | None = None, pretrain_steps: int = 0, sweep_images: int = 1024, match: int = 1) -> dict:
    from baselines.attacks import spsa
    from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent
    from cleverhans.torch.attacks.spsa import spsa as upstream_spsa

    config = config or embedded_config()
    at = config["attack"]
    fn = Counting(attacked(config))
    if ckpt:  # a trained saccader run (model.pt): success rates at the paper's eps mean something
        from saccader.pipeline.io import torch_load

        fn.fn.model.load_state_dict(torch_load(ckpt))
    train_acc = pretrain(fn.fn, config, pretrain_steps) if pretrain_steps else float("nan")
    x = images(config, n)
    with torch.no_grad():
        y = fn(x).argmax(1)
    eps, samples = (eps_255 or at["eps_255"]) / 255, at["spsa_samples"]
    early = 0.0 if at["spsa_early_stop"] else None
    kw = dict(learning_rate=at["spsa_lr"], delta=at["spsa_delta"], clip_min=0.0, clip_max=1.0)

    fn.reset()
    tick = time.perf_counter()
    adv = spsa(fn, x, y, eps, iters, spsa_samples=samples, eval_batch_size=at["eval_batch_size"],
               early_stop_loss_threshold=early, generator=torch.Generator().manual_seed(0), **kw)
    ours_s, ours_inputs, ours_fwd = time.perf_counter() - tick, fn.inputs, fn.seconds
    with torch.no_grad():
        ours_success = (fn(adv).argmax(1) != y).float().mean().item()
    batch = min(at["eval_batch_size"], samples * n)  # the forward batch of spsa_gradient's first chunk
    probe = torch.rand(batch, *x.shape[1:])
    with torch.no_grad():
        plain_s = interleaved({"fwd": lambda: fn.fn(probe)}, rounds=3)["fwd"]

    def upstream(steps: int):
        fn.reset()
        torch.manual_seed(0)
        tick = time.perf_counter()
        up = upstream_spsa(fn, x, eps, steps, norm=np.inf, y=y, early_stop_loss_threshold=early,
                           spsa_samples=samples // 2, spsa_iters=1, sanity_checks=False, **kw)
        seconds, inputs = time.perf_counter() - tick, fn.inputs
        with torch.no_grad():
            return seconds, inputs, (fn(up).argmax(1) != y).float().mean().item()

    up_s, up_inputs, up_success = upstream(iters)
    # Equal success: more upstream iterations until it fools as many images as ours did.
    factor, match_s, match_success = 1, up_s, up_success
    while match_success < ours_success and factor * 2 <= match:
        factor *= 2
        match_s, _, match_success = upstream(iters * factor)

    # PGD: CleverHans' loop vs the same number of plain forward+backward passes to the input.
    fn.fn.requires_grad_(False)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        nn.functional.cross_entropy(fn.fn(xi), y).backward()

    step = at["pgd_step_255"] / 255
    pgd = lambda: projected_gradient_descent(fn.fn, x, eps, step, at["pgd_iters"], np.inf, clip_min=0.0,  # noqa
                                             clip_max=1.0, y=y, rand_init=True, sanity_checks=False)
    plain_loop = lambda: [fwd_bwd() for _ in range(at["pgd_iters"])]  # noqa: E731
    t = interleaved({"pgd": pgd, "plain": plain_loop}, rounds=3, warmup=0)
    sweep = batch_sweep(fn.fn, x.shape[1:], images=sweep_images) if sweep_images else {}
    weights = "ckpt" if ckpt else "fresh"
    if pretrain_steps and not ckpt:
        weights = f"{pretrain_steps} SGD steps (batch acc {train_acc:.2f})"
    return {"images": n, "iters": iters, "eps_255": eps * 255, "weights": weights, "spsa_samples": samples,
            "spsa_batch": batch,
            "spsa_s": ours_s, "spsa_fwd_share": ours_fwd / ours_s,
            "spsa/plain_evals": (ours_inputs / ours_s) / (batch / plain_s),
            "upstream_s": up_s, "spsa_vs_upstream": (up_s / n) / (ours_s / n),
            "evals_ours": ours_inputs, "evals_upstream": up_inputs,
            "success_ours": ours_success, "success_upstream": up_success,
            "upstream_iters_to_match": iters * factor, "upstream_success_to_match": match_success,
            "upstream_matched": match_success >= ours_success, "spsa_vs_upstream_equal_success": match_s / ours_s,
            "pgd_iters": at["pgd_iters"], "pgd/plain_fwd_bwd": t["plain"] / t["pgd"], **sweep}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--iters", type=int, default=5, help="SPSA steps (config: attack.spsa_iters)")
    p.add_argument("--eps-255", type=float, default=None,
                   help="attack radius x 255 (default attack.eps_255; an untrained model needs a larger one)")
    p.add_argument("--ckpt", default=None, help="model.pt of a trained embedded saccader run (default: fresh weights)")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="first train the representation network this many SGD steps (needs the embedded dataset)")
    p.add_argument("--match", type=int, default=1,
                   help="equal success: rerun upstream with up to this many times the iterations (1: off)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    row = measure(args.images, args.iters, eps_255=args.eps_255, ckpt=args.ckpt, pretrain_steps=args.pretrain_steps,
                  match=args.match)
    report("P3 attacks", [row], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
