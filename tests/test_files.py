"""Tests of utils.files: a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import os

import pytest

from utils import files


def test_write_text_replaces_whole_files(tmp_path):
    dest = tmp_path / "sub" / "a.json"
    files.write_text(dest, "one")
    files.write_text(dest, "two")
    assert dest.read_text() == "two"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_target(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporary_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.new_temp_file(tmp_path, ".x.", ".part")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
