"""The chapters' tables: ours beside the paper's, labelled with where each number comes from.

- Full pipeline (chapters 08-09): :func:`comparison_table` (Tables 4/5), :func:`noise_table`
  (Table 6), :func:`noise_placement_table` (Table 6 under both noise placements),
  :func:`noise_change`, :func:`latent_table` (Table 3 beside the results file's latent
  errors), :func:`metric_sources`.
- Stage 1 (chapter 04): :func:`regressor_summary`, :func:`latent_rows`,
  :func:`ridge_raw_row`, :func:`baseline_row`, :func:`latent_error_table` (Tables 2/3),
  :func:`z_error_table`.
- Data and models (chapters 01-07): :func:`glm_accuracy_table`, :func:`subject_counts`,
  :func:`zscore_summary`, :func:`split_table`, :func:`vdvae_layout`, :func:`latent_counts`,
  :func:`image_scores`, :func:`alpha_table`, :func:`diffusion_settings`,
  :func:`noise_at_table`.
- Whether a difference is real (chapters 08-09): :func:`variant_label`, :func:`comparison_differences`
  (the paper's comparisons with paired-bootstrap intervals), :func:`noise_directions` (which way
  each metric moves with noise, beside Table 6); :mod:`nsdlib.report.sentences` reads them out.
- Controls (chapter 09, :mod:`nsdlib.pipeline.controls`): :func:`control_differences` (the
  pipeline against the retrieval baseline and the shuffled-betas null), :func:`overlap_summary`.
- mini-NSD's scene score (chapters 05 and 07): :func:`scene_score_table`, :func:`scene_score_summary`.
- :func:`styled`: three decimals, "n/a" for missing values, a caption.

Every function returns a :class:`pandas.DataFrame` (or its ``Styler``) and draws nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import diffusion, metrics, nsd, paper, vdvae
from ..names import (
    HIGHER_IS_BETTER,
    IMAGE_METRICS,
    METRIC_HEADERS,
    METRIC_LEVELS,
    NOISE_LABELS,
    NOISE_LEVELS,
    PIXEL_METRICS,
    REGRESSOR_LABELS,
    REGRESSOR_PAPER_LABELS,
)
from ..pipeline import stage2
from ..pipeline.controls import CONTROLS
from ..protocols import DEFAULT_PROTOCOL, ProtocolCard

__all__ = [
    "COMPARISON_COLUMNS",
    "GLM_MODEL_LABELS",
    "NOISE_DIRECTION_COLUMNS",
    "PAPER_PAIRS",
    "alpha_table",
    "baseline_row",
    "card_caption",
    "comparison_differences",
    "comparison_table",
    "control_differences",
    "diffusion_settings",
    "glm_accuracy_table",
    "image_scores",
    "latent_counts",
    "latent_error_table",
    "latent_rows",
    "latent_table",
    "ledger_changes",
    "ledger_table",
    "metric_sources",
    "noise_at_table",
    "noise_change",
    "noise_directions",
    "noise_placement_table",
    "noise_table",
    "overlap_summary",
    "region_contrast",
    "regressor_summary",
    "report_cards",
    "ridge_raw_row",
    "scene_score_summary",
    "scene_score_table",
    "split_table",
    "styled",
    "subject_counts",
    "variant_label",
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


def styled(table, caption: str | None = None, precision: int = 3):
    """A table for display: three decimals (or ``precision``), missing values as "n/a", an optional caption."""
    sty = table.style.format(precision=precision, na_rep="n/a")
    return sty.set_caption(caption) if caption else sty


# ------------------------------------------------------------- protocol cards
def _protocols(rows) -> list[str]:
    """Each results row's evaluation protocol (rows written before protocols existed: the default)."""
    return list(rows["protocol"]) if "protocol" in rows else [DEFAULT_PROTOCOL] * len(rows)


def report_cards(reports) -> list[ProtocolCard]:
    """The distinct protocol cards of metric reports (a mapping's values or a sequence), in order."""
    items = reports.values() if isinstance(reports, Mapping) else reports
    return list(dict.fromkeys(r.card for r in items if getattr(r, "card", None) is not None))


def card_caption(caption: str, cards: Sequence[ProtocolCard]) -> str:
    """``caption`` followed by each protocol card of its numbers, one line each (HTML line breaks).

    Each card says the protocol, the image set with the digest of its ids, how repeats were
    combined, and the samples, selection and seed; cards whose protocols differ are all
    shown (the table's ``protocol`` column then says which row is which).
    """
    lines = [caption] + [f"Protocol card {k}: " + " · ".join(c.lines()[:4]) for k, c in
                         enumerate(cards, 1)]
    return "<br>".join(lines)


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
    pandas.DataFrame indexed by (noise, source): the evaluation ``protocol`` of each row (the
    paper's: the one it claims) and the eight metrics.
    """
    ours = rows[["noise", *IMAGE_METRICS]].copy()
    ours.insert(1, "source", ours_label)
    ours.insert(2, "protocol", _protocols(rows))
    parts = [ours]
    if with_paper:
        p = paper.table(6)[["noise", "protocol", *IMAGE_METRICS]].copy()
        p.insert(1, "source", "paper")
        parts.append(p)
    out = pd.concat(parts, ignore_index=True)
    order = {lab: i for i, lab in enumerate(NOISE_LEVELS)}
    out["_o"] = out["noise"].map(order)
    out["_s"] = (out["source"] != ours_label).astype(int)
    out = out.sort_values(["_o", "_s"]).drop(columns=["_o", "_s"])
    return out.set_index(["noise", "source"])


def noise_placement_table(rows, *, ours_label: str = "ours", with_paper: bool = True):
    """Table 6 under each noise placement, ours beside the paper's.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``nsdlib.pipeline.evaluation.noise_placements`` rows: results rows of one regressor
        and n_layers with ``placement`` ("first-guess" or "upscaled") and ``noise_size`` (the
        side, in pixels, of the image the noise was added to).
    ours_label : str
        Says which dataset and models made our rows.

    Returns
    -------
    pandas.DataFrame indexed by (noise, source) with the eight metrics
        Per noise level: our row under each placement, then the paper's (which does not say
        where its noise was added). The noiseless row is shown once: it is the same images
        under both placements.
    """
    missing = {"placement", "noise_size"} - set(rows.columns)
    if missing:
        raise ValueError(f"rows need the columns placement and noise_size (evaluation.noise_placements); "
                         f"missing {', '.join(sorted(missing))}")
    parts = []
    for placement, part in rows.groupby("placement", sort=False):
        where = "on the first guess" if placement == "first-guess" else "after upscaling"
        label = f"{ours_label}; noise added {where}, {int(part['noise_size'].iloc[0])} px"
        parts.append(noise_table(part, ours_label=label, with_paper=False).reset_index())
    out = pd.concat(parts, ignore_index=True)
    none = out["noise"] == "none"
    out = pd.concat([out[none].head(1).assign(source=f"{ours_label}; no noise"), out[~none]], ignore_index=True)
    if with_paper:
        p = paper.table(6)[["noise", "protocol", *IMAGE_METRICS]].copy()
        p.insert(1, "source", "paper (placement not stated)")
        out = pd.concat([out, p], ignore_index=True)
    out["_o"] = out["noise"].map({lab: i for i, lab in enumerate(NOISE_LEVELS)})
    out = out.sort_values("_o", kind="stable").drop(columns="_o")
    return out.set_index(["noise", "source"])


def noise_change(rows, metrics_shown: Sequence[str] = PIXEL_METRICS):
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
    pandas.DataFrame with columns source, protocol (the evaluation chain; the paper's rows: the
    one they claim), model, n_layers and the eight metrics.
    """
    ours = rows[rows["noise"] == "none"].copy()
    ours = pd.DataFrame({"source": ours_label, "protocol": _protocols(ours),
                         "model": [REGRESSOR_LABELS.get(r, r) for r in ours["regressor"]],
                         "n_layers": ours["n_layers"].astype("Int64"),
                         **{m: ours[m].to_numpy() for m in (*IMAGE_METRICS, *extra_columns)}})
    parts = [ours]
    if with_paper:
        src = "paper"  # the caption says which table, subjects and dataset
        p = paper.table(table)
        parts.append(pd.DataFrame({"source": src, "protocol": p["protocol"], "model": p["label"],
                                   "n_layers": p["n_layers"].astype("Int64"),
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


# ------------------------------------------------- is a difference real?
#: The paper's comparisons, as (comparison, variant a, variant b): a variant is
#: (regressor, n_layers, stage) with stage "final" (stage 2) or "first guess" (stage 1);
#: the difference is a minus b.
PAPER_PAIRS = (
    ("GRU vs ridge", ("gru", 31, "final"), ("ridge", 31, "final")),
    ("GRU vs ridge", ("gru", 15, "final"), ("ridge", 15, "final")),
    ("31 vs 15 blocks", ("gru", 31, "final"), ("gru", 15, "final")),
    ("31 vs 15 blocks", ("ridge", 31, "final"), ("ridge", 15, "final")),
    *(("stage 2 vs stage 1", (r, n, "final"), (r, n, "first guess")) for r, n in
      (("gru", 31), ("gru", 15), ("ridge", 31), ("ridge", 15))),
)
#: Columns of :func:`comparison_differences` (index: comparison, pair, metric).
COMPARISON_COLUMNS = ("a", "b", "mean a", "mean b", "difference", "low", "high", "verdict", "better",
                      "paper: difference", "same way as the paper")
#: Columns of :func:`noise_directions` (index: noise, metric).
NOISE_DIRECTION_COLUMNS = ("noise level", "ours: change %", "low %", "high %", "ours: moves", "paper: change %",
                           "paper: moves", "same way as the paper")
_STAGE_LABELS = {"final": "stage 2", "first guess": "first guess"}


def variant_label(variant) -> str:
    """A variant's name in tables: ``("gru", 31, "final")`` -> ``"GRU-31 stage 2"``,
    ``("ridge", 15, "first guess")`` -> ``"Ridge-15 first guess"``."""
    r, n, stage = variant
    if r in CONTROLS:  # "control: retrieval", whatever its n_layers
        return r
    return f"{REGRESSOR_LABELS.get(r, r)}-{int(n)} {_STAGE_LABELS.get(stage, stage)}"


def _paper_difference(a, b, metric: str) -> float:
    """a minus b in the paper's Table 4 (subject 1; the GRU row, not "GRU (CLIP)"); NaN where it has no such pair."""
    rows = {(r["regressor"], r["n_layers"]): r for r in paper.TABLE4 if r["label"] == REGRESSOR_PAPER_LABELS.get(
        r["regressor"])}
    if a[2] != "final" or b[2] != "final" or metric not in IMAGE_METRICS:
        return float("nan")
    ra, rb = rows.get((a[0], a[1])), rows.get((b[0], b[1]))
    return float("nan") if ra is None or rb is None else float(ra[metric] - rb[metric])


def _better(d, a_label: str, b_label: str, metric: str) -> str:
    if not d.real:
        return "—"
    return a_label if (d.sign > 0) == HIGHER_IS_BETTER[metric] else b_label


def _same_way(sign: int, other: float) -> str:
    """"yes" / "no" when ``sign`` (ours, 0 if not real) and ``other`` (the paper's value) both have a direction."""
    if sign == 0 or not np.isfinite(other) or other == 0:
        return "—"
    return "yes" if sign == np.sign(other) else "no"


def comparison_differences(reports: Mapping, pairs: Sequence = PAPER_PAIRS,
                           metrics_shown: Sequence[str] = (*IMAGE_METRICS, "ssim_2d"), *, n_resamples: int = 2000,
                           confidence: float = 0.95, seed: int = 0):
    """The paper's comparisons with paired-bootstrap intervals: is each difference real?

    Parameters
    ----------
    reports : dict
        ``(regressor, n_layers, stage) -> MetricReport`` with stage ``"final"`` or
        ``"first guess"``, all of the same test images in the same order.
    pairs : sequence of (comparison, variant a, variant b)
        Default :data:`PAPER_PAIRS`; a pair whose reports are not both given is left out.
    metrics_shown : sequence of str
        Metrics compared where both reports computed them (status "ok").
    n_resamples, confidence, seed
        Of :func:`nsdlib.metrics.paired_bootstrap` (the same resamples for every pair and metric).

    Returns
    -------
    pandas.DataFrame
        Indexed by (comparison, pair, metric), columns :data:`COMPARISON_COLUMNS`:
        the two variants' means, ``difference`` = a minus b with its interval
        (``low``, ``high``), ``verdict`` ("real" when the interval excludes 0, else
        "not seen"), ``better`` (the better variant by the metric's direction, "—" when
        not real), the paper's Table 4 difference (NaN where it reports no such pair)
        and whether ours points the same way ("yes", "no", or "—" when either has no direction).
    """
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    rows, index = [], []
    for comparison, a, b in pairs:
        if a not in reports or b not in reports:
            continue
        la, lb = variant_label(a), variant_label(b)
        diffs = metrics.compare_reports(reports[a], reports[b], metrics_shown, **boot)
        means_a, means_b = reports[a].means, reports[b].means
        for m, d in diffs.items():
            theirs = _paper_difference(a, b, m)
            rows.append((la, lb, means_a[m], means_b[m], d.estimate, d.low, d.high, "real" if d.real else "not seen",
                         _better(d, la, lb, m), theirs, _same_way(d.sign, theirs)))
            index.append((comparison, f"{la} − {lb}", m))
    idx = pd.MultiIndex.from_tuples(index, names=["comparison", "pair", "metric"])
    return _with_protocol(pd.DataFrame(rows, index=idx, columns=list(COMPARISON_COLUMNS)), reports, boot)


def control_differences(own, controls: Mapping, variant: tuple[str, int], **bootstrap):
    """The run's own stage-2 scores against each control, with paired-bootstrap intervals.

    Parameters
    ----------
    own : MetricReport
        The run's reconstructions (its regressor and n_layers).
    controls : dict
        Control label (``nsdlib.pipeline.controls.CONTROLS``) -> MetricReport of the same test images.
    variant : (regressor, n_layers)
        The run's.
    **bootstrap
        ``n_resamples``, ``confidence``, ``seed`` of :func:`comparison_differences`.

    Returns
    -------
    pandas.DataFrame
        As :func:`comparison_differences`, one comparison ``"pipeline vs <control>"`` per
        control (difference: pipeline minus control).
    """
    mine = (variant[0], int(variant[1]), "final")
    reports = {mine: own, **{(label, 0, "final"): rep for label, rep in controls.items()}}
    pairs = [(f"pipeline vs {label}", mine, (label, 0, "final")) for label in controls]
    return comparison_differences(reports, pairs, **bootstrap)


def overlap_summary(overlap: Mapping, *, duplicate: float = 0.99):
    """How close test images are to the training set, beside how close training images are to each other.

    Parameters
    ----------
    overlap : dict
        From :func:`nsdlib.pipeline.controls.overlap` (``cosine``, ``train_cosine``).
    duplicate : float
        Cosine at or above which a neighbour is counted as a near-duplicate.

    Returns
    -------
    pandas.DataFrame
        Two rows (test -> nearest training image; training -> nearest other training image),
        columns ``n``, quartiles, ``median``, ``max`` and the share at or above ``duplicate``.
    """
    out = {}
    for label, key in (("test image → nearest training image", "cosine"),
                       ("training image → nearest other training image", "train_cosine")):
        c = np.asarray(overlap[key], np.float64)
        q = np.quantile(c, [0.0, 0.25, 0.5, 0.75, 1.0])
        out[label] = {"n": len(c), "min": q[0], "25 %": q[1], "median": q[2], "75 %": q[3], "max": q[4],
                      f"share ≥ {duplicate:g}": float((c >= duplicate).mean())}
    return pd.DataFrame.from_dict(out, orient="index")


def _moves(sign: int) -> str:
    return {1: "up", -1: "down"}.get(int(sign), "no change seen")


def _paper_moves(change: float) -> str:
    if not np.isfinite(change):
        return "not reported"
    return "up" if change > 0 else "down" if change < 0 else "unchanged"


def noise_directions(reports: Mapping, metrics_shown: Sequence[str] = IMAGE_METRICS, *, n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0):
    """Which way each metric moves from no noise to each noise level, ours beside the paper's Table 6.

    Parameters
    ----------
    reports : dict
        Noise label (``"none"``, ``"8"``, ... ``"256"``) -> MetricReport of the stage-2
        images made from first guesses with that noise, all of the same test images.
    metrics_shown : sequence of str
    n_resamples, confidence, seed
        Of :func:`nsdlib.metrics.paired_bootstrap` of the relative change of the mean from no noise.

    Returns
    -------
    pandas.DataFrame
        Indexed by (noise, metric), columns :data:`NOISE_DIRECTION_COLUMNS`: our change of
        the mean from no noise in % with its interval, "up" / "down" when the interval
        excludes 0 (else "no change seen"), the paper's change in % and direction
        (Table 6), and whether they agree ("yes", "no", "—" when either has no direction).
        Values move; whether that is better depends on the metric (distances: lower is better).
    """
    if "none" not in reports:
        raise ValueError(f"the change from no noise needs a 'none' report; found noise levels {list(reports)}")
    theirs = paper.table(6).set_index("noise")
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    rows, index = [], []
    for lab in [x for x in NOISE_LEVELS if x in reports and x != "none"]:
        diffs = metrics.compare_reports(reports[lab], reports["none"], metrics_shown, relative=True, **boot)
        for m, d in diffs.items():
            p = float((theirs.loc[lab, m] / theirs.loc["none", m] - 1) * 100) if m in theirs else float("nan")
            rows.append((NOISE_LABELS[lab], 100 * d.estimate, 100 * d.low, 100 * d.high, _moves(d.sign), p,
                         _paper_moves(p), _same_way(d.sign, p)))
            index.append((lab, m))
    idx = pd.MultiIndex.from_tuples(index, names=["noise", "metric"])
    return _with_protocol(pd.DataFrame(rows, index=idx, columns=list(NOISE_DIRECTION_COLUMNS)), reports, boot)


def _with_protocol(table, reports: Mapping, boot: Mapping):
    """Record the bootstrap's protocol (resamples, confidence, seed, images) in ``table.attrs``."""
    table.attrs.update(boot)
    table.attrs["n_images"] = next(iter(reports.values())).n_images if reports else 0
    return table


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
    betas = {"squaredcos_cap_v2": "cosine betas", "scaled_linear": "scaled-linear betas"}.get(
        sc.get("beta_schedule", "scaled_linear"), f"{sc.get('beta_schedule')} betas")
    if sc.get("rescale_betas_zero_snr"):
        betas += " rescaled to zero terminal SNR"
    schedule = f"{sc['prediction_type']}, {betas}, {sc['timestep_spacing']} steps"
    noise_at = run.get("noise_at", "first-step")
    t_noise, steps = diffusion.noising_schedule(vd.scheduler(), run["num_steps"], run["strength"], noise_at)
    noised = "no noise (strength 0)" if t_noise is None else \
        f"t = {t_noise}, denoised from t = {int(steps[0])} ({noise_at!r})"
    return pd.DataFrame(
        {"this run": [f"{run['strength']} ({int(run['num_steps'] * run['strength'])} of {run['num_steps']} steps)",
                      noised, "posterior mean", run["guidance_scale"],
                      f"{run['text_weight']} / {1 - run['text_weight']:.1f}", "DDIM, eta 0",
                      schedule, f"{vd.image_size} x {vd.image_size}"],
         "paper (Brain-Diffuser's settings)": ["0.75 (37 of 50 steps)", "t = 741, denoised from t = 721",
                                               "a posterior sample", 7.5, "0.4 / 0.6", "DDIM, eta 0",
                                               "epsilon, scaled-linear betas, leading steps", "512 x 512"]},
        index=["strength", "first guess's latent noised at", "autoencoder's latent of the first guess",
               "guidance scale", "text / vision weight", "sampler", "noise schedule", "output size"])


#: Who noises the first guess's latent where (the ``noise_at`` settings of :mod:`nsdlib.diffusion`).
_NOISE_AT_USERS = {"first-step": "nsdlib's default; diffusers' image-to-image pipelines",
                   "brain-diffuser": "Brain-Diffuser's code (stochastic_encode at DDIM index t_enc)"}


def noise_at_table(run: Mapping, vd) -> pd.DataFrame:
    """Where stage 2 noises the first guess's latent under each ``noise_at`` setting, and what survives.

    Parameters
    ----------
    run : dict
        ``stage2.DIFFUSION_SETTINGS`` (or the quick ones): ``num_steps``, ``strength`` and
        ``noise_at`` (the run's setting, marked).
    vd : nsdlib.diffusion.DualGuidedDiffusion
        The run's model (its ``scheduler()``).

    Returns
    -------
    pandas.DataFrame
        One row per setting (:data:`nsdlib.diffusion.NOISE_AT`): the timestep noised at, the
        first timestep denoised, ``sqrt(alpha_bar)`` (the factor on the first guess's latent)
        and ``sqrt(1 - alpha_bar)`` (on the noise) at the noised timestep, who uses it.
        A setting that cannot run with these settings (Brain-Diffuser's at strength 1) is
        left out.
    """
    rows = {}
    for mode in diffusion.NOISE_AT:
        sched = vd.scheduler()
        try:
            t, steps = diffusion.noising_schedule(sched, run["num_steps"], run["strength"], mode)
        except ValueError:
            continue
        ab = 1.0 if t is None else float(sched.alphas_cumprod[t])
        label = f"{mode!r}" + (" (this run)" if mode == run.get("noise_at", "first-step") else "")
        rows[label] = {"noised at t": "-" if t is None else t,
                       "denoised from t": int(steps[0]) if len(steps) else "-",
                       "first guess's latent x": np.sqrt(ab), "noise x": np.sqrt(1 - ab),
                       "used by": _NOISE_AT_USERS[mode]}
    return pd.DataFrame.from_dict(rows, orient="index")


# ------------------------------------------------------------------ scene score
def scene_score_table(scores: pd.DataFrame, *, source: str, probe: str | None = None):
    """The scene score per stage: accuracy, chance and ratio to chance of each main-object attribute.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``nsdlib.pipeline.evaluation.scene_scores``: one row per (stage, attribute).
    source : str
        Where the images come from (dataset, subject, models): the caption's first words.
    probe : str, optional
        Which probe read the images (its training seconds and held-out accuracy), for the caption.

    Returns
    -------
    pandas.io.formats.style.Styler
        Rows: stages, in the order given; columns: (attribute, accuracy / × chance), two per
        attribute so that the table fits a book page (chance = accuracy / (× chance)).
    """
    wide = scores.pivot(index="stage", columns="attribute", values=["accuracy", "ratio"])
    wide = wide.reindex(list(dict.fromkeys(scores["stage"])))
    attrs = list(dict.fromkeys(scores["attribute"]))
    table = pd.DataFrame({(a, col): wide[(key, a)] for a in attrs
                          for key, col in (("accuracy", "accuracy ↑"), ("ratio", "× chance ↑"))})
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    table.index.name = "stage"
    n = int(scores["n"].iloc[0]) if len(scores) else 0
    caption = (f"ours: {source}; scene score of the main object on {n} test images, read by "
               f"{probe or 'the scene probe trained on mini-NSD'}. × chance: the accuracy over the "
               "permutation chance Σ_k p_pred(k) p_true(k), the expected accuracy of the same readings "
               "against shuffled truth. The paper has no such column: NSD's scenes have no ground truth.")
    return table.style.format({c: "{:.2f}" if c[1].startswith("accuracy") else "{:.1f}×" for c in table.columns},
                              na_rep="n/a").set_caption(caption)


def scene_score_summary(scores: pd.DataFrame, *, threshold: float = 2.0) -> str:
    """One line per stage, read from the scene scores: each attribute's multiple of chance, and
    which reach ``threshold`` times chance.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``nsdlib.pipeline.evaluation.scene_scores``.
    threshold : float
        The multiple of chance counted as read ("at least 2 × chance").
    """
    lines = []
    for stage, rows in scores.groupby("stage", sort=False):
        ratios = ", ".join(f"{r.attribute} {r.ratio:.1f}×" for r in rows.itertuples())
        above = [r.attribute for r in rows.itertuples() if r.ratio >= threshold]
        lines.append(f"{stage}: {ratios} chance; at least {threshold:g}× chance: "
                     f"{', '.join(above) if above else 'none'}")
    return "\n".join(lines)


# ------------------------------------------------------------- regions and the ledger (chapters 11, 12)
def region_contrast(reports: Mapping, a: str, b: str, *, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Region ``a`` against region ``b`` on each of the eight metrics, with paired-bootstrap intervals.

    Parameters
    ----------
    reports : dict
        Region -> MetricReport of the same test images (:func:`nsdlib.pipeline.regions.evaluate_regions`).
    a, b : str
        The two regions (e.g. the early and the higher voxels).

    Returns
    -------
    pandas.DataFrame
        Indexed by metric (the paper's order, low-level first): ``level`` ("low" or "high",
        :data:`~nsdlib.names.METRIC_LEVELS`), the two means, ``difference`` (a − b) with its interval
        ``low``, ``high``, and ``better``: the region that scores better when the interval excludes 0
        (by the metric's direction), else "—".
    """
    diffs = metrics.compare_reports(reports[a], reports[b], IMAGE_METRICS, n_resamples=n_resamples, seed=seed)
    rows = {}
    for level, members in METRIC_LEVELS.items():
        for m in (m for m in members if m in diffs):
            d = diffs[m]
            rows[m] = {"level": level, a: reports[a].means[m], b: reports[b].means[m], "difference": d.estimate,
                       "low": d.low, "high": d.high, "better": _better(d, a, b, m)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    return out


def ledger_table(reports: Mapping, steps: Mapping) -> pd.DataFrame:
    """The ledger's rows: each row's means of the eight metrics, and the step it adds to the row above.

    Parameters
    ----------
    reports : dict
        Row label -> MetricReport, in the ledger's order (:func:`nsdlib.pipeline.ledger.evaluate_ledger`).
    steps : dict
        Row label -> the step it adds (None for the first row); a row not in it names its own step.
    """
    rows = {label: {"step": steps.get(label, label) or "—", **{METRIC_HEADERS[m]: rep.means[m] for m in IMAGE_METRICS}}
            for label, rep in reports.items()}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "row"
    return out


def ledger_changes(steps: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Each step's change per metric as text, "−0.120 [−0.15, −0.09]", and its share of the total loss.

    Parameters
    ----------
    steps : pandas.DataFrame
        From :func:`nsdlib.pipeline.ledger.ledger_steps` (index step, metric).

    Returns
    -------
    pandas.DataFrame
        One row per step (in the ledger's order), one column per metric (its header), then a row per
        step of shares, ``"<step>: share of the loss"``, in percent (the shares of the chain add up to 100).
    """
    order = list(dict.fromkeys(steps.index.get_level_values("step")))
    cols = [m for m in IMAGE_METRICS if m in steps.index.get_level_values("metric")]
    cell = {(st, m): f"{r['change']:+.{decimals}f} [{r['low']:+.{decimals}f}, {r['high']:+.{decimals}f}]"
            for (st, m), r in steps.iterrows()}
    share = {(st, m): ("" if not np.isfinite(r["share"]) else f"{100 * r['share']:.0f} %")
             for (st, m), r in steps.iterrows()}
    rows = {st: {METRIC_HEADERS[m]: cell.get((st, m), "") for m in cols} for st in order}
    rows.update({f"{st}: share of the loss": {METRIC_HEADERS[m]: share.get((st, m), "") for m in cols}
                 for st in order if any(share.get((st, m)) for m in cols)})
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "step"
    return out
