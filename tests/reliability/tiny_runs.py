"""Tiny configs for every training stage (a 4-class 16 px ImageFolder): seconds per run on one CPU thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: reuse the tiny data of test_train
from test_train import TINY_BAGNET, make_images, recipe, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY_MODELS = {
    "dram": {"glimpse_size": 8, "layers": [1, 1, 1, 1], "widths": [4, 4, 8, 8], "stem_channels": 4,
             "bn_momentum": 0.1, "lstm_units": 8, "location_units": 8},
    "nasnet_a_large": {"stem_size": 8, "num_features": 96},
}
# stage -> (run name, recipe, runs it starts from -> the model those runs train)
STAGES = {
    "bagnet": ("bagnet77_lowd", recipe(), {}),
    "location_pretrain": ("saccader_pretrain",
                          recipe(model="saccader", stage="location_pretrain", init_from=["bagnet77_lowd"],
                                 num_glimpses=4, lr=0.5, weight_decay=0.0, nu=0.0),
                          {"bagnet77_lowd": "bagnet77_lowd"}),
    "saccader": ("saccader", recipe(model="saccader", stage="reinforce", init_from=["saccader_pretrain"],
                                    num_glimpses=3, mc_samples=2, lr=0.01, nu=8e-5),
                 {"saccader_pretrain": "saccader"}),
    "dram_pretrain": ("dram_pretrain", recipe(model="dram", stage="dram_pretrain", num_glimpses=2, glimpse_size=12),
                      {}),
    "dram": ("dram", recipe(model="dram", stage="dram", init_from=["dram_pretrain"], num_glimpses=3, mc_samples=2,
                            reinforce_weight=0.1, nu=0.0, location_modules=["location_lstm", "emission"]),
             {"dram_pretrain": "dram"}),
    "nasnet": ("nasnet", recipe(model="nasnet_a_large", stage="classify", schedule="exponential", ema_decay=0.9,
                                label_smoothing=0.1, drop_path_epochs=3.0, lr=0.01), {}),
    "nasnet_finetune": ("nasnet_77", recipe(model="saccader_nasnet", stage="glimpse_finetune",
                                            init_from=["nasnet", "saccader"], num_glimpses=2, freeze=["saccader"],
                                            lr=0.01, channels_last=True),
                        {"nasnet": "nasnet_a_large", "saccader": "saccader"}),
}


def stage_config(data: Path, stage: str, **changes) -> tuple[dict, str]:
    """A validated config holding the one run of ``stage`` (recipe ``changes`` applied); returns (config, run)."""
    run, rec, _ = STAGES[stage]
    config = tiny_config(data, **{run: {**rec, **changes}})
    config["models"].update(TINY_MODELS)
    return config, run


def write_inits(config: dict, stage: str, folder: Path) -> dict[str, str]:
    """``model.pt`` of each run the stage starts from (randomly initialised weights: resuming is what is tested)."""
    from saccader.pipeline import io
    from saccader.models import from_config

    inits = {}
    for name, model in STAGES[stage][2].items():
        torch.manual_seed(1)
        io.torch_save(from_config(model, config).state_dict(), folder / name / "model.pt")
        inits[name] = str(folder / name)
    return inits


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


__all__ = ["ENV", "ROOT", "STAGES", "TINY_BAGNET", "make_images", "recipe", "stage_config", "tiny_config",
           "write_config", "write_inits"]
