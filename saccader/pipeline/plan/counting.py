"""FLOPs and memory of a job, counted on fake tensors: the torch-private part of ``saccader plan``.

The model runs on the meta device under ``FakeTensorMode`` (shapes only, no arithmetic) inside a
``TorchDispatchMode`` (``Counter``) that adds ``torch.utils.flop_counter``'s formulas and the live and saved bytes.
It relies on ``torch._subclasses`` and ``torch.utils._python_dispatch``: the code most likely to need work on a
torch upgrade, held by tests/test_plan_counting.py.
"""

from __future__ import annotations

import functools

from saccader import catalog
from saccader.pipeline.config import recipe, resolution, train_recipe


GIB = 1024 ** 3


# Counted batch: a prime that no width, resolution or class count of these models is a multiple of (Counter: it tells
# the storages that grow with the batch from those that do not). Fake tensors cost the same at any batch.
BATCH = 97


SLOPE = (2, 4)        # activation bytes per image: the slope of the peak live bytes between these batch sizes


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


def fake_mode():
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
    """Model ``name`` with fake CPU tensors, for use inside ``fake_mode()``: built on the meta device (weight
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
    with fake_mode():
        model = _build(rec["model"], config)
        T.param_groups(model, rec)
        T.train_mode(model)
        counts = _param_counts(model)
        params = list(model.parameters())
        x, y = _images(BATCH, res)
        with Counter(BATCH, SLOPE) as c:
            with c.saving(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if rec["stage"] == "glimpse_finetune":
                    loss = _glimpse_finetune(model, rec, x, y, config)
                else:
                    loss, _ = T.step_loss(model, rec, x, y, None)
            fwd, fwd_ops = c.total(), c.ops
            loss.float().backward()
            del loss
        _, const = c.saved_bytes(params)  # the bf16 copies of the weights under autocast
        out = {"fwd_flops": fwd / BATCH, "step_flops": c.total() / BATCH, "fwd_ops": fwd_ops, "step_ops": c.ops,
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

    x, y = _images(BATCH, res)
    with torch.no_grad(), Counter() as c0:
        cached = model.representation.forward_features(x)
    cached = {k: cached[k].detach() for k in ("features", "what", "logits2d")}
    with Counter(BATCH, SLOPE) as c:
        loss, _ = T.step_loss(model, rec, cached, y, None)
        loss.backward()
        del loss
    return {"step_flops": c.total() / BATCH, "cache_flops": c0.total() / BATCH, "act_bytes": c.slope()}


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

    from saccader.models import image_logits
    from saccader.pipeline import evaluate as E

    ev, ds = config["evaluate"], config["dataset"]
    size, t_max = ds["image_size"], ev["max_glimpses"]
    torch.distributions.Distribution.set_default_validate_args(False)  # its checks read values
    with torch.device("meta") if meta else fake_mode():
        runs = catalog.required_runs(kind, model_name)
        if kind == "nasnet":
            models = {"saccader_nasnet": _build("saccader_nasnet", config, meta).eval()}
        else:
            models = {r: _loaded(config, r, meta) for r in runs}
        params = sum(_param_counts(m)["params"] for m in models.values())

        x, _ = _images(BATCH, size)
        gen = torch.Generator()
        with torch.no_grad(), Counter(BATCH, SLOPE) as c:
            if kind == "glimpses":
                E.policy_outputs(models, x, t_max, ev["policies"], gen, size)
            elif kind == "full_image":
                image_logits(models[model_name], x)
            elif kind == "occlusion":
                sources = {r: m for r, m in models.items() if r != "resnet_v2_50"}
                E.policy_outputs(sources, x, t_max, ev["policies"], gen, size)
                flops, ops = c.flops, c.ops
                image_logits(models["resnet_v2_50"], x)
                # one occluded image per T, each classified by the ResNet: T alike forwards, one counted
                c.flops += (t_max - 1) * (c.flops - flops)
                c.ops += (t_max - 1) * (c.ops - ops)
            else:
                _count_saccader_nasnet(models["saccader_nasnet"], config, x, t_max)
    return {"fwd_flops": c.total() / BATCH, "fwd_ops": c.ops, "act_bytes": c.slope(), "act_const_bytes": 0.0,
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
    with fake_mode():
        net = _loaded(config, run)
        if hasattr(net, "glimpse_gradient"):
            net.glimpse_gradient = True
        net.requires_grad_(False)
        params = _param_counts(net)["params"]
        fn = Standardized(net, ds["mean"], ds["std"], at["num_glimpses"] if model_name in A.GLIMPSE_MODELS
                            else None, bf16)

        x, y = _images(BATCH, size)
        with torch.no_grad(), Counter(BATCH, SLOPE) as live:  # SPSA's queries
            fn(x)
        x.requires_grad_(True)
        with Counter(BATCH) as c:
            with c.saving():
                loss = torch.nn.functional.cross_entropy(fn(x), y)
            fwd = c.total()
            loss.backward()
        grad_bytes, const = c.saved_bytes()  # const: the bf16 copies of the weights under autocast
        out = {"fwd_flops": fwd / BATCH, "grad_flops": c.total() / BATCH, "grad_bytes": grad_bytes,
               "act_bytes": live.slope(), "act_const_bytes": const}
    return {**out, "params": params, "resolution": size, "precision": "bf16" if bf16 else "fp32"}
