"""The chapters' tables: ours beside the paper's, labelled with where each number comes from.

- Full pipeline (chapters 08-09): :func:`comparison_table` (Tables 4/5), :func:`noise_table`
  (Table 6), :func:`noise_change`, :func:`latent_table` (Table 3 beside the results file's
  latent errors), :func:`metric_sources`.
- Stage 1 (chapter 04): :func:`regressor_summary`, :func:`latent_rows`,
  :func:`ridge_raw_row`, :func:`baseline_row`, :func:`latent_error_table` (Tables 2/3),
  :func:`z_error_table`.
- Data and models (chapters 01-07): :func:`glm_accuracy_table`, :func:`subject_counts`,
  :func:`zscore_summary`, :func:`split_table`, :func:`vdvae_layout`, :func:`latent_counts`,
  :func:`image_scores`, :func:`alpha_table`, :func:`diffusion_settings`.
- :func:`styled`: three decimals, "n/a" for missing values, a caption.

Every function returns a :class:`pandas.DataFrame` (or its ``Styler``) and draws nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import metrics, nsd, paper, vdvae
from ..names import (
    IMAGE_METRICS,
    LOW_LEVEL_METRICS,
    METRIC_HEADERS,
    NOISE_LEVELS,
    REGRESSOR_LABELS,
    REGRESSOR_PAPER_LABELS,
)
from ..pipeline import stage2

__all__ = [
    "GLM_MODEL_LABELS",
    "alpha_table",
    "baseline_row",
    "comparison_table",
    "diffusion_settings",
    "glm_accuracy_table",
    "image_scores",
    "latent_counts",
    "latent_error_table",
    "latent_rows",
    "latent_table",
    "metric_sources",
    "noise_change",
    "noise_table",
    "regressor_summary",
    "ridge_raw_row",
    "split_table",
    "styled",
    "subject_counts",
    "vdvae_layout",
    "z_error_table",
    "zscore_summary",
]

#: GLMsingle's four models (chapter 01).
GLM_MODEL_LABELS = {"A": "A: canonical HRF", "B": "B: + library HRF", "C": "C: + GLMdenoise",
                    "D": "D: + fractional ridge"}
#: Columns of the stage-1 error tables and their two-level header.
_LATENT_COLUMNS = ["val_mse", "val_mae", "test_mse", "test_mae"]
_LATENT_HEADER = pd.MultiIndex.from_product([["validation", "test"], [METRIC_HEADERS["mse"], METRIC_HEADERS["mae"]]])
_PAPER_STAGE1 = {row["regressor"]: row for row in paper.TABLE2 + paper.TABLE3}


def styled(table, caption: str | None = None):
    """A table for display: three decimals, missing values as "n/a", an optional caption."""
    sty = table.style.format(precision=3, na_rep="n/a")
    return sty.set_caption(caption) if caption else sty


# ------------------------------------------------------------- full pipeline
def noise_table(rows, *, ours_label: str = "ours", with_paper: bool = True):
    """The layout of the paper's Table 6: one row per noise level, ours beside the paper's.

    Parameters
    ----------
    rows : pandas.DataFrame
        Results rows (``nsdlib.pipeline.results.RESULT_COLUMNS``) of one regressor and n_layers.
    ours_label : str
        The ``source`` label of our rows (say which dataset and models).

    Returns
    -------
    pandas.DataFrame indexed by (noise, source) with the eight metrics.
    """
    ours = rows[["noise", *IMAGE_METRICS]].copy()
    ours.insert(1, "source", ours_label)
    parts = [ours]
    if with_paper:
        p = paper.table(6)[["noise", *IMAGE_METRICS]].copy()
        p.insert(1, "source", "paper (Table 6, subject 1, NSD)")
        parts.append(p)
    out = pd.concat(parts, ignore_index=True)
    order = {lab: i for i, lab in enumerate(NOISE_LEVELS)}
    out["_o"] = out["noise"].map(order)
    out["_s"] = (out["source"] != ours_label).astype(int)
    out = out.sort_values(["_o", "_s"]).drop(columns=["_o", "_s"])
    return out.set_index(["noise", "source"])


def noise_change(rows, metrics_shown: Sequence[str] = LOW_LEVEL_METRICS):
    """Each noise level's scores as a change (%) from no noise, ours beside the paper's Table 6.

    Parameters
    ----------
    rows : pandas.DataFrame
        Results rows of one regressor and n_layers, one per noise level, ``"none"`` among them.
    metrics_shown : sequence of str
        The metric columns kept.

    Returns
    -------
    pandas.DataFrame
        Indexed by the noisy levels of ``rows``; columns (``"ours"`` / ``"paper"``, metric).
    """
    ours = rows.set_index("noise")[list(IMAGE_METRICS)]
    if "none" not in ours.index:
        raise ValueError(f"the change from no noise needs a 'none' row; found noise levels {list(ours.index)}")
    theirs = paper.table(6).set_index("noise")[list(IMAGE_METRICS)]
    change = pd.concat({"ours": (ours / ours.loc["none"] - 1) * 100,
                        "paper": (theirs.loc[list(ours.index)] / theirs.loc["none"] - 1) * 100}, axis=1)
    return change.loc[[lab for lab in ours.index if lab != "none"], (slice(None), list(metrics_shown))]


def comparison_table(rows, *, table: int = 4, ours_label: str = "ours", with_paper: bool = True,
                     extra_columns: Sequence[str] = ()):
    """The layout of the paper's Table 4 (or 5): models by rows, the eight metrics, paper beside.

    Parameters
    ----------
    rows : pandas.DataFrame
        Results rows with ``noise == "none"``.
    table : {4, 5}
        Which published table to put beside ours.
    extra_columns : sequence of str
        Columns of ours to append (``"ssim_2d"``); empty for the paper's rows.

    Returns
    -------
    pandas.DataFrame with columns source, model, n_layers and the eight metrics.
    """
    ours = rows[rows["noise"] == "none"].copy()
    ours = pd.DataFrame({"source": ours_label, "model": [REGRESSOR_LABELS.get(r, r) for r in ours["regressor"]],
                         "n_layers": ours["n_layers"].astype("Int64"),
                         **{m: ours[m].to_numpy() for m in (*IMAGE_METRICS, *extra_columns)}})
    parts = [ours]
    if with_paper:
        src = {4: "paper (Table 4, subject 1, NSD)", 5: "paper (Table 5, mean of subjects 1, 2, 5, 7, NSD)"}[table]
        p = paper.table(table)
        parts.append(pd.DataFrame({"source": src, "model": p["label"], "n_layers": p["n_layers"].astype("Int64"),
                                   **{m: p[m].astype(float) for m in IMAGE_METRICS}}))
    return pd.concat(parts, ignore_index=True)


def latent_table(rows, *, ours_label: str):
    """Test-set latent MSE / MAE of the results rows beside the paper's Table 3, or None.

    Returns
    -------
    pandas.DataFrame or None
        Indexed by (source, regressor, n_layers); None when no row has a latent error
        (stage 1 reported no test latents for this run).
    """
    lat = rows[["regressor", "n_layers", "latent_mse", "latent_mae"]]
    if not lat[["latent_mse", "latent_mae"]].notna().any().any():
        return None
    t3 = paper.table(3)[["label", "n_layers", "test_mse", "test_mae"]].rename(
        columns={"label": "regressor", "test_mse": "latent_mse", "test_mae": "latent_mae"})
    both = pd.concat([lat.assign(source=ours_label), t3.assign(source="paper (Table 3, NSD subject 1)")])
    return both.set_index(["source", "regressor", "n_layers"])


def metric_sources(report, labels: Mapping[str, str]):
    """What computed each metric of a :class:`~nsdlib.metrics.MetricReport`, one row per metric."""
    return pd.DataFrame({"metric": [labels.get(m, m) for m in report.sources],
                         "computed with": list(report.sources.values())}).set_index("metric")


# ------------------------------------------------------------------ stage 1
def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def regressor_summary(fits: Mapping[str, dict]):
    """Parameters, epochs, ridge alpha and training time of each fitted stage-1 regressor.

    Parameters
    ----------
    fits : dict
        Regressor -> ``nsdlib.pipeline.stage1.fit_regressor`` result (its ``"metrics"``).
    """
    return pd.DataFrame({r: {"parameters": _fmt(f["metrics"]["n_params"], ","),
                             "epochs run": _fmt(f["metrics"]["epochs"], "d"),
                             "best epoch": _fmt(f["metrics"]["best_epoch"], "d"),
                             "ridge alpha": _fmt(f["metrics"]["alpha"], ",.0f"),
                             "training time (s)": _fmt(f["metrics"]["seconds"], ".1f")}
                         for r, f in fits.items()}).T


def latent_rows(fits: Mapping[str, dict], regressor: str, ours_label: str, *, with_paper: bool = True) -> list:
    """One regressor's validation and test errors (ours, then the paper's Tables 2/3 row).

    Returns
    -------
    list of pandas.Series
        Named (model label, source), for :func:`latent_error_table`.
    """
    label = REGRESSOR_PAPER_LABELS.get(regressor, regressor)
    m = fits[regressor]["metrics"]
    out = [pd.Series([m[c] for c in _LATENT_COLUMNS], index=_LATENT_HEADER, name=(label, ours_label))]
    if with_paper:
        row = _PAPER_STAGE1[regressor]
        out.append(pd.Series([row[c] for c in _LATENT_COLUMNS], index=_LATENT_HEADER,
                             name=(label, "paper (NSD subj 1)")))
    return out


def ridge_raw_row(fit: dict, ours_label: str):
    """Ridge's errors before its predictions are re-standardised (a row for :func:`latent_error_table`)."""
    raw = fit["metrics"]
    return pd.Series([raw[c + "_raw"] for c in _LATENT_COLUMNS], index=_LATENT_HEADER,
                     name=(f"{REGRESSOR_PAPER_LABELS['ridge']}, before re-standardising", ours_label))


def baseline_row(base: dict, ours_label: str):
    """The errors of predicting the training mean (``stage1.baseline_metrics``), as a table row."""
    return pd.Series([base[c] for c in _LATENT_COLUMNS], index=_LATENT_HEADER,
                     name=("training mean (no betas)", ours_label))


def latent_error_table(rows: Sequence):
    """Stage-1 latent errors, one row per (model, source), rounded to four decimals.

    Parameters
    ----------
    rows : sequence of pandas.Series
        From :func:`latent_rows`, :func:`ridge_raw_row`, :func:`baseline_row`.
    """
    out = pd.DataFrame(rows)
    out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "source"])
    return out.round(4)


def z_error_table(fits: Mapping[str, dict], base: dict, ours_label: str):
    """Errors of the standardised latents (z units) per regressor and for the training mean."""
    z = pd.DataFrame({REGRESSOR_PAPER_LABELS.get(r, r): {f"{s} {k.upper()} (z)": fits[r]["metrics"][f"{s}_{k}_z"]
                                                for s in ("val", "test") for k in ("mse", "mae")}
                      for r in fits}).T
    z.loc["training mean (no betas)"] = [base[f"{s}_{k}_z"] for s in ("val", "test") for k in ("mse", "mae")]
    z.index.name = ours_label
    return z.round(4)


# ----------------------------------------------------------- data and models
def glm_accuracy_table(acc: dict):
    """Median per-voxel r with the truth and RMSE of GLMsingle's models A-D (``betas.model_accuracy``)."""
    return pd.DataFrame({
        "model": [GLM_MODEL_LABELS[m] for m in "ABCD"],
        "median r with truth (ours)": [round(acc["median_r"][m], 3) for m in "ABCD"],
        "RMSE, % signal change (ours)": [round(acc["rmse"][m], 3) for m in "ABCD"],
        "paper": ["not reported"] * 4,
    })


def subject_counts(info: dict, n_voxels: int, subject: int, source: str):
    """Sessions, trials, images and voxels of a prepared subject beside NSD's (the paper's) counts.

    Parameters
    ----------
    info : dict
        ``SubjectData.info``.
    n_voxels : int
        Voxels kept after the NaN policy.
    source : str
        The dataset's label ("mini-NSD (simulated)", "NSD").
    """
    counts = nsd.PAPER_COUNTS
    n_images = info["n_images_train"] + info["n_images_test"]
    reps = info["repeats_histogram"]
    rows = [
        ("sessions", info["sessions"], 37),
        ("training trials", info["n_trials_train"], counts["train_trials"]),
        ("test trials", info["n_trials_test"], counts["test_trials"]),
        ("training images", info["n_images_train"], counts["train_images"]),
        ("test images (shared)", info["n_images_test"], counts["test_images"]),
        ("trials per image, mean", round(info["n_trials"] / n_images, 2),
         round((counts["train_trials"] + counts["test_trials"]) / (counts["train_images"] + counts["test_images"]),
               2)),
        ("images shown 1 / 2 / 3 times", " / ".join(str(reps.get(k, reps.get(str(k), 0))) for k in (1, 2, 3)), "—"),
        ("nsdgeneral voxels", info["n_roi_voxels"], counts["nsdgeneral_voxels"][subject]),
        ("voxels used", n_voxels, counts["nsdgeneral_voxels"][subject]),
    ]
    return pd.DataFrame(rows, columns=["", f"ours: {source}, subject {subject}",
                                       f"paper / NSD: subject {subject}, 37 sessions"]).set_index("")


def zscore_summary(d, rows_train) -> pd.DataFrame:
    """Mean and sd of the betas before and after z-scoring (train: the rows ``rows_train``; test: all).

    Parameters
    ----------
    d : nsdlib.nsd.SubjectData
    rows_train : ndarray of int
        The training rows summarised (a random subset keeps it fast).
    """
    raw = d.unscaled("train")[rows_train].ravel()
    return pd.DataFrame({
        "before: mean": [raw.mean(), d.unscaled("test").mean()],
        "before: std": [raw.std(), d.unscaled("test").std()],
        "after: mean": [d.train_betas.mean(), d.test_betas.mean()],
        "after: std": [d.train_betas.std(), d.test_betas.std()],
    }, index=["train", "test"]).round(3)


def split_table(d, info: dict, trial_table, random_split) -> pd.DataFrame:
    """The shared split beside a random 90/10 split (``nsd.split_images(..., "random")``).

    Parameters
    ----------
    d : nsdlib.nsd.SubjectData
        Prepared with the shared split.
    trial_table : nsdlib.nsd.TrialSchedule
    random_split : (train_ids, test_ids)
    """
    train_r, test_r = random_split
    shared = np.unique(trial_table.ids[trial_table.shared])
    return pd.DataFrame({
        "shared split (default)": [d.train_ids.size, d.test_ids.size, d.test_ids.size, info["n_trials_train"]],
        "random 90/10 split": [train_r.size, test_r.size, np.isin(test_r, shared).sum(),
                               int(np.isin(trial_table.ids, train_r).sum())],
    }, index=["training images", "test images", "shared images in the test set", "training trials"])


def vdvae_layout(conf) -> pd.DataFrame:
    """Decoder blocks and latent values per block at each resolution of a VDVAE config."""
    blocks = vdvae.parse_blocks(conf.dec_blocks)
    per_res = pd.Series([r for r, _, _ in blocks]).value_counts().sort_index()
    layout = pd.DataFrame({"decoder blocks": per_res,
                           "latent values per block": [conf.zdim * r * r for r in per_res.index]})
    layout.index = [f"{r}×{r}" for r in layout.index]
    layout.index.name = "resolution"
    return layout


def _count(v) -> str:
    return "—" if pd.isna(v) else f"{int(v):,}"


def latent_counts(conf, source: str) -> pd.DataFrame:
    """Latent values of the first 15 / 31 / all blocks: this run's VDVAE, ImageNet-64's, the paper's.

    Parameters
    ----------
    conf : nsdlib.vdvae.VDVAEConfig
    source : str
        Where this run's VDVAE comes from (a column label).
    """
    return pd.DataFrame(
        {f"this run's VDVAE ({source})": [vdvae.n_latents(conf, 15), vdvae.n_latents(conf, 31),
                                          vdvae.n_latents(conf), conf.n_dec_blocks],
         "ImageNet-64 VDVAE (computed)": [vdvae.n_latents(vdvae.IMAGENET64, 15),
                                          vdvae.n_latents(vdvae.IMAGENET64, 31),
                                          vdvae.n_latents(vdvae.IMAGENET64), vdvae.IMAGENET64.n_dec_blocks],
         "paper": [13_344, 91_168, None, 75]},
        index=["latent values, first 15 blocks", "latent values, first 31 blocks", "latent values, all blocks",
               "decoder blocks"]).map(_count)


def image_scores(stimuli, images: Mapping[str, np.ndarray], *, title: str, identification: bool = False,
                 decimals: int = 3) -> pd.DataFrame:
    """Mean PixCorr and 2-D SSIM (and pixel 2-way identification) of image sets against the stimuli.

    Parameters
    ----------
    stimuli : ndarray of uint8, shape (n_images, h, w, 3)
    images : dict
        Row label -> uint8 images of the same shape.
    title : str
        The index's name: where the numbers come from.
    identification : bool
        Add the 2-way identification of the raw pixels.
    """
    flat = stimuli.reshape(len(stimuli), -1).astype(np.float64)
    rows = {}
    for name, imgs in images.items():
        row = {METRIC_HEADERS["pixcorr"]: np.nanmean(metrics.pixcorr(stimuli, imgs)),
               METRIC_HEADERS["ssim_2d"]: np.nanmean(metrics.ssim(stimuli, imgs))}
        if identification:
            ident = metrics.two_way_identification(flat, imgs.reshape(len(imgs), -1).astype(np.float64))
            row["pixel 2-way identification ↑"] = np.nanmean(ident)
        rows[name] = row
    table = pd.DataFrame(rows).T
    table.index.name = title
    return table.round(decimals)


def alpha_table(cfg, settings: Sequence[str], caption: str):
    """CLIP regressions under each alpha setting (``stage2.clip_predictions``), one row per distinct setting.

    Parameters
    ----------
    cfg : RunConfig
    settings : sequence of str
        Alpha settings (``"auto"`` first: it is the run's default); settings that resolve to
        the same alphas are shown once.
    caption : str

    Returns
    -------
    pandas.io.formats.style.Styler
    """
    rows, seen = [], set()
    for s in settings:
        name = stage2.resolve_alphas(cfg, s)[0]
        if name in seen:
            continue
        seen.add(name)
        p = stage2.clip_predictions(cfg, alpha=s)
        rows.append({"alphas": f"{name}{' (default)' if s == 'auto' else ''}",
                     "alpha text": float(p["alpha_text"]), "alpha vision": float(p["alpha_vision"]),
                     "text: identification": float(p["text_identification"]),
                     "text: mean token r": float(np.mean(p["text_token_r"])),
                     "vision: identification": float(p["vision_identification"]),
                     "vision: mean token r": float(np.mean(p["vision_token_r"]))})
    table = pd.DataFrame(rows).set_index("alphas")
    return table.style.format({"alpha text": "{:,.0f}", "alpha vision": "{:,.0f}"}, precision=3).set_caption(caption)


def diffusion_settings(run: Mapping, vd) -> pd.DataFrame:
    """Stage 2's settings in this run beside Brain-Diffuser's (the paper's).

    Parameters
    ----------
    run : dict
        ``stage2.DIFFUSION_SETTINGS`` (or the quick ones).
    vd : nsdlib.diffusion.DualGuidedDiffusion
        The run's model (its scheduler and image size).
    """
    sc = vd.scheduler_config
    schedule = (f"{sc['prediction_type']}, "
                f"{'zero terminal SNR' if sc['rescale_betas_zero_snr'] else 'scaled-linear betas'}, "
                f"{sc['timestep_spacing']} steps")
    return pd.DataFrame(
        {"this run": [f"{run['strength']} ({int(run['num_steps'] * run['strength'])} of {run['num_steps']} steps)",
                      run["guidance_scale"], f"{run['text_weight']} / {1 - run['text_weight']:.1f}", "DDIM, eta 0",
                      schedule, f"{vd.image_size} x {vd.image_size}"],
         "paper (Brain-Diffuser's settings)": ["0.75 (37 of 50 steps)", 7.5, "0.4 / 0.6", "DDIM, eta 0",
                                               "epsilon, scaled-linear betas, leading steps", "512 x 512"]},
        index=["strength", "guidance scale", "text / vision weight", "sampler", "noise schedule", "output size"])
