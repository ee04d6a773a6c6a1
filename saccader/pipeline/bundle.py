"""Self-describing model bundles: ``model.pt`` plus a ``card.json`` beside it, loadable with no config at hand.

    model = saccader.models.load("results/runs/saccader/seed0")     # folder, model.pt or card.json
    model.card["class_names"], model.card["input"]["image_size"]

The card holds what rebuilding and feeding the network needs (registry name and constructor overrides, classes and
label offset, input size and normalisation, memory format) and what identifies it (run, seed, fingerprint of the
recipe, dev accuracy, package and code version). Test accuracy is the evaluation job's: the card points at the
parquet that job writes (``test_results``, relative to the card) rather than having a later job rewrite a training
output. Every training run writes its card last (``saccader.pipeline.train.train``); ``saccader card`` writes one for a
run trained before cards existed. Reading a bundle needs no config and lives with the models
(``saccader.models.bundle``: ``read_card``, ``load``, ``class_label``, re-exported here).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from saccader.errors import UserError
from saccader.models.bundle import CARD, FORMAT, _paths, class_label, load, read_card  # noqa: F401

log = logging.getLogger("saccader.pipeline.bundle")
__all__ = ["FORMAT", "CARD", "make_card", "write_card", "read_card", "load", "test_top1", "class_label", "register"]

def _test_pointer(config: dict, run: str, seed: int) -> dict | None:
    """Where the workflow's evaluation job puts this run's test accuracy (``workflow/rules/evaluate.smk``)."""
    from saccader.pipeline.evaluate import JOBS

    rec = config["train"][run]
    if run in JOBS["glimpses"]:
        kind, model = "glimpses", run
        policy = "dram" if rec["model"] == "dram" else ("ordered_logits" if run == "bagnet77_lowd" else "saccader")
    elif run in JOBS["full_image"]:
        kind, model, policy = "full_image", run, "full_image"
    elif rec["stage"] == "glimpse_finetune":
        kind, model, policy = "nasnet", "saccader_nasnet", "saccader"
    else:
        return None
    return {"parquet": f"../../../eval/{kind}/{model}/seed{seed}.parquet", "policy": policy}


def make_card(config: dict, run: str, seed: int, dev_top1: float | None, dev_top5: float | None) -> dict:
    """The card of training run ``run`` / ``seed`` under ``config`` (its dataset must be readable: class names)."""
    from saccader import __version__
    from saccader.pipeline import results
    from saccader.pipeline.data.folder import _check_layout
    from saccader.models import config_overrides
    from saccader.pipeline.train import _resolution, fingerprint, recipe

    rec, ds = recipe(config, run), config["dataset"]
    classes = _check_layout(Path(ds["root"]))
    return {
        "format": FORMAT, "saccader_version": __version__, "code_version": results.code_version(),
        "run": run, "seed": seed, "stage": rec["stage"], "model": rec["model"],
        "overrides": config_overrides(rec["model"], config),
        "num_classes": ds["num_classes"], "label_offset": ds["label_offset"], "class_names": classes,
        "dataset": ds["name"],
        "input": {"image_size": ds["image_size"], "resolution": _resolution(config, rec),
                  "high_res_size": ds["high_res_size"], "crop_padding_fraction": ds["crop_padding_fraction"],
                  "mean": list(ds["mean"]), "std": list(ds["std"])},
        "glimpses": rec.get("eval_glimpses", rec.get("num_glimpses")),
        "channels_last": rec.get("channels_last"),
        "fingerprint": fingerprint(config, run),
        "dev_top1": dev_top1, "dev_top5": dev_top5,
        "test_results": _test_pointer(config, run, seed),
    }


def write_card(config: dict, run: str, seed: int, out, dev_top1: float | None = None,
               dev_top5: float | None = None) -> Path:
    """Write ``out/card.json`` atomically; returns its path."""
    from saccader.pipeline.io import write_text

    def finite(v):  # a run evaluated on dev only every few epochs logs NaN in between
        return None if v is None or math.isnan(v) else float(v)

    path = Path(out) / CARD
    card = make_card(config, run, seed, finite(dev_top1), finite(dev_top5))
    write_text(path, json.dumps(card, indent=1, default=float) + "\n")
    return path


def test_top1(path, num_glimpses: int | None = None) -> float | None:
    """The evaluation job's test top-1 of the bundle (at ``num_glimpses``, default the card's), when its parquet
    exists; None otherwise."""
    import pandas as pd

    card = read_card(path)
    pointer = card.get("test_results")
    if not pointer:
        return None
    parquet = _paths(path)[0].parent / pointer["parquet"]
    if not parquet.is_file():
        return None
    frame = pd.read_parquet(parquet)
    t = 0 if pointer["policy"] == "full_image" else (num_glimpses or card["glimpses"])
    rows = frame[(frame["policy"] == pointer["policy"]) & (frame["metric"] == "top1") & (frame["num_glimpses"] == t)
                 & (frame["resolution"] == card["input"]["resolution"])]
    return float(rows["value"].iloc[0]) if len(rows) else None


def _run(args) -> int:
    import pandas as pd

    from saccader.pipeline.config import load as load_config

    config = load_config(args.config)
    folder = Path(args.dir)
    if not (folder / "model.pt").is_file():
        raise UserError(f"{folder} holds no model.pt", "pass the output folder of a finished training run")
    dev = (None, None)
    log_path = folder / "train_log.parquet"
    if log_path.is_file():
        last = pd.read_parquet(log_path).dropna(subset=["dev_top1"]).tail(1)
        if len(last):
            dev = (float(last["dev_top1"].iloc[0]), float(last["dev_top5"].iloc[0]))
    seed = args.seed if args.seed is not None else int(re.sub(r"\D", "", folder.name) or 0)
    path = write_card(config, args.run, seed, folder, *dev)
    load(folder, "cpu")  # the card must rebuild the weights it sits beside
    print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("card", help="write card.json for a training run folder (a loadable model bundle)",
                              description="Write DIR/card.json, the model card that saccader.models.load and "
                                          "`saccader predict` read, for a run trained before cards existed.")
    p.add_argument("dir", help="training run folder holding model.pt (and train_log.parquet)")
    p.add_argument("--config", required=True, help="the config the run was trained with")
    p.add_argument("--run", required=True, help="the run's name (a key of the config's train: section)")
    p.add_argument("--seed", type=int, default=None, help="its seed (default: the digits of DIR's name)")
    p.set_defaults(func=_run)
