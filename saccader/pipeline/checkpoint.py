"""Resumable training state: one atomic ``checkpoint.pt`` per run, loadable with ``weights_only=True``.

It holds everything that decides the rest of the run (model, optimizer, scheduler, EMA, every RNG, the position in
the epoch and the epoch's running sums), so that a run killed at any moment and started again ends with bitwise the
same weights as an uninterrupted one (on CPU). With several processes, every rank's RNG state is kept
(``rng_ranks``) and each rank resumes its own stream: the replicas sample different glimpses and drop paths, as
before the kill. Written through ``saccader.pipeline.io.torch_save`` (temporary file, then rename, like timm's
``CheckpointSaver``), so a kill during the write keeps the previous checkpoint.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from saccader.pipeline import io
from saccader.errors import UserError

__all__ = ["rng_state", "set_rng_state", "rank_rng_state", "save", "load"]
VERSION = 1


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG a training step may draw from, as tensors and plain Python values (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def rank_rng_state(state: dict, rank: int, world: int) -> dict | None:
    """The RNG state that ``rank`` of ``world`` processes resumes from: its own, saved in ``rng_ranks``; rank 0's
    ``rng`` for one process. None when the checkpoint was written by another number of processes (then the ranks
    other than 0 keep their fresh, seed-derived streams: the run goes on, not bitwise as an uninterrupted one)."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == world:
        return ranks[rank]
    return state["rng"] if rank == 0 else None


def save(path: str | Path, **state) -> None:
    """Write ``state`` (state_dicts, counters, RNG states) atomically to ``path``."""
    io.torch_save({"version": VERSION, **state}, path)


def load(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save`; a file from another version is a UserError."""
    try:
        state = io.torch_load(path)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # truncated or foreign file
        raise UserError(f"checkpoint {path} cannot be read ({str(exc).splitlines()[0]})",
                        "delete it to restart the run from scratch") from None
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {state.get('version')}, expected {VERSION}",
                        "delete it to restart the run from scratch")
    return state
