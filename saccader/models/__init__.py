"""Model registry: every network of the paper by name, at paper scale unless overridden.

    model = create("saccader", num_classes=1001)                       # the paper's Saccader (Table Supp.1)
    model = create("bagnet77_lowd", 10, planes=[8, 16, 32, 64], ...)   # a narrow embedded variant, same code
    model = from_config("saccader", config)                            # overrides from config['models']['saccader']

Defaults are the paper's models (224 input, q = 77, stride 8, 2048-d features, 512-d what features); the
``models:`` section of a config holds the overrides that make the small embedded variants. Overrides are the keyword
arguments of the model's constructor; an unknown one is a ``UserError`` naming the allowed ones. The names, their
constructors and labels are ``saccader.catalog.MODELS``.
"""

from __future__ import annotations

import importlib
import inspect

from saccader import catalog
from saccader.errors import UserError

__all__ = ["create", "config_overrides", "from_config", "class_logits", "image_logits", "load", "list_models",
           "allowed_overrides", "count_parameters"]


def list_models() -> list[str]:
    return sorted(catalog.MODELS)


def _constructor(name: str):
    """The constructor of catalog model ``name`` and its fixed arguments (``saccader.catalog.MODELS``)."""
    entry = catalog.MODELS[catalog.known("model", name, list_models())]
    module, attr = entry.constructor.split(":")
    return getattr(importlib.import_module(module), attr), dict(entry.fixed)


def allowed_overrides(name: str) -> list[str]:
    """Constructor arguments of ``name`` that a config may override."""
    fn, fixed = _constructor(name)
    params = inspect.signature(fn).parameters
    return [p for p in params if p not in ("self", "num_classes") and p not in fixed
            and params[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def create(name: str, num_classes: int, **overrides):
    """Build the registered model ``name`` with ``num_classes`` outputs; ``overrides`` change its constructor args."""
    fn, fixed = _constructor(name)
    allowed = allowed_overrides(name)
    for key in overrides:
        if key not in allowed:
            raise UserError(f"unknown override {key!r} for model {name}",
                            f"use only these keys under models.{name}: {', '.join(allowed)}")
    # YAML gives lists; the constructors take sequences, tuples keep them hashable and immutable.
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return fn(num_classes=num_classes, **fixed, **args)


def config_overrides(name: str, config: dict) -> dict:
    """The constructor overrides of ``name`` in ``config['models']``; a composite model takes its parts' entries
    unless it names its own (``saccader.catalog.MODELS``)."""
    models = config.get("models", {}) or {}
    overrides = dict(models.get(name, {}) or {})
    for key, part in catalog.MODELS[catalog.known("model", name, list_models())].parts:
        overrides.setdefault(key, dict(models.get(part, {}) or {}))
    return overrides


def from_config(name: str, config: dict):
    """``create(name, dataset.num_classes, **models[name])``; composite models take their parts' entries too."""
    return create(name, config["dataset"]["num_classes"], **config_overrides(name, config))


def class_logits(out):
    """Class logits (N, C) of the output of any model of the zoo: a dict's ``logits`` (DRAM), a tuple's first item
    (the Saccader's (logits, locations, policy)); BagNets' per-location logits (N, C, h, w) averaged over space
    (eq 4, ``saccader.losses.mean_logits``); ResNet / NASNet logits as they are."""
    if isinstance(out, dict):
        out = out["logits"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out.mean(dim=(2, 3)) if out.dim() == 4 else out


def image_logits(model, images, num_glimpses: int | None = None):
    """Class logits (N, C) of ``model`` on standardised images (a glimpse model takes ``num_glimpses``)."""
    return class_logits(model(images) if num_glimpses is None else model(images, num_glimpses))


def load(path, device=None):
    """The bundle's model, weights loaded, in eval mode and the memory format it trained in; ``model.card`` is its
    card. Needs nothing but the bundle (a run folder, its model.pt or card.json: ``saccader.models.bundle``) and
    this package."""
    import torch

    from saccader.models.bundle import CARD, bundle_paths, read_card, read_weights

    card = read_card(path)
    card_path, weights = bundle_paths(path)
    if not weights.is_file():
        raise UserError(f"{weights} is missing: the bundle has a card but no weights",
                        "pass the folder of a finished training run")
    try:
        model = create(card["model"], card["num_classes"], **card["overrides"])
    except (TypeError, ValueError) as exc:  # an override the constructor does not take, or of the wrong kind
        raise UserError(f"{card_path}: overrides {repr(card['overrides'])[:120]} do not build model "
                        f"{card['model']} ({' '.join(str(exc).split())[:200]})",
                        f"rewrite {CARD} with `saccader card` under the config the run was trained with") from None
    state = read_weights(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{weights} does not fit the model its card describes ({str(exc).splitlines()[0][:200]})",
                        f"rewrite {CARD} with `saccader card` under the config the run was trained with") from None
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).eval()
    channels_last = card.get("channels_last")  # the recipe's memory format; unset means CUDA only, as in training
    if channels_last or (channels_last is None and dev.type == "cuda"):
        model = model.to(memory_format=torch.channels_last)
    model.card = card
    return model


def count_parameters(model) -> int:
    """Parameters as the TF checkpoints count them (Table Supp.1): weights plus BN running mean and variance.

    ``num_batches_tracked`` is a PyTorch bookkeeping counter with no TF counterpart, so it is left out.
    """
    n = sum(p.numel() for p in model.parameters())
    return n + sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
