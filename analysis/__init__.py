"""Parquet -> every figure and table of the paper, the claims verdict and the results index page.

``TARGETS`` is the single list of what exists: name -> ``Target(function, inputs, outputs)``, with ``function`` a
``"module:function"`` path (imported only when run, so ``import analysis`` is cheap for the Snakefile), ``inputs``
glob patterns and ``outputs`` paths, both relative to the results folder. Regenerate one target with
``python -m analysis NAME [--results results] [--out results]`` or all with ``python -m analysis all``.
This package reads parquet/npz only; it never imports torch or model code.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

from saccader.pipeline.results import images_path


class Target(NamedTuple):
    function: str                   # "analysis.<module>:<function>", called as f(results_dir, out_dir, **options)
    inputs: tuple[str, ...]         # glob patterns relative to the results folder
    outputs: tuple[str, ...]        # paths relative to the output folder

    def load(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


GLIMPSES = "eval/glimpses/*/seed*.parquet"
FULL_IMAGE = "eval/full_image/*/seed*.parquet"
OCCLUSION = "eval/occlusion/*/seed*.parquet"
NASNET = "eval/nasnet/*/seed*.parquet"
EXAMPLES = "eval/glimpses/*/seed*.parquet.examples.npz"
ATTACK = "attack/*/seed*.parquet"
PARAMS = "params.parquet"
TRAIN_LOGS = "runs/*/seed*/train_log.parquet"
# Per-image outcomes beside each seed's results (saccader.pipeline.results.images_path): the claims' intervals.
IMAGES = tuple(images_path(p) for p in (GLIMPSES, NASNET, ATTACK))


def _figure(name: str) -> tuple[str, ...]:
    return (f"figures/{name}.png", f"figures/{name}.pdf")


def _table(name: str, folder: str = "tables/") -> tuple[str, ...]:
    return tuple(f"{folder}{name}.{ext}" for ext in ("csv", "md", "html"))


TARGETS: dict[str, Target] = {
    "fig3": Target("analysis.glimpses:fig3", (GLIMPSES, FULL_IMAGE), _figure("fig3")),
    "fig4": Target("analysis.pictures:fig4", (EXAMPLES,), _figure("fig4")),
    "fig5": Target("analysis.area:fig5", (GLIMPSES, OCCLUSION, FULL_IMAGE), _figure("fig5")),
    "fig6": Target("analysis.glimpses:fig6", (NASNET,), _figure("fig6")),
    "fig_supp1": Target("analysis.pictures:fig_supp1", (EXAMPLES,), _figure("fig_supp1")),
    "fig_supp2": Target("analysis.area:fig_supp2", (GLIMPSES, OCCLUSION, FULL_IMAGE), _figure("fig_supp2")),
    "fig_supp3": Target("analysis.glimpses:fig_supp3", (GLIMPSES,), _figure("fig_supp3")),
    "fig_learning": Target("analysis.learning:fig_learning", (TRAIN_LOGS,), _figure("fig_learning")),
    "table_supp1": Target("analysis.tables:table_supp1", (PARAMS,), _table("table_supp1")),
    "table_supp6": Target("analysis.tables:table_supp6", (ATTACK,), _table("table_supp6")),
    "table_summary": Target("analysis.tables:table_summary", (GLIMPSES, NASNET, FULL_IMAGE),
                            _table("table_summary")),
    "table_plateau": Target("analysis.learning:table_plateau", (TRAIN_LOGS,), _table("table_plateau")),
    "claims": Target("analysis.claims:claims", (GLIMPSES, OCCLUSION, ATTACK, NASNET, *IMAGES),
                     _table("claims", folder="")),
}
TARGETS["results_md"] = Target("analysis.results_doc:results_md",
                               ("tables/table_summary.md", "claims.csv", "tables/table_plateau.csv",
                                "eval/glimpses/*/seed*.parquet"), ("results.md", "run.json"))
# The index page shows every other target's outputs; it is listed last so `all` builds it last. It also lists the
# files under logs/ and each runs/*/seed*/train_log.parquet present when it is built (not inputs: logs change with
# every job, including this one).
TARGETS["index"] = Target("analysis.index:index", tuple(o for t in TARGETS.values() for o in t.outputs),
                          ("index.html",))


def run(name: str, results_dir="results", out_dir=None, **options):
    """Build one target (or every target for ``"all"``); returns the paths written."""
    names = list(TARGETS) if name == "all" else [name]
    written = []
    for n in names:
        if n not in TARGETS:
            from saccader.errors import UserError
            raise UserError(f"unknown analysis target {n!r}", f"use one of: all, {', '.join(TARGETS)}")
        written += TARGETS[n].load()(results_dir, results_dir if out_dir is None else out_dir, **options)
    return written
