"""Evaluation jobs behind Figures 3-6, Supp.1-3: one parquet per (kind, model, seed) in the tidy results schema.

    saccader evaluate --config C --kind glimpses --model saccader --seed 0 \\
        --ckpt saccader=results/runs/saccader/seed0 --out results/eval/glimpses/saccader/seed0.parquet

Kinds (``saccader.catalog.EVALUATIONS``):
- ``glimpses``   top-1, top-5 and area covered for T = 1..max_glimpses (Fig 3, 5a, Supp.2a, Supp.3), for the Saccader
  and its ablations (policy ``saccader``), BagNet-77-lowD under the engineered policies (``evaluate.policies``), and
  DRAM.
  Also writes ``<out>.examples.npz`` (``examples_path``) with glimpse boxes of fixed images (Fig 4, Supp.1).
- ``full_image`` the no-attention references (black markers of Fig 3): top-1, top-5 with ``num_glimpses`` 0.
- ``occlusion``  ResNet-v2-50 accuracy with every policy's glimpses occluded, against the area occluded (Fig 5b).
- ``nasnet``     Saccader-NASNet at ``image_size`` and ``high_res_size`` (Fig 6).

Every policy ranks glimpses once, so the first T of a T_max rollout are its T-glimpse choice: the Saccader cell and
DRAM are causal recurrences under the test-time (argmax / mean) policy, and the engineered policies are top-K
rankings. One pass with T_max glimpses therefore gives every T.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from saccader import catalog, geometry

from saccader.pipeline import results
from saccader.pipeline.config import add_config_argument
from saccader.errors import UserError
from saccader.pipeline.io import atomic_path, ensure_writable, torch_load
from saccader.models import image_logits

log = logging.getLogger(__name__)

__all__ = ["examples_path", "load_run", "ckpt_file", "policy_outputs",
           "occlude", "glimpses_batch", "full_image_batch", "occlusion_batch", "nasnet_batch", "evaluate", "register"]

def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_ckpts(items: list[str]) -> dict[str, Path]:
    """``--ckpt RUN=DIR`` pairs from the command line -> {run: DIR}."""
    from saccader.pipeline.config import parse_run_dirs

    return parse_run_dirs(items, "--ckpt")


def load_run(config: dict, run: str, ckpts: dict[str, Path], dev: torch.device | None = None):
    """Build the model of training run ``run`` (config ``train.<run>.model``) and load ``DIR/model.pt``."""
    from saccader import models

    if run not in ckpts:
        raise UserError(f"no checkpoint given for run {run}", f"pass --ckpt {run}=DIR (DIR holds model.pt)")
    name = (config.get("train", {}).get(run) or {}).get("model", run)
    model = models.from_config(name, config)
    path = ckpts[run] / "model.pt" if ckpts[run].is_dir() else ckpts[run]
    state = torch_load(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit model {name} ({str(exc).splitlines()[0]})",
                        "evaluate with the config the run was trained with") from None
    dev = dev or device()
    model = model.to(dev).eval()
    # The memory format the run trained in (bench/cpu_channels_last.py); a channels_last weight makes the
    # convolutions pick it whatever the input's layout, and logits are the same up to float rounding.
    from saccader.pipeline.train import use_channels_last

    if use_channels_last(config.get("train", {}).get(run) or {}, dev):
        model = model.to(memory_format=torch.channels_last)
    return model


def grid_boxes(model, locations: torch.Tensor, image_size: int, target_size: int | None = None) -> torch.Tensor:
    """Pixel boxes (..., 4) of flat grid locations of a BagNet-based model (its true receptive fields)."""
    grid = model.grid_size(image_size)
    return geometry.location_boxes(locations, grid[1], model.receptive_field, model.stride, image_size, target_size)


def _saccader_glimpses(model, images, num_glimpses, policies, generator, image_size) -> dict:
    """Policy ``saccader``: the cell's test-time (argmax) rollout; prediction after t glimpses = the running mean of
    the glimpse logits (eq 6)."""
    from baselines import policies as engineered

    feats = model.backbone(images)
    roll = model.rollout(feats["mixed"], feats["logits2d"], num_glimpses)
    return {"saccader": (grid_boxes(model, roll["locations"], image_size),
                         engineered.cumulative_logits(roll["glimpse_logits"]))}


def _engineered_glimpses(model, images, num_glimpses, policies, generator, image_size) -> dict:
    """Each of ``policies`` steering BagNet-77-lowD: classified, like the Saccader, by the mean of its logits over
    the chosen cells (Section 4.1)."""
    from baselines import policies as engineered

    logits2d = model(images)
    out = {}
    for policy in policies:
        locations = engineered.choose(policy, num_glimpses, logits2d=logits2d, images=images,
                                      patch=model.receptive_field, stride=model.stride, generator=generator)
        out[policy] = (grid_boxes(model, locations, image_size),
                       engineered.cumulative_logits(engineered.gather_logits(logits2d, locations)))
    return out


def _dram_glimpses(model, images, num_glimpses, policies, generator, image_size) -> dict:
    """Policy ``dram``: the mean-location rollout; its prediction after t glimpses is its step-t logits."""
    res = model(images, num_glimpses)
    return {"dram": (model.locations_to_pixels(res["locations"], image_size, model.glimpse_size), res["step_logits"])}


# How each kind of glimpse model (``saccader.catalog.RUNS``' ``glimpses``) gives its glimpses and predictions.
GLIMPSE_SOURCES = {"saccader": _saccader_glimpses, "engineered": _engineered_glimpses, "dram": _dram_glimpses}


def policy_outputs(models: dict, images: torch.Tensor, num_glimpses: int, policies: list[str],
                   generator: torch.Generator, image_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each policy the runs in ``models`` provide: (boxes (N, T, 4), logits after t glimpses (N, T, C)).

    ``models`` maps run names to loaded models; the catalog says how each run's model picks glimpses: a Saccader
    run gives policy ``saccader``, ``bagnet77_lowd`` the engineered ``policies``, ``dram`` policy ``dram``. A run
    that picks no glimpses is a UserError naming those that do.
    """
    out = {}
    for run, model in models.items():
        source = GLIMPSE_SOURCES[catalog.glimpse_source(run)]
        out.update(source(model, images, num_glimpses, policies, generator, image_size))
    return out


def occlude(images: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images with every pixel inside the union of ``boxes`` (N, T, 4) replaced by ``fill`` (C,) (Fig 5b).

    "Set the pixels to 0" (Section 4.2): ``fill`` is 0 in the space chosen by ``evaluate.occlusion_space``.
    """
    mask = geometry.coverage_mask(boxes, images.shape[2], images.shape[3]).unsqueeze(1)
    return torch.where(mask, fill.view(1, -1, 1, 1).to(images), images)


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-image hit of the label among the top-k logits; logits (..., N, C) -> (..., N) float."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels.unsqueeze(-1)).any(-1).float()


class _Tally:
    """Sums of per-image values keyed by (policy, resolution, T, metric); means give the result rows.

    Per-batch sums stay on the device until ``rows``: reading each one (``float``) made the host wait for the GPU
    several times per glimpse count and batch. ``rows`` adds them as Python floats in batch order, the same
    arithmetic as reading them one by one.
    """

    def __init__(self):
        self.sums, self.counts, self.values = {}, {}, {}

    def add(self, key, values: torch.Tensor):
        self.sums.setdefault(key, []).append(values.sum())
        self.values.setdefault(key, []).append(values.detach())
        self.counts[key] = self.counts.get(key, 0) + int(values.numel())

    def rows(self) -> list[dict]:
        rows = []
        for key, n in self.counts.items():
            total = 0.0
            for value in torch.stack(self.sums[key]).tolist():  # one wait per key, not per batch
                total += value
            p, r, t, m = key
            rows.append({"policy": p, "resolution": r, "num_glimpses": t, "metric": m, "value": total / n,
                         "n_images": n})
        return rows

    def per_image(self) -> dict:
        """Key -> one value per image, in the evaluated split's order."""
        return {key: torch.cat(v).float().cpu().numpy() for key, v in self.values.items()}


def _loader(config: dict, resolution: int | None = None, normalize: bool = True, dev=None):
    """Batches of the test split on ``dev``: the workers send uint8 images (a quarter of the bytes of float32),
    standardised on the device, bitwise as the transform would (``folder.Standardize``)."""
    from saccader.pipeline.data.folder import Standardize, build_dataset

    ev, ds = config["evaluate"], config["dataset"]
    dataset = build_dataset(config, "test", resolution=resolution, uint8=True)
    if ev["max_images"] is not None and ev["max_images"] < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(ev["max_images"]))
    dev = torch.device(dev or "cpu")
    loader = torch.utils.data.DataLoader(dataset, batch_size=ev["batch_size"], shuffle=False,
                                         num_workers=ds["num_workers"], pin_memory=dev.type == "cuda")
    # normalize=False: [0, 1] pixels (x - 0) / 1, the same float operations
    return _OnDevice(loader, Standardize(*((ds["mean"], ds["std"]) if normalize else ([0.0] * 3, [1.0] * 3))), dev)


class _OnDevice:
    """A DataLoader whose (uint8 images, labels) batches arrive on ``dev``, the images standardised there."""

    def __init__(self, loader, standardize, dev):
        self.loader, self.standardize, self.dev = loader, standardize, dev

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield (self.standardize(images.to(self.dev, non_blocking=True)),
                   labels.to(self.dev, non_blocking=True))


def _progress(iterable, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch", mininterval=5.0)


def _glimpses(config, model_name, ckpts, dev, generator, tally):
    ev, size = config["evaluate"], config["dataset"]["image_size"]
    models = {model_name: load_run(config, model_name, ckpts, dev)}
    for images, labels in _progress(_loader(config, dev=dev), f"glimpses {model_name}"):
        glimpses_batch(models, images.to(dev), labels.to(dev), ev, generator, size, tally)
    return models


def glimpses_batch(models, images, labels, ev: dict, generator, size: int, tally) -> None:
    """One batch of the ``glimpses`` job (device work only: no host wait)."""
    for policy, (boxes, logits) in policy_outputs(models, images, ev["max_glimpses"], ev["policies"],
                                                  generator, size).items():
        for t in range(1, ev["max_glimpses"] + 1):
            tally.add((policy, size, t, "top1"), _topk_hits(logits[:, t - 1], labels, 1))
            tally.add((policy, size, t, "top5"), _topk_hits(logits[:, t - 1], labels, 5))
            tally.add((policy, size, t, "area"), geometry.area_covered(boxes[:, :t], size, size))


def _full_image(config, model_name, ckpts, dev, generator, tally):
    size = config["dataset"]["image_size"]
    model = load_run(config, model_name, ckpts, dev)
    for images, labels in _progress(_loader(config, dev=dev), f"full image {model_name}"):
        full_image_batch(model, images.to(dev), labels.to(dev), size, tally)


def full_image_batch(model, images, labels, size: int, tally) -> None:
    """One batch of the ``full_image`` job (device work only)."""
    logits = image_logits(model, images)
    tally.add(("full_image", size, 0, "top1"), _topk_hits(logits, labels, 1))
    tally.add(("full_image", size, 0, "top5"), _topk_hits(logits, labels, 5))


def _occlusion(config, model_name, ckpts, dev, generator, tally):
    ev, ds = config["evaluate"], config["dataset"]
    size = ds["image_size"]
    classifier = load_run(config, "resnet_v2_50", ckpts, dev)
    sources = {run: load_run(config, run, ckpts, dev) for run in catalog.required_runs("occlusion", "resnet_v2_50")[1:]}
    mean, std = torch.tensor(ds["mean"]), torch.tensor(ds["std"])
    # standardised: 0 in the model's input space (the official patches_masks x input); pixel: black in [0, 1].
    fill = torch.zeros(3) if ev["occlusion_space"] == "standardized" else -mean / std
    for images, labels in _progress(_loader(config, dev=dev), "occlusion"):
        occlusion_batch(classifier, sources, images.to(dev), labels.to(dev), ev, fill, generator, size, tally)


def occlusion_batch(classifier, sources, images, labels, ev: dict, fill, generator, size: int, tally) -> None:
    """One batch of the ``occlusion`` job (device work only)."""
    for policy, (boxes, _) in policy_outputs(sources, images, ev["max_glimpses"], ev["policies"],
                                             generator, size).items():
        for t in range(1, ev["max_glimpses"] + 1):
            logits = image_logits(classifier, occlude(images, boxes[:, :t], fill))
            tally.add((policy, size, t, "occluded_top1"), _topk_hits(logits, labels, 1))
            tally.add((policy, size, t, "occluded_top5"), _topk_hits(logits, labels, 5))
            tally.add((policy, size, t, "area"), geometry.area_covered(boxes[:, :t], size, size))


def _nasnet(config, model_name, ckpts, dev, generator, tally):
    """Saccader-NASNet (Fig 6): locations from the Saccader on the image_size image; the NASNet fine-tuned on those
    crops classifies the patches cut from the same image (run nasnet_77) or from the high_res_size image (run
    nasnet_113, patches int(331/224 * 77) = 113 px). Prediction after t glimpses = mean NASNet logits of the first t
    crops, exactly the T = t forward (the argmax Saccader is a causal recurrence)."""
    from saccader import models

    ev, ds = config["evaluate"], config["dataset"]
    low, high, t_max = ds["image_size"], ds["high_res_size"], ev["max_glimpses"]
    for resolution, nasnet_run in ((low, "nasnet_77"), (high, "nasnet_113")):
        model = models.from_config("saccader_nasnet", config)
        model.saccader.load_state_dict(torch_load(ckpt_file(ckpts, "saccader")))
        _load_part(model, "nasnet", torch_load(ckpt_file(ckpts, nasnet_run)), nasnet_run)
        model = model.to(dev).eval()
        loaders = [_loader(config, dev=dev)] + ([_loader(config, resolution=high, dev=dev)]
                                                if resolution == high else [])
        for batch in _progress(zip(*loaders), f"saccader-nasnet {resolution}"):
            images, labels = batch[0][0].to(dev), batch[0][1].to(dev)
            high_res = batch[1][0].to(dev) if resolution == high else None
            nasnet_batch(model, images, labels, high_res, t_max, low, resolution, tally)


def nasnet_batch(model, images, labels, high_res, t_max: int, low: int, resolution: int, tally) -> None:
    """One batch of the ``nasnet`` job at one resolution (device work only)."""
    from baselines import policies as engineered

    _, locations, _ = model.saccader(images, t_max)
    crop_logits = image_logits(model.nasnet, model.crops(images, locations, high_res))
    logits = engineered.cumulative_logits(crop_logits.view(len(images), t_max, -1))
    boxes = grid_boxes(model.saccader, locations, low, resolution)
    for t in range(1, t_max + 1):
        tally.add(("saccader", resolution, t, "top1"), _topk_hits(logits[:, t - 1], labels, 1))
        tally.add(("saccader", resolution, t, "top5"), _topk_hits(logits[:, t - 1], labels, 5))
        tally.add(("saccader", resolution, t, "area"), geometry.area_covered(boxes[:, :t], resolution, resolution))


def _load_part(model, part: str, state: dict, run: str) -> None:
    """Load ``state`` into ``model.<part>``: a run may save the part alone or the whole composite model."""
    prefix = f"{part}."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        getattr(model, part).load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"model.pt of run {run} does not fit the {part} of saccader_nasnet "
                        f"({str(exc).splitlines()[0]})", "evaluate with the config the run was trained with") from None


def ckpt_file(ckpts: dict[str, Path], run: str) -> Path:
    if run not in ckpts:
        raise UserError(f"no checkpoint given for run {run}", f"pass --ckpt {run}=DIR (DIR holds model.pt)")
    return ckpts[run] / "model.pt" if ckpts[run].is_dir() else ckpts[run]


def example_indices(config: dict, n_total: int) -> np.ndarray:
    """The fixed images of the glimpse pictures (Fig 4, Supp.1): the same for every model and seed."""
    ev = config["evaluate"]
    n = min(ev["examples"], n_total)
    return np.sort(np.random.default_rng(ev["examples_seed"]).choice(n_total, n, replace=False))


def examples_path(out) -> Path:
    """Where a ``glimpses`` job puts its glimpse pictures: ``<out>.examples.npz`` beside the parquet."""
    return Path(f"{out}.examples.npz")


def save_examples(config: dict, models: dict, generator: torch.Generator, path: Path, dev) -> None:
    """``<out>.examples.npz``: images uint8 (N, H, W, 3), labels (N,), indices (N,), and per policy
    boxes_<policy> (N, T, 4) (y0, x0, y1, x1, T = evaluate.train_glimpses) and pred_<policy> (N,) after T glimpses."""
    from saccader.pipeline.data.folder import build_dataset

    ev, ds = config["evaluate"], config["dataset"]
    raw = build_dataset(config, "test", normalize=False)
    idx = example_indices(config, len(raw))
    pixels = torch.stack([raw[int(i)][0] for i in idx])
    labels = np.array([raw[int(i)][1] for i in idx], dtype=np.int64)
    mean, std = torch.tensor(ds["mean"]).view(1, 3, 1, 1), torch.tensor(ds["std"]).view(1, 3, 1, 1)
    t = ev["train_glimpses"]
    arrays = {"images": (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy(), "labels": labels,
              "indices": idx.astype(np.int64), "num_glimpses": np.int64(t)}
    with torch.no_grad():
        outs = policy_outputs(models, ((pixels - mean) / std).to(dev), t, ev["policies"], generator,
                              ds["image_size"])
    for policy, (boxes, logits) in outs.items():
        arrays[f"boxes_{policy}"] = boxes.cpu().numpy().astype(np.int64)
        arrays[f"pred_{policy}"] = logits[:, -1].argmax(-1).cpu().numpy().astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def evaluate(config: dict, kind: str, model: str, seed: int, ckpts: dict[str, Path], out: Path):
    """Run one evaluation job and write its parquet (and, for ``glimpses``, its examples npz)."""
    runs = catalog.required_runs(kind, model)
    missing = [r for r in runs if r not in ckpts]
    if missing:
        raise UserError(f"job {kind}/{model} needs checkpoints of runs {missing}",
                        " ".join(f"--ckpt {r}=DIR" for r in missing))
    ensure_writable(Path(out).parent)  # fail now, not after the evaluation
    dev = device()
    torch.manual_seed(seed)
    generator = torch.Generator(device=dev).manual_seed(config["evaluate"]["random_seed"] + seed)  # random policy
    tally = _Tally()
    with torch.no_grad():
        models = KINDS[kind](config, model, ckpts, dev, generator, tally)
    ds = config["dataset"]
    base = {"experiment": kind, "dataset": ds["name"], "split": "test" if ds["name"] == "digits" else "val",
            "model": model, "seed": seed, "config_hash": results.config_hash(config),
            "code_version": results.code_version()}
    frame = results.rows(base, tally.rows())
    results.save(frame, out)
    results.save_images({k: base[k] for k in ("experiment", "model", "seed")}, tally.per_image(),
                        catalog.images_path(out))
    if kind == "glimpses":
        examples_generator = torch.Generator(device=dev).manual_seed(config["evaluate"]["random_seed"] + seed)
        save_examples(config, models, examples_generator, examples_path(out), dev)
    log.info("wrote %s (%d rows)", out, len(frame))
    return frame


# The body of each evaluation kind of the catalog, (config, model, ckpts, device, generator, tally) -> the loaded
# models whose glimpse examples a ``glimpses`` job saves (None for the other kinds).
KINDS = {"glimpses": _glimpses, "full_image": _full_image, "occlusion": _occlusion, "nasnet": _nasnet}


def _run(args) -> int:
    from saccader.pipeline.config import load

    config = load(args.config)
    evaluate(config, args.kind, args.model, args.seed, parse_ckpts(args.ckpt), Path(args.out))
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer

    p = subparsers.add_parser("evaluate", help="evaluation job: policies x glimpses, full image, occlusion, NASNet",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--kind", required=True, choices=sorted(catalog.EVALUATIONS))
    p.add_argument("--model", required=True, help="model to evaluate (see saccader.catalog.EVALUATIONS)")
    p.add_argument("--seed", required=True, type=integer(0))
    p.add_argument("--ckpt", action="append", default=[], metavar="RUN=DIR",
                   help="training run directory holding model.pt; repeat for every run the job needs")
    p.add_argument("--out", required=True, help="output parquet")
    p.set_defaults(func=_run)
