"""The HRF library shared by the GLM (``nsdlib.glm``) and the simulation (``nsdlib.mini``).

GLMsingle chooses each voxel's haemodynamic response from a library of 20 HRFs fitted to
NSD, ordered by latency, with peaks from about 2.7 s to 5.7 s. nsdlib uses its own
documented parametric family with the same span: a double-gamma function (response shape
6, undershoot shape 16, undershoot ratio 1/6, as in SPM's canonical HRF) whose common time
scale is set so that the response peaks at a chosen latency. Later HRFs are therefore also
broader, as in NSD's library. Each HRF is convolved with a boxcar as long as the stimulus,
sampled at the TR and scaled to a peak of 1, so a beta is "the response's peak amplitude".
"""

from __future__ import annotations

import numpy as np
from scipy.stats import gamma

__all__ = ["CANONICAL_PEAK", "HRF_PEAKS", "canonical_hrf", "hrf_library", "hrf_timecourse"]

#: Nominal peak latencies (s) of the 20 library HRFs, before the stimulus boxcar.
HRF_PEAKS = np.linspace(2.7, 5.7, 20)
#: Peak latency (s) of the canonical HRF used by the ON-OFF model (model A).
CANONICAL_PEAK = 4.8

_A1, _A2, _RATIO = 6.0, 16.0, 1.0 / 6.0
_DT = 0.01  # s, resolution of the continuous-time convolution


def hrf_timecourse(t: np.ndarray, peak: float) -> np.ndarray:
    """The impulse response at times ``t`` (s) of the family member peaking near ``peak`` s."""
    scale = peak / (_A1 - 1.0)  # mode of the response gamma
    t = np.asarray(t, dtype=float)
    return gamma.pdf(t, _A1, scale=scale) - _RATIO * gamma.pdf(t, _A2, scale=scale)


def _sampled(peak: float, tr: float, stim_dur: float, duration: float) -> np.ndarray:
    if tr <= 0 or stim_dur < 0 or duration <= 0:
        raise ValueError(f"tr and duration must be positive and stim_dur non-negative; found tr={tr}, "
                         f"stim_dur={stim_dur}, duration={duration}")
    t = np.arange(0.0, duration + stim_dur + _DT, _DT)
    h = hrf_timecourse(t, peak)
    n_box = max(1, int(round(stim_dur / _DT)))
    resp = np.convolve(h, np.ones(n_box))[: t.size] * _DT
    samples = np.arange(0.0, duration + 1e-9, tr)
    out = np.interp(samples, t, resp)
    return out / out.max()


def hrf_library(tr: float = 1.0, stim_dur: float = 3.0, duration: float = 32.0,
                peaks: np.ndarray = HRF_PEAKS) -> np.ndarray:
    """The library sampled for a TR and stimulus duration.

    Parameters
    ----------
    tr : float
        Sampling interval of the time series (s).
    stim_dur : float
        Stimulus duration (s); NSD shows each image for 3 s.
    duration : float
        Length of the sampled response (s).
    peaks : array of shape (n_hrfs,)
        Nominal peak latencies; the default is the 20-member library.

    Returns
    -------
    hrfs : ndarray of shape (n_samples, n_hrfs)
        Column k is HRF k (ordered early to late), sampled at 0, TR, 2 TR, … and scaled
        to a maximum of 1.
    """
    return np.stack([_sampled(p, tr, stim_dur, duration) for p in np.asarray(peaks, float)], axis=1)


def canonical_hrf(tr: float = 1.0, stim_dur: float = 3.0, duration: float = 32.0) -> np.ndarray:
    """The canonical HRF (peak near 4.8 s), sampled like :func:`hrf_library`; shape (n_samples,)."""
    return _sampled(CANONICAL_PEAK, tr, stim_dur, duration)
