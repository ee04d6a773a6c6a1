"""The embedded default dataset: cluttered digits, built from scikit-learn's bundled handwritten digits.

No download is possible on the machines this must run on, so the default experiment uses the classic cluttered-digits
task for hard attention (Mnih et al. 2014): one upscaled digit at a random position on a canvas, plus clutter
fragments cut from other digits. The 1,797 real 8x8 source digits are split into train / dev / test *before* any
canvas is made, so no source digit appears in two splits.

The output is an ImageFolder in ImageNet's layout (``train/<class>/*.png``, ``val/<class>/*.png``) so that the very
code path used for ImageNet (``saccader.pipeline.data.folder``) is the one exercised; the dev split is carved out of
``train/`` by the same deterministic function ImageNet uses, and the generator draws each dev canvas from dev source
digits.
Canvases are rendered once at ``high_res_size`` (the "331" resolution); the standard transforms resize them to
``image_size`` (the "224" resolution) exactly as ImageNet images are resized.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from saccader.errors import UserError
from saccader.pipeline.io import replace_folder

log = logging.getLogger("saccader.make-dataset")
CLASSES = [str(c) for c in range(10)]


def source_splits(targets: np.ndarray, fractions, seed: int) -> dict[str, np.ndarray]:
    """Split source digit indices into disjoint train / dev / test sets, stratified by class."""
    rng = np.random.default_rng(seed)
    out = {"train": [], "dev": [], "test": []}
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_dev = int(round(fractions[1] * len(idx)))
        out["train"].append(idx[:n_train])
        out["dev"].append(idx[n_train:n_train + n_dev])
        out["test"].append(idx[n_train + n_dev:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def _upscale(digit: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit (values 0..16) as a float image in [0, 1] of side ``size`` (bicubic, clipped)."""
    img = Image.fromarray((digit * (255.0 / 16.0)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def render_canvas(images: np.ndarray, digit: int, fragments: list[tuple[int, float, float, float, float]],
                  pos: tuple[float, float], settings: dict, side: int) -> np.ndarray:
    """Render one canvas at ``side`` pixels; geometry is given in fractions of the canvas so every resolution
    shows the same scene. ``fragments`` = (source index, crop y, crop x, place y, place x), all in [0, 1)."""
    scale = side / settings["canvas"]
    dsize = max(1, int(round(settings["digit_size"] * scale)))
    fsize = max(1, int(round(settings["fragment_size"] * scale)))
    canvas = np.zeros((side, side), dtype=np.float32)
    for src, cy, cx, py, px in fragments:
        up = _upscale(images[src], dsize)
        y0, x0 = int(cy * (dsize - fsize + 1)), int(cx * (dsize - fsize + 1))
        frag = up[y0:y0 + fsize, x0:x0 + fsize]
        ty, tx = int(py * (side - fsize + 1)), int(px * (side - fsize + 1))
        np.maximum(canvas[ty:ty + fsize, tx:tx + fsize], frag, out=canvas[ty:ty + fsize, tx:tx + fsize])
    ty, tx = int(pos[0] * (side - dsize + 1)), int(pos[1] * (side - dsize + 1))
    np.maximum(canvas[ty:ty + dsize, tx:tx + dsize], _upscale(images[digit], dsize),
               out=canvas[ty:ty + dsize, tx:tx + dsize])
    return (canvas * 255.0 + 0.5).astype(np.uint8)


def _plan(rng: np.random.Generator, pool: np.ndarray, targets: np.ndarray, label: int, clutter: int):
    """Pick the digit (of class ``label``) and the clutter fragments (other digits of the same pool)."""
    digit = int(rng.choice(pool[targets[pool] == label]))
    others = pool[pool != digit]
    fragments = [(int(rng.choice(others)), *rng.random(4).tolist()) for _ in range(clutter)]
    return digit, fragments, tuple(rng.random(2).tolist())


def build(config: dict, root: str | Path | None = None) -> Path:
    """Write the cluttered-digits ImageFolder for ``config`` into ``root`` (default ``dataset.root``).

    Same config -> byte-identical files and manifest checksum on any machine. Written into a temporary folder that
    is renamed into place at the end, so an interrupted build never leaves a half dataset behind.
    """
    from sklearn.datasets import load_digits

    from saccader.pipeline.data.folder import PACK_FILES, split_train_dev

    ds = config["dataset"]
    settings = ds["digits"]
    root = Path(root or ds["root"])
    if ds["num_classes"] - ds["label_offset"] != 10:
        raise UserError(f"dataset.num_classes = {ds['num_classes']} with label_offset {ds['label_offset']} does "
                        "not give the 10 digit classes", "set num_classes: 10 and label_offset: 0 for digits")
    if settings["digit_size"] > settings["canvas"] or settings["fragment_size"] > settings["digit_size"]:
        raise UserError("dataset.digits: need fragment_size <= digit_size <= canvas",
                        "shrink digit_size / fragment_size or enlarge canvas")
    if ds["dev_size"] >= settings["train_images"]:
        raise UserError(f"dataset.dev_size = {ds['dev_size']} must be smaller than digits.train_images "
                        f"= {settings['train_images']}", "lower dev_size")

    start = time.time()
    digits = load_digits()
    images, targets = digits.images, digits.target
    pools = source_splits(targets, settings["split_fractions"], settings["seed"])
    rng = np.random.default_rng(settings["seed"] + 1)

    # Labels and file names first, so the dev split (chosen from names, as for ImageNet) decides the source pool.
    files = []
    for folder, count in (("train", settings["train_images"]), ("val", settings["val_images"])):
        labels = np.arange(count) % 10
        rng.shuffle(labels)
        files += [(folder, int(y), f"{folder}/{y}/{folder}_{i:06d}.png") for i, y in enumerate(labels)]
    dev = set(split_train_dev([f for split, _, f in files if split == "train"], ds["dev_size"])[1])

    with replace_folder(root, "manifest.json", "make-dataset", PACK_FILES) as tmp:
        manifest = _render(config, tmp, files, dev, pools, rng, (images, targets))
    log.info("wrote %d images to %s in %.1f s (sha256 %s)", len(files), root, time.time() - start,
             manifest["sha256"][:12])
    return root


def _render(config: dict, tmp: Path, files: list, dev: set, pools: dict, rng: np.random.Generator,
            source: tuple[np.ndarray, np.ndarray]) -> dict:
    """Write the canvases and manifest.json (every file it lists) into ``tmp``; returns the manifest."""
    ds, settings = config["dataset"], config["dataset"]["digits"]
    images, targets = source
    counts: dict[str, dict[str, int]] = {"train": {}, "dev": {}, "val": {}}
    digest = hashlib.sha256()
    for folder, label, rel in tqdm(files, desc="make-dataset", unit="img", mininterval=2):
        split = "val" if folder == "val" else ("dev" if rel in dev else "train")
        pool = pools["test" if split == "val" else split]
        digit, fragments, pos = _plan(rng, pool, targets, label, settings["clutter"])
        pixels = render_canvas(images, digit, fragments, pos, settings, ds["high_res_size"])
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path, format="PNG", optimize=False)
        digest.update(rel.encode() + path.read_bytes())
        counts[split][str(label)] = counts[split].get(str(label), 0) + 1

    manifest = {
        "dataset": "cluttered-digits",
        "source": "sklearn.datasets.load_digits (1,797 8x8 digits), split disjointly before rendering",
        "source_digits": {k: int(len(v)) for k, v in pools.items()},
        "resolution": ds["high_res_size"],
        "settings": settings,
        "dev_size": ds["dev_size"],
        "counts": counts,
        "sha256": digest.hexdigest(),
        "files": [rel for _, _, rel in files],  # what make-dataset may delete when it rebuilds the folder
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _run(args) -> int:
    from saccader.pipeline import config as cfg

    config = cfg.load(args.config)
    if config["dataset"]["name"] != "digits":
        raise UserError(f"make-dataset builds the embedded digits dataset, but {' + '.join(args.config)} uses "
                        f"dataset.name = {config['dataset']['name']}",
                        "point dataset.root at your ImageNet folder instead")
    build(config, args.root)
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.config import add_config_argument

    p = subparsers.add_parser("make-dataset", help="build the embedded cluttered-digits dataset (no download)")
    add_config_argument(p)  # dataset.name must be digits
    p.add_argument("--root", default=None, help="output folder (default: dataset.root of the config)")
    p.set_defaults(func=_run)
