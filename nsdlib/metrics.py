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
  numbers come from the column mode. (MindEye2's identical call runs under scikit-image
  0.22, which ignores ``multichannel``: its numbers are the 2-D SSIM.)

Every chain above is the ``"brain-diffuser"`` evaluation protocol (:mod:`nsdlib.protocols`),
the default. ``protocol="mindeye"`` reproduces MindEye2's evaluation code instead: every
image resized to 256 (bilinear, no antialiasing, unrounded floats), PixCorr and 2-D SSIM at
425 in float32 pixels, each network's own input size and 2-way identification on float64
correlations. A :class:`MetricReport` names its protocol; :func:`compare_reports` refuses
two reports of different protocols.

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

Whether two sets of reconstructions differ (:func:`paired_bootstrap`, :func:`compare_reports`):
a paired bootstrap over the test images of the difference of two metric means, each
resample drawing the same images for both sets.

The networks themselves (torchvision's, SwAV's, CLIP's) are built by :mod:`nsdlib.features`
and handed to :class:`ImageEvaluator` as :class:`FeatureNetwork` objects; this module
only computes on arrays.

PixCorr and SSIM run in float64, with scipy's filters (scikit-image's own) on the CPU and
with torch on a GPU. Memory stays bounded for NSD's 982 test images at 425 x 425: images
are converted to floating point one batch at a time, and identification keeps only the ground truth's
standardised features (``n_images x n_features`` float32, 550 MB for AlexNet(2) at 982
images) while the reconstructions' features stream through in batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from .images import check_images, resize, to_tensor
from .names import IDENTIFICATION_METRICS, IMAGE_METRICS, SSIM_MODES
from .protocols import DEFAULT_PROTOCOL, Protocol, ProtocolCard, check_same_protocol, get_protocol

__all__ = [
    "BootstrapDifference",
    "FeatureNetwork",
    "ImageEvaluator",
    "MetricReport",
    "compare_reports",
    "columnwise_r",
    "correlation_distance",
    "latent_errors",
    "paired_bootstrap",
    "per_token_correlation",
    "pixcorr",
    "ssim",
    "to_gray",
    "two_way_identification",
]


_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
_SSIM_SIGMA, _SSIM_TRUNCATE, _K1, _K2 = 1.5, 3.5, 0.01, 0.03


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
    s = s.reshape(s.shape[0], -1)
    return s.mean(1, dtype=np.float64) if isinstance(s, np.ndarray) else s.double().mean(1)


def _pixcorr_batch(a, b):
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(1, keepdims=True) if isinstance(a, np.ndarray) else a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdims=True) if isinstance(b, np.ndarray) else b - b.mean(1, keepdim=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)) ** 0.5


def _pixels(images, size: int, protocol: Protocol):
    """A uint8 batch as the protocol's pixel-metric input: NHWC floats in 0-1, numpy.

    ``"brain-diffuser"``: resized as uint8 with Pillow's bicubic filter, then float64.
    ``"mindeye"``: float32 from the start, through the common resize and the pixel resize
    (torch, unrounded).
    """
    images = np.asarray(images)
    if not protocol.common and protocol.pixel.filter == "pil-bicubic":
        return resize(images, size, filter="pil-bicubic").astype(protocol.pixel_dtype) / 255.0
    x = to_tensor(images)
    for step in (*protocol.common, protocol.pixel):
        x = resize(x, size if step is protocol.pixel else step.size, filter=step.filter)
    return x.permute(0, 2, 3, 1).numpy().astype(protocol.pixel_dtype, copy=False)


def _low_level(gt, rec, *, size, pixcorr: bool = False, ssim_modes: Sequence[str] = (), batch_size: int = 16,
               device=None, progress: bool = False, protocol=None) -> dict[str, np.ndarray]:
    """PixCorr and SSIM (any modes) in one pass over the image pairs, under ``protocol``.

    Runs in numpy/scipy on the CPU (``device`` None or CPU) and in torch on a GPU, in the
    protocol's precision (float64; MindEye's float32). ``size`` None: the protocol's size,
    else the ground truth's. Returns ``{"pixcorr": ..., "ssim:2d": ..., "ssim:columns": ...}``
    (those asked for), each of shape (n_images,).
    """
    protocol = get_protocol(protocol)
    for mode in ssim_modes:
        if mode not in SSIM_MODES:
            raise ValueError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}; found {mode!r}")
    _check_pair(gt, rec)
    size = int(size or protocol.pixel.size or gt.shape[1])
    keys = (["pixcorr"] if pixcorr else []) + [f"ssim:{m}" for m in ssim_modes]
    out = {k: np.empty(len(gt)) for k in keys}
    use_torch = device is not None and str(device) != "cpu"
    if use_torch:
        import torch

        dev = torch.device(device)
    n_batches = math.ceil(len(gt) / batch_size)
    for sl in _progress(_batches(len(gt), batch_size), n_batches, "pixel metrics", progress):
        g = _pixels(gt[sl], size, protocol)
        r = _pixels(rec[sl], size, protocol)
        gray = _GRAY.astype(protocol.pixel_dtype)  # skimage's rgb2gray keeps float32
        if use_torch:
            g, r, gray = (torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (g, r, gray))
        if pixcorr:  # in float64 (np.corrcoef's precision in MindEye's code)
            out["pixcorr"][sl] = _as_numpy(_pixcorr_batch(*(_float64(a) for a in (g, r))))
        if ssim_modes:
            gg, rg = g @ gray, r @ gray
            for mode in ssim_modes:
                out[f"ssim:{mode}"][sl] = _as_numpy(_ssim_batch(gg, rg, mode))
    return out


def _float64(x):
    """``x`` in float64 (numpy or torch); itself when it is already."""
    return x.astype(np.float64, copy=False) if isinstance(x, np.ndarray) else x.double()


def _as_numpy(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


def pixcorr(ground_truth, reconstructions, *, size: int | None = None, batch_size: int = 16,
            device=None, progress: bool = False, protocol: str | None = None) -> np.ndarray:
    """Pixel correlation: Pearson r over all RGB values, one value per image pair.

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
        Any array that slices like numpy (an ``h5py`` dataset, a memmap) works; only one
        batch is converted to floating point at a time.
    size : int, optional
        Comparison size; default the protocol's (``"brain-diffuser"``: the ground truth's
        height, images of another size resized with Pillow's bicubic filter; ``"mindeye"``:
        425 after 256).
    batch_size : int
    device : torch device, optional
    protocol : {"brain-diffuser", "mindeye"}, optional
        The evaluation protocol (:mod:`nsdlib.protocols`); default ``"brain-diffuser"``.

    Returns
    -------
    ndarray of float64, shape (n_images,)
        NaN for an image pair where one image is constant.
    """
    return _low_level(ground_truth, reconstructions, size=size, pixcorr=True, batch_size=batch_size,
                      device=device, progress=progress, protocol=protocol)["pixcorr"]


def ssim(ground_truth, reconstructions, *, mode: str = "2d", size: int | None = None, batch_size: int = 16,
         device=None, progress: bool = False, protocol: str | None = None) -> np.ndarray:
    """Grayscale SSIM per image pair (Gaussian weights, sigma 1.5, data range 1).

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
    mode : {"2d", "columns"}
        ``"2d"``: the true 2-D SSIM. ``"columns"``: Brain-Diffuser's compatibility mode,
        the mean over image columns of 1-D SSIMs along the rows (what scikit-image
        computes for a grayscale image passed with ``channel_axis=-1``).
    size : int, optional
        Comparison size; default the protocol's (see :func:`pixcorr`).
    protocol : {"brain-diffuser", "mindeye"}, optional
        How the pixels are prepared (:func:`pixcorr`); ``"mindeye"`` also computes in float32.

    Returns
    -------
    ndarray of float64, shape (n_images,)
    """
    return _low_level(ground_truth, reconstructions, size=size, ssim_modes=(mode,), batch_size=batch_size,
                      device=device, progress=progress, protocol=protocol)[f"ssim:{mode}"]


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

    :mod:`nsdlib.features` builds them (``alexnet_network``, ``inception_network``,
    ``efficientnet_network``, ``swav_network``, ``clip_network``); any extractor works.

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
    protocol : str, optional
        The evaluation protocol whose input it takes (:mod:`nsdlib.protocols`); None for a
        network that takes its own input under any (a callable, the mini stand-ins).
        :class:`ImageEvaluator` refuses a network of another protocol than its own.
    """

    name: str
    extract: Callable[[np.ndarray], dict]
    metrics: tuple[str, ...]
    description: str
    trained: bool = True
    protocol: str | None = None

    def features(self, images) -> dict[str, np.ndarray]:
        out = self.extract(np.asarray(images))
        return {m: np.asarray(out[m], dtype=np.float32).reshape(len(images), -1) for m in self.metrics}


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
    protocol : str
        The evaluation protocol that computed it (:mod:`nsdlib.protocols`).
    card : ProtocolCard, optional
        The whole card (image set, ids, repeats, seed...), where the caller knows it
        (:func:`nsdlib.pipeline.evaluation.score` attaches it).
    """

    per_image: dict
    sources: dict
    status: dict
    size: int
    ssim_mode: str
    protocol: str = DEFAULT_PROTOCOL
    card: ProtocolCard | None = None

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
        out = {"per_image": {m: [float(x) for x in v] for m, v in self.per_image.items()},
               "sources": dict(self.sources), "status": dict(self.status), "size": int(self.size),
               "ssim_mode": self.ssim_mode, "protocol": self.protocol}
        return out if self.card is None else {**out, "card": self.card.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> MetricReport:
        """The report of :meth:`to_dict`; one saved before protocols existed is ``"brain-diffuser"``'s
        (the only chain then)."""
        card = ProtocolCard.from_dict(d["card"]) if d.get("card") else None
        return cls({m: np.asarray(v, dtype=np.float64) for m, v in d["per_image"].items()}, dict(d["sources"]),
                   dict(d["status"]), int(d["size"]), d["ssim_mode"], d.get("protocol", DEFAULT_PROTOCOL), card)

    def with_card(self, card: ProtocolCard) -> MetricReport:
        """This report with its card attached (the card must name the report's protocol)."""
        check_same_protocol([self, card], "a report and its card")
        return dataclasses.replace(self, card=card)


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
        From :func:`nsdlib.features.feature_networks`; none: only the low-level metrics are computed.
    unavailable : dict, optional
        Metric -> reason, from :func:`nsdlib.features.feature_networks`; those metrics come out NaN.
    size : int, optional
        Comparison size of PixCorr and SSIM; default the protocol's (``"brain-diffuser"``:
        the ground truth's height; ``"mindeye"``: 425).
    ssim_mode : {"2d", "columns"}
        ``"columns"`` only under a protocol that has it (``"brain-diffuser"``).
    protocol : {"brain-diffuser", "mindeye"}, optional
        The evaluation protocol (:mod:`nsdlib.protocols`): how the pixels are prepared and
        in which precision identification correlates. The networks must be built for the same
        protocol (:func:`nsdlib.features.feature_networks`). Default ``"brain-diffuser"``.
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
                 progress: bool = True, also_ssim_2d: bool = False, protocol: str | Protocol | None = None):
        check_images(ground_truth, "ground truth")
        if ssim_mode not in SSIM_MODES:
            raise ValueError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}; found {ssim_mode!r}")
        self.protocol = get_protocol(protocol)
        if ssim_mode != self.protocol.ssim_mode and self.protocol.ssim_mode == "2d":
            raise ValueError(f"protocol {self.protocol.name!r} computes the 2-D SSIM only; "
                             f"found ssim_mode={ssim_mode!r}")
        self.ground_truth = ground_truth
        self.networks = list(networks)
        self.unavailable = dict(unavailable or {})
        self.size = int(size or self.protocol.pixel.size or ground_truth.shape[1])
        self._std = _standardize64 if self.protocol.identification_dtype == "float64" else _standardize
        self.ssim_mode = ssim_mode
        self.batch_size = int(batch_size)
        self.device = device
        self.progress = progress
        self.also_ssim_2d = also_ssim_2d
        self._gt_features: dict[str, np.ndarray] = {}
        for net in self.networks:
            if net.protocol is not None and net.protocol != self.protocol.name:
                raise ValueError(f"network {net.name!r} takes the {net.protocol!r} protocol's input; this evaluator "
                                 f"scores under {self.protocol.name!r} (build the networks with the same protocol)")
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
                parts[m].append(self._std(f))
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
                              progress=self.progress, protocol=self.protocol)
            at = f"at {self.size}x{self.size}"
            if self.protocol.common:
                steps = " -> ".join(r.describe() for r in self.protocol.common)
                at += f" after {steps} ({self.protocol.name} protocol)"
            if "pixcorr" in metrics:
                per_image["pixcorr"], status["pixcorr"] = vals["pixcorr"], "ok"
                sources["pixcorr"] = f"Pearson r over RGB values {at}"
            for mode in modes:
                key = "ssim" if mode == self.ssim_mode else "ssim_2d"
                kind = "true 2-D SSIM" if mode == "2d" else "Brain-Diffuser column SSIM (mean of 1-D SSIMs)"
                per_image[key], status[key] = vals[f"ssim:{mode}"], "ok"
                sources[key] = f"{kind}, grayscale, Gaussian sigma 1.5, {at}"
            if modes and self.also_ssim_2d and self.ssim_mode == "2d":  # the 2-D SSIM is the ssim column itself
                per_image["ssim_2d"], status["ssim_2d"], sources["ssim_2d"] = per_image["ssim"], "ok", sources["ssim"]
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
                    block = self._std(feats[m])
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
                            {m: status[m] for m in order}, self.size, self.ssim_mode, self.protocol.name)


# ------------------------------------------------------------ differences
@dataclasses.dataclass(frozen=True)
class BootstrapDifference:
    """A difference of two metric means and its paired-bootstrap percentile interval.

    Attributes
    ----------
    estimate : float
        ``mean(a) - mean(b)`` over all images (NaN-aware means, as
        :attr:`MetricReport.means`), or with ``relative`` ``mean(a) / mean(b) - 1``.
    low, high : float
        The percentile interval of the statistic over the resamples.
    confidence : float
        The interval's coverage (0.95: the 2.5th and 97.5th percentiles).
    n_images, n_resamples : int
    relative : bool
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n_images: int
    n_resamples: int
    relative: bool = False

    @property
    def real(self) -> bool:
        """True when the interval excludes 0 (a difference the resampled images do not erase)."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def sign(self) -> int:
        """+1 or -1 when :attr:`real` (the side of 0 the interval lies on), 0 when it includes 0."""
        return (1 if self.low > 0 else -1) if self.real else 0


def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` images is drawn in each resample: shape (n_resamples, n), rows sum to ``n``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    flat = (draws + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def _weighted_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """NaN-aware means of ``values`` (n,) under each row of resample ``counts`` (r, n)."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(ok, values, 0.0)) / (counts @ ok.astype(np.float64))


def paired_bootstrap(a, b, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                     relative: bool = False) -> BootstrapDifference:
    """Paired bootstrap over images of the difference between two metric means.

    Each resample draws ``n`` images with replacement and takes the same images from both
    score vectors, so that what the two sets share (easy and hard images) cancels; the
    interval is the percentile interval of the resampled statistic. With the same
    ``seed``, every call with the same ``n`` draws the same resamples.

    2-way identification: each image's score is the share of the *other* test images
    its reconstruction is told apart from. The resampling here draws which images are
    scored and keeps each score as computed against all ``n`` test images, so the
    comparison set is held fixed (the interval is conditional on it); recomputing the
    scores within each resample would also resample the distractors.

    Parameters
    ----------
    a, b : array-like of float, shape (n_images,)
        Per-image scores of the two variants, in the same image order. NaN entries (a
        constant image's PixCorr) are left out of that variant's mean, as in
        :attr:`MetricReport.means`.
    n_resamples : int
    confidence : float
        In (0, 1).
    seed : int
    relative : bool
        Bootstrap ``mean(a) / mean(b) - 1`` (the relative change from ``b`` to ``a``)
        instead of ``mean(a) - mean(b)``.

    Returns
    -------
    BootstrapDifference
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must be two vectors of the same length (one score per image); "
                         f"found shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a bootstrap over images needs at least 2 images; found {len(a)}")
    if not (np.isfinite(a).any() and np.isfinite(b).any()):
        raise ValueError("each variant needs at least one finite score; found none")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); found {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; found {n_resamples}")

    def stat(ma, mb):
        with np.errstate(invalid="ignore", divide="ignore"):
            return ma / mb - 1.0 if relative else ma - mb

    counts = _resample_counts(len(a), n_resamples, seed)
    resampled = stat(_weighted_means(a, counts), _weighted_means(b, counts))
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail])
    return BootstrapDifference(float(stat(np.nanmean(a), np.nanmean(b))), float(low), float(high),
                               float(confidence), len(a), int(n_resamples), bool(relative))


def compare_reports(a: MetricReport, b: MetricReport, metrics: Sequence[str] | None = None, **options
                    ) -> dict[str, BootstrapDifference]:
    """:func:`paired_bootstrap` of every metric that both reports computed (status ``"ok"``).

    Parameters
    ----------
    a, b : MetricReport
        Two sets of reconstructions of the same test images, in the same order, scored under
        one protocol (:class:`~nsdlib.protocols.ProtocolMismatchError` otherwise).
    metrics : sequence of str, optional
        Default: every metric of ``a``.
    **options
        ``n_resamples``, ``confidence``, ``seed``, ``relative`` (same resamples for every metric).

    Returns
    -------
    dict
        Metric -> BootstrapDifference of ``a`` minus ``b``; metrics either report could
        not compute are left out.
    """
    check_same_protocol([a, b], "the two reports")
    if a.n_images != b.n_images:
        raise ValueError(f"the two reports score different numbers of images: {a.n_images} and {b.n_images}")
    keys = list(a.per_image) if metrics is None else list(metrics)
    return {m: paired_bootstrap(a.per_image[m], b.per_image[m], **options) for m in keys
            if a.status.get(m) == "ok" and b.status.get(m) == "ok"}
