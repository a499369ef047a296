"""Stage 1 as cached steps: VDVAE latents of the stimuli, regressors, first guesses.

Chapters 03-05 call these; later stages call :func:`first_guesses` and :func:`test_latents`.

- :func:`vdvae_model` / :func:`vdvae_info`: which VDVAE a run uses (the run's context,
  :mod:`nsdlib.pipeline.context`, finds and loads it once). ``models="pretrained"``:
  the public ImageNet-64 checkpoint (``nsdlib fetch vdvae``). ``models="mini"``: the mini
  model zoo's small VDVAE trained on mini-NSD (:mod:`nsdlib.mini.zoo`) when it has been
  trained, otherwise a *randomly initialised* small VDVAE (seeded by the run's seed), whose
  latents and images carry no learned structure; :func:`vdvae_info` says which, in words
  the chapters print.
- :func:`latents`: posterior latents of the first ``n_layers`` decoder blocks for the
  training and test stimuli: posterior samples with the pretrained VDVAE (as Brain-Diffuser
  and the paper regress on), posterior means with the mini zoo's (:data:`LATENT_POSTERIOR`).
- :func:`fit_regressor`: one stage-1 regressor trained on the training betas, with a
  validation split carved from the training images (the same split for every regressor of
  a run); MSE/MAE on validation and test in the latents' own units (as the paper reports
  them) and in z-units (each latent dimension divided by its training standard deviation).
- :func:`first_guesses`: the test images decoded from predicted latents (the remaining
  blocks sampled from the prior at temperature 1, seeded), uint8.
- :func:`reconstructions`: the test images decoded from their *true* latents of the first
  N blocks (the ceiling of stage 1); N=0 gives pure prior samples, N=all the VDVAE's own
  reconstruction.
- :func:`first_guesses_from_betas`: stage 1 (ridge) from betas given explicitly (a voxel
  subset, the simulation's true amplitudes), decoded like :func:`first_guesses`.

``quick=True`` uses at most :data:`QUICK_TRAIN_IMAGES` training images and two epochs per
network. Every result is cached in the run's store under a key of everything that
shapes it (VDVAE identity, layers, regressor settings, data, seed).
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np

from ..config import RunConfig, resolve_device
from ..names import N_LAYERS
from ..regressors import ARCHITECTURES, make_regressor, regression_metrics, validation_split
from ..store import array_key, params_key
from ..vdvae import decode_latents, encode_latents, reconstruct_images
from . import context, data

__all__ = [
    "LATENT_POSTERIOR",
    "QUICK_TRAIN_IMAGES",
    "baseline_metrics",
    "check_permutation",
    "first_guesses",
    "first_guesses_from_betas",
    "fit_regressor",
    "latents",
    "posterior_noise_share",
    "reconstructions",
    "regressor_options",
    "test_latents",
    "vdvae_info",
    "vdvae_model",
]

_VERSION = 1
#: What stage 1 regresses on, by model set: the posterior *samples* of the pretrained VDVAE's
#: blocks, as Brain-Diffuser and the paper do, and the posterior *means* of the mini zoo's. The
#: small VDVAE of mini-NSD leaves most of its first 31 blocks' dimensions at their priors, so a
#: posterior sample there is mostly noise drawn for the occasion (chapter 03 measures the
#: share), which no regressor can predict from the brain and which would swamp the latent
#: errors of chapter 04; the means keep what the VDVAE read from the image.
LATENT_POSTERIOR = {"pretrained": "sample", "mini": "mean"}
#: Training images used by quick runs (the smoke-test variant).
QUICK_TRAIN_IMAGES = 256


# ------------------------------------------------------------------------------ the VDVAE
def vdvae_info(cfg: RunConfig) -> context.ModelSource:
    """Which VDVAE the run uses (the run context's source ``"vdvae"``).

    Returns
    -------
    ModelSource
        ``kind`` ("pretrained", "mini" or "random"; ``label``: "pretrained", "mini-trained"
        or "mini-random"), ``path`` (checkpoint or None), ``config``
        (:class:`~nsdlib.vdvae.VDVAEConfig`), ``fingerprint`` (its identity in cache keys) and
        ``description`` (a sentence for the chapters).

    Raises
    ------
    nsdlib.assets.MissingAssetError
        ``models="pretrained"`` and the checkpoint is not on this machine.
    """
    return context.get(cfg).source("vdvae")


def vdvae_model(cfg: RunConfig):
    """The run's VDVAE (see :func:`vdvae_info`), in eval mode on the run's device.

    Kept by the run's context for the process, so chapters and steps share one copy.
    """
    return context.get(cfg).model("vdvae")


# ------------------------------------------------------------------------------ latents
def _split_seed(seed: int, split: str) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0 if split == "train" else 1]).generate_state(1)[0])


def _n_train(cfg: RunConfig, n: int) -> int:
    return min(n, QUICK_TRAIN_IMAGES) if cfg.quick else n


def _subject(cfg: RunConfig):
    """The run's subject data, kept by the run's context (NSD's betas are 600 MB to read)."""
    return context.get(cfg).subject()


def _latent_params(cfg: RunConfig, n_layers: int) -> tuple[dict, object]:
    sd = _subject(cfg)
    info = vdvae_info(cfg)
    n_tr = _n_train(cfg, len(sd.train_ids))
    params = {"v": _VERSION, "vdvae": info.fingerprint, "n_layers": int(n_layers),
              "posterior": LATENT_POSTERIOR[cfg.models],
              "seed": cfg.seed, "train_ids": params_key({"ids": sd.train_ids[:n_tr].tolist()}),
              "test_ids": params_key({"ids": sd.test_ids.tolist()})}
    return params, sd


def _layers(cfg: RunConfig, n_layers) -> int:
    n = cfg.n_layers if n_layers is None else int(n_layers)
    if n not in N_LAYERS:
        raise ValueError(f"n_layers must be 15 or 31 (the paper's two choices); found {n_layers!r}")
    return n


def latents(cfg: RunConfig, n_layers: int | None = None) -> dict[str, np.ndarray]:
    """VDVAE posterior latents of the run's stimuli, first ``n_layers`` decoder blocks.

    Parameters
    ----------
    cfg : RunConfig
    n_layers : {15, 31}, optional
        Default ``cfg.n_layers``.

    Returns
    -------
    dict
        ``train`` (n_train, n_latents) and ``test`` (n_test, n_latents), float32, in the
        order of the subject's ``train_ids`` / ``test_ids`` (quick runs: the first
        :data:`QUICK_TRAIN_IMAGES` training images).
    """
    n = _layers(cfg, n_layers)
    params, sd = _latent_params(cfg, n)

    def compute():
        model = vdvae_model(cfg)
        size = model.config.image_size
        n_tr = _n_train(cfg, len(sd.train_ids))
        out = {}
        for split in ("train", "test"):
            imgs = data.stimuli(cfg, split, size)
            if split == "train":
                imgs = imgs[:n_tr]
            out[split] = encode_latents(model, imgs, n, posterior=LATENT_POSTERIOR[cfg.models],
                                        seed=_split_seed(cfg.seed, split))
        return out

    return context.get(cfg).store.arrays("stage1_latents", params, compute)


def reconstructions(cfg: RunConfig, n_blocks: int | str | None = None, *, temperature: float = 1.0) -> np.ndarray:
    """The test stimuli decoded from their own latents (as regressed on) of the first ``n_blocks`` blocks.

    The remaining blocks are sampled from the prior (``temperature``), with the same seeds
    as :func:`first_guesses`, so the two differ only by true versus predicted latents.

    Parameters
    ----------
    n_blocks : int or "all", optional
        Default ``cfg.n_layers``; 0 gives prior samples, "all" the full reconstruction.

    Returns
    -------
    ndarray of shape (n_test, S, S, 3), uint8 (S: the VDVAE's image size)
    """
    info = vdvae_info(cfg)
    total = info.config.n_dec_blocks
    n = cfg.n_layers if n_blocks is None else (total if n_blocks == "all" else int(n_blocks))
    if not 0 <= n <= total:
        raise ValueError(f"n_blocks must be from 0 to {total} or 'all'; found {n_blocks!r}")
    sd = _subject(cfg)
    posterior = LATENT_POSTERIOR[cfg.models]
    params = {"v": _VERSION, "vdvae": info.fingerprint, "n_blocks": n, "temperature": float(temperature),
              "posterior": posterior, "seed": cfg.seed, "test_ids": params_key({"ids": sd.test_ids.tolist()})}

    def compute():
        model = vdvae_model(cfg)
        imgs = data.stimuli(cfg, "test", model.config.image_size)
        seed = _split_seed(cfg.seed, "test")
        return {"images": reconstruct_images(model, imgs, n, posterior=posterior, temperature=temperature,
                                             seed=seed)}

    return context.get(cfg).store.arrays("stage1_reconstructions", params, compute)["images"]


# ------------------------------------------------------------------------------ regressors
def regressor_options(cfg: RunConfig, regressor: str) -> dict:
    """The settings a run trains ``regressor`` with (all of them enter the cache key).

    Ridge: alpha 50,000 on NSD (Brain-Diffuser's value for the VDVAE latents); on mini-NSD
    (fewer voxels and images) alpha is chosen by 5-fold cross-validation within the
    training split from 10^0 to 10^6. Both re-standardise the predictions the way
    Brain-Diffuser does before decoding (``normalize="test"``: each predicted set, the
    validation and the test images separately, by its own statistics). Stage 1 computes
    ridge predictions with :func:`nsdlib.ridge.ridge_predict`, which never forms the weights;
    :class:`nsdlib.regressors.RidgeRegressor` is the estimator form of the same model.

    Networks: AdamW, learning rate 1e-3, early stopping (patience 6 on NSD, 10 on
    mini-NSD), at most 50 epochs (mini-NSD: 100, batch 32), two epochs in quick runs.
    """
    if regressor == "ridge":
        if cfg.dataset == "nsd":
            return {"alpha": 50_000.0, "normalize": "test"}
        return {"alphas": [float(a) for a in np.logspace(0, 6, 13)], "cv": 5, "normalize": "test"}
    if regressor not in ARCHITECTURES:
        raise ValueError(f"regressor must be one of ridge, {', '.join(ARCHITECTURES)}; found {regressor!r}")
    if cfg.dataset == "nsd":
        opts = {"max_epochs": 50, "batch_size": 64, "lr": 1e-3, "patience": 6}
    else:
        opts = {"max_epochs": 100, "batch_size": 32, "lr": 1e-3, "patience": 10}
    if cfg.quick:
        opts["max_epochs"] = 2
    return opts


def _fit_params(cfg: RunConfig, regressor: str, n: int) -> tuple[dict, object]:
    lat_params, sd = _latent_params(cfg, n)
    n_tr = _n_train(cfg, len(sd.train_ids))
    params = {"v": _VERSION, "regressor": regressor, "options": regressor_options(cfg, regressor),
              "latents": params_key(lat_params), "betas": array_key(sd.train_betas[:n_tr]),
              "test_betas": array_key(sd.test_betas), "val_fraction": 0.1, "seed": cfg.seed}
    return params, sd


def _z_metrics(true, pred, mean, scale) -> dict:
    return regression_metrics((true - mean) / scale, (pred - mean) / scale)


def _fit_predict(cfg: RunConfig, reg_name: str, X: np.ndarray, Y: np.ndarray, test_betas: np.ndarray, *,
                 checkpoint_dir=None):
    """Fit one stage-1 regressor on ``(X, Y)`` with the run's validation split (10 %) and predict
    the validation and the test images. Ridge solves once for both sets and re-standardises each
    on its own (Brain-Diffuser's rule).

    Returns
    -------
    tuple
        ``(estimator, val_indices, (val_pred, test_pred), (raw_val, raw_test))``; the raw
        predictions are ridge's before re-standardisation (the networks': the same arrays).
    """
    _, val_idx = validation_split(len(X), 0.1, cfg.seed)
    opts = dict(regressor_options(cfg, reg_name), device=str(resolve_device(cfg.device)), seed=cfg.seed)
    est = make_regressor(reg_name, checkpoint_dir=checkpoint_dir, **opts).fit(X, Y, val_indices=val_idx)
    preds, raws = est.predict_sets([X[val_idx], test_betas], return_raw=True)
    return est, val_idx, preds, raws


def fit_regressor(cfg: RunConfig, regressor: str | None = None, n_layers: int | None = None) -> dict:
    """Train one stage-1 regressor (or reuse it) and report its errors.

    Parameters
    ----------
    cfg : RunConfig
    regressor : {"gru", "ridge", "cnn", "transformer"}, optional
        Default ``cfg.regressor``.
    n_layers : {15, 31}, optional
        Default ``cfg.n_layers``.

    Returns
    -------
    dict
        ``metrics``: ``val_mse``, ``val_mae``, ``test_mse``, ``test_mae`` (latent units),
        the same with ``_z`` (z-units), ``n_params``, ``best_epoch``, ``epochs``, ``alpha``,
        ``seconds``, ``n_train``, ``n_val``, ``n_test``, ``n_latents``; for ridge also the
        errors of its predictions before re-standardisation (``*_raw``).
        ``test_pred`` (n_test, n_latents) and ``val_pred`` (n_val, n_latents), float32;
        ``val_indices`` (rows of the training images); ``train_loss`` / ``val_loss`` per
        epoch (networks); ``key``: the cache key.
    """
    reg_name = regressor or cfg.regressor
    n = _layers(cfg, n_layers)
    params, sd = _fit_params(cfg, reg_name, n)
    store = context.get(cfg).store
    ckpt_dir = store.root / "stage1_checkpoints" / params_key(params)

    def compute():
        lat = latents(cfg, n)
        Y = lat["train"]
        X = sd.train_betas[: len(Y)]
        t0 = time.perf_counter()
        est, val_idx, (val_pred, test_pred), (raw_val, raw_test) = _fit_predict(cfg, reg_name, X, Y, sd.test_betas,
                                                                                 checkpoint_dir=ckpt_dir)
        tr_idx = np.setdiff1d(np.arange(len(X)), val_idx)
        mean, scale = Y[tr_idx].mean(0), Y[tr_idx].std(0)
        out = {"val_indices": val_idx}
        m = {}
        if reg_name == "ridge":  # its errors before re-standardisation, and the alpha it used
            for split, true, pred in (("val", Y[val_idx], raw_val), ("test", lat["test"], raw_test)):
                for k, v in regression_metrics(true, pred).items():
                    m[f"{split}_{k}_raw"] = v
            m.update(alpha=est.alpha_, n_params=est.n_params_, best_epoch=None, epochs=None)
        else:
            m.update(alpha=None, n_params=est.n_params_, best_epoch=est.best_epoch_, epochs=len(est.history_))
            out["train_loss"] = np.array([h["train_loss"] for h in est.history_], np.float64)
            out["val_loss"] = np.array([h["val_loss"] for h in est.history_], np.float64)
        seconds = time.perf_counter() - t0
        scale = np.where(scale > 1e-8, scale, 1.0)
        for split, true, pred in (("val", Y[val_idx], val_pred), ("test", lat["test"], test_pred)):
            for k, v in regression_metrics(true, pred).items():
                m[f"{split}_{k}"] = v
            for k, v in _z_metrics(true, pred, mean, scale).items():
                m[f"{split}_{k}_z"] = v
        out.update(val_pred=val_pred, test_pred=test_pred)
        m.update(seconds=seconds, n_train=int(len(tr_idx)), n_val=int(len(val_idx)), n_test=int(len(test_pred)),
                 n_latents=int(Y.shape[1]), n_voxels=int(X.shape[1]))
        out["metrics_json"] = np.array(json.dumps(m))
        return out

    res = store.arrays("stage1_fit", params, compute)
    if ckpt_dir.exists():  # the fit is stored; its training checkpoint is no longer needed
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out = {k: v for k, v in res.items() if k != "metrics_json"}
    out["metrics"] = json.loads(str(res["metrics_json"]))
    out["key"] = params_key(params)
    return out


def baseline_metrics(cfg: RunConfig, n_layers: int | None = None) -> dict:
    """Errors of predicting every image's latents as the training mean (no brain data at all).

    Same validation split and units as :func:`fit_regressor`.
    """
    n = _layers(cfg, n_layers)
    lat = latents(cfg, n)
    Y = lat["train"]
    _, val_idx = validation_split(len(Y), 0.1, cfg.seed)
    tr_idx = np.setdiff1d(np.arange(len(Y)), val_idx)
    mean, scale = Y[tr_idx].mean(0), Y[tr_idx].std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    m = {}
    for split, true in (("val", Y[val_idx]), ("test", lat["test"])):
        pred = np.broadcast_to(mean, true.shape)
        for k, v in regression_metrics(true, pred).items():
            m[f"{split}_{k}"] = v
        for k, v in _z_metrics(true, pred, mean, scale).items():
            m[f"{split}_{k}_z"] = v
    return m


def posterior_noise_share(cfg: RunConfig, n_layers: int | None = None) -> float:
    """Share of the test stimuli's posterior-sample variance that is sampling noise.

    For each latent dimension, the mean squared difference between a posterior sample and
    the posterior mean over its variance across the test stimuli; averaged over dimensions,
    as the z-unit errors of :func:`fit_regressor` average them. It is the z-unit error that a
    regressor predicting the posterior means perfectly would still make on samples: 0 for a
    VDVAE whose posteriors are sharp, near 1 for one whose blocks sit at their priors.
    """
    n = _layers(cfg, n_layers)

    def compute():
        model = vdvae_model(cfg)
        imgs = data.stimuli(cfg, "test", model.config.image_size)
        seed = _split_seed(cfg.seed, "test")
        sample = encode_latents(model, imgs, n, posterior="sample", seed=seed, progress=False)
        mean = encode_latents(model, imgs, n, posterior="mean", progress=False)
        share = ((sample - mean) ** 2).mean(0) / np.maximum(sample.var(0), 1e-12)
        return {"share": np.array([share.mean()])}

    params = {**_latent_params(cfg, n)[0], "posterior": "sample-vs-mean"}
    return float(context.get(cfg).store.arrays("stage1_posterior_noise", params, compute)["share"][0])


def test_latents(cfg: RunConfig) -> dict[str, np.ndarray]:
    """True and predicted test latents of the run's regressor and layers (for the latent MSE/MAE)."""
    return {"true": latents(cfg)["test"], "pred": fit_regressor(cfg)["test_pred"]}


test_latents.__test__ = False  # not a pytest test despite its name


def check_permutation(permutation, n: int) -> np.ndarray:
    """``permutation`` as int64 after checking that it permutes ``n`` test images."""
    perm = np.asarray(permutation)
    if perm.shape != (n,) or not np.issubdtype(perm.dtype, np.integer) or \
            not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"permutation must reorder the {n} test images (a permutation of 0 to {n - 1}); "
                         f"found {perm.dtype} of shape {perm.shape}")
    return perm.astype(np.int64)


def first_guesses(cfg: RunConfig, regressor: str | None = None, n_layers: int | None = None, *,
                  temperature: float = 1.0, permutation=None) -> np.ndarray:
    """Stage 1's output: the test images decoded from predicted latents.

    The first ``n_layers`` decoder blocks take the regressor's predicted latents; the rest
    are sampled from the prior at ``temperature`` (1: the prior itself), one seeded random
    stream per image (per position in the test set), so the result is deterministic.

    ``permutation`` (int array of shape (n_test,)): the test betas permuted across images,
    position ``i`` decoded from the betas of test image ``permutation[i]`` (the shuffled-betas
    control, :mod:`nsdlib.pipeline.controls`). Every regressor predicts row by row and ridge's
    re-standardisation uses statistics of the whole set, which a permutation leaves unchanged,
    so the fitted regressor's predictions are permuted instead of predicted again.

    Returns
    -------
    ndarray of shape (n_test, S, S, 3), uint8 (S = 64 for the pretrained VDVAE, 32 for mini)
    """
    reg_name = regressor or cfg.regressor
    n = _layers(cfg, n_layers)
    fit_params, _ = _fit_params(cfg, reg_name, n)
    params = {"v": _VERSION, "fit": params_key(fit_params), "vdvae": vdvae_info(cfg).fingerprint, "n_layers": n,
              "temperature": float(temperature), "seed": cfg.seed}
    perm = None if permutation is None else check_permutation(permutation, len(_subject(cfg).test_ids))
    if perm is not None:  # only then in the key: the unpermuted first guesses keep their cached key
        params["permutation"] = params_key({"p": perm.tolist()})

    def compute():
        pred = fit_regressor(cfg, reg_name, n)["test_pred"]
        pred = pred if perm is None else pred[perm]
        return {"images": _decode(cfg, pred, n, temperature)}

    return context.get(cfg).store.arrays("stage1_first_guesses", params, compute)["images"]


def _decode(cfg: RunConfig, pred: np.ndarray, n: int, temperature: float = 1.0) -> np.ndarray:
    """Test images decoded from predicted latents of the first ``n`` blocks (seeded as the test split)."""
    return decode_latents(vdvae_model(cfg), pred, n, temperature=temperature, seed=_split_seed(cfg.seed, "test"))


def first_guesses_from_betas(cfg: RunConfig, train_betas: np.ndarray, test_betas: np.ndarray,
                             n_layers: int | None = None) -> dict[str, np.ndarray]:
    """Stage 1 with ridge from betas given explicitly: a voxel subset, or other betas of the same images.

    The same model as ``fit_regressor(cfg, "ridge")`` (:func:`regressor_options`, the same
    validation split, Brain-Diffuser's re-standardisation of the test predictions) and the same
    decoding as :func:`first_guesses`, so the run's own betas give the run's ridge first guesses.
    Only ridge: the networks would be trained again for every set of betas.

    Parameters
    ----------
    train_betas : ndarray of shape (n_train, n_voxels)
        In the order of the subject's ``train_ids`` (quick runs use the first
        :data:`QUICK_TRAIN_IMAGES`).
    test_betas : ndarray of shape (n_test, n_voxels)
        In the order of its ``test_ids``.
    n_layers : {15, 31}, optional
        Default ``cfg.n_layers``.

    Returns
    -------
    dict
        ``test_pred`` (n_test, n_latents) float32, ``images`` uint8 (n_test, S, S, 3), ``alpha``
        (the ridge's, chosen by cross-validation on mini-NSD).
    """
    n = _layers(cfg, n_layers)
    lat_params, sd = _latent_params(cfg, n)
    train_betas, test_betas = np.asarray(train_betas, np.float32), np.asarray(test_betas, np.float32)
    if train_betas.ndim != 2 or test_betas.ndim != 2 or train_betas.shape[1] != test_betas.shape[1] \
            or len(train_betas) != len(sd.train_ids) or len(test_betas) != len(sd.test_ids):
        raise ValueError(f"betas must be ({len(sd.train_ids)}, v) and ({len(sd.test_ids)}, v), one row per training "
                         f"and test image of subject {cfg.subject}; found {train_betas.shape} and {test_betas.shape}")
    n_tr = _n_train(cfg, len(sd.train_ids))
    params = {"v": _VERSION, "regressor": "ridge", "options": regressor_options(cfg, "ridge"),
              "latents": params_key(lat_params), "betas": array_key(train_betas[:n_tr]),
              "test_betas": array_key(test_betas), "val_fraction": 0.1, "seed": cfg.seed,
              "vdvae": vdvae_info(cfg).fingerprint}

    def compute():
        Y = latents(cfg, n)["train"]
        est, _, (_, test_pred), _ = _fit_predict(cfg, "ridge", train_betas[: len(Y)], Y, test_betas)
        return {"test_pred": test_pred, "images": _decode(cfg, test_pred, n), "alpha": np.float64(est.alpha_)}

    return context.get(cfg).store.arrays("stage1_from_betas", params, compute)
