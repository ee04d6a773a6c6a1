"""``saccader predict``: where a trained glimpse model looks on your own images, and what it sees there.

    saccader predict results/models/saccader/seed0 photo.jpg my_folder/ --glimpses 6 --out predictions

MODEL is a model bundle (a training run folder with ``model.pt`` and ``card.json``, saccader.pipeline.bundle). Each
image gets the eval transform of the model's config (centre crop + bicubic resize + standardisation, Appendix C), the
model's top-5 classes after T glimpses, and in ``--out``: ``<name>.png`` (the glimpses in order as numbered boxes,
each with its own top class) and ``<name>.json`` (boxes in the original image's pixels, probabilities).

Glimpse models: the Saccader and its ablations, DRAM, Saccader-NASNet (runs nasnet_77 / nasnet_113), and a BagNet
under any engineered policy (``--policy``). The glimpses come from ``saccader.pipeline.evaluate.policy_outputs``, the
function the evaluation jobs use, so a picture shows exactly what a test-set evaluation scored. Other models
(ResNet-v2, NASNet) give their top-5 only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

from saccader.errors import UserError
from saccader.pipeline.data.images import ImageError, open_image

log = logging.getLogger("saccader.pipeline.predict")
__all__ = ["SUFFIXES", "open_image", "find_images", "glimpse_kind", "num_locations", "preprocess", "predict_batch",
           "predict_image", "draw", "check_out", "register"]

SUFFIXES = (".jpg", ".jpeg", ".png")
SACCADER_MODELS = ("saccader", "saccader_no_attention")
BAGNETS = ("bagnet77_lowd", "bagnet77")
DEFAULT_POLICY = "ordered_logits"  # for a BagNet: the strongest engineered policy of Fig 3a


def find_images(items) -> list[tuple[Path, str]]:
    """(file, output name) of every image named or found (recursively, sorted) in the named folders."""
    out = []
    for item in map(Path, items):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not files:
                raise UserError(f"folder {item} holds no JPEG or PNG image",
                                "pass a folder with .jpg / .jpeg / .png files, or the image files themselves")
            out += [(p, "_".join(p.relative_to(item).with_suffix("").parts)) for p in files]
        elif item.exists():
            out.append((item, item.stem))
        else:
            raise UserError(f"{item} does not exist", "pass image files or folders of images")
    names = [n for _, n in out]
    if len(set(names)) < len(names):  # same names from different arguments: keep them apart
        out = [(p, f"{i:04d}_{n}") for i, (p, n) in enumerate(out)]
    return out


def glimpse_kind(card: dict) -> str | None:
    """How the model glimpses: saccader, bagnet, dram, saccader_nasnet; None for a full-image model."""
    name = card["model"]
    if name in SACCADER_MODELS:
        return "saccader"
    if name in BAGNETS:
        return "bagnet"
    if name in ("dram", "saccader_nasnet"):
        return name
    return None


def num_locations(model, card: dict) -> int | None:
    """Locations the policy picks from (the representation grid); None for DRAM's continuous locations."""
    kind = glimpse_kind(card)
    grid_model = model.saccader if kind == "saccader_nasnet" else model
    if kind in ("saccader", "bagnet", "saccader_nasnet"):
        h, w = grid_model.grid_size(card["input"]["image_size"])
        return h * w
    return None


def check_glimpses(model, card: dict, glimpses: int | None) -> int | None:
    """The T to use: ``glimpses``, else the card's (the T the run trained with; the paper's 6 for a BagNet)."""
    kind = glimpse_kind(card)
    if kind is None:
        if glimpses is not None:
            raise UserError(f"model {card['model']} (run {card['run']}) classifies the full image and takes no "
                            "glimpses", "drop --glimpses, or pass a Saccader, DRAM, Saccader-NASNet or BagNet bundle")
        return None
    t = glimpses if glimpses is not None else (card.get("glimpses") or 6)
    if t < 1:
        raise UserError(f"--glimpses {t} is not a number of glimpses", "pass --glimpses 1 or more")
    n = num_locations(model, card)
    if n is not None and t > n:
        raise UserError(f"--glimpses {t} exceeds the {n} locations model {card['model']} can look at "
                        f"({card['input']['image_size']} px input)", f"pass --glimpses {n} or fewer")
    return t


def transform(card: dict, resolution: int):
    """The eval transform of the model's config at ``resolution`` (saccader.pipeline.data.folder.AppendixC)."""
    from saccader.pipeline.data.folder import AppendixC

    inp = card["input"]
    return AppendixC(resolution, train=False, eval_fraction=1.0 / (1.0 + inp["crop_padding_fraction"]),
                     mean_std=(inp["mean"], inp["std"]))


def preprocess(card: dict, image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image at image_size, image at the high resolution for a high-resolution Saccader-NASNet, else None)."""
    inp = card["input"]
    low = transform(card, inp["image_size"])(image)
    high = transform(card, inp["resolution"])(image) if inp["resolution"] != inp["image_size"] else None
    return low, high


def predict_batch(model, card: dict, images: torch.Tensor, glimpses: int | None, policy: str = DEFAULT_POLICY,
                  high_res: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict:
    """Logits after t = 1..T glimpses (N, T, C), each glimpse's own logits (N, T, C) and boxes (N, T, 4) in the pixels
    of the image the glimpses were cut from (``resolution``); for a full-image model only ``logits`` (N, 1, C)."""
    from baselines import policies as engineered
    from saccader.pipeline.evaluate import grid_boxes, image_logits, policy_outputs

    kind, inp = glimpse_kind(card), card["input"]
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        if kind is None:
            return {"logits": image_logits(model, images).unsqueeze(1)}
        if kind == "saccader_nasnet":  # as saccader.pipeline.evaluate._nasnet: the Saccader picks, the NASNet
                                       # classifies
            _, locations, _ = model.saccader(images, glimpses)
            own = image_logits(model.nasnet, model.crops(images, locations, high_res)).view(len(images), glimpses, -1)
            return {"logits": engineered.cumulative_logits(own), "own": own,
                    "boxes": grid_boxes(model.saccader, locations, inp["image_size"], inp["resolution"])}
        run = {"saccader": "saccader", "bagnet": "bagnet77_lowd", "dram": "dram"}[kind]
        ((name, (boxes, logits)),) = policy_outputs({run: model}, images, glimpses, [policy], generator,
                                                    inp["image_size"]).items()
    if kind == "dram":  # DRAM's step-t logits are its prediction after glimpse t (its recurrence sees them all)
        own = logits
    else:  # a running mean of the glimpses' logits (eq 4 / 6): each glimpse's own logits are its increment
        t = torch.arange(1, glimpses + 1, dtype=logits.dtype).view(1, -1, 1)
        own = logits * t - torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], 1) * (t - 1)
    return {"logits": logits, "own": own, "boxes": boxes, "policy": name}


def _crop_frame(card: dict, width: int, height: int, resolution: int) -> tuple[float, float, float]:
    """(top, left, scale): a pixel of the ``resolution`` model input maps to ``top + y * scale`` in the original
    image, as the eval transform's centre square crop (torchvision's rounding) and resize place it."""
    inp = card["input"]
    side = max(1, int(round(1.0 / (1.0 + inp["crop_padding_fraction"]) * min(width, height))))  # _CenterFraction
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return top, left, side / resolution


def predict_image(model, card: dict, image, glimpses: int | None, policy: str = DEFAULT_POLICY) -> dict:
    """The JSON record of one PIL image: top-5, and per glimpse its box in original pixels and own top class."""
    from saccader.models.bundle import class_label

    dev = next(model.parameters()).device
    low, high = preprocess(card, image)
    out = predict_batch(model, card, low[None].to(dev), glimpses, policy,
                        None if high is None else high[None].to(dev))
    probs = out["logits"][0, -1].float().softmax(-1)
    top = probs.topk(min(5, len(probs)))
    record = {"model": card["model"], "run": card["run"], "seed": card.get("seed"),
              "image_size": [image.width, image.height], "num_glimpses": glimpses,
              "top5": [{"class": class_label(card, int(i)), "index": int(i), "probability": round(float(p), 6)}
                       for p, i in zip(top.values, top.indices)]}
    if "boxes" not in out:
        return record
    record["policy"] = out["policy"] if "policy" in out else "saccader"
    top_, left, scale = _crop_frame(card, image.width, image.height, card["input"]["resolution"])
    record["glimpses"] = []
    for t, (box, own) in enumerate(zip(out["boxes"][0].tolist(), out["own"][0].float().softmax(-1)), 1):
        y0, x0, y1, x1 = box
        k = int(own.argmax())
        record["glimpses"].append({
            "t": t, "box_xyxy": [round(left + x0 * scale, 1), round(top_ + y0 * scale, 1),
                                 round(left + x1 * scale, 1), round(top_ + y1 * scale, 1)],
            "class": class_label(card, k), "index": k, "probability": round(float(own[k]), 6)})
    return record


def draw(image, record: dict, size: int = 480):
    """The picture: the image (longer side ``size``) with numbered glimpse boxes in order (colour runs from the
    first to the last) and beside it each glimpse's own top class and the model's top-5."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    scale = size / max(image.width, image.height)
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.BICUBIC if scale > 1 else Image.LANCZOS)
    font = ImageFont.load_default(size=15)
    glimpses = record.get("glimpses", [])
    lines = [f"{g['t']}. {g['class']} ({g['probability']:.0%})" for g in glimpses]
    lines += ["", f"after {record['num_glimpses']} glimpses:" if glimpses else "full image:"]
    lines += [f"{c['class']}  {c['probability']:.1%}" for c in record["top5"]]
    panel = 230
    canvas = Image.new("RGB", (shown.width + panel, max(shown.height, 22 * len(lines) + 20)), "white")
    canvas.paste(shown, (0, 0))
    pen = ImageDraw.Draw(canvas)
    cmap = colormaps["plasma"]
    colours = [tuple(int(255 * c) for c in cmap(0.25 + 0.65 * i / max(len(glimpses) - 1, 1))[:3])
               for i in range(len(glimpses))]
    for g, colour in zip(glimpses, colours):
        x0, y0, x1, y1 = (v * scale for v in g["box_xyxy"])
        pen.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=3)
        label = str(g["t"])
        w = pen.textlength(label, font=font)
        pen.rectangle([x0, y0, x0 + w + 6, y0 + 18], fill=colour)
        pen.text((x0 + 3, y0 + 1), label, fill="white", font=font)
    for i, line in enumerate(lines):
        colour = colours[i] if i < len(glimpses) else (30, 30, 30)
        pen.text((shown.width + 12, 10 + 22 * i), line, fill=colour, font=font)
    return canvas


# In --out, as JSON: every file predict wrote there, the only ones it may replace. No suffix, so that no output
# (<name>.png, <name>.json) can take its name.
MANIFEST = ".saccader-predict"


def check_out(out, items) -> Path:
    """``out`` as a folder predict may write into: not one of the inputs, not inside an input folder, not holding an
    input, and empty or holding only files an earlier predict wrote there (listed in its MANIFEST)."""
    from saccader.pipeline.io import refuse_foreign

    out = Path(out)
    real = out.resolve()
    for item in map(Path, items):
        item_real = item.resolve()
        if real == item_real or real.is_relative_to(item_real) or item_real.is_relative_to(real):
            where = "is" if real == item_real else "sits inside" if real.is_relative_to(item_real) else "holds"
            raise UserError(f"--out {out} {where} the input {item}; predict never writes among its inputs",
                            "pass an --out folder apart from the images, e.g. --out predictions")
    refuse_foreign(out, MANIFEST, "predict")
    return out


def _claim(out: Path, names: list[str]) -> None:
    """List this run's outputs in MANIFEST before writing them, so that a killed run's files stay predict's."""
    from saccader.pipeline.io import owned_files, write_text

    files = (owned_files(out, MANIFEST) or set()) - {MANIFEST}
    files |= {f"{n}{suffix}" for n in names for suffix in (".png", ".json")}
    write_text(out / MANIFEST, json.dumps({"files": sorted(files)}, indent=1) + "\n")


def _save(out: Path, name: str, image, record: dict) -> Path:
    from saccader.pipeline.io import atomic_path, write_text

    png = out / f"{name}.png"
    with atomic_path(png) as tmp:
        draw(image, record).save(tmp, format="PNG")
    write_text(out / f"{name}.json", json.dumps(record, indent=1) + "\n")
    return png


def predict(model_path, items, glimpses: int | None = None, out="predictions", policy: str = DEFAULT_POLICY,
            device: str | None = None) -> list[dict]:
    """Predict every image of ``items``; writes the pictures and JSON files into ``out``. An unreadable image gets one
    line on stderr and the others are still done; returns the records of the images done."""
    from tqdm import tqdm

    from baselines.policies import POLICIES
    from saccader.models import load
    from saccader.pipeline.io import ensure_writable

    model = load(model_path, device)
    card = model.card
    glimpses = check_glimpses(model, card, glimpses)
    if policy not in POLICIES:
        raise UserError(f"unknown policy {policy!r}", f"use one of {', '.join(POLICIES)}")
    if policy != DEFAULT_POLICY and glimpse_kind(card) != "bagnet":
        raise UserError(f"--policy {policy} applies to a BagNet; model {card['model']} has its own policy",
                        "drop --policy, or pass a BagNet bundle (run bagnet77_lowd)")
    files = find_images(items)
    out = ensure_writable(check_out(out, items))
    _claim(out, [name for _, name in files])
    records, failed = [], 0
    bar = tqdm(files, desc="predict", unit="img", disable=len(files) < 10, mininterval=1.0)
    for path, name in bar:
        try:
            image = open_image(path)
        except ImageError as exc:
            failed += 1
            tqdm.write(f"{exc}; skipped, the other images go on", file=sys.stderr)
            continue
        record = {"image": str(path), **predict_image(model, card, image, glimpses, policy)}
        png = _save(out, name, image, record)
        records.append(record)
        top = ", ".join(f"{c['class']} {c['probability']:.0%}" for c in record["top5"][:3])
        tqdm.write(f"{path}: {top} -> {png}")
    if not records:
        raise UserError(f"none of the {len(files)} image(s) could be read", "pass JPEG or PNG files")
    log.info("%d image(s) predicted into %s%s", len(records), out, f", {failed} unreadable" if failed else "")
    return records


def _run(args) -> int:
    predict(args.model, args.images, args.glimpses, args.out, args.policy, args.device)
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import device, integer

    p = subparsers.add_parser("predict", help="top-5 classes and glimpse pictures of a trained model on your images",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", help="model bundle: a training run folder with model.pt and card.json")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="JPEG / PNG files or folders of them")
    p.add_argument("--glimpses", type=integer(1), default=None,
                   help="number of glimpses T (default: the T the run trained with)")
    p.add_argument("--policy", default=DEFAULT_POLICY,
                   help=f"engineered policy of a BagNet bundle (baselines.policies; default {DEFAULT_POLICY})")
    p.add_argument("--out", default="predictions", help="folder for <name>.png and <name>.json (default predictions)")
    p.add_argument("--device", type=device, default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=_run)
