"""The chapters' figures: each function draws one figure from arrays and returns it.

- Images: :func:`image_grid` (one row per image, one column per set), :func:`best_and_worst`
  (which images to show), :func:`stimuli_row`, :func:`strength_weight_grid`,
  :func:`noise_examples`, :func:`zoo_figure`.
- The paper's Fig. 1: :func:`beta_slices` (chapters 01 and 02).
- Chapter 01's GLM diagnostics: :func:`receptive_fields`, :func:`voxel_trace` /
  :func:`voxel_trace_figure`, :func:`hrf_library_figure`, :func:`hrf_recovery_figure`,
  :func:`noise_pool_figure`, :func:`pc_gain_figure`, :func:`ridge_fraction_figure`,
  :func:`glm_accuracy_figure`.
- Data and models: :func:`roi_figure`, :func:`zscore_figure`, :func:`latent_sd_figure`,
  :func:`training_curves`, :func:`clip_tokens_figure`, :func:`token_r_figure`.
- Results: :func:`noise_curves`, :func:`score_histograms`, :func:`ssim_scatter`.

Captions stay in the chapters; a figure's title says which data it shows.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from ..hrf import HRF_PEAKS, canonical_hrf, hrf_library
from ..images import resize
from ..names import IMAGE_METRICS, METRIC_HEADERS

__all__ = [
    "beta_slices",
    "best_and_worst",
    "clip_tokens_figure",
    "glm_accuracy_figure",
    "hrf_library_figure",
    "hrf_recovery_figure",
    "image_grid",
    "latent_sd_figure",
    "ledger_figure",
    "noise_curves",
    "noise_examples",
    "noise_pool_figure",
    "pc_gain_figure",
    "receptive_fields",
    "region_figure",
    "ridge_fraction_figure",
    "roi_figure",
    "score_histograms",
    "ssim_scatter",
    "stimuli_row",
    "strength_weight_grid",
    "token_r_figure",
    "training_curves",
    "voxel_trace",
    "voxel_trace_figure",
    "zoo_figure",
    "zscore_figure",
]


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# -------------------------------------------------------------------- images
def image_grid(columns: dict, indices, *, row_labels=None, col_titles: dict | None = None, size: float = 1.9):
    """A figure of images: one row per index, one column per entry of ``columns``.

    Parameters
    ----------
    columns : dict
        Column title -> uint8 images of shape (n_images, h, w, 3) (any sizes).
    indices : sequence of int
        Which images, one figure row each.
    row_labels : sequence of str, optional
        Label left of each row.
    col_titles : dict, optional
        (row position, column title) -> text under that panel (for per-image scores).
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    indices = list(indices)
    names = list(columns)
    fig, axes = plt.subplots(len(indices), len(names), figsize=(size * len(names), size * len(indices) + 0.3),
                             squeeze=False)
    for i, idx in enumerate(indices):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.imshow(columns[name][idx])
            _no_ticks(ax)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if col_titles and (i, name) in col_titles:
                ax.set_xlabel(col_titles[(i, name)], fontsize=7)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout()
    return fig


def best_and_worst(values, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` best and ``k`` worst images by a per-image metric (higher is better).

    NaNs are ignored. For a distance, pass its negative.

    Returns
    -------
    best, worst : ndarray of int, shape (min(k, n_finite),)
        Best first; worst first.
    """
    v = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(v))
    if idx.size == 0:
        raise ValueError("no finite per-image values to rank")
    order = idx[np.argsort(-v[idx], kind="stable")]
    k = min(k, order.size)
    return order[:k], order[::-1][:k]


def stimuli_row(images, titles: Sequence[str]):
    """Stimuli side by side, each with a title (chapter 01: nsdIds, shared or not).

    Parameters
    ----------
    images : ndarray of uint8, shape (n, h, w, 3)
    titles : sequence of str, one per image
    """
    fig, axes = plt.subplots(1, len(images), figsize=(3.5 * len(images), 3.6), squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def strength_weight_grid(grid: Mapping[tuple[float, float], np.ndarray], stimulus, first_guess, *, title: str):
    """Stage-2 images of one test image for each (text weight, strength), stimulus and first guess left.

    Parameters
    ----------
    grid : dict
        ``(text_weight, strength) -> uint8 image (h, w, 3)``; rows are text weights, columns
        strengths, in the order first seen.
    stimulus, first_guess : ndarray of uint8, shape (h, w, 3)
    title : str
    """
    weights = list(dict.fromkeys(w for w, _ in grid))
    strengths = list(dict.fromkeys(s for _, s in grid))
    fig, axes = plt.subplots(len(weights), len(strengths) + 1,
                             figsize=(1.9 * (len(strengths) + 1), 2 * len(weights)), squeeze=False)
    for r, w in enumerate(weights):
        left = {0: ("stimulus", stimulus), 1: ("first guess", first_guess)}.get(r)
        if left:
            axes[r, 0].imshow(left[1])
            axes[r, 0].set_title(left[0], fontsize=8)
        else:
            axes[r, 0].axis("off")
        for c, st in enumerate(strengths, start=1):
            axes[r, c].imshow(grid[(w, st)])
            if r == 0:
                axes[r, c].set_title(f"strength {st}", fontsize=8)
        axes[r, 1].set_ylabel(f"text weight {w}", fontsize=8)
    for ax in axes.ravel():
        _no_ticks(ax)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def noise_examples(ns: Mapping[str, dict], stimulus, k: int, ssim: Mapping[str, np.ndarray], *, title: str):
    """One test image at every noise level: the noised first guess above, its stage-2 image below.

    Parameters
    ----------
    ns : dict
        ``pipeline.evaluation.noise_sensitivity`` output: label -> ``{"first_guess", "final"}``.
    stimulus : ndarray of uint8, shape (h, w, 3)
    k : int
        The image's position in ``ns``'s arrays.
    ssim : dict
        Label -> per-image SSIM of the stage-2 images (shown under each).
    title : str
    """
    cols = {"stimulus": np.stack([stimulus, stimulus])}
    titles = {}
    for lab, d in ns.items():
        name = "no noise" if lab == "none" else f"noise {lab}"
        final = resize(d["final"][k:k + 1], d["first_guess"].shape[1], filter="pil-bicubic")[0]
        cols[name] = np.stack([d["first_guess"][k], final])
        titles[(1, name)] = f"SSIM {ssim[lab][k]:.2f}"
    fig = image_grid(cols, [0, 1], row_labels=["first guess", "stage 2"], col_titles=titles)
    fig.suptitle(title, fontsize=9, y=1.03)
    return fig


def zoo_figure(samples: Mapping[str, object]):
    """Held-out stimuli, their VDVAE reconstructions and diffusion samples from true embeddings.

    Parameters
    ----------
    samples : dict
        ``nsdlib.pipeline.zoo.zoo_samples``: ``"stimuli"``, ``"vdvae"``, ``"diffusion"``
        (uint8 images, n each) and ``"captions"`` (lists of str).
    """
    images, rec, diff, captions = samples["stimuli"], samples["vdvae"], samples["diffusion"], samples["captions"]
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n, 6.6), squeeze=False)
    for j in range(n):
        for row, (img, label) in enumerate(((images[j], "stimulus"), (rec[j], "VDVAE reconstruction"),
                                            (diff[j], "diffusion sample"))):
            ax = axes[row, j]
            ax.imshow(img)
            _no_ticks(ax)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
        axes[0, j].set_title("\n".join(textwrap.wrap(captions[j][0], 26)[:3]), fontsize=7)
    fig.suptitle("Held-out mini-NSD images: stimulus, small-VDVAE reconstruction, sample from true embeddings",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------ Fig. 1 slices
def beta_slices(slices: Sequence[np.ndarray], titles: Sequence[str], *, suptitle: str, images=None,
                image_titles: Sequence[str] | None = None, roi=None):
    """The paper's Fig. 1: one transverse slice of single-trial beta volumes, 40th-95th percentile.

    Values below each slice's 40th percentile are black, above its 95th white.

    Parameters
    ----------
    slices : sequence of ndarray, shape (x, y)
        One slice (``volume[:, :, z]``) per trial, in percent signal change.
    titles : sequence of str
        One per slice.
    suptitle : str
    images : ndarray of uint8, shape (n, h, w, 3), optional
        The trials' stimuli, drawn above the slices.
    image_titles : sequence of str, optional
    roi : ndarray of bool, shape (x, y), optional
        The nsdgeneral mask of the slice, outlined in orange.

    Returns
    -------
    matplotlib.figure.Figure
        One row of slices (two rows with ``images``).
    """
    n = len(slices)
    rows = 1 if images is None else 2
    fig, axes = plt.subplots(rows, n, figsize=(3.6 * n, 3.8 * rows), squeeze=False)
    if images is not None:
        for ax, img, title in zip(axes[0], images, image_titles or [""] * n):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
    for ax, sl, title in zip(axes[-1], slices, titles):
        lo, hi = np.percentile(sl, [40, 95])
        ax.imshow(sl.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        if roi is not None:
            ax.contour(roi.T, levels=[0.5], colors="tab:orange", linewidths=0.8, origin="lower")
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------- chapter 01: GLM
def receptive_fields(image, truth, seed: int = 0):
    """Receptive fields of mini-NSD's early voxels (chapter 01).

    Left: centres and sizes (1 sigma) of up to 25 V1 and 25 hV4 fields over a stimulus;
    right: field size against eccentricity in V1-hV4.

    Parameters
    ----------
    image : ndarray of uint8, shape (h, w, 3)
    truth : nsdlib.mini.Truth
        ``area``, ``rf_x``, ``rf_y``, ``rf_sigma`` (image widths) per voxel.
    seed : int
        Which fields are drawn.
    """
    rng = np.random.default_rng(seed)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax0.imshow(image, extent=(0, 1, 1, 0))
    for area, colour in (("V1", "white"), ("hV4", "cyan")):
        idx = np.flatnonzero(truth.area == area)
        for v in rng.choice(idx, size=min(25, idx.size), replace=False):
            ax0.add_patch(plt.Circle((truth.rf_x[v], truth.rf_y[v]), truth.rf_sigma[v], fill=False, color=colour,
                                     lw=1))
    ax0.set_title("RF centres and sizes: V1 (white), hV4 (cyan)", fontsize=10)
    ax0.set_xlim(0, 1)
    ax0.set_ylim(1, 0)
    for area in ("V1", "V2", "V3", "hV4"):
        m = truth.area == area
        ecc = np.hypot(truth.rf_x[m] - 0.5, truth.rf_y[m] - 0.5)
        ax1.scatter(ecc, truth.rf_sigma[m], s=6, label=area)
    ax1.set_xlabel("eccentricity (image widths from the centre)")
    ax1.set_ylabel("RF size σ (image widths)")
    ax1.legend()
    fig.tight_layout()
    return fig


def voxel_trace(layout, subject: int, truth, spec) -> dict:
    """The strongest early voxel of mini-NSD's first run: its time series and its true driven part.

    Parameters
    ----------
    layout : nsdlib.nsd.NSDLayout
        The mini-NSD (``dataset="mini"``), where the time series are.
    subject : int
    truth : nsdlib.mini.Truth
    spec : nsdlib.mini.MiniSpec

    Returns
    -------
    dict
        ``voxel`` (index), ``area``, ``hrf_index``, ``t`` (s), ``psc`` (the time series in
        percent signal change), ``drive`` (true amplitudes convolved with the voxel's HRF),
        ``onsets`` (volumes), ``hrf`` (its HRF, one value per TR) and ``tr``.
    """
    lib = hrf_library(tr=spec.tr, stim_dur=spec.stim_dur)
    v = int(np.argmax(truth.gain * (truth.population == "early")))
    i, j, k = truth.voxel_ijk[v]
    path = layout.local_path(layout.timeseries_file(subject, 1, 1))
    y = np.asarray(nib.load(path).dataobj[i, j, k, :], dtype=float)
    psc = 100 * (y / y.mean() - 1)
    first = (truth.trial_session == 1) & (truth.trial_run == 1)
    onsets = truth.trial_onset_volume[first]
    drive = np.zeros(psc.size)
    for onset, amp in zip(onsets, truth.amplitudes[first, v]):
        n = min(lib.shape[0], psc.size - onset)
        drive[onset: onset + n] += amp * lib[:n, truth.hrf_index[v]]
    return {"voxel": v, "area": truth.area[v], "hrf_index": int(truth.hrf_index[v]),
            "t": np.arange(psc.size) * spec.tr, "psc": psc, "drive": drive, "onsets": onsets,
            "hrf": lib[:, truth.hrf_index[v]], "tr": spec.tr}


def voxel_trace_figure(trace: dict, subject: int):
    """A voxel's time series (grey), its stimulus-driven part (black), trial onsets; its HRF right."""
    psc, drive, tr, onsets = trace["psc"], trace["drive"], trace["tr"], trace["onsets"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 3.6), gridspec_kw={"width_ratios": [4, 1]})
    ax0.plot(trace["t"], psc, color="0.6", lw=1, label="time series")
    ax0.plot(trace["t"], drive - drive.mean() + psc.mean(), color="k", lw=1.5, label="stimulus-driven part (truth)")
    ax0.plot(onsets * tr, np.full(onsets.size, psc.min() - 0.5), "|", color="C3", ms=8, label="trial onsets")
    ax0.set_xlabel("time (s)")
    ax0.set_ylabel("% signal change")
    ax0.set_title(f"subject {subject}, voxel {trace['voxel']} ({trace['area']}), session 1 run 1", fontsize=10)
    ax0.legend(loc="upper right", fontsize=8)
    ax1.plot(np.arange(trace["hrf"].size) * tr, trace["hrf"], color="k")
    ax1.set_title(f"its HRF: library #{trace['hrf_index']}", fontsize=10)
    ax1.set_xlabel("time after onset (s)")
    fig.tight_layout()
    return fig


def hrf_library_figure(tr: float, stim_dur: float):
    """The twenty library HRFs coloured by nominal peak, and model A's canonical HRF (dashed)."""
    lib, canon = hrf_library(tr, stim_dur), canonical_hrf(tr, stim_dur)
    t = np.arange(lib.shape[0]) * tr
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colours = plt.cm.viridis(np.linspace(0, 1, lib.shape[1]))
    for k in range(lib.shape[1]):
        ax.plot(t, lib[:, k], color=colours[k], lw=1)
    ax.plot(t, canon, "k--", lw=2, label="canonical (model A)")
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(HRF_PEAKS[0], HRF_PEAKS[-1]))
    fig.colorbar(sm, ax=ax, label="nominal peak (s)")
    ax.set_xlabel("time after trial onset (s)")
    ax.set_ylabel("response (peak = 1)")
    ax.set_xlim(0, 25)
    ax.legend()
    return fig


def hrf_recovery_figure(true_index, chosen_index, high, session: int):
    """2-D histograms of the true against the chosen HRF index: all voxels, and the ``high`` ones.

    Parameters
    ----------
    true_index, chosen_index : ndarray of int, shape (n_voxels,)
    high : ndarray of bool, shape (n_voxels,)
        The top quarter by true signal / noise.
    session : int
        The session of ``chosen_index`` (a title).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, sel, title in ((axes[0], np.ones_like(high), "all nsdgeneral voxels"),
                           (axes[1], high, "top quarter by true signal / noise")):
        h, *_ = np.histogram2d(true_index[sel], chosen_index[sel], bins=np.arange(21) - 0.5)
        ax.imshow(h.T, origin="lower", cmap="magma")
        ax.plot([0, 19], [0, 19], color="w", lw=0.5)
        ax.set_xlabel("true HRF index")
        ax.set_ylabel("chosen HRF index (model B)")
        ax.set_title(f"{title}, session {session}", fontsize=10)
    fig.tight_layout()
    return fig


def noise_pool_figure(session_diag: dict, roi):
    """GLMdenoise's noise pool: the ON-OFF R² histogram with the mixture threshold, and one slice.

    Parameters
    ----------
    session_diag : dict
        One session of ``betas.glm_diagnostics(cfg)["per_session"]`` (``onoff_r2``,
        ``noise_pool``, ``in_roi``, ``r2_threshold``, ``meanvol`` over the brain voxels).
    roi : ndarray of int, shape (x, y, z)
        -1 outside the brain, 1 in nsdgeneral (``pipeline.data.roi_volume``).
    """
    s1 = session_diag
    r2, pool = s1["onoff_r2"], s1["noise_pool"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, np.quantile(r2, 0.995), 60)
    ax0.hist(r2[~s1["in_roi"]], bins, alpha=0.6, label="brain, outside nsdgeneral")
    ax0.hist(r2[s1["in_roi"]], bins, alpha=0.6, label="nsdgeneral")
    ax0.axvline(float(s1["r2_threshold"]), color="k", ls="--", label="mixture threshold")
    ax0.set_xlabel("ON-OFF R² (session 1)")
    ax0.set_ylabel("voxels")
    ax0.legend(fontsize=8)
    brain = roi >= 0
    mean_vol = np.zeros(roi.shape)
    mean_vol[brain] = s1["meanvol"]
    pool_vol = np.zeros(roi.shape, bool)
    pool_vol[brain] = pool
    z = int(np.argmax((roi == 1).sum((0, 1))))
    ax1.imshow(mean_vol[:, :, z].T, cmap="gray", origin="lower")
    ax1.imshow(np.ma.masked_where(~pool_vol[:, :, z].T, pool_vol[:, :, z].T), cmap="autumn", origin="lower",
               alpha=0.7)
    ax1.contour((roi[:, :, z] == 1).T, levels=[0.5], colors="c", linewidths=1)
    ax1.set_title(f"mean volume, slice z={z}: noise pool (red), nsdgeneral (cyan)", fontsize=10)
    ax1.axis("off")
    fig.tight_layout()
    return fig


def pc_gain_figure(per_session: Mapping, sessions: Sequence, subject: int):
    """Cross-validation gain over 0 PCs against the number of GLMdenoise PCs, one line per session."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for s in sessions:
        curve, k = per_session[s]["xval_curve"], per_session[s]["pc_candidates"]
        if curve.size > 1:
            gain = curve - curve[0]
            chosen = int(per_session[s]["n_pcs"])
            ax.plot(k, gain, color="0.6", lw=1)
            ax.plot(chosen, gain[list(k).index(chosen)], "o", color="C3")
    ax.set_xlabel("number of GLMdenoise PCs")
    ax.set_ylabel("cross-validation gain over 0 PCs")
    ax.set_title(f"dataset=mini-NSD, subject {subject}, one line per session", fontsize=10)
    return fig


def ridge_fraction_figure(per_session: Mapping, sessions: Sequence):
    """Model D's ridge fractions of the nsdgeneral voxels (all sessions), and against model B's R²."""
    frac = np.concatenate([per_session[s]["fraction"][per_session[s]["in_roi"]] for s in sessions])
    r2b = np.concatenate([per_session[s]["r2_B"][per_session[s]["in_roi"]] for s in sessions])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax0.hist(frac, bins=np.arange(0.025, 1.05, 0.05))
    ax0.set_xlabel("chosen ridge fraction (nsdgeneral voxels, all sessions)")
    ax0.set_ylabel("voxel-sessions")
    ax1.scatter(r2b, frac, s=3, alpha=0.3)
    ax1.set_xlabel("model B R²")
    ax1.set_ylabel("ridge fraction")
    fig.tight_layout()
    return fig


def glm_accuracy_figure(acc: dict, labels: Mapping[str, str], subject: int):
    """Violins of the per-voxel correlation with the truth of GLMsingle's models A-D."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.violinplot([acc["voxel_r"][m][np.isfinite(acc["voxel_r"][m])] for m in "ABCD"], showmedians=True)
    ax.set_xticks([1, 2, 3, 4], [labels[m] for m in "ABCD"], fontsize=8)
    ax.set_ylabel("per-voxel r(betas, truth)")
    ax.set_title(f"dataset=mini-NSD, subject {subject}", fontsize=10)
    return fig


# ------------------------------------------------------ data and the models
def roi_figure(roi, z: int, mean_map, n_roi_voxels: int):
    """nsdgeneral at slice ``z``, ROI voxels per column, and the training mean beta at ``z``."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    axes[0].imshow(roi[:, :, z].T, cmap=plt.get_cmap("viridis", 3), vmin=-1.5, vmax=1.5, origin="lower",
                   interpolation="nearest")
    axes[0].set_title(f"nsdgeneral, z = {z}\n(-1 outside brain, 0, 1 ROI)", fontsize=9)
    axes[1].imshow((roi > 0).sum(axis=2).T, cmap="magma", origin="lower", interpolation="nearest")
    axes[1].set_title(f"ROI voxels per column ({n_roi_voxels} in all)", fontsize=9)
    top = np.nanmax(np.abs(mean_map))
    im = axes[2].imshow(mean_map.T, cmap="RdBu_r", vmin=-top, vmax=top, origin="lower", interpolation="nearest")
    axes[2].set_title("training mean beta (% signal change)", fontsize=9)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def zscore_figure(raw, train, test):
    """Histograms of betas before z-scoring (``raw``) and after (``train``, ``test``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].hist(np.ravel(raw), bins=120, color="0.4")
    axes[0].set_xlabel("beta, % signal change (averaged repeats)")
    axes[0].set_title("training betas before z-scoring", fontsize=9)
    axes[1].hist(np.ravel(train), bins=120, density=True, alpha=0.6, label="train")
    axes[1].hist(np.ravel(test), bins=120, density=True, alpha=0.6, label="test (training statistics)")
    axes[1].set_xlabel("z-scored beta")
    axes[1].legend(fontsize=8)
    axes[1].set_title("after z-scoring", fontsize=9)
    fig.tight_layout()
    return fig


def latent_sd_figure(latents, slices: Sequence[slice], resolutions: Sequence[int], image_size: int, *, title: str,
                     split: int = 15):
    """Spread of posterior latents per decoder block (bars) and of each block's mean (dots).

    Parameters
    ----------
    latents : ndarray, shape (n_images, n_latents)
        Latents of the first ``len(slices)`` blocks.
    slices : sequence of slice
        Each block's columns (``vdvae.block_slices``).
    resolutions : sequence of int
        Each block's resolution.
    image_size : int
        The VDVAE's image size (for the colour scale).
    split : int
        Blocks left of the dashed line (the 15 | 31 split).
    """
    total_sd = [latents[:, s].std(0).mean() for s in slices]
    image_sd = [latents[:, s].mean(1).std() for s in slices]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    x = np.arange(len(slices))
    ax.bar(x, total_sd, color=plt.cm.viridis(np.log2(np.array(resolutions) + 1) / np.log2(image_size + 1)),
           label="sd across test images, mean over the block's values")
    ax.plot(x, image_sd, "k.", label="sd across test images of the block's mean value")
    ax.axvline(split - 0.5, color="tab:red", ls="--", lw=1)
    ax.text(split - 0.4, ax.get_ylim()[1] * 0.9, f"{split} | {len(slices)}", color="tab:red", fontsize=8)
    ax.set_xticks(x, [f"{i + 1}\n{r}²" for i, r in enumerate(resolutions)], fontsize=6)
    ax.set_xlabel("decoder block (resolution)")
    ax.set_ylabel("latent value sd")
    ax.set_ylim(0, 1.35 * max(total_sd))
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(fits: Mapping[str, dict], labels: Mapping[str, str], *, title: str):
    """Training and validation loss per epoch of each network regressor; dotted: the epoch kept."""
    fig, axes = plt.subplots(1, len(fits), figsize=(4 * len(fits), 3.2), sharey=True, squeeze=False)
    for ax, (r, f) in zip(axes[0], fits.items()):
        ax.plot(f["train_loss"], label="training")
        ax.plot(f["val_loss"], label="validation")
        ax.axvline(f["metrics"]["best_epoch"], color="gray", ls=":", lw=1)
        ax.set_title(labels.get(r, r), fontsize=9)
        ax.set_xlabel("epoch")
    axes[0, 0].set_ylabel("MSE of standardised latents")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def clip_tokens_figure(text_tokens, eot: int, vision_tokens):
    """Norms of one caption's CLIP-text tokens (end-of-text marked) and of one image's vision tokens."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3), gridspec_kw={"width_ratios": [1, 1.6]})
    a1.plot(np.linalg.norm(text_tokens, axis=-1), ".-")
    a1.axvline(eot, color="tab:red", lw=0.8, label="end-of-text token")
    a1.set(xlabel="text token position", ylabel="norm", title="CLIP-text tokens of one caption")
    a1.legend(fontsize=8)
    a2.plot(np.linalg.norm(vision_tokens, axis=-1), ".", ms=3)
    a2.set(xlabel="vision token (0 = class token)", title="CLIP-vision tokens, test image 1")
    fig.tight_layout()
    return fig


def token_r_figure(text_token_r, vision_token_r, *, title: str):
    """Per-token correlation of predicted and true CLIP embeddings: text by position, vision patches as a map."""
    side = int(round(np.sqrt(len(vision_token_r) - 1)))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    a1.plot(text_token_r, ".-")
    a1.axhline(0, color="0.6", lw=0.8)
    a1.set(xlabel="text token position", ylabel="r across test images", title="CLIP-text: per-token correlation")
    im = a2.imshow(np.asarray(vision_token_r[1:]).reshape(side, side), cmap="viridis")
    a2.set(title=f"CLIP-vision patches (class token r = {vision_token_r[0]:.2f})", xticks=[], yticks=[])
    fig.colorbar(im, ax=a2, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ results
def noise_curves(ours, theirs, levels: Sequence[str], *, title: str, metrics_shown: Sequence[str] = IMAGE_METRICS,
                 labels: Mapping[str, str] = METRIC_HEADERS):
    """Each metric against the noise level: ours beside the paper's Table 6 (one panel per metric).

    Parameters
    ----------
    ours, theirs : pandas.DataFrame
        Indexed by noise label, one column per metric.
    levels : sequence of str
        Noise labels on the x axis.
    metrics_shown : sequence of str
        One panel each, two rows (default the eight of the paper's tables).
    labels : dict
        Metric key -> panel title.
    """
    x = np.arange(len(levels))
    fig, axes = plt.subplots(2, (len(metrics_shown) + 1) // 2, figsize=(12, 5.2), squeeze=False)
    for ax, m in zip(axes.ravel(), metrics_shown):
        y = ours.loc[list(levels), m].to_numpy(dtype=float)
        ax.plot(x, y, "o-", label="ours")
        if not np.isfinite(y).any():
            ax.text(0.5, 0.5, "ours: n/a", transform=ax.transAxes, ha="center", color="tab:blue", fontsize=9)
        ax.plot(x, theirs.loc[list(levels), m].to_numpy(dtype=float), "s--", color="0.5", label="paper (NSD)")
        ax.set_xticks(x, list(levels), fontsize=8)
        ax.set_title(labels.get(m, m), fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.supxlabel("noise amplitude (grey levels; 256 = pure noise)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def score_histograms(report, metrics_shown: Sequence[str], *, title: str, labels: Mapping[str, str] = METRIC_HEADERS):
    """Histograms of per-image scores (one panel per metric), the mean as a vertical line.

    Parameters
    ----------
    report : nsdlib.metrics.MetricReport
    metrics_shown : sequence of str
        Metrics with ``report.status[m] == "ok"``.
    """
    fig, axes = plt.subplots(1, len(metrics_shown), figsize=(2.6 * len(metrics_shown), 2.6), squeeze=False)
    for ax, m in zip(axes[0], metrics_shown):
        v = report.per_image[m]
        ax.hist(v[np.isfinite(v)], bins=20, color="tab:blue", alpha=0.8)
        ax.axvline(np.nanmean(v), color="k", lw=1)
        ax.set_title(labels.get(m, m), fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ssim_scatter(report, *, title: str):
    """Brain-Diffuser's column SSIM against the true 2-D SSIM, one dot per image."""
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.scatter(report.per_image["ssim_2d"], report.per_image["ssim"], s=8)
    lim = [min(np.nanmin(report.per_image["ssim"]), np.nanmin(report.per_image["ssim_2d"])), 1]
    ax.plot(lim, lim, color="0.6", lw=0.8)
    ax.set_xlabel("true 2-D SSIM")
    ax.set_ylabel("column SSIM (Brain-Diffuser)")
    ax.set_title(title, fontsize=8)
    return fig


def ledger_figure(steps, chain: Sequence[str], *, title: str, labels: Mapping[str, str] = METRIC_HEADERS):
    """Where the loss goes: per metric, each step's share of the way from the stimulus to the pipeline.

    Parameters
    ----------
    steps : pandas.DataFrame
        :func:`nsdlib.pipeline.ledger.ledger_steps` (index step, metric; ``share``).
    chain : sequence of str
        The steps whose shares add up to 1, in the ledger's order (one colour each).
    """
    shares = steps["share"].unstack("step")[list(chain)]
    shares = shares.loc[[m for m in IMAGE_METRICS if m in shares.index]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shares) + 1.4))
    left = np.zeros(len(shares))
    y = np.arange(len(shares))[::-1]
    for step in chain:
        w = shares[step].to_numpy(dtype=float)
        ax.barh(y, w, left=left, label=step)
        left += np.nan_to_num(w)
    ax.set_yticks(y, [labels.get(m, m) for m in shares.index], fontsize=8)
    ax.axvline(1.0, color="0.4", lw=0.8)
    ax.set_xlabel("share of the loss from the stimulus to the pipeline (a share < 0: that step gains)", fontsize=8)
    ax.legend(fontsize=8, ncol=len(chain), loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.05 * len(shares) / 8))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def region_figure(reports: Mapping, contrast_metrics: Sequence[str] = IMAGE_METRICS, *, title: str,
                  labels: Mapping[str, str] = METRIC_HEADERS):
    """Each region's mean score on each metric (one panel per metric, one bar per region).

    Parameters
    ----------
    reports : dict
        Region -> MetricReport (:func:`nsdlib.pipeline.regions.evaluate_regions`).
    """
    names = list(reports)
    fig, axes = plt.subplots(2, (len(contrast_metrics) + 1) // 2, figsize=(12, 5.4), squeeze=False)
    for ax, m in zip(axes.ravel(), contrast_metrics):
        vals = [reports[r].means.get(m, np.nan) for r in names]
        ax.bar(np.arange(len(names)), vals, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(np.arange(len(names)), [textwrap.shorten(r, 14, placeholder="…") for r in names],
                      rotation=60, ha="right", fontsize=7)
        ax.set_title(labels.get(m, m), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
