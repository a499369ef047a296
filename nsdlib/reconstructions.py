"""Reconstructions published by others, read from the files they are published in.

:func:`read_reconstructions` reads one set of reconstructed images and the NSD image id of
each, and returns them as a uint8 image batch (:mod:`nsdlib.images`'s convention) with
0-based ``nsdId`` s (rows of ``imgBrick``, the ``nsdId`` column of
``nsd_stim_info_merged.csv``, nsdlib's ``test_ids``). ``nsdlib score``
(:func:`nsdlib.pipeline.rescore.score_file`) scores them against the test stimuli.

Formats
-------
A tensor file
    ``.pt`` (read with ``torch.load(weights_only=True)``; a file that needs pickle is refused)
    or ``.npy`` (``np.load(allow_pickle=False)``) holding one array of shape
    ``(n, 3, h, w)`` or ``(n, h, w, 3)``: uint8 in 0-255, or floating point in 0-1 (rounded
    to 0-255 by :func:`nsdlib.images.to_uint8`; values less than half a level outside 0-1, the
    float rounding of a resampled image, are clamped). The order of its images is given by an ids
    file: ``ids=`` (``nsdlib score --ids``) or, when not given, a sidecar beside the file
    named ``<stem>.ids.txt``, ``<stem>.ids.json`` or ``<stem>.ids.npy`` (``recons.pt`` ->
    ``recons.ids.txt``). An ids file holds 0-based nsdIds, one per image in the file's order:
    ``.txt`` whitespace- or comma-separated integers (``#`` starts a comment), ``.json`` a
    list of integers, ``.npy`` a 1-D integer array.
A folder of images
    ``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.tif``/``.tiff`` or ``.webp`` files (other files
    are not read), each named by its image: the number after the last ``nsd`` in the file's
    stem (``shared0001_nsd02951.png``, ``nsd02951.png``), or the whole stem when it is a
    number (``02951.png``). That number is NSD's **1-based** 73k id, as NSD writes it in its
    own file names (its ``shared1000/`` folder) and in ``nsd_expdesign.mat``:
    ``shared0001_nsd02951.png`` is nsdId 2950. Every image must have the same size; grey or
    RGBA images are converted to RGB by Pillow.

Every bad file raises one :class:`ReconstructionFileError` naming what was expected and
what was found: a wrong shape or dtype, NaN or infinite pixels, values out of range, no
ids, a count of ids that is not the count of images, duplicate ids, and (given
``test_ids``) ids that are not test images.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np

from .guard import reading
from .images import check_images, to_uint8

__all__ = [
    "IMAGE_SUFFIXES",
    "TENSOR_SUFFIXES",
    "ReconstructionFileError",
    "check_test_ids",
    "folder_image_id",
    "read_ids",
    "read_reconstructions",
    "sidecar_ids",
]

TENSOR_SUFFIXES = (".pt", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_IDS_SUFFIXES = (".txt", ".json", ".npy")
#: Float pixels this far outside 0-1 (half a uint8 level) are clamped, not refused: a resampled
#: image's float rounding (1.0000001 after a bilinear resize) rounds to 0 or 255 anyway.
_SLACK = 0.5 / 255
_NAME_RULE = ("named by NSD's 1-based 73k id: the number after the last 'nsd' in the name "
              "(shared0001_nsd02951.png, nsd02951.png) or a name that is a number (02951.png)")


class ReconstructionFileError(ValueError):
    """A reconstruction file (or its ids) is not what :func:`read_reconstructions` reads."""


# ---------------------------------------------------------------------- ids
def sidecar_ids(path) -> Path | None:
    """The ids file beside a tensor file (``<stem>.ids.txt``, ``.json`` or ``.npy``), or None.

    Raises
    ------
    ReconstructionFileError
        More than one sidecar exists (which one holds the order is unclear).
    """
    path = Path(path)
    found = [p for p in (path.with_name(f"{path.stem}.ids{s}") for s in _IDS_SUFFIXES) if p.is_file()]
    if len(found) > 1:
        raise ReconstructionFileError(f"{path}: expected one ids file beside it; found {len(found)} "
                                      f"({', '.join(p.name for p in found)}); pass the right one with --ids")
    return found[0] if found else None


def read_ids(source) -> np.ndarray:
    """0-based nsdIds from an ids file (``.txt``, ``.json``, ``.npy``) or an array-like.

    Returns
    -------
    ndarray of int64, shape (n_ids,)

    Raises
    ------
    ReconstructionFileError
        An unknown suffix, a file that does not parse, values that are not whole numbers
        >= 0, or not a 1-D list.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ReconstructionFileError(f"expected an ids file at {path}; found none")
        raw, where = _load_ids(path), str(path)
    else:
        raw, where = source, "the ids given"
    arr = np.asarray(raw)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or arr.size == 0:
        raise ReconstructionFileError(f"{where}: expected a 1-D list of integer nsdIds; found "
                                      f"{arr.dtype} values of shape {arr.shape}")
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ReconstructionFileError(f"{where}: expected integer nsdIds; found non-integer values "
                                      f"such as {arr[~(np.isfinite(arr) & (arr == np.round(arr)))][0]}")
    ids = arr.astype(np.int64)
    if ids.min() < 0:
        raise ReconstructionFileError(f"{where}: expected 0-based nsdIds (>= 0); found {ids.min()}")
    return ids


def _load_ids(path: Path):
    try:
        if path.suffix == ".txt":
            text = " ".join(line.split("#")[0] for line in path.read_text().splitlines())
            return [float(t) for t in text.replace(",", " ").split()]
        if path.suffix == ".json":
            return json.loads(path.read_text())
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ReconstructionFileError(f"{path}: expected a list of integer nsdIds; found a file that "
                                      f"does not parse ({exc})") from None
    raise ReconstructionFileError(f"{path}: expected an ids file ending in {', '.join(_IDS_SUFFIXES)}; "
                                  f"found {path.suffix or 'no suffix'}")


# ------------------------------------------------------------------ tensors
def _load_tensor(path: Path) -> np.ndarray:
    """The one array of a ``.npy`` or ``.pt`` file, as numpy (float16/bfloat16 as float32)."""
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ReconstructionFileError(f"{path}: expected a plain .npy array (read without pickle); "
                                          f"found one that needs pickle or does not parse ({exc})") from None
    import torch  # deferred: torch is only needed for .pt files

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        found = (f"a file that needs pickle (it holds {needs.group(1)})" if needs
                 else "a file that does not load as a torch tensor file")
        raise ReconstructionFileError(
            f"{path}: expected a tensor saved with torch.save(tensor), read with torch.load(weights_only=True); "
            f"found {found}. Save the images as a plain tensor or as .npy") from None
    if not isinstance(obj, torch.Tensor):
        what = f"a dict with keys {', '.join(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__
        raise ReconstructionFileError(f"{path}: expected one tensor of images; found {what}")
    if obj.dtype in (torch.float16, torch.bfloat16):
        obj = obj.float()
    return obj.numpy()


def _to_nhwc(arr: np.ndarray, where: str) -> np.ndarray:
    shape = arr.shape
    nchw = arr.ndim == 4 and shape[1] == 3
    nhwc = arr.ndim == 4 and shape[3] == 3
    if nchw == nhwc:  # neither, or both (ambiguous)
        found = "both layouts at once" if nchw else f"shape {shape}"
        raise ReconstructionFileError(f"{where}: expected images of shape (n, 3, h, w) or (n, h, w, 3); found {found}")
    return np.moveaxis(arr, 1, 3) if nchw else arr


def _to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """uint8 as it is; floats checked (finite, in 0-1) and rounded to 0-255."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind != "f":
        raise ReconstructionFileError(f"{where}: expected uint8 (0-255) or floating-point (0-1) pixels; "
                                      f"found {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        n_img = int(bad.reshape(len(arr), -1).any(axis=1).sum())
        raise ReconstructionFileError(f"{where}: expected finite pixels; found {int(bad.sum())} NaN or infinite "
                                      f"values in {n_img} of {len(arr)} images")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_SLACK or hi > 1 + _SLACK:
        hint = " (0-255 floats? save them as uint8)" if hi > 1.5 else " (-1..1 floats? map them to 0-1 first)" \
            if lo < -0.5 else ""
        raise ReconstructionFileError(f"{where}: expected floating-point pixels in 0-1; found values from "
                                      f"{lo:g} to {hi:g}{hint}")
    import torch  # deferred: the rounding of nsdlib.images.to_uint8 works on tensors

    return to_uint8(torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, 3, 1))))


# ------------------------------------------------------------------ folders
def folder_image_id(name: str) -> int | None:
    """The 0-based nsdId of an image file named by NSD's 1-based 73k id, or None.

    ``shared0001_nsd02951.png`` -> 2950, ``nsd02951.png`` -> 2950, ``02951.png`` -> 2950.
    """
    stem = Path(name).stem
    m = re.search(r"nsd(\d+)(?!.*nsd)", stem, flags=re.IGNORECASE)
    number = m.group(1) if m else (stem if stem.isdigit() else None)
    return None if number is None else int(number) - 1


def _read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # deferred: Pillow is only needed for folders of images

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReconstructionFileError(f"{folder}: expected image files ({', '.join(IMAGE_SUFFIXES)}) {_NAME_RULE}; "
                                      "found none")
    unnamed = [p.name for p in files if folder_image_id(p.name) is None or folder_image_id(p.name) < 0]
    if unnamed:
        raise ReconstructionFileError(f"{folder}: expected every image {_NAME_RULE}; found {len(unnamed)} that "
                                      f"are not, such as {unnamed[0]}")
    images, sizes = [], {}
    for p in files:
        with reading(p, "an image file (PNG, JPEG...)", "replace the file, or leave it out of the folder"), \
                Image.open(p) as im:
            images.append(np.asarray(im.convert("RGB")))
        sizes.setdefault(images[-1].shape[:2], p.name)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise ReconstructionFileError(f"{folder}: expected images of one size; found {s1[1]}x{s1[0]} ({f1}) and "
                                      f"{s2[1]}x{s2[0]} ({f2})")
    return np.stack(images), np.array([folder_image_id(p.name) for p in files], dtype=np.int64)


# --------------------------------------------------------------------- read
def read_reconstructions(source, ids=None, *, test_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructed images and their nsdIds, from a tensor file or a folder of images.

    Parameters
    ----------
    source : str or Path
        A ``.pt`` or ``.npy`` file, or a folder of images named by their ids (see the
        module's docstring for the formats and the naming rule).
    ids : str, Path or array-like of int, optional
        For a tensor file: the 0-based nsdId of each image, in the file's order (an ids
        file or the ids themselves); default the sidecar ``<stem>.ids.{txt,json,npy}``.
        A folder's ids come from its file names, so ``ids`` must not be given with one.
    test_ids : array-like of int, optional
        The test set's nsdIds; every id read must be one of them.

    Returns
    -------
    images : ndarray of uint8, shape (n_images, height, width, 3)
    ids : ndarray of int64, shape (n_images,)
        0-based nsdIds, one per image (a folder's in the order of its sorted file names).

    Raises
    ------
    FileNotFoundError
        Nothing at ``source``.
    ReconstructionFileError
        One per bad file, naming what was expected and what was found.
    """
    path = Path(source)
    if path.is_dir():
        if ids is not None:
            raise ReconstructionFileError(f"{path}: a folder's images are named by their ids; expected no "
                                          "--ids with a folder, found one")
        images, got = _read_folder(path)
        where = f"{path}: image names"
    elif path.is_file():
        if path.suffix.lower() not in TENSOR_SUFFIXES:
            raise ReconstructionFileError(f"{path}: expected a {' or '.join(TENSOR_SUFFIXES)} file or a folder "
                                          f"of images; found a {path.suffix or 'suffix-less'} file")
        arr = _to_nhwc(_load_tensor(path), str(path))
        if len(arr) == 0:
            raise ReconstructionFileError(f"{path}: expected at least one image; found none (shape {arr.shape})")
        images = _to_uint8(arr, str(path))
        given = ids if ids is not None else sidecar_ids(path)
        if given is None:
            raise ReconstructionFileError(
                f"{path}: expected the nsdIds of its {len(images)} images, in order (--ids FILE, or "
                f"{path.stem}.ids.txt/.json/.npy beside it); found none")
        got = read_ids(given)
        where = str(given) if isinstance(given, (str, Path)) else f"{path}: its ids"
    else:
        raise FileNotFoundError(f"no reconstructions at {path}: expected a .pt or .npy file or a folder of images")
    _check_ids(got, len(images), where, one_based=path.is_dir())
    if test_ids is not None:
        check_test_ids(got, test_ids, where, one_based=path.is_dir())
    # C order, as the pipeline's own images: the pixel metrics' last bits depend on the memory layout
    return np.ascontiguousarray(check_images(images, f"reconstructions in {path}")), got


def _check_ids(ids: np.ndarray, n_images: int, where: str, one_based: bool) -> None:
    if len(ids) != n_images:
        raise ReconstructionFileError(f"{where}: expected one nsdId per image ({n_images}); found {len(ids)}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ReconstructionFileError(f"{where}: expected each nsdId once; found {len(dup)} repeated, such as "
                                      f"{_show(dup[0], one_based)}")


def check_test_ids(ids, test_ids, where: str, *, one_based: bool = False) -> None:
    """Raise unless every id is one of ``test_ids``.

    Parameters
    ----------
    ids, test_ids : array-like of int
        0-based nsdIds read, and those of the test images.
    where : str
        The file, for the message.
    one_based : bool
        The ids were read from names holding 1-based ids (a folder): the message shows both.

    Raises
    ------
    ReconstructionFileError
        Naming how many ids are not test images, a few of them, and the test set's range.
    """
    ids, test = np.asarray(ids, dtype=np.int64), np.asarray(test_ids, dtype=np.int64)
    out = ids[~np.isin(ids, test)]
    if len(out):
        shown = ", ".join(_show(i, one_based) for i in out[:5])
        raise ReconstructionFileError(
            f"{where}: expected nsdIds of the {len(test)} test images (0-based, {test.min()} to {test.max()}); "
            f"found {len(out)} of {len(ids)} that are not, such as {shown} (nsdlib score --only-test-images "
            "scores the others alone)")


def _show(i, one_based: bool) -> str:
    return f"nsdId {int(i)} (named {int(i) + 1})" if one_based else f"nsdId {int(i)}"
