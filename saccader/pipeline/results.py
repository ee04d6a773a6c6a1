"""The tidy results schema shared by every evaluation job and by ``analysis/`` (docs/architecture.md).

One row per measurement; files are validated when written and when read, and written atomically.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd

from saccader import catalog
from saccader.errors import UserError
from saccader.pipeline.io import atomic_path

COLUMNS: dict[str, str] = {
    "experiment": "str",
    "dataset": "str",
    "split": "str",
    "model": "str",
    "policy": "str",
    "seed": "int64",
    "resolution": "int64",
    "num_glimpses": "int64",
    "metric": "str",
    "value": "float64",
    "n_images": "int64",
    "config_hash": "str",
    "code_version": "str",
}
# Per-image outcomes of an evaluation or attack job (its 0/1 hits and areas, image by image, in the order of the
# evaluated split or attack subset): what the claims' intervals need to include test-set sampling.
IMAGE_COLUMNS: dict[str, str] = {
    "experiment": "str", "model": "str", "policy": "str", "seed": "int64", "resolution": "int64",
    "num_glimpses": "int64", "metric": "str", "image": "int32", "value": "float32"}
EXPERIMENTS = {*catalog.EVALUATIONS, "robustness"}  # the evaluation kinds and the attacks
METRICS = {"top1", "top5", "area", "occluded_top1", "occluded_top5", "clean_acc", "pgd_acc", "spsa_acc"}


def validate(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check columns, types and vocabularies; return the frame with canonical dtypes and column order."""
    missing = set(COLUMNS) - set(df.columns)
    extra = set(df.columns) - set(COLUMNS)
    if missing or extra:
        raise UserError(f"{source}: columns differ from the results schema (missing {sorted(missing)}, "
                        f"unexpected {sorted(extra)})", "write results with saccader.pipeline.results.save")
    df = df[list(COLUMNS)].astype(COLUMNS)
    policies = {*catalog.policies(), "full_image"}  # the catalog's glimpse policies; full-image references
    for column, allowed in (("experiment", EXPERIMENTS), ("policy", policies), ("metric", METRICS)):
        bad = set(df[column]) - allowed
        if bad:
            raise UserError(f"{source}: unknown {column} {sorted(bad)}", f"use one of {sorted(allowed)}")
    if df["value"].isna().any():
        raise UserError(f"{source}: NaN values", "check the job that wrote it")
    return df.reset_index(drop=True)


def save(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Validate and write a results parquet atomically."""
    df = validate(df, str(path))
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def save_images(base: dict, per_image: dict, path: str | os.PathLike) -> None:
    """Write per-image outcomes atomically: ``base`` holds the job's shared columns, ``per_image`` maps
    (policy, resolution, T, metric) to one value per image."""
    parts = [pd.DataFrame({"policy": p, "resolution": r, "num_glimpses": t, "metric": m,
                           "image": range(len(v)), "value": v}) for (p, r, t, m), v in per_image.items()]
    frame = pd.concat(parts, ignore_index=True).assign(**base)[list(IMAGE_COLUMNS)].astype(IMAGE_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def load(paths) -> pd.DataFrame:
    """Read and validate one or several results parquet files into one frame."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = [validate(pd.read_parquet(p), str(p)) for p in paths]
    if not frames:
        return validate(pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()}))
    return pd.concat(frames, ignore_index=True)


def config_hash(config: dict) -> str:
    """A short stable hash of a resolved config (keys sorted)."""
    from saccader.pipeline.config import digest

    return digest(config, length=12)


def code_version() -> str:
    """``git describe`` of the code when run from a checkout, else the package version."""
    from saccader import __version__

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10, check=True)
        return out.stdout.strip() or __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def rows(base: dict, measurements: list[dict]) -> pd.DataFrame:
    """Build a results frame from shared fields (``base``) and per-row fields (``measurements``)."""
    return pd.DataFrame([{**base, **m} for m in measurements])
