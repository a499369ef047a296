"""Bringing NSD to a local folder: the files the book needs for one subject, downloaded resumably.

The files come from the public bucket ``s3://natural-scenes-dataset`` (read anonymously) or any
fsspec root, in NSD's layout (:class:`~nsdlib.nsd.NSDLayout`); COCO's caption files, absent from
the bucket, come from COCO's ``annotations_trainval2017.zip``.

NSD is shared under its Terms and Conditions (https://naturalscenesdataset.org); work that
uses it must cite Allen et al. (2022), Nature Neuroscience 25:116-126.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import fsspec
from tqdm.auto import tqdm

from ..config import NSD_S3_ROOT
from ..store import atomic_path
from .access import download_file
from .layout import PUBLIC_SESSIONS, NSDFileError, NSDLayout, check_sessions, check_subject
from .rois import ROI_FILES

__all__ = ["COCO_ANNOTATIONS_URL", "fetch_list", "fetch_subject"]

COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"


def fetch_list(subject: int, sessions: int = PUBLIC_SESSIONS) -> list[str]:
    """The files (relative paths) the book needs for one NSD subject.

    With the nsdgeneral ROI come NSD's other label files (:data:`~nsdlib.nsd.ROI_FILES`: chapter 11's
    regions), which :func:`fetch_subject` skips where a source does not hold them.
    """
    subject = check_subject(subject)
    check_sessions(sessions)
    L = NSDLayout
    files = [*L.experiment_files(), L.roi_file(subject), *_label_files(subject)]
    files += [L.betas_file(subject, s) for s in range(1, sessions + 1)]
    return files


def _label_files(subject: int) -> list[str]:
    """The ROI label files beside nsdgeneral (optional in a source)."""
    return [NSDLayout.roi_file(subject, f) for f in ROI_FILES if f != "nsdgeneral"]


def fetch_subject(subject, root, sessions: int = PUBLIC_SESSIONS, *, source: str = NSD_S3_ROOT,
                  storage_options: dict | None = None, coco_url: str = COCO_ANNOTATIONS_URL,
                  progress: bool = True) -> list[Path]:
    """Download the NSD files the book needs for one subject into ``root``.

    The betas of sessions 1 to ``sessions``, the nsdgeneral ROI and NSD's other ROI label files
    (those the source holds), the experimental design,
    the stimulus information table, the stimulus HDF5 and the COCO caption annotations,
    in NSD's layout. Resumable: files already complete are skipped, interrupted ones are
    continued; each file is checked against its remote size. Caption files absent from
    ``source`` are taken from COCO's ``annotations_trainval2017.zip`` (``coco_url``).

    Parameters
    ----------
    subject : {1, 2, 5, 7}
    root : path
        Local folder that becomes an NSD root.
    sessions : int
        Number of sessions, 1 to 40 (37: the first public release, used by the paper).
    source : str
        Where NSD is read: the public bucket (anonymous) by default; any fsspec URL works.

    Returns
    -------
    list of Path
        The local files, in the order of :func:`fetch_list` (without label files the source lacks).
    """
    subject = check_subject(subject)
    sessions = check_sessions(sessions)
    src = NSDLayout(source, storage_options=storage_options)
    dest = Path(root).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    rels = fetch_list(subject, sessions)
    sizes, from_coco = {}, []
    for rel in tqdm(rels, desc="checking remote sizes", disable=not progress, leave=False):
        url = src.url(rel)
        if src.fs.exists(url):
            sizes[rel] = int(src.fs.info(url)["size"])
        elif rel.startswith(NSDLayout.ANNOTATIONS):
            from_coco.append(rel)
        elif rel in _label_files(subject):
            continue  # a region chapter 11 then names as missing; the rest of the book does not need it
        else:
            raise NSDFileError(f"{src.display(rel)} is not in the source {source}; is the source an NSD root?")
    total = sum(sizes.values())
    print(f"NSD subject {subject}, {sessions} sessions: {len(sizes)} files, {total / 1e9:.1f} GB from {source}"
          + (f"; captions from {coco_url}" if from_coco else "")
          + ".\nNSD is shared under its Terms and Conditions (naturalscenesdataset.org); "
            "cite Allen et al. 2022, Nat. Neurosci. 25:116-126.")
    out = []
    for rel in tqdm(rels, desc=f"NSD subj{subject:02d}", unit="file", disable=not progress):
        if rel in from_coco or rel not in sizes:
            continue
        out.append(download_file(src.fs, src.url(rel), dest / rel, progress=progress, desc=Path(rel).name))
    if from_coco:
        _fetch_coco_captions(coco_url, dest, [Path(r).name for r in from_coco], progress=progress)
    return [dest / rel for rel in rels if rel in sizes or rel in from_coco]


def _fetch_coco_captions(url: str, dest: Path, names: list[str], progress: bool = True) -> None:
    ann_dir = dest / NSDLayout.ANNOTATIONS
    fs, path = fsspec.core.url_to_fs(url)
    zpath = ann_dir / Path(path).name
    download_file(fs, path, zpath, progress=progress)
    with zipfile.ZipFile(zpath) as z:
        members = {Path(m).name: m for m in z.namelist()}
        for name in names:
            if name not in members:
                raise NSDFileError(f"{name} is not in {zpath} (downloaded from {url})")
            with z.open(members[name]) as src, atomic_path(ann_dir / name) as tmp, open(tmp, "wb") as dst:
                while chunk := src.read(8 << 20):
                    dst.write(chunk)
    zpath.unlink()

