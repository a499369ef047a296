"""A small NSD-layout tree in NSD's formats, with known betas: the fixture of the nsd tests.

:func:`write_synthetic_nsd` writes int16 x300 NIfTI betas, an HDF5 imgBrick, a MATLAB
expdesign, COCO caption JSON and the stim-info CSV, at every path :class:`nsdlib.nsd.NSDLayout`
names. Tests and ``benchmarks/bench_nsd.py`` use it; it is not library code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from nsdlib.nsd import BETA_SCALE, ROI_FILES, NSDLayout

__all__ = ["write_synthetic_labels", "write_synthetic_nsd"]


def write_synthetic_nsd(root, *, subjects: Sequence[int] = (1,), n_sessions: int = 3,
                        trials_per_session: int = 30, grid: tuple[int, int, int] = (6, 5, 4),
                        n_shared: int = 10, n_per_subject: int = 40, n_images: int = 200,
                        image_size: int = 16, roi_fraction: float = 0.5, noise: float = 0.3,
                        dtype: str = "int16", seed: int = 0, with_stimuli: bool = True) -> dict:
    """Write a small NSD-layout tree in NSD's formats, with known betas (tests, benchmarks).

    ``with_stimuli=False`` writes only the design, the ROI and the betas (no imgBrick, stim
    info or captions).

    Each image has a fixed voxel pattern; every trial stores pattern + Gaussian noise (in
    percent signal change) as ``round(300 x value)`` int16, or float32 with ``dtype="float32"``.
    Like NSD, ``masterordering`` is one sequence shared by all subjects, indexing each
    subject's row of ``subjectim`` (1-based), whose first ``n_shared`` columns are the shared
    images. Image patterns are drawn from a generator seeded by ``(seed, image id)``, one trial
    at a time, so NSD-sized grids can be written without holding every pattern.

    Returns
    -------
    dict
        ``pattern(i)`` -> (X, Y, Z) float32 true pattern of image ``i``; ``patterns``
        (n_images, X, Y, Z) when that array is under 64 MB, else None; ``masterordering``,
        ``subjectim``, ``sharedix`` as written (1-based).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    L = NSDLayout
    n_trials = n_sessions * trials_per_session
    if n_shared >= n_per_subject or n_per_subject > n_images:
        raise ValueError("need n_shared < n_per_subject <= n_images")
    # masterordering: every subject image shown up to 3 times, in random order
    reps = np.tile(np.arange(1, n_per_subject + 1), 3)
    rng.shuffle(reps)
    mo = reps[:n_trials] if n_trials <= reps.size else np.concatenate(
        [reps, rng.integers(1, n_per_subject + 1, n_trials - reps.size)])
    shared = rng.choice(n_images, n_shared, replace=False) + 1
    others = np.setdiff1d(np.arange(1, n_images + 1), shared)
    subjectim = np.zeros((8, n_per_subject), np.int64)
    for s in range(8):
        subjectim[s, :n_shared] = shared
        subjectim[s, n_shared:] = rng.choice(others, n_per_subject - n_shared, replace=False)
    ed = root / L.EXPDESIGN
    ed.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(ed, {"masterordering": mo[None, :].astype(np.float64),
                          "subjectim": subjectim.astype(np.float64),
                          "sharedix": shared[None, :].astype(np.float64)})
    if with_stimuli:
        _write_synthetic_stimuli(root, n_images, image_size)

    def pattern(i: int) -> np.ndarray:
        return np.random.default_rng([seed, 7, int(i)]).standard_normal(grid, dtype=np.float32)

    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    for subj in subjects:
        roi = np.where(rng.random(grid) < roi_fraction, 1, rng.choice([-1, 0], size=grid)).astype(np.int16)
        rp = root / L.roi_file(subj)
        rp.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(roi, affine), rp)
        ids = subjectim[subj - 1, mo - 1] - 1
        for s in range(1, n_sessions + 1):
            sl = ids[(s - 1) * trials_per_session: s * trials_per_session]
            vol = np.empty((*grid, sl.size), dtype=np.dtype(dtype))
            for t, i in enumerate(sl):
                v = (pattern(i) + noise * rng.standard_normal(grid, dtype=np.float32)) * np.float32(BETA_SCALE)
                vol[..., t] = np.clip(np.rint(v), -32768, 32767) if vol.dtype.kind == "i" else v
            bp = root / L.betas_file(subj, s)
            bp.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), bp)
    small = n_images * int(np.prod(grid)) * 4 <= 64 << 20
    return {"pattern": pattern, "patterns": np.stack([pattern(i) for i in range(n_images)]) if small else None,
            "masterordering": mo, "subjectim": subjectim, "sharedix": shared}


def write_synthetic_labels(root, subject: int = 1, *, files: Sequence[str] | None = None,
                           grid: tuple[int, int, int] = (6, 5, 4), seed: int = 0) -> dict[str, np.ndarray]:
    """NSD's ROI label files (``prf-visualrois``, ``streams``, ``floc-*``) beside a synthetic tree's nsdgeneral.

    Each file is an int16 NIfTI volume in NSD's codes (:data:`nsdlib.nsd.ROI_FILES`): -1 outside
    the brain (where nsdgeneral is -1), otherwise a random code from 0 to the file's largest, drawn
    from a generator seeded by ``(seed, file)``. ``files`` defaults to every label file but nsdgeneral.

    Returns
    -------
    dict
        File -> the volume written (X, Y, Z).
    """
    root = Path(root)
    general = np.asarray(nib.load(str(root / NSDLayout.roi_file(subject))).dataobj)
    out = {}
    for i, name in enumerate(files if files is not None else [f for f in ROI_FILES if f != "nsdgeneral"]):
        rng = np.random.default_rng([seed, i])
        vol = np.where(general < 0, -1, rng.integers(0, max(ROI_FILES[name]) + 1, size=grid)).astype(np.int16)
        nib.save(nib.Nifti1Image(vol, np.diag([1.8, 1.8, 1.8, 1.0])), root / NSDLayout.roi_file(subject, name))
        out[name] = vol
    return out


def _write_synthetic_stimuli(root: Path, n_images: int, image_size: int) -> None:
    """imgBrick, stim info and COCO-style captions (5 or 6 per image) of a synthetic tree."""
    L = NSDLayout
    coco_ids = 1000 + np.arange(n_images) * 7
    coco_split = np.where(np.arange(n_images) % 5 == 0, "val2017", "train2017")
    pd.DataFrame({"cocoId": coco_ids, "cocoSplit": coco_split, "nsdId": np.arange(n_images)}).to_csv(
        root / L.STIM_INFO)
    (root / L.ANNOTATIONS).mkdir(parents=True, exist_ok=True)
    for split in L.COCO_SPLITS:
        anns = []
        for i in np.flatnonzero(coco_split == split):
            for c in range(5 + (i % 3 == 0)):  # some images carry a sixth caption, like COCO
                anns.append({"id": int(coco_ids[i]) * 10 + c, "image_id": int(coco_ids[i]),
                             "caption": f"image {i} caption {c} "})
        with open(root / L.captions_file(split), "w") as fh:
            json.dump({"images": [], "annotations": anns[::-1]}, fh)
    st = root / L.STIMULI
    st.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(st, "w") as f:
        d = f.create_dataset("imgBrick", (n_images, image_size, image_size, 3), np.uint8)
        for i in range(n_images):
            d[i] = ((np.arange(image_size)[:, None, None] * 3 + i * 11 + np.arange(3) * 50) % 256).astype(np.uint8)

