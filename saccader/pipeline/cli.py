"""The ``saccader`` command: one subcommand per job the workflow runs (docs/architecture.md).

Each subcommand lives in the module that implements it, as ``register(subparsers)`` which adds a parser whose
``func(args) -> int`` runs the job; this file only lists the modules, so importing it stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
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


DEBUG_ENV = "SACCADER_DEBUG"  # set (to anything but 0 or empty) to see the traceback of an unexpected error


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a usage mistake answered as any bad input is: one line, exit status 2 (argparse
    prints the usage first and exits from inside the parser)."""

    def error(self, message: str):
        fix = None if "fix:" in message else f"see `{self.prog} --help`"  # a cli_types message names its fix
        raise UserError(f"{self.prog}: {message}", fix)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``command`` (a known subcommand) only that subcommand's module is imported and registered."""
    parser = _Parser(prog="saccader", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an unexpected error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).register(sub)  # a module listed here and missing is an error
    return parser


def _close_progress_bars() -> None:
    """Close the progress bars the failed job left open, so that the error line stands alone."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _unexpected(argv: list[str], exc: BaseException) -> str:
    """The one line for an exception no check foresaw: the command, its input, the error and how to see more."""
    command = shlex.join(["saccader", *argv])
    if len(command) > 240:
        command = command[:237] + "..."
    problem = " ".join(str(exc).split())[:300] or "(no message)"
    return (f"error: `{command}` stopped on an unexpected {type(exc).__name__}: {problem}; fix: check the inputs "
            f"of the command; to see the traceback rerun it with --debug (or {DEBUG_ENV}=1), and report it if the "
            f"inputs are fine")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)
    keep_freed_memory()  # before the job allocates anything (saccader.pipeline.runtime)
    exit_with_snakemake()  # a job of a Snakemake killed with SIGKILL must not run on beside its rerun's copy
    debug = _debug(argv)
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere, not only before the subcommand
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- the last resort: one line instead of a traceback
        if debug:  # and tests (tests/conftest.py sets SACCADER_DEBUG) see the real exception
            raise
        _close_progress_bars()
        print(_unexpected(argv, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
