"""The decoder run from betas given explicitly: a voxel subset (chapter 11), or the simulation's
true amplitudes in place of the GLM's betas (chapter 12).

The run's own steps (:mod:`nsdlib.pipeline.stage1`, :mod:`nsdlib.pipeline.stage2`) decode the
subject's betas; the functions here decode any betas of the same images with the same models
and settings, each cached in the run's store under a hash of the betas:

- :func:`clip_from_betas`: the ridge predictions of the test images' CLIP-text and CLIP-vision
  embeddings, as :func:`nsdlib.pipeline.stage2.clip_predictions` makes them (the same alphas,
  the same re-standardisation);
- :func:`stage2_from`: Versatile Diffusion from given first guesses and given conditions, as
  :func:`nsdlib.pipeline.stage2.stage2_images` runs it (the same settings, seeds and batches);
- :func:`decode_betas`: both stages: stage 1 with ridge
  (:func:`nsdlib.pipeline.stage1.first_guesses_from_betas`) and stage 2 from its first guesses.

The run's own betas give the run's own ridge pipeline (the tests check it).
"""

from __future__ import annotations

import numpy as np

from ..config import RunConfig
from ..store import array_key, params_key
from . import context, stage1, stage2

__all__ = ["clip_from_betas", "decode_betas", "stage2_from"]

_VERSION = 1


def clip_from_betas(cfg: RunConfig, train_betas: np.ndarray, test_betas: np.ndarray, *, alpha="auto",
                    normalize: str | None = "test", progress: bool = False) -> dict[str, np.ndarray]:
    """Ridge predictions of the test images' CLIP embeddings from the betas given (cached).

    Parameters
    ----------
    train_betas : ndarray of shape (n_train, n_voxels)
        One row per training image of the subject, in the order of its ``train_ids``.
    test_betas : ndarray of shape (n_test, n_voxels)
        In the order of its ``test_ids``.
    alpha, normalize
        As :func:`nsdlib.pipeline.stage2.clip_predictions`.

    Returns
    -------
    dict
        ``text`` (n_test, 77, d) and ``vision`` (n_test, 257, d), float32; ``alpha_text``,
        ``alpha_vision``.
    """
    name, a_text, a_vision = stage2.resolve_alphas(cfg, alpha)
    subj = context.get(cfg).subject()
    train_betas, test_betas = np.asarray(train_betas, np.float32), np.asarray(test_betas, np.float32)
    if train_betas.shape[0] != len(subj.train_ids) or test_betas.shape[0] != len(subj.test_ids) \
            or train_betas.shape[1:] != test_betas.shape[1:]:
        raise ValueError(f"betas must be ({len(subj.train_ids)}, v) and ({len(subj.test_ids)}, v), one row per "
                         f"training and test image; found {train_betas.shape} and {test_betas.shape}")
    params = {"v": _VERSION, "dataset": cfg.dataset, "betas": array_key(train_betas, test_betas),
              "ids": array_key(subj.train_ids, subj.test_ids), "clip": context.get(cfg).source("clip").fingerprint,
              **stage2.ridge_params(name, normalize)}

    def compute():
        return stage2.predict_embeddings(cfg, train_betas, test_betas, (a_text, a_vision), normalize,
                                         progress=progress)

    return context.get(cfg).store.arrays("clip_from_betas", params, compute)


def stage2_from(cfg: RunConfig, first_guesses: np.ndarray, conditions: dict, *, indices=None,
                progress: bool = True) -> np.ndarray:
    """Stage 2 from the first guesses and CLIP conditions given (cached).

    Parameters
    ----------
    first_guesses : uint8 ndarray of shape (n_test, h, w, 3)
    conditions : dict
        ``text`` (n_test, 77, d) and ``vision`` (n_test, 257, d): predicted or true embeddings.
    indices : sequence of int, optional
        Only these test images (positions); each keeps the noise seed it has in a full run.

    Returns
    -------
    uint8 ndarray of shape (n, S, S, 3)
        As :func:`nsdlib.pipeline.stage2.stage2_images`, with its settings (``quick``: the
        short schedule).
    """
    run = stage2.QUICK_DIFFUSION_SETTINGS if cfg.quick else stage2.DIFFUSION_SETTINGS
    first_guesses = np.asarray(first_guesses)
    n_test = len(context.get(cfg).subject().test_ids)
    if first_guesses.shape[0] != n_test or first_guesses.dtype != np.uint8 or \
            any(np.shape(conditions[p])[0] != n_test for p in ("text", "vision")):
        raise ValueError(f"first guesses (uint8) and conditions must have one row per test image ({n_test}); found "
                         f"{first_guesses.dtype} {first_guesses.shape}, text {np.shape(conditions['text'])}, "
                         f"vision {np.shape(conditions['vision'])}")
    idx = np.arange(n_test) if indices is None else np.asarray(indices, np.int64)
    text, vision = (np.asarray(conditions[p], np.float32) for p in ("text", "vision"))
    params = {"v": _VERSION, "dataset": cfg.dataset, "vd": stage2.model_sources(cfg)["vd"].fingerprint,
              "first_guesses": array_key(first_guesses), "conditions": array_key(text, vision),
              "indices": None if indices is None else params_key({"i": idx.tolist()}), "seed": cfg.seed, **run}

    def compute():
        return {"images": stage2.reconstruct(cfg, first_guesses, {"text": text, "vision": vision}, idx, run,
                                             progress=progress)}

    return context.get(cfg).store.arrays("stage2_from_betas", params, compute)["images"]


def decode_betas(cfg: RunConfig, train_betas: np.ndarray, test_betas: np.ndarray, *, indices=None,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Both stages from the betas given: ridge first guesses, CLIP predictions, stage 2.

    Returns
    -------
    dict
        ``first_guesses`` (n_test, s, s, 3) and ``images`` (n, S, S, 3) uint8 (``indices``
        only, when given); ``test_pred`` (stage 1's predicted latents); ``text`` and
        ``vision`` (the predicted CLIP embeddings).
    """
    s1 = stage1.first_guesses_from_betas(cfg, train_betas, test_betas)
    cond = clip_from_betas(cfg, train_betas, test_betas, progress=progress)
    images = stage2_from(cfg, s1["images"], cond, indices=indices, progress=progress)
    return {"first_guesses": s1["images"], "images": images, "test_pred": s1["test_pred"],
            "text": cond["text"], "vision": cond["vision"]}
