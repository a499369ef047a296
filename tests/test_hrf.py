import numpy as np
import pytest

from nsdlib.hrf import HRF_PEAKS, canonical_hrf, hrf_library, hrf_timecourse


def test_library_spans_the_documented_latencies():
    t = np.arange(0, 32, 0.01)
    peaks = [t[hrf_timecourse(t, p).argmax()] for p in HRF_PEAKS]
    assert peaks[0] == pytest.approx(2.7, abs=0.02) and peaks[-1] == pytest.approx(5.7, abs=0.02)
    assert np.all(np.diff(peaks) > 0)


def test_library_shape_scaling_and_order():
    lib = hrf_library(tr=1.0, stim_dur=3.0)
    assert lib.shape == (33, 20)
    np.testing.assert_allclose(lib.max(axis=0), 1.0)
    assert np.all(np.diff(lib.argmax(axis=0)) >= 0)  # later HRFs peak later
    c = np.corrcoef(lib.T)
    assert np.all(np.diag(c, 1) > 0.99)  # neighbours nearly identical
    assert c[0, -1] < 0.6


def test_other_tr_and_canonical():
    lib = hrf_library(tr=1.6, stim_dur=3.0, duration=30)
    assert lib.shape == (19, 20)
    can = canonical_hrf(tr=1.0)
    assert can.shape == (33,) and can.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tr and duration must be positive"):
        hrf_library(tr=0)
