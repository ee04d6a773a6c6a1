"""``saccader init-config``: any class-folder tree of images as a Saccader experiment.

    saccader init-config my_images/ --out my.yaml [--minutes 30] [--image-size 64] [--seeds 5]
    snakemake --configfile my.yaml --cores 2 all

Inspects the tree (``train/<class>/`` and ``val/<class>/``, or one ``<class>/`` folder per class that it splits into
train and test with the salted hash of the ImageNet dev split, ``saccader.pipeline.data.folder.split_train_dev``, per
class), detects the classes and image sizes, and writes a complete config: the embedded recipes (config/embedded.yaml)
with
image size, high resolution, grid-dependent glimpse counts, DRAM glimpse sizes, batch sizes and epochs scaled to the
data and to a stated time on 2 CPU cores. Every choice is a comment in the file.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from pathlib import Path

import yaml

from saccader.errors import UserError

log = logging.getLogger("saccader.init-config")
__all__ = ["inspect_tree", "make_config", "render", "init_config", "register"]

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "config" / "embedded.yaml"
SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # what PIL decodes
# The embedded run (config/embedded.yaml): 5,000 training images of 64 px, 5 seeds, in about 18 minutes on 2 cores
# (README); a job's cost grows with images x pixels, so this is the yardstick of the budget.
REFERENCE = {"minutes": 18.3, "train_images": 5000, "image_size": 64, "seeds": 5}
JOB_SECONDS = 4.0  # start-up and data loading of one job (warm-started), paid however small the data
TEST_FRACTION = 0.15   # of each class, for a tree without val/ (the digits dataset holds out 15 % of sources)
DEV_FRACTION = 1 / 6   # of train/, as the embedded dataset (1,000 of 6,000)
MAX_EPOCH_SCALE = 4.0  # more passes than 4x the embedded recipe only add time on small data


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def check_name(name: str, what: str) -> str:
    """A name from the file system that goes into the config and its comments: printable characters only."""
    if not name.isprintable():  # line breaks, tabs, other control characters, undecodable bytes
        raise UserError(f"{what} {name!r} holds a line break or another control character",
                        "rename it with printable characters only")
    return name


def _classes(folder: Path) -> dict[str, list[Path]]:
    """class name -> its images; one class, an empty class or a class name that is not printable is a UserError."""
    classes = {check_name(d.name, "class folder"): _images(d) for d in sorted(folder.iterdir())
               if d.is_dir() and not d.name.startswith(".")}
    if len(classes) < 2:
        raise UserError(f"{folder} holds {len(classes)} class folder(s); a classifier needs at least 2",
                        f"put one sub-folder of images per class under {folder}")
    empty = [c for c, files in classes.items() if not files]
    if empty:
        raise UserError(f"class folder(s) {', '.join(str(folder / c) for c in empty[:3])} hold no image",
                        "add JPEG / PNG images to them or remove them")
    return classes


def inspect_tree(root, split_dir=None) -> dict:
    """Classes, per-split image lists and a sample of image sizes of ``root``; a tree without train/ and val/ is split
    into ``split_dir`` (symbolic links, nothing copied or moved)."""
    from saccader.pipeline.data.folder import split_train_dev

    root = Path(check_name(str(Path(root).resolve()), "folder"))
    if split_dir is not None:
        check_name(str(Path(split_dir).resolve()), "--split-dir")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder", "pass the folder holding one sub-folder of images per class")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, test = _classes(root / "train"), _classes(root / "val")
        if sorted(train) != sorted(test):
            diff = sorted(set(train) ^ set(test))[:5]
            raise UserError(f"train/ and val/ of {root} hold different class folders (e.g. {diff})",
                            "give both splits the same class folders")
        data_root, split = root, None
    else:
        every = _classes(root)
        if split_dir is None:
            raise UserError(f"{root} has no train/ and val/", "pass --split-dir DIR for the split tree")
        train, test = {}, {}
        for name, files in every.items():
            if len(files) < 2:
                raise UserError(f"class folder {root / name} holds {len(files)} image; a split needs 2 or more",
                                "add images to it or remove it")
            rel = [f"{name}/{p.name}" for p in files]
            n_test = max(1, round(TEST_FRACTION * len(files)))
            kept, held = split_train_dev(rel, n_test, salt="saccader-test")
            train[name] = [root / r for r in kept]
            test[name] = [root / r for r in held]
        data_root, split = Path(split_dir).resolve(), {"train": train, "val": test}
    return {"root": root, "data_root": data_root, "split": split, "classes": sorted(train),
            "train_files": [p for files in train.values() for p in files],
            "train": sum(len(v) for v in train.values()), "test": sum(len(v) for v in test.values()),
            "sizes": _sizes([p for files in train.values() for p in files])}


def _sizes(files: list[Path], limit: int = 256) -> list[tuple[int, int]]:
    """(width, height) of up to ``limit`` images spread over the list (headers only)."""
    from PIL import Image

    step = max(1, len(files) // limit)
    sizes = []
    for path in files[::step][:limit]:
        try:
            with Image.open(path) as img:
                sizes.append(img.size)
        except Exception as exc:  # noqa: BLE001 -- PIL raises many types for a bad file; each means "unreadable"
            raise UserError(f"cannot read image {path} ({type(exc).__name__}: {exc})",
                            "remove or replace the file") from None
    return sizes


def _write_split(info: dict) -> None:
    """The train/ val/ tree of a one-folder dataset as symbolic links to the original images."""
    for split, classes in info["split"].items():
        for name, files in classes.items():
            folder = info["data_root"] / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in files:
                link = folder / path.name
                if not link.is_symlink():
                    link.symlink_to(path)


def _mean_std(files: list[Path], size: int, limit: int = 128) -> tuple[list[float], list[float]]:
    """Per-channel mean and SD of up to ``limit`` training images after the eval transform (no standardisation)."""
    import torch

    from saccader.pipeline.data.folder import AppendixC
    from saccader.pipeline.data.images import open_image

    step = max(1, len(files) // limit)
    transform = AppendixC(size, train=False)
    batch = torch.stack([transform(open_image(p)) for p in files[::step][:limit]])
    return ([round(float(v), 3) for v in batch.mean(dim=(0, 2, 3))],
            [round(max(float(v), 1e-3), 3) for v in batch.std(dim=(0, 2, 3))])


def _grid(config: dict, size: int) -> tuple[int, int, int]:
    """(locations, receptive field q, stride) of the config's Saccader at ``size`` px."""
    from saccader.models import create

    model = create("saccader", 2, **config["models"]["saccader"])
    h, w = model.grid_size(size)
    return h * w, model.receptive_field, model.stride


def _name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "_", root.name.lower()).strip("_") or "images"
    return f"{name}_folder" if name in ("digits", "imagenet") else name


def make_config(info: dict, minutes: float = 30.0, image_size: int | None = None, seeds: int = 5,
                results_dir: str | None = None) -> tuple[dict, dict]:
    """(config, comments): the embedded config scaled to the data; ``comments`` maps dotted keys to why."""
    base = _embedded()
    why = {}
    config = {k: base[k] for k in ("results_dir", "seeds", "dataset", "models", "train", "evaluate", "attack",
                                   "executor")}
    short = sorted(min(w, h) for w, h in info["sizes"])
    median = short[len(short) // 2]
    n_classes = len(info["classes"])
    n_train_folder = info["train"]
    dev = max(n_classes, round(DEV_FRACTION * n_train_folder))
    n_train = n_train_folder - dev
    if n_train < 2 * n_classes:
        raise UserError(f"{info['root']} holds {n_train_folder} training images for {n_classes} classes; too few to "
                        "hold out a dev split and train", "add images (a few dozen per class at least)")
    # Image size: the embedded 64 px unless the images are smaller (never upscale much) or --image-size says.
    size = image_size or max(32, min(REFERENCE["image_size"], 8 * (median // 8)))
    locations, q, stride = _grid(config, size)
    if locations < 2:
        raise UserError(f"at {size} px the Saccader sees {locations} location(s) of {q} px",
                        "pass --image-size 48 or more")
    cost = (n_train / REFERENCE["train_images"]) * (size / REFERENCE["image_size"]) ** 2 * seeds / REFERENCE["seeds"]
    scale = min(MAX_EPOCH_SCALE, max(minutes, 1e-3) / (REFERENCE["minutes"] * cost))

    config["results_dir"] = results_dir or f"results-{_name(info['root'])}"
    why["results_dir"] = "its own results folder, so the embedded run's results stay apart"
    config["seeds"] = list(range(seeds))
    why["seeds"] = (f"{seeds} training seeds (the paper's 5); claims need 2 or more for their intervals"
                    if seeds > 1 else "one seed: the claims cannot be tested (no interval over seeds)")
    high = round(size * 331 / 224)
    mean, std = _mean_std(info["train_files"], size)
    pixels = sum(w * h for w, h in info["sizes"]) / len(info["sizes"]) * (info["train"] + info["test"]) * 3
    ds = {"name": _name(info["root"]), "root": str(info["data_root"]), "num_classes": n_classes, "label_offset": 0,
          "image_size": size, "high_res_size": high, "dev_size": dev, "mean": mean, "std": std,
          "crop_padding_fraction": 0.0, "train_crop_scale": [0.35, 1.0], "hflip": True, "num_workers": 0,
          "cache_images": pixels < 2e9}
    why.update({
        "dataset.name": "labels the figures and tables (any name but digits, the dataset the workflow builds)",
        "dataset.root": ("train/ and val/ as symbolic links to the images of " + str(info["root"]) +
                         f" (per class, {TEST_FRACTION:.0%} to val/ by the salted hash of the dev split)"
                         if info["split"] else "your train/ and val/ folders"),
        "dataset.num_classes": f"class folders: {', '.join(info['classes'][:8])}" +
                               (", ..." if n_classes > 8 else "") + f" (chance top-1 {1 / n_classes:.1%})",
        "dataset.label_offset": "no background class (ImageNet's official code has one)",
        "dataset.image_size": (f"--image-size" if image_size else
                               f"the embedded 64 px, or less when the images are smaller (median short side "
                               f"{median} px of {len(short)} sampled; sizes {short[0]}-{short[-1]} px)"),
        "dataset.high_res_size": f"image_size x 331 / 224 (the paper's NASNet-331 resolution ratio)",
        "dataset.dev_size": f"{DEV_FRACTION:.0%} of train/ held out for dev (the embedded share): {n_train} train, "
                            f"{dev} dev, {info['test']} test images",
        "dataset.mean": f"per-channel mean of {min(128, n_train_folder)} training images after the eval transform",
        "dataset.std": "their per-channel SD",
        "dataset.crop_padding_fraction": "eval: the centre square of the short side, whole (the paper's 0.1 trims "
                                         "ImageNet's margins); non-square images lose their sides",
        "dataset.train_crop_scale": "random crops of 35-100% of the area (paper 8-100% for ImageNet's large "
                                    "objects, embedded 85-100% for whole digits): raise it if objects are small",
        "dataset.hflip": "mirrored photos keep their class; set false for symbols or text",
        "dataset.cache_images": "decode once and keep the decoded images in <root>/.decoded-<split>.pt "
                                f"({pixels / 1e9:.1f} GB of pixels; off above 2 GB)",
    })
    config["dataset"] = ds

    # Glimpse geometry follows the network's grid at this size: T never exceeds the locations.
    t_max, t_train = min(base["evaluate"]["max_glimpses"], locations), min(base["evaluate"]["train_glimpses"],
                                                                           locations)
    config["evaluate"] = {**base["evaluate"], "max_glimpses": t_max, "train_glimpses": t_train,
                          "examples": min(base["evaluate"]["examples"], info["test"])}
    config["attack"] = {**base["attack"], "subset_size": min(base["attack"]["subset_size"], info["test"]),
                        "num_glimpses": t_train}
    why["evaluate.max_glimpses"] = f"T = 1..{t_max} (the paper's 12, at most the {locations} locations)"
    why["evaluate.train_glimpses"] = f"the paper's 6 (at most the {locations} locations)"
    why["models"] = (f"the embedded networks, unchanged: the BagNet's receptive field q = {q} px at stride {stride} "
                     f"gives {locations} locations at {size} px (q / image = {q / size:.2f}; paper 77 / 224 = 0.34)")

    batch = 64
    while batch > 8 and n_train < 4 * batch:  # at least 4 steps an epoch
        batch //= 2
    why["train"] = (f"the embedded recipes; epochs x {scale:.2f} for about {minutes:g} minutes on 2 cores (the "
                    f"embedded run: {REFERENCE['minutes']} min for {REFERENCE['train_images']} images of "
                    f"{REFERENCE['image_size']} px, {REFERENCE['seeds']} seeds; cost ~ images x pixels x seeds = "
                    f"{cost:.2f} of it), at least 1 epoch, at most {MAX_EPOCH_SCALE:g}x; warm-up keeps its share of "
                    f"the epochs; batch {batch} where the data is small (lr scaled linearly with it)")
    for run, rec in config["train"].items():
        rec = dict(rec)
        e0 = rec["epochs"]
        epochs = max(1, round(e0 * scale))
        rec["epochs"] = epochs
        rec["warmup_epochs"] = round(rec["warmup_epochs"] * epochs / e0, 3)
        if rec["batch_size"] > batch:
            rec["lr"] = float(f"{rec['lr'] * batch / rec['batch_size']:.3g}")
            rec["batch_size"] = batch
        if "eval_every" in rec:
            rec["eval_every"] = epochs
        if rec.get("lr_decay"):  # the paper's x0.975 per epoch over 156 epochs, compressed into these epochs
            rec["lr_decay"] = round(0.975 ** (156 / epochs), 3)
        if rec.get("drop_path_epochs"):
            rec["drop_path_epochs"] = round(250 / 156 * epochs, 2)
        if "num_glimpses" in rec and rec["model"] != "dram":
            rec["num_glimpses"] = min(rec["num_glimpses"], locations)
        if rec.get("eval_glimpses"):
            rec["eval_glimpses"] = min(rec["eval_glimpses"], locations)
        if rec.get("glimpse_size"):  # DRAM pre-training glimpses keep their share of the image (200 and 77 of 224)
            rec["glimpse_size"] = max(q, round(rec["glimpse_size"] * size / REFERENCE["image_size"]))
        config["train"][run] = rec
    config["models"]["dram"] = {**config["models"]["dram"], "glimpse_size": q}
    why["models.dram.glimpse_size"] = "DRAM's glimpse = the BagNet's q, as the paper's 77 px"
    from saccader.catalog import EVALUATIONS

    jobs = (len(config["train"]) + sum(len(m) for m in EVALUATIONS.values()) + 4) * seeds + 15
    config["estimated_minutes"] = round(REFERENCE["minutes"] * cost * scale + jobs * JOB_SECONDS / 60, 1)
    return config, why


def _merge(base: dict, overlay: dict) -> dict:
    """Snakemake's --configfile merge: mappings recursively, everything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _embedded() -> dict:
    """The embedded experiment as one config: config/embedded.yaml over config.yaml (the same as embedded.yaml alone
    where it is a complete config, and what the workflow reads where it is an overlay)."""
    return _merge(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(EMBEDDED.read_text()))


def _comment(text: str) -> str:
    """``text`` as one comment line: a file name's control characters cannot start a line of YAML."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _entry(key: str, value, comment: str | None = None, indent: int = 0) -> list[str]:
    """``key: value`` written by PyYAML, the comment beside a one-line entry or above a longer one."""
    from yaml.representer import SafeRepresenter

    node = SafeRepresenter(default_flow_style=True).represent_data({key: value})
    node.flow_style = False  # block `key:`, its value in flow style
    text = yaml.serialize(node, Dumper=yaml.SafeDumper, width=float("inf"), allow_unicode=True)
    lines = [" " * indent + line for line in text.splitlines()]
    if comment is None:
        return lines
    if len(lines) == 1:
        return [f"{lines[0]}  # {_comment(comment)}"]
    return [" " * indent + f"# {_comment(comment)}", *lines]


def render(config: dict, why: dict, info: dict) -> str:
    """The config as YAML written by PyYAML, every choice in a comment beside its key; reading it back gives
    ``config`` exactly (checked)."""
    minutes = config.pop("estimated_minutes")
    lines = [_comment(f"# Generated by `saccader init-config {info['root']}` on {datetime.date.today()}: the "
                      "embedded recipes (config/embedded.yaml)"),
             f"# scaled to {len(info['classes'])} classes, {info['train']} train/ and {info['test']} test images; "
             f"estimated {minutes:g} minutes on 2 CPU cores.",
             "# A complete config (as an overlay merged over config.yaml it sets every key: the same). Run:",
             "#   snakemake --configfile THIS_FILE --cores 2 all",
             *_entry("results_dir", config["results_dir"], why["results_dir"]),
             *_entry("seeds", config["seeds"], why["seeds"]), "dataset:"]
    for key, value in config["dataset"].items():
        lines += _entry(key, value, why.get(f"dataset.{key}"), indent=2)
    lines += [_comment(f"# models: {why['models']}"), "models:"]
    for name, overrides in config["models"].items():
        lines += _entry(name, overrides, why.get(f"models.{name}.glimpse_size") if name == "dram" else None, 2)
    lines += [_comment(f"# train: {why['train']}"), "train:"]
    for run, rec in config["train"].items():
        lines += _entry(run, rec, indent=2)
    lines.append("# evaluate, attack, executor: the embedded values (config/embedded.yaml says why), except where "
                 "a comment says otherwise")
    for section in ("evaluate", "attack", "executor"):
        lines.append(f"{section}:")
        for key, value in config[section].items():
            lines += _entry(key, value, why.get(f"{section}.{key}"), indent=2)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != config:  # a bug here, never the user's: no file is written
        raise RuntimeError("init-config rendered a YAML file that does not read back as its config")
    return text


def init_config(root, out, minutes: float = 30.0, image_size: int | None = None, seeds: int = 5,
                split_dir=None, force: bool = False) -> Path:
    """Inspect ``root`` and write the config to ``out`` (never over an existing file unless ``force``)."""
    from saccader.pipeline.config import validate
    from saccader.pipeline.io import write_text

    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; it names the config file to write",
                        f"pass a file name such as --out {out / 'config.yaml'}")
    if out.exists() and not force:
        raise UserError(f"{out} exists", "choose another --out, or pass --force to replace it")
    split_dir = Path(split_dir) if split_dir else out.with_name(f"{out.stem}-data")
    info = inspect_tree(root, split_dir)
    config, why = make_config(info, minutes, image_size, seeds)
    text = render(config, why, info)
    validate(yaml.safe_load(text), str(out))  # what the workflow will read
    if info["split"]:
        _write_split(info)
    write_text(out, text)
    log.info("wrote %s for %d classes (%d train/, %d test images) at %d px%s", out, len(info["classes"]),
             info["train"], info["test"], config["dataset"]["image_size"],
             f"; train/ val/ links in {info['data_root']}" if info["split"] else "")
    print(f"wrote {out}; run: snakemake --configfile {out} --cores 2 all")
    return out


def _run(args) -> int:
    init_config(args.root, args.out, args.minutes, args.image_size, args.seeds, args.split_dir, args.force)
    return 0


def register(subparsers) -> None:
    from saccader.models.bundle import MAX_IMAGE_SIZE
    from saccader.pipeline.cli_types import integer, number

    p = subparsers.add_parser("init-config", help="write a config for your own class-folder tree of images",
                              description=__doc__.splitlines()[0])
    p.add_argument("root", help="train/<class>/ + val/<class>/, or one <class>/ folder per class (split here)")
    p.add_argument("--out", required=True, help="config file to write (not overwritten unless --force)")
    p.add_argument("--minutes", type=number(0, low_open=True), default=30.0,
                   help="time budget on 2 CPU cores (default 30)")
    p.add_argument("--image-size", type=integer(8, MAX_IMAGE_SIZE), default=None,
                   help="input size in px (default: 64, or less for small images)")
    p.add_argument("--seeds", type=integer(1), default=5, help="training seeds (default 5, the paper's)")
    p.add_argument("--split-dir", default=None,
                   help="where a one-folder tree's train/ val/ links go (default: <out stem>-data beside --out)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run)
