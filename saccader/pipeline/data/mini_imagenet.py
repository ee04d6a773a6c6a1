"""A miniature ImageNet generated here (no download): the ILSVRC 2012 folder layout in real JPEG files, for the wet
run of the paper-scale workflow (``make wet-run``, ``config/mini-imagenet.yaml``).

``<root>/train/<wnid>/<wnid>_<i>.JPEG`` and ``<root>/val/<wnid>/ILSVRC2012_val_<k>.JPEG`` (val sorted into class
folders, as the paper's pipeline expects), one folder per class with real-looking WordNet ids (``n0`` + 7 digits),
images of varied sizes and aspect ratios, a few grayscale and a few CMYK JPEGs as ImageNet has. The pictures are
synthetic (a smooth random colour field with a class-coloured ellipse), so whatever a model scores on them means
nothing: the tree exists to push every paper-size model through the real data path (JPEG decoding, Appendix C
crops at 224 and 331, 1001 outputs with label offset 1).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from saccader.errors import UserError
from saccader.pipeline.io import replace_folder

log = logging.getLogger(__name__)

SIZE_RANGE = (64, 400)          # sides in px; ImageNet's vary widely around ~400 x 350
ASPECT_RANGE = (0.5, 2.0)       # width / height
GRAYSCALE_EVERY = 97            # about 1 % of the files (ImageNet train: ~2 %)
CMYK_EVERY = 331                # a handful (ImageNet train holds 22 CMYK JPEGs)


def wnids(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sorted ids shaped like WordNet noun ids (``n01440764``)."""
    rng = random.Random(seed)
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(f"n0{rng.randrange(1_000_000, 10_000_000):07d}")
    return sorted(ids)


def picture(rng: np.random.Generator, colour: tuple[int, int, int], mode: str):
    """One synthetic photo-sized picture: a smooth random field plus an ellipse of the class colour."""
    from PIL import Image, ImageDraw

    side = rng.integers(*SIZE_RANGE, endpoint=True)
    aspect = float(np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1]))))
    w, h = (int(side), max(16, int(side / aspect))) if aspect >= 1 else (max(16, int(side * aspect)), int(side))
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    x0, y0 = rng.uniform(0, 0.5) * w, rng.uniform(0, 0.5) * h
    ImageDraw.Draw(field).ellipse([x0, y0, x0 + rng.uniform(0.3, 0.5) * w, y0 + rng.uniform(0.3, 0.5) * h],
                                  fill=colour)
    return field.convert(mode)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _spec(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "files"}


def build(root: str | Path, classes: int = 1000, train_per_class: int = 2, val_per_class: int = 1,
          seed: int = 0) -> Path:
    """Write the tree at ``root`` (atomically: built beside it, then renamed) unless an identical one is there; a
    non-empty ``root`` that an earlier build did not write is refused (saccader.pipeline.io.replace_folder)."""
    root = Path(root)
    spec = {"classes": classes, "train_per_class": train_per_class, "val_per_class": val_per_class, "seed": seed,
            "generator": "saccader.pipeline.data.mini_imagenet"}
    if _spec(_read_manifest(root / "manifest.json")) == spec:
        log.info("mini-ImageNet at %s is up to date", root)
        return root
    from tqdm import tqdm

    from saccader.pipeline.data.folder import PACK_FILES

    with replace_folder(root, "manifest.json", "make-mini-imagenet", PACK_FILES) as tmp:
        rng = np.random.default_rng(seed)
        files = []
        val_index = 0
        for wnid in tqdm(wnids(classes, seed), desc="mini-imagenet", unit="class", mininterval=2):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            for split, n in (("train", train_per_class), ("val", val_per_class)):
                folder = tmp / split / wnid
                folder.mkdir(parents=True)
                for i in range(n):
                    count = len(files) + 1
                    mode = "CMYK" if count % CMYK_EVERY == 0 else "L" if count % GRAYSCALE_EVERY == 0 else "RGB"
                    if split == "val":
                        val_index += 1
                    name = f"{wnid}_{i + 1}.JPEG" if split == "train" else f"ILSVRC2012_val_{val_index:08d}.JPEG"
                    picture(rng, colour, mode).save(folder / name, quality=90)
                    files.append(f"{split}/{wnid}/{name}")
        # "files": what a rebuild may delete
        (tmp / "manifest.json").write_text(json.dumps({**spec, "files": files}, indent=1))
    count = len(files)
    log.info("mini-ImageNet: %d classes, %d images written to %s", classes, count, root)
    return root


def _run(args) -> int:
    from saccader.pipeline import config as cfg

    config = cfg.load(args.config)
    ds = config["dataset"]
    if ds["name"] != "imagenet":
        raise UserError(f"make-mini-imagenet writes an ImageNet-layout tree, but {' + '.join(args.config)} uses "
                        f"dataset.name = {ds['name']}", "pass config.yaml and config/mini-imagenet.yaml")
    build(args.root or ds["root"], ds["num_classes"] - ds["label_offset"], args.train_per_class,
          args.val_per_class, args.seed)
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer

    p = subparsers.add_parser("make-mini-imagenet",
                              help="generate a miniature ImageNet of JPEG files (for the wet run; no download)")
    from saccader.pipeline.config import add_config_argument

    add_config_argument(p)
    p.add_argument("--root", help="where to write it (default: dataset.root of the config)")
    p.add_argument("--train-per-class", type=integer(1), default=2, help="training images per class (default 2)")
    p.add_argument("--val-per-class", type=integer(1), default=1, help="val images per class (default 1)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=_run)
