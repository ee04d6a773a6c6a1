"""Reading a model bundle (``card.json`` beside ``model.pt``): what a card must hold, where its files are, its
classes; ``saccader.models.load`` rebuilds the model from it, with no config at hand.

The method's side of bundles: what a card must hold and how a model is rebuilt from it. Writing cards, which needs
the experiment config, is the pipeline's (``saccader.pipeline.bundle``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from saccader.errors import UserError

__all__ = ["FORMAT", "CARD", "REQUIRED", "INPUT_KEYS", "bundle_paths", "read_card", "class_label"]

FORMAT = "saccader-bundle/1"  # a change of the card's meaning gets a new value
CARD = "card.json"
REQUIRED = ("format", "saccader_version", "run", "model", "overrides", "num_classes", "label_offset", "class_names",
            "input", "fingerprint")
INPUT_KEYS = ("image_size", "resolution", "high_res_size", "crop_padding_fraction", "mean", "std")


def bundle_paths(path) -> tuple[Path, Path]:
    """(card.json, model.pt) of a bundle given as its folder, its model.pt or its card.json."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise UserError(f"model bundle {path} does not exist",
                        "pass a training run folder (holding model.pt and card.json), its model.pt or its card.json")
    return folder / CARD, folder / "model.pt"


def read_card(path) -> dict:
    """The card of a bundle, checked: this package's format and version, every field present."""
    from saccader import __version__

    card_path, _ = bundle_paths(path)
    if not card_path.is_file():
        raise UserError(f"{card_path.parent} has no {CARD}, so the model cannot be rebuilt without its config",
                        f"write one with `saccader card {card_path.parent} --config CONFIG --run RUN --seed SEED`")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{card_path} is not valid JSON ({exc})",
                        f"rewrite it with `saccader card {card_path.parent} --config CONFIG --run RUN`") from None
    missing = [k for k in REQUIRED if k not in card] + [f"input.{k}" for k in INPUT_KEYS
                                                        if k not in (card.get("input") or {})]
    if card.get("format", FORMAT) != FORMAT or card.get("saccader_version", __version__) != __version__:
        raise UserError(f"{card_path} is a {card.get('format')} bundle of saccader {card.get('saccader_version')} "
                        f"(code {card.get('code_version')}); this is saccader {__version__} ({FORMAT})",
                        f"load it with that version (git checkout {card.get('code_version')}), or retrain the run")
    if missing:
        raise UserError(f"{card_path} lacks the field(s) {', '.join(missing)}",
                        f"rewrite it with `saccader card {card_path.parent} --config CONFIG --run RUN --seed SEED`")
    return card


_WNID = re.compile(r"^n\d{8}$")


def class_label(card: dict, index: int) -> str:
    """Human name of output ``index``: the class folder name; for an ImageNet wnid its first WordNet lemma (from timm's
    bundled ImageNet synset table, no download); "background" for the label-offset slots."""
    k = index - card["label_offset"]
    if k < 0 or k >= len(card["class_names"]):
        return "background"
    name = card["class_names"][k]
    if _WNID.match(name):
        try:
            from timm.data import ImageNetInfo

            return ImageNetInfo().label_name_to_description(name).split(",")[0]
        except (ImportError, KeyError, OSError):  # a wnid outside ImageNet-1k keeps its id
            return name
    return name
