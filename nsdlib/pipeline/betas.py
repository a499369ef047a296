"""Chapter 01's cached step: single-trial betas of mini-NSD, written in NSD's own layout.

NSD ships its GLMsingle betas (``betas_fithrf_GLMdenoise_RR``). mini-NSD ships only time
series and design files, like NSD's ``nsddata_timeseries``; :func:`write_betas` runs
:class:`nsdlib.glm.GLMSingle` on them session by session (GLMsingle was fitted per session in
NSD) over the brain mask (``nsdgeneral >= 0``: the noise pool needs voxels outside the
ROI), and writes model D's betas exactly where and how NSD keeps its own::

    nsddata_betas/ppdata/subjNN/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionSS.nii.gz
    int16, percent signal change x 300, (X, Y, Z, n_trials), trials in chronological order

so that chapter 02 reads them with the code that reads NSD. Each file is written
atomically, and its NIfTI ``descrip`` field records a key of the parameters that made it:
a session already written with the same parameters is skipped (resume), one written with
other parameters is replaced.

Per-session diagnostics for chapter 01 (models A-D betas of the nsdgeneral voxels, HRF
indices, R², noise pool, number of PCs, ridge fractions) are cached in the run's
:class:`~nsdlib.store.Store` (``glm_session``); :func:`glm_diagnostics` gathers them and
:func:`model_accuracy` scores them against mini-NSD's ground truth.

``quick=True`` runs use the small mini-NSD (2 sessions of 3 runs), as chapter 02 does; every one
of its sessions is fitted, so chapter 02 finds all the betas it reads.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ..config import ConfigError, RunConfig
from ..glm import FRACTIONS, GLMSingle, TrialDesign
from ..guard import reading
from ..metrics import columnwise_r
from ..nsd import read_roi
from ..store import Store, atomic_path, params_key
from .dataset import dataset_layout, ensure_mini_world

__all__ = ["GLM_OPTIONS", "glm_diagnostics", "hrf_recovery", "model_accuracy", "session_params", "write_betas"]

_VERSION = 2
#: The estimator's settings used for mini-NSD (GLMsingle's defaults).
GLM_OPTIONS = {"n_pcs": 10, "pcstop": 1.05, "fractions": "1..0.05 step 0.05", "noise_pool": "gmm",
               "brain_thresh": [99.0, 0.1], "mask": "brain (nsdgeneral >= 0)"}
_SCALE = 300.0  # NSD stores percent signal change x 300 as int16
_MODELS = ("A", "B", "C", "D")


def _nsd_error():
    return ConfigError(
        "dataset='nsd' needs no GLM: NSD ships its single-trial betas (GLMsingle's "
        "betas_fithrf_GLMdenoise_RR, int16 percent signal change x 300) under nsddata_betas/; fetch them with "
        "`nsdlib fetch nsd --subject N --root DIR`. write_betas makes the same files for dataset='mini'.")


def _world(cfg: RunConfig, progress: bool) -> dict:
    """Make sure the run's mini-NSD exists (as chapter 02 would) and return its manifest."""
    return ensure_mini_world(cfg, progress)


def session_params(cfg: RunConfig, manifest: dict, session: int) -> dict:
    """Everything that changes one session's betas (the store key and the file's ``descrip``)."""
    return {"v": _VERSION, "dataset": cfg.dataset, "subject": cfg.subject, "session": int(session),
            "world": {k: manifest[k] for k in ("seed", "size", "version")}, "glm": GLM_OPTIONS}


def _descrip(params: dict) -> str:
    return f"nsdlib.glm {params_key(params)}"


def _file_descrip(path: Path) -> str | None:
    try:
        d = nib.load(str(path)).header["descrip"]
    except Exception:  # unreadable or foreign file: treat as not ours
        return None
    d = np.asarray(d).item()
    return d.decode("ascii", "replace").strip("\x00 ") if isinstance(d, bytes) else str(d)


def _fit_session(cfg: RunConfig, manifest: dict, session: int, roi: np.ndarray, progress: bool) -> dict:
    """Fit one session over the brain mask; the arrays cached for chapter 01 and the writer."""
    spec = manifest["spec"]
    tr, stim_dur, n_runs = float(spec["tr"]), float(spec["stim_dur"]), int(spec["n_runs"])
    layout = dataset_layout(cfg)
    brain = roi >= 0
    runs, designs = [], []
    for r in range(1, n_runs + 1):
        ts_rel = layout.timeseries_file(cfg.subject, session, r)
        ts_path = layout.local_path(ts_rel, f"time series of session {session} run {r}", cfg.subject)
        with reading(ts_path, "a gzipped NIfTI-1 time series (X, Y, Z, T)", layout.repair_hint(ts_rel, cfg.subject)):
            img = nib.load(str(ts_path))
            if img.shape[:3] != roi.shape:
                raise ValueError(f"{ts_path} has a {img.shape[:3]} grid; the nsdgeneral ROI has {roi.shape}")
            data = np.asarray(img.dataobj)
        runs.append(data[brain].T.astype(np.float32))  # (n_time, n_brain)
        d_path = layout.local_path(layout.design_file(cfg.subject, session, r), f"design of session {session} run {r}",
                                   cfg.subject)
        with reading(d_path, "a design file of one integer per volume", layout.repair_hint(
                layout.design_file(cfg.subject, session, r), cfg.subject)):
            vec = np.loadtxt(d_path, dtype=np.int64, ndmin=1)
        if vec.size != data.shape[3]:
            raise ValueError(f"{d_path} has {vec.size} rows; its run has {data.shape[3]} volumes (one row per volume)")
        designs.append(TrialDesign.from_volumes(vec, tr))
    t0 = time.perf_counter()
    # mini-NSD's per-run problems are tiny (about 55 x 256): BLAS threads only cost time here
    glm = GLMSingle(tr=tr, stim_dur=stim_dur, n_pcs=10, fractions=FRACTIONS, blas_threads=1, verbose=progress)
    glm.fit(runs, designs)
    seconds = time.perf_counter() - t0
    in_roi = roi[brain] == 1
    out = {f"betas_{m}": glm.results_[m].betas[:, in_roi] for m in _MODELS}
    out.update({f"r2_{m}": glm.results_[m].r2.astype(np.float32) for m in _MODELS})
    out.update(
        betas_brain=glm.betas_, in_roi=in_roi, brain_index=np.flatnonzero(brain.ravel()),
        hrf_index=glm.hrf_index_, fraction=glm.fraction_.astype(np.float32), noise_pool=glm.noise_pool_,
        pc_voxels=glm.pc_voxels_, onoff_r2=glm.onoff_r2_.astype(np.float32), meanvol=glm.meanvol_.astype(np.float32),
        hrf_r2=glm.hrf_r2_.astype(np.float32), n_pcs=np.int64(glm.n_pcs_), xval_curve=glm.xval_curve_,
        pc_candidates=glm.pc_candidates_, r2_threshold=np.float64(glm.r2_threshold_),
        conditions=glm.conditions_, trial_run=glm.trial_run_ + 1, fit_seconds=np.float64(seconds),
        pcs=np.stack([p[:, :glm.pcs_[0].shape[1]] for p in glm.pcs_]) if all(
            p.shape == glm.pcs_[0].shape for p in glm.pcs_) else np.zeros((0, 0, 0)),
    )
    return out


def _write_volume(path: Path, betas_brain: np.ndarray, roi: np.ndarray, affine: np.ndarray, descrip: str) -> None:
    """NSD's format: int16 percent signal change x 300, (X, Y, Z, n_trials); 0 outside the mask."""
    brain = roi >= 0
    vals = np.nan_to_num(np.asarray(betas_brain, dtype=np.float64)) * _SCALE
    vals = np.clip(np.rint(vals), -32768, 32767).astype(np.int16)
    vol = np.zeros((*roi.shape, vals.shape[0]), np.int16)
    vol[brain] = vals.T
    img = nib.Nifti1Image(vol, affine)
    img.header.set_data_dtype(np.int16)
    img.header["descrip"] = descrip.encode("ascii")[:79]
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_betas(cfg: RunConfig, sessions=None, progress: bool = True) -> Path:
    """Fit the GLM to every session of the run's mini-NSD subject and write NSD-style betas.

    Parameters
    ----------
    cfg : RunConfig
        ``dataset="mini"`` (``quick=True`` uses the small mini-NSD, as chapter 02 does).
    sessions : iterable of int, optional
        1-based sessions to do; default all sessions of the dataset.
    progress : bool
        Progress bars.

    Returns
    -------
    Path
        The ``betas_fithrf_GLMdenoise_RR`` folder of the subject.

    Raises
    ------
    ConfigError
        For ``dataset="nsd"``: NSD ships these betas.
    """
    if cfg.dataset == "nsd":
        raise _nsd_error()
    manifest = _world(cfg, progress)
    n_sessions = int(manifest["spec"]["n_sessions"])
    todo = list(range(1, n_sessions + 1)) if sessions is None else [int(s) for s in sessions]
    bad = [s for s in todo if not 1 <= s <= n_sessions]
    if bad:
        raise ValueError(f"sessions must lie in 1..{n_sessions} for this mini-NSD; found {bad}")
    layout = dataset_layout(cfg)
    roi = read_roi(layout, cfg.subject)
    affine = nib.load(str(layout.local_path(layout.roi_file(cfg.subject), "nsdgeneral ROI"))).affine
    store = Store.for_config(cfg)
    out_dir = Path(cfg.nsd_root) / layout.betas_dir(cfg.subject)
    for s in tqdm(todo, desc=f"GLM sessions, subject {cfg.subject}", disable=not progress):
        params = session_params(cfg, manifest, s)
        path = Path(cfg.nsd_root) / layout.betas_file(cfg.subject, s)
        written = path.is_file() and _file_descrip(path) == _descrip(params)
        if written and store.has("glm_session", params):
            continue
        diag = store.arrays("glm_session", params, lambda s=s: _fit_session(cfg, manifest, s, roi, progress))
        if not written:
            _write_volume(path, diag["betas_brain"], roi, affine, _descrip(params))
    return out_dir


def glm_diagnostics(cfg: RunConfig, sessions=None, progress: bool = True) -> dict:
    """Chapter 01's diagnostics, per session (computed by :func:`write_betas` if missing).

    Returns
    -------
    dict
        ``sessions`` (list of int) and, per session ``s``, ``per_session[s]``: the arrays of
        the store's ``glm_session`` artifact: ``betas_A`` … ``betas_D`` (n_trials, n_roi)
        percent signal change; ``hrf_index``, ``fraction``, ``noise_pool``, ``r2_A`` … over the
        brain voxels (``in_roi`` marks the nsdgeneral ones); ``n_pcs``, ``xval_curve``,
        ``r2_threshold``, ``fit_seconds``.
    """
    if cfg.dataset == "nsd":
        raise _nsd_error()
    write_betas(cfg, sessions=sessions, progress=progress)
    manifest = _world(cfg, False)
    n_sessions = int(manifest["spec"]["n_sessions"])
    todo = list(range(1, n_sessions + 1)) if sessions is None else [int(s) for s in sessions]
    store = Store.for_config(cfg)
    per = {}
    roi = None
    for s in todo:
        params = session_params(cfg, manifest, s)
        if roi is None and not store.has("glm_session", params):  # only if the cache vanished meanwhile
            roi = read_roi(dataset_layout(cfg), cfg.subject)
        per[s] = store.arrays("glm_session", params,
                              lambda s=s, roi=roi: _fit_session(cfg, manifest, s, roi, progress))
    return {"sessions": todo, "per_session": per}


def model_accuracy(diagnostics: dict, truth) -> dict:
    """Median over nsdgeneral voxels of the correlation (over trials) of each model's betas with the truth.

    Parameters
    ----------
    diagnostics : dict
        From :func:`glm_diagnostics`.
    truth : nsdlib.mini.Truth
        The subject's ground truth (``amplitudes`` in trial order, ``trial_session``).

    Returns
    -------
    dict
        ``median_r`` {model: float} over the diagnostics' sessions (trials concatenated);
        ``voxel_r`` {model: ndarray (n_roi,)}; ``rmse`` {model: float}, percent signal change.
    """
    amp, est = [], {m: [] for m in _MODELS}
    for s in diagnostics["sessions"]:
        sel = np.asarray(truth.trial_session) == s
        amp.append(np.asarray(truth.amplitudes)[sel])
        for m in _MODELS:
            est[m].append(diagnostics["per_session"][s][f"betas_{m}"])
    amp = np.concatenate(amp).astype(np.float64)
    out = {"median_r": {}, "voxel_r": {}, "rmse": {}}
    for m in _MODELS:
        b = np.concatenate(est[m]).astype(np.float64)
        if b.shape != amp.shape:
            raise ValueError(f"model {m} betas have shape {b.shape}; the truth has {amp.shape}")
        r = columnwise_r(b, amp)
        out["voxel_r"][m] = r
        out["median_r"][m] = float(np.nanmedian(r))
        out["rmse"][m] = float(np.sqrt(np.mean((b - amp) ** 2)))
    return out


def hrf_recovery(diagnostics: dict, truth, top: float = 0.25) -> dict:
    """How often model B's HRF is the true one (±1 library step), over sessions and voxels.

    "High-signal" voxels are the ``top`` fraction of nsdgeneral voxels with the largest ratio of
    the true amplitudes' standard deviation to the thermal noise.

    Returns
    -------
    dict
        ``exact``, ``within1`` (all ROI voxels) and ``exact_high``, ``within1_high``: fractions.
    """
    true = np.asarray(truth.hrf_index)
    snr = np.asarray(truth.amplitudes).std(0) / np.asarray(truth.thermal_sd)
    high = snr >= np.quantile(snr, 1 - top)
    d = np.stack([np.abs(diagnostics["per_session"][s]["hrf_index"][diagnostics["per_session"][s]["in_roi"]] - true)
                  for s in diagnostics["sessions"]])
    return {"exact": float((d == 0).mean()), "within1": float((d <= 1).mean()),
            "exact_high": float((d[:, high] == 0).mean()), "within1_high": float((d[:, high] <= 1).mean()),
            "n_high": int(high.sum())}
