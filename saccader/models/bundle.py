"""Reading a model bundle (``card.json`` beside ``model.pt``): what a card must hold, where its files are, its
classes; ``saccader.models.load`` rebuilds the model from it, with no config at hand.

The method's side of bundles: what a card must hold and how a model is rebuilt from it. Writing cards, which needs
the experiment config, is the pipeline's (``saccader.pipeline.bundle``).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from saccader.errors import UserError

__all__ = ["FORMAT", "CARD", "SCHEMA_PATH", "REQUIRED", "INPUT_KEYS", "MAX_IMAGE_SIZE", "bundle_paths",
           "read_card", "read_weights", "class_label"]

FORMAT = "saccader-bundle/1"  # a change of the card's meaning gets a new value
CARD = "card.json"
SCHEMA_PATH = Path(__file__).with_name("card.schema.yaml")  # what a card holds, declared once


@functools.cache
def card_schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


REQUIRED = tuple(card_schema()["required"])
INPUT_KEYS = tuple(card_schema()["properties"]["input"]["required"])
MAX_IMAGE_SIZE = card_schema()["properties"]["input"]["properties"]["image_size"]["maximum"]


def bundle_paths(path) -> tuple[Path, Path]:
    """(card.json, model.pt) of a bundle given as its folder, its model.pt or its card.json."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise UserError(f"model bundle {path} does not exist",
                        "pass a training run folder (holding model.pt and card.json), its model.pt or its card.json")
    return folder / CARD, folder / "model.pt"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a card may hold")


def read_card(path) -> dict:
    """The card of a bundle, checked: this package's format and version, then every field against
    ``card.schema.yaml`` (types and ranges: a std of 0 would divide by zero) and the class count."""
    from saccader import __version__

    card_path, _ = bundle_paths(path)
    if not card_path.is_file():
        raise UserError(f"{card_path.parent} has no {CARD}, so the model cannot be rebuilt without its config",
                        f"write one with `saccader card {card_path.parent} --config CONFIG --run RUN --seed SEED`")
    rewrite = f"rewrite it with `saccader card {card_path.parent} --config CONFIG --run RUN --seed SEED`"
    try:
        card = json.loads(card_path.read_bytes(), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{card_path} is not valid JSON ({' '.join(str(exc).split())[:200]})", rewrite) from None
    if not isinstance(card, dict):
        raise UserError(f"{card_path} holds a JSON {type(card).__name__}, not a card (a JSON object)", rewrite)
    if card.get("format", FORMAT) != FORMAT or card.get("saccader_version", __version__) != __version__:
        raise UserError(f"{card_path} is a {card.get('format')} bundle of saccader {card.get('saccader_version')} "
                        f"(code {card.get('code_version')}); this is saccader {__version__} ({FORMAT})",
                        f"load it with that version (git checkout {card.get('code_version')}), or retrain the run")
    from saccader.schema import first_problem

    problem = first_problem(card_schema(), card, noun="card field", example="the card of a fresh run")
    if problem is None and card["label_offset"] + len(card["class_names"]) > card["num_classes"]:
        problem = (f"card fields label_offset = {card['label_offset']} plus {len(card['class_names'])} class_names "
                   f"exceed num_classes = {card['num_classes']}")
    if problem is not None:
        raise UserError(f"{card_path}: {problem}", rewrite)
    return card


def read_weights(weights: Path) -> dict:
    """The state dict in ``weights``, loaded without running pickled code; a file that is empty, cut short or not
    a PyTorch file is one line saying so (not "does not fit the card")."""
    import pickle
    import zipfile

    import torch

    size = weights.stat().st_size
    if size == 0:
        raise UserError(f"{weights} is empty (0 bytes): the copy or the training run that wrote it was cut short",
                        "copy it again, or rerun the training run")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any object but tensors and plain containers, naming its class; other messages are
        # bytes that are no pickle at all
        refused = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), None)
        if refused is None:
            raise UserError(f"{weights} ({size} bytes) is truncated or not a PyTorch file ({str(exc)[:120]})",
                            "copy it again, or rerun the training run that writes it") from None
        raise UserError(f"{weights} holds more than weights ({refused[:160]}); it is not loaded, for safety",
                        "use a model.pt written by `saccader train` or `saccader export`") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{weights} ({size} bytes) is truncated or not a PyTorch file "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                        "copy it again, or rerun the training run that writes it") from None
    if not isinstance(state, dict):
        raise UserError(f"{weights} holds a {type(state).__name__}, not a state dict of weights",
                        "use a model.pt written by `saccader train` or `saccader export`")
    return state


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
