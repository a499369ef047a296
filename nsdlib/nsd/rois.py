"""NSD's ROI label files, their codes, and voxel selection by region.

NSD keeps one label volume per atlas in ``nsddata/ppdata/subjNN/func1pt8mm/roi/<file>.nii.gz``
(-1 outside the brain, 0 unlabelled, 1..K the regions of :data:`ROI_FILES`, the codes of
NSD's ``.ctab`` files). mini-NSD writes ``nsdgeneral``, ``prf-visualrois`` and ``streams`` in
the same codes; the category-selective ``floc-*`` files exist on the real NSD only.

A region is named by a *spec*: ``"<file>"`` (every label > 0 of that file) or
``"<file>:<label>,<label>"`` (labels by name or code), e.g. ``"streams:ventral,lateral"``,
``"prf-visualrois:V1v,V1d"`` or ``"floc-faces:2,3"``.
:data:`ROI_SETS` names the regions the book compares. :func:`select_voxels` says which
voxels of a subject's betas (the nsdgeneral voxels the decoders use) lie in a region, and
raises one clear error for a file or a label that the subject's files do not have.
"""

from __future__ import annotations

import numpy as np

from .layout import NSDDataError, NSDLayout, check_subject
from .readers import read_roi

__all__ = ["ROI_FILES", "ROI_SETS", "parse_roi", "roi_files_present", "select_voxels"]

#: NSD's label files (func1pt8mm) and their codes, as NSD's ``.ctab`` files name them.
ROI_FILES = {
    "nsdgeneral": {1: "nsdgeneral"},
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral",
                7: "parietal"},
    "floc-faces": {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-bodies": {1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-places": {1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-words": {1: "OWFA", 2: "VWFA-1", 3: "VWFA-2", 4: "mfs-words", 5: "mTL-words"},
}
#: The regions the book compares: early visual cortex (V1-hV4), the three higher streams alone
#: and together, all of nsdgeneral, and NSD's category-selective (floc) regions.
ROI_SETS = {
    "early (V1–hV4)": "prf-visualrois:V1v,V1d,V2v,V2d,V3v,V3d,hV4",
    "ventral": "streams:ventral",
    "lateral": "streams:lateral",
    "parietal": "streams:parietal",
    "higher (ventral, lateral, parietal)": "streams:ventral,lateral,parietal",
    "nsdgeneral": "nsdgeneral",
    "faces (floc)": "floc-faces",
    "bodies (floc)": "floc-bodies",
    "places (floc)": "floc-places",
    "words (floc)": "floc-words",
}


def _labels_text(file: str) -> str:
    return ", ".join(f"{name} ({code})" for code, name in ROI_FILES[file].items())


def parse_roi(spec: str) -> tuple[str, tuple[int, ...]]:
    """A region's label file and codes from its spec (``"streams:ventral,lateral"``).

    Returns
    -------
    file : str
        One of :data:`ROI_FILES`.
    codes : tuple of int
        The codes selected (every code of the file when the spec names the file alone).

    Raises
    ------
    NSDDataError
        An unknown file, or a label the file does not define (the message lists its labels).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise NSDDataError(f"an ROI is named '<file>' or '<file>:<label>,...'; found {spec!r}")
    file, _, labels = spec.strip().partition(":")
    if file not in ROI_FILES:
        raise NSDDataError(f"unknown ROI label file {file!r} (in {spec!r}); NSD's label files are "
                           f"{', '.join(ROI_FILES)}")
    if not labels.strip():
        return file, tuple(ROI_FILES[file])
    by_name = {name.lower(): code for code, name in ROI_FILES[file].items()}
    codes = []
    for label in (x.strip() for x in labels.split(",")):
        code = int(label) if label.isdigit() else by_name.get(label.lower())
        if code not in ROI_FILES[file]:
            raise NSDDataError(f"{file} has no label {label!r} (in {spec!r}); its labels are {_labels_text(file)}")
        codes.append(code)
    return file, tuple(dict.fromkeys(codes))


def roi_files_present(layout: NSDLayout, subject: int) -> list[str]:
    """The label files of :data:`ROI_FILES` that the subject's ``roi/`` folder holds."""
    return [f for f in ROI_FILES if layout.exists(layout.roi_file(subject, f))]


def select_voxels(layout: NSDLayout, subject: int, spec: str, ijk: np.ndarray, grid_shape) -> np.ndarray:
    """Which of a subject's voxels lie in a region, read from NSD's label file.

    Parameters
    ----------
    layout : NSDLayout
    subject : {1, 2, 5, 7}
    spec : str
        The region (see :func:`parse_roi`; names of :data:`ROI_SETS` are *not* specs).
    ijk : ndarray of shape (n_voxels, 3), int
        Grid coordinates of the voxels (a subject's betas columns:
        ``SubjectData.roi_ijk[SubjectData.voxel_index]``).
    grid_shape : tuple of int
        The betas' grid (X, Y, Z), which the label volume must have.

    Returns
    -------
    ndarray of shape (n_voxels,), bool
        True where the voxel's label is one of the spec's codes.

    Raises
    ------
    NSDDataError
        The spec is not one (:func:`parse_roi`); the subject has no such label file (the
        message lists the files it has); the label volume's grid differs from the betas'; or
        none of the voxels carries the labels (the message lists the labels present).
    """
    s = check_subject(subject)
    file, codes = parse_roi(spec)
    rel = layout.roi_file(s, file)
    if not layout.exists(rel):
        have = roi_files_present(layout, s)
        raise NSDDataError(f"subject {s} has no {file!r} label file (expected {layout.display(rel)}), so {spec!r} "
                           f"cannot be selected; its roi folder holds {', '.join(have) or 'none of NSD label files'}")
    vol = read_roi(layout, s, file)
    if tuple(vol.shape) != tuple(int(g) for g in grid_shape):
        raise NSDDataError(f"{layout.display(rel)} has grid {tuple(vol.shape)}; the betas have "
                           f"{tuple(int(g) for g in grid_shape)}")
    ijk = np.asarray(ijk, np.int64)
    labels = vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    mask = np.isin(labels, codes)
    if not mask.any():
        present = [f"{ROI_FILES[file].get(int(c), '?')} ({int(c)})" for c in np.unique(labels) if c > 0]
        raise NSDDataError(f"no voxel of subject {s}'s betas carries {spec!r} in {layout.display(rel)}; the labels "
                           f"present there are {', '.join(present) or 'none (every voxel is 0 or -1)'}")
    return mask
