"""The command line's contract under bad paths and bad values: one line, exit 2, before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _table import record

from nsdlib.cli import main

BOOK = Path(__file__).resolve().parents[2]


def _unwritable(tmp_path) -> Path:
    """A folder no file can be created in (root ignores permissions: /sys refuses everyone)."""
    if os.geteuid() == 0:
        return Path("/sys/nsdlib-faults")
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    return ro


def _one_line(capsys) -> str:
    """The one line on stderr (progress bars aside, which a terminal redraws in place)."""
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "it/s]" not in ln]
    assert len(err) == 1, f"expected one line on stderr; found {len(err)}: {err[:5]}"
    return err[0]


@pytest.mark.fault("paths")
@pytest.mark.parametrize("where", ["unwritable", "under a file"])
@pytest.mark.parametrize("command", ["run", "batch", "workdir", "mini generate"])
def test_bad_paths_give_one_line_and_exit_2(tmp_path, capsys, where, command):
    (tmp_path / "a-file").write_text("not a folder")
    bad = (_unwritable(tmp_path) if where == "unwritable" else tmp_path / "a-file") / "x"
    w = str(tmp_path / "w")
    argv = {"run": ["run", "--workdir", w, "--notebooks", "10", "--runs", str(bad), "--book-root", str(BOOK)],
            "batch": ["batch", "--subjects", "1", "--workdir", w, "--runs", str(bad), "--book-root", str(BOOK)],
            "workdir": ["run", "--workdir", str(bad), "--notebooks", "10", "--book-root", str(BOOK)],
            "mini generate": ["mini", "generate", "--root", str(bad / "mini-nsd")]}[command]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert str(bad)[:-2] in line and "not a writable folder" in line, line
    record("paths", line)


@pytest.mark.fault("arguments")
@pytest.mark.parametrize("args, says", [
    (["--param", "seed=-1"], "seed must be an integer in 0..4294967295; found '-1'"),
    (["--notebooks", "5-3"], "--notebooks range '5-3' runs backwards; write it low-high, such as 03-05"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys, args, says):
    runs = tmp_path / "runs"
    assert main(["run", "--workdir", str(tmp_path / "w"), "--runs", str(runs), "--book-root", str(BOOK), *args]) == 2
    assert _one_line(capsys) == f"nsdlib: error: {says}"
    assert not runs.exists()  # nothing ran
    record("arguments")
