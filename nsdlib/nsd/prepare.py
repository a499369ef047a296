"""Subject preparation: one subject's betas, ready for the decoders.

:func:`prepare_subject` follows the protocol of the paper and of Brain-Diffuser: trial ->
73k id through ``masterordering`` and ``subjectim``; shared images are the test set; betas /
300 inside ``nsdgeneral > 0``; repeats averaged per image; every voxel z-scored with the
training mean and standard deviation (ddof = 1). It streams the betas volume by volume,
session by session, accumulating per-image sums, so memory holds the output and a bounded
read buffer, never the sessions themselves. Its steps, in order:

1. :func:`_read_inputs`: the design, the first session's header, the number of sessions, the ROI;
2. :func:`_plan_rows`: which output row (image, or trial) each trial is added into;
3. :func:`_accumulate`: the streamed per-row sums, session by session;
4. :func:`_train_statistics` and :func:`_apply_nan_policy`: the voxels kept and their statistics;
5. the z-score with the training statistics, and :func:`_info`: what was done.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from tqdm.auto import tqdm

from .layout import BETA_SCALE, PUBLIC_SESSIONS, NSDDataError, NSDLayout, check_sessions, check_subject
from .readers import (
    BetaHeader,
    ExpDesign,
    TrialSchedule,
    fortran_index,
    iter_session_betas,
    read_beta_header,
    read_expdesign,
    read_roi,
    trial_schedule,
)

__all__ = ["NAN_POLICIES", "SPLITS", "SubjectData", "prepare_subject", "resolve_sessions", "split_images"]

SPLITS = ("shared", "random")
NAN_POLICIES = ("exclude", "zero", "raise")


def split_images(trials: TrialSchedule, split: str = "shared", test_fraction: float = 0.1,
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
    sessions = PUBLIC_SESSIONS if sessions is None else check_sessions(sessions)
    if sessions > in_design:
        raise NSDDataError(f"the design at {layout.display(layout.EXPDESIGN)} holds {in_design} sessions of "
                           f"{trials_per_session} trials; asked for {sessions}")
    return sessions



@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What preparation reads before the betas: session 1's header, the sessions, the ROI, the trials."""

    first: BetaHeader
    n_sessions: int
    mask: np.ndarray
    trials: TrialSchedule

    @property
    def n_roi(self) -> int:
        return int(self.mask.sum())


@dataclasses.dataclass(frozen=True)
class _RowPlan:
    """Where each trial's betas are added: ``is_test[t]`` picks the matrix, ``rows[t]`` its row.

    ``train_ids`` / ``test_ids`` are the images of the split (sorted, unique);
    ``train_row_ids`` / ``test_row_ids`` the 73k id of each output row (the same, when averaging).
    """

    is_test: np.ndarray
    rows: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    train_row_ids: np.ndarray
    test_row_ids: np.ndarray


def _check_options(nan_policy: str, split: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise NSDDataError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; found {nan_policy!r}")
    if split not in SPLITS:
        raise NSDDataError(f"split must be one of {', '.join(SPLITS)}; found {split!r}")


def _read_inputs(layout: NSDLayout, subject: int, sessions: int | None) -> _Inputs:
    """The design, session 1's header, the number of sessions, the nsdgeneral mask and the trials."""
    design = read_expdesign(layout)
    first = read_beta_header(layout, subject, 1)
    n_sessions = resolve_sessions(layout, design, first.n_trials, sessions)
    roi = read_roi(layout, subject)
    if roi.shape != first.grid:
        raise NSDDataError(f"the nsdgeneral ROI {layout.display(layout.roi_file(subject))} has grid {roi.shape}, "
                           f"but the betas {layout.display(layout.betas_file(subject, 1))} have grid {first.grid}")
    mask = roi > 0
    if not mask.any():
        raise NSDDataError(f"the nsdgeneral ROI {layout.display(layout.roi_file(subject))} has no voxel > 0")
    trials = trial_schedule(design, subject, n_sessions, first.n_trials)
    return _Inputs(first, n_sessions, mask, trials)


def _plan_rows(trials: TrialSchedule, split: str, test_fraction: float, seed: int, average: bool) -> _RowPlan:
    """One row per image of each split (``average``), or one row per trial."""
    train_ids, test_ids = split_images(trials, split, test_fraction, seed)
    is_test = np.isin(trials.ids, test_ids)
    if average:
        rows = np.where(is_test, np.searchsorted(test_ids, trials.ids), np.searchsorted(train_ids, trials.ids))
        return _RowPlan(is_test, rows, train_ids, test_ids, train_ids, test_ids)
    rows = np.empty(trials.ids.size, np.int64)
    rows[~is_test] = np.arange((~is_test).sum())
    rows[is_test] = np.arange(is_test.sum())
    return _RowPlan(is_test, rows, train_ids, test_ids, trials.ids[~is_test], trials.ids[is_test])


def _accumulate(layout: NSDLayout, subject: int, inputs: _Inputs, plan: _RowPlan, chunk_mb: float,
                progress: bool):
    """Stream every session's ROI betas into per-row sums (float32: exact for int16 values).

    Returns
    -------
    sums : dict of bool -> ndarray of shape (n_rows, n_roi), float32
        Keyed by ``is_test``: the stored values (x 300) summed per row.
    counts : dict of bool -> ndarray of shape (n_rows,), int64
        Trials added into each row.
    nonfinite : ndarray of shape (n_roi,), int64
        Non-finite values met per voxel.
    """
    first, T, n_roi = inputs.first, inputs.first.n_trials, inputs.n_roi
    fidx = fortran_index(inputs.mask)
    sums = {False: np.zeros((plan.train_row_ids.size, n_roi), np.float32),
            True: np.zeros((plan.test_row_ids.size, n_roi), np.float32)}
    counts = {False: np.zeros(plan.train_row_ids.size, np.int64), True: np.zeros(plan.test_row_ids.size, np.int64)}
    nonfinite = np.zeros(n_roi, np.int64)
    for s in tqdm(range(1, inputs.n_sessions + 1), desc=f"subj{subject:02d} sessions", disable=not progress):
        h = read_beta_header(layout, subject, s)
        if h.grid != first.grid or h.n_trials != T:
            raise NSDDataError(f"{h.path} has shape {h.shape}; expected {(*first.grid, T)} like session 1")
        base = (s - 1) * T
        for t0, vals in iter_session_betas(layout, subject, s, fidx, chunk_mb=chunk_mb):
            g = base + t0 + np.arange(vals.shape[0])
            if vals.dtype.kind == "f":
                nonfinite += (~np.isfinite(vals)).sum(axis=0)
            for flag in (False, True):
                sel = plan.is_test[g] == flag
                if sel.any():
                    r = plan.rows[g[sel]]
                    np.add.at(sums[flag], r, vals[sel])
                    np.add.at(counts[flag], r, 1)
    return sums, counts, nonfinite


def _row_means(sums: dict, counts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows in percent signal change: sums / (count x 300), in place."""
    scale = np.float32(BETA_SCALE)
    for flag in (False, True):
        sums[flag] /= (counts[flag][:, None] * scale).astype(np.float32)
    train, test = sums[False], sums[True]
    if train.shape[0] < 2:
        raise NSDDataError(f"{train.shape[0]} training rows; need at least 2 to estimate a standard deviation")
    return train, test


def _train_statistics(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and standard deviation (ddof = 1), float64, in column blocks of at most ~8 MB."""
    n_roi = train.shape[1]
    mean = np.zeros(n_roi, np.float64)
    std = np.zeros(n_roi, np.float64)
    width = max(1, (8 << 20) // (8 * train.shape[0]))
    for a in range(0, n_roi, width):
        block = train[:, a:a + width].astype(np.float64)
        mean[a:a + width] = block.mean(axis=0)
        std[a:a + width] = block.std(axis=0, ddof=1)
    return mean, std


def _apply_nan_policy(train, test, mean, std, nonfinite, nan_policy: str, subject: int):
    """Drop (``"exclude"``) or zero (``"zero"``) the non-finite and constant voxels, or raise.

    Returns
    -------
    train, test, mean, std : ndarray
        With the dropped columns removed (``"exclude"``), or zeroed with mean 0 and std 1.
    keep : ndarray of int
        Indices of the kept ROI voxels.
    bad_nan, bad_const : ndarray of shape (n_roi,), bool
        Voxels with a non-finite beta; voxels constant over the training rows.
    """
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
        keep = np.arange(bad.size)
        mean[bad], std[bad] = 0.0, 1.0
        train[:, bad] = 0.0
        test[:, bad] = 0.0
    return train, test, mean, std, keep, bad_nan, bad_const


def _info(layout: NSDLayout, subject: int, inputs: _Inputs, plan: _RowPlan, options: dict, keep: np.ndarray,
          bad_nan: np.ndarray, bad_const: np.ndarray) -> dict:
    """The counts and choices recorded in :attr:`SubjectData.info`."""
    ids, is_test = inputs.trials.ids, plan.is_test
    random = options["split"] == "random"
    return {
        "dataset": layout.dataset, "root": layout.root, "subject": subject, "sessions": inputs.n_sessions,
        "trials_per_session": inputs.first.n_trials, "split": options["split"], "average": bool(options["average"]),
        "nan_policy": options["nan_policy"], "test_fraction": options["test_fraction"] if random else None,
        "seed": options["seed"] if random else None,
        "n_trials": int(ids.size), "n_trials_train": int((~is_test).sum()), "n_trials_test": int(is_test.sum()),
        "n_images_train": int(plan.train_ids.size), "n_images_test": int(plan.test_ids.size),
        "n_roi_voxels": inputs.n_roi, "n_voxels": int(keep.size), "n_nonfinite_voxels": int(bad_nan.sum()),
        "n_constant_voxels": int(bad_const.sum()),
        "nonfinite_voxels": np.flatnonzero(bad_nan).tolist(), "constant_voxels": np.flatnonzero(bad_const).tolist(),
        "repeats_histogram": {int(k): int(v) for k, v in zip(*np.unique(
            np.unique(ids, return_counts=True)[1], return_counts=True))},
        "grid": list(inputs.first.grid), "beta_scale": BETA_SCALE,
    }


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
    subject = check_subject(subject)
    _check_options(nan_policy, split)
    inputs = _read_inputs(layout, subject, sessions)
    plan = _plan_rows(inputs.trials, split, test_fraction, seed, average)
    sums, counts, nonfinite = _accumulate(layout, subject, inputs, plan, chunk_mb, progress)
    train, test = _row_means(sums, counts)
    mean, std = _train_statistics(train)
    train, test, mean, std, keep, bad_nan, bad_const = _apply_nan_policy(
        train, test, mean, std, nonfinite, nan_policy, subject)
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    for x in (train, test):
        x -= mean32
        x /= std32
    options = {"split": split, "average": average, "nan_policy": nan_policy, "test_fraction": test_fraction,
               "seed": seed}
    return SubjectData(
        train_betas=np.ascontiguousarray(train, np.float32), test_betas=np.ascontiguousarray(test, np.float32),
        train_ids=plan.train_row_ids.astype(np.int64), test_ids=plan.test_row_ids.astype(np.int64),
        train_repeats=counts[False], test_repeats=counts[True], voxel_index=keep.astype(np.int64),
        roi_ijk=np.argwhere(inputs.mask).astype(np.int64), grid_shape=tuple(inputs.first.grid),
        mean=mean32, std=std32, info=_info(layout, subject, inputs, plan, options, keep, bad_nan, bad_const),
    )
