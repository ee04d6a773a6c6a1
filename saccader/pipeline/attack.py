"""``saccader attack``: clean, PGD and SPSA accuracy of one trained model (Appendix D, Table Supp.6).

    saccader attack --config C --model saccader --seed 0 --ckpt saccader=results/runs/saccader/seed0 \\
        --out results/attack/saccader/seed0.parquet

The attacked function and the attacks are ``baselines/attacks.py``; this job loads the run, attacks the fixed subset
of the reporting split batch by batch (resumable) and writes the parquet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

from baselines.attacks import Standardized, spsa
from saccader import catalog
from saccader.pipeline import results
from saccader.pipeline.config import add_config_argument

log = logging.getLogger(__name__)

__all__ = ["partial_dir", "attack", "register"]

GLIMPSE_MODELS = tuple(m for m, glimpses in catalog.ATTACKS.items() if glimpses)


def attack_subset(config: dict):
    """The fixed random subset of the reporting split, in [0, 1] pixels (same for every model and seed)."""
    from saccader.pipeline.data.folder import build_dataset

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
    from saccader.pipeline.io import torch_load

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

    Precision: the recipe's bf16 autocast on CUDA (``saccader.pipeline.train.use_bf16``), logits and losses in float32
    (``Standardized``). PGD stays sound: the input gradient is float32, bf16 keeps float32's exponent range (no
    underflow, no loss scaling), and PGD uses only its sign. SPSA's queries differ by delta / std (about 0.04 in
    the network's input space), 5-10 times bf16's rounding of standardised inputs (|x| < 4), and its estimate
    averages ``spsa_samples`` such differences. On a CPU the attack stays fp32 even where the recipe trains in bf16:
    that choice was measured for training steps (bench/cpu_bf16.py), not for attacks, and keeps the embedded
    run's attack results.
    """
    from tqdm import tqdm

    from saccader.pipeline import checkpoint
    from saccader.pipeline.evaluate import ckpt_file, device, load_run
    from saccader.pipeline.io import ensure_writable, torch_save
    from saccader.pipeline.train import use_bf16

    runs = catalog.attacked_runs(model)
    out = Path(out)
    ensure_writable(out.parent)  # fail now, not after the attacks
    dev = device()
    at, ds = config["attack"], config["dataset"]
    net = load_run(config, runs[0], ckpts, dev)
    if hasattr(net, "glimpse_gradient"):
        net.glimpse_gradient = True  # DRAM: the official stop-gradient would leave PGD without an input gradient
    net.requires_grad_(False)
    bf16 = dev.type == "cuda" and use_bf16((config.get("train") or {}).get(runs[0]) or {}, dev)
    fn = Standardized(net, ds["mean"], ds["std"], at["num_glimpses"] if model in GLIMPSE_MODELS else None,
                      bf16).to(dev)
    eps, step = at["eps_255"] / 255, at["pgd_step_255"] / 255
    torch.manual_seed(seed)
    # One stream over the batches, of the device the queries live on; its state after each batch is saved with the
    # batch, so a resumed job draws what an uninterrupted one draws.
    generator = torch.Generator(device=dev).manual_seed(seed)
    subset = attack_subset(config)
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
            "model": model, "policy": model if model in GLIMPSE_MODELS else "full_image", "seed": seed,
            "resolution": size, "num_glimpses": at["num_glimpses"] if model in GLIMPSE_MODELS else 0,
            "config_hash": results.config_hash(config), "code_version": results.code_version()}
    frame = results.rows(base, rows)
    results.save(frame, out)
    results.save_images({k: base[k] for k in ("experiment", "model", "seed")},
                        {(base["policy"], size, base["num_glimpses"], m): v.float().numpy() for m, v in hits.items()},
                        catalog.images_path(out))
    import shutil

    shutil.rmtree(partial, ignore_errors=True)  # the parquet holds everything now
    log.info("wrote %s: %s", out, {r["metric"]: round(r["value"], 4) for r in rows})
    return frame


def _run(args) -> int:
    from saccader.pipeline.config import load
    from saccader.pipeline.evaluate import parse_ckpts

    attack(load(args.config), args.model, args.seed, parse_ckpts(args.ckpt), Path(args.out))
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer

    p = subparsers.add_parser("attack", help="robustness job: clean, PGD and SPSA accuracy (Table Supp.6)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--model", required=True, choices=tuple(catalog.ATTACKS))
    p.add_argument("--seed", required=True, type=integer(0))
    p.add_argument("--ckpt", action="append", default=[], metavar="RUN=DIR",
                   help="training run directory holding model.pt")
    p.add_argument("--out", required=True, help="output parquet")
    p.set_defaults(func=_run)
