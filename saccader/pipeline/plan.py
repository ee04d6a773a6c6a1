"""``saccader plan``: what every job of an experiment needs and costs, before it is submitted.

    saccader plan --config config.yaml [--profile slurm] [--gpu H100-80GB-SXM] [--mfu 0.3]

For every job of the config's DAG (the jobs come from the functions the workflow uses: ``saccader.pipeline.config.init_runs``,
``saccader.catalog.EVALUATIONS`` / ``required_runs``, ``saccader.catalog.ATTACKS`` / ``attacked_runs``):

- FLOPs per image of the forward and of a training step, counted with ``torch.utils.flop_counter``'s formulas on
  the real model at its real resolution, built on the meta device and run on fake tensors (``FakeTensorMode``:
  shapes only, no compute), so that NASNet-A Large at 331 costs no real arithmetic. torch's formula for the weight
  gradient of a grouped convolution ignores the groups (it counts a depthwise convolution's weight gradient C times
  over); ``_conv_backward_flop`` counts it right.
- Parameter, gradient, optimizer (SGD momentum) and EMA bytes; activation memory per training image at the recipe's
  precision (bf16 autocast where the recipe asks): the peak bytes of the tensors alive during a training step's
  forward and backward on fake tensors, as the slope between two batch sizes, both read off one pass (``Counter``);
  the bf16 weight copies are the bytes autograd saves that do not grow with the batch (saved-tensor hooks).
  Validated against torch's measured live memory in real CPU training steps (bench/plan_memory.py,
  tests/test_plan.py).
- Attack jobs: model queries per image (clean, PGD steps with an input gradient, SPSA samples x iterations).
- The micro-batch that fits the GPU (``GPUS`` or the profile's ``gpu_name``), the accumulation steps, wall time and
  GPU-hours from a throughput model (``mfu`` x the GPU's dense peak), replaced by measured images/s of
  ``results/benchmarks/gpu_train.json`` (bench/gpu_train.py) where present.
- The input pipeline: images/s each training job needs per GPU against the measured images/s per CPU core of the
  Appendix C transform on ImageNet-sized JPEGs, times the workers a task has.
- Checks against the SLURM profile (time with requeues, GPU and host memory, GPUs) with one line and fix per
  problem, and GPU-hours of ``all`` and of each analysis target.

Writes ``<results_dir>/plan.md`` and ``plan.json``; counts are cached in ``<results_dir>/.plan_cache.json`` keyed by
what decides them (models section, recipe, dataset sizes, torch version). Imports nothing that needs a GPU.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from saccader import catalog
from saccader.pipeline.config import add_config_argument, init_runs, load, recipe, resolution, train_recipe
from saccader.errors import UserError

log = logging.getLogger("saccader.pipeline.plan")
ROOT = Path(__file__).resolve().parents[2]
GIB = 1024 ** 3

# Data-centre GPUs: memory (GiB as the driver reports, about) and dense peak FLOP/s, no structured sparsity.
# fp32 is the rate an fp32 recipe gets: cuDNN convolutions use TF32 tensor cores by default on Ampere and later
# (torch.backends.cudnn.allow_tf32 = True), and convolutions are nearly all of these models' FLOPs.
# Sources (vendor datasheets): NVIDIA V100 (SXM2: 15.7 TFLOPS fp32, no bf16), A100 (19.5 fp32, 156 TF32,
# 312 bf16), H100 SXM (494.7 TF32, 989.5 bf16; the datasheet's 989 / 1,979 are with sparsity), H100 PCIe (378 TF32,
# 756 bf16), H200 SXM (as H100 SXM, 141 GB), L40S (183 TF32, 362 bf16 dense), AMD Instinct MI250X (95.7 fp32 matrix,
# 383 bf16), MI300X (163.4 TF32, 1,307.4 bf16).
@dataclass(frozen=True)
class GPU:
    memory_gib: float
    bf16_tflops: float | None  # None: no bf16 arithmetic (a bf16 recipe runs at the fp32 rate)
    fp32_tflops: float


GPUS = {
    "V100-32GB": GPU(32, None, 15.7),
    "A100-40GB": GPU(40, 312, 156),
    "A100-80GB": GPU(80, 312, 156),
    "H100-80GB-SXM": GPU(80, 989.5, 494.7),
    "H100-80GB-PCIe": GPU(80, 756, 378),
    "H200-141GB": GPU(141, 989.5, 494.7),
    "L40S-48GB": GPU(48, 362, 183),
    "MI250X-128GB": GPU(128, 383, 95.7),
    "MI300X-192GB": GPU(192, 1307.4, 163.4),
}
DEFAULT_GPU = "H100-80GB-SXM"
MFU = 0.3              # assumed model-FLOPs utilisation of a GPU training step (bf16 or TF32 convolutions)
USABLE_MEMORY = 0.9    # fraction of GPU memory the caching allocator can use (fragmentation)
CUDA_CONTEXT_GIB = 1.0  # CUDA context and cuDNN workspaces, outside torch's accounting
HOST_BASE_GIB = 4.0    # host memory of one training process (torch, CUDA libraries, a state dict on save)
PREFETCH = 2           # DataLoader prefetch_factor: batches in flight per worker
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000
GPU_RULES = ("train", "evaluate", "evaluate_glimpses", "attack")
COUNT_VERSION = 2      # bump when the counting code below changes: cached counts are then recomputed
# Counted batch: a prime that no width, resolution or class count of these models is a multiple of (Counter: it tells
# the storages that grow with the batch from those that do not). Fake tensors cost the same at any batch.
_BATCH = 97
_SLOPE = (2, 4)        # activation bytes per image: the slope of the peak live bytes between these batch sizes


# --------------------------------------------------------------------------------------------------- counting

def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """torch's convolution_backward formula with the weight gradient divided by ``groups``: torch counts it as a
    dense conv(input^T, grad_out^T), C_in * C_out products per pixel where a grouped convolution has C_in *
    C_out / groups (a depthwise one C times fewer)."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0]] + list(shape[2:])

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0].shape), not transposed)
    if output_mask[1]:
        gw = list(out_shape[1].shape)
        a, b = (t(grad_out_shape), t(x_shape)) if transposed else (t(x_shape), t(grad_out_shape))
        flops += conv_flop_count(a, b, t(gw), transposed=False) // groups
    return flops


class Counter:
    """One pass counted under a single dispatch mode: FLOPs by torch's flop counter formulas
    (``torch.utils.flop_counter.flop_registry``, applied as ``FlopCounterMode`` applies them, with
    ``_conv_backward_flop`` for grouped weight gradients), kernels run, the bytes of the tensors alive (each storage
    from the op that makes it until its last tensor is collected) and, inside ``saving()``, the bytes autograd saves.

    One mode rather than ``FlopCounterMode`` + a second mode: ``FlopCounterMode`` also attributes every op to the
    module it runs in (global module hooks), which we never read and which made a counted pass 2x slower.

    Bytes are split into storages that grow with the batch and those that do not (weights, gradients, bf16 weight
    copies, statistics): with ``batch`` a prime that no model dimension is a multiple of, a storage grows with the
    batch exactly when its byte count is a multiple of it. So one pass at that batch gives the live bytes at any
    other batch B, ``fixed + B * per_image``, at every moment, and the peak at the batch sizes in ``peaks_at``."""

    def __init__(self, batch: int = 1, peaks_at: tuple = ()):
        self.batch, self.flops, self.ops = batch, 0, 0
        self.refs: dict[int, int] = {}
        self.fixed = self.grows = 0                       # live bytes now: constant, and growing with the batch
        self.peaks = {b: 0.0 for b in peaks_at}           # peak live bytes at batch b
        self.saved: dict[int, int] = {}
        self._inner = 0

    # -- FLOPs and kernels
    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        registry = {**flop_registry, torch.ops.aten.convolution_backward: _raw_conv_backward}
        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in _shape_queries():
                    return func(*args, **kwargs)
                packet = func._overloadpacket
                if packet not in registry and func is not torch.ops.prim.device.default:
                    # as FlopCounterMode: an op without a formula is counted through its decomposition, if any
                    counter._inner += 1
                    try:
                        with self:
                            r = func.decompose(*args, **kwargs)
                    finally:
                        counter._inner -= 1
                    if r is not NotImplemented:
                        if not counter._inner:
                            counter._outputs(r)
                        return r
                out = func(*args, **kwargs)
                if packet in registry:
                    counter.flops += registry[packet](*args, **kwargs, out_val=out)
                if not counter._inner:
                    counter._outputs(out)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    def total(self) -> int:
        return self.flops

    # -- live bytes
    def _outputs(self, out) -> None:
        import torch

        self.ops += 1  # kernels run: what a step pays in per-op overhead
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)

    def _grows(self, nbytes: int) -> bool:
        return self.batch > 1 and nbytes > 0 and nbytes % self.batch == 0

    def _track(self, t) -> None:
        import weakref

        storage = t.untyped_storage()
        sid, size = storage._cdata, storage.nbytes()
        if sid not in self.refs:
            self.refs[sid] = 0
            if self._grows(size):
                self.grows += size
            else:
                self.fixed += size
            for b in self.peaks:
                self.peaks[b] = max(self.peaks[b], self.fixed + self.grows * b / self.batch)
        self.refs[sid] += 1
        weakref.finalize(t, self._drop, sid, size)

    def _drop(self, sid: int, size: int) -> None:
        self.refs[sid] -= 1
        if not self.refs[sid]:
            del self.refs[sid]
            if self._grows(size):
                self.grows -= size
            else:
                self.fixed -= size

    def slope(self) -> float:
        """Bytes per image: the growth of the peak live bytes between the two batch sizes of ``peaks_at``."""
        (b1, p1), (b2, p2) = sorted(self.peaks.items())
        return (p2 - p1) / (b2 - b1)

    # -- saved for the backward
    def _pack(self, x):
        storage = x.untyped_storage()  # views share it: each storage counts once
        self.saved[storage._cdata] = storage.nbytes()
        return x

    def saving(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda x: x)

    def saved_bytes(self, exclude=()) -> tuple[float, float]:
        """(bytes per image, bytes that do not grow with the batch) of what autograd saved, ``exclude`` left out."""
        skip = {p.untyped_storage()._cdata for p in exclude}
        kept = [n for k, n in self.saved.items() if k not in skip]
        grows = sum(n for n in kept if self._grows(n))
        return grows / self.batch, float(sum(kept) - grows)


def _raw_conv_backward(*args, out_val=None, **kwargs):
    # custom_mapping formulas get shapes for inputs and the raw outputs (the flop counter's shape_wrapper)
    from torch.utils.flop_counter import get_shape

    shapes = [get_shape(a) for a in args]
    return _conv_backward_flop(*shapes, out_shape=out_val)


_raw_conv_backward._get_raw = True


def _fake_mode():
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    # Distribution argument checks read values (.item()): none exist on fake tensors.
    torch.distributions.Distribution.set_default_validate_args(False)
    return FakeTensorMode(allow_non_fake_inputs=True)


@functools.cache
def _shape_queries() -> frozenset:
    import torch

    a = torch.ops.aten
    return frozenset({a.sym_is_contiguous.default, a.is_contiguous.default, a.is_contiguous.memory_format,
                      a.is_strides_like_format.default, a.is_non_overlapping_and_dense.default, a.size.default,
                      a.sym_size.default, a.stride.default, a.sym_stride.default, a.storage_offset.default,
                      a.sym_storage_offset.default, a.numel.default, a.sym_numel.default, a.dim.default,
                      torch.ops.prim.layout.default})


def _build(name: str, config: dict, meta: bool = False):
    """Model ``name`` with fake CPU tensors, for use inside ``_fake_mode()``: built on the meta device (weight
    initialisation costs nothing there), then given empty (fake) storage on the CPU; ``meta``: left on meta."""
    import torch

    from saccader.models import from_config

    with torch.device("meta"):
        model = from_config(name, config)
    if meta:
        return model
    for module in model.modules():  # (Module.to_empty would swap tensors, which fake parameters refuse)
        for key, p in module._parameters.items():
            if p is not None:
                module._parameters[key] = torch.nn.Parameter(torch.empty_like(p, device="cpu"), p.requires_grad)
        for key, b in module._buffers.items():
            if b is not None:
                module._buffers[key] = torch.empty_like(b, device="cpu")
    return model


def _images(b: int, res: int):
    import torch

    return torch.zeros(b, 3, res, res), torch.zeros(b, dtype=torch.long)


def _param_counts(model) -> dict:
    params = list(model.parameters())
    return {"params": sum(p.numel() for p in params) + sum(b.numel() for b in model.buffers()),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def count_train(config: dict, run: str, bf16: bool | None = None) -> dict:
    """Per-image FLOPs of the training forward and step, saved bytes per image, and parameter counts of ``run``;
    ``bf16`` (default: the recipe's ``bf16``, on unless it says otherwise, as on a GPU) the autocast precision."""
    import torch

    from saccader.pipeline import train as T
    from saccader.models import from_config

    rec = train_recipe(config, run)
    res = resolution(config, rec)
    if bf16 is None:
        bf16 = bool(rec.get("bf16", True))  # on a GPU the recipe's bf16 defaults to on (saccader.pipeline.train.use_bf16)
    with _fake_mode():
        model = _build(rec["model"], config)
        T.param_groups(model, rec)
        T.train_mode(model)
        counts = _param_counts(model)
        params = list(model.parameters())
        x, y = _images(_BATCH, res)
        with Counter(_BATCH, _SLOPE) as c:
            with c.saving(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if rec["stage"] == "glimpse_finetune":
                    loss = _glimpse_finetune(model, rec, x, y, config)
                else:
                    loss, _ = T.step_loss(model, rec, x, y, None)
            fwd, fwd_ops = c.total(), c.ops
            loss.float().backward()
            del loss
        _, const = c.saved_bytes(params)  # the bf16 copies of the weights under autocast
        out = {"fwd_flops": fwd / _BATCH, "step_flops": c.total() / _BATCH, "fwd_ops": fwd_ops, "step_ops": c.ops,
               "act_bytes": c.slope(), "act_const_bytes": const}
        if rec.get("cache_features") and rec["stage"] == "location_pretrain":
            for p in params:
                p.grad = None
            out.update(_cached_stage(model, rec, res))
    return {**out, **counts, "resolution": res, "precision": "bf16" if bf16 else "fp32"}


def _glimpse_finetune(model, rec, x, y, config):
    """NASNet-77/-113's step on fake tensors: the crops' pixel positions are data (``crop_boxes`` reads them), so
    the frozen Saccader's forward is counted as is and the NASNet is fed crops of the box size the model cuts."""
    import torch

    from saccader import geometry, losses

    t = rec["num_glimpses"]
    high = rec.get("resolution") == "high_res"
    base = rec["base_size"]
    with torch.no_grad():
        xs = torch.nn.functional.interpolate(x, size=(base, base), mode="bicubic", antialias=True) if high else x
        model.saccader(xs, t)
    sac = model.saccader
    box = geometry.location_boxes(torch.zeros(1, dtype=torch.long, device="cpu"), 1, sac.receptive_field, sac.stride,
                                  base, x.shape[-1] if high else base)
    side = int(box[0, 2] - box[0, 0]) if not _is_fake(box) else _box_side(sac, base, x.shape[-1] if high else base)
    crops = torch.zeros(len(x) * t, 3, side, side)
    logits = model.nasnet(crops).view(len(x), t, -1).mean(dim=1)
    return losses.classification_loss(logits, y, rec.get("label_smoothing", 0.0))


def _is_fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _box_side(sac, base: int, target: int) -> int:
    """The side of a location's box at ``target`` px, computed outside the fake mode (plain integers)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from saccader import geometry

    with unset_fake_temporarily():
        import torch

        box = geometry.location_boxes(torch.zeros(1, dtype=torch.long), 1, sac.receptive_field, sac.stride, base,
                                      target)
        return int(box[0, 2] - box[0, 0])


def _cached_stage(model, rec, res) -> dict:
    """``cache_features``: the frozen representation runs once per training image (eval transform); the step then
    runs on its outputs. Returns the step's FLOPs per image on cached features and the one-off forward's."""
    import torch

    from saccader.pipeline import train as T

    x, y = _images(_BATCH, res)
    with torch.no_grad(), Counter() as c0:
        cached = model.representation.forward_features(x)
    cached = {k: cached[k].detach() for k in ("features", "what", "logits2d")}
    with Counter(_BATCH, _SLOPE) as c:
        loss, _ = T.step_loss(model, rec, cached, y, None)
        loss.backward()
        del loss
    return {"step_flops": c.total() / _BATCH, "cache_flops": c0.total() / _BATCH, "act_bytes": c.slope()}


def _loaded(config: dict, run: str, meta: bool = False):
    """A model of training run ``run`` in eval mode (fake tensors, or meta ones)."""
    from saccader.pipeline import train as T

    return _build(recipe(config, run)["model"], config, meta).eval()


def count_eval(config: dict, kind: str, model_name: str) -> dict:
    """Per-image forward FLOPs of an evaluation job (saccader.pipeline.evaluate), and the live bytes per image of its no-grad
    forward. Evaluation runs in fp32, with no autocast to emulate, so plain meta tensors do (a few times faster
    than fake ones; kernels are counted undecomposed there); a job whose code reads values falls back to fake."""
    try:
        return _count_eval(config, kind, model_name, meta=True)
    except (RuntimeError, NotImplementedError):  # .item() and other data-dependent ops have no meta kernel
        return _count_eval(config, kind, model_name, meta=False)


def _count_eval(config: dict, kind: str, model_name: str, meta: bool) -> dict:
    import torch

    from saccader.pipeline import evaluate as E

    ev, ds = config["evaluate"], config["dataset"]
    size, t_max = ds["image_size"], ev["max_glimpses"]
    torch.distributions.Distribution.set_default_validate_args(False)  # its checks read values
    with torch.device("meta") if meta else _fake_mode():
        runs = catalog.required_runs(kind, model_name)
        if kind == "nasnet":
            models = {"saccader_nasnet": _build("saccader_nasnet", config, meta).eval()}
        else:
            models = {r: _loaded(config, r, meta) for r in runs}
        params = sum(_param_counts(m)["params"] for m in models.values())

        x, _ = _images(_BATCH, size)
        gen = torch.Generator()
        with torch.no_grad(), Counter(_BATCH, _SLOPE) as c:
            if kind == "glimpses":
                E.policy_outputs(models, x, t_max, ev["policies"], gen, size)
            elif kind == "full_image":
                E.image_logits(models[model_name], x)
            elif kind == "occlusion":
                sources = {r: m for r, m in models.items() if r != "resnet_v2_50"}
                E.policy_outputs(sources, x, t_max, ev["policies"], gen, size)
                flops, ops = c.flops, c.ops
                E.image_logits(models["resnet_v2_50"], x)
                # one occluded image per T, each classified by the ResNet: T alike forwards, one counted
                c.flops += (t_max - 1) * (c.flops - flops)
                c.ops += (t_max - 1) * (c.ops - ops)
            else:
                _count_saccader_nasnet(models["saccader_nasnet"], config, x, t_max)
    return {"fwd_flops": c.total() / _BATCH, "fwd_ops": c.ops, "act_bytes": c.slope(), "act_const_bytes": 0.0,
            "params": params, "resolution": ds["high_res_size"] if kind == "nasnet" else size,
            "precision": "fp32"}


def _count_saccader_nasnet(model, config, x, t_max):
    """evaluate._nasnet on fake tensors: for each resolution, the Saccader at the base image, then the NASNet on
    T crops of the box size (NASNet-77 on the base image, NASNet-113 on the high-resolution one)."""
    import torch

    base, high = config["dataset"]["image_size"], config["dataset"]["high_res_size"]
    for target in (base, high):
        model.saccader(x, t_max)
        side = _box_side(model.saccader, base, target)
        model.nasnet(torch.zeros(len(x) * t_max, 3, side, side))


def count_attack(config: dict, model_name: str) -> dict:
    """FLOPs per query of the attacked function: a forward, and a forward + input gradient (a PGD step), in the
    precision the attack runs in on a GPU (the attacked run's recipe: ``saccader.pipeline.attack.attack``)."""
    import torch

    from baselines.attacks import Standardized
    from saccader.pipeline import attack as A

    at, ds = config["attack"], config["dataset"]
    size = ds["image_size"]
    run = catalog.attacked_runs(model_name)[0]
    bf16 = bool((config["train"].get(run) or {}).get("bf16", True))  # saccader.pipeline.train.use_bf16 on CUDA
    with _fake_mode():
        net = _loaded(config, run)
        if hasattr(net, "glimpse_gradient"):
            net.glimpse_gradient = True
        net.requires_grad_(False)
        params = _param_counts(net)["params"]
        fn = Standardized(net, ds["mean"], ds["std"], at["num_glimpses"] if model_name in A._GLIMPSE_MODELS
                            else None, bf16)

        x, y = _images(_BATCH, size)
        with torch.no_grad(), Counter(_BATCH, _SLOPE) as live:  # SPSA's queries
            fn(x)
        x.requires_grad_(True)
        with Counter(_BATCH) as c:
            with c.saving():
                loss = torch.nn.functional.cross_entropy(fn(x), y)
            fwd = c.total()
            loss.backward()
        grad_bytes, const = c.saved_bytes()  # const: the bf16 copies of the weights under autocast
        out = {"fwd_flops": fwd / _BATCH, "grad_flops": c.total() / _BATCH, "grad_bytes": grad_bytes,
               "act_bytes": live.slope(), "act_const_bytes": const}
    return {**out, "params": params, "resolution": size, "precision": "bf16" if bf16 else "fp32"}


# --------------------------------------------------------------------------------------------------- cache

def _cache_key(config: dict, what: tuple) -> str:
    import torch

    part = {"what": what, "version": COUNT_VERSION, "models": config.get("models") or {}, "torch": torch.__version__,
            "dataset": {k: config["dataset"][k] for k in ("num_classes", "image_size", "high_res_size")},
            "train": config.get("train"), "evaluate": config.get("evaluate"), "attack": config.get("attack"),
            "code": _code_digest()}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _code_digest() -> str:
    """Hash of the model and training code the counts come from: editing it invalidates the cache."""
    h = hashlib.sha256()
    for folder in ("saccader/models", "baselines"):
        for path in sorted((ROOT / folder).glob("*.py")):
            h.update(path.read_bytes())
    for path in ("saccader/pipeline/train.py", "saccader/pipeline/evaluate.py", "saccader/losses.py"):
        h.update((ROOT / path).read_bytes())
    return h.hexdigest()[:16]


class Cache:
    def __init__(self, path: Path | None):
        self.path = path
        self.data = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    def get(self, key: str, compute):
        if key not in self.data:
            self.data[key] = compute()
            self.dirty = True
        return self.data[key]

    def save(self):
        if self.path is not None and self.dirty:
            from saccader.pipeline.io import write_text

            write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------- input pipeline

def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` ImageNet-sized JPEGs (quality 90, alternating 500 x 375 and 400 x 350, smooth content plus noise:
    ImageNet's typical sizes; noise keeps the decoder's work realistic)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = ((500, 375), (400, 350))[i % 2]
        yy, xx = np.mgrid[0:h, 0:w]
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([128 + 100 * np.sin(xx / (20 + 10 * k) + yy / 37 + phase[k]) for k in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"img{i:04d}.JPEG")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def transform_rate(config: dict, resolution: int, train: bool = True, images: int = 24, rounds: int = 2,
                   paths: list | None = None) -> float:
    """Images/s on one core of decode + the Appendix C transform (``FolderDataset``'s path: PIL decode, then
    ``build_transform``) at ``resolution`` on ImageNet-sized JPEGs (``paths``, else ``images`` generated ones); the
    best of ``rounds`` passes, in CPU seconds (what a worker with a core to itself does)."""
    import torch

    from saccader.pipeline.data.folder import load_rgb, build_transform

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker runs one thread
    try:
        transform = build_transform(config, train=train, resolution=resolution)
        with tempfile.TemporaryDirectory() as tmp:
            paths = paths or write_jpegs(Path(tmp), images)
            generator = torch.Generator().manual_seed(0)
            best = 0.0
            for _ in range(rounds):
                tick = time.process_time()  # CPU seconds: a loader worker has its core (nice -n 19 while measuring)
                for p in paths:
                    transform(load_rgb(str(p)), generator)
                best = max(best, len(paths) / (time.process_time() - tick))
    finally:
        torch.set_num_threads(threads)
    return best


def load_transform_rates(results_dir: Path) -> dict:
    """{(resolution, train): images/s per core} of bench/jpeg_transform.py's results file, if there is one."""
    path = results_dir / "benchmarks" / "jpeg_transform.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(int(r["resolution"]), r["transform"] == "train"): float(r["images_per_s_core"]) for r in rows}


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


# --------------------------------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One job of the DAG (per seed), its cost and what the profile gives it."""
    rule: str                 # train | evaluate | evaluate_glimpses | attack
    name: str                 # train/<run>, eval/<kind>/<model>, attack/<model>
    runs: list                # training runs whose model.pt it reads
    outputs: list             # output paths relative to results_dir, with {seed}
    resolution: int
    precision: str
    flops: float              # per seed job
    images: float             # images through the data loader per seed job (the ones it must decode)
    fwd_flops_per_image: float = 0.0
    step_flops_per_image: float = 0.0
    act_bytes_per_image: float = 0.0
    static_bytes: float = 0.0  # parameters, gradients, optimizer state, EMA, bf16 weight copies
    params: int = 0
    batch: int = 0             # global batch (train) or the job's batch
    ops: float = 0.0           # kernels a training job runs per seed (its steps and dev passes)
    train_images: float = 0.0  # images through the training steps per seed
    steps: int = 0             # optimizer steps per seed job
    dev_images: float = 0.0    # images of its dev evaluations
    checkpoints: int = 0       # checkpoint writes
    cached_images: float = 0.0  # images through the one-off frozen representation pass (cache_features)
    notes: list = field(default_factory=list)
    # filled by the planner
    gpu: str = ""
    world: int = 1
    micro_batch: int = 0
    micro_fit: int = 0
    accumulation: int = 1
    images_per_s_gpu: float = 0.0
    rate_source: str = ""
    data_images_per_s: float = 0.0
    data_wait: float = 1.0
    hours: float = 0.0
    gpu_hours: float = 0.0
    problems: list = field(default_factory=list)
    queries: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)  # CPU plans: projected seconds of each part of a training job


def dataset_sizes(config: dict) -> dict:
    """Images of the train (less dev), dev and test splits the jobs read."""
    ds = config["dataset"]
    if ds["name"] == "digits":
        d = ds["digits"]
        train, test = d["train_images"] - ds["dev_size"], d["val_images"]
    else:
        train, test = IMAGENET_TRAIN - ds["dev_size"], IMAGENET_VAL
    if config["evaluate"].get("max_images") is not None:
        test_eval = min(test, config["evaluate"]["max_images"])
    else:
        test_eval = test
    return {"train": train, "dev": ds["dev_size"], "test": test_eval, "attack": min(test, config["attack"]["subset_size"])}


def _count_key(config: dict, run: str) -> tuple:
    """What decides a training run's counts (not its lr, epochs, ...): runs that share it share one count."""
    rec = config["train"][run]
    keep = ("model", "stage", "num_glimpses", "mc_samples", "resolution", "bf16", "freeze", "cache_features",
            "glimpse_size", "label_smoothing", "location_modules", "eval_glimpses")
    return ("train",) + tuple((k, json.dumps(rec.get(k), sort_keys=True)) for k in keep)


def _spsa_active_fraction(config: dict, results_dir: Path, model: str) -> tuple[float, str]:
    """Fraction of SPSA queries an image makes with early stopping, and where the figure comes from: this
    experiment's attack results, else the embedded run's (``results/embedded``: the same attack on the small models,
    a stand-in until the experiment has its own)."""
    at = config["attack"]
    if not at.get("spsa_early_stop"):
        return 1.0, "early stop off"
    accs = []
    for folder in (results_dir, ROOT / "results" / "embedded"):
        for path in sorted((folder / "attack" / model).glob("seed*.parquet")):
            import pandas as pd

            frame = pd.read_parquet(path)
            acc = frame.loc[frame["metric"] == "spsa_acc", "value"]
            if len(acc):
                accs.append(float(acc.iloc[0]))
        if accs:
            results_dir = folder
            break
    if not accs:
        return 1.0, "no attack results yet: no early-stop saving assumed (an upper bound)"
    robust = sum(accs) / len(accs)
    # an image SPSA never fools runs every iteration; one it fools stops at an unknown step: half the run assumed
    return robust + (1 - robust) / 2, (f"SPSA accuracy {robust:.2f} measured in {results_dir}/attack/{model}: "
                                       "fooled images assumed to stop halfway")


def _counts(config: dict) -> dict:
    """Cache key -> (counting function, its arguments) of every count the DAG's jobs need."""
    tasks = {_cache_key(config, _count_key(config, run)): ("count_train", (run,)) for run in sorted(config["train"])}
    for kind, models in catalog.EVALUATIONS.items():
        for model in models:
            tasks[_cache_key(config, ("eval", kind, model))] = ("count_eval", (kind, model))
    for model in catalog.ATTACKS:
        tasks[_cache_key(config, ("attack", model))] = ("count_attack", (model,))
    return tasks


def _count_task(config: dict, name: str, args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    return globals()[name](config, *args)


def _count_item(item: tuple) -> tuple:
    config, key, name, args = item
    tick = time.process_time()
    value = _count_task(config, name, args)
    return key, value, os.getpid(), time.process_time() - tick


def _warm_up() -> None:
    """A tiny counted forward on fake tensors: the imports and first-use tables every count needs (fake tensor
    dispatch, decompositions, autocast), paid once in the process the counting processes fork from."""
    import torch

    import baselines.attacks  # noqa: F401  (the models' modules, imported once before the fork)
    import saccader.pipeline.evaluate  # noqa: F401
    import saccader.models  # noqa: F401

    with _fake_mode():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.Flatten(), torch.nn.Linear(144, 2))
        with Counter(_BATCH, _SLOPE) as c, c.saving(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(torch.zeros(_BATCH, 3, 8, 8)).float().sum()  # no backward: autograd's threads refuse a fork


def _backward_probe() -> None:
    import torch

    torch.ones(1, requires_grad=True).sum().backward()


def _start_method() -> str:
    """``fork`` where a forked child can run a backward: not after this process has run one itself (autograd's
    threads; a test session, say), nor where there is no fork. Else ``spawn``."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    probe = multiprocessing.get_context("fork").Process(target=_backward_probe)
    probe.start()
    probe.join()
    return "fork" if probe.exitcode == 0 else "spawn"


def _cost(config: dict, task: tuple) -> int:
    """Rough relative cost of a count, to start the longest first (NASNet's cells, DRAM's and the occlusion job's
    loops have 5-20x the ops of a ResNet step)."""
    name, args = task
    text = json.dumps(args) + json.dumps(config["train"].get(args[0], {}) if name == "count_train" else {})
    return 2 * ("nasnet" in text) + ("dram" in text) + ("occlusion" in text)


def fill_cache(config: dict, cache: Cache, workers: int = 2) -> dict:
    """Compute the counts the cache lacks, in ``workers`` processes forked from this one after a warm-up (so they
    neither import torch again nor rebuild its tables), the longest counts first. Returns the CPU seconds of the
    counts per process."""
    import multiprocessing

    todo = {k: v for k, v in _counts(config).items() if k not in cache.data}
    cpu: dict = {}
    if not todo:
        return cpu
    order = sorted(todo, key=lambda k: -_cost(config, todo[k]))
    workers = max(1, min(workers, len(todo)))
    log.info("counting FLOPs and memory of %d model configurations on fake tensors (%d processes)", len(todo),
             workers)
    items = [(config, k, *todo[k]) for k in order]
    if workers == 1:
        results = map(_count_item, items)
    else:
        method = _start_method()
        if method == "fork":
            _warm_up()
        pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap_unordered(_count_item, items)
    for k, value, pid, seconds in results:
        cache.data[k] = value
        cpu[pid] = cpu.get(pid, 0.0) + seconds
    if workers > 1:
        pool.close()
        pool.join()
    cache.dirty = True
    return cpu


def build_jobs(config: dict, cache: Cache, results_dir: Path) -> list[Job]:
    """Every GPU job of the DAG with its per-seed cost (counts from ``cache`` or computed)."""
    sizes = dataset_sizes(config)
    jobs = []
    for run in sorted(config["train"]):
        rec = config["train"][run]
        c = cache.get(_cache_key(config, _count_key(config, run)), lambda run=run: count_train(config, run))
        steps = sizes["train"] // rec["batch_size"]
        steps = min(steps, rec.get("steps_per_epoch") or steps)  # a budget (wet run), as saccader.pipeline.train has it
        images = rec["epochs"] * steps * rec["batch_size"]
        evals = sum(1 for e in range(1, int(math.ceil(rec["epochs"])) + 1)
                    if e == math.ceil(rec["epochs"]) or e % rec.get("eval_every", 1) == 0)
        flops = images * c["step_flops"] + evals * sizes["dev"] * c["fwd_flops"]
        notes = []
        if "cache_flops" in c:
            flops += sizes["train"] * c["cache_flops"]
            notes.append("frozen representation computed once (cache_features)")
        dev_batches = math.ceil(sizes["dev"] / rec.get("eval_batch_size", rec["batch_size"]))
        ops = rec["epochs"] * steps * c.get("step_ops", 0) + evals * dev_batches * c.get("fwd_ops", 0)
        static = 4 * (c["params"] + 2 * c["trainable"]) + c["act_const_bytes"]
        if rec.get("ema_decay"):
            static += 4 * c["params"]
        job = Job("train", f"train/{run}", init_runs(run, config),
                  [f"runs/{run}/seed{{seed}}/model.pt", f"runs/{run}/seed{{seed}}/train_log.parquet"],
                  c["resolution"], c["precision"], flops, images + evals * sizes["dev"]
                  + (sizes["train"] if "cache_flops" in c else 0),
                  c["fwd_flops"], c["step_flops"], c["act_bytes"], static, c["params"], rec["batch_size"],
                  ops, images, notes)
        epochs = math.ceil(rec["epochs"])  # saccader.pipeline.train runs whole epochs
        every = rec.get("checkpoint_every", 0) or steps
        job.steps, job.dev_images = epochs * steps, evals * sizes["dev"]
        job.checkpoints = epochs * ((steps - 1) // every + 1)  # within each epoch, and at its end
        job.cached_images = sizes["train"] if "cache_flops" in c else 0
        jobs.append(job)
    for kind, models in catalog.EVALUATIONS.items():
        for model in models:
            c = cache.get(_cache_key(config, ("eval", kind, model)), lambda k=kind, m=model: count_eval(config, k, m))
            rule = "evaluate_glimpses" if kind == "glimpses" else "evaluate"
            outs = [f"eval/{kind}/{model}/seed{{seed}}.parquet"]
            if kind == "glimpses":
                outs.append(outs[0] + ".examples.npz")
            passes = 2 if kind == "nasnet" else 1  # the nasnet job reads the test set at both resolutions
            jobs.append(Job(rule, f"eval/{kind}/{model}", catalog.required_runs(kind, model), outs,
                            c["resolution"], c["precision"], sizes["test"] * c["fwd_flops"], passes * sizes["test"],
                            c["fwd_flops"], 0.0, c["act_bytes"], c["act_const_bytes"] + 4 * c["params"],
                            c["params"], batch=config["evaluate"]["batch_size"]))
    at = config["attack"]
    for model in catalog.ATTACKS:
        c = cache.get(_cache_key(config, ("attack", model)), lambda m=model: count_attack(config, m))
        active, source = _spsa_active_fraction(config, results_dir, model)
        spsa = at["spsa_iters"] * (at["spsa_samples"] + 1) * active  # samples + the early-stop check per step
        forwards = 1 + 1 + 1 + spsa  # clean, PGD result, SPSA result, SPSA queries
        per_image = forwards * c["fwd_flops"] + at["pgd_iters"] * c["grad_flops"]
        job = Job("attack", f"attack/{model}", catalog.attacked_runs(model), [f"attack/{model}/seed{{seed}}.parquet"],
                  c["resolution"], c["precision"], sizes["attack"] * per_image, sizes["attack"], c["fwd_flops"],
                  c["grad_flops"], max(c["act_bytes"] * at["eval_batch_size"], c["grad_bytes"] * at["batch_size"])
                  / at["batch_size"], 4 * c["params"] + c["act_const_bytes"], c["params"], batch=at["batch_size"],
                  notes=[f"{forwards:.0f} forwards + {at['pgd_iters']} PGD gradient steps per image ({source})"])
        job.queries = {"forwards_per_image": forwards, "pgd_gradients_per_image": at["pgd_iters"],
                       "spsa_active_fraction": active}
        jobs.append(job)
    return jobs


# --------------------------------------------------------------------------------------------------- profile

def load_profile(profile: str | None) -> tuple[dict, str]:
    """``set-resources`` of a Snakemake profile (a name under the repository, a folder or its config.yaml), and
    where it came from; no profile: the local defaults of workflow/rules/common.smk (no GPU)."""
    if profile is None:
        local = dict(gpu=0, cpus_per_task=1, mem_mb=4000, runtime=24 * 60)
        return {rule: dict(local) for rule in GPU_RULES}, "local defaults (workflow/rules/common.smk)"
    path = Path(profile)
    for candidate in (path, ROOT / profile):
        if candidate.is_dir():
            candidate = candidate / "config.yaml"
        if candidate.is_file():
            data = yaml.safe_load(candidate.read_text()) or {}
            return data.get("set-resources") or {}, str(candidate)
    raise UserError(f"profile {profile} not found", "pass --profile slurm or the folder of your profile")


def _resource(profile: dict, rule: str, key: str, default):
    value = (profile.get(rule) or {}).get(key, default)
    return default if value is None else value


def gpu_spec(name: str) -> GPU:
    if name not in GPUS:
        raise UserError(f"unknown GPU {name!r}", f"use one of {', '.join(GPUS)} (or set gpu_name in the profile)")
    return GPUS[name]


def load_measured(results_dir: Path) -> dict:
    """Measured images/s per GPU of bench/gpu_train.py, keyed by (run, precision, resolution)."""
    path = results_dir / "benchmarks" / "gpu_train.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {(r["run"], r["precision"], int(r["resolution"])): {**r, "device": data.get("device", "?")}
            for r in data.get("runs", [])}


# --------------------------------------------------------------------------------------------------- planning

@dataclass
class Settings:
    gpu: str | None = None        # --gpu: overrides the profile's gpu_name
    mfu: float = MFU
    cpu_rates: dict | None = None  # {"bf16": FLOP/s, "fp32": FLOP/s}: plan for this CPU instead of GPUs
    cpu_runs: dict = field(default_factory=dict)  # run -> measure_cpu_run's seconds of the parts of its job
    cpu_start_s: float = 0.0      # starting a job's processes on this CPU
    transform_rates: dict = field(default_factory=dict)  # {(resolution, train): images/s per core}


def _divisor_at_most(n: int, limit: int) -> int:
    return max((d for d in range(1, n + 1) if n % d == 0 and d <= limit), default=0)


def plan_job(job: Job, config: dict, profile: dict, settings: Settings, measured: dict) -> None:
    """Fill the job's GPU, micro-batch, throughput, data and time figures, and its problems against the profile."""
    rule, run = job.rule, job.name.split("/", 1)[1]
    gpus = int(_resource(profile, rule, "gpu", 0))
    nodes = int(_resource(profile, rule, "nodes", 1)) if rule == "train" else 1
    cpus = int(_resource(profile, rule, "cpus_per_task", 1))
    runtime = float(_resource(profile, rule, "runtime", 24 * 60))
    mem_mb = float(_resource(profile, rule, "mem_mb", 4000))
    job.world = max(1, gpus) * nodes
    if settings.cpu_rates is not None:
        job.gpu = "cpu"
        if rule == "train":  # on a CPU, bf16 only where the recipe asks and the CPU has it (train.use_bf16)
            import torch

            from saccader.pipeline.train import use_bf16

            job.precision = "bf16" if use_bf16(config["train"][run], torch.device("cpu")) else "fp32"
        elif rule == "attack":  # attacks run fp32 on a CPU (saccader.pipeline.attack.attack)
            job.precision = "fp32"
        rate = settings.cpu_rates[job.precision]
        job.rate_source = f"{rate / 1e9:.1f} GFLOP/s (median of the training steps measured on this CPU)"
    else:
        job.gpu = settings.gpu or _resource(profile, rule, "gpu_name", DEFAULT_GPU)
        spec = gpu_spec(job.gpu)
        peak = spec.bf16_tflops if job.precision == "bf16" and spec.bf16_tflops else spec.fp32_tflops
        rate = settings.mfu * peak * 1e12
        job.rate_source = f"MFU {settings.mfu:g} x {peak:g} TFLOP/s ({job.precision})"
        if gpus == 0:
            job.problems.append(f"{job.name}: the profile gives rule {rule} no GPU; fix: set-resources.{rule}.gpu: 1"
                                f" (or more for train)")
        _fit(job, spec, gpus, nodes, int(_resource(profile, rule, "micro_batch", 0) or 0))
        if rule == "train" and job.accumulation > 1:
            from saccader.pipeline.train import SAMPLING_STAGES

            if config["train"][run].get("stage") in SAMPLING_STAGES:  # the global baseline's no-grad pre-pass
                job.flops += job.train_images * job.fwd_flops_per_image
                job.notes.append("micro-batched sampling stage: one more forward per image for the baseline")
    per_image = job.step_flops_per_image if rule == "train" else job.flops / max(job.images, 1)
    job.images_per_s_gpu = rate / per_image if per_image else 0.0
    seconds = job.flops / (rate * job.world)
    if rule == "train" and run in settings.cpu_runs:
        m = settings.cpu_runs[run]
        job.parts = {"start": settings.cpu_start_s, "setup": m["setup_s"], "loop": job.steps * m["step_s"],
                     "checkpoints": job.checkpoints * m["checkpoint_s"], "dev": job.dev_images * m["dev_s_per_image"],
                     "cache": job.cached_images * m.get("cache_s_per_image", 0.0)}
        seconds = sum(job.parts.values())
        job.images_per_s_gpu = job.batch / m["step_s"]
        job.rate_source = (f"its loop measured on this CPU: {m['step_s']:.3f} s a step ({m['flops_per_s'] / 1e9:.1f} "
                           "GFLOP/s), dev pass, checkpoints, start")
    key = (run, job.precision, job.resolution)
    if rule == "train" and key in measured and settings.cpu_rates is None:
        m = measured[key]
        seconds *= job.images_per_s_gpu / m["images_per_s"]
        job.images_per_s_gpu = m["images_per_s"]
        job.rate_source = f"measured {m['images_per_s']:.0f} img/s at micro-batch {m['micro_batch']} ({m['device']})"
    _data(job, config, cpus, settings)
    job.hours = seconds * job.data_wait / 3600
    job.gpu_hours = job.hours * job.world if settings.cpu_rates is None else 0.0
    _check_time(job, config, rule, runtime)
    if rule == "train" and settings.cpu_rates is None:
        _check_host_memory(job, config, gpus, mem_mb)


def _fit(job: Job, spec: GPU, gpus: int, nodes: int, micro: int) -> None:
    """The largest micro-batch that fits the GPU and divides the per-GPU batch; the profile's, checked."""
    usable = spec.memory_gib * GIB * USABLE_MEMORY - CUDA_CONTEXT_GIB * GIB
    free = usable - job.static_bytes
    job.micro_fit = int(free // job.act_bytes_per_image) if job.act_bytes_per_image > 0 else job.batch
    if job.rule != "train":
        if job.micro_fit < job.batch:
            job.problems.append(f"{job.name}: batch {job.batch} needs about "
                                f"{(job.static_bytes + job.batch * job.act_bytes_per_image) / GIB:.0f} GiB on a "
                                f"{job.gpu}; fix: lower its batch_size to {job.micro_fit} or use a larger GPU")
        job.micro_batch = job.batch
        return
    world = max(1, gpus) * nodes
    if job.batch % world:
        job.problems.append(f"{job.name}: batch {job.batch} does not divide among {world} GPUs; fix: set nodes x gpu "
                            f"to a divisor of {job.batch}")
        return
    per_rank = job.batch // world
    if job.micro_fit < 1:
        job.problems.append(f"{job.name}: one image needs {job.act_bytes_per_image / GIB:.1f} GiB beyond "
                            f"{job.static_bytes / GIB:.1f} GiB of weights and optimizer state; fix: a GPU with "
                            f"more memory")
        return
    if micro:
        if per_rank % micro:
            job.problems.append(f"{job.name}: micro_batch {micro} does not divide the per-GPU batch {per_rank}; fix: "
                                f"set-resources.train.micro_batch: {_divisor_at_most(per_rank, job.micro_fit)}")
        elif micro > job.micro_fit:
            job.problems.append(f"{job.name}: micro_batch {micro} does not fit a {job.gpu} (at most "
                                f"{job.micro_fit}); fix: set-resources.train.micro_batch: "
                                f"{_divisor_at_most(per_rank, job.micro_fit)}")
        job.micro_batch = micro
    else:
        job.micro_batch = per_rank
        if per_rank > job.micro_fit:
            job.problems.append(f"{job.name}: the per-GPU batch {per_rank} does not fit a {job.gpu} (at most "
                                f"{job.micro_fit} images); fix: set-resources.train.micro_batch: "
                                f"{_divisor_at_most(per_rank, job.micro_fit)} (accumulation), or more GPUs")
            job.micro_batch = _divisor_at_most(per_rank, job.micro_fit)
    job.accumulation = per_rank // job.micro_batch if job.micro_batch else 0


def _data(job: Job, config: dict, cpus: int, settings: Settings) -> None:
    """Images/s the loader workers of one GPU's process deliver against what its GPU consumes (JPEG datasets)."""
    if config["dataset"]["name"] == "digits" or job.rule == "attack":
        return
    train = job.rule == "train" and "cache_features" not in " ".join(job.notes)
    core = settings.transform_rates.get((job.resolution, train))
    if not core:
        return
    workers = min(config["dataset"]["num_workers"], cpus) or 1
    job.data_images_per_s = core * workers
    need = job.images_per_s_gpu  # images one GPU consumes per second
    job.data_wait = max(1.0, need / job.data_images_per_s)
    if config["dataset"]["num_workers"] == 0:  # decoding in the training process adds to the step, never overlaps
        job.data_wait = 1.0 + need / job.data_images_per_s
    if job.data_wait > 1.05:
        want = math.ceil(need / core)
        job.problems.append(f"{job.name}: waits on data ({need:.0f} img/s needed per GPU, {job.data_images_per_s:.0f}"
                            f" from {workers} loader workers at {core:.0f} img/s a core): {job.data_wait:.1f}x "
                            f"longer; fix: cpus_per_task and dataset.num_workers >= {want}")


def _check_time(job: Job, config: dict, rule: str, runtime: float) -> None:
    # Every job is requeued at its time limit; training resumes from checkpoint.pt and an attack after its last
    # finished batch (saccader.pipeline.attack), while an evaluation starts again: it must fit one allocation.
    requeues = config["executor"]["max_requeues"] if rule in ("train", "attack") else 0
    limit = runtime * (1 + requeues) / 60
    if job.hours <= limit:
        return
    if rule in ("train", "attack"):
        need = math.ceil(job.hours * 60 / runtime) - 1
        more = "more GPUs" if rule == "train" else "a smaller attack.subset_size / spsa_iters"
        job.problems.append(f"{job.name}: {job.hours:.1f} h projected, the profile allows {runtime / 60:.0f} h x "
                            f"{1 + requeues} allocations; fix: executor.max_requeues >= {need} or a longer "
                            f"set-resources.{rule}.runtime, or {more}")
    else:
        job.problems.append(f"{job.name}: {job.hours:.1f} h projected, over its {runtime / 60:.0f} h limit (it "
                            f"starts again when requeued); fix: set-resources.{rule}.runtime >= "
                            f"{math.ceil(job.hours * 60 * 1.2)}")


def _check_host_memory(job: Job, config: dict, gpus: int, mem_mb: float) -> None:
    """Host memory of one node: a process per GPU (libraries, a state dict) plus the loader batches in flight."""
    per_rank = job.batch // max(1, job.world)
    batch_bytes = per_rank * 3 * job.resolution ** 2 * 4
    workers = config["dataset"]["num_workers"]
    need = max(1, gpus) * (HOST_BASE_GIB * GIB + 4 * job.params + batch_bytes * (workers * PREFETCH + 2))
    if need > mem_mb * 2 ** 20:
        job.problems.append(f"{job.name}: about {need / GIB:.0f} GiB of host memory per node needed, mem_mb gives "
                            f"{mem_mb / 1024:.0f} GiB; fix: set-resources.train.mem_mb >= {math.ceil(need / 2 ** 20)}")


# --------------------------------------------------------------------------------------------------- totals

def target_jobs(jobs: list[Job]) -> dict[str, set]:
    """analysis.TARGETS -> the names of the jobs it needs (the producers of its inputs and their training runs)."""
    import analysis

    producers = {}
    for job in jobs:
        for out in job.outputs:
            producers[out.replace("{seed}", "*")] = job.name
    by_run = {j.name.split("/", 1)[1]: j for j in jobs if j.rule == "train"}

    def upstream(names: set) -> set:
        todo, seen = list(names), set(names)
        while todo:
            name = todo.pop()
            job = next(j for j in jobs if j.name == name)
            for run in job.runs:
                name = f"train/{run}"
                if run in by_run and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return seen

    out = {}
    for name, target in analysis.TARGETS.items():
        direct = {job for pattern, job in producers.items()
                  for inp in target.inputs if fnmatch.fnmatch(pattern.replace("*", "0"), inp)}
        for other, t in analysis.TARGETS.items():  # a target that reads another target's outputs (the index)
            if other != name and any(fnmatch.fnmatch(o, inp) for o in t.outputs for inp in target.inputs):
                direct |= out.get(other, set())
        out[name] = upstream(direct)
    return out


def plan(config: dict, profile: str | None = None, settings: Settings | None = None,
         cache_path: Path | None = None, workers: int = 2, source: str = "") -> dict:
    """The plan of every job of ``config`` (read from the files ``source`` names) under ``profile``: a JSON-ready
    dict (see ``format_markdown``)."""
    settings = settings or Settings()
    results_dir = Path(config["results_dir"])
    resources, profile_source = load_profile(profile)
    cache = Cache(cache_path)
    if config["dataset"]["name"] != "digits" and not settings.transform_rates:
        settings.transform_rates = load_transform_rates(results_dir)
    if config["dataset"]["name"] != "digits" and not settings.transform_rates:
        with tempfile.TemporaryDirectory() as tmp:
            jpegs = []  # written once, for every resolution and transform, when a rate is not cached
            for res in sorted({config["dataset"]["image_size"], config["dataset"]["high_res_size"]}):
                for train in (True, False):
                    def measure(r=res, t=train):
                        jpegs[:] = jpegs or write_jpegs(Path(tmp), 24)
                        return transform_rate(config, r, t, paths=jpegs)

                    key = _cache_key(config, ("transform", res, train, machine()))
                    settings.transform_rates[(res, train)] = cache.get(key, measure)
    cpu_before = time.process_time()  # this process's CPU seconds up to the counts (imports, transform rates)
    count_cpu = fill_cache(config, cache, workers)
    jobs = build_jobs(config, cache, results_dir)
    cache.save()
    measured = load_measured(results_dir)
    for job in jobs:
        plan_job(job, config, resources, settings, measured)
    seeds = len(config["seeds"])
    by_name = {j.name: j for j in jobs}
    targets = {name: {"gpu_hours": seeds * sum(by_name[n].gpu_hours for n in names),
                      "hours_serial": seeds * sum(by_name[n].hours for n in names), "jobs": sorted(names)}
               for name, names in target_jobs(jobs).items()}
    return {
        "config": source, "results_dir": str(results_dir), "profile": profile_source,
        "seeds": seeds, "machine": machine(), "mfu": settings.mfu,
        "cpu_rates": settings.cpu_rates, "cpu_runs": settings.cpu_runs, "cpu_start_s": settings.cpu_start_s,
        "transform_rates": {f"{r}px {'train' if t else 'eval'}": v for (r, t), v in settings.transform_rates.items()},
        "measured": bool(measured),
        # CPU seconds of this process before the counts (imports, transform rates) and of the counts in each
        # counting process: the wall time on free cores is about the first plus the largest of the second
        "timing": {"cpu_s_before_counts": cpu_before, "count_cpu_s": sorted(count_cpu.values(), reverse=True)},
        "assumptions": assumptions(settings, bool(measured)),
        "jobs": [asdict(j) for j in jobs],
        "totals": {"all": {"gpu_hours": seeds * sum(j.gpu_hours for j in jobs),
                           "hours_serial": seeds * sum(j.hours for j in jobs), "jobs": len(jobs) * seeds},
                   "targets": targets},
        "problems": [p for j in jobs for p in j.problems],
    }


def assumptions(settings: Settings, measured: bool) -> list[str]:
    lines = []
    if settings.cpu_rates is None:
        lines.append(f"throughput: {settings.mfu:g} of the GPU's dense peak (MFU) at the recipe's precision, "
                     "ideal data-parallel scaling"
                     + ("; measured images/s of results/benchmarks/gpu_train.json where a run has them" if measured
                        else "; no results/benchmarks/gpu_train.json yet (bench/gpu_train.py on a GPU replaces it)"))
        lines.append(f"GPU memory: {USABLE_MEMORY:g} of it usable, {CUDA_CONTEXT_GIB:g} GiB CUDA context; activations "
                     "= peak of the tensors alive in a training step (fake tensors), plus parameters, gradients, SGD "
                     "momentum (and EMA) in fp32")
    else:
        lines.append(f"throughput on this CPU with a core per job, measured now in CPU seconds: a training job = "
                     f"start ({settings.cpu_start_s:.1f} s: "
                     "launcher and job interpreters, project imports) + setup + steps x its measured loop iteration "
                     "(data loading included) + dev images x the per-image evaluate() time + checkpoints x one "
                     "checkpoint.save; evaluation and attack jobs: FLOPs / the median achieved FLOP rate of the "
                     "training steps of their precision. A job that shares its core takes longer in wall time")
    lines.append("evaluation memory: peak of the tensors alive in a no-grad forward; attack: the larger of PGD's "
                 "saved bytes x attack.batch_size and SPSA's no-grad peak x attack.eval_batch_size")
    lines.append("data: loader workers = min(dataset.num_workers, cpus_per_task), each one core at the measured "
                 "Appendix C transform rate; digits datasets are not modelled")
    lines.append("time limits: training and attack jobs resume across executor.max_requeues requeues; evaluation "
                 "jobs must finish in one allocation")
    return lines


# --------------------------------------------------------------------------------------------------- output

COLUMNS = ("job", "GPUs", "prec", "res", "GFLOP/img fwd", "GFLOP/img step", "act MiB/img", "static GiB",
           "micro (fit)", "accum", "img/s/GPU", "data img/s (wait)", "h/seed", "GPU-h all seeds")


def rows(result: dict) -> list[list[str]]:
    seeds = result["seeds"]
    out = []
    for j in result["jobs"]:
        out.append([
            j["name"], f"{j['world']}x{j['gpu']}", j["precision"], str(j["resolution"]),
            f"{j['fwd_flops_per_image'] / 1e9:.2f}", f"{j['step_flops_per_image'] / 1e9:.2f}" if j["step_flops_per_image"]
            else "-", f"{j['act_bytes_per_image'] / 2 ** 20:.1f}", f"{j['static_bytes'] / GIB:.2f}",
            f"{j['micro_batch']} ({j['micro_fit']})" if j["micro_fit"] else "-", str(j["accumulation"]),
            f"{j['images_per_s_gpu']:.3g}", f"{j['data_images_per_s']:.0f} ({j['data_wait']:.1f}x)" if j["data_images_per_s"] else "-",
            f"{j['hours']:.2f}", f"{seeds * j['gpu_hours']:.1f}"])
    return out


def format_table(result: dict) -> str:
    table = [list(COLUMNS)] + rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table)


def format_markdown(result: dict) -> str:
    lines = [f"# Plan of {result['config']} ({result['seeds']} seeds)", "",
             f"Profile: {result['profile']}. Counted on {result['machine']}.", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(result)]
    t = result["totals"]
    lines += ["", f"**All**: {t['all']['gpu_hours']:.0f} GPU-hours, {t['all']['jobs']} jobs.", "",
              "| target | GPU-hours | jobs |", "|---|---|---|"]
    lines += [f"| {n} | {v['gpu_hours']:.0f} | {len(v['jobs'])} |" for n, v in t["targets"].items()]
    lines += ["", "## Problems", ""] + ([f"- {p}" for p in result["problems"]] or ["None."])
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in result["assumptions"]]
    if result["transform_rates"]:
        lines.append("- Appendix C transform on ImageNet-sized JPEGs, images/s per core on this machine: "
                     + ", ".join(f"{k} {v:.0f}" for k, v in result["transform_rates"].items()))
    return "\n".join(lines) + "\n"


def write(result: dict, results_dir: Path) -> list[Path]:
    from saccader.pipeline.io import write_text

    md, js = results_dir / "plan.md", results_dir / "plan.json"
    write_text(md, format_markdown(result))
    write_text(js, json.dumps(result, indent=1, default=str) + "\n")
    return [md, js]


# --------------------------------------------------------------------------------------------------- validation

def compare_benchmarks(result: dict, bench_dir: Path) -> list[dict]:
    """Projected against recorded seconds of the training jobs of a real run (Snakemake's ``benchmark:`` files,
    ``<bench_dir>/train/<run>/seed<N>.tsv``: ``s`` wall seconds). Where the run's ``train_log.parquet`` sits beside
    (``<bench_dir>/../runs/<run>/seed<N>/``), also the seconds its training loop recorded (dev passes and
    checkpoints left out) against the projected loop, which tells a slower step from slower overheads."""
    import pandas as pd

    out = []
    for job in result["jobs"]:
        if job["rule"] != "train":
            continue
        run = job["name"].split("/", 1)[1]
        for path in sorted((Path(bench_dir) / "train" / run).glob("seed*.tsv")):
            row = pd.read_csv(path, sep="\t").iloc[0]
            projected = job["hours"] * 3600
            item = {"run": run, "seed": path.stem, "precision": job["precision"], "projected_s": projected,
                    "wall_s": float(row["s"]), "projected/wall": projected / float(row["s"])}
            log_path = Path(bench_dir).parent / "runs" / run / path.stem / "train_log.parquet"
            if job.get("parts") and log_path.is_file():
                loop = float(pd.read_parquet(log_path)["seconds"].sum())
                item.update({"loop_s": loop, "projected_loop_s": job["parts"]["loop"],
                             "projected/loop": job["parts"]["loop"] / loop,
                             "rest_s": float(row["s"]) - loop, "projected_rest_s": projected - job["parts"]["loop"]})
            out.append(item)
    return out


# --------------------------------------------------------------------------------------------------- CPU plan

def _canvases(folder: Path, n: int, side: int) -> list:
    """``n`` grey PNG canvases of ``side`` px with random clutter, as (path, label): what the digits dataset stores
    (saccader.pipeline.data.digits renders them at ``high_res_size``; the transforms resize them)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        pixels = (rng.random((side, side)) < 0.1).astype(np.uint8) * 255
        path = folder / f"c{i:04d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        samples.append((str(path), i % 10))
    return samples


def measure_cpu_run(config: dict, run: str, samples: list, steps: int = 3) -> dict:
    """The parts of training job ``run`` on this CPU, measured now with the job's own training session
    (``saccader.pipeline.train.Session``: what ``train()`` sets up and steps) on the generated images ``samples``:

    - ``step_s``: one :meth:`Session.steps` iteration, loading its batch included (median of ``steps`` after a
      warm-up step);
    - ``dev_s_per_image``: :meth:`Session.evaluate`, per image; ``cache_s_per_image``: the one-off frozen
      representation pass of ``cache_features``, per image;
    - ``checkpoint_s``: the finiteness check and one ``checkpoint.save`` of the session's state;
    - ``setup_s``: building the session (model, optimizer, data sets, loaders; the cache pass included).

    All are CPU seconds of this (single-threaded) process: what the job takes with a core to itself, whatever else
    the machine runs while measuring; ``step_wall_s`` is the wall time of the same step, for the record."""
    import statistics

    import torch

    from saccader.pipeline import checkpoint
    from saccader.pipeline import train as T
    from saccader.pipeline.data.folder import FolderDataset, build_transform

    # random weights: the time of a step does not depend on the init_from runs' values
    config = {**config, "train": {**config["train"], run: {**config["train"][run], "init_from": []}}}
    rec = train_recipe(config, run)
    res = resolution(config, rec)
    sets = {(split, train, uint8): FolderDataset(samples, build_transform(config, train, res, uint8=uint8), cache=True)
            for split, train, uint8 in (("train", True, True), ("train", False, False), ("dev", False, True))}
    sets["train", False, False].get(0, None)  # decode the canvases before the clock starts
    tick = time.process_time()
    session = T.Session(config, run, 0, datasets=lambda split, train, uint8: sets[split, train, uint8], device="cpu")
    out = {"precision": "bf16" if T.use_bf16(rec, session.device) else "fp32", "batch": session.batch,
           "setup_s": time.process_time() - tick}
    if session.cache_cpu_s:
        out["cache_s_per_image"] = session.cache_cpu_s / len(samples)
    seconds, cpu = [], []  # per step; the first (it warms oneDNN up) is left out
    epoch = 0
    tick, cpu_tick = time.perf_counter(), time.process_time()
    while len(cpu) <= steps:  # epochs of ``samples``, as many as the steps need
        for loss, right in session.steps(epoch):
            loss.item(), right.sum().item()
            now, cpu_now = time.perf_counter(), time.process_time()
            seconds.append(now - tick)
            cpu.append(cpu_now - cpu_tick)
            tick, cpu_tick = now, cpu_now
            if len(cpu) > steps:
                break
        epoch += 1
    out["step_s"] = statistics.median(cpu[1:])
    out["step_wall_s"] = statistics.median(seconds[1:])  # above step_s where the CPU was shared while measuring
    tick = time.process_time()
    session.evaluate()
    out["dev_s_per_image"] = (time.process_time() - tick) / len(samples)
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.process_time()
        session.weights_finite()
        checkpoint.save(Path(tmp) / "checkpoint.pt", **session.state())
        out["checkpoint_s"] = time.process_time() - tick
    return out


def _interpreter_seconds(code: str) -> float:
    """CPU seconds of a fresh interpreter running ``code`` (what every job pays to start its processes), or the
    number ``code`` prints."""
    import resource
    import subprocess
    import sys

    def children() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    tick = children()
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True)
    return float(done.stdout) if done.stdout.strip() else children() - tick


def _pack_seconds(sizes: dict, side: int) -> float:
    """Seconds to load decoded-image packs of the train and dev splits' sizes (``FolderDataset``'s cache file)."""
    import torch

    from saccader.pipeline import io

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for split in ("train", "dev"):
            paths.append(Path(tmp) / f".decoded-{split}.pt")
            io.torch_save({"digest": "", "images": torch.zeros(sizes[split], 3, side, side, dtype=torch.uint8)},
                          paths[-1])
        tick = time.process_time()
        for path in paths:
            io.torch_load(path)
        return time.process_time() - tick


def measure_cpu(config: dict, runs: list | None = None) -> Settings:
    """This CPU as the device of ``config``'s training jobs: every part of each run's job measured now
    (``measure_cpu_run``), and the start of a job: the launcher's interpreter (``saccader.pipeline.launch``), the job's
    (``saccader.pipeline.warmstart`` client), and the project's modules imported in the job (the warm-start server holds only
    third-party ones; without warm start, torch is imported as well) and its loading of the decoded-image packs, all in
    CPU seconds. Evaluation and attack jobs are projected from FLOPs at the median achieved rate of the training
    steps of their precision."""
    import statistics

    from saccader.pipeline.warmstart import PREIMPORTS

    runs = runs or sorted(config["train"])
    side = config["dataset"]["high_res_size"]  # the digits canvases' size on disk (saccader.pipeline.data.digits)
    dev_images = max(config["train"][r]["batch_size"] for r in runs)
    with tempfile.TemporaryDirectory() as tmp:
        samples = _canvases(Path(tmp), dev_images, side)
        # untimed: first-use imports and allocations, which every job pays in its start (measured below)
        measure_cpu_run(config, runs[0], samples, steps=1)
        measured = {}
        for run in runs:
            log.info("timing the parts of a %s job on this CPU", run)
            measured[run] = measure_cpu_run(config, run, samples)
    # the job runs `python -m saccader train ...`: its CLI, with what a warm-start fork holds already imported
    cli = ("import contextlib, runpy, sys, time; t = time.process_time(); sys.argv = ['saccader', 'train', '--help']\n"
           "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
           "    runpy.run_module('saccader', run_name='__main__')\n"
           "import torch\n"  # an optimizer's first construction imports torch._dynamo: every job pays it
           "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)\n"
           "print(time.process_time() - t)")
    preload = f"import {', '.join(PREIMPORTS)}\n" if config["executor"].get("warm_start") else ""
    start = (_interpreter_seconds("import saccader.pipeline.launch") + _interpreter_seconds("import saccader.pipeline.warmstart")
             + _interpreter_seconds(preload + cli))
    if config["dataset"].get("cache_images"):  # each job loads the decoded train and dev images (data.folder's pack)
        start += _pack_seconds(dataset_sizes(config), side)
    rates = {}
    counts = {}
    for run, m in measured.items():
        c = counts.setdefault(run, count_train(config, run, bf16=m["precision"] == "bf16"))
        m["flops_per_s"] = c["step_flops"] * m["batch"] / m["step_s"]
        rates.setdefault(m["precision"], []).append(m["flops_per_s"])
    rate = {p: statistics.median(v) for p, v in rates.items()}
    for p in ("fp32", "bf16"):
        rate.setdefault(p, rate.get("fp32") or rate.get("bf16"))
    return Settings(cpu_rates=rate, cpu_runs=measured, cpu_start_s=start)


# --------------------------------------------------------------------------------------------------- CLI

def _run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    config = load(args.config)
    if args.results:
        config["results_dir"] = args.results
    results_dir = Path(config["results_dir"])
    settings = Settings(gpu=args.gpu, mfu=args.mfu)
    if args.gpu:
        gpu_spec(args.gpu)
    if args.cpu:
        settings = measure_cpu(config)
        log.info("this CPU: %s (median achieved by the training steps), %.1f s to start a job",
                 {k: f"{v / 1e9:.1f} GFLOP/s" for k, v in settings.cpu_rates.items()}, settings.cpu_start_s)
    tick = time.perf_counter()
    result = plan(config, args.profile, settings, results_dir / ".plan_cache.json",
                  source=" + ".join(map(str, args.config)))
    paths = write(result, results_dir)
    print(format_table(result))
    t = result["totals"]
    print(f"\nall: {t['all']['gpu_hours']:.0f} GPU-hours over {t['all']['jobs']} jobs; "
          + ", ".join(f"{n} {v['gpu_hours']:.0f}" for n, v in t["targets"].items()))
    for p in result["problems"]:
        print(f"problem: {p}")
    for a in result["assumptions"]:
        print(f"assumed: {a}")
    log.info("plan written to %s and %s in %.1f s", *paths, time.perf_counter() - tick)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="what every job needs and costs: FLOPs, memory, micro-batch, GPU-hours",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--profile", default=None, help="Snakemake profile whose set-resources to check (e.g. slurm)")
    p.add_argument("--gpu", default=None, help=f"GPU to plan for, overriding the profile's gpu_name: {', '.join(GPUS)}")
    p.add_argument("--mfu", type=float, default=MFU, help="assumed model-FLOPs utilisation (default %(default)s)")
    p.add_argument("--results", default=None, help="results folder (default: the config's results_dir)")
    p.add_argument("--cpu", action="store_true",
                   help="plan for this CPU instead of GPUs: each training job's loop iteration, dev pass, "
                        "checkpoint and start measured now (a few real steps per run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=_run)
