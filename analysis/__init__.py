"""Parquet -> every figure and table of the paper, the claims verdict and the results index page.

What exists is declared in the experiment catalog, ``saccader.catalog.TARGETS``: name -> ``Target(function, inputs,
outputs)``, with ``function`` a ``"module:function"`` path of this package (imported only when run), ``inputs`` glob
patterns and ``outputs`` paths, both relative to the results folder. Regenerate one target with
``python -m analysis NAME [--results results] [--out results]`` or all with ``python -m analysis all``.
This package reads parquet/npz only; it never imports torch or model code.
"""

from __future__ import annotations

import importlib

from saccader.catalog import TARGETS


def run(name: str, results_dir="results", out_dir=None, **options):
    """Build one target (or every target for ``"all"``); returns the paths written."""
    names = list(TARGETS) if name == "all" else [name]
    written = []
    for n in names:
        if n not in TARGETS:
            from saccader.errors import UserError
            raise UserError(f"unknown analysis target {n!r}", f"use one of: all, {', '.join(TARGETS)}")
        module, function = TARGETS[n].function.split(":")
        written += getattr(importlib.import_module(module), function)(
            results_dir, results_dir if out_dir is None else out_dir, **options)
    return written
