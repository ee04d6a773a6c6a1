"""Chaos test of the whole workflow on the smoke config (tests/reliability/chaos.py): SIGKILLs and SIGTERMs at random
moments to Snakemake, the warm-start server, heavy and light jobs; the same command is rerun after each failure until it completes. The outcome must equal the undisturbed smoke run
(tests/conftest.py::smoke_run): weights and parquet bitwise, the tables and claims drawn from them byte for byte,
the same set of files, no temporary file, no process left behind. Replay a failure: CHAOS_SEED=<printed seed>."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chaos import chaos, orphans
from conftest import smoke_config

from saccader.pipeline.snakelock import RESULTS_LOCK

pytestmark = pytest.mark.slow
WALL_CLOCK = {"seconds", "images_per_s"}  # the training log's speed: the only values that may differ between runs
PROVENANCE = {"config_hash", "code_version"}  # of the resolved config (its paths differ) and of the git commit
# records (the results_dir lock names its last holder), the reference's --report
NOT_RESULTS = ("logs/", "benchmarks/", "configs/", "config.yaml", "report.html", RESULTS_LOCK)
# a checkpoint's global Python and NumPy generators: unseeded in a fresh job, and training draws nothing from them
# (its weights are compared bitwise)
UNSEEDED = {"python", "numpy"}
DRAWN = (".png", ".pdf", "index.html")  # drawn from the parquet compared here; the index shows the speeds too
REQUIRED_KINDS = ("snakemake", "warmstart", "check_data", "train", "evaluate", "evaluate_glimpses", "attack",
                  "analysis")


def files(results: Path) -> set[str]:
    return {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}


def differences(reference: Path, results: Path) -> list[str]:
    """What differs between two results folders, as readable lines (empty: equal)."""
    ref = {f for f in files(reference) if not f.startswith(NOT_RESULTS)}
    got = {f for f in files(results) if not f.startswith(NOT_RESULTS)}
    diffs = [f"only in the reference: {f}" for f in sorted(ref - got)]
    diffs += [f"only in the chaos run: {f}" for f in sorted(got - ref)]
    for name in sorted(ref & got):
        a, b = reference / name, results / name
        if name.endswith(DRAWN):
            same = b.stat().st_size > 0
        elif name.endswith(".parquet"):
            fa, fb = pd.read_parquet(a), pd.read_parquet(b)
            cols = [c for c in fa.columns if c not in WALL_CLOCK | PROVENANCE]
            same = list(fa.columns) == list(fb.columns) and fa[cols].equals(fb[cols])
        elif name.endswith(".pt"):
            sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
            same = a.read_bytes() == b.read_bytes() or _tensors_equal(sa, sb)
        elif name.endswith(".npz"):
            with np.load(a) as na, np.load(b) as nb:
                same = sorted(na) == sorted(nb) and all(np.array_equal(na[k], nb[k]) for k in na)
        else:
            same = a.read_bytes().replace(str(reference).encode(), b"") == b.read_bytes().replace(
                str(results).encode(), b"")
        if not same:
            diffs.append(f"differs: {name}")
    return diffs


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):  # a checkpoint's training log and running sums hold the speed too
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _tensors_equal(a[k], b[k]) for k in a if k not in WALL_CLOCK | UNSEEDED)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def leftovers(results: Path) -> list[str]:
    """Temporary files (saccader.pipeline.io's .<name>.*.tmp, submitit's and Snakemake's partial files)."""
    return sorted(f for f in files(results) if re.search(r"(^|/)\.[^/]*\.tmp$|\.tmp$|\.partial$", f))


def test_chaos_run_ends_equal_to_an_undisturbed_run(smoke_run, tmp_path):
    _, reference, _ = smoke_run
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"chaos seed {seed} (replay: CHAOS_SEED={seed})")
    config = smoke_config(tmp_path)
    total = sum(1 for f in files(reference) if not f.startswith(("logs/", "benchmarks/", "report.html")))
    # 3 spare SIGKILLs: events still scheduled when the run completes are not fired, and at least 20 must be
    out = chaos(config, seed, kills=23, terms=4, total=total, required=REQUIRED_KINDS)
    results = tmp_path / "results"
    kinds = {e.kind for e in out.events}
    summary = (f"chaos: seed {seed}: {len(out.events)} events ({sum(e.signal == 'KILL' for e in out.events)} "
               f"SIGKILL, {sum(e.signal == 'TERM' for e in out.events)} SIGTERM, "
               f"{sum(e.signal == 'STOP' for e in out.events)} hang) on {', '.join(sorted(kinds))}; "
               f"{out.attempts} invocations, {out.seconds:.0f} s")
    print(summary)
    assert not orphans(results, Path(out.tmpdir)), "processes outlived the run"
    assert sum(e.signal == "KILL" for e in out.events) >= 20 and set(REQUIRED_KINDS) <= kinds, summary
    assert leftovers(results) == []
    assert differences(reference, results) == []
