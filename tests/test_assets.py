import io
import urllib.error

import pytest

from nsdlib import assets


def test_missing_asset_names_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path))
    with pytest.raises(assets.MissingAssetError, match="`nsdlib fetch vdvae`"):
        assets.require("vdvae")
    assert not assets.available("clip")


def test_a_whole_partial_download_is_finished_not_refetched(monkeypatch, tmp_path):
    dest = tmp_path / "w.bin"
    (tmp_path / "w.bin.part").write_bytes(b"12345")

    ranges = []

    def range_not_satisfiable(req, timeout):
        ranges.append(req.headers["Range"])
        raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable", {}, io.BytesIO())

    monkeypatch.setattr(assets.urllib.request, "urlopen", range_not_satisfiable)
    assert assets.download("http://example.invalid/w.bin", dest, expected_size=5) == dest
    assert ranges == ["bytes=5-"]
    assert dest.read_bytes() == b"12345" and not (tmp_path / "w.bin.part").exists()
    (tmp_path / "x.bin.part").write_bytes(b"123")
    with pytest.raises(OSError, match="has 3 bytes but .* should have 5"):
        assets.download("http://example.invalid/x.bin", tmp_path / "x.bin", expected_size=5)
