"""The paper's noise protocol for the first guess (section 3.4, Table 6).

Before stage 2, the first guess (a uint8 image, 0-255) is distorted by adding a
standard-normal image multiplied by an amplitude of 8, 16, 32 or 64 grey levels; the
sum is clipped to 0-255 and rounded back to uint8. Amplitude 256 is the paper's "pure
noise" case, in which stage 2 receives Gaussian noise instead of a first guess.

The paper does not say how its pure-noise image is centred or scaled. nsdlib applies
the same additive rule to a uniform mid-grey image (127.5) instead of the first guess:
``clip(127.5 + 256 * z, 0, 255)``. Nothing of the first guess survives (which is the
point of that row), and the pixel distribution is what the amplitude-256 rule gives to a
mid-grey pixel: about 31 % black, 31 % white and 38 % spread in between, with mean 127.5.
(Adding ``256 * z`` to the first guess itself and clipping would leave a faint trace of
it, because how often a pixel clips depends on its value.)

The noise is added to whatever image it is given, one value per pixel and channel at that
image's size. Where in the pipeline that image is taken — the first guess at stage 1's size
(64 px for VDVAE), or the first guess upscaled to the diffusion model's size as stage 2
upscales it (512 px, the size of Brain-Diffuser's first-guess files) — is the ``placement``
of :func:`nsdlib.pipeline.evaluation.noised_first_guesses`; the paper does not say which.

Noise is seeded per image: the noise of an image depends only on ``seed``, the
amplitude and the image's key (its NSD id when given, else its position), never on
which other images are in the batch, so a quick run on a subset sees the same noise as
a full run on those images.
"""

from __future__ import annotations

import numpy as np

from .images import check_images
from .names import NOISE_AMPLITUDES, NOISE_LEVELS, PURE_NOISE_AMPLITUDE

__all__ = [
    "add_noise",
    "noise_amplitude",
    "noise_label",
    "pure_noise",
]

_MID_GREY = 127.5


def noise_label(level) -> str:
    """The canonical label of a noise level: ``"none"`` or the amplitude as a string.

    Accepts ``None``, ``0``, ``"none"``, ``8``, ``"8"``, ... ``256``.
    """
    if level is None or (isinstance(level, str) and level.strip().lower() in ("none", "0", "")):
        return "none"
    try:
        amp = int(level)
    except (TypeError, ValueError):
        raise ValueError(f"noise level must be one of {', '.join(NOISE_LEVELS)}; found {level!r}") from None
    if amp == 0:
        return "none"
    if isinstance(level, float) and level != amp or amp not in (*NOISE_AMPLITUDES, PURE_NOISE_AMPLITUDE):
        raise ValueError(f"noise level must be one of {', '.join(NOISE_LEVELS)}; found {level!r}")
    return str(amp)


def noise_amplitude(level) -> int:
    """The amplitude of a level in grey levels (0 for ``"none"``)."""
    label = noise_label(level)
    return 0 if label == "none" else int(label)


def _keys(n: int, ids) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    keys = np.asarray(ids, dtype=np.int64).ravel()
    if keys.shape != (n,):
        raise ValueError(f"ids must hold one id per image: expected {n}, found {keys.size}")
    if np.any(keys < 0):
        raise ValueError("ids must be non-negative (0-based NSD ids)")
    return keys


def _normal(seed: int, amplitude: int, key: int, shape) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(amplitude), int(key)]))
    return rng.standard_normal(shape, dtype=np.float32)


def add_noise(images, level, *, seed: int = 0, ids=None) -> np.ndarray:
    """Distort first guesses by the paper's protocol.

    Parameters
    ----------
    images : ndarray of uint8, shape (n_images, height, width, 3)
        First guesses, 0-255.
    level : {"none", 8, 16, 32, 64, 256} (int or str)
        Noise amplitude in grey levels; ``"none"`` returns a copy; ``256`` returns
        :func:`pure_noise` (the first guess is replaced).
    seed : int
        Run seed; with the amplitude and each image's key it seeds that image's noise.
    ids : array-like of int, shape (n_images,), optional
        A stable key per image (0-based NSD ids); positions 0..n-1 when omitted.

    Returns
    -------
    ndarray of uint8, shape (n_images, height, width, 3)
        ``clip(round(image + amplitude * z), 0, 255)`` with ``z`` standard normal, one
        independent value per pixel and channel.
    """
    images = np.asarray(check_images(images))
    label = noise_label(level)
    if label == "none":
        return images.copy()
    amp = int(label)
    keys = _keys(len(images), ids)
    if amp == PURE_NOISE_AMPLITUDE:
        return pure_noise(images.shape, seed=seed, ids=keys)
    out = np.empty_like(images)
    for i, key in enumerate(keys):
        z = _normal(seed, amp, key, images.shape[1:])
        noisy = images[i].astype(np.float32) + np.float32(amp) * z
        out[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def pure_noise(shape, *, seed: int = 0, ids=None) -> np.ndarray:
    """The paper's amplitude-256 "pure noise" input: Gaussian noise around mid-grey.

    Parameters
    ----------
    shape : tuple (n_images, height, width, 3)
        Shape of the batch to make.
    seed : int
        Run seed.
    ids : array-like of int, shape (n_images,), optional
        A stable key per image; positions when omitted.

    Returns
    -------
    ndarray of uint8, shape ``shape``
        ``clip(round(127.5 + 256 * z), 0, 255)`` per pixel and channel (see the module
        docstring for why mid-grey).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (n_images, height, width, 3); found {shape}")
    keys = _keys(shape[0], ids)
    out = np.empty(shape, dtype=np.uint8)
    for i, key in enumerate(keys):
        z = _normal(seed, PURE_NOISE_AMPLITUDE, key, shape[1:])
        out[i] = np.clip(np.rint(_MID_GREY + np.float32(PURE_NOISE_AMPLITUDE) * z), 0, 255).astype(np.uint8)
    return out
