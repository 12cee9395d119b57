"""The one atomic writer: a file's permissions are those open() would give, and a failed write keeps
the previous file."""

import os

import pytest

from daamlab.io import atomic_write, write_text


def test_written_files_are_readable_as_the_umask_allows(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "metrics.json"
    write_text(path, "{}")
    reference = tmp_path / "plain.txt"
    reference.write_text("{}")  # open() under the same umask
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
    assert path.stat().st_mode & 0o044  # the group and others may read results, not only the owner


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "report.md"
    write_text(path, "old")

    def broken(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
