"""The ``saccader`` command: one subcommand per job the workflow runs (docs/architecture.md).

Each subcommand lives in the module that implements it, as ``register(subparsers)`` which adds a parser whose
``func(args) -> int`` runs the job; this file only lists the modules, so importing it stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from saccader.errors import UserError
from saccader.pipeline.runtime import keep_freed_memory
from saccader.pipeline.snakelock import exit_with_snakemake

# Subcommand -> the module that registers it, in the order of --help. A job imports only its own module: the
# others pull in scikit-learn, timm, CleverHans, ... and every embedded job would pay for them at start-up.
COMMANDS = {
    "make-dataset": "saccader.pipeline.data.digits",
    "make-mini-imagenet": "saccader.pipeline.data.mini_imagenet",
    "check-data": "saccader.pipeline.data.folder",
    "train": "saccader.pipeline.train",
    "evaluate": "saccader.pipeline.evaluate",
    "attack": "saccader.pipeline.attack",
    "params": "saccader.pipeline.params",
    "plan": "saccader.pipeline.plan",
    "export": "saccader.pipeline.bundle",
    "card": "saccader.pipeline.bundle",
    "predict": "saccader.pipeline.predict",
    "init-config": "saccader.pipeline.init_config",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``command`` (a known subcommand) only that subcommand's module is imported and registered."""
    parser = argparse.ArgumentParser(prog="saccader", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).register(sub)  # a module listed here and missing is an error
    return parser


def _close_progress_bars() -> None:
    """Close the progress bars the failed job left open, so that the error line stands alone."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)
    keep_freed_memory()  # before the job allocates anything (saccader.pipeline.runtime)
    exit_with_snakemake()  # a job of a Snakemake killed with SIGKILL must not run on beside its rerun's copy
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
