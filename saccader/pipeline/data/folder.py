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
import math
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from saccader.errors import UserError

log = logging.getLogger("saccader.pipeline.data")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = {"train": "train", "dev": "train", "test": "val"}
from saccader.pipeline.config import LOADING_KEYS  # noqa: E402,F401 (how images are loaded, never which)


def split_train_dev(relpaths, dev_size: int, salt: str = "saccader-dev") -> tuple[list[str], list[str]]:
    """Deterministic train/dev split of ``train/`` (Section 3.2): the ``dev_size`` paths with the smallest salted
    SHA-1 of their relative path form dev. Stable across machines and independent of listing order."""
    keyed = sorted(relpaths, key=lambda p: hashlib.sha1(f"{salt}:{p}".encode()).hexdigest())
    dev = set(keyed[:dev_size])
    return [p for p in relpaths if p not in dev], [p for p in relpaths if p in dev]


def class_folders(root: Path, num_classes: int | None = None) -> list[str]:
    """The class names of an ImageFolder root: the folders of train/, the same as val/'s; else a UserError."""
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
    classes = class_folders(root, ds["num_classes"] - ds["label_offset"])
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


def build_transform(config: dict, train: bool, resolution: int | None = None, normalize: bool = True,
                    uint8: bool = False):
    """Appendix C preprocessing: an image (PIL or uint8 (3, H, W) tensor) -> float tensor (3, size, size), or the
    cropped and resized uint8 tensor when ``uint8`` (standardised later, on the device, by :class:`Standardize`)."""
    ds = config["dataset"]
    return AppendixC(resolution or ds["image_size"], train, tuple(ds["train_crop_scale"]), ds["hflip"],
                     1.0 / (1.0 + ds["crop_padding_fraction"]),  # 224 / (224 + 22) in the official code
                     (ds["mean"], ds["std"]) if normalize else None, uint8=uint8)


class Standardize:
    """The last two steps of :class:`AppendixC` on a uint8 batch (N, 3, H, W), on the batch's device: [0, 1] floats,
    then ``(x - mean) / std``. The same float32 operations in the same order, so bitwise the transform's output.
    Loaders send uint8 (a quarter of the bytes of float32 through the workers' queues and the host-to-GPU copy)."""

    def __init__(self, mean, std):
        import torch

        self._mean_std = tuple(torch.tensor(v).view(-1, 1, 1) for v in (mean, std))
        self._device = {}

    def __call__(self, images):
        import torch

        if images.device not in self._device:
            self._device[images.device] = tuple(v.to(images.device) for v in self._mean_std)
        mean, std = self._device[images.device]
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


class AppendixC:
    """Training: Inception-style random crop (area ``crop_scale``, aspect 3/4..4/3) + bicubic resize (+ flip);
    evaluation: centre square crop of ``eval_fraction`` of the short side + bicubic resize; then [0, 1] floats,
    standardised by ``mean_std``.

    torchvision's kernels (``resize_image`` & co.) called in sequence, bitwise the output of the equivalent
    ``v2.Compose`` (``reference_compose``, tested) with the same random draws. Not the Compose itself, nor the
    dispatching functionals: their per-call overhead was most of the cost of a 64 px embedded image, and the data
    path a quarter to a half of a small model's epoch on CPU (bench/data_path.py). ``generator`` draws the crop and
    flip from a given ``torch.Generator`` instead of the global one (the same draws for the same seed).
    """

    def __init__(self, size: int, train: bool, crop_scale=(0.08, 1.0), hflip: bool = True,
                 eval_fraction: float = 1.0, mean_std: tuple | None = None, uint8: bool = False):
        import torch

        self.size, self.train, self.crop_scale, self.hflip, self.uint8 = size, train, crop_scale, hflip, uint8
        self.eval_fraction, self.mean_std = eval_fraction, mean_std
        self._center = _CenterFraction(eval_fraction)
        self._log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3))).tolist()  # get_params' float32 bounds
        self._mean_std = tuple(torch.tensor(v).view(-1, 1, 1) for v in mean_std) if mean_std else None

    def __call__(self, img, generator=None):
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if not isinstance(img, torch.Tensor):
            img = F.pil_to_tensor(img)
        if self.train:
            top, left, h, w = self.crop_params(img.shape[-2], img.shape[-1], generator)
            img = F.resize_image(img[..., top:top + h, left:left + w], [self.size, self.size],
                                 interpolation=InterpolationMode.BICUBIC, antialias=True)
            if self.hflip and torch.rand(1, generator=generator) < 0.5:  # v2.RandomHorizontalFlip's draw
                img = img.flip(-1)
        else:
            img = F.resize_image(self._center(img), [self.size, self.size],
                                 interpolation=InterpolationMode.BICUBIC, antialias=True)
        if self.uint8:
            return img
        img = img.to(torch.float32).mul_(1.0 / 255)  # v2.ToDtype(float32, scale=True)
        if self._mean_std is None:
            return img
        mean, std = self._mean_std
        return img.sub_(mean).div_(std)  # v2.Normalize

    def crop_params(self, height: int, width: int, generator=None) -> tuple[int, int, int, int]:
        """``RandomResizedCrop.get_params`` (top, left, h, w): the same algorithm and the same random draws, from
        ``generator`` (default: the global one)."""
        import torch

        area = height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.crop_scale, generator=generator).item()
            aspect_ratio = torch.exp(torch.empty(1).uniform_(*self._log_ratio, generator=generator)).item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
                left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
                return top, left, h, w
        in_ratio = width / height  # fallback: the central crop of the widest allowed aspect
        if in_ratio < 3 / 4:
            w, h = width, int(round(width / (3 / 4)))
        elif in_ratio > 4 / 3:
            w, h = int(round(height * (4 / 3))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

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


def load_rgb(path: str):
    """(3, H, W) uint8 RGB tensor of the image file (PIL decodes: it reads every extension listed above)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    from saccader.pipeline.data.images import to_rgb

    with open(path, "rb") as f:
        img = Image.open(f)
        return pil_to_tensor(to_rgb(img))


PACK = ".decoded-{split}.pt"  # a split's decoded images, in the dataset folder
# The packs and what a kill leaves of their atomic writes: derived files a dataset's builder may delete with it.
PACK_FILES = re.compile(r"\.?\.decoded-[a-z]+\.pt(\.[a-z0-9_]{8}\.tmp)?")


class FolderDataset:
    """A map-style dataset of ``(image tensor, label)`` over a split; the same class serves ImageNet and digits.

    ``cache=True`` (``dataset.cache_images``; off for ImageNet) decodes the whole split into memory at the first
    read, and with ``pack`` keeps it in that one file as well, so the next job loads it in a fraction of a second
    instead of decoding every image again: the 145 jobs of the embedded run read the same three splits. The file
    holds a digest of the split's file list (paths, sizes, mtimes) and is rebuilt when the images change; a pack
    that cannot be written (read-only dataset folder) is skipped with a log line. Each DataLoader worker holds its
    own copy.
    """

    def __init__(self, samples, transform, cache: bool = False, pack: str | os.PathLike | None = None):
        self.samples = samples
        self.transform = transform
        self.targets = [y for _, y in samples]
        self.cache, self.pack = cache, Path(pack) if cache and pack else None
        self._decoded = None

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int):
        path = self.samples[index][0]
        try:
            return load_rgb(path)
        except OSError as exc:
            raise UserError(f"cannot read image {path} ({exc})",
                            "run `saccader check-data` and remove or replace the file") from None

    def _decode_all(self) -> list:
        from saccader.pipeline import io

        digest = _files_digest(p for p, _ in self.samples) if self.pack else None
        if self.pack and self.pack.exists():
            try:
                stored = io.torch_load(self.pack)
                if stored.get("digest") == digest:
                    return list(stored["images"])
            except Exception as exc:  # noqa: BLE001 -- a bad pack (killed write elsewhere, old format) is rebuilt
                log.warning("decoded-image pack %s unreadable (%s); decoding the images again", self.pack, exc)
        from tqdm import tqdm

        tick = time.perf_counter()
        images = [self._read(i) for i in tqdm(range(len(self.samples)), desc="decode", unit="img", leave=False,
                                               mininterval=10)]
        log.info("decoded %d images in %.1f s", len(images), time.perf_counter() - tick)
        if self.pack:
            import torch

            same = len({tuple(x.shape) for x in images}) == 1  # one tensor: a fast load (ImageNet's sizes vary)
            try:
                io.torch_save({"digest": digest, "images": torch.stack(images) if same else images}, self.pack)
            except (OSError, UserError) as exc:
                log.info("decoded images not packed to %s (%s); each job decodes them", self.pack, exc)
        return images

    def _image(self, index: int):
        if not self.cache:
            return self._read(index)
        if self._decoded is None:
            self._decoded = self._decode_all()
        return self._decoded[index]

    def get(self, index: int, generator=None):
        """Item ``index``, its random augmentation drawn from ``generator`` (default: the global generator)."""
        return self.transform(self._image(index), generator), self.samples[index][1]

    def __getitem__(self, index: int):
        return self.get(index)


PACK_FORMAT = "rgb-uint8-chw/1"  # what the pack holds (``load_rgb``'s output); a new decoder gets a new value


def _files_digest(paths) -> str:
    """SHA-1 of the pack format and the paths, sizes and modification times: changes when any image file does."""
    h = hashlib.sha1(PACK_FORMAT.encode())
    for path in paths:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_dataset(config: dict, split: str, train: bool = False, resolution: int | None = None,
                  normalize: bool = True, uint8: bool = False) -> FolderDataset:
    """The dataset of ``split`` (train / dev / test) with training or evaluation preprocessing.

    ``resolution`` defaults to ``dataset.image_size``; pass ``dataset.high_res_size`` for the 331 experiments.
    ``normalize=False`` keeps pixels in [0, 1] (the attacks standardise inside the attacked model); ``uint8=True``
    gives the uint8 images before that step (:class:`Standardize` completes it on the device).
    """
    samples, _ = list_split(config, split)
    return FolderDataset(samples, build_transform(config, train, resolution, normalize, uint8),
                         cache=config["dataset"].get("cache_images", False),
                         pack=Path(config["dataset"]["root"]) / PACK.format(split=split))


def _verify(path: str) -> str | None:
    """Return None if ``path`` decodes as an image, else the reason."""
    from PIL import Image

    from saccader.pipeline.data.images import ImageError, open_checked

    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file (unknown extension)"
    try:
        with open_checked(path) as img:  # the pixel budget, from the header: training would decode it whole
            img.verify()
        with Image.open(path) as img:  # verify() does not decode pixel data: a truncated file passes it
            img.load()
    except ImageError as exc:
        return str(exc)
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
    classes = class_folders(root_path, ds["num_classes"] - ds["label_offset"])
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
    from saccader.pipeline import config as cfg

    config = cfg.load(args.config)
    check_data(config, args.root, workers=args.workers)
    if args.stamp:
        from saccader.pipeline.io import write_text

        write_text(args.stamp, "ok\n")
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer
    from saccader.pipeline.config import add_config_argument

    p = subparsers.add_parser("check-data", help="verify an ImageFolder dataset (layout, classes, corrupt files)")
    p.add_argument("root", nargs="?", default=None, help="dataset root (default: dataset.root of the config)")
    add_config_argument(p)
    p.add_argument("--workers", type=integer(1), default=os.cpu_count() or 1, help="processes decoding images")
    p.add_argument("--stamp", default=None, help="file written (atomically) when the check passes")
    p.set_defaults(func=_run)
