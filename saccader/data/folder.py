"""ImageFolder data in ImageNet's layout: splits, preprocessing (Appendix C) and ``saccader check-data``.

Layout: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (ImageNet val already sorted into class folders).
Splits as in the paper: ``train`` and ``dev`` are carved out of ``train/`` (dev = ``dataset.dev_size`` images chosen
by a hash of their relative path, so the split is identical on every machine); ``test`` is ``val/``, the reporting
split, never used for training or tuning.

Preprocessing (Appendix C and the official data provider): training = random crop inside the image (Inception-style
area/aspect sampling) + bicubic resize to the model's resolution (+ optional horizontal flip); evaluation = centre crop
of ``size / (size + padding)`` of the short side + bicubic resize; then subtract the mean and divide by the std.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from saccader.errors import UserError

log = logging.getLogger("saccader.data")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = {"train": "train", "dev": "train", "test": "val"}
# dataset keys that say how images are loaded, never which: changing one changes no result (no Snakemake rerun,
# checkpoints stay resumable)
LOADING_KEYS = ("num_workers", "cache_images")


def split_train_dev(relpaths, dev_size: int, salt: str = "saccader-dev") -> tuple[list[str], list[str]]:
    """Deterministic train/dev split of ``train/`` (Section 3.2): the ``dev_size`` paths with the smallest salted
    SHA-1 of their relative path form dev. Stable across machines and independent of listing order."""
    keyed = sorted(relpaths, key=lambda p: hashlib.sha1(f"{salt}:{p}".encode()).hexdigest())
    dev = set(keyed[:dev_size])
    return [p for p in relpaths if p not in dev], [p for p in relpaths if p in dev]


def _check_layout(root: Path, num_classes: int | None = None) -> list[str]:
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist",
                        "set dataset.root in the config to your ImageNet folder (with train/ and val/), or run "
                        "`saccader make-dataset` for the embedded dataset")
    classes = None
    for folder in ("train", "val"):
        split = root / folder
        if not split.is_dir():
            raise UserError(f"split folder {split} is missing",
                            f"{root} must hold train/<class>/ and val/<class>/ (ImageNet layout)")
        found = sorted(d.name for d in os.scandir(split) if d.is_dir())
        if classes is None:
            classes = found
        elif found != classes:
            diff = sorted(set(found) ^ set(classes))[:5]
            raise UserError(f"train/ and val/ of {root} hold different class folders (e.g. {diff})",
                            "both splits need the same class folders")
    if num_classes is not None and len(classes) != num_classes:
        raise UserError(f"{root}/train holds {len(classes)} class folders but the config expects {num_classes}",
                        "fix dataset.num_classes / label_offset in the config or point dataset.root at the right "
                        "folder")
    return classes


def list_split(config: dict, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Return ``([(path, label), ...], classes)`` for split ``train``, ``dev`` or ``test``."""
    if split not in SPLIT_FOLDERS:
        raise UserError(f"unknown split {split!r}", "use train, dev or test")
    ds = config["dataset"]
    root = Path(ds["root"])
    classes = _check_layout(root, ds["num_classes"] - ds["label_offset"])
    folder = SPLIT_FOLDERS[split]
    rel = []
    for label, name in enumerate(classes):
        files = sorted(f.name for f in os.scandir(root / folder / name) if f.is_file())
        if not files:
            raise UserError(f"class folder {root / folder / name} is empty", "every class needs images")
        rel += [(f"{folder}/{name}/{f}", label + ds["label_offset"]) for f in files]
    if folder == "train":
        train, dev = split_train_dev([p for p, _ in rel], ds["dev_size"])
        keep = set(dev if split == "dev" else train)
        rel = [(p, y) for p, y in rel if p in keep]
    return [(str(root / p), y) for p, y in rel], classes


def build_transform(config: dict, train: bool, resolution: int | None = None, normalize: bool = True):
    """Appendix C preprocessing: an image (PIL or uint8 (3, H, W) tensor) -> float tensor (3, size, size)."""
    ds = config["dataset"]
    return AppendixC(resolution or ds["image_size"], train, tuple(ds["train_crop_scale"]), ds["hflip"],
                     1.0 / (1.0 + ds["crop_padding_fraction"]),  # 224 / (224 + 22) in the official code
                     (ds["mean"], ds["std"]) if normalize else None)


class AppendixC:
    """Training: Inception-style random crop (area ``crop_scale``, aspect 3/4..4/3) + bicubic resize (+ flip);
    evaluation: centre square crop of ``eval_fraction`` of the short side + bicubic resize; then [0, 1] floats,
    standardised by ``mean_std``.

    torchvision's functional kernels called in sequence, bitwise the output of the equivalent ``v2.Compose``
    (``reference_compose``, tested) with the same random draws. Not the Compose itself: its per-transform dispatch
    is a third of the cost of a 64 px embedded image, and data loading a quarter of a small model's epoch on CPU.
    """

    def __init__(self, size: int, train: bool, crop_scale=(0.08, 1.0), hflip: bool = True,
                 eval_fraction: float = 1.0, mean_std: tuple | None = None):
        self.size, self.train, self.crop_scale, self.hflip = size, train, crop_scale, hflip
        self.eval_fraction, self.mean_std = eval_fraction, mean_std
        self._center = _CenterFraction(eval_fraction)

    def __call__(self, img):
        import torch
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if not isinstance(img, torch.Tensor):
            img = F.pil_to_tensor(img)
        bicubic = InterpolationMode.BICUBIC
        if self.train:
            top, left, h, w = RandomResizedCrop.get_params(img, self.crop_scale, (3 / 4, 4 / 3))
            img = F.resized_crop(img, top, left, h, w, [self.size, self.size], interpolation=bicubic, antialias=True)
            if self.hflip and torch.rand(1) < 0.5:  # v2.RandomHorizontalFlip's draw
                img = F.horizontal_flip(img)
        else:
            img = F.resize(self._center(img), [self.size, self.size], interpolation=bicubic, antialias=True)
        img = F.to_dtype(img, torch.float32, scale=True)
        return F.normalize(img, *self.mean_std) if self.mean_std else img

    def reference_compose(self):
        """The same preprocessing as a torchvision ``v2.Compose`` (what the tests compare against)."""
        import torch
        from torchvision.transforms import v2

        steps = [v2.ToImage()]
        if self.train:
            steps.append(v2.RandomResizedCrop(self.size, scale=self.crop_scale, ratio=(3 / 4, 4 / 3),
                                              interpolation=v2.InterpolationMode.BICUBIC, antialias=True))
            if self.hflip:
                steps.append(v2.RandomHorizontalFlip())
        else:
            steps += [self._center,
                      v2.Resize((self.size, self.size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if self.mean_std:
            steps.append(v2.Normalize(*self.mean_std))
        return v2.Compose(steps)


class _CenterFraction:
    """Centre square crop whose side is ``fraction`` of the short side (the official eval crop)."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        side = max(1, int(round(self.fraction * min(h, w))))
        return F.center_crop(img, [side, side])


def _load_rgb(path: str):
    """(3, H, W) uint8 RGB tensor of the image file (PIL decodes: it reads every extension listed above)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    with open(path, "rb") as f:
        img = Image.open(f)
        return pil_to_tensor(img.convert("RGB"))


class FolderDataset:
    """A map-style dataset of ``(image tensor, label)`` over a split; the same class serves ImageNet and digits.

    ``cache=True`` keeps every decoded image in memory after its first read (``dataset.cache_images``: the
    embedded canvases, 12 KB each; each DataLoader worker holds its own copy). Off for ImageNet.
    """

    def __init__(self, samples, transform, cache: bool = False):
        self.samples = samples
        self.transform = transform
        self.targets = [y for _, y in samples]
        self._decoded = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int):
        if self._decoded is not None and index in self._decoded:
            return self._decoded[index]
        path = self.samples[index][0]
        try:
            img = _load_rgb(path)
        except OSError as exc:
            raise UserError(f"cannot read image {path} ({exc})",
                            "run `saccader check-data` and remove or replace the file") from None
        if self._decoded is not None:
            self._decoded[index] = img
        return img

    def __getitem__(self, index: int):
        return self.transform(self._image(index)), self.samples[index][1]


def build_dataset(config: dict, split: str, train: bool = False, resolution: int | None = None,
                  normalize: bool = True) -> FolderDataset:
    """The dataset of ``split`` (train / dev / test) with training or evaluation preprocessing.

    ``resolution`` defaults to ``dataset.image_size``; pass ``dataset.high_res_size`` for the 331 experiments.
    ``normalize=False`` keeps pixels in [0, 1] (the attacks standardise inside the attacked model).
    """
    samples, _ = list_split(config, split)
    return FolderDataset(samples, build_transform(config, train, resolution, normalize),
                         cache=config["dataset"].get("cache_images", False))


def _verify(path: str) -> str | None:
    """Return None if ``path`` decodes as an image, else the reason."""
    from PIL import Image

    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file (unknown extension)"
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:  # verify() does not decode pixel data: a truncated file passes it
            img.load()
    except Exception as exc:  # PIL raises many types for bad files; every one means "unreadable"
        return f"{type(exc).__name__}: {exc}"
    return None


def check_data(config: dict, root: str | None = None, workers: int = 1) -> dict:
    """Verify an ImageFolder tree: layout, class count, images per split, unreadable/corrupt/non-image files.

    Returns a report dict; raises ``UserError`` (after printing every bad file) when anything is wrong.
    """
    from tqdm import tqdm

    ds = dict(config["dataset"])
    if root is not None:
        ds["root"] = root
    conf = {**config, "dataset": ds}
    root_path = Path(ds["root"])
    classes = _check_layout(root_path, ds["num_classes"] - ds["label_offset"])
    counts = {}
    paths = []
    for split in ("train", "dev", "test"):
        samples, _ = list_split(conf, split)
        counts[split] = len(samples)
        paths += [p for p, _ in samples]
    paths = sorted(paths)
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
        reasons = list(tqdm(pool.map(_verify, paths, chunksize=256), total=len(paths), desc="check-data",
                            unit="img", mininterval=2))
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    report = {"root": str(root_path), "classes": len(classes), "images": counts, "bad": bad}
    print(f"check-data: {root_path}: {len(classes)} classes; train {counts['train']}, dev {counts['dev']}, "
          f"test (val/) {counts['test']} images")
    if bad:
        for path, reason in bad:  # to stderr, so the tail a failed job shows in the Snakemake log holds the list
            print(f"  unreadable: {path}: {reason}", file=sys.stderr)
        raise UserError(f"{len(bad)} unreadable or non-image files under {root_path} (listed above)",
                        "delete or replace them, then rerun check-data; training refuses to start until it passes")
    print("check-data: all images readable")
    return report


class _Serial:
    """``map`` in this process (a pool of one is slower than none)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def _run(args) -> int:
    from saccader import config as cfg

    config = cfg.load(args.config)
    check_data(config, args.root, workers=args.workers)
    if args.stamp:
        from saccader.io import write_text

        write_text(args.stamp, "ok\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("check-data", help="verify an ImageFolder dataset (layout, classes, corrupt files)")
    p.add_argument("root", nargs="?", default=None, help="dataset root (default: dataset.root of the config)")
    p.add_argument("--config", required=True, help="experiment config")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding images")
    p.add_argument("--stamp", default=None, help="file written (atomically) when the check passes")
    p.set_defaults(func=_run)
