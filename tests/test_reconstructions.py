"""nsdlib.reconstructions: published reconstruction files read back exactly, bad files refused.

Known answers: random uint8 images written in every supported format (uint8 or 0-1 floats,
channels first or last, .pt or .npy, a folder of PNGs named by nsdId) come back as the same
uint8 images with the same ids. Each bad file gives one error naming what was expected and
what was found.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nsdlib import reconstructions as R

N, SIZE = 6, 12
TEST_IDS = np.array([3, 13, 34, 58, 66, 70, 71, 90])


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def ids():
    return np.array([70, 3, 58, 13, 90, 34])  # not in order: the file's order is the ids' order


def _nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, 3, 1))


def _save(path, arr):
    if path.suffix == ".pt":
        torch.save(torch.from_numpy(np.ascontiguousarray(arr)), path)
    else:
        np.save(path, arr)
    return path


# ------------------------------------------------------------------ formats
FORMATS = {
    "npy uint8 NHWC": (".npy", lambda x: x),
    "npy uint8 NCHW": (".npy", _nchw),
    "npy float32 NCHW in 0-1": (".npy", lambda x: _nchw(x.astype(np.float32) / 255)),
    "npy float64 NHWC in 0-1": (".npy", lambda x: x / 255.0),
    "pt uint8 NCHW": (".pt", _nchw),
    "pt float32 NCHW in 0-1": (".pt", lambda x: _nchw(x.astype(np.float32) / 255)),
    "pt float16 NHWC in 0-1": (".pt", lambda x: (x.astype(np.float32) / 255).astype(np.float16)),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ids_as", ["sidecar .txt", "sidecar .json", "sidecar .npy", "ids argument"])
def test_every_tensor_format_reads_back_exactly(tmp_path, images, ids, fmt, ids_as):
    suffix, make = FORMATS[fmt]
    path = _save(tmp_path / f"recons{suffix}", make(images))
    given = None
    if ids_as == "sidecar .txt":
        (tmp_path / "recons.ids.txt").write_text("# nsdIds, 0-based\n" + "\n".join(map(str, ids)) + "\n")
    elif ids_as == "sidecar .json":
        (tmp_path / "recons.ids.json").write_text(json.dumps(ids.tolist()))
    elif ids_as == "sidecar .npy":
        np.save(tmp_path / "recons.ids.npy", ids)
    else:
        given = ids
    out, got = R.read_reconstructions(path, given, test_ids=TEST_IDS)
    assert out.dtype == np.uint8 and out.shape == (N, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(got, ids)


def test_ids_file_given_by_path_wins_and_commas_are_read(tmp_path, images, ids):
    path = _save(tmp_path / "recons.npy", images)
    (tmp_path / "order.txt").write_text(", ".join(map(str, ids)))
    _, got = R.read_reconstructions(path, tmp_path / "order.txt")
    np.testing.assert_array_equal(got, ids)


@pytest.mark.parametrize("name, expected", [
    ("shared0001_nsd02951.png", 2950), ("nsd02951.png", 2950), ("NSD00001.jpg", 0), ("02951.png", 2950),
    ("73000.png", 72999), ("a_nsd5_nsd7.png", 6), ("recon.png", None), ("img_5.png", None)])
def test_folder_names_are_nsds_one_based_ids(name, expected):
    assert R.folder_image_id(name) == expected


def test_folder_of_images_reads_back_exactly(tmp_path, images, ids):
    folder = tmp_path / "recons"
    folder.mkdir()
    names = [f"shared{k + 1:04d}_nsd{i + 1:05d}.png" for k, i in enumerate(ids)]
    names[1] = f"{ids[1] + 1}.png"  # a bare number, and an image in grey + alpha
    for name, im in zip(names, images):
        Image.fromarray(im).save(folder / name)
    (folder / "README.txt").write_text("not an image: not read")
    out, got = R.read_reconstructions(folder, test_ids=TEST_IDS)
    order = np.argsort([n for n in names])  # sorted file names
    np.testing.assert_array_equal(got, ids[order])
    np.testing.assert_array_equal(out, images[order])
    Image.fromarray(images[0]).convert("LA").save(folder / names[0])
    out, _ = R.read_reconstructions(folder)
    assert out.shape == (N, SIZE, SIZE, 3)


# ---------------------------------------------------------------- bad files
def _err(match, *args, **kw):
    with pytest.raises(R.ReconstructionFileError, match=match) as info:
        R.read_reconstructions(*args, **kw)
    return str(info.value)


@pytest.mark.parametrize("shape", [(N, SIZE, SIZE), (N, 4, SIZE, SIZE), (N, 3, SIZE, 3), (SIZE, SIZE, 3)])
def test_wrong_shape(tmp_path, ids, shape):
    path = _save(tmp_path / "recons.npy", np.zeros(shape, np.uint8))
    msg = _err(r"expected images of shape \(n, 3, h, w\) or \(n, h, w, 3\); found", path, ids)
    assert ("both layouts" in msg) if shape == (N, 3, SIZE, 3) else str(shape) in msg


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, bool])
def test_wrong_dtype(tmp_path, ids, dtype):
    path = _save(tmp_path / "recons.npy", np.zeros((N, SIZE, SIZE, 3), dtype))
    _err(rf"expected uint8 \(0-255\) or floating-point \(0-1\) pixels; found {np.dtype(dtype)}", path, ids)


def test_missing_ids(tmp_path, images):
    path = _save(tmp_path / "recons.pt", _nchw(images))
    _err(r"expected the nsdIds of its 6 images, in order \(--ids FILE, or recons.ids.txt/.json/.npy beside it\); "
         "found none", path)


def test_ids_count_mismatch(tmp_path, images, ids):
    path = _save(tmp_path / "recons.npy", images)
    _err(r"expected one nsdId per image \(6\); found 5", path, ids[:5])


def test_duplicate_ids(tmp_path, images, ids):
    path = _save(tmp_path / "recons.npy", images)
    dup = ids.copy()
    dup[2] = dup[0]
    _err(r"expected each nsdId once; found 1 repeated, such as nsdId 70", path, dup)


def test_ids_not_in_the_test_set(tmp_path, images, ids):
    path = _save(tmp_path / "recons.npy", images)
    bad = ids.copy()
    bad[[1, 4]] = [4, 1000]
    _err(r"expected nsdIds of the 8 test images \(0-based, 3 to 90\); found 2 of 6 that are not, such as "
         r"nsdId 4, nsdId 1000", path, bad, test_ids=TEST_IDS)


@pytest.mark.parametrize("value, what", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_pixels(tmp_path, images, ids, value, what):
    x = images.astype(np.float32) / 255
    x[2, 0, 0, 1] = value
    x[4, 3, 3, 0] = value
    path = _save(tmp_path / "recons.npy", x)
    _err(r"expected finite pixels; found 2 NaN or infinite values in 2 of 6 images", path, ids)


@pytest.mark.parametrize("scale, hint", [(1.0, r"0-255 floats\? save them as uint8"),
                                         (2 / 255, r"-1..1 floats\? map them to 0-1 first")])
def test_values_out_of_range(tmp_path, images, ids, scale, hint):
    x = images.astype(np.float32) * scale
    if scale < 1:
        x -= 1  # -1..1
    path = _save(tmp_path / "recons.pt", _nchw(x))
    _err(rf"expected floating-point pixels in 0-1; found values from -?[\d.]+ to [\d.]+ \({hint}\)", path, ids)


def test_float_rounding_just_outside_0_1_is_clamped(tmp_path, images, ids):
    x = images.astype(np.float32) / 255
    x[0, 0, 0] = [1 + 1e-6, -1e-6, 1 + 0.49 / 255]  # a resampled image's rounding: not an error
    out, _ = R.read_reconstructions(_save(tmp_path / "recons.npy", x), ids)
    assert list(out[0, 0, 0]) == [255, 0, 255]
    np.testing.assert_array_equal(out[1:], images[1:])
    x[0, 0, 0, 0] = 1 + 0.51 / 255
    _err(r"expected floating-point pixels in 0-1; found values from -1e-06 to 1.002", _save(tmp_path / "r.npy", x), ids)


@dataclasses.dataclass
class _Custom:
    images: object


def test_a_pt_file_that_needs_pickle_is_refused(tmp_path, images, ids):
    path = tmp_path / "recons.pt"
    torch.save(_Custom(torch.from_numpy(images)), path)
    _err(r"expected a tensor saved with torch.save\(tensor\), read with torch.load\(weights_only=True\); "
         r"found a file that needs pickle \(it holds test_reconstructions._Custom\)", path, ids)


def test_a_pt_file_holding_a_dict_is_refused(tmp_path, images, ids):
    path = tmp_path / "recons.pt"
    torch.save({"recons": torch.from_numpy(images), "ids": torch.from_numpy(ids)}, path)
    _err("expected one tensor of images; found a dict with keys recons, ids", path, ids)


def test_an_npy_file_that_needs_pickle_is_refused(tmp_path, ids):
    path = tmp_path / "recons.npy"
    np.save(path, np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    _err(r"expected a plain .npy array \(read without pickle\); found one that needs pickle", path, ids)


def test_other_suffixes_and_missing_paths(tmp_path, ids):
    (tmp_path / "recons.h5").write_bytes(b"")
    _err("expected a .pt or .npy file or a folder of images; found a .h5 file", tmp_path / "recons.h5", ids)
    with pytest.raises(FileNotFoundError, match="no reconstructions at"):
        R.read_reconstructions(tmp_path / "absent.pt", ids)


def test_bad_ids_files(tmp_path, images, ids):
    path = _save(tmp_path / "recons.npy", images)
    (tmp_path / "ids.txt").write_text("1 2 three")
    _err("ids.txt: expected a list of integer nsdIds; found a file that does not parse", path, tmp_path / "ids.txt")
    (tmp_path / "ids.json").write_text(json.dumps([1.5] * N))
    _err("expected integer nsdIds; found non-integer values such as 1.5", path, tmp_path / "ids.json")
    (tmp_path / "ids.json").write_text(json.dumps({"ids": ids.tolist()}))
    _err(r"expected a 1-D list of integer nsdIds; found object values of shape \(\)", path, tmp_path / "ids.json")
    (tmp_path / "ids.csv").write_text("1")
    _err("expected an ids file ending in .txt, .json, .npy; found .csv", path, tmp_path / "ids.csv")
    _err(r"expected 0-based nsdIds \(>= 0\); found -1", path, np.array([-1, 2, 3, 4, 5, 6]))
    _err("expected an ids file at", path, tmp_path / "absent.txt")
    np.save(tmp_path / "recons.ids.npy", ids)
    (tmp_path / "recons.ids.txt").write_text(" ".join(map(str, ids)))
    _err(r"expected one ids file beside it; found 2 \(recons.ids.txt, recons.ids.npy\)", path)


def test_bad_folders(tmp_path, images, ids):
    folder = tmp_path / "recons"
    folder.mkdir()
    _err("expected image files .* named by NSD's 1-based 73k id.*; found none", folder)
    Image.fromarray(images[0]).save(folder / "nsd00004.png")
    Image.fromarray(images[1]).save(folder / "recon_a.png")
    _err("expected every image named by NSD's 1-based 73k id.*; found 1 that are not, such as recon_a.png", folder)
    (folder / "recon_a.png").unlink()
    Image.fromarray(images[1]).save(folder / "0004.jpg")
    _err(r"expected each nsdId once; found 1 repeated, such as nsdId 3 \(named 4\)", folder)
    (folder / "0004.jpg").unlink()
    Image.fromarray(images[1, :8]).save(folder / "nsd00014.png")
    _err("expected images of one size; found 12x12 \\(nsd00004.png\\) and 12x8 \\(nsd00014.png\\)", folder)
    (folder / "nsd00014.png").unlink()
    _err("a folder's images are named by their ids; expected no --ids with a folder, found one", folder, ids)
    _err(r"found 1 of 1 that are not, such as nsdId 3 \(named 4\)", folder, test_ids=[13])


def test_a_pt_file_that_is_not_a_torch_file(tmp_path, ids):
    (tmp_path / "recons.pt").write_text("not a tensor")
    _err("found a file that does not load as a torch tensor file", tmp_path / "recons.pt", ids)


@pytest.mark.parametrize("fmt", ["npy float32 NCHW in 0-1", "pt uint8 NCHW"])
def test_images_come_back_in_c_order(tmp_path, images, ids, fmt):
    suffix, make = FORMATS[fmt]  # the pixel metrics' last bits depend on the memory layout
    out, _ = R.read_reconstructions(_save(tmp_path / f"recons{suffix}", make(images)), ids)
    assert out.flags["C_CONTIGUOUS"]
