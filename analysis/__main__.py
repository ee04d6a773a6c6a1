"""``python -m analysis TARGET [--results DIR] [--out DIR] [--train-glimpses T] [--config FILE]``: regenerate one
figure/table."""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")  # never open a window, also when a DISPLAY is set (figures are drawn without pyplot anyway)

from analysis import run  # noqa: E402
from saccader.catalog import TARGETS  # noqa: E402
from saccader.errors import UserError  # noqa: E402
from saccader.pipeline.snakelock import exit_with_snakemake  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("target", choices=["all", *TARGETS], help="figure / table / page to regenerate")
    parser.add_argument("--results", default="results/embedded",
                        help="results folder to read (default: results/embedded, the embedded experiment)")
    parser.add_argument("--out", default=None, help="folder to write into (default: the results folder)")
    parser.add_argument("--train-glimpses", type=int, default=None,
                        help="training T for the dotted line and claims (default: evaluate.train_glimpses of "
                             "<results>/config.yaml, else the paper's 6)")
    parser.add_argument("--config", default=None,
                        help="the run's resolved config (default: <results>/config.yaml; the workflow passes the "
                             "copy its jobs read)")
    args = parser.parse_args(argv)
    exit_with_snakemake()  # a job of a Snakemake killed with SIGKILL must not run on beside its rerun's copy
    try:
        for path in run(args.target, args.results, args.out, train_glimpses=args.train_glimpses, config=args.config):
            print(path)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
