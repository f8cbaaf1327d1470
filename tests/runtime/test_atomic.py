"""runtime/_atomic.py: a write that fails leaves the old file intact and no temporary file."""

from __future__ import annotations

import os

import pytest

from rnnstream.runtime._atomic import TEMP_SUFFIX, write_bytes, write_file, write_files


class Boom(Exception):
    pass


def _leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX))


def test_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")
    write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_failing_writer_leaves_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise Boom("disk full")

    with pytest.raises(Boom, match="disk full"):
        write_file(dest, half_then_fail)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_temp_name_carries_the_pid(tmp_path):
    seen: list[str] = []
    write_file(tmp_path / "a.bin", lambda f: seen.extend(_leftovers(tmp_path)))
    assert len(seen) == 1
    assert seen[0].startswith(f".a.bin.{os.getpid()}.")
    assert seen[0].endswith(TEMP_SUFFIX)


def test_several_files_change_nothing_when_one_fails(tmp_path):
    a, b = tmp_path / "m.onnx", tmp_path / "m.onnx.json"
    a.write_bytes(b"old model")
    b.write_bytes(b"old sidecar")

    def fail(f):
        raise Boom("sidecar broke")

    with pytest.raises(Boom, match="sidecar broke"):
        write_files({a: b"new model", b: fail})
    assert a.read_bytes() == b"old model"
    assert b.read_bytes() == b"old sidecar"
    assert _leftovers(tmp_path) == []
    write_files({a: b"new model", b: b"new sidecar"})
    assert (a.read_bytes(), b.read_bytes()) == (b"new model", b"new sidecar")
    assert _leftovers(tmp_path) == []
