"""Self-describing model bundles: ``model.pt`` plus a ``card.json`` beside it, loadable with no config at hand.

    model = saccader.models.load("results/models/saccader/seed0")   # folder, model.pt or card.json
    model.card["class_names"], model.card["input"]["image_size"]

The card holds what rebuilding and feeding the network needs (registry name and constructor overrides, classes and
label offset, input size and normalisation, memory format) and what identifies it (run, seed, fingerprint of the
recipe, dev accuracy, package and code version). Every training run writes its card last
(``saccader.pipeline.train.train``); ``saccader card`` writes one for a run trained before cards existed. Test
accuracy comes later, from the evaluation jobs: ``saccader export`` (the workflow's ``export_model`` rule) writes the
run's bundle again under ``results/models/RUN/seedS`` with its test top-1 / top-5 in the card, rather than having a
later job rewrite a training output. Reading a bundle needs no config and lives with the models
(``saccader.models.load``; ``saccader.models.bundle``: ``read_card``, ``class_label``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from saccader import catalog
from saccader.errors import UserError
from saccader.models import load
from saccader.models.bundle import CARD, FORMAT, bundle_paths, read_card
from saccader.pipeline.config import fingerprint, recipe, resolution

log = logging.getLogger("saccader.pipeline.bundle")
__all__ = ["make_card", "write_card", "own_test_rows", "export", "register"]


def make_card(config: dict, run: str, seed: int, dev_top1: float | None, dev_top5: float | None) -> dict:
    """The card of training run ``run`` / ``seed`` under ``config`` (its dataset must be readable: class names)."""
    from saccader import __version__
    from saccader.pipeline import results
    from saccader.pipeline.data.folder import class_folders
    from saccader.models import config_overrides

    rec, ds = recipe(config, run), config["dataset"]
    classes = class_folders(Path(ds["root"]))
    return {
        "format": FORMAT, "saccader_version": __version__, "code_version": results.code_version(),
        "run": run, "seed": seed, "stage": rec["stage"], "model": rec["model"],
        "overrides": config_overrides(rec["model"], config),
        "num_classes": ds["num_classes"], "label_offset": ds["label_offset"], "class_names": classes,
        "dataset": ds["name"],
        "input": {"image_size": ds["image_size"], "resolution": resolution(config, rec),
                  "high_res_size": ds["high_res_size"], "crop_padding_fraction": ds["crop_padding_fraction"],
                  "mean": list(ds["mean"]), "std": list(ds["std"])},
        "glimpses": rec.get("eval_glimpses", rec.get("num_glimpses")),
        "channels_last": rec.get("channels_last"),
        "fingerprint": fingerprint(config, run),
        "dev_top1": dev_top1, "dev_top5": dev_top5,
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


def own_test_rows(card: dict, parquets) -> list[dict]:
    """The rows of the evaluation parquets that are the card's run's own test accuracy
    (``saccader.catalog.own_evaluations``), at its input resolution: one dict per (evaluation, T)."""
    import pandas as pd

    wanted = {(name, policy): f"{kind}/{name}" for kind, name, policy in catalog.own_evaluations(card["run"])}
    rows = []
    for path in parquets:
        if not Path(path).is_file():
            raise UserError(f"evaluation results {path} do not exist",
                            "run the run's evaluation jobs first (snakemake ... all does)")
        frame = pd.read_parquet(path)
        frame = frame[(frame["resolution"] == card["input"]["resolution"]) & frame["metric"].isin(["top1", "top5"])]
        for (model, policy, t), group in frame.groupby(["model", "policy", "num_glimpses"], sort=True):
            if (model, policy) in wanted:
                values = dict(zip(group["metric"], group["value"]))
                rows.append({"evaluation": wanted[model, policy], "policy": policy, "num_glimpses": int(t),
                             "top1": float(values["top1"]), "top5": float(values["top5"]),
                             "n_images": int(group["n_images"].iloc[0])})
    return rows


def export(run_dir, out, parquets) -> Path:
    """The bundle of a finished run with its test accuracy: ``out/model.pt`` (a copy of the run's) and
    ``out/card.json``, the run's card plus ``test`` (its rows of the evaluation parquets) and ``test_top1`` /
    ``test_top5`` at the card's number of glimpses or the largest T evaluated below it (a classifier: its full
    image). The workflow's ``export_model`` rule writes one per evaluated run and seed (``results/models/``), once
    its evaluations are done."""
    from saccader.pipeline import io

    run_dir, out = Path(run_dir), Path(out)
    if out.resolve() == run_dir.resolve():
        raise UserError(f"--out {out} is the run folder; export never writes over the run's card.json",
                        "pass another --out, e.g. results/models/<run>/seed<k>")
    card = read_card(run_dir)
    weights = bundle_paths(run_dir)[1]
    if not weights.is_file():
        raise UserError(f"{weights} is missing: {run_dir} is not a finished training run",
                        "pass the folder of a finished training run")
    rows = own_test_rows(card, parquets)
    if not rows:
        raise UserError(f"no test results of run {card['run']} in {', '.join(map(str, parquets)) or 'no parquet'}",
                        "pass the parquet(s) of its evaluation jobs (saccader.catalog.own_evaluations)")
    # at the card's T, or the largest T evaluated below it (evaluate.max_glimpses may be smaller); a classifier's at
    # its full image (T = 0)
    t = card.get("glimpses") or 0
    evaluated = sorted({r["num_glimpses"] for r in rows})
    t = max([x for x in evaluated if x <= t] or evaluated[:1])
    default = next(r for r in rows if r["num_glimpses"] == t)
    card = {**card, "test_top1": default["top1"], "test_top5": default["top5"], "test_glimpses": t, "test": rows}
    io.copy_file(weights, out / "model.pt")
    path = out / CARD
    io.write_text(path, json.dumps(card, indent=1) + "\n")
    return path


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


def _export(args) -> int:
    path = export(args.dir, args.out, args.eval)
    print(f"wrote {path} and {path.parent / 'model.pt'}")
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer
    from saccader.pipeline.config import add_config_argument

    p = subparsers.add_parser("export", help="a finished run's model bundle with its test accuracy (workflow job)",
                              description="Write OUT/model.pt (a copy of RUN_DIR's) and OUT/card.json: the "
                                          "run's card plus its test top-1/top-5 from its evaluation parquets.")
    p.add_argument("dir", help="training run folder holding model.pt and card.json")
    p.add_argument("--out", required=True, help="the bundle's folder (results/models/RUN/seedS in the workflow)")
    p.add_argument("--eval", nargs="+", default=[], help="the parquets of the run's evaluation jobs")
    p.set_defaults(func=_export)
    p = subparsers.add_parser("card", help="write card.json for a training run folder (a loadable model bundle)",
                              description="Write DIR/card.json, the model card that saccader.models.load and "
                                          "`saccader predict` read, for a run trained before cards existed.")
    p.add_argument("dir", help="training run folder holding model.pt (and train_log.parquet)")
    add_config_argument(p)  # the config the run was trained with
    p.add_argument("--run", required=True, help="the run's name (a key of the config's train: section)")
    p.add_argument("--seed", type=integer(0), default=None, help="its seed (default: the digits of DIR's name)")
    p.set_defaults(func=_run)
