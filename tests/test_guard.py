"""The reading guard: a library's decoding error becomes one line naming the file, what was expected
and the fix; missing files and nsdlib's own errors pass through unchanged."""

import json
import zipfile

import numpy as np
import pytest

from nsdlib.guard import CorruptFileError, reading
from nsdlib.nsd import check_subject


def test_a_decoding_error_becomes_one_line_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip\nsecond line")
    with pytest.raises(CorruptFileError) as err, reading(path, "an .npz of arrays", "delete it"):
        np.load(path, allow_pickle=False)
    assert str(err.value).startswith(f"{path} is damaged: expected an .npz of arrays; found ")
    assert str(err.value).endswith(". Fix: delete it") and "\n" not in str(err.value)
    assert isinstance(err.value.__cause__, (zipfile.BadZipFile, ValueError, OSError))
    assert (err.value.path, err.value.expected, err.value.fix) == (str(path), "an .npz of arrays", "delete it")


def test_long_library_messages_are_cut(tmp_path):
    with pytest.raises(CorruptFileError) as err, reading(tmp_path / "x.json", "JSON", "fix"):
        raise json.JSONDecodeError("x" * 1000, "doc", 0)
    assert len(str(err.value)) < 300 and "..." in str(err.value)


def test_missing_files_and_nsdlibs_own_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError), reading(tmp_path / "absent.npz", "arrays", "fix"):
        np.load(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="use 1, 2, 5 or 7") as err, reading(tmp_path / "f", "a", "fix"):
        check_subject(3)  # nsdlib's own check, raised inside nsdlib
    assert not isinstance(err.value, CorruptFileError)
    with pytest.raises(KeyboardInterrupt), reading(tmp_path / "f", "arrays", "fix"):
        raise KeyboardInterrupt
