"""Subject data for the decoders: betas, 73k ids, stimuli and captions, cached per run.

The contract every later stage codes against:

- :func:`subject_data` ``(cfg) -> SubjectData``: float32 ``train_betas`` (n_train, n_voxels)
  and ``test_betas`` (n_test, n_voxels), int64 ``train_ids`` / ``test_ids`` (0-based NSD ids:
  rows of ``imgBrick``, ``nsdId``), ``n_voxels``;
- :func:`stimuli` ``(cfg, split, size) -> uint8 (n, size, size, 3)`` in the order of the ids;
- :func:`captions` ``(cfg, split) -> list[list[str]]``, five per image.

``dataset="nsd"`` reads NSD at ``cfg.nsd_root`` (a local copy, or the public bucket through
a cache in ``<workdir>/nsd-cache``). ``dataset="mini"`` first makes sure mini-NSD exists at
``cfg.nsd_root`` (:func:`nsdlib.pipeline.dataset.ensure_mini_world`) and that its GLM betas exist
(:func:`nsdlib.pipeline.betas.write_betas`, chapter 01), then reads them with exactly the code
that reads NSD (:func:`nsdlib.nsd.prepare_subject`).

mini-NSD is generated with a fixed world seed, :data:`~nsdlib.pipeline.dataset.MINI_WORLD_SEED` (0; see
:mod:`nsdlib.pipeline.dataset`, where the layout and the mini-NSD world are found and made).
``quick=True`` uses the "small" world, otherwise the "default" one.

The decoders ask for the subject through the run's context
(:func:`nsdlib.pipeline.context.get`), which keeps it in memory once per process.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..config import RunConfig
from ..guard import CorruptFileError, reading
from ..nsd import (
    PUBLIC_SESSIONS,
    NSDDataError,
    NSDLayout,
    SubjectData,
    TrialSchedule,
    prepare_subject,
    read_beta_header,
    read_beta_volume,
    read_captions,
    read_expdesign,
    read_roi,
    read_stimuli,
    resolve_sessions,
    trial_schedule,
)
from ..store import CACHE_FIX, Store, params_key
from .betas import write_betas
from .dataset import dataset_layout, ensure_mini_world

__all__ = [
    "beta_volume",
    "captions",
    "ensure_dataset",
    "roi_volume",
    "stimuli",
    "subject_data",
    "trials",
]

_VERSION = 1


def ensure_dataset(cfg: RunConfig, progress: bool = True) -> NSDLayout:
    """The run's dataset, made first if it is mini-NSD and something is missing.

    For ``dataset="mini"``: generates the world at ``cfg.nsd_root`` if absent (seed
    :data:`~nsdlib.pipeline.dataset.MINI_WORLD_SEED`, size "small" when ``cfg.quick``), then writes the subject's GLM
    betas with :func:`nsdlib.pipeline.betas.write_betas` if any session lacks them.
    For ``dataset="nsd"`` nothing is made: missing files raise with the fetch command.
    """
    layout = dataset_layout(cfg)
    if cfg.dataset != "mini":
        return layout
    n_sessions = int(ensure_mini_world(cfg, progress)["spec"]["n_sessions"])
    if _missing_sessions(layout, cfg.subject, n_sessions):
        write_betas(cfg)
        missing = _missing_sessions(layout, cfg.subject, n_sessions)
        if missing:
            raise layout.missing(layout.betas_file(cfg.subject, missing[0]),
                                 f"betas of subject {cfg.subject} session {missing[0]} (after write_betas)",
                                 cfg.subject)
    return layout


def _missing_sessions(layout: NSDLayout, subject: int, n_sessions: int) -> list[int]:
    have = set(layout.sessions(subject))
    return [s for s in range(1, n_sessions + 1) if s not in have]


def _params(cfg: RunConfig, layout: NSDLayout, sessions, split, average, nan_policy, test_fraction) -> dict:
    rels = [layout.EXPDESIGN, layout.roi_file(cfg.subject)]
    rels += [layout.betas_file(cfg.subject, s) for s in layout.sessions(cfg.subject)] if layout.is_local else []
    p = {"v": _VERSION, "dataset": cfg.dataset, "subject": cfg.subject,
         "sessions": sessions if sessions is not None else ("all" if cfg.dataset == "mini" else PUBLIC_SESSIONS),
         "split": split, "average": bool(average), "nan_policy": nan_policy,
         "source": params_key({"files": layout.fingerprint(rels)})}
    if split == "random":
        p.update(test_fraction=float(test_fraction), seed=cfg.seed)
    return p


def subject_data(cfg: RunConfig, *, sessions: int | None = None, split: str = "shared", average: bool = True,
                 nan_policy: str = "exclude", test_fraction: float = 0.1, progress: bool = True) -> SubjectData:
    """The run's subject, prepared and cached in the run's store.

    Parameters
    ----------
    cfg : RunConfig
    sessions : int, optional
        NSD: 1 to 40, default 37 (the public release the paper used). mini-NSD: default all.
    split : {"shared", "random"}
        Test set = the shared images (default), or a random ``test_fraction`` of the images
        drawn with ``cfg.seed`` (the paper's 90/10 description).
    average : bool
        Average each image's repeats (default) or keep single trials.
    nan_policy : {"exclude", "zero", "raise"}
        What happens to voxels with non-finite or constant betas; recorded in ``info``.

    Returns
    -------
    SubjectData
        See :class:`nsdlib.nsd.SubjectData`; ``info`` holds the counts and choices.
    """
    layout = ensure_dataset(cfg, progress=progress)
    params = _params(cfg, layout, sessions, split, average, nan_policy, test_fraction)

    def compute():
        return prepare_subject(layout, cfg.subject, sessions, split=split, average=average, nan_policy=nan_policy,
                               test_fraction=test_fraction, seed=cfg.seed, progress=progress).to_arrays()

    return SubjectData.from_arrays(Store.for_config(cfg).arrays("subject_data", params, compute))


def _ids(cfg: RunConfig, split: str, opts: dict) -> tuple[NSDLayout, np.ndarray]:
    """The run's layout (:func:`ensure_dataset`) and the ids of ``split``, read alone from the
    cached subject data when it exists."""
    if split not in ("train", "test"):
        raise NSDDataError(f"split must be 'train' or 'test'; found {split!r}")
    keys = ("sessions", "split", "average", "nan_policy", "test_fraction")
    layout = ensure_dataset(cfg, progress=opts.get("progress", True))
    defaults = {"sessions": None, "split": "shared", "average": True, "nan_policy": "exclude", "test_fraction": 0.1}
    unknown = set(opts) - set(keys) - {"progress"}
    if unknown:
        raise TypeError(f"unknown subject_data option(s): {', '.join(sorted(unknown))}")
    path = Store.for_config(cfg).path("subject_data", _params(cfg, layout, **{**defaults, **{
        k: v for k, v in opts.items() if k in keys}}))
    if path.is_file():
        with contextlib.suppress(CorruptFileError), reading(path, "the cached subject data (.npz)", CACHE_FIX), \
                np.load(path, allow_pickle=False) as z:  # a damaged entry: subject_data computes it again
            return layout, z[f"{split}_ids"]
    d = subject_data(cfg, **opts)
    return layout, (d.train_ids if split == "train" else d.test_ids)


def stimuli(cfg: RunConfig, split: str, size: int | None = None, **opts) -> np.ndarray:
    """The stimuli of ``split`` ("train" or "test"), in the order of its ids.

    Parameters
    ----------
    size : int, optional
        Side in pixels (antialiased resize); default the stored size (425 for NSD, 128 for
        mini-NSD).
    **opts
        Options of :func:`subject_data` (which images belong to ``split``).

    Returns
    -------
    ndarray of shape (n, size, size, 3), uint8, 0-255
    """
    layout, ids = _ids(cfg, split, opts)
    params = {"v": _VERSION, "dataset": cfg.dataset, "ids": params_key({"ids": ids.tolist()}), "size": size,
              "source": params_key({"files": layout.fingerprint([layout.STIMULI])})}
    progress = opts.get("progress", True)
    return Store.for_config(cfg).arrays(
        "stimuli", params, lambda: {"images": read_stimuli(layout, ids, size, progress=progress)})["images"]


def captions(cfg: RunConfig, split: str, **opts) -> list[list[str]]:
    """Five captions per image of ``split`` ("train" or "test"), in the order of its ids."""
    layout, ids = _ids(cfg, split, opts)
    rels = [layout.STIM_INFO, *[layout.captions_file(s) for s in ("train2017", "val2017")]]
    rels = [r for r in rels if not layout.is_local or layout.exists(r)]
    params = {"v": _VERSION, "dataset": cfg.dataset, "ids": params_key({"ids": ids.tolist()}),
              "source": params_key({"files": layout.fingerprint(rels)})}
    return Store.for_config(cfg).json("captions", params, lambda: read_captions(layout, ids))


def beta_volume(cfg: RunConfig, session: int = 1, trial: int = 0) -> np.ndarray:
    """One trial's beta volume (X, Y, Z), float32 percent signal change (for figures)."""
    return read_beta_volume(ensure_dataset(cfg), cfg.subject, session, trial)


def roi_volume(cfg: RunConfig, name: str = "nsdgeneral") -> np.ndarray:
    """The subject's ROI volume (X, Y, Z), int (nsdgeneral: -1 outside the brain, 0, 1)."""
    return read_roi(ensure_dataset(cfg), cfg.subject, name)


def trials(cfg: RunConfig, sessions: int | None = None) -> TrialSchedule:
    """The subject's trials in order: 0-based 73k id, shared flag and session of each."""
    layout = ensure_dataset(cfg)
    design = read_expdesign(layout)
    per_session = read_beta_header(layout, cfg.subject, 1).n_trials
    return trial_schedule(design, cfg.subject, resolve_sessions(layout, design, per_session, sessions), per_session)
