"""The paper's eight image metrics and the latent errors, batched.

Low-level metrics compare each reconstruction with its stimulus at the stimulus size
(425 x 425 for NSD, 128 x 128 for mini-NSD; ``size`` changes it), after resizing the
reconstruction with Pillow's bicubic filter as Brain-Diffuser does:

- ``pixcorr``: Pearson r over all RGB values of the two images.
- ``ssim``: structural similarity of the grayscale images (scikit-image's ``rgb2gray``
  weights) with Gaussian weights (sigma 1.5, 11 taps), population covariance and data range 1,
  equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``. ``ssim_mode="2d"`` (default) is that true
  2-D SSIM. ``ssim_mode="columns"`` is Brain-Diffuser's and MindEye's published call, which
  passes a grayscale image with ``multichannel=True``, so that scikit-image treats its
  columns as channels and returns the mean of the 1-D SSIMs of the columns (each column a
  1-D signal, filtered vertically only). Tables must say which mode they use; the paper's
  numbers come from the column mode.

High-level metrics extract features from both image sets, resized to 224 x 224 (bilinear
with antialiasing, like torchvision's resize of a PIL image in Brain-Diffuser's code; also
for InceptionV3, whose ImageNet weights expect 299 but which Brain-Diffuser fed 224) and
normalised with ImageNet statistics (CLIP: its own):

- ``alexnet2`` / ``alexnet5``: AlexNet ``features[4]`` / ``features[11]``;
  ``inceptionv3``: InceptionV3 ``avgpool``; ``clip``: CLIP ViT-L/14 image embedding
  (the projected class token). Each gives a 2-way identification score
  (:func:`two_way_identification`), a fraction in 0-1 (the paper prints 0.935, not 93.5 %).
- ``efficientnet``: EfficientNet-B1 ``avgpool``; ``swav``: SwAV ResNet-50 ``avgpool``.
  Each gives the mean correlation distance ``1 - r`` (:func:`correlation_distance`).

Features come from ``torchvision.models.feature_extraction.create_feature_extractor`` in
batches. Weights are read from the local cache only (:mod:`nsdlib.assets`:
"torchvision-metrics" and "swav"; ``nsdlib fetch metrics`` downloads them). With
``models="mini"`` a metric whose real weights are absent is reported as not available
(NaN, with the reason), never computed with random weights under a real network's name,
and the CLIP metric uses whatever image-feature callable the caller passes (the small
CLIP trained on mini-NSD), labelled as such.

PixCorr and SSIM run in float64, with scipy's filters (scikit-image's own) on the CPU and
with torch on a GPU. Memory stays bounded for NSD's 982 test images at 425 x 425: images
are converted to floating point one batch at a time, and identification keeps only the ground truth's
standardised features (``n_images x n_features`` float32, 550 MB for AlexNet(2) at 982
images) while the reconstructions' features stream through in batches.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .images import check_images, resize, to_tensor
from .names import DISTANCE_METRICS, IDENTIFICATION_METRICS, IMAGE_METRICS, METRIC_LABELS, SSIM_MODES

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureNetwork",
    "ImageEvaluator",
    "MetricReport",
    "alexnet_network",
    "clip_network",
    "columnwise_r",
    "correlation_distance",
    "efficientnet_network",
    "evaluate_images",
    "feature_networks",
    "inception_network",
    "latent_errors",
    "load_swav_state_dict",
    "per_token_correlation",
    "pixcorr",
    "ssim",
    "swav_network",
    "to_gray",
    "two_way_identification",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FEATURE_SIZE = 224

_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
_SSIM_SIGMA, _SSIM_TRUNCATE, _K1, _K2 = 1.5, 3.5, 0.01, 0.03

# torchvision weight files (IMAGENET1K_V1) inside torch's hub cache, as nsdlib.assets fetches them
_TV_FILES = {
    "alexnet": "alexnet.AlexNet_Weights.IMAGENET1K_V1",
    "inceptionv3": "inception.Inception_V3_Weights.IMAGENET1K_V1",
    "efficientnet": "efficientnet.EfficientNet_B1_Weights.IMAGENET1K_V1",
}


# ---------------------------------------------------------------------------- inputs
def _check_pair(gt, rec):
    check_images(gt, "ground truth")
    check_images(rec, "reconstructions")
    if len(gt) != len(rec):
        raise ValueError(f"one reconstruction per ground-truth image is needed: found {len(gt)} ground-truth "
                         f"images and {len(rec)} reconstructions")
    if len(gt) < 1:
        raise ValueError("no images to evaluate")


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; found {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def to_gray(images) -> np.ndarray:
    """Grayscale in 0-1 with scikit-image's ``rgb2gray`` weights.

    Parameters
    ----------
    images : ndarray of uint8, shape (..., 3)

    Returns
    -------
    ndarray of float64, shape (...)
    """
    return (np.asarray(images, dtype=np.float64) / 255.0) @ _GRAY


# ------------------------------------------------------------------- low level
def _gaussian_taps() -> np.ndarray:
    radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)  # as scipy.ndimage / skimage
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return w / w.sum()


def _filter_valid(z, axes):
    """Gaussian-filter ``z`` (B, H, W) along ``axes`` and keep the part skimage keeps.

    skimage filters the whole image (reflect padding) and then discards a border of the
    filter's radius; the pixels kept depend only on pixels inside the image. On numpy
    arrays this runs scipy's ``correlate1d`` (skimage's own filter) and crops; on torch
    tensors (GPU) a weighted sum of shifted slices computes only the kept part.
    """
    taps = _gaussian_taps()
    pad = len(taps) // 2
    if isinstance(z, np.ndarray):
        from scipy.ndimage import correlate1d

        for ax in axes:
            z = correlate1d(z, taps, axis=ax, mode="reflect")
        index = [slice(None)] * z.ndim
        for ax in axes:
            index[ax] = slice(pad, z.shape[ax] - pad)
        return z[tuple(index)]
    for ax in axes:
        n = z.shape[ax] - 2 * pad
        out = z.narrow(ax, 0, n) * float(taps[0])
        for k in range(1, len(taps)):
            out.add_(z.narrow(ax, k, n), alpha=float(taps[k]))
        z = out
    return z


def _ssim_batch(x, y, mode: str):
    """Mean SSIM per image of grayscale float64 batches (B, H, W) in 0-1 (numpy or torch)."""
    axes = (1, 2) if mode == "2d" else (1,)
    need = len(_gaussian_taps())
    for ax in axes:
        if x.shape[ax] < need:
            raise ValueError(f"SSIM needs images of at least {need} pixels along each filtered axis; "
                             f"found shape {tuple(x.shape[1:])}")
    ux, uy = _filter_valid(x, axes), _filter_valid(y, axes)
    vx = _filter_valid(x * x, axes) - ux * ux
    vy = _filter_valid(y * y, axes) - uy * uy
    vxy = _filter_valid(x * y, axes) - ux * uy
    c1, c2 = _K1**2, _K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(s.shape[0], -1).mean(1)


def _pixcorr_batch(a, b):
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(1, keepdims=True) if isinstance(a, np.ndarray) else a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdims=True) if isinstance(b, np.ndarray) else b - b.mean(1, keepdim=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)) ** 0.5


def _low_level(gt, rec, *, size, pixcorr: bool = False, ssim_modes: Sequence[str] = (), batch_size: int = 16,
               device=None, progress: bool = False) -> dict[str, np.ndarray]:
    """PixCorr and SSIM (any modes) in one pass over the image pairs.

    Runs in numpy/scipy on the CPU (``device`` None or CPU) and in torch on a GPU, both
    in float64. Returns ``{"pixcorr": ..., "ssim:2d": ..., "ssim:columns": ...}``
    (those asked for), each of shape (n_images,).
    """
    for mode in ssim_modes:
        if mode not in SSIM_MODES:
            raise ValueError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}; found {mode!r}")
    _check_pair(gt, rec)
    size = int(size or gt.shape[1])
    keys = (["pixcorr"] if pixcorr else []) + [f"ssim:{m}" for m in ssim_modes]
    out = {k: np.empty(len(gt)) for k in keys}
    use_torch = device is not None and str(device) != "cpu"
    if use_torch:
        import torch

        dev = torch.device(device)
    n_batches = math.ceil(len(gt) / batch_size)
    for sl in _progress(_batches(len(gt), batch_size), n_batches, "pixel metrics", progress):
        g = resize(np.asarray(gt[sl]), size, filter="pil-bicubic")
        r = resize(np.asarray(rec[sl]), size, filter="pil-bicubic")
        if use_torch:
            g = torch.from_numpy(g).to(dev, torch.float64) / 255.0
            r = torch.from_numpy(r).to(dev, torch.float64) / 255.0
            gray = torch.tensor(_GRAY, dtype=torch.float64, device=dev)
        else:
            g = g.astype(np.float64) / 255.0
            r = r.astype(np.float64) / 255.0
            gray = _GRAY
        if pixcorr:
            out["pixcorr"][sl] = _as_numpy(_pixcorr_batch(g, r))
        if ssim_modes:
            gg, rg = g @ gray, r @ gray
            for mode in ssim_modes:
                out[f"ssim:{mode}"][sl] = _as_numpy(_ssim_batch(gg, rg, mode))
    return out


def _as_numpy(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


def pixcorr(ground_truth, reconstructions, *, size: int | None = None, batch_size: int = 16,
            device=None, progress: bool = False) -> np.ndarray:
    """Pixel correlation: Pearson r over all RGB values, one value per image pair.

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
        Any array that slices like numpy (an ``h5py`` dataset, a memmap) works; only one
        batch is converted to floating point at a time.
    size : int, optional
        Comparison size; default the ground truth's height. Images of another size are
        resized with Pillow's bicubic filter.
    batch_size : int
    device : torch device, optional

    Returns
    -------
    ndarray of float64, shape (n_images,)
        NaN for an image pair where one image is constant.
    """
    return _low_level(ground_truth, reconstructions, size=size, pixcorr=True, batch_size=batch_size,
                      device=device, progress=progress)["pixcorr"]


def ssim(ground_truth, reconstructions, *, mode: str = "2d", size: int | None = None, batch_size: int = 16,
         device=None, progress: bool = False) -> np.ndarray:
    """Grayscale SSIM per image pair (Gaussian weights, sigma 1.5, data range 1).

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
    mode : {"2d", "columns"}
        ``"2d"``: the true 2-D SSIM. ``"columns"``: Brain-Diffuser's compatibility mode,
        the mean over image columns of 1-D SSIMs along the rows (what scikit-image
        computes for a grayscale image passed with ``channel_axis=-1``).
    size : int, optional
        Comparison size; default the ground truth's height.

    Returns
    -------
    ndarray of float64, shape (n_images,)
    """
    return _low_level(ground_truth, reconstructions, size=size, ssim_modes=(mode,), batch_size=batch_size,
                      device=device, progress=progress)[f"ssim:{mode}"]


# ------------------------------------------------------------------ features
def _standardize(features, block: int = 64) -> np.ndarray:
    """Rows centred and scaled to unit norm (float32), so that a dot product is Pearson r.

    Computed in float64 a block of rows at a time, so the float64 copy never holds more
    than ``block`` rows.
    """
    features = np.asarray(features)
    features = features.reshape(len(features), -1)
    out = np.empty(features.shape, dtype=np.float32)
    for start in range(0, len(features), block):
        f = features[start:start + block].astype(np.float64)
        f -= f.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            f /= np.linalg.norm(f, axis=1, keepdims=True)
        out[start:start + block] = f
    return out


def _check_features(gt, rec):
    gt = np.asarray(gt)
    rec = np.asarray(rec)
    if gt.ndim < 2 or rec.ndim < 2 or gt.shape != rec.shape:
        raise ValueError("features must be arrays of shape (n_images, n_features), the same for ground truth and "
                         f"reconstructions; found {gt.shape} and {rec.shape}")
    return gt.reshape(len(gt), -1), rec.reshape(len(rec), -1)


def _identification_counts(g_std, r_std_block, cols) -> np.ndarray:
    """For reconstructions ``cols`` (rows of ``r_std_block``), how many ground truths beat by the true one."""
    r = g_std @ r_std_block.T  # (n_gt, b): r[i, j] = corr(gt_i, rec_j)
    true = r[cols, np.arange(len(cols))]
    return (r < true[None, :]).sum(0)


def two_way_identification(gt_features, rec_features) -> np.ndarray:
    """2-way identification score of each reconstruction.

    For reconstruction ``j``, the share of the other ``n - 1`` ground-truth images whose
    feature correlation with it is *lower* than that of its own ground truth. Ties count
    as failures (strict ``<``), as in Brain-Diffuser's evaluation; so does a constant
    feature vector (its correlation is undefined). The metric is the mean. The same rule
    scores predicted CLIP embeddings against the true ones (chapter 06: pass the true
    embeddings as ``gt_features`` and the predictions as ``rec_features``, in float64).

    Parameters
    ----------
    gt_features, rec_features : ndarray, shape (n_images, ...)
        Features of the ground truths and of the reconstructions, in the same order;
        trailing dimensions are flattened. Float64 input is compared in float64.

    Returns
    -------
    ndarray of float64, shape (n_images,)
        Values in 0-1; 0.5 is chance.
    """
    gt, rec = _check_features(gt_features, rec_features)
    n = len(gt)
    if n < 2:
        raise ValueError(f"2-way identification needs at least 2 images; found {n}")
    std = _standardize64 if np.float64 in (gt.dtype, rec.dtype) else _standardize
    g, r = std(gt), std(rec)
    return _identification_counts(g, r, np.arange(n)) / (n - 1)


def _standardize64(features) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    f = f - f.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return f / np.linalg.norm(f, axis=1, keepdims=True)


def correlation_distance(gt_features, rec_features) -> np.ndarray:
    """Correlation distance ``1 - r`` between each reconstruction and its ground truth.

    Equal to ``scipy.spatial.distance.correlation`` per pair.

    Parameters
    ----------
    gt_features, rec_features : ndarray, shape (n_images, ...)

    Returns
    -------
    ndarray of float64, shape (n_images,)
        Values in 0-2; 0 for identical features.
    """
    gt, rec = _check_features(gt_features, rec_features)
    return 1.0 - np.sum(_standardize64(gt) * _standardize64(rec), axis=1)


def columnwise_r(a, b, *, tol: float = 0.0) -> np.ndarray:
    """Pearson r of each column of ``a`` with the same column of ``b``, across the first axis.

    The one column-wise correlation of nsdlib: betas against the true amplitudes per voxel
    (across trials), predicted against true embeddings per token and dimension (across
    images).

    Parameters
    ----------
    a, b : ndarray of shape (n, ...)
        The same shape; every index after the first is a column. Computed in float64.
    tol : float
        A column whose ``sqrt(sum(a_c**2) * sum(b_c**2))`` (centred) is at most
        ``tol * max(1, largest such value over the columns)`` is constant (up to rounding)
        and gets NaN. 0: only exactly constant columns.

    Returns
    -------
    ndarray of float64, shape ``a.shape[1:]``
        r in -1..1; NaN for a column constant in either array.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"column-wise r needs two arrays of the same shape (n, ...); found {a.shape} and {b.shape}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    ok = den > tol * max(1.0, float(den.max(initial=0.0)))
    return np.where(ok, (a * b).sum(0) / np.where(ok, den, 1.0), np.nan)


def per_token_correlation(pred, true) -> np.ndarray:
    """How well each token of an embedding is predicted, across images (chapter 06).

    For every token and every embedding dimension, the Pearson correlation across images
    between predicted and true values (:func:`columnwise_r`), averaged over the dimensions.
    Predicting the same embedding for every image scores 0; dimensions constant across
    images (in either array, up to a relative 1e-12) are left out of the average.

    Parameters
    ----------
    pred, true : ndarray of shape (n_images, n_tokens, d) or (n_images, d)

    Returns
    -------
    ndarray of float64, shape (n_tokens,) (or (1,) for 2-D input)
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError(f"predicted and true embeddings must have the same shape (n_images, ...); "
                         f"found {pred.shape} and {true.shape}")
    if len(pred) < 2:
        raise ValueError(f"at least 2 images are needed; found {len(pred)}")
    if pred.ndim == 2:
        pred, true = pred[:, None], true[:, None]
    r = columnwise_r(pred, true, tol=1e-12)
    ok = ~np.isnan(r)
    n_ok = ok.sum(-1)
    return np.where(n_ok > 0, np.where(ok, r, 0.0).sum(-1) / np.maximum(n_ok, 1), 0.0)


def latent_errors(true, predicted) -> dict[str, float]:
    """Mean squared and mean absolute error of predicted latents (Tables 2 and 3).

    Parameters
    ----------
    true, predicted : ndarray of shape (n_images, n_latents)

    Returns
    -------
    dict with ``"mse"`` and ``"mae"`` (means over all values)
    """
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted latents must have the same shape; found {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("no latents to compare")
    d = p - t
    return {"mse": float(np.mean(d * d)), "mae": float(np.mean(np.abs(d)))}


# ------------------------------------------------------------------ networks
@dataclasses.dataclass
class FeatureNetwork:
    """A network turning uint8 images into one feature vector per image, for one or more metrics.

    Build one with :func:`alexnet_network`, :func:`inception_network`,
    :func:`efficientnet_network`, :func:`swav_network` or :func:`clip_network`.

    Parameters
    ----------
    name : str
        Short name ("alexnet", "inceptionv3", ...).
    extract : callable
        ``extract(images)`` with uint8 images of shape (b, h, w, 3) returns a dict mapping
        each metric in ``metrics`` to an array of shape (b, n_features).
    metrics : tuple of str
        The metrics this network serves (``("alexnet2", "alexnet5")`` for AlexNet).
    description : str
        What it is, printed beside the numbers (layer, weights).
    trained : bool
        False for a network left with random weights (tests and benchmarks of the
        mechanics). A report flags its metrics ``"random-weights"`` and never averages
        them into a metric. Trained weights that are not the published ones (the small
        CLIP of mini-NSD) count as trained; ``description`` says which they are.
    """

    name: str
    extract: Callable[[np.ndarray], dict]
    metrics: tuple[str, ...]
    description: str
    trained: bool = True

    def features(self, images) -> dict[str, np.ndarray]:
        out = self.extract(np.asarray(images))
        return {m: np.asarray(out[m], dtype=np.float32).reshape(len(images), -1) for m in self.metrics}


def _to_input(images, size, mean, std, device):
    import torch

    x = resize(to_tensor(images, device=device), size, filter="torch-bilinear")
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def _torch_network(name, model, nodes: dict[str, str], description, trained, device,
                   size=FEATURE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> FeatureNetwork:
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = model.eval()
    with warnings.catch_warnings():  # train- and eval-mode graphs differ (Inception's aux head); eval is used
        warnings.filterwarnings("ignore", message=".*obtained by tracing the model in eval mode.*")
        extractor = create_feature_extractor(model, return_nodes=dict(nodes)).to(dev).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)

    def extract(images):
        with torch.inference_mode():
            out = extractor(_to_input(images, size, mean, std, dev))
        return {metric: t.flatten(1).float().cpu().numpy() for metric, t in out.items()}

    return FeatureNetwork(name, extract, tuple(nodes.values()), description, trained)


def _tv_state_dict(key: str):
    """A torchvision ImageNet state dict from the local cache (never downloaded here)."""
    import importlib
    from pathlib import Path

    import torch

    from . import assets

    cache = assets.require("torchvision-metrics")
    module, enum, member = _TV_FILES[key].split(".")
    weights = getattr(getattr(importlib.import_module(f"torchvision.models.{module}"), enum), member)
    path = Path(cache) / Path(weights.url).name
    return torch.load(path, map_location="cpu", weights_only=True)


def _weights_label(pretrained: bool) -> str:
    return "ImageNet weights" if pretrained else "RANDOM weights (mechanics only, not the metric)"


def alexnet_network(*, pretrained: bool = True, device=None) -> FeatureNetwork:
    """AlexNet ``features[4]`` (AlexNet(2)) and ``features[11]`` (AlexNet(5)).

    ``pretrained=True`` loads torchvision's IMAGENET1K_V1 weights from the local cache
    (:class:`~nsdlib.assets.MissingAssetError` when absent); ``False`` keeps random
    weights, for tests of the mechanics only.
    """
    from torchvision.models import alexnet

    model = alexnet(weights=None)
    if pretrained:
        model.load_state_dict(_tv_state_dict("alexnet"))
    return _torch_network("alexnet", model, {"features.4": "alexnet2", "features.11": "alexnet5"},
                          f"AlexNet features[4] / features[11], {_weights_label(pretrained)}", pretrained, device)


def inception_network(*, pretrained: bool = True, device=None) -> FeatureNetwork:
    """InceptionV3 ``avgpool`` (2048 features), fed 224 x 224 images as Brain-Diffuser did."""
    from torchvision.models import inception_v3

    # the ImageNet weights were trained with transform_input=True (torchvision sets it when loading them)
    model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    if pretrained:
        model.load_state_dict(_tv_state_dict("inceptionv3"))
    return _torch_network("inceptionv3", model, {"avgpool": "inceptionv3"},
                          f"InceptionV3 avgpool, {_weights_label(pretrained)}", pretrained, device)


def efficientnet_network(*, pretrained: bool = True, device=None) -> FeatureNetwork:
    """EfficientNet-B1 ``avgpool`` (1280 features)."""
    from torchvision.models import efficientnet_b1

    model = efficientnet_b1(weights=None)
    if pretrained:
        model.load_state_dict(_tv_state_dict("efficientnet"))
    return _torch_network("efficientnet", model, {"avgpool": "efficientnet"},
                          f"EfficientNet-B1 avgpool, {_weights_label(pretrained)}", pretrained, device)


def load_swav_state_dict(path) -> dict:
    """SwAV's ResNet-50 checkpoint as a torchvision ``resnet50`` state dict.

    Reads the file with ``torch.load(weights_only=True)``, unwraps a ``"state_dict"``
    entry if present, strips the ``module.`` prefix of data-parallel training and drops
    SwAV's ``projection_head`` and ``prototypes``. The result holds every ``resnet50``
    tensor except the classifier ``fc`` (SwAV has none; the metric reads ``avgpool``).
    A checkpoint with other names or shapes raises ``ValueError`` naming them.
    """
    import torch
    from torchvision.models import resnet50

    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    state = {}
    for k, v in raw.items():
        k = k.removeprefix("module.")
        if k.startswith(("projection_head.", "prototypes.")):
            continue
        state[k] = v
    want = {k: v.shape for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(state[k].shape) != tuple(want[k]))
    if missing or unexpected or bad:
        raise ValueError(
            f"{path} is not a SwAV ResNet-50 checkpoint: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, wrong shapes {bad[:5]}")
    return state


def swav_network(path=None, *, device=None) -> FeatureNetwork:
    """SwAV ResNet-50 ``avgpool`` (2048 features).

    Parameters
    ----------
    path : path, optional
        The checkpoint (``swav_800ep_pretrain.pth.tar``); default
        ``nsdlib.assets.require("swav")``. ``False`` keeps random weights (mechanics only).
    """
    import torch
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    trained = path is not False
    if trained:
        from . import assets

        state = load_swav_state_dict(assets.require("swav") if path is None else path)
        result = model.load_state_dict(state, strict=False)
        if sorted(result.missing_keys) != ["fc.bias", "fc.weight"] or result.unexpected_keys:
            raise ValueError(f"SwAV checkpoint did not fill resnet50: {result}")
        model.fc = torch.nn.Identity()
    desc = "SwAV ResNet-50 avgpool, " + ("800-epoch SwAV weights" if trained else _weights_label(False))
    return _torch_network("swav", model, {"avgpool": "swav"}, desc, trained, device)


def clip_network(model, *, description: str, trained: bool = True, device=None, mean=CLIP_MEAN, std=CLIP_STD,
                 size: int | None = None) -> FeatureNetwork:
    """The CLIP identification metric from a CLIP vision model or any image-feature callable.

    Parameters
    ----------
    model : transformers ``CLIPModel`` or ``CLIPVisionModelWithProjection``, a folder, or callable
        A transformers model (or a ``CLIPModel`` folder saved with ``save_pretrained``)
        gives the projected class-token embedding (768 values for ViT-L/14),
        the output of OpenAI CLIP's ``model.visual``, from images resized to the model's
        ``image_size`` and normalised with ``mean``/``std``. A callable taking uint8
        images (b, h, w, 3) and returning (b, n_features) is used as it is (for example
        the small CLIP of mini-NSD from ``nsdlib.clip``).
    description : str
        Which CLIP this is; tables print it ("small CLIP trained on mini-NSD, not ViT-L/14").
    trained : bool
        False only for a randomly initialised model (tests of the mechanics).
    """
    import torch

    if callable(model) and not isinstance(model, torch.nn.Module):
        fn = model

        def extract(images):
            out = fn(images)
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            return {"clip": np.asarray(out)}

        return FeatureNetwork("clip", extract, ("clip",), description, trained)

    if not isinstance(model, torch.nn.Module):
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(str(model), local_files_only=True)
        model.text_model = None  # only the vision tower is needed
    for attr in ("vision_model", "visual_projection"):
        if not hasattr(model, attr):
            raise TypeError(f"a CLIP model needs a {attr!r} (CLIPModel or CLIPVisionModelWithProjection); "
                            f"found {type(model).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = model.float().to(dev).eval()
    cfg = getattr(model.config, "vision_config", model.config)
    size = int(size or cfg.image_size)

    def extract(images):
        with torch.inference_mode():
            pooled = model.vision_model(pixel_values=_to_input(images, size, mean, std, dev)).pooler_output
            return {"clip": model.visual_projection(pooled).float().cpu().numpy()}

    return FeatureNetwork("clip", extract, ("clip",), description, trained)


def feature_networks(models: str = "pretrained", *, clip=None, clip_description: str | None = None,
                     metrics: Sequence[str] = IMAGE_METRICS, device=None):
    """The networks of the high-level metrics for a model set, and the metrics left out.

    Parameters
    ----------
    models : {"pretrained", "mini"}
        ``"pretrained"``: every network with its published weights; a missing asset
        raises :class:`~nsdlib.assets.MissingAssetError` (fetch with
        ``nsdlib fetch metrics`` and ``nsdlib fetch clip``). ``"mini"``: the torchvision
        and SwAV networks when their real weights happen to be cached, otherwise the
        metric is reported unavailable; CLIP from ``clip`` only.
    clip : model, path, callable or FeatureNetwork, optional
        What :func:`clip_network` should use (a FeatureNetwork is used as it is). Default: CLIP ViT-L/14 from the "clip"
        asset for ``"pretrained"``; nothing (CLIP unavailable) for ``"mini"``.
    clip_description : str, optional
        Label of ``clip`` (default says whether it is ViT-L/14 or the small CLIP).
    metrics : sequence of str
        The metrics wanted; networks for the others are not loaded.

    Returns
    -------
    networks : list of FeatureNetwork
    unavailable : dict
        Metric -> the reason it cannot be computed here.
    """
    from . import assets

    if models not in ("pretrained", "mini"):
        raise ValueError(f"models must be 'pretrained' or 'mini'; found {models!r}")
    wanted = set(metrics) & (set(IDENTIFICATION_METRICS) | set(DISTANCE_METRICS))
    networks, unavailable = [], {}
    builders = [("alexnet", ("alexnet2", "alexnet5"), "torchvision-metrics", alexnet_network),
                ("inceptionv3", ("inceptionv3",), "torchvision-metrics", inception_network),
                ("efficientnet", ("efficientnet",), "torchvision-metrics", efficientnet_network),
                ("swav", ("swav",), "swav", lambda device: swav_network(device=device))]
    for _name, served, asset, build in builders:
        if not wanted & set(served):
            continue
        if models == "mini" and not assets.available(asset):
            for m in served:
                if m in wanted:
                    unavailable[m] = (f"not available: the real {METRIC_LABELS[m]} weights (asset {asset!r}) are not "
                                      "on this machine; `nsdlib fetch metrics` brings them")
            continue
        networks.append(build(device=device))  # "pretrained": MissingAssetError when absent
    if "clip" in wanted:
        if clip is None and models == "pretrained":
            networks.append(clip_network(assets.require("clip"), description="CLIP ViT-L/14 image embedding",
                                         device=device))
        elif clip is None:
            unavailable["clip"] = "not available: no small CLIP was given for models='mini'"
        elif isinstance(clip, FeatureNetwork):
            networks.append(clip)
        else:
            desc = clip_description or ("CLIP ViT-L/14 image embedding" if models == "pretrained"
                                        else "small CLIP trained on mini-NSD (not ViT-L/14)")
            networks.append(clip_network(clip, description=desc, device=device))
    return networks, unavailable


# -------------------------------------------------------------------- report
@dataclasses.dataclass
class MetricReport:
    """Per-image values and means of the image metrics for one set of reconstructions.

    Attributes
    ----------
    per_image : dict
        Metric -> ndarray of shape (n_images,) (NaN everywhere for an unavailable metric).
    sources : dict
        Metric -> what computed it (network, layer, weights, SSIM mode) or why it is not
        available.
    status : dict
        Metric -> ``"ok"``, ``"unavailable"`` or ``"random-weights"`` (mechanics only;
        never to be reported as the metric).
    size : int
        Comparison size of the low-level metrics.
    ssim_mode : str
    """

    per_image: dict
    sources: dict
    status: dict
    size: int
    ssim_mode: str

    @property
    def n_images(self) -> int:
        return len(next(iter(self.per_image.values())))

    @property
    def means(self) -> dict[str, float]:
        """Metric -> mean over images (NaN unless the status is ``"ok"``)."""
        return {m: (float(np.nanmean(v)) if self.status[m] == "ok" and np.isfinite(v).any() else float("nan"))
                for m, v in self.per_image.items()}

    def frame(self):
        """Per-image values as a :class:`pandas.DataFrame` (one column per metric)."""
        import pandas as pd

        return pd.DataFrame({m: v for m, v in self.per_image.items()})

    def to_dict(self) -> dict:
        return {"per_image": {m: [float(x) for x in v] for m, v in self.per_image.items()},
                "sources": dict(self.sources), "status": dict(self.status), "size": int(self.size),
                "ssim_mode": self.ssim_mode}

    @classmethod
    def from_dict(cls, d: dict) -> MetricReport:
        return cls({m: np.asarray(v, dtype=np.float64) for m, v in d["per_image"].items()}, dict(d["sources"]),
                   dict(d["status"]), int(d["size"]), d["ssim_mode"])


# ----------------------------------------------------------------- evaluator
class ImageEvaluator:
    """Scores sets of reconstructions against one set of ground-truth images.

    The ground truth's features are extracted once and kept (standardised, float32), so
    that scoring several reconstruction sets (ridge vs GRU, noise levels) costs one pass
    over each set.

    Parameters
    ----------
    ground_truth : ndarray of uint8, shape (n_images, height, width, 3)
        The stimuli, in the order of the reconstructions. Any array that slices like
        numpy works; it is read one batch at a time.
    networks : list of FeatureNetwork, optional
        From :func:`feature_networks`; none: only the low-level metrics are computed.
    unavailable : dict, optional
        Metric -> reason, from :func:`feature_networks`; those metrics come out NaN.
    size : int, optional
        Comparison size of PixCorr and SSIM; default the ground truth's height.
    ssim_mode : {"2d", "columns"}
    batch_size : int
        Images per batch for pixels and features.
    device : torch device, optional
        Where the pixel metrics run (feature networks run where they were built).
    progress : bool
        Show tqdm progress bars.
    also_ssim_2d : bool
        With ``ssim_mode="columns"``, also report the true 2-D SSIM per image under
        ``"ssim_2d"`` (same pass over the images).
    """

    def __init__(self, ground_truth, *, networks: Sequence[FeatureNetwork] = (), unavailable: dict | None = None,
                 size: int | None = None, ssim_mode: str = "2d", batch_size: int = 32, device=None,
                 progress: bool = True, also_ssim_2d: bool = False):
        check_images(ground_truth, "ground truth")
        if ssim_mode not in SSIM_MODES:
            raise ValueError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}; found {ssim_mode!r}")
        self.ground_truth = ground_truth
        self.networks = list(networks)
        self.unavailable = dict(unavailable or {})
        self.size = int(size or ground_truth.shape[1])
        self.ssim_mode = ssim_mode
        self.batch_size = int(batch_size)
        self.device = device
        self.progress = progress
        self.also_ssim_2d = also_ssim_2d
        self._gt_features: dict[str, np.ndarray] = {}
        served = [m for net in self.networks for m in net.metrics]
        if len(served) != len(set(served)):
            raise ValueError(f"two networks serve the same metric: {sorted(served)}")

    @property
    def n_images(self) -> int:
        return len(self.ground_truth)

    def _features(self, images, net: FeatureNetwork, desc: str) -> dict[str, np.ndarray]:
        parts: dict[str, list] = {m: [] for m in net.metrics}
        n_batches = math.ceil(len(images) / self.batch_size)
        for sl in _progress(_batches(len(images), self.batch_size), n_batches, desc, self.progress):
            for m, f in net.features(np.asarray(images[sl])).items():
                parts[m].append(_standardize(f))
        return {m: np.concatenate(p) for m, p in parts.items()}

    def _ensure_gt(self, net: FeatureNetwork):
        if not all(m in self._gt_features for m in net.metrics):
            self._gt_features.update(self._features(self.ground_truth, net, f"{net.name} (ground truth)"))

    def evaluate(self, reconstructions, metrics: Sequence[str] = IMAGE_METRICS) -> MetricReport:
        """Score one set of reconstructions.

        Parameters
        ----------
        reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
            Any size; resized as the module docstring says.
        metrics : sequence of str
            A subset of :data:`IMAGE_METRICS`.

        Returns
        -------
        MetricReport
        """
        unknown = [m for m in metrics if m not in IMAGE_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(IMAGE_METRICS)}")
        _check_pair(self.ground_truth, reconstructions)
        n = self.n_images
        per_image, sources, status = {}, {}, {}
        if "pixcorr" in metrics or "ssim" in metrics:
            modes = [self.ssim_mode] if "ssim" in metrics else []
            if modes and self.also_ssim_2d and self.ssim_mode != "2d":
                modes.append("2d")
            vals = _low_level(self.ground_truth, reconstructions, size=self.size, pixcorr="pixcorr" in metrics,
                              ssim_modes=modes, batch_size=min(self.batch_size, 16), device=self.device,
                              progress=self.progress)
            at = f"at {self.size}x{self.size}"
            if "pixcorr" in metrics:
                per_image["pixcorr"], status["pixcorr"] = vals["pixcorr"], "ok"
                sources["pixcorr"] = f"Pearson r over RGB values {at}"
            for mode in modes:
                key = "ssim" if mode == self.ssim_mode else "ssim_2d"
                kind = "true 2-D SSIM" if mode == "2d" else "Brain-Diffuser column SSIM (mean of 1-D SSIMs)"
                per_image[key], status[key] = vals[f"ssim:{mode}"], "ok"
                sources[key] = f"{kind}, grayscale, Gaussian sigma 1.5, {at}"
        by_metric = {m: net for net in self.networks for m in net.metrics}
        for net in self.networks:
            todo = [m for m in net.metrics if m in metrics]
            if not todo:
                continue
            self._ensure_gt(net)
            if n < 2 and any(m in IDENTIFICATION_METRICS for m in todo):
                raise ValueError(f"2-way identification needs at least 2 images; found {n}")
            counts = {m: np.zeros(n) for m in todo}
            n_batches = math.ceil(n / self.batch_size)
            for sl in _progress(_batches(n, self.batch_size), n_batches, net.name, self.progress):
                feats = net.features(np.asarray(reconstructions[sl]))
                cols = np.arange(sl.start, sl.stop)
                for m in todo:
                    block = _standardize(feats[m])
                    g = self._gt_features[m]
                    if block.shape[1] != g.shape[1]:
                        raise ValueError(f"{m}: reconstructions give {block.shape[1]} features, ground truth "
                                         f"{g.shape[1]}")
                    if m in IDENTIFICATION_METRICS:
                        counts[m][sl] = _identification_counts(g, block, cols)
                    else:
                        counts[m][sl] = 1.0 - np.sum(g[sl].astype(np.float64) * block, axis=1)
            for m in todo:
                per_image[m] = counts[m] / (n - 1) if m in IDENTIFICATION_METRICS else counts[m]
                status[m] = "ok" if net.trained else "random-weights"
                sources[m] = net.description
        for m in metrics:
            if m in per_image:
                continue
            per_image[m] = np.full(n, np.nan)
            status[m] = "unavailable"
            if m in self.unavailable:
                sources[m] = self.unavailable[m]
            elif m in by_metric:
                sources[m] = "not computed"
            else:
                sources[m] = "not available: no network was given for this metric"
        order = [m for m in (*IMAGE_METRICS, "ssim_2d") if m in per_image]
        return MetricReport({m: per_image[m] for m in order}, {m: sources[m] for m in order},
                            {m: status[m] for m in order}, self.size, self.ssim_mode)


def evaluate_images(ground_truth, reconstructions, *, models: str | None = None, networks=None, clip=None,
                    metrics: Sequence[str] = IMAGE_METRICS, **kwargs) -> MetricReport:
    """One-call scoring: build the networks for ``models`` (if given) and evaluate.

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
    models : {"pretrained", "mini"}, optional
        Passed to :func:`feature_networks`; omitted: only ``networks`` (or none).
    networks : list of FeatureNetwork, optional
    clip : optional
        See :func:`feature_networks`.
    **kwargs
        Passed to :class:`ImageEvaluator` (size, ssim_mode, batch_size, device, progress).
    """
    unavailable = {}
    if networks is None:
        networks = []
        if models is not None:
            networks, unavailable = feature_networks(models, clip=clip, metrics=metrics, device=kwargs.get("device"))
    ev = ImageEvaluator(ground_truth, networks=networks, unavailable=unavailable, **kwargs)
    return ev.evaluate(reconstructions, metrics=metrics)
