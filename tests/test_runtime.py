"""saccader.pipeline.runtime: the allocator setting is applied on glibc and is a silent no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from saccader.pipeline import runtime


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_on_glibc():
    assert runtime.keep_freed_memory() is True


def test_keep_freed_memory_is_a_no_op_without_mallopt(monkeypatch):
    def no_libc(name):
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert runtime.keep_freed_memory() is False


def test_cli_applies_it_before_the_subcommand(monkeypatch):
    from saccader.pipeline import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept") or True)
    with pytest.raises(SystemExit):  # --help exits after parsing, i.e. after the setting
        cli.main(["params", "--help"])
    assert calls == ["kept"]
