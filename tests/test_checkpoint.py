"""Checkpoints: weights_only-loadable, atomic, restore every RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from saccader.pipeline import checkpoint
from saccader.errors import UserError


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    gen = torch.Generator().manual_seed(1)
    checkpoint.save(tmp_path / "c.pt", rng=checkpoint.rng_state(gen), step=3)
    first = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=gen))
    state = torch.load(tmp_path / "c.pt", weights_only=True)  # the format must load without pickled code
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"], gen)
    second = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=gen))
    assert state["step"] == 3
    assert torch.equal(first[0], second[0]) and first[1:3] == second[1:3] and torch.equal(first[3], second[3])


def test_corrupt_or_foreign_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="delete it"):
        checkpoint.load(tmp_path / "bad.pt")
    torch.save({"version": 99}, tmp_path / "old.pt")
    with pytest.raises(UserError, match="format version 99"):
        checkpoint.load(tmp_path / "old.pt")


def test_save_leaves_no_temporary_files(tmp_path):
    checkpoint.save(tmp_path / "c.pt", model={"w": torch.ones(2)})
    checkpoint.save(tmp_path / "c.pt", model={"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(checkpoint.load(tmp_path / "c.pt")["model"]["w"], torch.zeros(2))
