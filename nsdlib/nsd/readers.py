"""Readers of NSD's files, in NSD's formats: design, ROIs, betas, stimuli, captions.

Every reader takes an :class:`~nsdlib.nsd.NSDLayout` (a local folder or a remote root read
through its cache) and checks what it reads, naming the file and what was expected. The
betas are streamed, a chunk of trials at a time (:func:`iter_session_betas`), so no reader
holds a session in memory.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..guard import reading
from ..images import resize
from .layout import BETA_SCALE, NSDDataError, NSDLayout, check_subject

__all__ = [
    "BetaHeader",
    "ExpDesign",
    "TrialSchedule",
    "fortran_index",
    "iter_session_betas",
    "read_beta_header",
    "read_beta_volume",
    "read_captions",
    "read_expdesign",
    "read_roi",
    "read_stim_info",
    "read_stimuli",
    "trial_schedule",
]


@dataclasses.dataclass(frozen=True)
class ExpDesign:
    """``nsd_expdesign.mat``, with the 1-based conventions of the file kept.

    Attributes
    ----------
    masterordering : ndarray of shape (n_trials,)
        For each trial, the 1-based index into a subject's row of ``subjectim``.
    subjectim : ndarray of shape (8, n_images_per_subject)
        1-based 73k ids of the images each subject saw.
    sharedix : ndarray of shape (n_shared,)
        1-based 73k ids of the shared images.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray


def read_expdesign(layout: NSDLayout) -> ExpDesign:
    """Read and check ``nsd_expdesign.mat``."""
    import scipy.io

    path = layout.local_path(layout.EXPDESIGN, "experimental design (nsd_expdesign.mat)")
    with reading(path, "a MATLAB 5 file (nsd_expdesign.mat)", layout.repair_hint(layout.EXPDESIGN)):
        mat = scipy.io.loadmat(path)
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        found = ", ".join(k for k in mat if not k.startswith("__"))
        raise NSDDataError(f"{path} lacks {', '.join(missing)}; found {found}")
    mo = np.asarray(mat["masterordering"]).astype(np.int64).ravel()
    si = np.asarray(mat["subjectim"]).astype(np.int64)
    sh = np.asarray(mat["sharedix"]).astype(np.int64).ravel()
    if si.ndim != 2:
        raise NSDDataError(f"subjectim in {path} must be 2-D (subjects x images); found shape {si.shape}")
    if mo.min() < 1 or mo.max() > si.shape[1]:
        raise NSDDataError(f"masterordering in {path} must hold 1-based indices in 1..{si.shape[1]}; "
                           f"found {mo.min()}..{mo.max()}")
    if si.min() < 1:
        raise NSDDataError(f"subjectim in {path} must hold 1-based 73k ids; found a minimum of {si.min()}")
    return ExpDesign(mo, si, sh)


@dataclasses.dataclass(frozen=True)
class TrialSchedule:
    """The trials of one subject in chronological order.

    Attributes
    ----------
    ids : ndarray of shape (n_trials,), int64
        0-based 73k id (row of ``imgBrick``, ``nsdId``) shown on each trial.
    shared : ndarray of shape (n_trials,), bool
        Whether the image is one of the shared images (the test set).
    session : ndarray of shape (n_trials,), int64
        1-based session of each trial.
    """

    ids: np.ndarray
    shared: np.ndarray
    session: np.ndarray

    def occurrences(self, image_id: int) -> list[tuple[int, int]]:
        """Where an image was shown: (session, trial within the session) of each repeat."""
        idx = np.flatnonzero(self.ids == int(image_id))
        starts = np.searchsorted(self.session, self.session[idx])
        return [(int(self.session[i]), int(i - s)) for i, s in zip(idx, starts)]


def trial_schedule(design: ExpDesign, subject: int, n_sessions: int, trials_per_session: int) -> TrialSchedule:
    """Map a subject's first ``n_sessions`` sessions of trials to 0-based 73k ids."""
    subject = check_subject(subject)
    n = n_sessions * trials_per_session
    if n > design.masterordering.size:
        raise NSDDataError(f"{n_sessions} sessions x {trials_per_session} trials = {n} trials, but the "
                           f"design's masterordering lists {design.masterordering.size}")
    if subject > design.subjectim.shape[0]:
        raise NSDDataError(f"subjectim has {design.subjectim.shape[0]} rows; subject {subject} needs row {subject}")
    ids = design.subjectim[subject - 1, design.masterordering[:n] - 1] - 1
    shared = np.isin(ids, design.sharedix - 1)
    session = np.repeat(np.arange(1, n_sessions + 1, dtype=np.int64), trials_per_session)
    return TrialSchedule(ids.astype(np.int64), shared, session)



def read_roi(layout: NSDLayout, subject: int, name: str = "nsdgeneral") -> np.ndarray:
    """The ROI volume (X, Y, Z) of a subject, as int (nsdgeneral: -1 outside the brain, 0, 1)."""
    import nibabel as nib

    rel = layout.roi_file(subject, name)
    path = layout.local_path(rel, f"{name} ROI of subject {subject}", subject)
    with reading(path, "a gzipped NIfTI-1 ROI volume", layout.repair_hint(rel, subject)):
        data = np.asarray(nib.load(str(path)).dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NSDDataError(f"{path} must be a 3-D volume; found shape {data.shape}")
    return np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class BetaHeader:
    """What the NIfTI header of a betas file says: grid, trial count, storage."""

    path: Path
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    offset: int
    slope: float | None
    inter: float | None

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.shape[:3]

    @property
    def n_trials(self) -> int:
        return self.shape[3]


def _open_stream(path: Path):
    raw = open(path, "rb")
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


def _read_header(fh, path: Path, fix: str) -> BetaHeader:
    import nibabel as nib

    with reading(path, "a NIfTI-1 betas file (X, Y, Z, trials)", fix):
        hdr = nib.Nifti1Header.from_fileobj(fh)
    shape = tuple(int(x) for x in hdr.get_data_shape())
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4:
        raise NSDDataError(f"{path} must be a 4-D volume (X, Y, Z, trials); found shape {shape}")
    slope, inter = hdr.get_slope_inter()
    return BetaHeader(path, shape, hdr.get_data_dtype(), int(hdr.get_data_offset()),
                      None if slope is None else float(slope), None if inter is None else float(inter))


def read_beta_header(layout: NSDLayout, subject: int, session: int) -> BetaHeader:
    """The header of one session's betas file (downloading it first for a remote root)."""
    rel = layout.betas_file(subject, session)
    path = layout.local_path(rel, f"betas of subject {subject} session {session}", subject, session)
    with _open_stream(path) as fh:
        return _read_header(fh, path, layout.repair_hint(rel, subject, session))


def _readinto_full(fh, view: memoryview, piece: int = 4 << 20) -> int:
    """Fill ``view`` from ``fh``, at most ``piece`` bytes per call.

    A gzip stream's ``readinto`` reads into a temporary bytes object of the requested size
    and copies it, so asking for the whole buffer at once would double its memory.
    """
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:got + piece])
        if not n:
            break
        got += n
    return got


def iter_session_betas(layout: NSDLayout, subject: int, session: int, voxels: np.ndarray | None = None,
                       *, chunk_mb: float = 32.0, start: int = 0, stop: int | None = None,
                       ) -> Iterator[tuple[int, np.ndarray]]:
    """Stream one session's betas, a chunk of trials at a time, as stored (not divided by 300).

    The file is read sequentially (gzip-decompressed on the fly), ``chunk_mb`` of volumes
    at a time, so memory never holds the session.

    Parameters
    ----------
    voxels : ndarray of int, optional
        Flat indices, in the NIfTI's Fortran order, of the voxels to keep (see
        :func:`fortran_index`); all voxels when omitted.
    start, stop : int
        Trial range to read (``stop`` default: all).

    Yields
    ------
    first : int
        Index of the chunk's first trial within the session.
    values : ndarray of shape (n_chunk_trials, n_voxels), float32
        Stored values (int16 betas are percent signal change x 300) with the NIfTI
        scaling applied if the header sets one.
    """
    rel = layout.betas_file(subject, session)
    path = layout.local_path(rel, f"betas of subject {subject} session {session}", subject, session)
    fix = layout.repair_hint(rel, subject, session)
    with _open_stream(path) as fh:
        h = _read_header(fh, path, fix)
        n_vox = int(np.prod(h.grid))
        frame = n_vox * h.dtype.itemsize
        stop = h.n_trials if stop is None else min(stop, h.n_trials)
        fh.seek(h.offset + start * frame)
        per = max(1, min(int(chunk_mb * (1 << 20) // frame), stop - start))
        buf = bytearray(per * frame)
        t = start
        while t < stop:
            k = min(per, stop - t)
            with reading(path, f"{h.n_trials} trials of {h.grid} voxels", fix):
                got = _readinto_full(fh, memoryview(buf)[: k * frame])
            if got != k * frame:
                raise NSDDataError(f"{path} ends early: trial {t + got // frame} of {h.n_trials} "
                                   f"is incomplete (a truncated download?). Fix: {fix}")
            raw = np.frombuffer(buf, dtype=h.dtype, count=k * n_vox).reshape(k, n_vox)
            vals = (raw if voxels is None else raw[:, voxels]).astype(np.float32)
            if h.slope is not None:
                vals *= np.float32(h.slope)
                vals += np.float32(h.inter or 0.0)
            yield t, vals
            t += k


def fortran_index(mask: np.ndarray) -> np.ndarray:
    """Flat indices in Fortran (NIfTI) order of ``mask``'s voxels, listed in C order.

    The voxel order is the order of ``volume[mask]`` for a volume read with nibabel.
    """
    return np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F").astype(np.int64)


def read_beta_volume(layout: NSDLayout, subject: int, session: int, trial: int) -> np.ndarray:
    """One trial's beta volume (X, Y, Z), float32, in percent signal change."""
    h = read_beta_header(layout, subject, session)
    if not 0 <= trial < h.n_trials:
        raise NSDDataError(f"trial must be in 0..{h.n_trials - 1} for {h.path}; found {trial}")
    _, vals = next(iter_session_betas(layout, subject, session, start=trial, stop=trial + 1))
    return (vals[0] / np.float32(BETA_SCALE)).reshape(h.grid, order="F")


def read_stim_info(layout: NSDLayout):
    """``nsd_stim_info_merged.csv`` as a DataFrame indexed by ``nsdId`` (0-based 73k id)."""
    import pandas as pd

    path = layout.local_path(layout.STIM_INFO, "stimulus information (nsd_stim_info_merged.csv)")
    with reading(path, "a CSV table (nsd_stim_info_merged.csv)", layout.repair_hint(layout.STIM_INFO)):
        df = pd.read_csv(path)
    missing = [c for c in ("nsdId", "cocoId", "cocoSplit") if c not in df.columns]
    if missing:
        raise NSDDataError(f"{path} lacks column(s) {', '.join(missing)}")
    return df.set_index("nsdId", drop=False)


def read_stimuli(layout: NSDLayout, ids: Sequence[int], size: int | None = None,
                 progress: bool = True) -> np.ndarray:
    """Stimuli by 0-based 73k id, read image by image from ``imgBrick``.

    Parameters
    ----------
    ids : sequence of int
        0-based 73k ids, in the order wanted (repeats allowed).
    size : int, optional
        Output side in pixels; images are resized with Pillow's bicubic filter, whose
        support widens when shrinking (antialiased). Default: the stored size.

    Returns
    -------
    ndarray of shape (n, size, size, 3), uint8
    """
    import h5py
    from tqdm.auto import tqdm

    ids = np.asarray(ids, dtype=np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    fix = layout.repair_hint(layout.STIMULI)
    with layout.open_random_access(layout.STIMULI, "stimuli (nsd_stimuli.hdf5)") as fobj, \
            reading(layout.display(layout.STIMULI), "an HDF5 file holding imgBrick", fix), h5py.File(fobj, "r") as f:
        if "imgBrick" not in f:
            raise NSDDataError(f"{layout.display(layout.STIMULI)} has no dataset 'imgBrick'; found {list(f)}")
        brick = f["imgBrick"]
        if brick.ndim != 4 or brick.shape[3] != 3:
            raise NSDDataError(f"imgBrick must be (n, H, W, 3); found {brick.shape}")
        if uniq.size and (uniq[0] < 0 or uniq[-1] >= brick.shape[0]):
            raise NSDDataError(f"stimulus ids must be in 0..{brick.shape[0] - 1}; found {uniq[0]}..{uniq[-1]}")
        side = int(size) if size is not None else int(brick.shape[1])
        out = np.empty((uniq.size, side, side, 3), dtype=np.uint8)
        for j, i in enumerate(tqdm(uniq, desc="stimuli", disable=not progress, leave=False)):
            img = np.asarray(brick[int(i)], dtype=np.uint8)
            out[j] = resize(img[None], side, filter="pil-bicubic")[0]  # unchanged at the stored size
    if uniq.size == ids.size and np.array_equal(uniq, ids):
        return out
    return out[inverse.ravel()]


def read_captions(layout: NSDLayout, ids: Sequence[int], max_captions: int = 5) -> list[list[str]]:
    """COCO captions of each 0-based 73k id, linked through ``nsd_stim_info_merged.csv``.

    Captions of an image are ordered by COCO annotation id and cut to ``max_captions``
    (a few COCO images have six or seven).
    """
    info = read_stim_info(layout)
    ids = [int(i) for i in ids]
    unknown = sorted(set(ids) - set(info.index))
    if unknown:
        raise NSDDataError(f"nsdId(s) {unknown[:5]} are not in {layout.display(layout.STIM_INFO)}")
    rows = info.loc[ids]
    wanted: dict[str, set[int]] = {}
    for coco_id, split in zip(rows["cocoId"].astype(int), rows["cocoSplit"].astype(str)):
        wanted.setdefault(split, set()).add(coco_id)
    found: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for split, coco_ids in wanted.items():
        rel = layout.captions_file(split)
        path = layout.local_path(rel, f"COCO captions ({Path(rel).name})")
        with open(path) as fh, reading(path, "a COCO captions JSON file", layout.repair_hint(rel)):
            anns = json.load(fh).get("annotations", [])
        for a in anns:
            if a["image_id"] in coco_ids:
                found.setdefault((split, int(a["image_id"])), []).append((int(a["id"]), str(a["caption"]).strip()))
    out = []
    for nsd_id, coco_id, split in zip(ids, rows["cocoId"].astype(int), rows["cocoSplit"].astype(str)):
        caps = found.get((split, coco_id))
        if not caps:
            raise NSDDataError(f"no caption for nsdId {nsd_id} (cocoId {coco_id}) in "
                               f"{layout.display(layout.captions_file(split))}")
        out.append([c for _, c in sorted(caps)][:max_captions])
    return out

