"""Stage 2 of the decoder, cached: CLIP embeddings, their ridge predictions, Versatile Diffusion.

- :func:`clip_embedder` / :func:`diffusion_model`: the run's CLIP and diffusion model, found
  and loaded once by the run's context (:mod:`nsdlib.pipeline.context`):
  ``models="pretrained"``: the ``clip`` and ``vd`` assets; ``models="mini"``: the mini
  model zoo's trained models (``clip/`` and ``diffusion/`` in the folder
  :func:`nsdlib.mini.zoo.locate` finds for the run's mini-NSD) when they exist, otherwise
  small randomly initialised stand-ins of the same classes, which :func:`model_sources`
  reports;
- :func:`clip_embeddings`: CLIP-text (77 x d) and CLIP-vision (257 x d) embeddings of a
  split's stimuli, computed once per stimulus set;
- :func:`clip_predictions`: ridge regressions from the betas to both embeddings
  (nsdlib.ridge), the test-set predictions and their embedding-level accuracy;
- :func:`stage2_images`: dual-guided image-to-image from the first guesses, cached per
  parameter set (a noised first guess is its own parameter set, labelled by ``noise``).
"""

from __future__ import annotations

import numpy as np

from .. import metrics, ridge
from ..config import RunConfig
from ..diffusion import NOISE_AT
from ..store import array_key, params_key
from . import context, data, stage1

__all__ = [
    "ALPHA_SETTINGS",
    "DIFFUSION_SETTINGS",
    "QUICK_DIFFUSION_SETTINGS",
    "clip_embedder",
    "clip_embeddings",
    "clip_predictions",
    "diffusion_model",
    "model_sources",
    "predict_embeddings",
    "reconstruct",
    "resolve_alphas",
    "ridge_params",
    "stage2_images",
]

_VERSION = 1

#: The paper's and Brain-Diffuser's regularisation of the CLIP regressions (text, vision).
ALPHA_SETTINGS = {"paper": (50_000.0, 50_000.0), "brain-diffuser": (100_000.0, 60_000.0)}
#: Grid searched when ``alpha="cv"`` (generalised cross-validation, one alpha per regression).
CV_ALPHAS = tuple(float(a) for a in np.logspace(1, 6, 11))

#: Versatile Diffusion as the paper (and Brain-Diffuser) run it; ``noise_at`` (where the first
#: guess's latent is noised, :func:`nsdlib.diffusion.noising_schedule`) is nsdlib's
#: ``"first-step"`` (t = 721 for 37 of 50 steps), ``"brain-diffuser"`` one DDIM step earlier (t = 741).
DIFFUSION_SETTINGS = dict(strength=0.75, num_steps=50, guidance_scale=7.5, text_weight=0.4)
DIFFUSION_SETTINGS["noise_at"] = "first-step"
#: ``quick=True``: the same, with a short schedule (6 of 8 steps).
QUICK_DIFFUSION_SETTINGS = dict(DIFFUSION_SETTINGS, num_steps=8)


# ------------------------------------------------------------------ models
def model_sources(cfg: RunConfig) -> dict[str, context.ModelSource]:
    """Where the run's CLIP and diffusion model come from, without loading them.

    Returns
    -------
    dict
        ``{"clip": ModelSource, "vd": ModelSource}`` (:class:`nsdlib.pipeline.context.ModelSource`:
        ``kind`` "pretrained", "mini" or "random", ``path`` or None, ``fingerprint``, part of
        every cache key, and ``description``, one line for the chapters).
    """
    ctx = context.get(cfg)
    return {"clip": ctx.source("clip"), "vd": ctx.source("vd")}


def clip_embedder(cfg: RunConfig):
    """The run's :class:`~nsdlib.clip.ClipEmbedder` (loaded once per process by the run's context)."""
    return context.get(cfg).model("clip")


def diffusion_model(cfg: RunConfig):
    """The run's :class:`~nsdlib.diffusion.DualGuidedDiffusion` (loaded once per process by the run's context)."""
    return context.get(cfg).model("vd")


# -------------------------------------------------------------- embeddings
def _subject(cfg: RunConfig):
    """The run's subject data, kept by the run's context (NSD's betas are 600 MB to read)."""
    return context.get(cfg).subject()


def clip_embeddings(cfg: RunConfig, split: str = "test", *, progress: bool = True) -> dict[str, np.ndarray]:
    """CLIP embeddings of one split's stimuli, in the order of its ids (cached).

    Parameters
    ----------
    split : {"train", "test"}

    Returns
    -------
    dict
        ``text``: float32 (n, 77, d), averaged over each image's captions; ``vision``:
        float32 (n, 257, d), from the stimuli at their stored size (425 px for NSD, 128 for
        mini-NSD; the image processor resizes them); ``ids``: int64 (n,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; found {split!r}")
    subj = _subject(cfg)
    ids = np.asarray(subj.train_ids if split == "train" else subj.test_ids, np.int64)
    params = {"v": _VERSION, "dataset": cfg.dataset, "split": split, "ids": params_key({"ids": ids.tolist()}),
              "clip": context.get(cfg).source("clip").fingerprint}

    def compute():
        emb = clip_embedder(cfg)
        caps = data.captions(cfg, split)
        images = data.stimuli(cfg, split)
        if len(caps) != len(ids) or len(images) != len(ids):
            raise ValueError(f"{split} split: {len(ids)} ids but {len(caps)} caption lists and {len(images)} images")
        return {"text": emb.text(caps, progress=progress), "vision": emb.vision(images, progress=progress),
                "ids": ids}

    return context.get(cfg).store.arrays("clip_embeddings", params, compute)


def ridge_params(alpha_name: str, normalize: bool) -> dict:
    """What a cache key must hold of the CLIP ridges' settings: the alpha rule (from
    :func:`resolve_alphas`), the grid ``"cv"`` chooses from (:data:`CV_ALPHAS`), and ``normalize``."""
    return {"alpha": alpha_name, "normalize": normalize, "cv_alphas": list(CV_ALPHAS) if alpha_name == "cv" else None}


def resolve_alphas(cfg: RunConfig, alpha="auto") -> tuple[str, object, object]:
    """Turn an alpha setting into (name, text alpha, vision alpha).

    ``"auto"`` is ``"paper"`` (50,000 for both) on NSD and ``"cv"`` on mini-NSD, whose
    scale (voxels, images) is unrelated to the paper's; ``"brain-diffuser"`` is 100,000 /
    60,000; ``"cv"`` chooses one alpha per regression from :data:`CV_ALPHAS` by generalised
    cross-validation; a number is used for both.
    """
    if alpha == "auto":
        alpha = "paper" if cfg.dataset == "nsd" else "cv"
    if alpha in ALPHA_SETTINGS:
        return (alpha, *ALPHA_SETTINGS[alpha])
    if alpha == "cv":
        return ("cv", "cv", "cv")
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0:
        return (f"{float(alpha):g}", float(alpha), float(alpha))
    raise ValueError(f"alpha must be 'auto', 'paper', 'brain-diffuser', 'cv' or a positive number; found {alpha!r}")




def clip_predictions(cfg: RunConfig, *, alpha="auto", normalize: str | None = "test",
                     progress: bool = True) -> dict[str, np.ndarray]:
    """Ridge predictions of the test images' CLIP embeddings from their betas (cached).

    Parameters
    ----------
    alpha : "auto", "paper", "brain-diffuser", "cv" or float
        See :func:`resolve_alphas`.
    normalize : {"test", "train", "loo", None}
        Post-hoc re-standardisation of each predicted dimension to the training targets'
        mean and std (see :func:`nsdlib.ridge.ridge_predict`): "test" is Brain-Diffuser's
        (transductive: it uses the statistics of the test predictions), "train" and "loo"
        use the training predictions.

    Returns
    -------
    dict
        ``text`` (n_test, 77, d) and ``vision`` (n_test, 257, d) float32 predictions;
        ``alpha_text``, ``alpha_vision``; ``text_token_r`` (77,) and ``vision_token_r``
        (257,): per-token correlation across test images
        (:func:`nsdlib.metrics.per_token_correlation`); ``text_identification``,
        ``vision_identification``: 2-way identification among the test images
        (:func:`nsdlib.metrics.two_way_identification`, in float64); ``ids``.
    """
    name, a_text, a_vision = resolve_alphas(cfg, alpha)
    subj = _subject(cfg)
    betas = array_key(subj.train_ids, subj.test_ids, subj.train_betas, subj.test_betas)
    params = {"v": _VERSION, "dataset": cfg.dataset, "betas": betas,
              "clip": context.get(cfg).source("clip").fingerprint, **ridge_params(name, normalize)}

    def compute():
        out = {"ids": np.asarray(subj.test_ids, np.int64),
               **predict_embeddings(cfg, subj.train_betas, subj.test_betas, (a_text, a_vision), normalize,
                                    progress=progress)}
        test = clip_embeddings(cfg, "test", progress=progress)
        for part in ("text", "vision"):
            out[f"{part}_token_r"] = metrics.per_token_correlation(out[part], test[part])
            true64, pred64 = np.asarray(test[part], np.float64), np.asarray(out[part], np.float64)
            out[f"{part}_identification"] = np.float64(metrics.two_way_identification(true64, pred64).mean())
        return out

    return context.get(cfg).store.arrays("clip_predictions", params, compute)


def predict_embeddings(cfg: RunConfig, train_betas: np.ndarray, test_betas: np.ndarray, alphas: tuple,
                       normalize: str | None, *, progress: bool = False) -> dict[str, np.ndarray]:
    """The two CLIP ridges (not cached): betas to the training stimuli's text and vision embeddings.

    What :func:`clip_predictions` computes from the subject's betas and
    :func:`nsdlib.pipeline.decode.clip_from_betas` from any betas of the same images.

    Parameters
    ----------
    train_betas : ndarray of shape (n_train, n_voxels)
    test_betas : ndarray of shape (n_test, n_voxels)
    alphas : (text alpha, vision alpha)
        From :func:`resolve_alphas`: a number, or ``"cv"`` (one alpha from :data:`CV_ALPHAS` by
        generalised cross-validation).
    normalize
        As :func:`clip_predictions`.

    Returns
    -------
    dict
        ``text`` (n_test, 77, d) and ``vision`` (n_test, 257, d) float32 predictions;
        ``alpha_text``, ``alpha_vision``: the alphas used.
    """
    train = clip_embeddings(cfg, "train", progress=progress)
    out = {}
    for part, a in zip(("text", "vision"), alphas):
        kw = dict(alphas=list(CV_ALPHAS), cv="gcv") if a == "cv" else dict(alpha=a)
        pred, used = ridge.ridge_predict(train_betas, train[part], test_betas, normalize=normalize,
                                         device=cfg.torch_device(), return_alpha=True, verbose=progress, **kw)
        out[part] = np.asarray(pred, np.float32)
        out[f"alpha_{part}"] = np.float64(used)
    return out


# ---------------------------------------------------------------- images


def stage2_images(cfg: RunConfig, first_guesses: np.ndarray | None = None, noise=None, *,
                  embeddings: str = "predicted", indices=None, alpha="auto", normalize: str | None = "test",
                  batch_size: int | None = None, progress: bool = True, permutation=None,
                  **settings) -> np.ndarray:
    """Stage-2 reconstructions of the test images (cached per parameter set).

    Parameters
    ----------
    first_guesses : uint8 ndarray of shape (n_test, h, w, 3), optional
        Default: ``nsdlib.pipeline.stage1.first_guesses(cfg)``. Pass an already noised
        version (with ``noise`` naming it) for the noise-sensitivity experiment.
    noise : str or number, optional
        Label of the noise applied to ``first_guesses`` (recorded in the cache key; the
        key also holds a hash of the images themselves).
    embeddings : {"predicted", "true"}
        Guide with the ridge predictions (the decoder) or with the test images' own CLIP
        embeddings (the ceiling of stage 2).
    indices : sequence of int, optional
        A subset of test images (positions in the test set); the noise seed of each image
        is ``cfg.seed + its position``, so a subset reproduces the full run's images.
    alpha, normalize
        Of the CLIP regressions (:func:`clip_predictions`).
    batch_size : int, optional
        Images per UNet call (default 8 on CUDA, 4 on the CPU).
    permutation : int array of shape (n_test,), optional
        The test betas permuted across images (the shuffled-betas control,
        :mod:`nsdlib.pipeline.controls`): position ``i`` is guided by the CLIP predictions
        from the betas of test image ``permutation[i]`` (the ridge predicts row by row and its
        re-standardisation is unchanged by a permutation) and keeps its own noise seed; pass
        the first guesses made from the same permutation
        (``stage1.first_guesses(cfg, permutation=...)``). Only with ``embeddings="predicted"``.
    **settings
        ``strength``, ``num_steps``, ``guidance_scale``, ``text_weight``, ``noise_at``
        (``"first-step"`` or ``"brain-diffuser"``); default :data:`DIFFUSION_SETTINGS`
        (``quick``: :data:`QUICK_DIFFUSION_SETTINGS`). Every setting is part of the cache key.

    Returns
    -------
    uint8 ndarray of shape (n, S, S, 3)
        ``n`` test images (all, or ``indices``) at the model's size ``S`` (512 for
        Versatile Diffusion, 64 for the small models).
    """
    unknown = set(settings) - set(DIFFUSION_SETTINGS)
    if unknown:
        raise TypeError(f"unknown stage-2 setting(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(DIFFUSION_SETTINGS)}")
    if embeddings not in ("predicted", "true"):
        raise ValueError(f"embeddings must be 'predicted' or 'true'; found {embeddings!r}")
    run = {**(QUICK_DIFFUSION_SETTINGS if cfg.quick else DIFFUSION_SETTINGS), **settings}
    if run["noise_at"] not in NOISE_AT:
        raise ValueError(f"noise_at must be one of {', '.join(map(repr, NOISE_AT))}; found {run['noise_at']!r}")
    if first_guesses is None:
        first_guesses = stage1.first_guesses(cfg)
    first_guesses = np.asarray(first_guesses)
    n_test = len(_subject(cfg).test_ids)
    if first_guesses.ndim != 4 or first_guesses.shape[0] != n_test or first_guesses.shape[-1] != 3 \
            or first_guesses.dtype != np.uint8:
        raise ValueError(f"first_guesses must be uint8 of shape ({n_test}, h, w, 3), one per test image; "
                         f"found {first_guesses.dtype} {first_guesses.shape}")
    idx = np.arange(n_test) if indices is None else np.asarray(indices, np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n_test)):
        raise ValueError(f"indices must be positions in the test set (0 to {n_test - 1}); found {indices!r}")
    perm = None if permutation is None else stage1.check_permutation(permutation, n_test)
    if perm is not None and embeddings != "predicted":
        raise ValueError("permutation permutes the betas, so it needs embeddings='predicted'; "
                         f"found embeddings={embeddings!r}")
    sources = model_sources(cfg)
    emb_key = ("true", sources["clip"].fingerprint) if embeddings == "true" else \
        ("predicted", sources["clip"].fingerprint, resolve_alphas(cfg, alpha)[0], normalize)
    params = {"v": _VERSION, "dataset": cfg.dataset, "vd": sources["vd"].fingerprint, "embeddings": list(emb_key),
              "first_guesses": array_key(first_guesses), "noise": None if noise is None else str(noise),
              "indices": None if indices is None else params_key({"i": idx.tolist()}), "seed": cfg.seed,
              **run}
    if perm is not None:  # only then in the key: the unpermuted images keep their cached key
        params["permutation"] = params_key({"p": perm.tolist()})

    def compute():
        if embeddings == "true":
            cond = clip_embeddings(cfg, "test", progress=progress)
        else:
            cond = clip_predictions(cfg, alpha=alpha, normalize=normalize, progress=progress)
        if perm is not None:
            cond = {part: cond[part][perm] for part in ("text", "vision")}
        return {"images": reconstruct(cfg, first_guesses, cond, idx, run, batch_size=batch_size, progress=progress)}

    return context.get(cfg).store.arrays("stage2_images", params, compute)["images"]


def reconstruct(cfg: RunConfig, first_guesses: np.ndarray, conditions: dict, indices: np.ndarray, settings: dict,
                *, batch_size: int | None = None, progress: bool = True) -> np.ndarray:
    """Versatile Diffusion over the test images ``indices`` (not cached).

    What :func:`stage2_images` and :func:`nsdlib.pipeline.decode.stage2_from` run: the run's
    diffusion model guided by ``conditions`` (``text`` and ``vision``, one row per test
    image) against the unconditional embeddings, each image seeded by ``cfg.seed`` and its
    position, ``settings`` as :data:`DIFFUSION_SETTINGS`; ``batch_size`` default 8 on CUDA,
    4 on the CPU.

    Returns
    -------
    uint8 ndarray of shape (len(indices), S, S, 3)
    """
    emb, vd = clip_embedder(cfg), diffusion_model(cfg)
    u_text, u_vision = emb.unconditional()
    bs = batch_size or (8 if vd.device.type == "cuda" else 4)
    return vd.reconstruct(first_guesses[indices], conditions["text"][indices], conditions["vision"][indices],
                          u_text, u_vision, seed=cfg.seed, indices=indices, batch_size=bs, progress=progress,
                          **settings)
