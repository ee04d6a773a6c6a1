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

from saccader import catalog, results
from saccader.config import add_config_argument
from saccader.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["MODELS", "required_runs", "Standardized", "spsa", "spsa_gradient", "partial_dir", "attack", "register"]

# Attacked models (Table Supp.6, ``saccader.catalog.ATTACKS``); each is its own training run.
MODELS = tuple(catalog.ATTACKS)
_GLIMPSE_MODELS = tuple(m for m, glimpses in catalog.ATTACKS.items() if glimpses)


def required_runs(model: str) -> list[str]:
    """Training runs whose ``model.pt`` the attack on ``model`` loads."""
    return [catalog.known("attacked model", model, MODELS)]


class Standardized(nn.Module):
    """The attacked function: [0, 1] pixels -> class logits, standardising inside (reference-notes section 6)."""

    def __init__(self, model: nn.Module, mean, std, num_glimpses: int | None = None, bf16: bool = False):
        super().__init__()
        self.model, self.num_glimpses, self.bf16 = model, num_glimpses, bf16
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in float32 whatever the precision of the network: the attack losses (PGD's cross-entropy, SPSA's
        margin) and their gradients with respect to ``x`` are then float32 arithmetic on float32 logits."""
        from saccader.evaluate import image_logits

        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return image_logits(self.model, (x - self.mean) / self.std, self.num_glimpses).float()


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
        # Drawn where the queries are, from a generator of that device: a CPU draw plus copy is ~77 M values per
        # 1024-query chunk at paper scale. On CPU this is the same call as a CPU draw (bitwise the same stream).
        v = torch.randint(0, 2, (b, k, *shape), generator=generator, device=point.device).to(point) * 2 - 1
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
    perturbation = ((torch.rand(x.shape, generator=generator, device=x.device).to(x) * 2 - 1) * eps)
    _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
    optimizer = torch.optim.Adam([perturbation], lr=learning_rate)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)

    def loss_fn(inputs, index):
        # untargeted margin: correct logit - best other logit (upstream: -_margin_logit_loss)
        return -_margin_logit_loss(model_fn(inputs), y[index])

    early_stop = early_stop_loss_threshold is not None
    everyone = torch.arange(len(x), device=x.device)
    for _ in range(nb_iter):
        # With early stop the active set decides which images are queried: one host wait an iteration (none in the
        # chunks of spsa_gradient); without it every image is queried and nothing waits.
        idx = active.nonzero().squeeze(1) if early_stop else everyone
        grad = torch.zeros_like(perturbation)
        grad[idx] = spsa_gradient(lambda q, i: loss_fn(q, idx[i]), x[idx], perturbation[idx].detach(), delta,
                                  spsa_samples, eval_batch_size, generator)
        if early_stop:
            frozen = perturbation.detach()[~active].clone()
        perturbation.grad = grad
        optimizer.step()
        with torch.no_grad():
            if early_stop:
                perturbation[~active] = frozen
            _project_perturbation(perturbation, np.inf, eps, x, clip_min, clip_max)
            if early_stop:
                loss = loss_fn(x[idx] + perturbation[idx], idx)
                active[idx[loss < early_stop_loss_threshold]] = False
        if early_stop and not active.any():
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


def partial_dir(out: Path) -> Path:
    """Where an attack job keeps its finished batches until the parquet is written: ``.<out name>.partial/``."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def _job_key(config: dict, model: str, seed: int, ckpt: Path, dev: torch.device) -> str:
    """What decides an attack's batches: the config, model, seed, the attacked weights' bytes and the device type (its
    random streams and precision). A partial result under another key is stale (the workflow reran the job because
    one of these changed, or a requeue landed on another kind of machine)."""
    import hashlib

    digest = hashlib.sha256()
    with open(ckpt, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return f"{results.config_hash(config)}:{model}:{seed}:{digest.hexdigest()[:16]}:{dev.type}"


def _load_partials(folder: Path, key: str) -> list[dict]:
    """The finished batches 0, 1, ... of this job (the run of consecutive files from batch 0), [] if none or stale."""
    from saccader.io import torch_load

    done = []
    while (folder / f"batch{len(done):06d}.pt").exists():
        state = torch_load(folder / f"batch{len(done):06d}.pt")
        if state.get("key") != key:
            log.warning("%s holds batches of another config, model or checkpoint; attacking from the start", folder)
            for path in folder.glob("batch*.pt"):
                path.unlink()
            return []
        done.append(state)
    return done


def attack(config: dict, model: str, seed: int, ckpts: dict[str, Path], out: Path):
    """Clean, PGD and SPSA accuracy of one trained model on the attack subset; writes the parquet.

    Resumable per batch: each finished batch's hits and the state of every random stream after it are written
    atomically to ``partial_dir(out)``; a job started again (a requeue after the time limit) continues after the last
    finished batch and writes the parquet an uninterrupted job writes, then deletes the partial results.

    Precision: the recipe's bf16 autocast on CUDA (``saccader.train.use_bf16``), logits and losses in float32
    (``Standardized``). PGD stays sound: the input gradient is float32, bf16 keeps float32's exponent range (no
    underflow, no loss scaling), and PGD uses only its sign. SPSA's queries differ by delta / std (about 0.04 in
    the network's input space), 5-10 times bf16's rounding of standardised inputs (|x| < 4), and its estimate
    averages ``spsa_samples`` such differences. On a CPU the attack stays fp32 even where the recipe trains in bf16:
    that choice was measured for training steps (bench/cpu_bf16.py), not for attacks, and keeps the embedded
    run's attack results.
    """
    from tqdm import tqdm

    from saccader import checkpoint
    from saccader.evaluate import ckpt_file, device, load_run
    from saccader.io import ensure_writable, torch_save
    from saccader.train import use_bf16

    runs = required_runs(model)
    out = Path(out)
    ensure_writable(out.parent)  # fail now, not after the attacks
    dev = device()
    at, ds = config["attack"], config["dataset"]
    net = load_run(config, runs[0], ckpts, dev)
    if hasattr(net, "glimpse_gradient"):
        net.glimpse_gradient = True  # DRAM: the official stop-gradient would leave PGD without an input gradient
    net.requires_grad_(False)
    bf16 = dev.type == "cuda" and use_bf16((config.get("train") or {}).get(runs[0]) or {}, dev)
    fn = Standardized(net, ds["mean"], ds["std"], at["num_glimpses"] if model in _GLIMPSE_MODELS else None,
                      bf16).to(dev)
    eps, step = at["eps_255"] / 255, at["pgd_step_255"] / 255
    torch.manual_seed(seed)
    # One stream over the batches, of the device the queries live on; its state after each batch is saved with the
    # batch, so a resumed job draws what an uninterrupted one draws.
    generator = torch.Generator(device=dev).manual_seed(seed)
    subset = _subset(config)
    batch = at["batch_size"]
    partial, key = partial_dir(out), _job_key(config, model, seed, ckpt_file(ckpts, runs[0]), dev)
    partial.mkdir(exist_ok=True)
    done = _load_partials(partial, key)
    n_batches = -(-len(subset) // batch)
    remaining = torch.utils.data.Subset(subset, range(min(len(done) * batch, len(subset)), len(subset)))
    loader = torch.utils.data.DataLoader(remaining, batch_size=batch, shuffle=False, num_workers=ds["num_workers"])
    batches = iter(loader)  # draws the loader's base seed from the global RNG, as the uninterrupted job did
    if done:
        checkpoint.set_rng_state(done[-1]["rng"], generator)
        log.info("attack %s seed %d: resuming after %d of %d batches (%s)", model, seed, len(done), n_batches,
                 partial)
    for index, (images, labels) in enumerate(tqdm(batches, desc=f"attack {model}", unit="batch",
                                                  initial=len(done), total=n_batches, mininterval=5.0), len(done)):
        x, y = images.to(dev).clamp(0, 1), labels.to(dev)
        hits = {}
        with torch.no_grad():
            hits["clean_acc"] = fn(x).argmax(1) == y
        x_pgd = projected_gradient_descent(fn, x, eps, step, at["pgd_iters"], np.inf, clip_min=0.0, clip_max=1.0,
                                           y=y, rand_init=at["pgd_rand_init"], sanity_checks=False)
        x_spsa = spsa(fn, x, y, eps, at["spsa_iters"], learning_rate=at["spsa_lr"], delta=at["spsa_delta"],
                      spsa_samples=at["spsa_samples"], eval_batch_size=at["eval_batch_size"],
                      early_stop_loss_threshold=0.0 if at["spsa_early_stop"] else None, generator=generator)
        with torch.no_grad():
            hits["pgd_acc"] = fn(x_pgd).argmax(1) == y
            hits["spsa_acc"] = fn(x_spsa).argmax(1) == y
        state = {"key": key, "hits": {m: v.cpu() for m, v in hits.items()},
                 "rng": checkpoint.rng_state(generator)}
        torch_save(state, partial / f"batch{index:06d}.pt")
        done.append(state)
    size = ds["image_size"]
    hits = {m: torch.cat([d["hits"][m] for d in done]) for m in ("clean_acc", "pgd_acc", "spsa_acc")}
    rows = [{"metric": m, "value": v.float().mean().item(), "n_images": int(v.numel())} for m, v in hits.items()]
    base = {"experiment": "robustness", "dataset": ds["name"], "split": "test" if ds["name"] == "digits" else "val",
            "model": model, "policy": model if model in _GLIMPSE_MODELS else "full_image", "seed": seed,
            "resolution": size, "num_glimpses": at["num_glimpses"] if model in _GLIMPSE_MODELS else 0,
            "config_hash": results.config_hash(config), "code_version": results.code_version()}
    frame = results.rows(base, rows)
    results.save(frame, out)
    import shutil

    shutil.rmtree(partial, ignore_errors=True)  # the parquet holds everything now
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
