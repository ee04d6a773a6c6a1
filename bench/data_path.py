"""Data path: JPEG decoding and the ImageNet training transform, PIL (what ``FolderDataset`` uses) vs torchvision.

    python bench/data_path.py [--images 48] [--workers 0 2] [--out FILE.json]

On generated ImageNet-like JPEGs (500 x 375, quality 90, smooth content plus noise) written to a temporary folder:
    pil_decode / tv_decode          images/s of ``PIL.Image.open(...).convert("RGB")`` vs
                                    ``torchvision.io.decode_jpeg(read_file(...))`` (both to full-size RGB)
    pil_train / tv_train            images/s of decode + the Appendix C training transform at 224
                                    (``build_transform(config.yaml, train=True)``: random-resized crop, bicubic
                                    antialiased resize, flip, to float, normalise) on the PIL image vs on the tensor
    loader_w<N>                     images/s through ``torch.utils.data.DataLoader`` (batch 32) over
                                    ``FolderDataset`` with N workers (pinned memory only matters with CUDA)

On generated 64 x 64 PNG canvases (the embedded images) with ``config/embedded.yaml``'s training transform:
    emb_compose / emb_appendix_c    images/s of the transform as a ``v2.Compose`` (``AppendixC.reference_compose``)
                                    vs ``AppendixC`` (the same kernels called directly, what the datasets use), on
                                    decoded tensors
    emb_item / emb_item_cached      images/s of ``FolderDataset[i]`` (decode + transform) with
                                    ``dataset.cache_images`` off vs on (after one pass filled the cache)
    emb_item_forked_rng /           a cached item whose augmentation is drawn by forking and reseeding the global
    emb_item_generator              generator vs from a generator of its own (what ``_SeededItems`` does now)
    emb_first_pass_decode /         a new job's first pass over the split with ``cache_images``: decode every
    emb_first_pass_pack             image vs load the decoded split from its pack file
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import numpy as np
import torch

from common import ROOT, interleaved, report


def write_jpegs(folder: Path, n: int, size=(500, 375), seed: int = 0) -> list[str]:
    """``n`` JPEGs under ``folder/train/c0/`` and ``folder/val/c0/`` (an ImageFolder with one class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for split in ("train", "val"):
        (folder / split / "c0").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([128 + 100 * np.sin(xx / (20 + 10 * k) + yy / 37 + phase[k]) for k in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / "train" / "c0" / f"img{i:04d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    Image.fromarray(pixels).save(folder / "val" / "c0" / "img0.JPEG", quality=90)
    return paths


def rate(fn, items) -> float:
    tick = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - tick)


def measure(n: int = 48, workers=(0, 2), rounds: int = 3) -> dict:
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from saccader.pipeline.config import load
    from saccader.pipeline.data.folder import FolderDataset, build_transform

    config = load(ROOT / "config.yaml")
    transform = build_transform(config, train=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), n)
        pil = lambda p: Image.open(p).convert("RGB")  # noqa: E731  (convert forces the decode)
        tv = lambda p: decode_jpeg(read_file(p), mode=ImageReadMode.RGB)  # noqa: E731
        t = interleaved({
            "pil_decode": lambda: rate(pil, paths), "tv_decode": lambda: rate(tv, paths),
            "pil_train": lambda: rate(lambda p: transform(pil(p)), paths),
            "tv_train": lambda: rate(lambda p: transform(tv(p)), paths),
        }, rounds=rounds)  # seconds per pass over the n files
        row = {"images": n, "jpeg": "500x375 q90", "resolution": 224}
        for name in ("pil_decode", "tv_decode", "pil_train", "tv_train"):
            row[f"{name}_img_s"] = n / t[name]
        row["tv/pil_decode"] = t["pil_decode"] / t["tv_decode"]
        row["tv/pil_train"] = t["pil_train"] / t["tv_train"]
        dataset = FolderDataset([(p, 0) for p in paths], transform)
        for w in workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=w, shuffle=False,
                                                 pin_memory=torch.cuda.is_available(), persistent_workers=w > 0)
            for _ in loader:  # warm-up epoch starts the workers
                pass
            tick = time.perf_counter()
            for _ in range(2):
                for _ in loader:
                    pass
            row[f"loader_w{w}_img_s"] = 2 * n / (time.perf_counter() - tick)
    return row


def write_canvases(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[str]:
    """``n`` random size x size RGB PNGs (the embedded dataset's format)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"canvas{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def measure_embedded(n: int = 256, rounds: int = 3) -> dict:
    from saccader.pipeline.data.folder import FolderDataset, load_rgb, build_transform

    config = common.embedded_config()
    transform = build_transform(config, train=True)
    compose = transform.reference_compose()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_canvases(Path(tmp), n, config["dataset"]["image_size"])
        samples = [(p, 0) for p in paths]
        tensors = [load_rgb(p) for p in paths]
        plain = FolderDataset(samples, transform)
        cached = FolderDataset(samples, transform, cache=True)
        items = range(n)

        def forked(i):  # how _SeededItems drew an item's augmentation before it had a generator of its own
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(i)
                return cached[i]

        def new_job(pack):  # a job's first pass over the split: decode everything, or load the pack
            ds = FolderDataset(samples, transform, cache=True, pack=pack)
            for i in items:
                ds[i]

        t = interleaved({
            "emb_compose": lambda: rate(compose, tensors), "emb_appendix_c": lambda: rate(transform, tensors),
            "emb_item": lambda: rate(plain.__getitem__, items),
            "emb_item_cached": lambda: rate(cached.__getitem__, items),
            "emb_item_forked_rng": lambda: rate(forked, items),
            "emb_item_generator": lambda: rate(lambda i: cached.get(i, torch.Generator().manual_seed(i)), items),
            "emb_first_pass_decode": lambda: new_job(None),
            "emb_first_pass_pack": lambda: new_job(Path(tmp) / ".decoded.pt"),
        }, rounds=rounds)  # the warm-up round fills the cache and writes the pack
    row = {"canvases": n, "resolution": config["dataset"]["image_size"]}
    for name in ("emb_compose", "emb_appendix_c", "emb_item", "emb_item_cached", "emb_item_forked_rng",
                 "emb_item_generator", "emb_first_pass_decode", "emb_first_pass_pack"):
        row[f"{name}_img_s"] = n / t[name]
    row["appendix_c/compose"] = t["emb_compose"] / t["emb_appendix_c"]
    row["cached/uncached_item"] = t["emb_item"] / t["emb_item_cached"]
    row["generator/forked_rng_item"] = t["emb_item_forked_rng"] / t["emb_item_generator"]
    row["pack/decode_first_pass"] = t["emb_first_pass_decode"] / t["emb_first_pass_pack"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--canvases", type=int, default=256, help="64 px PNGs for the embedded measurement")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    report("Data path", [measure(args.images, args.workers), measure_embedded(args.canvases)], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
