"""``saccader params``: Table Supp.1 (number of parameters) recomputed from this project's models at paper scale.

    saccader params [--config C] [--out results/params.parquet]

Counts follow the official TF checkpoints (reference-notes §1.6): 1001 classes (label 0 is the background class of
the official data provider) and every TF variable, so a BatchNorm layer counts 4 numbers per channel (gamma, beta,
moving mean, moving variance); PyTorch's ``num_batches_tracked`` counter has no TF counterpart and is left out.
With ``--config`` the models of that config (e.g. the embedded sizes) are listed too, for information.
"""

from __future__ import annotations

import pandas as pd

from saccader.pipeline import io
from saccader.pipeline.config import load
from saccader.models import count_parameters, create, from_config

__all__ = ["TABLE_SUPP1", "paper_table", "register"]

PAPER_CLASSES = 1001

# registry name -> (Table Supp.1 count, why this count is what it is)
TABLE_SUPP1 = {
    "bagnet77_lowd": (20_628_393, "BagNet-77-lowD: 1001 classes, BN moving statistics counted as TF variables"),
    "resnet_v2_50": (25_615_849, "TF-slim resnet_v2_50: biases on the stem, shortcut and unit-output convs"),
    "saccader": (35_583_913, "BagNet-77-lowD + attention net 14,430,208 + mixing conv 524,800 + cell vector a 512"),
    "dram": (45_610_219, "released config: emission net has no hidden layer; the paper text's FC 1024 + ReLU would "
                         "add 1,049,600 (1024*1024 + 1024) and give 46,659,819"),
    "saccader_nasnet": (124_537_764, "Saccader 35,583,913 + NASNet-A Large (timm) 88,953,851"),
}


def paper_table() -> pd.DataFrame:
    """One row per model of Table Supp.1: model, paper, reproduced, difference (reproduced - paper), note."""
    rows = []
    for name, (paper, note) in TABLE_SUPP1.items():
        reproduced = count_parameters(create(name, PAPER_CLASSES))
        rows.append({"model": name, "paper": paper, "reproduced": reproduced, "difference": reproduced - paper,
                     "note": note})
    return pd.DataFrame(rows)


def _run(args) -> int:
    config = load(args.config) if args.config else None  # fail on a bad config before the slow paper-scale builds
    table = paper_table()
    print("Table Supp.1 (paper scale, 1001 classes, BN moving mean/var counted as in the TF checkpoints)")
    print(f"{'model':16s} {'paper':>12s} {'reproduced':>12s} {'difference':>10s}  note")
    for row in table.itertuples():
        print(f"{row.model:16s} {row.paper:>12,} {row.reproduced:>12,} {row.difference:>+10,}  {row.note}")
    if config is not None:
        print(f"\nModels of {' + '.join(args.config)} ({config['dataset']['num_classes']} classes, same counting):")
        for name in sorted(config.get("models", {})):
            print(f"  {name:24s} {count_parameters(from_config(name, config)):>12,}")
    if args.out:
        with io.atomic_path(args.out) as tmp:
            table.to_parquet(tmp, index=False)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("params", help="Table Supp.1: parameter counts of the paper's models",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", metavar="YAML",
                        help="also list the models of this experiment config; repeat to merge overlays in order "
                             "(--config config.yaml --config config/embedded.yaml)")
    parser.add_argument("--out", help="write the table as parquet (columns model, paper, reproduced, difference, "
                                      "note)")
    parser.set_defaults(func=_run)

