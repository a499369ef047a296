"""Tests of nsdlib.noise: the paper's first-guess noise protocol."""

from __future__ import annotations

import numpy as np
import pytest

from nsdlib import names, noise


def _guesses(n=4, size=32, value=None, seed=0):
    if value is not None:
        return np.full((n, size, size, 3), value, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_labels():
    assert [noise.noise_label(x) for x in (None, 0, "none", 8, "16", 32.0, 64, 256)] == \
        ["none", "none", "none", "8", "16", "32", "64", "256"]
    assert noise.noise_amplitude("none") == 0 and noise.noise_amplitude("64") == 64
    assert names.NOISE_LEVELS == ("none", "8", "16", "32", "64", "256")
    for bad in (7, "loud", 8.5, -8):
        with pytest.raises(ValueError, match="noise level must be one of"):
            noise.noise_label(bad)


def test_none_is_an_unchanged_copy():
    x = _guesses()
    y = noise.add_noise(x, "none")
    np.testing.assert_array_equal(x, y)
    assert y is not x


@pytest.mark.parametrize("amp", [8, 16, 32])
def test_amplitude_is_the_standard_deviation_away_from_the_bounds(amp):
    x = _guesses(3, 64, value=128)
    d = noise.add_noise(x, amp, seed=1).astype(np.float64) - 128
    assert ((d <= -128) | (d >= 127)).mean() < 0.001  # 4 standard deviations or more from a bound
    # rounding adds a variance of 1/12 grey level^2
    assert d.std() == pytest.approx(np.sqrt(amp**2 + 1 / 12), rel=0.03)
    assert abs(d.mean()) < 0.05 * amp


@pytest.mark.parametrize("size", [32, 512])
def test_noise_is_independent_per_pixel_at_the_images_own_size(size):
    # the same rule at stage 1's size and at the diffusion model's (the two placements of chapter 08)
    d = noise.add_noise(_guesses(1, size, value=128), 16, seed=2).astype(np.float64) - 128
    assert d.shape == (1, size, size, 3)
    for a, b in ((d[:, :, :-1], d[:, :, 1:]), (d[:, :-1], d[:, 1:]), (d[..., :-1], d[..., 1:])):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 4 / np.sqrt(a.size), f"neighbours correlate at {r:.3f} for a {size}-px image"


def test_amplitude_64_clips_at_the_normal_tail_rate():
    from scipy.stats import norm

    d = noise.add_noise(_guesses(3, 64, value=128), 64, seed=1).astype(np.float64) - 128
    # 128 + 64 z rounds to 255 or above for z >= 126.5/64, to 0 or below for z <= -127.5/64
    want = norm.sf(126.5 / 64) + norm.cdf(-127.5 / 64)
    assert ((d <= -128) | (d >= 127)).mean() == pytest.approx(want, abs=0.006)


def test_clipped_to_the_pixel_range():
    white = noise.add_noise(_guesses(2, 32, value=255), 64, seed=0)
    black = noise.add_noise(_guesses(2, 32, value=0), 64, seed=0)
    assert white.dtype == np.uint8 and white.max() == 255 and white.mean() < 255
    # about half the noise pushes past the bound and is clipped there
    assert (white == 255).mean() == pytest.approx(0.5, abs=0.03)
    assert (black == 0).mean() == pytest.approx(0.5, abs=0.03)


def test_seeded_per_image():
    x = _guesses(6)
    ids = np.array([10, 3, 77, 5, 42, 8])
    a = noise.add_noise(x, 16, seed=3, ids=ids)
    np.testing.assert_array_equal(a, noise.add_noise(x, 16, seed=3, ids=ids))
    assert not np.array_equal(a, noise.add_noise(x, 16, seed=4, ids=ids))
    # an image's noise does not depend on which others are in the batch
    np.testing.assert_array_equal(a[2:4], noise.add_noise(x[2:4], 16, seed=3, ids=ids[2:4]))
    # nor on the order of the batch
    order = np.array([5, 0, 3, 1, 4, 2])
    np.testing.assert_array_equal(a[order], noise.add_noise(x[order], 16, seed=3, ids=ids[order]))
    # different amplitudes draw different noise, not a rescaled copy
    d8 = noise.add_noise(_guesses(1, 32, 128), 8, seed=0).astype(int) - 128
    d16 = noise.add_noise(_guesses(1, 32, 128), 16, seed=0).astype(int) - 128
    assert abs(np.corrcoef(d8.ravel(), d16.ravel())[0, 1]) < 0.1


def test_pure_noise_replaces_the_first_guess():
    a = noise.add_noise(_guesses(3, 64, seed=0), 256, seed=2)
    b = noise.add_noise(_guesses(3, 64, seed=9), 256, seed=2)
    np.testing.assert_array_equal(a, b)  # nothing of the first guess survives
    np.testing.assert_array_equal(a, noise.pure_noise(a.shape, seed=2))
    # mid-grey plus 256 * z, clipped: P(z < -127.5/256) = 0.309 at each bound
    assert (a == 0).mean() == pytest.approx(0.309, abs=0.02)
    assert (a == 255).mean() == pytest.approx(0.309, abs=0.02)
    assert a.mean() == pytest.approx(127.5, abs=2)


def test_bad_input():
    with pytest.raises(ValueError, match="uint8 images of shape"):
        noise.add_noise(np.zeros((2, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="one id per image"):
        noise.add_noise(_guesses(2), 8, ids=[1, 2, 3])
    with pytest.raises(ValueError, match="shape must be"):
        noise.pure_noise((4, 8, 8))
