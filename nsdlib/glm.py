"""Single-trial betas from BOLD time series: a GLMsingle-style estimator.

GLMsingle (Prince et al. 2022) made NSD's betas. It is not on PyPI, so nsdlib implements the
algorithm itself, on plain arrays, vectorised over voxels and processed in chunks of voxels.
The paper (§3.1, Algorithm 1) summarises it in three steps: fit every HRF of a library and
keep each voxel's best, denoise with PCA regressors from a noise pool, regularise with ridge
regression. :class:`GLMSingle` produces GLMsingle's four models:

A. **ON-OFF / assumed HRF.** All trials as one condition with the canonical HRF: the ON-OFF
   R² (``onoff_r2_``) and the mean volume (``meanvol_``), as in GLMsingle's TYPEA. Because a
   single ON-OFF amplitude cannot be compared with single-trial truth, model A's
   ``betas`` are the single-trial OLS betas with the canonical HRF (the "AssumeHRF" baseline
   of the GLMsingle paper).
B. **FitHRF.** Every library HRF is fitted in a single-trial OLS; each voxel keeps the HRF
   with the largest in-sample R².
C. **FitHRF + GLMdenoise.** Noise regressors: the leading principal components, per run, of
   the noise pool's time series (polynomials removed, each voxel scaled to unit length).
   The number of components (0–10) is chosen once for all voxels by leave-one-run-out
   cross-validation, then model B's HRFs are refitted with them as nuisance regressors.
D. **FitHRF + GLMdenoise + fractional ridge.** For each voxel, ridge fractions 1, 0.95, …,
   0.05 of the OLS beta-vector length; the fraction with the smallest cross-validation
   badness is kept, and the ridge betas are rescaled and offset by regressing the
   unregularised betas on them (a negative slope falls back to no rescaling).

Where nsdlib follows GLMsingle's code rather than the paper's description
-------------------------------------------------------------------------
- **Noise pool.** The paper: voxels whose *cross-validated* R² is below 0. GLMsingle's code:
  bright voxels (mean above ``0.1 ×`` the 99th percentile of the mean volume) whose
  *in-sample ON-OFF* R² is below a threshold found by a two-component Gaussian mixture on
  the ON-OFF R² values (the point above the median where the two posteriors are equal).
  The default ``noise_pool="gmm"`` is GLMsingle's criterion; ``noise_pool="xval"`` is the
  paper's (leave-one-run-out ON-OFF R² < 0, also restricted to bright voxels).
- **Choosing the number of PCs.** The paper says "through cross-validation". GLMsingle:
  for each number of PCs the single-trial betas are fitted; for every trial of a repeated
  condition in a held-out run, the squared difference between its beta *from the 0-PC fit*
  and each same-condition beta from the other runs *from the k-PC fit* is summed (betas
  z-scored per session with the 0-PC fit's mean and standard deviation). The median of that
  badness over voxels whose ON-OFF R² exceeds the mixture threshold gives one curve; the
  chosen number is the smallest whose improvement over 0 PCs is within 1/1.05 of the best.
- **Ridge fraction.** Same badness, with the unregularised (fraction 1) betas as the
  held-out targets, minimised per voxel.
- **R².** Fractions of variance (0–1) of the polynomial-detrended data explained by the
  trial regressors; GLMsingle reports percent.

Because every trial regressor lives in one run, the single-trial design is block-diagonal
over runs: its OLS and its SVD split into one small problem per run (about 226 × 63 for an
NSD run instead of 2,712 × 750 for a session). One set of per-run SVDs per HRF serves every
ridge fraction (GLMsingle recomputes it for each fraction).

Units: betas are in percent signal change (``100 × beta / |mean volume|``); onsets and TR in
seconds; HRF indices are 0-based into :func:`hrf_library`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .hrf import HRF_PEAKS, canonical_hrf, hrf_library

__all__ = [
    "FRACTIONS",
    "GLMSingle",
    "HRF_PEAKS",
    "ModelResult",
    "TrialDesign",
    "canonical_hrf",
    "cross_validation_badness",
    "find_tail_threshold",
    "fractional_ridge",
    "hrf_library",
    "polynomial_basis",
    "select_n_pcs",
    "trial_regressors",
]

MODELS = ("A", "B", "C", "D")
#: GLMsingle's ridge fractions: 1, 0.95, …, 0.05.
FRACTIONS = tuple(np.round(np.arange(1.0, 0.0, -0.05), 2).tolist())


# ---------------------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True)
class TrialDesign:
    """The trials of one run.

    Parameters
    ----------
    onsets : array of shape (n_trials,)
        Trial onsets in seconds from the first volume of the run.
    conditions : array of shape (n_trials,)
        Integer condition (image) id of each trial; trials sharing an id are repeats.
    """

    onsets: np.ndarray
    conditions: np.ndarray

    def __post_init__(self):
        on = np.asarray(self.onsets, dtype=float).ravel()
        cond = np.asarray(self.conditions).ravel()
        if on.shape != cond.shape:
            raise ValueError(f"a design needs one condition per onset; found {on.size} onsets and "
                             f"{cond.size} conditions")
        if cond.size and not np.issubdtype(cond.dtype, np.integer):
            if not np.all(np.isfinite(cond.astype(float))) or np.any(cond.astype(float) % 1):
                raise ValueError("conditions must be integer ids")
            cond = cond.astype(np.int64)
        object.__setattr__(self, "onsets", on)
        object.__setattr__(self, "conditions", cond.astype(np.int64))

    @classmethod
    def from_volumes(cls, vector, tr: float) -> TrialDesign:
        """From an NSD-style design column: one integer per volume, 0 = no trial onset.

        Parameters
        ----------
        vector : array of shape (n_time,)
            Condition id (e.g. the 73k id) at each volume where a trial starts, 0 elsewhere.
        tr : float
            Seconds per volume.
        """
        v = np.asarray(vector).ravel()
        idx = np.flatnonzero(v)
        return cls(onsets=idx * float(tr), conditions=v[idx].astype(np.int64))

    @property
    def n_trials(self) -> int:
        return int(self.onsets.size)


def _as_design(obj, i: int) -> TrialDesign:
    if isinstance(obj, TrialDesign):
        return obj
    if isinstance(obj, Mapping) or hasattr(obj, "columns"):
        keys = list(obj.keys()) if isinstance(obj, Mapping) else list(obj.columns)
        on = next((k for k in ("onset", "onsets") if k in keys), None)
        co = next((k for k in ("condition", "conditions", "trial_type") if k in keys), None)
        if on is None or co is None:
            raise ValueError(f"design of run {i} needs 'onset' and 'condition' entries; found {keys}")
        return TrialDesign(np.asarray(obj[on]), np.asarray(obj[co]))
    if isinstance(obj, tuple) and len(obj) == 2:
        return TrialDesign(*obj)
    raise TypeError(f"design of run {i} must be a TrialDesign, a mapping/DataFrame with 'onset' and "
                    f"'condition', or an (onsets, conditions) tuple; found {type(obj).__name__}")


# ----------------------------------------------------------------------- building blocks
def polynomial_basis(n_time: int, degree: int) -> np.ndarray:
    """Legendre polynomials of degree 0..``degree`` over a run, orthonormal columns.

    Returns
    -------
    basis : ndarray of shape (n_time, degree + 1)
    """
    if n_time < 1 or degree < 0:
        raise ValueError(f"n_time must be >= 1 and degree >= 0; found {n_time}, {degree}")
    x = np.linspace(-1.0, 1.0, n_time)
    raw = np.polynomial.legendre.legvander(x, degree)
    q, _ = np.linalg.qr(raw)
    return q


def _default_degree(n_time: int, tr: float) -> int:
    # GLMsingle: round(run length in minutes / 2), rounding halves up as MATLAB does
    return int(math.floor(n_time * tr / 60.0 / 2.0 + 0.5))


def trial_regressors(n_time: int, tr: float, onsets: np.ndarray, hrf: np.ndarray) -> np.ndarray:
    """One regressor per trial: the HRF (already convolved with the stimulus) at each onset.

    Onsets on the TR grid reproduce the sampled HRF exactly; other onsets interpolate it
    linearly between samples.

    Parameters
    ----------
    n_time : int
        Volumes in the run.
    tr : float
        Seconds per volume.
    onsets : array of shape (n_trials,)
        Seconds from the first volume.
    hrf : array of shape (n_samples,) or (n_samples, n_hrfs)
        Response sampled at 0, TR, 2 TR, … (see :func:`hrf_library`).

    Returns
    -------
    X : ndarray of shape (n_time, n_trials) or (n_hrfs, n_time, n_trials)
    """
    hrf = np.asarray(hrf, dtype=float)
    single = hrf.ndim == 1
    h = hrf[:, None] if single else hrf
    lag = (np.arange(n_time) * tr)[:, None] - np.asarray(onsets, float)[None, :]  # s
    pos = lag / tr
    k0 = np.floor(pos).astype(np.int64)
    w = pos - k0
    n = h.shape[0]
    out = np.zeros((h.shape[1], n_time, len(onsets)))
    ok0 = (k0 >= 0) & (k0 < n)
    ok1 = (k0 + 1 >= 0) & (k0 + 1 < n)
    for j in range(h.shape[1]):
        col = h[:, j]
        out[j] += np.where(ok0, col[np.clip(k0, 0, n - 1)], 0.0) * (1 - w)
        out[j] += np.where(ok1, col[np.clip(k0 + 1, 0, n - 1)], 0.0) * w
    return out[0] if single else out


def find_tail_threshold(values: np.ndarray, n_iter: int = 500) -> float:
    """GLMsingle's "tail threshold": where a 2-Gaussian mixture's posteriors cross.

    A two-component Gaussian mixture is fitted (by EM, deterministically initialised at the
    25th and 75th percentiles) to the finite values; the threshold is the point between the
    median and the 99.5th percentile at which the posterior of the upper component is
    closest to 0.5, with a crossing required. If there is none above the median (the upper
    component holds most values), the crossing between the two means is used instead.

    Parameters
    ----------
    values : array
        E.g. every voxel's ON-OFF R².

    Returns
    -------
    threshold : float

    Raises
    ------
    ValueError
        If fewer than 10 finite values are given or the posteriors never cross above the
        median (a distribution without a tail).
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 10:
        raise ValueError(f"the tail threshold needs at least 10 finite values; found {v.size}")
    mu = np.percentile(v, [25.0, 75.0])
    var = np.full(2, max(v.var() / 4.0, 1e-12))
    w = np.array([0.5, 0.5])
    ll_old = -np.inf
    for _ in range(n_iter):
        logp = (np.log(w) - 0.5 * np.log(2 * np.pi * var))[None, :] - 0.5 * (v[:, None] - mu) ** 2 / var
        m = logp.max(1, keepdims=True)
        lse = m + np.log(np.exp(logp - m).sum(1, keepdims=True))
        resp = np.exp(logp - lse)
        nk = resp.sum(0) + 1e-12
        w = nk / v.size
        mu = (resp * v[:, None]).sum(0) / nk
        var = np.maximum((resp * (v[:, None] - mu) ** 2).sum(0) / nk, 1e-12 * max(v.var(), 1e-12))
        ll = float(lse.sum())
        if ll - ll_old < 1e-9 * abs(ll):
            break
        ll_old = ll
    upper = int(np.argmax(mu))

    def crossing(lo, hi):
        grid = np.linspace(lo, hi, 500)
        logp = (np.log(w) - 0.5 * np.log(2 * np.pi * var))[None, :] - 0.5 * (grid[:, None] - mu) ** 2 / var
        post = np.exp(logp[:, upper] - np.logaddexp(logp[:, 0], logp[:, 1]))
        if np.any(post > 0.5) and np.any(post < 0.5):
            return float(grid[np.argmin(np.abs(post - 0.5))])
        return None

    # GLMsingle searches above the median; when the upper component holds half the values or
    # more the crossing lies below it, so nsdlib then searches between the two means
    f = crossing(np.median(v), np.percentile(v, 99.5))
    if f is None:
        f = crossing(mu.min(), mu.max())
    if f is None:
        raise ValueError("the two-Gaussian mixture's posteriors never cross between the components: "
                         "these values have no separate upper tail")
    return f


def select_n_pcs(curve: np.ndarray, pcstop: float = 1.05, tol: float = 0.0) -> int:
    """The smallest number of PCs whose gain over 0 PCs is within ``1/pcstop`` of the best.

    Parameters
    ----------
    curve : array of shape (n_candidates,)
        Cross-validation performance (higher is better) for 0, 1, 2, … PCs.
    pcstop : float
        GLMsingle's stopping factor (1.05).
    tol : float
        Gains up to ``tol`` count as none (rounding error), so 0 PCs are kept.
    """
    curve = np.asarray(curve, dtype=float)
    gain = curve - curve[0]
    best = gain.max()
    if not best > tol:
        return 0
    return int(np.flatnonzero(gain * pcstop >= best)[0])


def _pair_matrix(conditions: np.ndarray, runs: np.ndarray) -> sp.csr_matrix:
    """M[i, j] = 1 when trials i and j show the same condition in different runs."""
    conditions = np.asarray(conditions)
    order = np.argsort(conditions, kind="stable")
    rows, cols = [], []
    c_sorted = conditions[order]
    bounds = np.flatnonzero(np.diff(c_sorted)) + 1
    for grp in np.split(order, bounds):
        if grp.size < 2:
            continue
        ii, jj = np.meshgrid(grp, grp, indexing="ij")
        keep = runs[ii] != runs[jj]
        rows.append(ii[keep])
        cols.append(jj[keep])
    n = conditions.size
    if not rows:
        return sp.csr_matrix((n, n))
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(r.size), (r, c)), shape=(n, n))


def cross_validation_badness(betas: np.ndarray, reference: np.ndarray, conditions: np.ndarray,
                             runs: np.ndarray, sessions: np.ndarray | None = None) -> np.ndarray:
    """GLMsingle's leave-one-run-out badness of a set of betas.

    For each trial i and each trial j of the same condition in another run, adds
    ``(betas[j] - reference[i])**2``, after z-scoring both with the mean and standard
    deviation of ``reference`` over the trials of each session.

    Parameters
    ----------
    betas : array of shape (n_trials, n_voxels)
        Candidate betas (e.g. k PCs, or a ridge fraction).
    reference : array of shape (n_trials, n_voxels)
        The unregularised betas (0 PCs, or fraction 1).
    conditions, runs : arrays of shape (n_trials,)
        Condition id and run index of each trial.
    sessions : array of shape (n_trials,), optional
        Session of each trial (z-scoring groups); default one session.

    Returns
    -------
    badness : ndarray of shape (n_voxels,)
        Summed squared error in z units (lower is better).
    """
    m = _pair_matrix(np.asarray(conditions), np.asarray(runs))
    reference = np.asarray(reference, dtype=float)
    stats = _zstats(reference, None if sessions is None else np.asarray(sessions))
    refz = _zscore(reference, stats)
    counts = np.asarray(m.sum(0)).ravel()
    return _badness(np.asarray(betas, dtype=float), stats, m @ refz, counts, _self_term(refz, counts))


def _zstats(ref: np.ndarray, sessions: np.ndarray | None):
    """Per session: (trial selector, mean, sd) of the reference betas (sd 0 -> 1)."""
    groups = [slice(None)] if sessions is None else [np.flatnonzero(sessions == s) for s in np.unique(sessions)]
    out = []
    for g in groups:
        mu = ref[g].mean(0)
        sd = ref[g].std(0)
        out.append((g, mu, np.where(sd > 0, sd, 1.0)))
    return out


def _zscore(b: np.ndarray, stats) -> np.ndarray:
    z = np.empty(b.shape)
    for g, mu, sd in stats:
        z[g] = (b[g] - mu) / sd
    return z


def _self_term(refz: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.einsum("i,ij,ij->j", counts, refz, refz)


def _badness(b: np.ndarray, stats, m_refz: np.ndarray, counts: np.ndarray, self_term: np.ndarray) -> np.ndarray:
    """sum_ij M_ij (z(b)_j - z(ref)_i)^2 without forming z(b).

    With z(b) = (b - mu) / sd per session, the sum expands into per-voxel reductions:
    sum_j c_j z_j^2 - 2 sum_j z_j (M z(ref))_j + sum_i c_i z(ref)_i^2, where c = row sums of M.
    """
    out = self_term.astype(float).copy()
    for g, mu, sd in stats:
        bg = b[g]
        cg = counts[g]
        mg = m_refz[g]
        bc = bg * cg[:, None]
        s2 = np.einsum("ij,ij->j", bc, bg)
        s1 = bc.sum(0)
        sm = np.einsum("ij,ij->j", bg, mg)
        out += (s2 - 2.0 * mu * s1 + mu * mu * cg.sum()) / (sd * sd) - 2.0 * (sm - mu * mg.sum(0)) / sd
    return out


# --------------------------------------------------------------------- fractional ridge
_SMALL_BIAS, _BIG_BIAS, _BIAS_STEP = 1e-2, 1e4, 0.2  # alpha grid, as fracridge's


def _fraction_alphas(s: np.ndarray, b0: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Per-target ridge alphas giving each fraction of the OLS length; shape (n_fracs, n_targets).

    ``s`` (n_comp,) are singular values, ``b0`` (n_comp, n_targets) the OLS coefficients in
    the rotated space. The length for a grid of alphas is one matrix product; alphas are
    interpolated in log(1 + alpha), as fracridge does, but for all targets at once.
    """
    s2 = s.astype(float) ** 2
    pos = s2[s2 > 0]
    if pos.size == 0:
        return np.zeros((len(fractions), b0.shape[1]))
    lo = np.floor(np.log10(_SMALL_BIAS * pos.min()))
    hi = np.ceil(np.log10(_BIG_BIAS * pos.max()))
    grid = np.concatenate([[0.0], 10.0 ** np.arange(lo, hi, _BIAS_STEP)])
    den = s2[None, :] + grid[:, None]
    shrink2 = np.divide(s2[None, :], den, out=np.zeros_like(den), where=den > 0) ** 2  # (G, C); 0 for s = 0
    len2 = shrink2 @ (b0.astype(float) ** 2)  # (G, T)
    base = len2[0]
    ok = base > 0
    ratio = np.sqrt(len2 / np.where(ok, base, 1.0))  # decreasing in alpha, starts at 1
    lg = np.log1p(grid)
    out = np.zeros((len(fractions), b0.shape[1]))
    for i, f in enumerate(fractions):
        if f >= 1:
            continue
        k = (ratio > f).sum(0)  # first grid index at or below f (>= 1)
        k = np.clip(k, 1, grid.size - 1)
        r_hi = np.take_along_axis(ratio, (k - 1)[None], 0)[0]
        r_lo = np.take_along_axis(ratio, k[None], 0)[0]
        t = np.where(r_hi > r_lo, (r_hi - f) / np.where(r_hi > r_lo, r_hi - r_lo, 1.0), 1.0)
        t = np.clip(t, 0.0, 1.0)
        la = lg[k - 1] + t * (lg[k] - lg[k - 1])
        out[i] = np.where(ok, np.expm1(la), 0.0)
    return out


def fractional_ridge(X: np.ndarray, y: np.ndarray, fractions=(1.0,), tol: float = 1e-10):
    """Ridge solutions whose lengths are given fractions of the OLS solution's length.

    One SVD of ``X`` serves every fraction and every target (Rokem & Kay 2020's fracridge
    reparameterisation; alphas found on a grid and interpolated, vectorised over targets).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,) or (n_samples, n_targets)
    fractions : float or array of shape (n_fracs,)
        Values in (0, 1]; 1 is the OLS solution (minimum-norm if ``X`` is rank deficient).

    Returns
    -------
    coef : ndarray of shape (n_fracs, n_features, n_targets)
        (Squeezed like the inputs.)
    alphas : ndarray of shape (n_fracs, n_targets)
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    single = y.ndim == 1
    y2 = y[:, None] if single else y
    if X.ndim != 2 or y2.shape[0] != X.shape[0]:
        raise ValueError(f"X must be (n_samples, n_features) and y (n_samples, ...); found {X.shape} and {y.shape}")
    scalar = np.ndim(fractions) == 0
    fr = np.atleast_1d(np.asarray(fractions, dtype=float))
    if np.any(fr <= 0) or np.any(fr > 1):
        raise ValueError(f"fractions must lie in (0, 1]; found {fr}")
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    good = s > tol * max(s.max(initial=0.0), 1e-300)
    s = np.where(good, s, 0.0)
    ynew = u.T @ y2
    b0 = np.where(good[:, None], ynew / np.where(good, s, 1.0)[:, None], 0.0)
    alphas = _fraction_alphas(s, b0, fr)
    s2 = s ** 2
    coef = np.empty((fr.size, X.shape[1], y2.shape[1]))
    for i in range(fr.size):
        scale = s2[:, None] / np.where(good[:, None], s2[:, None] + alphas[i][None, :], 1.0)
        coef[i] = vt.T @ (b0 * np.where(good[:, None], scale, 0.0))
    if single:
        coef, alphas = coef[..., 0], alphas[:, 0]
    if scalar:
        coef, alphas = coef[0], alphas[0]
    return coef, alphas


# ------------------------------------------------------------------------- the estimator
# ----------------------------------------------------------------------- one fit's workspace
def _project(basis: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``a`` with its component in the span of the orthonormal columns of ``basis`` removed."""
    return a - basis @ (basis.T @ a)


def _svd_parts(xp: np.ndarray, dt: np.dtype):
    """Thin SVD batched over leading axes, as ``(u, s, vt, 1/s)``; tiny singular values get 1/s = 0.

    A zero inverse for singular values below 1e-10 of the largest gives the minimum-norm OLS
    solution of a rank-deficient design.
    """
    u, sv, vt = np.linalg.svd(xp, full_matrices=False)
    tol = 1e-10 * np.maximum(sv.max(-1, keepdims=True), 1e-300)
    good = sv > tol
    sinv = np.where(good, 1.0 / np.where(good, sv, 1.0), 0.0)
    return u.astype(dt), np.where(good, sv, 0.0), vt.astype(dt), sinv.astype(dt)


class _FitState:
    """Everything one :meth:`GLMSingle.fit` builds and fills, pass by pass.

    The per-run building blocks are float64 and small: polynomial bases ``polys[r]`` of shape
    (n_time_r, degree + 1), every library HRF's trial regressors ``xlib[r]`` of shape
    (n_hrfs, n_time_r, n_trials_r), model A's ON-OFF regressor and single-trial SVDs. The
    per-run SVDs and OLS matrices with ``k`` noise PCs projected out are computed on first use
    and cached (:meth:`svd_lib`, :meth:`pinv_lib`); ``pcs`` (per run, (n_time_r, max_pcs)) is
    empty until the noise PCs are found. The per-voxel outputs (``meanvol``, ``onoff_*``,
    ``r2``, ``hrf_r2``, ``hrf_index``, ``fraction``, ``scale_offset``, the kept betas in
    ``store``) are filled chunk by chunk.
    """

    def __init__(self, runs, designs, sessions, hrfs, canon, tr, poly_degree, dt, keep, chunk_size, n_fracs):
        self.runs, self.dt, self.chunk_size = runs, dt, chunk_size
        self.n_runs = len(runs)
        self.n_time = [y.shape[0] for y in runs]
        self.n_vox = n_vox = runs[0].shape[1]
        n_tr = [d.n_trials for d in designs]
        self.starts = np.concatenate([[0], np.cumsum(n_tr)])
        self.n_trials = int(self.starts[-1])
        self.n_hrfs = hrfs.shape[1]
        self.trial_run = np.repeat(np.arange(self.n_runs), n_tr)
        self.conditions = np.concatenate([d.conditions for d in designs])
        self.trial_sess = None if sessions is None else sessions[self.trial_run]
        self.pairs = _pair_matrix(self.conditions, self.trial_run)
        self.counts = np.asarray(self.pairs.sum(0)).ravel()
        self.degrees = [poly_degree if poly_degree is not None else _default_degree(t, tr) for t in self.n_time]
        self.polys = [polynomial_basis(t, d) for t, d in zip(self.n_time, self.degrees)]
        self.xlib = [trial_regressors(t, tr, d.onsets, hrfs) for t, d in zip(self.n_time, designs)]  # (H, T, n)
        xcan = [trial_regressors(t, tr, d.onsets, canon) for t, d in zip(self.n_time, designs)]  # (T, n)
        self.onoff = [_project(p, x.sum(1)).astype(dt) for p, x in zip(self.polys, xcan)]
        self.svd_can = [_svd_parts(_project(p, x), dt) for p, x in zip(self.polys, xcan)]
        self.polys_dt = [p.astype(dt) for p in self.polys]
        self.pcs = [np.zeros((t, 0)) for t in self.n_time]
        self._svd_cache: dict = {}
        self._pinv_cache: dict = {}
        self.chunks = [slice(a, min(a + chunk_size, n_vox)) for a in range(0, n_vox, chunk_size)]
        self.store = {m: (np.zeros((self.n_trials, n_vox), np.float32) if m in keep else None) for m in MODELS}
        self.meanvol = np.zeros(n_vox)
        self.onoff_r2 = np.zeros(n_vox)
        self.onoff_xr2 = np.zeros(n_vox)
        self.onoff_beta = np.zeros(n_vox)
        self.r2 = {m: np.zeros(n_vox) for m in MODELS}
        self.hrf_r2 = np.zeros((self.n_hrfs, n_vox))
        self.hrf_index = np.zeros(n_vox, np.int64)
        self.fraction = np.ones(n_vox)
        self.fraction_badness = np.full((n_fracs, n_vox), np.nan)
        self.scale_offset = np.vstack([np.ones(n_vox), np.zeros(n_vox)])

    def load(self, sel, sums=None) -> list:
        """The runs' time series of some voxels, polynomials removed in float64, cast to ``dt``.

        Every later product is orthogonal to the polynomials, so removing them first changes
        no result; it only spares float32 the cancellation of a large mean (about 1000).
        ``sums``, if given, accumulates the raw sums per voxel.
        """
        out = []
        for r, y in enumerate(self.runs):
            y64 = np.asarray(y[:, sel], dtype=np.float64)
            if sums is not None:
                sums += y64.sum(0)
            out.append((y64 - self.polys[r] @ (self.polys[r].T @ y64)).astype(self.dt))
        return out

    def svd_lib(self, k: int) -> list:
        """Per run, the SVDs of all library HRFs' designs with polynomials and k PCs projected out."""
        if k not in self._svd_cache:
            out = []
            for r in range(self.n_runs):
                p, x = self.polys[r], self.xlib[r]
                q = p if k == 0 else np.linalg.qr(np.concatenate([p, self.pcs[r][:, :k]], 1))[0]
                out.append(_svd_parts(x - q @ np.einsum("tk,htn->hkn", q, x), self.dt))
            self._svd_cache[k] = out
        return self._svd_cache[k]

    def parts(self, h: int, k: int) -> list:
        """Per run, the ``(u, s, vt, 1/s)`` of HRF ``h``'s design with k PCs projected out."""
        return [tuple(a[h] for a in run_parts) for run_parts in self.svd_lib(k)]

    def pinv_lib(self, k: int) -> list:
        """Per run, the OLS matrices (n_hrfs, n_trials_r, n_time_r) with k PCs projected out.

        The normal equations are solved directly (much cheaper than an SVD per HRF and
        number of PCs); a design whose Cholesky factor is near-singular falls back to the
        SVD pseudo-inverse.
        """
        if k not in self._pinv_cache:
            self._pinv_cache[k] = [self._ols_matrices(r, k) for r in range(self.n_runs)]
        return self._pinv_cache[k]

    def _ols_matrices(self, r: int, k: int) -> np.ndarray:
        q = np.linalg.qr(np.concatenate([self.polys[r], self.pcs[r][:, :k]], 1))[0]
        xp = self.xlib[r] - q @ np.einsum("tk,htn->hkn", q, self.xlib[r])
        xpt = np.swapaxes(xp, 1, 2)
        gram = xpt @ xp
        try:
            d = np.abs(np.diagonal(np.linalg.cholesky(gram), axis1=1, axis2=2))
            ok = d.min() > 1e-5 * d.max()  # else the design is close to rank-deficient
        except np.linalg.LinAlgError:
            ok = False
        if ok:
            return np.linalg.solve(gram, xpt).astype(self.dt)
        u, _s, vt, sinv = _svd_parts(xp, self.dt)
        return np.swapaxes(vt, 1, 2) @ (sinv[:, :, None] * np.swapaxes(u, 1, 2))

    def ols_pinv(self, h: int, k: int, ys) -> np.ndarray:
        """Single-trial OLS betas (n_trials, n_voxels) of HRF ``h`` with k PCs, by the OLS matrices."""
        betas = np.empty((self.n_trials, ys[0].shape[1]), self.dt)
        for r, y in enumerate(ys):
            betas[self.starts[r]:self.starts[r + 1]] = self.pinv_lib(k)[r][h] @ y
        return betas

    def ols_from_svd(self, parts, ys):
        """Single-trial OLS betas (n_trials, n_voxels) from per-run SVDs, and the explained energy per voxel."""
        betas = np.empty((self.n_trials, ys[0].shape[1]), self.dt)
        energy = np.zeros(ys[0].shape[1])
        for r, ((u, _s, vt, sinv), y) in enumerate(zip(parts, ys)):
            z = (u.T @ y) * (sinv > 0)[:, None]
            energy += np.einsum("ij,ij->j", z, z, dtype=float)
            betas[self.starts[r]:self.starts[r + 1]] = vt.T @ (z * sinv[:, None])
        return betas, energy


@dataclasses.dataclass
class ModelResult:
    """One of the four GLMsingle models.

    Attributes
    ----------
    betas : ndarray of shape (n_trials, n_voxels) or None
        Single-trial betas in percent signal change, trials in the order of the designs
        (run by run). None if the estimator was asked not to keep them.
    r2 : ndarray of shape (n_voxels,)
        Variance of the detrended data explained by the trial regressors (0–1).
    hrf_index : ndarray of shape (n_voxels,)
        0-based index into the HRF library (-1 for model A's canonical HRF).
    n_pcs : int
        Number of GLMdenoise regressors per run.
    fraction : ndarray of shape (n_voxels,)
        Ridge fraction (1 = OLS).
    """

    name: str
    betas: np.ndarray | None
    r2: np.ndarray
    hrf_index: np.ndarray
    n_pcs: int
    fraction: np.ndarray


class GLMSingle:
    """A GLMsingle-style single-trial GLM (models A–D; see the module docstring).

    Parameters
    ----------
    tr : float
        Seconds per volume.
    stim_dur : float
        Stimulus duration (s), used to build the HRFs.
    hrfs : array of shape (n_samples, n_hrfs), optional
        HRF library sampled at ``tr``; default :func:`hrf_library` ``(tr, stim_dur)``.
    canonical : array of shape (n_samples,), optional
        HRF of model A; default :func:`canonical_hrf` ``(tr, stim_dur)``.
    n_pcs : int or iterable of int
        Candidate numbers of GLMdenoise PCs: ``10`` or ``range(11)`` means 0..10.
    pcstop : float
        The chosen number of PCs is the smallest within ``1/pcstop`` of the best gain.
    fractions : array of shape (n_fracs,)
        Ridge fractions of model D, in (0, 1]; 1 is added if missing (the unregularised fit).
    noise_pool : {"gmm", "xval"}
        GLMsingle's criterion (ON-OFF R² below a mixture threshold) or the paper's
        (leave-one-run-out ON-OFF R² < 0).
    r2_threshold : float, optional
        Fixed ON-OFF R² threshold (0–1) for the noise pool and the PC-selection voxels
        instead of the mixture threshold.
    brain_thresh : (percentile, factor)
        "Bright" voxels have a mean above ``factor ×`` the ``percentile`` of the mean volume.
    poly_degree : int, optional
        Degree of the drift polynomials; default per run round(minutes / 2).
    glmdenoise, fracridge : bool
        Whether to compute model C (else C = B) and model D (else D = C).
    keep_betas : sequence of str
        Models whose betas to keep in memory (``results_[m].betas`` is None for the others).
    chunk_size : int
        Voxels per chunk. The working set grows with it: about 4–5 × n_time_total ×
        chunk_size × 4 B (measured: 0.66 GB for 15,000 voxels of an NSD session), on top of
        the input and the kept betas (n_trials × n_voxels × 4 B per model).
    dtype : numpy dtype
        Precision of the voxel data in the large products (float32 or float64).
    blas_threads : int, optional
        Limit the BLAS thread pool to this many threads during ``fit`` (restored after);
        None leaves it as configured. The per-run products are small (about 63 × 226 per
        NSD run), and on a machine whose cores are busy with other work one thread was 4×
        faster than two (``benchmarks/RESULTS.md``).
    verbose : bool
        Progress bars.

    Attributes
    ----------
    results_ : dict of str -> ModelResult
        Models "A", "B", "C", "D".
    betas_ : ndarray of shape (n_trials, n_voxels)
        Model D's betas (percent signal change).
    hrf_index_ : ndarray of shape (n_voxels,)
        Each voxel's library HRF (models B–D), 0-based.
    r2_ : ndarray of shape (n_voxels,)
        Model D's R².
    n_pcs_ : int
        Chosen number of GLMdenoise PCs.
    fraction_ : ndarray of shape (n_voxels,)
        Chosen ridge fraction per voxel.
    noise_pool_ : ndarray of bool, shape (n_voxels,)
    pc_voxels_ : ndarray of bool, shape (n_voxels,)
        Voxels whose median badness chose the number of PCs.
    onoff_r2_, onoff_xval_r2_ : ndarray of shape (n_voxels,)
        In-sample and leave-one-run-out R² of the ON-OFF model.
    onoff_betas_ : ndarray of shape (n_voxels,)
        ON-OFF amplitude (percent signal change).
    meanvol_ : ndarray of shape (n_voxels,)
        Mean of the raw time series (data units).
    r2_threshold_ : float
        The ON-OFF R² threshold used.
    hrf_r2_ : ndarray of shape (n_hrfs, n_voxels)
        In-sample R² of every library HRF.
    xval_curve_ : ndarray of shape (n_candidates,)
        Minus the median PC-selection badness for each number of PCs (higher is better).
    fraction_badness_ : ndarray of shape (n_fracs, n_voxels)
        Ridge badness per fraction (NaN where not evaluated).
    scale_offset_ : ndarray of shape (2, n_voxels)
        Model D's rescaling (slope, offset).
    pcs_ : list of ndarray of shape (n_time_r, max_pcs)
        Candidate noise regressors per run.
    conditions_, trial_run_ : ndarray of shape (n_trials,)
        Condition id and run index of each beta row.
    """

    def __init__(self, tr: float = 1.0, stim_dur: float = 3.0, hrfs=None, canonical=None, n_pcs=10,
                 pcstop: float = 1.05, fractions=FRACTIONS, noise_pool: str = "gmm",
                 r2_threshold: float | None = None, brain_thresh=(99.0, 0.1), poly_degree: int | None = None,
                 glmdenoise: bool = True, fracridge: bool = True, keep_betas: Sequence[str] = MODELS,
                 chunk_size: int = 20000, dtype=np.float32, blas_threads: int | None = None, verbose: bool = True):
        self.tr = tr
        self.stim_dur = stim_dur
        self.hrfs = hrfs
        self.canonical = canonical
        self.n_pcs = n_pcs
        self.pcstop = pcstop
        self.fractions = fractions
        self.noise_pool = noise_pool
        self.r2_threshold = r2_threshold
        self.brain_thresh = brain_thresh
        self.poly_degree = poly_degree
        self.glmdenoise = glmdenoise
        self.fracridge = fracridge
        self.keep_betas = keep_betas
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.blas_threads = blas_threads
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        if not (self.tr > 0 and self.stim_dur >= 0):
            raise ValueError(f"tr must be > 0 and stim_dur >= 0; found tr={self.tr}, stim_dur={self.stim_dur}")
        hrfs = hrf_library(self.tr, self.stim_dur) if self.hrfs is None else np.asarray(self.hrfs, float)
        if hrfs.ndim != 2 or hrfs.shape[0] < 2:
            raise ValueError(f"hrfs must be (n_samples, n_hrfs); found shape {hrfs.shape}")
        canon = canonical_hrf(self.tr, self.stim_dur) if self.canonical is None else \
            np.asarray(self.canonical, float).ravel()
        cands = list(range(int(self.n_pcs) + 1)) if np.ndim(self.n_pcs) == 0 else sorted(int(k) for k in self.n_pcs)
        if not cands or cands[0] != 0 or any(k < 0 for k in cands):
            raise ValueError(f"n_pcs must be an int >= 0 or candidates starting at 0; found {self.n_pcs!r}")
        fr = np.asarray(list(self.fractions) if isinstance(self.fractions, Iterable) else [self.fractions], float)
        if fr.size == 0 or np.any(fr <= 0) or np.any(fr > 1) or not np.all(np.isfinite(fr)):
            raise ValueError(f"fractions must lie in (0, 1]; found {fr}")
        fr = np.round(fr, 10)
        fr = np.concatenate([[1.0], fr[fr != 1.0]])
        if self.noise_pool not in ("gmm", "xval"):
            raise ValueError(f"noise_pool must be 'gmm' (GLMsingle) or 'xval' (the paper); found {self.noise_pool!r}")
        bad = [m for m in self.keep_betas if m not in MODELS]
        if bad:
            raise ValueError(f"keep_betas takes models among {MODELS}; found {bad}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1; found {self.chunk_size}")
        return hrfs, canon, cands, fr

    def _check_inputs(self, runs, designs, sessions):
        if isinstance(runs, np.ndarray) and runs.ndim == 2:
            runs = [runs]
        runs = list(runs)
        if isinstance(designs, (TrialDesign, Mapping)) or hasattr(designs, "columns"):
            designs = [designs]
        designs = list(designs)
        if len(runs) != len(designs):
            raise ValueError(f"one design per run is needed; found {len(runs)} runs and {len(designs)} designs")
        if not runs:
            raise ValueError("no runs given")
        n_vox = None
        out_d = []
        for i, (y, d) in enumerate(zip(runs, designs)):
            if getattr(y, "ndim", None) != 2:
                raise ValueError(f"run {i} must be an array of shape (n_time, n_voxels); found "
                                 f"{getattr(y, 'shape', type(y).__name__)}")
            if n_vox is None:
                n_vox = y.shape[1]
            elif y.shape[1] != n_vox:
                raise ValueError(f"every run needs the same voxels; run 0 has {n_vox}, run {i} has {y.shape[1]}")
            if isinstance(d, np.ndarray) and d.ndim == 1 and np.issubdtype(d.dtype, np.number):
                if not np.all(np.isfinite(d)) or np.any(d % 1):
                    raise ValueError(f"run {i}: a per-volume design holds integer condition ids (0 = no trial)")
                d = d.astype(np.int64)
                if d.size != y.shape[0]:
                    raise ValueError(f"run {i}: a per-volume design needs {y.shape[0]} entries (one per volume); "
                                     f"found {d.size}")
                d = TrialDesign.from_volumes(d, self.tr)
            d = _as_design(d, i)
            dur = y.shape[0] * self.tr
            if d.n_trials == 0:
                raise ValueError(f"run {i} has no trials")
            if not np.all(np.isfinite(d.onsets)) or d.onsets.min() < 0 or d.onsets.max() >= dur:
                raise ValueError(f"run {i}: onsets must lie in [0, {dur:g}) s (the run has {y.shape[0]} volumes "
                                 f"of {self.tr:g} s); found {d.onsets.min():g} to {d.onsets.max():g} s")
            if np.unique(d.onsets).size != d.onsets.size:
                raise ValueError(f"run {i}: two trials share an onset; each trial needs its own onset")
            out_d.append(d)
        if n_vox == 0:
            raise ValueError("the runs have no voxels")
        if sessions is not None:
            sessions = np.asarray(sessions).ravel()
            if sessions.size != len(runs):
                raise ValueError(f"sessions needs one entry per run; found {sessions.size} for {len(runs)} runs")
        # NaN scan, chunked so a memory-mapped whole brain is not copied at once
        step = max(1, int(self.chunk_size))
        for i, y in enumerate(runs):
            for a in range(0, n_vox, step):
                blk = np.asarray(y[:, a:a + step])
                finite = np.isfinite(blk)
                if not finite.all():
                    nbad = int((~finite.all(0)).sum())
                    raise ValueError(f"run {i} has NaN or infinite values in {nbad} voxel(s) (first at voxel "
                                     f"{a + int(np.flatnonzero(~finite.all(0))[0])}); remove or fill them first")
        return runs, out_d, sessions, n_vox

    # ------------------------------------------------------------------------ fit
    def fit(self, runs, designs, sessions=None) -> GLMSingle:
        """Estimate single-trial betas with models A–D.

        Parameters
        ----------
        runs : list of array of shape (n_time_r, n_voxels)
            BOLD time series of each run (raw units; memory maps are fine, they are read in
            chunks of voxels).
        designs : list, one per run
            :class:`TrialDesign`, a mapping/DataFrame with ``onset`` (s) and ``condition``,
            an ``(onsets, conditions)`` tuple, or an integer vector with one entry per volume
            (NSD's design files: the condition id at onset volumes, 0 elsewhere).
        sessions : array of shape (n_runs,), optional
            Session of each run; betas are z-scored per session for cross-validation.

        Returns
        -------
        self
        """
        if self.blas_threads is None:
            return self._fit(runs, designs, sessions)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(self.blas_threads), user_api="blas"):
            return self._fit(runs, designs, sessions)

    def _fit(self, runs, designs, sessions) -> GLMSingle:
        """Pass 1 over chunks of voxels: ON-OFF, models A and B (:meth:`_models_ab`); the noise
        pool and its PCs (:meth:`_noise_pool`, :meth:`_noise_pcs`); pass 2: the number of PCs,
        cross-validated on the PC-selection voxels (:meth:`_pc_curve`); pass 3: models C and D
        (:meth:`_models_cd`); then percent signal change and the fitted attributes."""
        hrfs, canon, cands, fracs = self._check_params()
        runs, designs, sessions, _n_vox = self._check_inputs(runs, designs, sessions)
        fit = _FitState(runs, designs, sessions, hrfs, canon, self.tr, self.poly_degree, np.dtype(self.dtype),
                        keep=set(self.keep_betas), chunk_size=int(self.chunk_size), n_fracs=fracs.size)
        repeated = fit.counts.sum() > 0
        if not repeated and (self.glmdenoise or self.fracridge):
            warnings.warn("no condition occurs in more than one run, so the number of PCs and the ridge fractions "
                          "cannot be cross-validated; models C and D equal model B", stacklevel=3)
        denoise = bool(self.glmdenoise and repeated and max(cands) > 0)
        ridge = bool(self.fracridge and repeated and fracs.size > 1)
        bar = dict(disable=not self.verbose, leave=False)

        for sl in tqdm(fit.chunks, desc="GLM models A, B", **bar):  # pass 1
            self._models_ab(fit, sl)
        pool, pc_vox, threshold = self._noise_pool(fit)
        if denoise:
            denoise = self._noise_pcs(fit, pool, max(cands))
        cands = [k for k in cands if k <= min(p.shape[1] for p in fit.pcs)] if denoise else [0]
        curve = np.zeros(len(cands))
        n_pcs = 0
        if denoise and len(cands) > 1:  # pass 2
            curve = self._pc_curve(fit, pc_vox, cands, bar)
            # gains below 1e-6 z² per held-out pair are rounding error (e.g. noiseless data)
            n_pcs = cands[select_n_pcs(curve, self.pcstop, tol=1e-6 * max(1.0, fit.counts.sum()))]
        for sl in tqdm(fit.chunks, desc="GLM models C, D", **bar):  # pass 3
            self._models_cd(fit, sl, n_pcs, fracs if ridge else None)
        self._set_results(fit, n_pcs if denoise else 0, pool, pc_vox, threshold, curve, cands, fracs)
        return self

    # --------------------------------------------------------------- pass 1: models A and B
    def _models_ab(self, fit: _FitState, sl: slice):
        """ON-OFF statistics, model A (canonical HRF) and model B (best library HRF) of one chunk."""
        sums = np.zeros(sl.stop - sl.start)
        ys = fit.load(sl, sums)
        fit.meanvol[sl] = sums / sum(fit.n_time)
        energy = self._onoff(fit, sl, ys)
        safe = np.where(energy > 0, energy, 1.0)
        # model A single-trial (canonical HRF)
        betas, en = fit.ols_from_svd(fit.svd_can, ys)
        fit.r2["A"][sl] = np.where(energy > 0, en / safe, 0.0)
        if fit.store["A"] is not None:
            fit.store["A"][:, sl] = betas
        # model B: every library HRF
        best = np.full(energy.shape, -np.inf)
        best_betas = np.zeros((fit.n_trials, energy.size), fit.dt)
        for h in range(fit.n_hrfs):
            betas, en = fit.ols_from_svd(fit.parts(h, 0), ys)
            r2h = np.where(energy > 0, en / safe, 0.0)
            fit.hrf_r2[h, sl] = r2h
            better = r2h > best
            best[better] = r2h[better]
            best_betas[:, better] = betas[:, better]
        fit.hrf_index[sl] = np.argmax(fit.hrf_r2[:, sl], 0)
        fit.r2["B"][sl] = best
        if fit.store["B"] is not None:
            fit.store["B"][:, sl] = best_betas

    @staticmethod
    def _onoff(fit: _FitState, sl: slice, ys) -> np.ndarray:
        """ON-OFF amplitude, in-sample and leave-one-run-out R² of one chunk; returns its energy."""
        energy = np.zeros(sl.stop - sl.start)
        a_r, b_r, e_r = [], [], []
        for r, y in enumerate(ys):
            yp_energy = np.einsum("ij,ij->j", y, y, dtype=float)
            e_r.append(yp_energy)
            a_r.append((fit.onoff[r] @ y).astype(float))
            b_r.append(float(fit.onoff[r].astype(float) @ fit.onoff[r]))
            energy += yp_energy
        safe = np.where(energy > 0, energy, 1.0)
        a_sum, b_sum = sum(a_r), sum(b_r)
        fit.onoff_beta[sl] = a_sum / b_sum
        fit.onoff_r2[sl] = np.where(energy > 0, a_sum ** 2 / b_sum / safe, 0.0)
        sse = np.zeros_like(energy)
        for r in range(fit.n_runs):
            bo = (a_sum - a_r[r]) / max(b_sum - b_r[r], 1e-300)
            sse += e_r[r] - 2 * bo * a_r[r] + bo ** 2 * b_r[r]
        fit.onoff_xr2[sl] = np.where(energy > 0, 1.0 - sse / safe, 0.0)
        return energy

    # ------------------------------------------------------------ noise pool and its PCs
    def _noise_pool(self, fit: _FitState):
        """The noise pool, the PC-selection voxels and the ON-OFF R² threshold that chose them."""
        onoff_r2, onoff_xr2 = fit.onoff_r2, fit.onoff_xr2
        pct, factor = self.brain_thresh
        bright = fit.meanvol > factor * np.percentile(fit.meanvol, pct)
        threshold = self.r2_threshold
        if threshold is None:
            try:
                threshold = find_tail_threshold(onoff_r2)
            except ValueError as exc:
                if self.noise_pool == "gmm":
                    warnings.warn(f"{exc}; the noise pool falls back to the paper's criterion (cross-validated "
                                  "ON-OFF R² < 0)", stacklevel=4)
                threshold = float("nan")
        if self.noise_pool == "xval" or not np.isfinite(threshold):
            pool = bright & (onoff_xr2 < 0)
        else:
            pool = bright & (onoff_r2 < threshold)
        if np.isfinite(threshold):
            pc_vox = onoff_r2 > threshold
        else:
            pc_vox = onoff_xr2 > 0
        if pc_vox.sum() == 0:
            pc_vox = np.zeros(onoff_r2.size, bool)
            pc_vox[np.argsort(-onoff_r2)[:100]] = True
        return pool, pc_vox, threshold

    @staticmethod
    def _noise_pcs(fit: _FitState, pool: np.ndarray, max_pc: int) -> bool:
        """Set ``fit.pcs`` to each run's leading noise-pool PCs; False if the pool is empty."""
        idx = np.flatnonzero(pool)
        if idx.size == 0:
            warnings.warn("the noise pool is empty; no GLMdenoise regressors (models C = B)", stacklevel=4)
            return False
        pcs = []
        for r, y in enumerate(fit.runs):
            pdat = _project(fit.polys[r], np.asarray(y[:, idx], dtype=float))
            nrm = np.linalg.norm(pdat, axis=0)
            pdat = pdat[:, nrm > 0] / nrm[nrm > 0]
            u, s, _ = np.linalg.svd(pdat, full_matrices=False)
            k = min(max_pc, int((s > 1e-10 * max(s.max(initial=0), 1e-300)).sum()))
            u = u[:, :k]
            u = u * np.sign(u[np.argmax(np.abs(u), 0), np.arange(k)])  # deterministic signs
            sd = u.std(0, ddof=1)
            pcs.append(u / np.where(sd > 0, sd, 1.0))
        fit.pcs = pcs
        return True

    # ------------------------------------------- pass 2: cross-validate the number of PCs
    def _pc_curve(self, fit: _FitState, pc_vox: np.ndarray, cands: list, bar: dict) -> np.ndarray:
        """Minus the median badness over the PC-selection voxels, for each candidate number of PCs."""
        pc_idx = np.flatnonzero(pc_vox)
        bad = np.zeros((len(cands), pc_idx.size))
        step = fit.chunk_size
        for a in tqdm(range(0, pc_idx.size, step), desc="GLMdenoise: number of PCs", **bar):
            sub = pc_idx[a:a + step]
            ys_all = fit.load(sub)
            for h in np.unique(fit.hrf_index[sub]):
                g = np.flatnonzero(fit.hrf_index[sub] == h)
                ys = [y[:, g] for y in ys_all]
                b_ref, _ = fit.ols_from_svd(fit.parts(h, 0), ys)
                b_ref = b_ref.astype(float)
                stats = _zstats(b_ref, fit.trial_sess)
                refz = _zscore(b_ref, stats)
                m_refz = fit.pairs @ refz
                self_term = _self_term(refz, fit.counts)
                for ci, k in enumerate(cands):
                    bk = b_ref if k == 0 else fit.ols_pinv(h, k, ys).astype(float)
                    bad[ci, a + g] = _badness(bk, stats, m_refz, fit.counts, self_term)
        return -np.median(bad, axis=1)

    # --------------------------------------------------------------- pass 3: models C and D
    def _models_cd(self, fit: _FitState, sl: slice, n_pcs: int, fracs: np.ndarray | None):
        """Model C (``n_pcs`` noise regressors) and model D (ridge over ``fracs``; None: D = C) of one chunk."""
        ys_all = fit.load(sl)
        hi = fit.hrf_index[sl]
        r2, store = fit.r2, fit.store
        for h in np.unique(hi):
            g = np.flatnonzero(hi == h)
            cols = sl.start + g
            ys = [y[:, g] for y in ys_all]
            pr = fit.parts(h, n_pcs)
            b_c, _ = fit.ols_from_svd(pr, ys)
            r2["C"][cols] = self._r2(ys, b_c, fit.xlib, h, fit.polys_dt, fit.starts, fit.dt)
            if store["C"] is not None:
                store["C"][:, cols] = b_c
            if fracs is None:
                r2["D"][cols] = r2["C"][cols]
                if store["D"] is not None:
                    store["D"][:, cols] = b_c
                continue
            b_d, f_sel, badf, so, b_pre = self._ridge(pr, ys, b_c, fracs, fit.pairs, fit.counts, fit.trial_sess,
                                                      fit.starts, fit.n_trials, fit.dt)
            fit.fraction[cols] = f_sel
            fit.fraction_badness[:, cols] = badf
            fit.scale_offset[:, cols] = so
            r2["D"][cols] = self._r2(ys, b_pre, fit.xlib, h, fit.polys_dt, fit.starts, fit.dt)
            if store["D"] is not None:
                store["D"][:, cols] = b_d

    # ------------------------------------------------- percent signal change and results
    def _set_results(self, fit: _FitState, n_pcs, pool, pc_vox, threshold, curve, cands, fracs):
        """Convert the kept betas to percent signal change and set the fitted attributes."""
        n_vox, store, r2, hrf_index = fit.n_vox, fit.store, fit.r2, fit.hrf_index
        am = np.abs(fit.meanvol)
        psc = np.where(am > 0, 100.0 / np.where(am > 0, am, 1.0), 0.0).astype(np.float32)
        for m in MODELS:
            if store[m] is not None:
                store[m] *= psc[None, :]
        self.results_ = {
            "A": ModelResult("A", store["A"], r2["A"], np.full(n_vox, -1), 0, np.ones(n_vox)),
            "B": ModelResult("B", store["B"], r2["B"], hrf_index, 0, np.ones(n_vox)),
            "C": ModelResult("C", store["C"], r2["C"], hrf_index, n_pcs, np.ones(n_vox)),
            "D": ModelResult("D", store["D"], r2["D"], hrf_index, n_pcs, fit.fraction),
        }
        self.betas_ = store["D"]
        self.hrf_index_ = hrf_index
        self.r2_ = r2["D"]
        self.n_pcs_ = int(n_pcs)
        self.fraction_ = fit.fraction
        self.noise_pool_ = pool
        self.pc_voxels_ = pc_vox
        self.onoff_r2_ = fit.onoff_r2
        self.onoff_xval_r2_ = fit.onoff_xr2
        self.onoff_betas_ = fit.onoff_beta * psc
        self.meanvol_ = fit.meanvol
        self.r2_threshold_ = float(threshold)
        self.hrf_r2_ = fit.hrf_r2
        self.xval_curve_ = curve
        self.pc_candidates_ = np.asarray(cands)
        self.fractions_ = fracs
        self.fraction_badness_ = fit.fraction_badness
        self.scale_offset_ = fit.scale_offset
        self.pcs_ = fit.pcs
        self.poly_degree_ = fit.degrees
        self.conditions_ = fit.conditions
        self.trial_run_ = fit.trial_run
        self.n_trials_ = fit.n_trials

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _r2(ys, betas, xlib, h, polys, starts, dt):
        """R² of the trial regressors' fit against the data (``ys`` already detrended)."""
        sse = np.zeros(ys[0].shape[1])
        tot = np.zeros(ys[0].shape[1])
        for r, yp in enumerate(ys):
            p = polys[r]
            x = xlib[r][h].astype(dt)
            xp = x - p @ (p.T @ x)
            res = yp - xp @ betas[starts[r]:starts[r + 1]]
            sse += np.einsum("ij,ij->j", res, res, dtype=float)
            tot += np.einsum("ij,ij->j", yp, yp, dtype=float)
        return np.where(tot > 0, 1.0 - sse / np.where(tot > 0, tot, 1.0), 0.0)

    @staticmethod
    def _ridge(parts, ys, b_ols, fracs, pairs, counts, trial_sess, starts, n_trials, dt):
        """Per-voxel fractional ridge over ``fracs`` from one set of per-run SVDs."""
        n_v = ys[0].shape[1]
        s_all, z_all = [], []
        inv_all = []
        for (u, s, _vt, sinv), y in zip(parts, ys):
            s_all.append(s)
            inv_all.append(sinv.astype(float))
            z_all.append((u.T @ y).astype(float))
        s = np.concatenate(s_all)
        b0 = np.concatenate(z_all) * np.concatenate(inv_all)[:, None]  # rotated OLS coefficients
        alphas = _fraction_alphas(s, b0, fracs)  # (F, V)
        ref = b_ols.astype(float)
        stats = _zstats(ref, trial_sess)
        refz = _zscore(ref, stats)
        m_refz = pairs @ refz
        self_term = _self_term(refz, counts)
        bounds = np.concatenate([[0], np.cumsum([len(x) for x in s_all])])
        s2 = (s ** 2)[:, None]
        best = np.full(n_v, np.inf)
        best_i = np.zeros(n_v, np.int64)
        best_b = ref.copy()
        badf = np.empty((fracs.size, n_v))
        for i in range(fracs.size):
            if fracs[i] >= 1:
                bf = ref
            else:
                den = s2 + alphas[i][None, :]
                rot = b0 * np.where(den > 0, s2 / np.where(den > 0, den, 1.0), 0.0)
                bf = np.empty((n_trials, n_v))
                for r, (_u, _s, vt, _i) in enumerate(parts):
                    bf[starts[r]:starts[r + 1]] = vt.T.astype(float) @ rot[bounds[r]:bounds[r + 1]]
            badf[i] = _badness(bf, stats, m_refz, counts, self_term)
            better = badf[i] < best
            best[better] = badf[i][better]
            best_i[better] = i
            best_b[:, better] = bf[:, better]
        # rescale and offset: regress the unregularised betas on the chosen ones
        xb = np.nan_to_num(best_b)
        xm, ym = xb.mean(0), ref.mean(0)
        var = ((xb - xm) ** 2).sum(0)
        cov = ((xb - xm) * (ref - ym)).sum(0)
        slope = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0)
        offset = ym - slope * xm
        flip = (slope < 0) | (var <= 0)
        slope = np.where(flip, 1.0, slope)
        offset = np.where(flip, 0.0, offset)
        final = (xb * slope + offset).astype(dt)
        return final, fracs[best_i], badf, np.vstack([slope, offset]), best_b.astype(dt)
