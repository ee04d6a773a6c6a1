"""Adversarial robustness (Appendix D, Table Supp.6): clean, PGD and SPSA accuracy at l-inf eps = 2/255.

    saccader attack --config C --model saccader --seed 0 --ckpt saccader=results/runs/saccader/seed0 \\
        --out results/attack/saccader/seed0.parquet

A fixed random subset of the reporting split (``attack.subset_size``; 3,906 images at paper scale) is attacked in
[0, 1] pixel space: images are clipped to [0, 1] (clean accuracy is measured after clipping) and standardisation
happens inside the attacked model. PGD is CleverHans 4's ``projected_gradient_descent`` (step 0.5/255, 300
iterations, random start); for the Saccader and DRAM the gradient flows through the classification path at the
chosen locations, which are recomputed at every forward and are themselves not differentiable. SPSA follows
Uesato et al. 2018 (App. B: 8192 evaluations per step, 100 steps, delta 0.01, Adam lr 0.01, margin loss, early stop
on success), batched over images, with the fix for CleverHans issue 1249 (``spsa`` below).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent
from cleverhans.torch.attacks.spsa import _margin_logit_loss, _project_perturbation
from torch import nn

from saccader import results
from saccader.config import add_config_argument
from saccader.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["MODELS", "required_runs", "Standardized", "spsa", "spsa_gradient", "attack", "register"]

# Attacked models (Table Supp.6); each is its own training run.
MODELS = ("saccader", "dram", "resnet_v2_50", "bagnet77_lowd")
_GLIMPSE_MODELS = ("saccader", "dram")


def required_runs(model: str) -> list[str]:
    """Training runs whose ``model.pt`` the attack on ``model`` loads."""
    if model not in MODELS:
        raise UserError(f"no attack job for model {model!r}", f"use one of {', '.join(MODELS)}")
    return [model]


class Standardized(nn.Module):
    """The attacked function: [0, 1] pixels -> class logits, standardising inside (reference-notes section 6)."""

    def __init__(self, model: nn.Module, mean, std, num_glimpses: int | None = None):
        super().__init__()
        self.model, self.num_glimpses = model, num_glimpses
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from saccader.evaluate import image_logits

        return image_logits(self.model, (x - self.mean) / self.std, self.num_glimpses)


def spsa_gradient(loss_fn, x: torch.Tensor, perturbation: torch.Tensor, delta: float, samples: int,
                  eval_batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SPSA estimate of d loss / d perturbation at ``x + perturbation``, for a batch of images at once.

    ``samples`` model evaluations per image: samples/2 Rademacher directions v, each evaluated at +delta v and
    -delta v (antithetic pairs, as the TF CleverHans ``SPSAAdam``: num_samples // 2 mirrored), estimate
    mean(loss * v) / delta. This is the fix of CleverHans issue 1249: upstream torch ``_compute_spsa_gradient`` is
    called with ``x`` and then evaluates ``loss_fn(x + delta_x)`` where ``loss_fn(p)`` is ``model(x + p)`` -- the
    model sees 2x + delta_x, not the current adversarial point. Here the loss is evaluated at
    x + perturbation +- delta v. Directions are drawn in chunks so at most ``eval_batch_size`` inputs are in memory.

    Args:
        loss_fn: (x_batch (M, ...), image_index (M,)) -> per-input loss (M,).
        x, perturbation: (B, ...) clean images and current perturbations.
    """
    b, shape = x.shape[0], x.shape[1:]
    pairs = max(1, samples // 2)
    chunk = max(1, eval_batch_size // (2 * b))
    point = (x + perturbation).detach()
    grad = torch.zeros_like(point)
    index = torch.arange(b, device=x.device)
    for start in range(0, pairs, chunk):
        k = min(chunk, pairs - start)
        v = torch.randint(0, 2, (b, k, *shape), generator=generator).to(point) * 2 - 1
        queries = torch.cat([point.unsqueeze(1) + delta * v, point.unsqueeze(1) - delta * v], dim=1)
        with torch.no_grad():
            loss = loss_fn(queries.flatten(0, 1), index.repeat_interleave(2 * k)).view(b, 2 * k)
        signs = torch.cat([v, -v], dim=1)
        grad += (loss.view(b, 2 * k, *([1] * len(shape))) * signs).sum(dim=1)
    return grad / (2 * pairs * delta)


def spsa(model_fn, x: torch.Tensor, y: torch.Tensor, eps: float, nb_iter: int, *, clip_min: float = 0.0,
         clip_max: float = 1.0, learning_rate: float = 0.01, delta: float = 0.01, spsa_samples: int = 128,
         early_stop_loss_threshold: float | None = 0.0, eval_batch_size: int = 8192,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted l-inf SPSA (Uesato et al. 2018) on a batch of images; returns the adversarial images.

    CleverHans 4's torch ``spsa`` minus its bug (issue 1249, see ``spsa_gradient``) and its one-image-at-a-time
    loop: every image keeps its own perturbation and Adam moments (Adam is element-wise, so one optimiser over the
    batch equals one per image), and an image whose margin loss falls below ``early_stop_loss_threshold`` stops
    being queried and updated -- the per-image early stop of the upstream loop.
    """
    if eps == 0:
        return x.clone()
    perturbation = ((torch.rand(x.shape, generator=generator).to(x) * 2 - 1) * eps)
    _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
    optimizer = torch.optim.Adam([perturbation], lr=learning_rate)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)

    def loss_fn(inputs, index):
        # untargeted margin: correct logit - best other logit (upstream: -_margin_logit_loss)
        return -_margin_logit_loss(model_fn(inputs), y[index])

    for _ in range(nb_iter):
        idx = active.nonzero().squeeze(1)
        grad = torch.zeros_like(perturbation)
        grad[idx] = spsa_gradient(lambda q, i: loss_fn(q, idx[i]), x[idx], perturbation[idx].detach(), delta,
                                  spsa_samples, eval_batch_size, generator)
        frozen = perturbation.detach()[~active].clone()
        perturbation.grad = grad
        optimizer.step()
        with torch.no_grad():
            perturbation[~active] = frozen
            _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
            if early_stop_loss_threshold is not None:
                loss = loss_fn(x[idx] + perturbation[idx], idx)
                active[idx[loss < early_stop_loss_threshold]] = False
        if not active.any():
            break
    return torch.clamp((x + perturbation).detach(), clip_min, clip_max)


def _subset(config: dict):
    """The fixed random subset of the reporting split, in [0, 1] pixels (same for every model and seed)."""
    from saccader.data.folder import build_dataset

    dataset = build_dataset(config, "test", normalize=False)
    at = config["attack"]
    n = min(at["subset_size"], len(dataset))
    idx = np.sort(np.random.default_rng(at["subset_seed"]).choice(len(dataset), n, replace=False))
    return torch.utils.data.Subset(dataset, idx.tolist())


def attack(config: dict, model: str, seed: int, ckpts: dict[str, Path], out: Path):
    """Clean, PGD and SPSA accuracy of one trained model on the attack subset; writes the parquet."""
    from tqdm import tqdm

    from saccader.evaluate import device, load_run
    from saccader.io import ensure_writable

    runs = required_runs(model)
    ensure_writable(Path(out).parent)  # fail now, not after the attacks
    dev = device()
    at, ds = config["attack"], config["dataset"]
    net = load_run(config, runs[0], ckpts, dev)
    if hasattr(net, "glimpse_gradient"):
        net.glimpse_gradient = True  # DRAM: the official stop-gradient would leave PGD without an input gradient
    net.requires_grad_(False)
    fn = Standardized(net, ds["mean"], ds["std"], at["num_glimpses"] if model in _GLIMPSE_MODELS else None).to(dev)
    eps, step = at["eps_255"] / 255, at["pgd_step_255"] / 255
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    hits = {"clean_acc": [], "pgd_acc": [], "spsa_acc": []}
    loader = torch.utils.data.DataLoader(_subset(config), batch_size=at["batch_size"], shuffle=False,
                                         num_workers=ds["num_workers"])
    for images, labels in tqdm(loader, desc=f"attack {model}", unit="batch", mininterval=5.0):
        x, y = images.to(dev).clamp(0, 1), labels.to(dev)
        with torch.no_grad():
            hits["clean_acc"].append(fn(x).argmax(1) == y)
        x_pgd = projected_gradient_descent(fn, x, eps, step, at["pgd_iters"], np.inf, clip_min=0.0, clip_max=1.0,
                                           y=y, rand_init=at["pgd_rand_init"], sanity_checks=False)
        x_spsa = spsa(fn, x, y, eps, at["spsa_iters"], learning_rate=at["spsa_lr"], delta=at["spsa_delta"],
                      spsa_samples=at["spsa_samples"], eval_batch_size=at["eval_batch_size"],
                      early_stop_loss_threshold=0.0 if at["spsa_early_stop"] else None, generator=generator)
        with torch.no_grad():
            hits["pgd_acc"].append(fn(x_pgd).argmax(1) == y)
            hits["spsa_acc"].append(fn(x_spsa).argmax(1) == y)
    size = ds["image_size"]
    rows = [{"metric": m, "value": torch.cat(v).float().mean().item(), "n_images": int(torch.cat(v).numel())}
            for m, v in hits.items()]
    base = {"experiment": "robustness", "dataset": ds["name"], "split": "test" if ds["name"] == "digits" else "val",
            "model": model, "policy": model if model in _GLIMPSE_MODELS else "full_image", "seed": seed,
            "resolution": size, "num_glimpses": at["num_glimpses"] if model in _GLIMPSE_MODELS else 0,
            "config_hash": results.config_hash(config), "code_version": results.code_version()}
    frame = results.rows(base, rows)
    results.save(frame, out)
    log.info("wrote %s: %s", out, {r["metric"]: round(r["value"], 4) for r in rows})
    return frame


def _run(args) -> int:
    from saccader.config import load
    from saccader.evaluate import parse_ckpts

    attack(load(args.config), args.model, args.seed, parse_ckpts(args.ckpt), Path(args.out))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("attack", help="robustness job: clean, PGD and SPSA accuracy (Table Supp.6)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--ckpt", action="append", default=[], metavar="RUN=DIR",
                   help="training run directory holding model.pt")
    p.add_argument("--out", required=True, help="output parquet")
    p.set_defaults(func=_run)
