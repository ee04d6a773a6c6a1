"""Training of every model of the paper (Section 3.2, Appendix C): ``saccader train``.

One loop serves all runs; a run's ``stage`` picks the objective:

    classify            eq 4 / eq 7: cross-entropy (BagNet-77(-lowD) on mean logits, ResNet-v2-50, NASNet, and the
                        NASNet-77/-113 fine-tuning on the Saccader's patches)
    location_pretrain   eq 5: the location path learns to emit cells in descending order of logit, T = 12, with the
                        representation network frozen (eval mode, no gradient)
    reinforce           eq 6: REINFORCE with S sampled trajectories sharing one backbone pass + CE, T = 6
    dram_pretrain       DRAM classification pre-training (random uniform policy, averaged logits; Appendix C)
    dram                the DRAM hybrid loss (CE + 0.1 REINFORCE, S Monte Carlo samples; Appendix C)
    glimpse_finetune    NASNet-77 / NASNet-113: cross-entropy of a NASNet on the patches a frozen Saccader chooses

Optimiser: SGD with Nesterov momentum 0.9; lambda (``weight_decay``) on the classification weights and nu (``nu``) on
the location weights, as SGD weight decay (the gradient of lambda/2 |theta|^2). Schedule: cosine with linear warm-up
(``saccader.schedule``); NASNet: warm-up then x0.975 per epoch and an EMA of the weights.

    saccader train --config config/embedded.yaml --run saccader --seed 0 --out results/runs/saccader/seed0 \\
        --init saccader_pretrain=results/runs/saccader_pretrain/seed0

writes ``checkpoint.pt`` (resumable), ``train_log.parquet`` (per epoch) and, last, ``model.pt`` (final weights).
Rerunning the same command after a kill resumes from ``checkpoint.pt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from saccader import checkpoint, distributed, io, losses
from saccader.cli import parse_run_dirs
from saccader.config import add_config_argument, load
from saccader.data.folder import LOADING_KEYS
from saccader.errors import UserError
from saccader.schedule import build_scheduler

__all__ = ["STAGES", "recipe", "init_runs", "train", "register"]

log = logging.getLogger("saccader.train")
STAGES = ("classify", "location_pretrain", "reinforce", "dram_pretrain", "dram", "glimpse_finetune")
MOMENTUM = 0.9  # Nesterov momentum of every run (Section 3.2, Appendix C)


# --------------------------------------------------------------------------------------------------- recipes

def recipe(config: dict, run: str) -> dict:
    """The ``train.<run>`` recipe of ``config``; an unknown run is a UserError listing the known ones."""
    runs = config.get("train") or {}
    if run not in runs:
        raise UserError(f"unknown training run {run!r}", f"use one of {', '.join(sorted(runs)) or '(none configured)'}")
    return runs[run]


def init_runs(run: str, config: dict) -> list[str]:
    """The runs whose final weights ``run`` starts from (the workflow's DAG edges)."""
    return list(recipe(config, run).get("init_from", []))


def _resolution(config: dict, rec: dict) -> int:
    return config["dataset"]["high_res_size" if rec.get("resolution") == "high_res" else "image_size"]


# --------------------------------------------------------------------------------------------------- model set-up

def load_init(model: nn.Module, state: dict, source: str) -> int:
    """Copy the tensors of ``state`` into ``model`` by name; a key also matches a model key ending in ``.<key>``
    (so BagNet weights fill ``representation.*`` of a Saccader). Returns the number of tensors copied."""
    target = model.state_dict()
    loaded = {}
    for key, value in state.items():
        matches = [k for k in target if k == key or k.endswith("." + key)]
        if key in target:
            matches = [key]
        if len(matches) == 1 and target[matches[0]].shape == value.shape:
            loaded[matches[0]] = value
    if not loaded:
        raise UserError(f"no weight of {source} fits model {type(model).__name__}",
                        "check the run's init_from in the config (it must name a run of a compatible model)")
    model.load_state_dict(loaded, strict=False)
    return len(loaded)


def _location_params(model: nn.Module, rec: dict) -> set[int]:
    """The location weights (eta): the recipe's ``location_modules`` (DRAM), else ``model.location_parameters()``."""
    if rec.get("location_modules"):
        return {id(p) for name in rec["location_modules"] for p in _submodule(model, name).parameters()}
    fn = getattr(model, "location_parameters", None)
    return {id(p) for p in fn()} if fn is not None else set()


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children())
        raise UserError(f"model {type(model).__name__} has no submodule {name!r}",
                        f"name one of {children} in the recipe") from None


def param_groups(model: nn.Module, rec: dict) -> list[dict]:
    """Parameter groups with lambda (classification weights) and nu (location weights) as weight decay.

    ``location_pretrain`` trains only the location weights (eq 5); the rest is frozen (no gradient, BN in eval mode).
    The recipe's ``freeze`` names submodules kept fixed (the Saccader that picks NASNet-77/-113's patches).
    """
    for name in rec.get("freeze", []):
        _submodule(model, name).requires_grad_(False)
    loc = _location_params(model, rec)
    theta, eta = [], []
    for p in model.parameters():
        if p.requires_grad:
            (eta if id(p) in loc else theta).append(p)
    if rec["stage"] == "location_pretrain":
        if not eta:
            raise UserError(f"model {rec['model']} has no location weights for stage location_pretrain",
                            "use a Saccader model for this run")
        for p in theta:
            p.requires_grad_(False)
        theta = []
    groups = [{"params": theta, "weight_decay": rec.get("weight_decay", 0.0)},
              {"params": eta, "weight_decay": rec.get("nu", rec.get("weight_decay", 0.0))}]
    return [g for g in groups if g["params"]]


def set_drop_path_progress(model: nn.Module, progress: float) -> None:
    """Tell every module with a scheduled drop path (NASNet-A) how far along its horizon training is."""
    for m in model.modules():
        if hasattr(m, "drop_path_progress"):
            m.drop_path_progress = progress


def _train_mode(model: nn.Module) -> None:
    """Training mode, except batch norms whose weights are frozen (they keep their running statistics)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


# --------------------------------------------------------------------------------------------------- objectives

def _logits(out) -> torch.Tensor:
    if isinstance(out, dict):
        out = out["logits"]
    if isinstance(out, tuple):
        out = out[0]
    return losses.mean_logits(out) if out.dim() == 4 else out


def step_loss(model: nn.Module, rec: dict, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one minibatch under the run's objective, and the per-image correctness used for the log."""
    stage = rec["stage"]
    if stage == "classify":
        logits = _logits(model(images))
        return losses.classification_loss(logits, labels, rec.get("label_smoothing", 0.0)), losses.correct(logits,
                                                                                                               labels)
    if stage == "location_pretrain":  # eq 5
        if isinstance(images, dict):  # representation outputs computed once (``cache_features``)
            with _cached_representation(model):
                out = model.backbone(dict(images))
        else:
            out = model.backbone(images)
        targets = losses.ordered_logits_targets(out["logits2d"], rec["num_glimpses"])
        # The cell state follows the targets (eq 5 conditions each step on C^{t-1} of the target sequence).
        roll = model.rollout(out["mixed"], out["logits2d"], rec["num_glimpses"], targets=targets)
        hits = (roll["policy_logits"].argmax(dim=2) == targets).float().mean(dim=1)  # targets the policy would pick
        return losses.location_pretraining_loss(roll["policy_logits"], targets), hits
    if stage == "reinforce":  # eq 6: S trajectories share one backbone pass
        out = model.backbone(images)
        rolls = [model.rollout(out["mixed"], out["logits2d"], rec["num_glimpses"], sample=True, generator=generator)
                 for _ in range(rec.get("mc_samples", 2))]
        return _monte_carlo(rolls, labels, losses.saccader_loss, rec.get("reinforce_weight", 1.0))
    if stage == "glimpse_finetune":  # NASNet-77 / -113 on the Saccader's patches (Tables Supp.2-3)
        logits = _logits(model(*_base_and_high_res(images, model, rec)))
        return losses.classification_loss(logits, labels, rec.get("label_smoothing", 0.0)), losses.correct(logits,
                                                                                                               labels)
    if stage == "dram_pretrain":
        logits = model.pretrain_forward(images, glimpse_size=rec.get("glimpse_size"), num_steps=rec["num_glimpses"],
                                        generator=generator)
        return losses.classification_loss(logits, labels), losses.correct(logits, labels)
    if stage == "dram":  # the S trajectories unrolled as one batch of S * N images, as tiling the batch does in TF
        s = rec.get("mc_samples", 2)
        out = model(torch.cat([images] * s), rec["num_glimpses"], sample=True, generator=generator)
        outs = [{"logits": lg, "log_probs": lp} for lg, lp in zip(out["logits"].chunk(s), out["log_probs"].chunk(s))]
        return _monte_carlo(outs, labels, losses.dram_hybrid_loss, rec.get("reinforce_weight", 0.1))
    raise UserError(f"unknown stage {stage!r}", f"use one of {', '.join(STAGES)}")


def _monte_carlo(outs: list[dict], labels: torch.Tensor, loss_fn, reinforce_weight: float):
    """Eq 6 / the DRAM hybrid loss over S sampled trajectories: stacked logits and log-probs, baseline b = the
    accuracy over the global minibatch; returns (loss, per-image mean reward)."""
    logits = torch.stack([o["logits"] for o in outs])
    log_probs = torch.stack([o["log_probs"] for o in outs])
    baseline = distributed.all_reduce_mean(losses.correct(logits, labels.expand(len(outs), -1)).mean())
    loss, rewards = loss_fn(logits, log_probs, labels, baseline, reinforce_weight)
    return loss, rewards.mean(dim=0)


@torch.no_grad()
def predict(model: nn.Module, rec: dict, images: torch.Tensor) -> torch.Tensor:
    """Test-time logits of the trained model: full image (classify), greedy policy (Saccader), mean location (DRAM)."""
    stage = rec["stage"]
    if stage in ("location_pretrain", "reinforce"):
        out = model.backbone(images)
        t = rec.get("eval_glimpses", rec["num_glimpses"])
        return model.rollout(out["mixed"], out["logits2d"], t, sample=False)["logits"]
    if stage == "dram":
        return _logits(model(images, rec["num_glimpses"], sample=False))
    if stage == "dram_pretrain":
        return _logits(model.pretrain_forward(images, glimpse_size=rec.get("glimpse_size"),
                                              num_steps=rec["num_glimpses"]))
    if stage == "glimpse_finetune":
        return _logits(model(*_base_and_high_res(images, model, rec)))
    return _logits(model(images))


def _base_and_high_res(images: torch.Tensor, model: nn.Module, rec: dict):
    """Arguments of a Saccader-NASNet: the Saccader sees the image at its base resolution; for ``high_res`` runs
    (NASNet-113) the loader gives the high-resolution image, resized here (bicubic, antialiased, like the data
    transform) for the Saccader, and the NASNet crops the high-resolution one."""
    if rec.get("resolution") != "high_res":
        return images, rec["num_glimpses"]
    base = F.interpolate(images, size=(rec["base_size"],) * 2, mode="bicubic", antialias=True, align_corners=False)
    return base, rec["num_glimpses"], images


def evaluate(model: nn.Module, rec: dict, loader, device, autocast) -> tuple[float, float]:
    """Top-1 and top-5 accuracy on the dev split."""
    model.eval()
    top1 = top5 = n = 0
    channels_last = use_channels_last(rec, device)
    for images, labels in loader:
        images, labels = _to(images, device, channels_last), labels.to(device)
        with autocast():
            logits = predict(model, rec, images).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        top1 += (top[:, 0] == labels).sum().item()
        top5 += (top == labels[:, None]).any(dim=1).sum().item()
        n += len(labels)
    return top1 / max(n, 1), top5 / max(n, 1)


# --------------------------------------------------------------------------------------------------- data

class _Passthrough(nn.Module):
    def forward_features(self, cached: dict) -> dict:
        return cached


@contextlib.contextmanager
def _cached_representation(model: nn.Module):
    """Run ``model.backbone`` on cached representation outputs: the frozen representation network is swapped for a
    pass-through for the duration of the call, so the attention net, mixing conv and cell run as in the model."""
    representation = model.representation
    model.representation = _Passthrough()
    try:
        yield
    finally:
        model.representation = representation


class _CachedFeatures(torch.utils.data.Dataset):
    """Outputs of the frozen representation network (features, what, logits2d) for every training image.

    Stage 2 keeps the representation fixed (eval-mode BN, no gradient), so on a small machine it is computed once
    instead of every epoch (``cache_features``). The images then go through the evaluation transform (no random
    crop): the one difference from the uncached path, and the reason the option exists only as a config value.
    """

    def __init__(self, model: nn.Module, dataset, batch_size: int, workers: int, device: torch.device):
        model.eval()
        parts, labels = {"features": [], "what": [], "logits2d": []}, []
        with torch.no_grad():
            for images, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers):
                out = model.representation.forward_features(_to(images, device))
                for key in parts:
                    parts[key].append(out[key].float().cpu())
                labels.append(y)
        self.parts = {k: torch.cat(v) for k, v in parts.items()}
        self.labels = torch.cat(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {k: v[index] for k, v in self.parts.items()}, self.labels[index]


class _SeededItems(torch.utils.data.Dataset):
    """Draws each item's augmentation from a seed of (run seed, epoch, index) so the crops do not depend on loader
    workers or on where a resumed run restarted. The dataset provides ``get(index, generator)``, as
    ``FolderDataset`` does."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        # A generator of its own, seeded like the global CPU generator was (the same draws, bitwise the same crops):
        # forking and reseeding the global one cost more than the crop itself (bench/data_path.py).
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index))
        return self.dataset.get(index, generator)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of one epoch, a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def _loader(dataset, indices, batch_size, workers, pin_memory=False):
    # Built anew each epoch: persistent workers would keep a stale _SeededItems.epoch (wrong augmentation seeds);
    # restarting them costs seconds per ImageNet epoch. Pinned memory makes the non_blocking copy to the GPU async.
    # Its own generator: a loader's iterator otherwise draws its base seed from the global RNG, one draw more in a
    # run resumed mid-epoch than in an uninterrupted one, and the global RNG drives dropout (NASNet) -> not bitwise.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                                       persistent_workers=False, drop_last=False, pin_memory=pin_memory,
                                       generator=torch.Generator())


def _to(images, device: torch.device, channels_last: bool = False):
    if isinstance(images, dict):
        return {k: v.to(device, non_blocking=True) for k, v in images.items()}
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def use_channels_last(rec: dict, device: torch.device) -> bool:
    """The recipe's ``channels_last``; by default on CUDA only. On CPU it is a per-run choice, measured per run by
    bench/cpu_channels_last.py: a step 1.1-1.9x faster for every embedded run (NASNet's separable convolutions
    most), though torch's channels_last BatchNorm is less exact on CPU (tests/test_models.py)."""
    return bool(rec.get("channels_last", device.type == "cuda"))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively: AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16 (also
    AMD Zen 4). Elsewhere oneDNN emulates bf16 and a step gets slower, not faster."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def use_bf16(rec: dict, device: torch.device) -> bool:
    """The recipe's ``bf16`` (autocast of the training and dev forwards); by default on CUDA only. On CPU it is a per-run
    choice that needs native bf16 (``cpu_has_native_bf16``): there a BagNet step is 1.5x faster with AMX and
    1.6-2.3x faster with AVX512-BF16 (bench/cpu_bf16.py), while NASNet's depthwise convolutions get slower; without
    either, bf16 is emulated and slow, so such a CPU trains in fp32 (and says so)."""
    if not rec.get("bf16", device.type == "cuda"):
        return False
    if device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("bf16 requested but this CPU has neither AMX tiles nor AVX512-BF16: training in fp32")
        return False
    return True


def _autocast(enabled: bool, device: torch.device):
    """A factory of bf16 autocast contexts for ``device`` (no-op contexts when disabled)."""
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------------- the loop

def _check_recipe(run: str, rec: dict, world: int) -> None:
    missing = [k for k in ("model", "stage", "lr", "batch_size", "epochs") if k not in rec]
    if missing:
        raise UserError(f"train.{run} is missing {', '.join(missing)}", "add them to the run's recipe in the config")
    if rec["batch_size"] % world:
        raise UserError(f"train.{run}.batch_size = {rec['batch_size']} does not divide among {world} processes",
                        "use a global batch size that is a multiple of the number of tasks")


# Recipe and dataset keys that never change the weights a run ends with: changing them keeps its checkpoint valid.
_EXECUTION_KEYS = {"checkpoint_every", "eval_every", "eval_batch_size", "paper_lr", "paper_batch_size", "root",
                   *LOADING_KEYS}


def fingerprint(config: dict, run: str) -> str:
    """Hash of what decides the weights of ``run``: its recipe, the ``models`` and ``dataset`` sections (execution
    settings left out). Stored in the checkpoint so that a resume never mixes two configs."""
    part = {"run": run, "recipe": recipe(config, run), "models": config.get("models") or {},
            "dataset": config["dataset"]}
    part = {k: {kk: vv for kk, vv in v.items() if kk not in _EXECUTION_KEYS} if isinstance(v, dict) else v
            for k, v in part.items()}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


STALE_CHOICES = ("error", "restart")


def _check_resumable(state: dict, path: Path, run: str, model_name: str, fp: str, stale: str = "error") -> bool:
    """Whether the checkpoint at ``path`` can be resumed. A checkpoint of another run or model is a one-line UserError
    (not a state_dict key dump); one of this run under another config is too, unless ``stale`` is ``restart``
    (what the workflow asks when it reruns a job because its config changed): then it returns False."""
    fix = f"pass the --out folder of this run, restore the config it was trained with, or delete {path} to restart"
    if state.get("run", run) != run or state.get("model_name", model_name) != model_name:
        raise UserError(f"checkpoint {path} belongs to run {state.get('run')} (model {state.get('model_name')}), "
                        f"not to run {run} (model {model_name})", fix)
    if state.get("fingerprint", fp) == fp:
        return True
    if stale == "restart":
        return False
    raise UserError(f"checkpoint {path} was written under another config of run {run} (its recipe, models or "
                    f"dataset section differ)", fix + ", or pass --stale-checkpoint restart")


def _set_aside(path: Path, fingerprint: str) -> Path:
    """Rename a stale checkpoint to ``checkpoint.<its fingerprint>.pt`` beside it: restarting loses nothing."""
    kept = path.with_name(f"{path.stem}.{fingerprint}{path.suffix}")
    path.replace(kept)
    return kept


def train(config: dict, run: str, seed: int, out: str | Path, init: dict[str, str] | None = None,
          device: str | None = None, stale: str = "error") -> Path:
    """Train run ``run`` with ``seed`` into ``out`` (resuming from ``out/checkpoint.pt``); returns ``out/model.pt``.

    Args:
        config: a validated experiment config.
        run: key of ``config['train']``.
        seed: the training seed (one of ``config['seeds']``).
        out: output folder.
        init: run name -> output folder of each run listed in the recipe's ``init_from``.
        device: torch device; CUDA when available.
        stale: a ``checkpoint.pt`` of this run written under another config: ``error`` (default) or ``restart``
            from scratch, keeping it as ``checkpoint.<its fingerprint>.pt``.
    """
    rec = {**recipe(config, run), "base_size": config["dataset"]["image_size"]}
    init = dict(init or {})
    missing = [r for r in rec.get("init_from", []) if r not in init]
    if missing:
        raise UserError(f"run {run} starts from {', '.join(missing)} but no --init was given for it",
                        f"pass --init {missing[0]}=DIR with the output folder of that run")
    out = io.ensure_writable(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distributed.init(dev)
    world, main = distributed.world_size(), distributed.is_main()
    _check_recipe(run, rec, world)
    started = time.perf_counter()

    torch.manual_seed(seed)
    from saccader.models import from_config

    model = from_config(rec["model"], config)
    for name in rec.get("init_from", []):
        n = load_init(model, io.torch_load(Path(init[name]) / "model.pt"), f"run {name}")
        log.info("%s: %d tensors initialised from %s (%s)", run, n, name, init[name])
    model.to(dev)
    channels_last = use_channels_last(rec, dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    distributed.broadcast_module(model)
    groups = param_groups(model, rec)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.SGD(groups, lr=rec["lr"], momentum=MOMENTUM, nesterov=True)

    from saccader.data.folder import build_dataset

    res = _resolution(config, rec)
    if rec.get("cache_features") and rec["stage"] == "location_pretrain":
        tick = time.perf_counter()
        train_set = _CachedFeatures(model, build_dataset(config, "train", train=False, resolution=res),
                                    rec.get("eval_batch_size", rec["batch_size"]), config["dataset"]["num_workers"], dev)
        log.info("%s: cached the frozen representation of %d images in %.1f s", run, len(train_set),
                 time.perf_counter() - tick)
    else:
        train_set = _SeededItems(build_dataset(config, "train", train=True, resolution=res), seed)
    dev_set = build_dataset(config, "dev", train=False, resolution=res)
    batch = rec["batch_size"]
    steps_per_epoch = len(train_set) // batch
    if steps_per_epoch == 0:
        raise UserError(f"train.{run}.batch_size = {batch} exceeds the {len(train_set)} training images",
                        "use a smaller batch_size")
    scheduler = build_scheduler(optimizer, rec, steps_per_epoch)
    ema = None
    if rec.get("ema_decay"):
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=rec["ema_decay"])
    generator = torch.Generator(device=dev).manual_seed(seed + 1_000_003 * (1 + distributed.rank()))
    autocast = _autocast(use_bf16(rec, dev), dev)
    workers = config["dataset"].get("num_workers", 0)
    # Reused every epoch (bench/data_path). Its own generator: a DataLoader draws a base seed from the global RNG at
    # every pass, which dropout and drop path also use, so without it eval_every would change the trained weights.
    dev_loader = torch.utils.data.DataLoader(dev_set, batch_size=rec.get("eval_batch_size", batch),
                                             num_workers=workers, pin_memory=dev.type == "cuda",
                                             persistent_workers=workers > 0, generator=torch.Generator())

    ckpt_path = out / "checkpoint.pt"
    every = rec.get("checkpoint_every", 0) or steps_per_epoch
    epoch, step, rows, sums = 0, 0, [], {"loss": 0.0, "correct": 0.0, "images": 0, "seconds": 0.0}
    fp = fingerprint(config, run)
    if main:  # temporary files of writes that a kill interrupted (the real names are never half-written)
        for tmp in out.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    state = checkpoint.load(ckpt_path) if ckpt_path.exists() else None
    if state is not None and not _check_resumable(state, ckpt_path, run, rec["model"], fp, stale):
        distributed.barrier()  # every process has read it before it moves
        if main:
            kept = _set_aside(ckpt_path, state["fingerprint"])
            log.warning("%s seed %d: %s was written under another config; kept as %s, training from scratch",
                        run, seed, ckpt_path, kept.name)
        state = None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint {ckpt_path} does not fit run {run} (model {rec['model']}): "
                            f"{str(exc).splitlines()[0][:200]}",
                            f"restore the config it was trained with, or delete {ckpt_path} to restart") from None
        checkpoint.set_rng_state(state["rng"], generator)
        epoch, step, rows, sums = state["epoch"], state["step"], state["log"], state["sums"]
        log.info("%s seed %d: resuming from %s at epoch %d step %d", run, seed, ckpt_path, epoch, step)
    else:
        log.info("%s seed %d: training %s (stage %s) for %d epochs of %d steps, batch %d, lr %g (paper %s at batch "
                 "%s), %d process(es), on %s -> %s", run, seed, rec["model"], rec["stage"], rec["epochs"],
                 steps_per_epoch, batch, rec["lr"], rec.get("paper_lr"), rec.get("paper_batch_size"), world, dev, out)

    def save_checkpoint():
        # A finite loss can still step into non-finite weights; never let those replace the last good checkpoint.
        if not all(torch.isfinite(p).all() for p in params):
            raise UserError(f"run {run} seed {seed}: weights became non-finite by epoch {epoch + 1} step {step}; the "
                            f"last good checkpoint {ckpt_path} is kept",
                            f"lower train.{run}.lr or check the data and the init_from weights")
        if main:
            checkpoint.save(ckpt_path, run=run, model_name=rec["model"], fingerprint=fp,
                            model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), ema=ema.state_dict() if ema is not None else {},
                            rng=checkpoint.rng_state(generator), epoch=epoch, step=step, log=rows, sums=sums)
        distributed.barrier()

    while epoch < rec["epochs"]:
        if isinstance(train_set, _SeededItems):
            train_set.epoch = epoch
        order = epoch_order(len(train_set), seed, epoch)
        shards = [distributed.shard(order[s * batch:(s + 1) * batch]) for s in range(step, steps_per_epoch)]
        loader = _loader(train_set, torch.cat(shards).tolist() if shards else [], batch // world, workers,
                         pin_memory=dev.type == "cuda")
        bar = tqdm(total=steps_per_epoch, initial=step, desc=f"{run} seed{seed} epoch {epoch + 1}/{rec['epochs']}",
                   disable=not main, leave=False, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)  # keep job logs short
        tick = time.perf_counter()
        for images, labels in loader:
            _train_mode(model)
            if rec.get("drop_path_epochs"):  # NASNet's scheduled drop path: a function of the step, so resumable
                set_drop_path_progress(model, (epoch + step / steps_per_epoch) / rec["drop_path_epochs"])
            images, labels = _to(images, dev, channels_last), labels.to(dev)
            with autocast():
                loss, right = step_loss(model, rec, images, labels, generator)
            mean_loss = distributed.all_reduce_mean(loss.detach().float())
            if not torch.isfinite(mean_loss):
                raise UserError(f"run {run} seed {seed}: loss is {mean_loss.item()} at epoch {epoch + 1} step "
                                f"{step + 1}; the last good checkpoint {ckpt_path} is kept",
                                f"lower train.{run}.lr or check the data and the init_from weights")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(params)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            sums["loss"] += mean_loss.item() * batch
            sums["correct"] += distributed.all_reduce_sum(right.sum().float()).item()
            sums["images"] += batch
            bar.update(1)
            if step < steps_per_epoch and step % every == 0:
                sums["seconds"] += time.perf_counter() - tick
                tick = time.perf_counter()
                save_checkpoint()
        bar.close()
        sums["seconds"] += time.perf_counter() - tick
        final = ema.module if ema is not None else model
        last = epoch + 1 == rec["epochs"]
        top1 = top5 = float("nan")
        if main and (last or (epoch + 1) % rec.get("eval_every", 1) == 0):
            top1, top5 = evaluate(final, rec, dev_loader, dev, autocast)
        rows.append({"run": run, "seed": seed, "epoch": epoch + 1, "loss": sums["loss"] / max(sums["images"], 1),
                     "train_top1": sums["correct"] / max(sums["images"], 1), "dev_top1": top1, "dev_top5": top5,
                     "lr": optimizer.param_groups[0]["lr"], "images_per_s": sums["images"] / max(sums["seconds"], 1e-9),
                     "seconds": sums["seconds"]})
        if main:
            log.info("%s seed %d epoch %d: loss %.4f train %.3f dev top-1 %.3f top-5 %.3f (%.0f img/s)", run, seed,
                     epoch + 1, rows[-1]["loss"], rows[-1]["train_top1"], top1, top5, rows[-1]["images_per_s"])
        epoch, step, sums = epoch + 1, 0, {"loss": 0.0, "correct": 0.0, "images": 0, "seconds": 0.0}
        save_checkpoint()

    final = ema.module if ema is not None else model
    if main:
        with io.atomic_path(out / "train_log.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        io.torch_save(final.state_dict(), out / "model.pt")
        log.info("%s seed %d: done in %.1f s; wrote %s", run, seed, time.perf_counter() - started, out / "model.pt")
    distributed.barrier()
    return out / "model.pt"


# --------------------------------------------------------------------------------------------------- CLI

def _run(args) -> int:
    config = load(args.config)
    if args.seed not in config["seeds"]:
        log.warning("seed %d is not one of the config's seeds %s", args.seed, config["seeds"])
    train(config, args.run, args.seed, args.out, parse_run_dirs(args.init, "--init"), args.device,
          args.stale_checkpoint)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train one run of the config (resumes from DIR/checkpoint.pt)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--run", required=True, help="run name, a key of the config's train: section")
    p.add_argument("--seed", type=int, required=True, help="training seed")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, train_log.parquet, model.pt)")
    p.add_argument("--init", action="append", default=[], metavar="RUN=DIR",
                   help="output folder of a run listed in the recipe's init_from (repeatable)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--stale-checkpoint", choices=STALE_CHOICES, default="error",
                   help="a DIR/checkpoint.pt of this run written under another config: stop with an error (default) "
                        "or restart from scratch, keeping it as checkpoint.<fingerprint>.pt (the workflow's choice)")
    p.set_defaults(func=_run)
