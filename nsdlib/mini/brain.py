"""mini-NSD's brains: anatomy, voxel populations, responses, noise, time series, and the truth.

Each of the four subjects (1, 2, 5, 7) has an ellipsoid brain whose posterior part is the
nsdgeneral ROI. Early visual voxels (V1-hV4) have retinotopic Gaussian receptive fields that
respond to local contrast and colour; higher voxels (ventral, lateral, parietal) respond to
semantic features of the scene (shape category, colour, number of objects, ...). Each voxel's
single-trial amplitudes (percent signal change) are convolved with one HRF of
:func:`nsdlib.hrf.hrf_library` (the same library the GLM fits), and polynomial drift, low-rank
"physiological" noise shared across the brain and thermal noise are added on top of a mean
signal level (:class:`RunSimulator`).

What the simulation used is the ground truth, read back with :func:`truth`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter

from ..guard import reading
from ..nsd import ROI_FILES, check_subject
from ..nsd.layout import mini_generate_command
from .experiment import MANIFEST, TR, MiniSpec, read_manifest, rng_for, truth_dir
from .world import FEATURE_GROUPS, SEMANTIC_FEATURES

__all__ = ["NOISE", "PRF_LABELS", "STREAM_LABELS", "RunSimulator", "Truth", "make_brain", "trial_amplitudes",
           "truth"]

#: Labels of ``prf-visualrois.nii.gz`` (NSD's, :data:`nsdlib.nsd.ROI_FILES`); -1 outside the brain, 0 unlabelled.
PRF_LABELS = ROI_FILES["prf-visualrois"]
#: Labels of ``streams.nii.gz`` (NSD's codes; mini-NSD uses 1, 5, 6, 7).
STREAM_LABELS = ROI_FILES["streams"]


def _smooth_field(rng, shape, sigma) -> np.ndarray:
    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(x.size)
    r[np.argsort(x, kind="stable")] = np.arange(x.size)
    return r / max(x.size - 1, 1)


_EARLY_AREAS = (("V1", 0.22, 0.020, 0.10), ("V2", 0.16, 0.030, 0.14), ("V3", 0.12, 0.040, 0.20),
                ("hV4", 0.08, 0.060, 0.28))  # name, share of ROI, RF size at fovea, growth with eccentricity
_EARLY_WEIGHTS = {"V1": (1.0, 0.35, 0.30), "V2": (0.9, 0.3, 0.4), "V3": (0.8, 0.25, 0.5), "hV4": (0.5, 0.2, 0.9)}
_HIGHER_GROUP_WEIGHTS = {  # over FEATURE_GROUPS
    "ventral": (1.0, 0.4, 0.2, 0.2, 0.3, 0.4, 0.2),
    "lateral": (0.6, 1.0, 0.5, 0.3, 0.3, 0.2, 0.4),
    "parietal": (0.2, 0.2, 1.0, 0.8, 0.6, 0.3, 0.2),
}
#: Noise settings (percent signal change per volume, before the subject's noise scale).
NOISE = {"thermal_sd": 1.0, "physio_sd": 0.9, "n_physio": 5, "drift_sd": (0.5, 1.0, 0.5), "drift_degree": 2,
          "trial_sd_fraction": 0.3, "trial_sd_floor": 0.2, "brain_mean": 1000.0, "outside_mean": 40.0,
          "outside_sd": 8.0}


def _z(x: np.ndarray, axis=0) -> np.ndarray:
    return (x - x.mean(axis, keepdims=True)) / (x.std(axis, keepdims=True) + 1e-9)


def make_brain(spec: MiniSpec, seed: int, subject: int, early_feats: np.ndarray, sem_feats: np.ndarray) -> dict:
    """Anatomy, voxel populations and noise-free responses of one subject.

    The steps draw from one generator, in this order: anatomy, areas, retinotopy, early
    responses, higher responses, amplitudes, volumes (HRFs, mean signal, noise); the
    labels follow from them.

    Parameters
    ----------
    early_feats : ndarray of shape (n_subject_images, 4, 64, 64)
        :func:`~nsdlib.mini.world.early_features` of the subject's images, in ``subjectim`` order.
    sem_feats : ndarray of shape (n_subject_images, n_features)
        :func:`~nsdlib.mini.world.semantic_features` of the same images.

    Returns
    -------
    dict
        Volumes (``brain``, ``roi``, ``hrf_volume``, ``mean_volume``, ``nsdgeneral``, ``prf``,
        ``streams``), per-ROI-voxel arrays (``ijk``, ``area``, ``early``, ``rf_x``, ``rf_y``,
        ``rf_sigma``, ``early_weights``, ``semantic_weights``, ``gain``, ``base``, ``trial_sd``),
        ``image_response`` (n_subject_images, n_roi), ``physio_loadings`` (K, n_brain) and
        ``thermal_sd`` (n_brain,).
    """
    rng = rng_for(seed, 10, subject)
    shape = spec.volume_shape(subject)
    sm = max(1.0, min(shape) / 8)
    brain, roi, xyz = _anatomy(rng, shape, spec.voxels(subject), sm)
    area, early = _areas(rng, xyz)
    rf_x, rf_y, rf_s = _retinotopy(rng, xyz, area)
    n_roi = xyz.shape[0]
    resp = np.zeros((sem_feats.shape[0], n_roi))
    early_w = _early_responses(rng, early_feats, area, early, rf_x, rf_y, rf_s, resp)
    sem_w = _higher_responses(rng, sem_feats, area, early, resp)
    resp = _z(resp)
    gain, base, image_response, trial_sd = _amplitudes(rng, resp)
    hrf_vol, mean_vol, load, thermal = _volumes(rng, brain, sm, spec.noise(subject))
    nsdgeneral, prf, streams = _labels(brain, roi, area, early, rf_y)
    return dict(
        brain=brain, roi=roi, ijk=np.argwhere(roi), area=area, early=early, rf_x=rf_x, rf_y=rf_y, rf_sigma=rf_s,
        early_weights=early_w, semantic_weights=sem_w, gain=gain, base=base, trial_sd=trial_sd,
        image_response=image_response, hrf_volume=hrf_vol, mean_volume=mean_vol, physio_loadings=load,
        thermal_sd=thermal, nsdgeneral=nsdgeneral, prf=prf, streams=streams,
    )


def _anatomy(rng, shape: tuple, n_roi: int, sm: float):
    """The brain (an ellipsoid), the ROI (its posterior part, irregular border) and ROI positions.

    Returns ``brain`` and ``roi`` (X, Y, Z) bool, and ``xyz`` (n_roi, 3): each ROI voxel's
    position in [-1, 1] inside the ellipsoid, in C order (the order of ``vol[roi]``).
    """
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    centre, radii = (np.asarray(shape) - 1) / 2, 0.47 * np.asarray(shape)
    norm = (grid - centre) / radii  # (X, Y, Z, 3) in [-1, 1] inside the ellipsoid
    brain = (norm**2).sum(-1) <= 1
    n_brain = int(brain.sum())
    if n_roi > 0.8 * n_brain:
        raise ValueError(f"volume {shape} holds {n_brain} brain voxels, too few for {n_roi} ROI voxels")
    # ROI: the posterior part of the brain (low y), with an irregular border
    score = -norm[..., 1] + 0.35 * _smooth_field(rng, shape, sm)
    score[~brain] = -np.inf
    flat = np.argsort(-score.ravel(), kind="stable")[:n_roi]
    roi = np.zeros(shape, bool)
    roi.ravel()[flat] = True
    return brain, roi, norm[roi]


def _areas(rng, xyz: np.ndarray):
    """Each ROI voxel's area: early areas from the occipital pole forwards, higher areas by height."""
    n_roi = xyz.shape[0]
    post = _ranks(xyz[:, 1] + 0.05 * rng.standard_normal(n_roi))
    area = np.empty(n_roi, dtype="<U8")
    edges = np.cumsum([a[1] for a in _EARLY_AREAS])
    early = post < edges[-1]
    for (name, *_), lo, hi in zip(_EARLY_AREAS, np.r_[0, edges[:-1]], edges):
        area[(post >= lo) & (post < hi)] = name
    hz = _ranks(xyz[~early, 2] + 0.1 * rng.standard_normal(int((~early).sum())))
    area[~early] = np.where(hz < 0.4, "ventral", np.where(hz < 0.7, "lateral", "parietal"))
    return area, early


def _retinotopy(rng, xyz: np.ndarray, area: np.ndarray):
    """Receptive fields (x, y, sigma in image widths; NaN for higher voxels) of the early areas.

    In each early area, hemisphere (x) -> contralateral column, height (z) -> row, compressed
    towards the fovea (more voxels near the centre, as cortical magnification).
    """
    n_roi = xyz.shape[0]
    rf_x = np.full(n_roi, np.nan)
    rf_y = np.full(n_roi, np.nan)
    rf_s = np.full(n_roi, np.nan)
    for name, _, s0, s1 in _EARLY_AREAS:
        m = area == name
        u = 2 * _ranks(xyz[m, 0]) - 1
        v = 2 * _ranks(xyz[m, 2]) - 1
        rf_x[m] = np.clip(0.5 - 0.46 * np.sign(u) * np.abs(u) ** 1.6 + 0.02 * rng.standard_normal(m.sum()), 0.02, 0.98)
        rf_y[m] = np.clip(0.5 + 0.46 * np.sign(v) * np.abs(v) ** 1.6 + 0.02 * rng.standard_normal(m.sum()), 0.02, 0.98)
        ecc = np.hypot(rf_x[m] - 0.5, rf_y[m] - 0.5)
        rf_s[m] = (s0 + s1 * ecc) * np.exp(0.1 * rng.standard_normal(m.sum()))
    return rf_x, rf_y, rf_s


def _early_responses(rng, early_feats, area, early, rf_x, rf_y, rf_s, resp: np.ndarray) -> np.ndarray:
    """Early voxels: Gaussian RFs pooling contrast energy (compressive), luminance and colour.

    Writes the early columns of ``resp`` (n_images, n_roi); returns the weights (n_roi, 4).
    """
    n_img, n_roi = resp.shape
    early_w = np.zeros((n_roi, 4))
    ei = np.flatnonzero(early)
    npx = early_feats.shape[-1]
    t = (np.arange(npx) + 0.5) / npx
    gx, gy = np.meshgrid(t, t)
    g = np.exp(-((gx.ravel()[None] - rf_x[ei, None]) ** 2 + (gy.ravel()[None] - rf_y[ei, None]) ** 2)
               / (2 * rf_s[ei, None] ** 2))
    g = (g / g.sum(1, keepdims=True)).astype(np.float32)
    fe = early_feats.reshape(n_img, 4, -1)
    drives = [fe[:, k] @ g.T for k in range(4)]  # each (n_img, n_early)
    energy, lum, rg, by = (_z(d.astype(np.float64)) for d in (np.sqrt(np.maximum(drives[0], 0)), *drives[1:]))
    for name, *_ in _EARLY_AREAS:
        m = area[ei] == name
        we, wl, wc = _EARLY_WEIGHTS[name]
        sign_l = rng.choice([-1.0, 1.0], size=m.sum())
        ang = rng.uniform(0, 2 * np.pi, size=m.sum())
        early_w[ei[m]] = np.stack([np.full(m.sum(), we), wl * sign_l, wc * np.cos(ang), wc * np.sin(ang)], 1)
    w = early_w[ei]
    resp[:, ei] = energy * w[:, 0] + lum * w[:, 1] + rg * w[:, 2] + by * w[:, 3]
    return early_w


def _higher_responses(rng, sem_feats, area, early, resp: np.ndarray) -> np.ndarray:
    """Higher voxels: sparse, area-biased weights on the semantic features, then a soft rectification.

    Writes the higher columns of ``resp`` (n_images, n_roi); returns the weights (n_roi, n_features).
    """
    hi = np.flatnonzero(~early)
    group_of = np.array([FEATURE_GROUPS.index(n.split(":")[0]) for n in SEMANTIC_FEATURES])
    sem_w = np.zeros((resp.shape[1], len(SEMANTIC_FEATURES)))
    for v in hi:
        scale = np.asarray(_HIGHER_GROUP_WEIGHTS[area[v]])[group_of]
        keep = rng.random(len(SEMANTIC_FEATURES)) < 0.4 * scale / scale.max() + 0.05
        keep[np.argmax(scale * rng.random(len(scale)))] = True
        sem_w[v] = scale * rng.standard_normal(len(scale)) * keep
    fz = _z(sem_feats)
    drive = fz @ sem_w[hi].T
    drive = _z(drive)
    resp[:, hi] = np.logaddexp(0, 2 * drive)
    return sem_w


def _amplitudes(rng, resp: np.ndarray):
    """Mean evoked response + gain x image-specific response (percent signal change), and trial sd."""
    n_roi = resp.shape[1]
    gain = np.clip(np.exp(np.log(1.6) + 0.45 * rng.standard_normal(n_roi)), 0.2, 4.0)
    weak = rng.random(n_roi) < 0.15
    gain[weak] *= 0.2
    base = rng.uniform(0.5, 2.5, n_roi) * np.where(weak, 0.3, 1.0)
    image_response = base + gain * resp
    trial_sd = NOISE["trial_sd_fraction"] * gain + NOISE["trial_sd_floor"]
    return gain, base, image_response, trial_sd


def _volumes(rng, brain: np.ndarray, sm: float, noise: float):
    """The HRF map, the mean signal, the physiological loadings and the thermal noise sd.

    HRFs: a smooth map of latencies over the brain (neighbours alike), indices 0..19, -1
    outside. Mean signal: about 1000 in the brain with a smooth bias field, dim outside.
    Physiological noise: K smooth spatial loadings over the brain (K, n_brain), total sd
    ``physio_sd * noise``. Thermal sd (n_brain,): larger where the mean signal is low.
    """
    shape = brain.shape
    n_brain = int(brain.sum())
    hrf_field = 9.5 + 3.5 * _smooth_field(rng, shape, sm) + 1.0 * rng.standard_normal(shape)
    hrf_vol = np.where(brain, np.clip(np.round(hrf_field), 0, 19), -1).astype(np.int16)
    mean_vol = np.where(brain, NOISE["brain_mean"] * (1 + 0.12 * _smooth_field(rng, shape, 2 * sm)),
                        NOISE["outside_mean"]).astype(np.float32)
    k = NOISE["n_physio"]
    load = np.stack([0.6 + _smooth_field(rng, shape, sm)[brain] for _ in range(k)])  # (K, n_brain)
    load *= NOISE["physio_sd"] * noise / np.sqrt((load**2).sum(0, keepdims=True))
    thermal = NOISE["thermal_sd"] * noise * np.sqrt(NOISE["brain_mean"] / mean_vol[brain]) \
        * np.exp(0.15 * rng.standard_normal(n_brain))
    return hrf_vol, mean_vol, load, thermal


def _labels(brain, roi, area, early, rf_y):
    """The ``nsdgeneral``, ``prf-visualrois`` and ``streams`` volumes, in NSD's codes (int16)."""
    nsdgeneral = np.where(brain, 0, -1).astype(np.int16)
    nsdgeneral[roi] = 1
    prf = np.where(brain, 0, -1).astype(np.int16)
    codes = {"V1": 1, "V2": 3, "V3": 5, "hV4": 7}
    prf_codes = np.zeros(int(roi.sum()), np.int16)
    for name, c in codes.items():
        m = area == name
        prf_codes[m] = c if name == "hV4" else c + (rf_y[m] >= 0.5)  # ventral = upper visual field
    prf[roi] = prf_codes
    streams = np.where(brain, 0, -1).astype(np.int16)
    streams[roi] = np.select([early, area == "ventral", area == "lateral"], [1, 5, 6], 7)
    return nsdgeneral, prf, streams


def _physio_timecourses(rng, n_t: int, k: int) -> np.ndarray:
    """K unit-variance shared noise time courses (T, K): breathing, aliased pulse, slow AR(1)s."""
    t = np.arange(n_t) * TR
    out = np.empty((n_t, k))
    slow = lfilter([1.0], [1, -0.95], rng.standard_normal(n_t))
    out[:, 0] = np.sin(2 * np.pi * rng.uniform(0.2, 0.33) * t + rng.uniform(0, 2 * np.pi)) * (1 + 0.3 * _z(slow))
    out[:, 1] = np.sin(2 * np.pi * rng.uniform(0.05, 0.15) * t + rng.uniform(0, 2 * np.pi))
    for j in range(2, k):
        out[:, j] = lfilter([1.0], [1, -0.9], rng.standard_normal(n_t))
    return _z(out)


def _legendre(n_t: int, degree: int) -> np.ndarray:
    x = np.linspace(-1, 1, n_t)
    return np.stack([np.polynomial.legendre.Legendre.basis(d)(x) for d in range(degree + 1)], 1)  # (T, D+1)


def trial_amplitudes(brain: dict, seed: int, subject: int, master: np.ndarray) -> np.ndarray:
    """True single-trial amplitudes (n_trials, n_roi), float32, in trial (``masterordering``) order.

    The image's noise-free response plus trial-to-trial variability of sd ``trial_sd``.
    """
    rng = rng_for(seed, 11, subject)
    n_vox = int(brain["roi"].sum())
    return (brain["image_response"][master - 1]
            + brain["trial_sd"] * rng.standard_normal((master.size, n_vox))).astype(np.float32)


class RunSimulator:
    """The time series of one subject's runs.

    In the brain: a mean signal of about 1000 times ``1 + psc / 100``, where ``psc`` (percent
    signal change) is Legendre drift + physiological noise (shared time courses x smooth
    loadings) + thermal noise, plus, in the ROI, each voxel's trial amplitudes convolved
    with its own HRF. Outside the brain: a dim noisy background.

    Parameters
    ----------
    brain : dict
        :func:`make_brain`'s output.
    hrfs : ndarray of shape (n_lags, n_hrfs)
        The HRF library, sampled at TR.
    n_volumes : int
        Volumes per run.
    """

    def __init__(self, brain: dict, hrfs: np.ndarray, n_volumes: int):
        self.brain = brain
        self.hrfs = hrfs
        self.n_t = int(n_volumes)
        self.shape = brain["brain"].shape
        self.brain_flat = np.flatnonzero(brain["brain"].ravel())
        self.roi_rows = np.flatnonzero(brain["roi"].ravel()[self.brain_flat])  # ROI rows among brain rows
        self.outside = np.flatnonzero(~brain["brain"].ravel())
        self.hrf_roi = brain["hrf_volume"][brain["roi"]].astype(np.int64)
        self.mean_brain = brain["mean_volume"].ravel()[self.brain_flat][:, None].astype(np.float32)
        self.legendre = _legendre(self.n_t, NOISE["drift_degree"])

    def signal(self, amplitudes: np.ndarray, onsets: np.ndarray) -> np.ndarray:
        """Noise-free ROI signal (n_roi, n_volumes): each voxel's amplitudes (n_run_trials, n_roi) x its HRF."""
        n_t, lib = self.n_t, self.hrfs
        n_trials = onsets.size
        sig = np.zeros((self.roi_rows.size, n_t), np.float32)
        rows = onsets[None, :] + np.arange(lib.shape[0])[:, None]  # (n_lags, n_trials)
        valid = rows < n_t
        for h in np.unique(self.hrf_roi):
            x = np.zeros((n_t, n_trials), np.float32)
            x[rows[valid], np.broadcast_to(np.arange(n_trials), rows.shape)[valid]] = \
                np.broadcast_to(lib[:, h, None], rows.shape)[valid]
            vh = np.flatnonzero(self.hrf_roi == h)
            sig[vh] = (x @ amplitudes[:, vh]).T
        return sig

    def run(self, rng: np.random.Generator, amplitudes: np.ndarray, onsets: np.ndarray):
        """One run's time series.

        Returns
        -------
        data : ndarray of shape (X, Y, Z, n_volumes), int16
            ``round(mean * (1 + psc / 100))`` in the brain, the background outside.
        physio : ndarray of shape (n_volumes, K)
            The shared physiological time courses of the run.
        """
        b, n_t, n_brain = self.brain, self.n_t, self.brain_flat.size
        sig = self.signal(amplitudes, onsets)
        phys = _physio_timecourses(rng, n_t, NOISE["n_physio"])
        coef = rng.standard_normal((n_brain, self.legendre.shape[1])) * np.asarray(NOISE["drift_sd"])
        psc = (coef @ self.legendre.T).astype(np.float32)  # drift (n_brain, T)
        psc += (b["physio_loadings"].T @ phys.T).astype(np.float32)
        thermal = b["thermal_sd"][:, None].astype(np.float32)
        psc += rng.standard_normal((n_brain, n_t), dtype=np.float32) * thermal
        psc[self.roi_rows] += sig
        vol = np.empty((int(np.prod(self.shape)), n_t), np.float32)
        vol[self.brain_flat] = self.mean_brain * (1 + psc / 100)
        vol[self.outside] = NOISE["outside_mean"] + NOISE["outside_sd"] * rng.standard_normal(
            (self.outside.size, n_t), dtype=np.float32)
        data = np.clip(np.rint(vol), -32768, 32767).astype(np.int16).reshape(*self.shape, n_t)
        return data, phys


# --------------------------------------------------------------------------- truth
@dataclasses.dataclass(frozen=True)
class Truth:
    """The ground truth of one simulated subject (from ``ground_truth/subjNN``).

    Attributes
    ----------
    amplitudes : ndarray of shape (n_trials, n_voxels), float32
        True single-trial response amplitudes (percent signal change, peak of the HRF
        response) of the nsdgeneral voxels, in trial (``masterordering``) order.
    image_response : ndarray of shape (n_per_subject, n_voxels), float32
        Noise-free response to each of the subject's images, in ``subjectim`` column order;
        amplitudes = image_response[masterordering - 1] + trial-to-trial variability.
    trial_nsd_id, trial_image_index : ndarray of shape (n_trials,), int64
        0-based nsdId of each trial, and its 1-based ``masterordering`` value.
    trial_session, trial_run, trial_onset_volume : ndarray of shape (n_trials,), int64
        1-based session and run, and the 0-based volume where the trial starts.
    image_nsd_id : ndarray of shape (n_per_subject,), int64
        0-based nsdIds of the subject's images (``subjectim[s-1] - 1``).
    voxel_ijk : ndarray of shape (n_voxels, 3), int64
        Voxel indices in the volume (C order of ``nsdgeneral == 1``).
    hrf_index : ndarray of shape (n_voxels,), int64
        Column of ``nsdlib.hrf.hrf_library(tr=1, stim_dur=3)`` used by each voxel.
    population, area : ndarray of shape (n_voxels,), str
        "early"/"higher"; "V1", "V2", "V3", "hV4", "ventral", "lateral", "parietal".
    rf_x, rf_y, rf_sigma : ndarray of shape (n_voxels,), float32
        Receptive-field centre and size in image widths (NaN for higher voxels).
    gain, base, trial_sd : ndarray of shape (n_voxels,), float32
        Image-driven sd, mean evoked response and trial-to-trial sd (percent signal change).
    thermal_sd, physio_sd : ndarray of shape (n_voxels,), float32
        Noise sd per volume (percent signal change).
    arrays : dict
        Every array of ``truth.npz`` (also the volumes: ``mean_volume``, ``brain_mask``,
        ``hrf_index_volume``, ``physio_loadings``, ``physio_timecourses``, weights).
    settings : dict
        ``settings.json``: noise settings, timing, label names, units.
    """

    amplitudes: np.ndarray
    image_response: np.ndarray
    trial_nsd_id: np.ndarray
    trial_image_index: np.ndarray
    trial_session: np.ndarray
    trial_run: np.ndarray
    trial_onset_volume: np.ndarray
    image_nsd_id: np.ndarray
    voxel_ijk: np.ndarray
    hrf_index: np.ndarray
    population: np.ndarray
    area: np.ndarray
    rf_x: np.ndarray
    rf_y: np.ndarray
    rf_sigma: np.ndarray
    gain: np.ndarray
    base: np.ndarray
    trial_sd: np.ndarray
    thermal_sd: np.ndarray
    physio_sd: np.ndarray
    arrays: dict
    settings: dict

    @property
    def n_voxels(self) -> int:
        return self.amplitudes.shape[1]


def truth(root, subject: int) -> Truth:
    """Read the ground truth of ``subject`` from a mini-NSD root.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a (complete) mini-NSD root.
    ValueError
        ``subject`` is not 1, 2, 5 or 7.
    """
    s = check_subject(subject)
    root = Path(root)
    if read_manifest(root) is None:
        raise FileNotFoundError(f"{root} is not a mini-NSD root (no {MANIFEST}); create it with "
                                f"{mini_generate_command(root)}")
    gdir = root / truth_dir(s)
    fix = f"restore it with {mini_generate_command(root)} (it rewrites damaged files)"
    with reading(gdir / "truth.npz", "an .npz of the simulation's arrays (no pickles)", fix), \
            np.load(gdir / "truth.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    with reading(gdir / "settings.json", "a JSON file of the simulation's settings", fix):
        settings = json.loads((gdir / "settings.json").read_text())
    fields = {f.name for f in dataclasses.fields(Truth)} - {"arrays", "settings"}
    return Truth(**{k: arrays[k] for k in fields}, arrays=arrays, settings=settings)

