"""Argument types of the ``saccader`` commands: each numeric option is range-checked where argparse parses it.

argparse calls a ``type=`` function on the option's text and turns an ``ArgumentTypeError`` into the command's one
error line (``saccader.pipeline.cli``), so a bad value stops the command before it reads or writes anything.

    p.add_argument("--seeds", type=integer(1), default=5)
    p.add_argument("--mfu", type=number(0, 1, low_open=True), default=0.4)
"""

from __future__ import annotations

import argparse
import math

__all__ = ["integer", "number", "device"]


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def _checked(kind, name: str, low, high, low_open: bool, high_open: bool):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}; fix: pass {name} "
                                             f"{_range_text(low, high, low_open, high_open)}".rstrip()) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; fix: pass a number "
                                             f"{_range_text(low, high, low_open, high_open)}".rstrip())
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and (value >= high if high_open else value > high)):
            raise argparse.ArgumentTypeError(f"{text} is out of range; fix: pass a value "
                                             f"{_range_text(low, high, low_open, high_open)}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    parse.bounds = (low, high, low_open, high_open)  # what --help and the tests read
    return parse


def integer(low: int | None = None, high: int | None = None):
    """An int option with ``low <= value <= high`` (None: unbounded)."""
    return _checked(int, "a whole number", low, high, False, False)


def number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """A finite float option within ``low`` .. ``high``; ``low_open`` / ``high_open`` exclude the bound itself."""
    return _checked(float, "a number", low, high, low_open, high_open)


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` with N below the GPU count, ``mps``."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; fix: pass cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU; fix: pass --device cpu, or run "
                                             "on a GPU node")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}; "
                                             f"fix: pass one of them")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: this machine has no Apple GPU (mps); fix: pass --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: saccader runs on cpu, cuda or mps; fix: pass one of them")
    return text
