"""NSD's file layout: the one spelling of every path in an NSD tree, bound to a root.

Paths are relative to the dataset root; both the real NSD and mini-NSD (which
:mod:`nsdlib.mini` writes through these very names) use them:

- ``nsddata/experiments/nsd/nsd_expdesign.mat``: ``masterordering`` (trial -> 1-based index
  into a subject's images), ``subjectim`` (8 x 10,000 1-based 73k ids), ``sharedix``;
- ``nsddata/experiments/nsd/nsd_stim_info_merged.csv``: ``nsdId``, ``cocoId``, ``cocoSplit``;
- ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``: ``imgBrick`` (n_images, H, W, 3) uint8;
- ``nsddata_stimuli/stimuli/nsd/annotations/captions_{train2017,val2017}.json``: COCO captions;
- ``nsddata/ppdata/subjNN/func1pt8mm/roi/<name>.nii.gz``: ROI volumes (nsdgeneral: -1 / 0 / 1);
- ``nsddata_betas/ppdata/subjNN/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionSS.nii.gz``:
  int16 single-trial betas in percent signal change x 300, (X, Y, Z, trials);
- ``nsddata_timeseries/ppdata/subjNN/func1pt8mm/{timeseries,design}/``: the time series of
  each run and its design (one value per volume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import default_workdir
from ..names import SUBJECTS
from .access import download_file, open_block_cached, open_root

__all__ = [
    "BETA_SCALE",
    "NSD_SESSIONS",
    "PAPER_COUNTS",
    "PUBLIC_SESSIONS",
    "NSDDataError",
    "NSDFileError",
    "NSDLayout",
    "check_sessions",
    "check_subject",
    "mini_generate_command",
]

#: Betas are stored as int16 percent signal change multiplied by this factor.
BETA_SCALE = 300.0
#: Core NSD sessions completed by subjects 1, 2, 5 and 7.
NSD_SESSIONS = 40
#: Sessions of the first public release, used by the paper and by Brain-Diffuser.
PUBLIC_SESSIONS = 37

#: Counts of the paper / NSD for 37 sessions (reference.md, "NSD layout"), per subject.
PAPER_COUNTS = {
    "train_images": 8859, "test_images": 982, "train_trials": 24980, "test_trials": 2770,
    "nsdgeneral_voxels": {1: 15724, 2: 14278, 5: 13039, 7: 12682},
}


#: mini-NSD's manifest (seed, size, version, spec, file digests), at the root of a mini-NSD.
MINI_MANIFEST = "mini_nsd.json"


def _mini_world(root) -> tuple[str, int]:
    """The size and seed of the mini-NSD at ``root`` (from its manifest), else the defaults."""
    try:
        man = json.loads((Path(root) / MINI_MANIFEST).read_text())
        return str(man["size"]), int(man["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return "default", 0


def mini_generate_command(root) -> str:
    """The command that writes, or restores, the mini-NSD at ``root`` with its own size and seed
    (a "small" world needs ``--size small``)."""
    size, seed = _mini_world(root)
    return f"`nsdlib mini generate --root {root} --size {size} --seed {seed}`"


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


def check_sessions(sessions) -> int:
    """Return ``sessions`` as an int if it is a number of NSD sessions (1 to 40)."""
    if isinstance(sessions, bool) or not isinstance(sessions, (int, np.integer)):
        raise NSDDataError(f"sessions must be an integer from 1 to {NSD_SESSIONS}; found {sessions!r}")
    if not 1 <= sessions <= NSD_SESSIONS:
        raise NSDDataError(f"NSD subjects 1, 2, 5 and 7 have {NSD_SESSIONS} sessions "
                           f"({PUBLIC_SESSIONS} in the first public release); asked for {sessions}")
    return int(sessions)


class NSDLayout:
    """Paths of the NSD layout under one root, and access to its files.

    The class attributes and class methods spell every relative path of NSD's tree (no
    other module spells one); an instance binds them to a root.

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
    #: The COCO splits whose caption files NSD's images come from.
    COCO_SPLITS = ("train2017", "val2017")

    def __init__(self, root, *, dataset: str = "nsd", cache_dir=None, storage_options: dict | None = None):
        if dataset not in ("nsd", "mini"):
            raise NSDDataError(f"dataset must be 'nsd' or 'mini'; found {dataset!r}")
        self.root = str(root)
        self.dataset = dataset
        self.fs, self._base, self.is_local = open_root(self.root, storage_options)
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

    @classmethod
    def experiment_files(cls) -> list[str]:
        """The files every subject shares: design, stimulus table, stimuli and captions."""
        return [cls.EXPDESIGN, cls.STIM_INFO, cls.STIMULI, *[cls.captions_file(s) for s in cls.COCO_SPLITS]]

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
                quick = " --param quick=true" if _mini_world(root)[0] == "small" else ""  # quick runs' world
                return (f"write the GLM betas with `nsdlib betas --dataset mini --subject {subject} "
                        f"--nsd-root {root}{quick}`")
            return f"generate (or restore) mini-NSD with {mini_generate_command(root)}"
        if not self.is_local:
            return (f"it is not in {root}; check the path, or download NSD with "
                    f"`nsdlib fetch nsd --subject {subject or 1} --root DIR` and use nsd_root=DIR")
        extra = f" --sessions {session}" if session is not None and session > PUBLIC_SESSIONS else ""
        return f"fetch it with `nsdlib fetch nsd --subject {subject or 1} --root {root}{extra}`"

    def repair_hint(self, rel: str, subject: int | None = None, session: int | None = None) -> str:
        """What repairs a damaged (truncated, garbled) copy of ``rel``."""
        if self.dataset == "mini" and not rel.startswith("nsddata_betas/"):
            return f"restore it with {mini_generate_command(self.root)} (it rewrites damaged files)"
        where = self.display(rel) if self.is_local else str(self.cache_dir / rel)
        return f"delete {where}, then {self.fetch_hint(rel, subject, session)}"

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
        return open_block_cached(self.fs, self.url(rel), self.cache_dir)

    def sessions(self, subject: int) -> list[int]:
        """Session numbers whose betas file exists for ``subject`` (sorted)."""
        session_of = {Path(self.betas_file(subject, s)).name: s for s in range(1, 100)}
        try:
            names = self.fs.ls(self.url(self.betas_dir(subject)), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted({session_of[name] for n in names if (name := Path(str(n)).name) in session_of})

    def fingerprint(self, rels: Sequence[str]) -> list:
        """What identifies the files' content cheaply: size and mtime locally, else the paths."""
        if not self.is_local:
            return [self.root, *rels]
        out = []
        for rel in rels:
            if not os.path.isfile(self.url(rel)):
                raise self.missing(rel, f"NSD file {Path(rel).name}")
            st = os.stat(self.url(rel))
            out.append([rel, st.st_size, st.st_mtime_ns])
        return out
