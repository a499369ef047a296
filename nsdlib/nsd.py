"""The Natural Scenes Dataset: its file layout, its readers, and subject preparation.

One code path reads the real NSD (a local copy, or the public S3 bucket
``s3://natural-scenes-dataset`` read anonymously) and mini-NSD, which nsdlib writes in
the very same layout and formats. Paths are relative to the dataset root:

- ``nsddata/experiments/nsd/nsd_expdesign.mat``: ``masterordering`` (trial -> 1-based index
  into a subject's images), ``subjectim`` (8 x 10,000 1-based 73k ids), ``sharedix``;
- ``nsddata/experiments/nsd/nsd_stim_info_merged.csv``: ``nsdId``, ``cocoId``, ``cocoSplit``;
- ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``: ``imgBrick`` (n_images, H, W, 3) uint8;
- ``nsddata_stimuli/stimuli/nsd/annotations/captions_{train2017,val2017}.json``: COCO captions;
- ``nsddata/ppdata/subjNN/func1pt8mm/roi/nsdgeneral.nii.gz``: -1 / 0 / 1 ROI volume;
- ``nsddata_betas/ppdata/subjNN/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionSS.nii.gz``:
  int16 single-trial betas in percent signal change x 300, (X, Y, Z, trials).

Subject preparation (:func:`prepare_subject`) follows the protocol of the paper and of
Brain-Diffuser: trial -> 73k id through ``masterordering`` and ``subjectim``; shared images
are the test set; betas / 300 inside ``nsdgeneral > 0``; repeats averaged per image; every
voxel z-scored with the training mean and standard deviation (ddof = 1). It streams the
betas volume by volume, session by session, accumulating per-image sums, so memory holds
the output and a bounded read buffer, never the sessions themselves.

Remote files are downloaded once into a local cache that mirrors the layout (so the cache
is itself a local NSD root), with :func:`download_file`: resumable from a ``.part`` file,
checked against the remote size, renamed into place only when complete. fsspec's own
``simplecache`` writes straight to its final cache name, so an interrupted download would be
trusted later; that is why whole files go through :func:`download_file`. The stimulus HDF5
(about 40 GB) is never downloaded whole on demand: it is read image by image through fsspec's
block cache (``blockcache``) in the same cache folder.

NSD is shared under its Terms and Conditions (https://naturalscenesdataset.org); work that
uses it must cite Allen et al. (2022), Nature Neuroscience 25:116-126.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .config import NSD_S3_ROOT, SUBJECTS, default_workdir
from .images import resize
from .store import atomic_path

__all__ = [
    "BETA_SCALE",
    "COCO_ANNOTATIONS_URL",
    "NAN_POLICIES",
    "NSD_SESSIONS",
    "PAPER_COUNTS",
    "PUBLIC_SESSIONS",
    "SPLITS",
    "ExpDesign",
    "NSDDataError",
    "NSDFileError",
    "NSDLayout",
    "SubjectData",
    "TrialDesign",
    "check_subject",
    "download_file",
    "fetch_list",
    "fetch_subject",
    "iter_session_betas",
    "prepare_subject",
    "read_beta_header",
    "read_beta_volume",
    "read_captions",
    "read_expdesign",
    "read_roi",
    "read_stim_info",
    "read_stimuli",
    "resolve_sessions",
    "split_images",
    "trial_design",
    "write_synthetic_nsd",
]

#: Betas are stored as int16 percent signal change multiplied by this factor.
BETA_SCALE = 300.0
#: Core NSD sessions completed by subjects 1, 2, 5 and 7.
NSD_SESSIONS = 40
#: Sessions of the first public release, used by the paper and by Brain-Diffuser.
PUBLIC_SESSIONS = 37
SPLITS = ("shared", "random")
NAN_POLICIES = ("exclude", "zero", "raise")
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
_COCO_SPLITS = ("train2017", "val2017")

#: Counts of the paper / NSD for 37 sessions (reference.md, "NSD layout"), per subject.
PAPER_COUNTS = {
    "train_images": 8859, "test_images": 982, "train_trials": 24980, "test_trials": 2770,
    "nsdgeneral_voxels": {1: 15724, 2: 14278, 5: 13039, 7: 12682},
}


class NSDFileError(FileNotFoundError):
    """A file of the NSD layout is missing; the message names it and how to get it."""


class NSDDataError(ValueError):
    """NSD data that cannot be used as asked: wrong subject, sessions, shapes or values."""


def check_subject(subject) -> int:
    """Return ``subject`` as an int if it is one of NSD's complete subjects (1, 2, 5, 7)."""
    try:
        s = int(subject)
    except (TypeError, ValueError):
        raise NSDDataError(f"subject must be 1, 2, 5 or 7; found {subject!r}") from None
    if s not in SUBJECTS:
        why = (" did not complete all 40 NSD sessions" if s in (3, 4, 6, 8)
               else " is not an NSD subject (NSD has subjects 1 to 8)")
        raise NSDDataError(f"subject {s}{why}; use 1, 2, 5 or 7")
    return s


# ---------------------------------------------------------------------------- layout
class NSDLayout:
    """Paths of the NSD layout under one root, and access to its files.

    Parameters
    ----------
    root : str or path
        A local folder, or an fsspec URL (``s3://natural-scenes-dataset``, ``memory://...``).
    dataset : {"nsd", "mini"}
        Which dataset lives there; only changes the advice given when a file is missing.
    cache_dir : path, optional
        Where files of a remote root are downloaded (mirroring the layout). Default:
        ``<default workdir>/nsd-cache``. Unused for a local root.
    storage_options : dict, optional
        fsspec options; for ``s3://`` roots ``anon=True`` is the default.
    """

    EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
    STIM_INFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
    STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    ANNOTATIONS = "nsddata_stimuli/stimuli/nsd/annotations"
    BETAS_TYPE = "betas_fithrf_GLMdenoise_RR"

    def __init__(self, root, *, dataset: str = "nsd", cache_dir=None, storage_options: dict | None = None):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        if dataset not in ("nsd", "mini"):
            raise NSDDataError(f"dataset must be 'nsd' or 'mini'; found {dataset!r}")
        self.root = str(root)
        self.dataset = dataset
        opts = dict(storage_options or {})
        if self.root.startswith("s3://"):
            opts.setdefault("anon", True)
        self.fs, base = fsspec.core.url_to_fs(self.root, **opts)
        self._base = base.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_workdir() / "nsd-cache"

    def __repr__(self) -> str:
        return f"NSDLayout({self.root!r}, dataset={self.dataset!r})"

    # ------------------------------------------------------------ relative paths
    @staticmethod
    def subject_dir(subject: int) -> str:
        return f"subj{int(subject):02d}"

    @classmethod
    def roi_file(cls, subject: int, name: str = "nsdgeneral") -> str:
        return f"nsddata/ppdata/{cls.subject_dir(subject)}/func1pt8mm/roi/{name}.nii.gz"

    @classmethod
    def betas_dir(cls, subject: int) -> str:
        return f"nsddata_betas/ppdata/{cls.subject_dir(subject)}/func1pt8mm/{cls.BETAS_TYPE}"

    @classmethod
    def betas_file(cls, subject: int, session: int) -> str:
        return f"{cls.betas_dir(subject)}/betas_session{int(session):02d}.nii.gz"

    @classmethod
    def timeseries_file(cls, subject: int, session: int, run: int) -> str:
        return (f"nsddata_timeseries/ppdata/{cls.subject_dir(subject)}/func1pt8mm/timeseries/"
                f"timeseries_session{int(session):02d}_run{int(run):02d}.nii.gz")

    @classmethod
    def design_file(cls, subject: int, session: int, run: int) -> str:
        return (f"nsddata_timeseries/ppdata/{cls.subject_dir(subject)}/func1pt8mm/design/"
                f"design_session{int(session):02d}_run{int(run):02d}.tsv")

    @classmethod
    def captions_file(cls, coco_split: str) -> str:
        return f"{cls.ANNOTATIONS}/captions_{coco_split}.json"

    # ------------------------------------------------------------------- access
    def url(self, rel: str) -> str:
        """Where ``rel`` lives on the root's filesystem (a local path or a bucket key)."""
        return f"{self._base}/{rel}"

    def display(self, rel: str) -> str:
        """``rel`` as the user would type it (``s3://...`` or a local path)."""
        if self.is_local:
            return str(Path(self._base) / rel)
        return f"{self.root.rstrip('/')}/{rel}"

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.url(rel)))

    def fetch_hint(self, rel: str, subject: int | None = None, session: int | None = None) -> str:
        """The command that brings ``rel`` to this root."""
        root = self.root
        if self.dataset == "mini":
            if rel.startswith("nsddata_betas/") and subject is not None:
                return (f"write the GLM betas with `nsdlib betas --dataset mini --subject {subject} "
                        f"--nsd-root {root}`")
            return f"generate mini-NSD with `nsdlib mini generate --root {root}`"
        if not self.is_local:
            return (f"it is not in {root}; check the path, or download NSD with "
                    f"`nsdlib fetch nsd --subject {subject or 1} --root DIR` and use nsd_root=DIR")
        extra = f" --sessions {session}" if session is not None and session > PUBLIC_SESSIONS else ""
        return f"fetch it with `nsdlib fetch nsd --subject {subject or 1} --root {root}{extra}`"

    def missing(self, rel: str, what: str, subject: int | None = None, session: int | None = None) -> NSDFileError:
        return NSDFileError(f"{what} not found: expected {self.display(rel)}; "
                            f"{self.fetch_hint(rel, subject, session)}")

    def local_path(self, rel: str, what: str = "NSD file", subject: int | None = None,
                   session: int | None = None, progress: bool = True) -> Path:
        """A local path to ``rel``, downloading a remote file into the cache first.

        Raises
        ------
        NSDFileError
            If the file is not there, naming the expected path and the fetch command.
        """
        if self.is_local:
            path = Path(self.url(rel))
            if not path.is_file():
                raise self.missing(rel, what, subject, session)
            return path
        cached = self.cache_dir / rel
        if cached.is_file():
            return cached
        if not self.exists(rel):
            raise self.missing(rel, what, subject, session)
        return download_file(self.fs, self.url(rel), cached, progress=progress)

    def open_random_access(self, rel: str, what: str = "NSD file"):
        """A binary file object for random reads (HDF5): local, or remote through a block cache."""
        if self.is_local:
            return open(self.local_path(rel, what), "rb")
        cached = self.cache_dir / rel
        if cached.is_file():
            return open(cached, "rb")
        if not self.exists(rel):
            raise self.missing(rel, what)
        from fsspec.implementations.cached import CachingFileSystem
        from fsspec.spec import AbstractBufferedFile

        f = self.fs.open(self.url(rel), "rb")
        if not isinstance(f, AbstractBufferedFile):  # e.g. an in-memory file: nothing to cache
            return f
        f.close()
        cfs = CachingFileSystem(fs=self.fs, cache_storage=str(self.cache_dir / ".blockcache"))
        return cfs.open(self.url(rel), "rb")

    def sessions(self, subject: int) -> list[int]:
        """Session numbers whose betas file exists for ``subject`` (sorted)."""
        pattern = re.compile(r"betas_session(\d{2})\.nii\.gz$")
        try:
            names = self.fs.ls(self.url(self.betas_dir(subject)), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = [int(m.group(1)) for n in names if (m := pattern.search(str(n)))]
        return sorted(set(out))

    def fingerprint(self, rels: Sequence[str]) -> list:
        """What identifies the files' content cheaply: size and mtime locally, else the paths."""
        if not self.is_local:
            return [self.root, *rels]
        out = []
        for rel in rels:
            st = os.stat(self.url(rel))
            out.append([rel, st.st_size, st.st_mtime_ns])
        return out


# ------------------------------------------------------------------- downloads
def download_file(fs, remote_path: str, local_path, *, chunk_size: int = 8 << 20,
                  progress: bool = True, desc: str | None = None) -> Path:
    """Download one file, resumably, checking its size against the remote size.

    Bytes go to ``<local_path>.part``; an existing ``.part`` is continued from its length;
    the file is renamed onto ``local_path`` only when its size equals the remote size. A
    ``local_path`` that already has the remote size is kept as it is.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The remote filesystem (s3fs, http, memory, local...).
    remote_path : str
        Path on ``fs``.
    local_path : path
        Destination on this machine.

    Returns
    -------
    Path
        ``local_path``.
    """
    from tqdm.auto import tqdm

    local = Path(local_path)
    size = int(fs.info(remote_path)["size"])
    if local.is_file():
        if local.stat().st_size == size:
            return local
        local.unlink()  # an old or foreign file of the wrong size: fetch it again
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset > size:
        part.unlink()
        offset = 0
    if offset < size:
        with fs.open(remote_path, "rb") as src, open(part, "ab") as dst, \
                tqdm(total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=desc or local.name, disable=not progress, leave=False) as bar:
            src.seek(offset)
            while True:
                buf = src.read(chunk_size)
                if not buf:
                    break
                dst.write(buf)
                bar.update(len(buf))
            dst.flush()
            os.fsync(dst.fileno())
    got = part.stat().st_size if part.is_file() else 0
    if got != size:
        raise OSError(f"download of {remote_path} stopped at {got:,} of {size:,} bytes "
                      f"(kept in {part}); run the same command again to resume")
    os.replace(part, local)
    return local


def fetch_list(subject: int, sessions: int = PUBLIC_SESSIONS) -> list[str]:
    """The files (relative paths) the book needs for one NSD subject."""
    subject = check_subject(subject)
    _check_nsd_sessions(sessions)
    L = NSDLayout
    files = [L.EXPDESIGN, L.STIM_INFO, L.STIMULI, *[L.captions_file(s) for s in _COCO_SPLITS],
             L.roi_file(subject)]
    files += [L.betas_file(subject, s) for s in range(1, sessions + 1)]
    return files


def _check_nsd_sessions(sessions) -> int:
    if isinstance(sessions, bool) or not isinstance(sessions, (int, np.integer)):
        raise NSDDataError(f"sessions must be an integer from 1 to {NSD_SESSIONS}; found {sessions!r}")
    if not 1 <= sessions <= NSD_SESSIONS:
        raise NSDDataError(f"NSD subjects 1, 2, 5 and 7 have {NSD_SESSIONS} sessions "
                           f"({PUBLIC_SESSIONS} in the first public release); asked for {sessions}")
    return int(sessions)


def fetch_subject(subject, root, sessions: int = PUBLIC_SESSIONS, *, source: str = NSD_S3_ROOT,
                  storage_options: dict | None = None, coco_url: str = COCO_ANNOTATIONS_URL,
                  progress: bool = True) -> list[Path]:
    """Download the NSD files the book needs for one subject into ``root``.

    The betas of sessions 1 to ``sessions``, the nsdgeneral ROI, the experimental design,
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
        The local files, in the order of :func:`fetch_list`.
    """
    from tqdm.auto import tqdm

    subject = check_subject(subject)
    sessions = _check_nsd_sessions(sessions)
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
        else:
            raise NSDFileError(f"{src.display(rel)} is not in the source {source}; is the source an NSD root?")
    total = sum(sizes.values())
    print(f"NSD subject {subject}, {sessions} sessions: {len(sizes)} files, {total / 1e9:.1f} GB from {source}"
          + (f"; captions from {coco_url}" if from_coco else "")
          + ".\nNSD is shared under its Terms and Conditions (naturalscenesdataset.org); "
            "cite Allen et al. 2022, Nat. Neurosci. 25:116-126.")
    out = []
    for rel in tqdm(rels, desc=f"NSD subj{subject:02d}", unit="file", disable=not progress):
        if rel in from_coco:
            continue
        out.append(download_file(src.fs, src.url(rel), dest / rel, progress=progress, desc=Path(rel).name))
    if from_coco:
        _fetch_coco_captions(coco_url, dest, [Path(r).name for r in from_coco], progress=progress)
    return [dest / rel for rel in rels]


def _fetch_coco_captions(url: str, dest: Path, names: list[str], progress: bool = True) -> None:
    import fsspec

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


# --------------------------------------------------------------------- readers
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
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError) as exc:
        raise NSDDataError(f"{path} is not a readable MATLAB file: {exc}") from None
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
class TrialDesign:
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


def trial_design(design: ExpDesign, subject: int, n_sessions: int, trials_per_session: int) -> TrialDesign:
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
    return TrialDesign(ids.astype(np.int64), shared, session)


def split_images(trials: TrialDesign, split: str = "shared", test_fraction: float = 0.1,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test 73k ids (sorted, unique) of the images seen in ``trials``.

    ``"shared"``: the shared images are the test set (NSD's and Brain-Diffuser's rule).
    ``"random"``: a seeded random ``test_fraction`` of the images, shared or not (the
    paper's 90/10 description). Splits are by image, so repeats never cross the split.
    """
    if split == "shared":
        test = np.unique(trials.ids[trials.shared])
        train = np.unique(trials.ids[~trials.shared])
        return train, test
    if split == "random":
        if not 0 < test_fraction < 1:
            raise NSDDataError(f"test_fraction must be between 0 and 1; found {test_fraction!r}")
        images = np.unique(trials.ids)
        n_test = int(round(test_fraction * images.size))
        order = np.random.default_rng(seed).permutation(images.size)
        return np.sort(images[order[n_test:]]), np.sort(images[order[:n_test]])
    raise NSDDataError(f"split must be one of {', '.join(SPLITS)}; found {split!r}")


def read_roi(layout: NSDLayout, subject: int, name: str = "nsdgeneral") -> np.ndarray:
    """The ROI volume (X, Y, Z) of a subject, as int (nsdgeneral: -1 outside the brain, 0, 1)."""
    import nibabel as nib

    path = layout.local_path(layout.roi_file(subject, name), f"{name} ROI of subject {subject}", subject)
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
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


def _read_header(fh, path: Path) -> BetaHeader:
    import nibabel as nib

    try:
        hdr = nib.Nifti1Header.from_fileobj(fh)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise NSDDataError(f"{path} is not a NIfTI-1 file: {exc}") from None
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
    path = layout.local_path(layout.betas_file(subject, session),
                             f"betas of subject {subject} session {session}", subject, session)
    with _open_stream(path) as fh:
        return _read_header(fh, path)


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
        :func:`_fortran_index`); all voxels when omitted.
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
    path = layout.local_path(layout.betas_file(subject, session),
                             f"betas of subject {subject} session {session}", subject, session)
    with _open_stream(path) as fh:
        h = _read_header(fh, path)
        n_vox = int(np.prod(h.grid))
        frame = n_vox * h.dtype.itemsize
        stop = h.n_trials if stop is None else min(stop, h.n_trials)
        fh.seek(h.offset + start * frame)
        per = max(1, min(int(chunk_mb * (1 << 20) // frame), stop - start))
        buf = bytearray(per * frame)
        t = start
        while t < stop:
            k = min(per, stop - t)
            got = _readinto_full(fh, memoryview(buf)[: k * frame])
            if got != k * frame:
                raise NSDDataError(f"{path} ends early: trial {t + got // frame} of {h.n_trials} "
                                   "is incomplete (a truncated download? fetch it again)")
            raw = np.frombuffer(buf, dtype=h.dtype, count=k * n_vox).reshape(k, n_vox)
            vals = (raw if voxels is None else raw[:, voxels]).astype(np.float32)
            if h.slope is not None:
                vals *= np.float32(h.slope)
                vals += np.float32(h.inter or 0.0)
            yield t, vals
            t += k


def _fortran_index(mask: np.ndarray) -> np.ndarray:
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
    with layout.open_random_access(layout.STIMULI, "stimuli (nsd_stimuli.hdf5)") as fobj, h5py.File(fobj, "r") as f:
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
        with open(path) as fh:
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


# --------------------------------------------------------- subject preparation
@dataclasses.dataclass
class SubjectData:
    """One subject's betas, ready for the decoders.

    Attributes
    ----------
    train_betas : ndarray of shape (n_train, n_voxels), float32
        z-scored betas (training mean and std, ddof=1), one row per image (or trial).
    test_betas : ndarray of shape (n_test, n_voxels), float32
        Same scaling, with the training statistics.
    train_ids, test_ids : ndarray of int64
        0-based 73k id of each row (row of ``imgBrick``, ``nsdId``).
    train_repeats, test_repeats : ndarray of int64
        Number of trials averaged into each row (1 for single trials).
    voxel_index : ndarray of shape (n_voxels,), int64
        Which ROI voxels the columns are (indices into the ROI's voxels, C order).
    roi_ijk : ndarray of shape (n_roi_voxels, 3), int64
        Grid coordinates of every ROI voxel.
    grid_shape : tuple of int
        The betas grid (X, Y, Z).
    mean, std : ndarray of shape (n_voxels,), float32
        Training statistics, in percent signal change, used for the z-score.
    info : dict
        Counts and choices: sessions, trials, images, NaN and constant voxels, the NaN
        policy, the split, the dataset and root.
    """

    train_betas: np.ndarray
    test_betas: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    train_repeats: np.ndarray
    test_repeats: np.ndarray
    voxel_index: np.ndarray
    roi_ijk: np.ndarray
    grid_shape: tuple
    mean: np.ndarray
    std: np.ndarray
    info: dict

    @property
    def n_voxels(self) -> int:
        return int(self.train_betas.shape[1])

    def unscaled(self, split: str) -> np.ndarray:
        """The betas of ``split`` before z-scoring, in percent signal change."""
        x = {"train": self.train_betas, "test": self.test_betas}[split]
        return x * self.std + self.mean

    def to_volume(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Put one value per column back into the grid (X, Y, Z); ``fill`` elsewhere."""
        vol = np.full(self.grid_shape, fill, dtype=np.float32)
        ijk = self.roi_ijk[self.voxel_index]
        vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
        return vol

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in ("train_betas", "test_betas", "train_ids", "test_ids",
                                            "train_repeats", "test_repeats", "voxel_index", "roi_ijk",
                                            "mean", "std")}
        out["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
        out["info"] = np.asarray(json.dumps(self.info, sort_keys=True))
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> SubjectData:
        kw = {k: a[k] for k in ("train_betas", "test_betas", "train_ids", "test_ids", "train_repeats",
                                "test_repeats", "voxel_index", "roi_ijk", "mean", "std")}
        return cls(**kw, grid_shape=tuple(int(x) for x in a["grid_shape"]), info=json.loads(str(a["info"])))


def _drop_columns_inplace(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``a[:, keep]`` packed into ``a``'s own buffer, row by row (no second copy of ``a``).

    ``keep`` must be increasing. Row ``i`` is written to flat positions ``[i*k, (i+1)*k)``,
    which lie before row ``i + 1``'s data, so no row is overwritten before it is read.
    """
    n, k = a.shape[0], keep.size
    flat = a.reshape(-1)  # a is C-contiguous: a view
    for i in range(n):
        flat[i * k:(i + 1) * k] = a[i, keep]
    return flat[: n * k].reshape(n, k)


def resolve_sessions(layout: NSDLayout, design: ExpDesign, trials_per_session: int, sessions: int | None) -> int:
    """How many sessions to use: NSD 1-40 (default 37); mini-NSD up to all of its sessions (default all)."""
    in_design = design.masterordering.size // trials_per_session
    if layout.dataset == "mini":
        if sessions is None:
            return in_design
        if sessions > in_design:
            raise NSDDataError(f"mini-NSD at {layout.root} has {in_design} sessions per subject "
                               f"({design.masterordering.size} trials of {trials_per_session}); asked for {sessions}")
        return int(sessions)
    sessions = PUBLIC_SESSIONS if sessions is None else _check_nsd_sessions(sessions)
    if sessions > in_design:
        raise NSDDataError(f"the design at {layout.display(layout.EXPDESIGN)} holds {in_design} sessions of "
                           f"{trials_per_session} trials; asked for {sessions}")
    return sessions


def prepare_subject(layout: NSDLayout, subject: int, sessions: int | None = None, *, split: str = "shared",
                    average: bool = True, nan_policy: str = "exclude", test_fraction: float = 0.1,
                    seed: int = 0, chunk_mb: float = 32.0, progress: bool = True) -> SubjectData:
    """Prepare one subject's betas: ROI, trial -> image, split, averaging, z-score.

    Session by session and chunk by chunk, the betas inside ``nsdgeneral > 0`` are added
    into per-image sums (float32 sums of the stored int16 values are exact), so memory
    holds the output plus one read buffer of ``chunk_mb`` (32 MB), whatever the number of sessions.

    Parameters
    ----------
    layout : NSDLayout
    subject : {1, 2, 5, 7}
    sessions : int, optional
        First sessions to use. NSD: 1 to 40, default 37 (the public release of the paper).
        mini-NSD: default all of them; more than exist is refused.
    split : {"shared", "random"}
        Test set = the shared images (default), or a seeded random ``test_fraction`` of the
        images (the paper's 90/10 description).
    average : bool
        Average the repeats of each image (default), or keep single trials as rows.
    nan_policy : {"exclude", "zero", "raise"}
        Voxels with a non-finite beta in any trial, or constant over the training rows,
        are dropped (default), set to 0 in every row, or make preparation fail. The counts
        and the choice are recorded in ``info``.

    Returns
    -------
    SubjectData
    """
    from tqdm.auto import tqdm

    subject = check_subject(subject)
    if nan_policy not in NAN_POLICIES:
        raise NSDDataError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; found {nan_policy!r}")
    if split not in SPLITS:
        raise NSDDataError(f"split must be one of {', '.join(SPLITS)}; found {split!r}")
    design = read_expdesign(layout)
    first = read_beta_header(layout, subject, 1)
    n_sessions = resolve_sessions(layout, design, first.n_trials, sessions)
    roi = read_roi(layout, subject)
    if roi.shape != first.grid:
        raise NSDDataError(f"the nsdgeneral ROI {layout.display(layout.roi_file(subject))} has grid {roi.shape}, "
                           f"but the betas {layout.display(layout.betas_file(subject, 1))} have grid {first.grid}")
    mask = roi > 0
    n_roi = int(mask.sum())
    if n_roi == 0:
        raise NSDDataError(f"the nsdgeneral ROI {layout.display(layout.roi_file(subject))} has no voxel > 0")
    fidx = _fortran_index(mask)
    T = first.n_trials
    trials = trial_design(design, subject, n_sessions, T)
    train_ids, test_ids = split_images(trials, split, test_fraction, seed)
    is_test = np.isin(trials.ids, test_ids)

    if average:
        rows = np.where(is_test, np.searchsorted(test_ids, trials.ids), np.searchsorted(train_ids, trials.ids))
        train_rows_ids, test_rows_ids = train_ids, test_ids
    else:
        rows = np.empty(trials.ids.size, np.int64)
        rows[~is_test] = np.arange((~is_test).sum())
        rows[is_test] = np.arange(is_test.sum())
        train_rows_ids, test_rows_ids = trials.ids[~is_test], trials.ids[is_test]
    acc = {False: np.zeros((train_rows_ids.size, n_roi), np.float32),
           True: np.zeros((test_rows_ids.size, n_roi), np.float32)}
    counts = {False: np.zeros(train_rows_ids.size, np.int64), True: np.zeros(test_rows_ids.size, np.int64)}
    nonfinite = np.zeros(n_roi, np.int64)

    for s in tqdm(range(1, n_sessions + 1), desc=f"subj{subject:02d} sessions", disable=not progress):
        h = read_beta_header(layout, subject, s)
        if h.grid != first.grid or h.n_trials != T:
            raise NSDDataError(f"{h.path} has shape {h.shape}; expected {(*first.grid, T)} like session 1")
        base = (s - 1) * T
        for t0, vals in iter_session_betas(layout, subject, s, fidx, chunk_mb=chunk_mb):
            g = base + t0 + np.arange(vals.shape[0])
            if vals.dtype.kind == "f":
                nonfinite += (~np.isfinite(vals)).sum(axis=0)
            for flag in (False, True):
                sel = is_test[g] == flag
                if sel.any():
                    r = rows[g[sel]]
                    np.add.at(acc[flag], r, vals[sel])
                    np.add.at(counts[flag], r, 1)

    scale = np.float32(BETA_SCALE)
    for flag in (False, True):
        acc[flag] /= (counts[flag][:, None] * scale).astype(np.float32)
    train, test = acc[False], acc[True]
    if train.shape[0] < 2:
        raise NSDDataError(f"{train.shape[0]} training rows; need at least 2 to estimate a standard deviation")

    mean = np.zeros(n_roi, np.float64)
    std = np.zeros(n_roi, np.float64)
    width = max(1, (8 << 20) // (8 * train.shape[0]))  # float64 column blocks of at most ~8 MB
    for a in range(0, n_roi, width):
        block = train[:, a:a + width].astype(np.float64)
        mean[a:a + width] = block.mean(axis=0)
        std[a:a + width] = block.std(axis=0, ddof=1)
    bad_nan = nonfinite > 0
    bad_const = ~bad_nan & (~np.isfinite(std) | (std == 0))
    n_bad = int(bad_nan.sum() + bad_const.sum())
    if n_bad and nan_policy == "raise":
        raise NSDDataError(f"subject {subject}: {int(bad_nan.sum())} ROI voxel(s) with non-finite betas and "
                           f"{int(bad_const.sum())} constant voxel(s); use nan_policy='exclude' or 'zero'")
    bad = bad_nan | bad_const
    if nan_policy == "exclude":
        keep = np.flatnonzero(~bad)
        if bad.any():
            train, test = _drop_columns_inplace(train, keep), _drop_columns_inplace(test, keep)
            mean, std = mean[keep], std[keep]
    else:
        keep = np.arange(n_roi)
        mean[bad], std[bad] = 0.0, 1.0
        train[:, bad] = 0.0
        test[:, bad] = 0.0
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    for x in (train, test):
        x -= mean32
        x /= std32
    info = {
        "dataset": layout.dataset, "root": layout.root, "subject": subject, "sessions": n_sessions,
        "trials_per_session": T, "split": split, "average": bool(average), "nan_policy": nan_policy,
        "test_fraction": test_fraction if split == "random" else None, "seed": seed if split == "random" else None,
        "n_trials": int(trials.ids.size), "n_trials_train": int((~is_test).sum()), "n_trials_test": int(is_test.sum()),
        "n_images_train": int(train_ids.size), "n_images_test": int(test_ids.size),
        "n_roi_voxels": n_roi, "n_voxels": int(keep.size), "n_nonfinite_voxels": int(bad_nan.sum()),
        "n_constant_voxels": int(bad_const.sum()),
        "nonfinite_voxels": np.flatnonzero(bad_nan).tolist(), "constant_voxels": np.flatnonzero(bad_const).tolist(),
        "repeats_histogram": {int(k): int(v) for k, v in zip(*np.unique(
            np.unique(trials.ids, return_counts=True)[1], return_counts=True))},
        "grid": list(first.grid), "beta_scale": BETA_SCALE,
    }
    return SubjectData(
        train_betas=np.ascontiguousarray(train, np.float32), test_betas=np.ascontiguousarray(test, np.float32),
        train_ids=train_rows_ids.astype(np.int64), test_ids=test_rows_ids.astype(np.int64),
        train_repeats=counts[False], test_repeats=counts[True], voxel_index=keep.astype(np.int64),
        roi_ijk=np.argwhere(mask).astype(np.int64), grid_shape=tuple(first.grid),
        mean=mean32, std=std32, info=info,
    )


# ------------------------------------------------------------ synthetic trees
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
    import nibabel as nib
    import scipy.io

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


def _write_synthetic_stimuli(root: Path, n_images: int, image_size: int) -> None:
    """imgBrick, stim info and COCO-style captions (5 or 6 per image) of a synthetic tree."""
    import h5py
    import pandas as pd

    L = NSDLayout
    coco_ids = 1000 + np.arange(n_images) * 7
    coco_split = np.where(np.arange(n_images) % 5 == 0, "val2017", "train2017")
    pd.DataFrame({"cocoId": coco_ids, "cocoSplit": coco_split, "nsdId": np.arange(n_images)}).to_csv(
        root / L.STIM_INFO)
    (root / L.ANNOTATIONS).mkdir(parents=True, exist_ok=True)
    for split in _COCO_SPLITS:
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
