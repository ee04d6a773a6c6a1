"""Images/s per CPU core of the Appendix C transforms on ImageNet-sized JPEGs: the figure ``saccader plan`` sets
against what each job's GPU consumes.

    python bench/jpeg_transform.py [--images 64] [--out results/benchmarks/jpeg_transform.json]

Generates JPEGs of ImageNet's typical sizes (500 x 375 and 400 x 350, quality 90;
``saccader.pipeline.plan.measure.write_jpegs``) and
times ``FolderDataset``'s path on one thread: PIL decode, then ``build_transform(config.yaml)`` (train: random
resized crop, bicubic antialiased resize, flip, normalise; eval: centre crop and resize) at 224 and 331. The best of
``--rounds`` passes is kept (a pass a neighbour slowed is dropped). ``saccader plan`` reads ``--out`` when it sits
in ``<results_dir>/benchmarks/`` and otherwise measures a shorter version itself.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401

from common import ROOT, report, setup_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    setup_threads(1)

    from saccader.pipeline.plan import measure
    from saccader.pipeline.config import load

    config = load(ROOT / "config.yaml")
    rows = []
    for res in (config["dataset"]["image_size"], config["dataset"]["high_res_size"]):
        for train in (True, False):
            rate = measure.transform_rate(config, res, train, images=args.images, rounds=args.rounds)
            rows.append({"resolution": res, "transform": "train" if train else "eval", "images_per_s_core": rate})
    report("jpeg_transform", rows, args.out)


if __name__ == "__main__":
    main()
