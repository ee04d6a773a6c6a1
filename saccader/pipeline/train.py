"""Training of every model of the paper (Section 3.2, Appendix C): ``saccader train``.

One loop serves all runs; a run's ``stage`` picks the objective, one class per stage registered in
``saccader.catalog.STAGES`` (``saccader/objectives.py``; DRAM's in ``baselines/dram.py``):

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

A recipe's ``batch_size`` is the paper's global minibatch. How it is cut is an execution fact (never in the run's
fingerprint): over the world's ranks (``batch_size / world`` images each), and with ``--micro-batch M`` into
``batch_size / (world * M)`` micro-batches whose gradients are accumulated before the one optimizer step, so that
the update is the one of the whole minibatch (:func:`accumulate_gradients`). What the paper defines on the minibatch
stays on the global batch: the learning rate, the REINFORCE baseline b, the logged minibatch accuracy. Batch-norm
statistics are those of each micro-batch, as per-core batch norm on the paper's TPUs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from saccader import catalog

from saccader.pipeline import checkpoint, distributed, io
from saccader.pipeline.bundle import write_card
from saccader.pipeline.config import (add_config_argument, fingerprint, load, parse_run_dirs, resolution,
                                      split_problem, train_recipe)
from saccader.errors import UserError
from saccader.schedule import build_scheduler

__all__ = ["STAGES", "Session", "step_loss", "accumulate_gradients", "predict", "train", "register"]

log = logging.getLogger("saccader.pipeline.train")
STAGES = tuple(catalog.STAGES)
MOMENTUM = 0.9  # Nesterov momentum of every run (Section 3.2, Appendix C)
# The training step never waits for the GPU; the host reads the loss (finite?) at checkpoints, at the end of an
# epoch and every SYNC_EVERY steps, so a non-finite loss stops the run at most that many steps late.
SYNC_EVERY = 100
# objectives whose baseline b depends on the sampled trajectories
SAMPLING_STAGES = tuple(s for s in STAGES if catalog.objective_class(s).samples)


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


def train_mode(model: nn.Module) -> None:
    """Training mode, except batch norms whose weights are frozen (they keep their running statistics)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


# --------------------------------------------------------------------------------------------------- objectives

def objective(rec: dict):
    """The objective of the recipe's stage (``saccader.catalog.STAGES``), its baseline b averaged over the ranks."""
    return catalog.objective_class(rec["stage"])(distributed.all_reduce_mean)


def step_loss(model: nn.Module, rec: dict, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator, baseline: torch.Tensor | float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one minibatch under the run's objective, and the per-image correctness used for the log.

    ``baseline``: b of eq 6 / DRAM's REINFORCE term; by default the accuracy of the sampled trajectories over the
    global minibatch, all-reduced over the ranks (:func:`accumulate_gradients` passes the one of the whole global
    batch when it is cut into micro-batches)."""
    return objective(rec).loss(model, rec, images, labels, generator, baseline)


def _split(images, size: int) -> list:
    """A batch (tensor, or dict of tensors for cached features) cut into consecutive chunks of ``size`` images."""
    if isinstance(images, dict):
        parts = {k: v.split(size) for k, v in images.items()}
        return [dict(zip(parts, chunk)) for chunk in zip(*parts.values())]
    return list(images.split(size))


def accumulate_gradients(model: nn.Module, rec: dict, images, labels: torch.Tensor, generator: torch.Generator,
                         micro_batch: int = 0, autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of this rank's share of the global minibatch, adding its gradient to ``.grad``; returns
    the rank's mean loss (detached, float) and the per-image correctness.

    ``micro_batch`` 0 (or the whole share): one forward and one backward. Otherwise the share is cut into k chunks of
    ``micro_batch`` images, run one after the other, each loss scaled by 1/k: every objective is a mean over equal
    chunks, so the accumulated gradient is the one of the whole share (to float rounding). The sampling objectives'
    baseline b (eq 6; DRAM's hybrid loss) is the accuracy over the global minibatch, known only once every chunk has
    sampled its trajectories: a no-grad pass over the chunks computes it first (:func:`_global_baseline`), and the
    chunks then draw the same samples again. Batch-norm statistics are per chunk (per-core BN on the paper's TPUs).
    """
    n = len(labels)
    if not micro_batch or micro_batch >= n:
        with autocast():
            loss, right = step_loss(model, rec, images, labels, generator)
        loss.backward()
        return loss.detach().float(), right
    chunks, targets = _split(images, micro_batch), labels.split(micro_batch)
    k = len(chunks)
    baseline = (_global_baseline(model, rec, chunks, targets, generator, autocast)
                if objective(rec).samples else None)
    total, rights = 0.0, []
    for x, y in zip(chunks, targets):
        with autocast():
            loss, right = step_loss(model, rec, x, y, generator, baseline)
        (loss / k).backward()
        total = total + loss.detach().float()
        rights.append(right)
    return total / k, torch.cat(rights)


@torch.no_grad()
def _global_baseline(model: nn.Module, rec: dict, chunks: list, targets: list, generator: torch.Generator,
                     autocast) -> torch.Tensor:
    """b over the global minibatch for micro-batched sampling stages: the chunks' rewards from a no-grad forward,
    summed over the chunks and the ranks. The generator and the global RNGs are rewound and the batch-norm buffers
    restored afterwards, so the training pass draws the same trajectories and updates the statistics once. Costs
    one forward without backward per step, only when the share is cut into micro-batches."""
    state, cpu = generator.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(generator.device) if generator.device.type == "cuda" else None
    buffers = [b.clone() for b in model.buffers()]
    hits = 0.0
    for x, y in zip(chunks, targets):
        with autocast():
            _, right = step_loss(model, rec, x, y, generator, baseline=0.0)
        hits = hits + right.float().sum()
    generator.set_state(state)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, generator.device)
    for b, saved in zip(model.buffers(), buffers):
        b.copy_(saved)
    return distributed.all_reduce_sum(hits) / (sum(len(y) for y in targets) * distributed.world_size())


@torch.no_grad()
def predict(model: nn.Module, rec: dict, images: torch.Tensor) -> torch.Tensor:
    """Test-time logits of the trained model under its stage's objective: full image (classify), greedy policy
    (Saccader), mean location (DRAM)."""
    return objective(rec).predict(model, rec, images)


def evaluate(model: nn.Module, rec: dict, loader, device, autocast, standardize=None) -> tuple[float, float]:
    """Top-1 and top-5 accuracy on the dev split. With several ranks each evaluates the shard its ``loader`` holds
    and the counts are summed over the ranks (every rank gets the accuracy of the whole split). The counts stay on
    the device until the end (no wait per batch)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # top-1, top-5, images
    channels_last = use_channels_last(rec, device)
    for images, labels in loader:
        images, labels = to_device(images, device, channels_last, standardize), labels.to(device, non_blocking=True)
        with autocast():
            logits = predict(model, rec, images).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        counts[0] += (top[:, 0] == labels).sum()
        counts[1] += (top == labels[:, None]).any(dim=1).sum()
        counts[2] += len(labels)
    top1, top5, n = distributed.all_reduce_sum(counts).tolist()
    return top1 / max(n, 1), top5 / max(n, 1)


# --------------------------------------------------------------------------------------------------- data

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
                out = model.representation.forward_features(to_device(images, device))
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
    workers or on where a resumed run restarted. Items are asked for as ``(epoch, index)`` (what
    :class:`_EpochSampler` yields), so persistent workers need no per-epoch state. The dataset provides
    ``get(index, generator)``, as ``FolderDataset`` does."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        # A generator of its own, seeded like the global CPU generator was (the same draws, bitwise the same crops):
        # forking and reseeding the global one cost more than the crop itself (bench/data_path.py).
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + int(index))
        return self.dataset.get(index, generator)


class _EpochSampler(torch.utils.data.Sampler):
    """The keys of the items one epoch reads, set before each epoch: the loader and its persistent workers are made
    once per run."""

    def __init__(self):
        self.keys = []

    def set_epoch(self, dataset, epoch: int, indices: list[int]) -> None:
        self.keys = [(epoch, i) for i in indices] if isinstance(dataset, _SeededItems) else indices

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of one epoch, a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def _loader(dataset, sampler, batch_size, workers, pin_memory=False):
    # One per run, its workers persistent (restarting them cost seconds per ImageNet epoch); the sampler holds each
    # epoch's keys. Pinned memory makes the non_blocking copy to the GPU async. Its own generator: a loader's
    # iterator otherwise draws its base seed from the global RNG, one draw more in a run resumed mid-epoch than in an
    # uninterrupted one, and the global RNG drives dropout (NASNet) -> not bitwise.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       persistent_workers=workers > 0, drop_last=False, pin_memory=pin_memory,
                                       generator=torch.Generator())


def to_device(images, device: torch.device, channels_last: bool = False, standardize=None):
    """Images to ``device``; uint8 images (what the loaders send: a quarter of the bytes) are standardised there."""
    if isinstance(images, dict):
        return {k: v.to(device, non_blocking=True) for k, v in images.items()}
    images = images.to(device, non_blocking=True)
    if standardize is not None and images.dtype == torch.uint8:
        images = standardize(images)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def use_channels_last(rec: dict, device: torch.device) -> bool:
    """The recipe's ``channels_last``; by default on CUDA only. On CPU it is a per-run choice, because the gain
    differs by model and CPU (bench/cpu_channels_last.py measures it per run), and torch's channels_last BatchNorm is
    less exact on CPU (tests/test_models.py)."""
    return bool(rec.get("channels_last", device.type == "cuda"))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively: AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16 (also
    AMD Zen 4). Elsewhere oneDNN emulates bf16 and a step gets slower, not faster."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def use_bf16(rec: dict, device: torch.device) -> bool:
    """The recipe's ``bf16`` (autocast of the training and dev forwards); by default on CUDA only. On CPU it is a per-run
    choice that needs native bf16 (``cpu_has_native_bf16``): there convolution-heavy steps get faster while
    NASNet's depthwise convolutions get slower (bench/cpu_bf16.py measures each run); without either, bf16 is
    emulated and slow, so such a CPU trains in fp32 (and says so)."""
    if not rec.get("bf16", device.type == "cuda"):
        return False
    if device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("bf16 requested but this CPU has neither AMX tiles nor AVX512-BF16: training in fp32")
        return False
    return True


def autocast_factory(enabled: bool, device: torch.device):
    """A factory of bf16 autocast contexts for ``device`` (no-op contexts when disabled)."""
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------------- the loop

def _check_recipe(run: str, rec: dict, world: int, micro_batch: int = 0) -> None:
    missing = [k for k in ("model", "stage", "lr", "batch_size", "epochs") if k not in rec]
    if missing:
        raise UserError(f"train.{run} is missing {', '.join(missing)}", "add them to the run's recipe in the config")
    problem = split_problem(rec["batch_size"], world, micro_batch)
    if problem:
        raise UserError(f"train.{run}: {problem[0]}", problem[1])


class _Health:
    """The first non-finite mean loss of the epoch and its step, kept on the device (the step never waits for the
    GPU to know it); :meth:`check` reads it, at checkpoints, at the end of the epoch and every SYNC_EVERY steps."""

    def __init__(self, device: torch.device):
        self.step = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet (steps count from 1)
        self.value = torch.zeros((), device=device)

    def update(self, mean_loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(mean_loss) & (self.step == 0)
        self.step = torch.where(first, step, self.step)
        self.value = torch.where(first, mean_loss, self.value)

    def first_bad(self) -> tuple[int, float] | None:
        step = int(self.step)
        return (step, float(self.value)) if step else None


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


def _check_init(run: str, rec: dict, init: dict) -> None:
    missing = [r for r in rec.get("init_from", []) if r not in init]
    if missing:
        raise UserError(f"run {run} starts from {', '.join(missing)} but no --init was given for it",
                        f"pass --init {missing[0]}=DIR with the output folder of that run")


class Session:
    """One training run set up: the model (with its ``init_from`` weights), optimizer, schedule, EMA, precision,
    memory format, data sets and loaders of ``run`` with ``seed``. :func:`train` is its loop; ``saccader plan --cpu``
    and the benchmarks time the same :meth:`steps`.

    ``datasets(split, train, uint8)`` gives a split's dataset (default: the config's, ``data.folder.build_dataset``
    at the recipe's resolution); ``init`` maps each run of the recipe's ``init_from`` to its output folder.
    """

    def __init__(self, config: dict, run: str, seed: int, datasets=None, init: dict[str, str] | None = None,
                 device: str | None = None, micro_batch: int = 0):
        from saccader.models import from_config
        from saccader.pipeline.data.folder import Standardize, build_dataset

        self.config, self.run, self.seed, self.micro_batch = config, run, seed, micro_batch
        self.rec = rec = train_recipe(config, run)
        init = dict(init or {})
        _check_init(run, rec, init)
        self.device = dev = distributed.init(device)
        self.world, self.rank = world, rank = distributed.world_size(), distributed.rank()
        _check_recipe(run, rec, world, micro_batch)

        torch.manual_seed(seed)
        model = from_config(rec["model"], config)
        for name in rec.get("init_from", []):
            n = load_init(model, io.torch_load(Path(init[name]) / "model.pt"), f"run {name}")
            log.info("%s: %d tensors initialised from %s (%s)", run, n, name, init[name])
        model.to(dev)
        self.channels_last = use_channels_last(rec, dev)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        distributed.broadcast_module(model)
        self.model = model
        groups = param_groups(model, rec)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.SGD(groups, lr=rec["lr"], momentum=MOMENTUM, nesterov=True)

        res = resolution(config, rec)
        if datasets is None:
            datasets = lambda split, train, uint8: build_dataset(  # noqa: E731
                config, split, train=train, resolution=res, uint8=uint8)
        self.standardize = Standardize(config["dataset"]["mean"], config["dataset"]["std"])
        self.cache_cpu_s = 0.0
        workers = config["dataset"].get("num_workers", 0)
        if rec.get("cache_features") and rec["stage"] == "location_pretrain":
            tick, cpu = time.perf_counter(), time.process_time()
            self.train_set = _CachedFeatures(model, datasets("train", False, False),
                                             rec.get("eval_batch_size", rec["batch_size"]), workers, dev)
            self.cache_cpu_s = time.process_time() - cpu
            log.info("%s: cached the frozen representation of %d images in %.1f s", run, len(self.train_set),
                     time.perf_counter() - tick)
        else:
            self.train_set = _SeededItems(datasets("train", True, True), seed)
        dev_set = datasets("dev", False, True)
        self.batch = batch = rec["batch_size"]
        self.share = share = batch // world
        steps_per_epoch = len(self.train_set) // batch
        if steps_per_epoch == 0:
            raise UserError(f"train.{run}.batch_size = {batch} exceeds the {len(self.train_set)} training images",
                            "use a smaller batch_size")
        self.steps_per_epoch = min(steps_per_epoch, rec.get("steps_per_epoch") or steps_per_epoch)  # a budget
        self.scheduler = build_scheduler(self.optimizer, rec, self.steps_per_epoch)
        self.ema = None
        if rec.get("ema_decay"):
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=rec["ema_decay"])
        self.generator = torch.Generator(device=dev).manual_seed(seed + 1_000_003 * (1 + rank))
        self.autocast = autocast_factory(use_bf16(rec, dev), dev)
        pin = dev.type == "cuda"
        # Reused every epoch (bench/data_path). Its own generator: a DataLoader draws a base seed from the global RNG
        # at every pass, which dropout and drop path also use, so without it eval_every would change the trained
        # weights. Each rank evaluates its shard of the dev split, eval_batch_size images at a time (default: a
        # training forward's).
        self.dev_loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dev_set, range(rank, len(dev_set), world)),
            batch_size=rec.get("eval_batch_size", micro_batch or share), num_workers=workers, pin_memory=pin,
            persistent_workers=workers > 0, generator=torch.Generator())
        self.sampler = _EpochSampler()
        self.loader = _loader(self.train_set, self.sampler, share, workers, pin_memory=pin)

    @property
    def final(self) -> nn.Module:
        """The weights the run ends with: the EMA's where the recipe keeps one (NASNet), else the model's."""
        return self.ema.module if self.ema is not None else self.model

    def steps(self, epoch: int, start: int = 0):
        """Run the steps ``start`` .. ``steps_per_epoch`` of ``epoch`` (its order a function of (seed, epoch)),
        yielding each step's mean loss over the ranks and this rank's per-image correctness (both on the device)."""
        order = epoch_order(len(self.train_set), self.seed, epoch)
        shards = [distributed.shard(order[s * self.batch:(s + 1) * self.batch])
                  for s in range(start, self.steps_per_epoch)]
        self.sampler.set_epoch(self.train_set, epoch, torch.cat(shards).tolist() if shards else [])
        for step, (images, labels) in enumerate(self.loader, start):
            yield self.step(images, labels, epoch + step / self.steps_per_epoch)

    def step(self, images, labels: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch of the loader, ``progress`` epochs into the run (NASNet's drop path)."""
        model, rec = self.model, self.rec
        train_mode(model)
        if rec.get("drop_path_epochs"):  # NASNet's scheduled drop path: a function of the step, so resumable
            set_drop_path_progress(model, progress / rec["drop_path_epochs"])
        images = to_device(images, self.device, self.channels_last, self.standardize)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss, right = accumulate_gradients(model, rec, images, labels, self.generator, self.micro_batch,
                                           self.autocast)
        mean_loss = distributed.all_reduce_mean(loss)
        distributed.average_gradients(self.params)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(model)
        return mean_loss, right

    def evaluate(self) -> tuple[float, float]:
        """Top-1 and top-5 dev accuracy of :attr:`final`; every rank evaluates its shard."""
        distributed.broadcast_buffers(self.final)  # of the model rank 0 saves (BN statistics are per replica)
        return evaluate(self.final, self.rec, self.dev_loader, self.device, self.autocast, self.standardize)

    def weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.params)

    def state(self) -> dict:
        """The state a checkpoint holds of the session (its RNG apart: ``checkpoint.rng_state``)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else {}}

    def load_state(self, state: dict, path: Path) -> None:
        """Resume from the checkpoint ``state`` read from ``path``: weights, optimizer, schedule, EMA and this
        rank's random stream."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint {path} does not fit run {self.run} (model {self.rec['model']}): "
                            f"{str(exc).splitlines()[0][:200]}",
                            f"restore the config it was trained with, or delete {path} to restart") from None
        rng = checkpoint.rank_rng_state(state, self.rank, self.world)
        if rng is not None:
            checkpoint.set_rng_state(rng, self.generator)
        else:
            log.warning("%s seed %d: %s was written by another number of processes; rank %d starts a fresh random "
                        "stream", self.run, self.seed, path, self.rank)


def train(config: dict, run: str, seed: int, out: str | Path, init: dict[str, str] | None = None,
          device: str | None = None, stale: str = "error", micro_batch: int = 0) -> Path:
    """Train run ``run`` with ``seed`` into ``out`` (resuming from ``out/checkpoint.pt``); returns ``out/model.pt``.

    Args:
        config: a validated experiment config.
        run: key of ``config['train']``.
        seed: the training seed (one of ``config['seeds']``).
        out: output folder.
        init: run name -> output folder of each run listed in the recipe's ``init_from``.
        device: torch device; CUDA when available (``cuda:LOCAL_RANK`` with several tasks).
        stale: a ``checkpoint.pt`` of this run written under another config: ``error`` (default) or ``restart``
            from scratch, keeping it as ``checkpoint.<its fingerprint>.pt``.
        micro_batch: images per forward and backward on each rank (0: the rank's whole share of the global batch);
            gradients of ``batch_size / (world * micro_batch)`` micro-batches are accumulated into one step. An
            execution fact: it never enters the fingerprint, and a run may resume with another value.
    """
    _check_init(run, train_recipe(config, run), dict(init or {}))
    out = io.ensure_writable(out)
    started = time.perf_counter()
    session = Session(config, run, seed, init=init, device=device, micro_batch=micro_batch)
    rec, dev, batch, share = session.rec, session.device, session.batch, session.share
    world, main = session.world, distributed.is_main()
    steps_per_epoch = session.steps_per_epoch

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
        session.load_state(state, ckpt_path)
        epoch, step, rows, sums = state["epoch"], state["step"], state["log"], state["sums"]
        log.info("%s seed %d: resuming from %s at epoch %d step %d", run, seed, ckpt_path, epoch, step)
    else:
        log.info("%s seed %d: training %s (stage %s) for %d epochs of %d steps, batch %d, lr %g (paper %s at batch "
                 "%s), %d process(es), on %s -> %s", run, seed, rec["model"], rec["stage"], rec["epochs"],
                 steps_per_epoch, batch, rec["lr"], rec.get("paper_lr"), rec.get("paper_batch_size"), world, dev, out)
    if micro_batch and micro_batch < share:
        log.info("%s: %d images per process in %d micro-batches of %d (gradients accumulated)", run, share,
                 share // micro_batch, micro_batch)
    health = _Health(dev)

    def check_finite():
        bad = health.first_bad()
        if bad is not None:
            raise UserError(f"run {run} seed {seed}: loss is {bad[1]} at epoch {epoch + 1} step {bad[0]}; the last "
                            f"good checkpoint {ckpt_path} is kept",
                            f"lower train.{run}.lr or check the data and the init_from weights")

    def host_sums() -> dict:
        return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in sums.items()}

    def save_checkpoint():
        check_finite()
        # A finite loss can still step into non-finite weights; never let those replace the last good checkpoint.
        if not session.weights_finite():
            raise UserError(f"run {run} seed {seed}: weights became non-finite by epoch {epoch + 1} step {step}; the "
                            f"last good checkpoint {ckpt_path} is kept",
                            f"lower train.{run}.lr or check the data and the init_from weights")
        rng = checkpoint.rng_state(session.generator)
        ranks = distributed.all_gather_object(rng) if world > 1 else None  # each rank resumes its own stream
        if main:
            checkpoint.save(ckpt_path, run=run, model_name=rec["model"], fingerprint=fp, **session.state(),
                            rng=rng, epoch=epoch, step=step, log=rows, sums=host_sums(),
                            **({"rng_ranks": ranks} if ranks else {}))
        distributed.barrier()

    while epoch < rec["epochs"]:
        bar = tqdm(total=steps_per_epoch, initial=step, desc=f"{run} seed{seed} epoch {epoch + 1}/{rec['epochs']}",
                   disable=not main, leave=False, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)  # keep job logs short
        tick = time.perf_counter()
        try:
            for mean_loss, right in session.steps(epoch, step):
                health.update(mean_loss, step + 1)
                step += 1
                # Kept on the device in float64: the same sums as Python floats of the per-step values, no wait.
                sums["loss"] += mean_loss.double() * batch
                sums["correct"] += distributed.all_reduce_sum(right.sum().float()).double()
                sums["images"] += batch
                bar.update(1)
                if step % SYNC_EVERY == 0:
                    check_finite()
                if step < steps_per_epoch and step % every == 0:
                    sums["seconds"] += time.perf_counter() - tick
                    tick = time.perf_counter()
                    save_checkpoint()
        except RuntimeError:  # e.g. sampling from the NaN probabilities of weights a NaN loss already broke
            check_finite()
            raise
        bar.close()
        check_finite()
        sums = host_sums()
        sums["seconds"] += time.perf_counter() - tick
        last = epoch + 1 == rec["epochs"]
        top1 = top5 = float("nan")
        if last or (epoch + 1) % rec.get("eval_every", 1) == 0:  # every rank evaluates its shard
            top1, top5 = session.evaluate()
        rows.append({"run": run, "seed": seed, "epoch": epoch + 1, "loss": sums["loss"] / max(sums["images"], 1),
                     "train_top1": sums["correct"] / max(sums["images"], 1), "dev_top1": top1, "dev_top5": top5,
                     "lr": session.optimizer.param_groups[0]["lr"],
                     "images_per_s": sums["images"] / max(sums["seconds"], 1e-9), "seconds": sums["seconds"]})
        if main:
            log.info("%s seed %d epoch %d: loss %.4f train %.3f dev top-1 %.3f top-5 %.3f (%.0f img/s)", run, seed,
                     epoch + 1, rows[-1]["loss"], rows[-1]["train_top1"], top1, top5, rows[-1]["images_per_s"])
        epoch, step, sums = epoch + 1, 0, {"loss": 0.0, "correct": 0.0, "images": 0, "seconds": 0.0}
        health = _Health(dev)
        save_checkpoint()

    if main:
        with io.atomic_path(out / "train_log.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        write_card(config, run, seed, out, rows[-1]["dev_top1"] if rows else None,  # a model.pt always has its card
                   rows[-1]["dev_top5"] if rows else None)
        io.torch_save(session.final.state_dict(), out / "model.pt")
        log.info("%s seed %d: done in %.1f s; wrote %s", run, seed, time.perf_counter() - started, out / "model.pt")
    distributed.barrier()
    return out / "model.pt"


# --------------------------------------------------------------------------------------------------- CLI

def _run(args) -> int:
    config = load(args.config)
    if args.seed not in config["seeds"]:
        log.warning("seed %d is not one of the config's seeds %s", args.seed, config["seeds"])
    train(config, args.run, args.seed, args.out, parse_run_dirs(args.init, "--init"), args.device,
          args.stale_checkpoint, args.micro_batch)
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import device, integer

    p = subparsers.add_parser("train", help="train one run of the config (resumes from DIR/checkpoint.pt)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--run", required=True, help="run name, a key of the config's train: section")
    p.add_argument("--seed", type=integer(0), required=True, help="training seed")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, train_log.parquet, model.pt)")
    p.add_argument("--init", action="append", default=[], metavar="RUN=DIR",
                   help="output folder of a run listed in the recipe's init_from (repeatable)")
    p.add_argument("--device", type=device, default=None,
                   help="torch device (default: cuda if available, else cpu; cuda means cuda:LOCAL_RANK)")
    p.add_argument("--micro-batch", type=integer(0), default=0, metavar="M",
                   help="images per forward/backward on each process; the gradients of batch_size / (processes x M) "
                        "micro-batches are accumulated into one step (default 0: no accumulation)")
    p.add_argument("--stale-checkpoint", choices=STALE_CHOICES, default="error",
                   help="a DIR/checkpoint.pt of this run written under another config: stop with an error (default) "
                        "or restart from scratch, keeping it as checkpoint.<fingerprint>.pt (the workflow's choice)")
    p.set_defaults(func=_run)
