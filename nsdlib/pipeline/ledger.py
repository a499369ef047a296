"""Chapter 12: a ledger of losses on mini-NSD, where every intermediate of the decoder has a truth.

The decoder (ridge at stage 1, as Brain-Diffuser's baseline, so that every row can be made
without training a network again) is run with its inputs replaced by their truths, one at a
time, from the stimulus down to the pipeline:

0. ``stimulus``: the test images themselves (every metric at its best);
1. ``generators from the truth``: the test images' own VDVAE latents (the run's first
   ``n_layers`` blocks, :func:`nsdlib.pipeline.stage1.reconstructions`) and stage 2 guided by
   their own CLIP embeddings: what the two generators can do at all;
2. ``+ stage-2 regression``: the same first guesses, stage 2 guided by the CLIP embeddings that
   ridge predicts from the *true* amplitudes;
3. ``+ stage-1 regression``: both stages predicted from the true amplitudes
   (:func:`nsdlib.pipeline.decode.decode_betas` on :func:`true_betas`);
4. ``+ GLM (the pipeline, ridge)``: both stages from the GLM's betas, the run's ridge pipeline;
5. ``the run's regressor``: the run's own stage 2 (its stage-1 regressor, GRU by default), when
   it is not ridge.

Each step's cost is the change from the row above it, on the same test images, with a paired
bootstrap interval (:func:`nsdlib.metrics.compare_reports`), so the steps 1-4 add up to the
whole loss from the stimulus to the pipeline. :func:`first_guess_ledger` does the same for
stage 1 alone (the first guesses: VDVAE ceiling, stage-1 regression, GLM).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from .. import metrics as M
from .. import mini
from ..config import RunConfig
from ..names import HIGHER_IS_BETTER, IMAGE_METRICS
from . import context, decode, evaluation, stage1, stage2
from .results import provenance, result_row, write_results

__all__ = ["FIRST_GUESS_STEPS", "LEDGER_PREFIX", "LEDGER_STEPS", "evaluate_ledger", "first_guess_ledger",
           "ledger_steps", "true_betas"]

#: The ``regressor`` of a ledger row in the results file: ``"ledger: <row>"``.
LEDGER_PREFIX = "ledger: "
#: The rows of the ledger of final images, top (truth) to bottom, and the step each row adds.
LEDGER_STEPS = {"stimulus": None, "generators from the truth": "generators' ceiling",
                "+ stage-2 regression": "stage-2 regression", "+ stage-1 regression": "stage-1 regression",
                "+ GLM (the pipeline, ridge)": "GLM"}
#: The rows of the ledger of first guesses (stage 1 alone).
FIRST_GUESS_STEPS = {"stimulus": None, "VDVAE from the true latents": "VDVAE ceiling",
                     "+ stage-1 regression": "stage-1 regression", "+ GLM (the pipeline, ridge)": "GLM"}


def true_betas(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """mini-NSD's true single-trial amplitudes, prepared as the GLM's betas are.

    The simulation's amplitudes (percent signal change, before the HRF, the noise and the GLM)
    of the trials the subject's data uses, averaged over each image's repeats and z-scored with
    the training images' mean and standard deviation (ddof = 1), in the columns of the subject's
    betas (its kept nsdgeneral voxels).

    Returns
    -------
    train, test : ndarray of shape (n_train, n_voxels), (n_test, n_voxels), float32
        In the order of the subject's ``train_ids`` and ``test_ids``.
    """
    if cfg.dataset != "mini":
        raise ValueError(f"true amplitudes exist on mini-NSD only; this run's dataset is {cfg.dataset!r}")
    sd = context.get(cfg).subject()
    t = mini.truth(cfg.nsd_root, cfg.subject)
    sessions = sd.info.get("sessions")
    keep = t.trial_session <= int(sessions) if isinstance(sessions, (int, np.integer)) else slice(None)
    ids, amps = t.trial_nsd_id[keep], t.amplitudes[keep][:, sd.voxel_index].astype(np.float64)
    out = []
    for want in (sd.train_ids, sd.test_ids):
        pos = {int(i): k for k, i in enumerate(want)}
        rows = np.array([pos.get(int(i), -1) for i in ids])
        sums = np.zeros((len(want), amps.shape[1]))
        np.add.at(sums, rows[rows >= 0], amps[rows >= 0])
        counts = np.bincount(rows[rows >= 0], minlength=len(want))
        if (counts == 0).any():
            raise ValueError(f"{int((counts == 0).sum())} image(s) of the subject's split have no trial in the truth")
        out.append(sums / counts[:, None])
    mean, std = out[0].mean(0), out[0].std(0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    return tuple(((x - mean) / std).astype(np.float32) for x in out)


def _final_images(cfg: RunConfig, progress: bool) -> dict:
    """Row label -> a call making that row's stage-2 images (cached steps)."""
    ridge = stage1.first_guesses(cfg, regressor="ridge")
    ceiling = stage1.reconstructions(cfg)
    truth = functools.cache(lambda: true_betas(cfg))  # read once, when the first row needs it

    rows = {
        "stimulus": lambda: evaluation.ground_truth(cfg),
        "generators from the truth": lambda: stage2.stage2_images(cfg, ceiling, embeddings="true", progress=progress),
        "+ stage-2 regression": lambda: decode.stage2_from(
            cfg, ceiling, decode.clip_from_betas(cfg, *truth()), progress=progress),
        "+ stage-1 regression": lambda: decode.decode_betas(cfg, *truth(), progress=progress)["images"],
        "+ GLM (the pipeline, ridge)": lambda: stage2.stage2_images(cfg, ridge, progress=progress),
    }
    if cfg.regressor != "ridge":
        rows[f"the run's regressor ({cfg.regressor})"] = lambda: evaluation.final_images(cfg)
    return rows


def _first_guess_images(cfg: RunConfig) -> dict:
    return {"stimulus": lambda: evaluation.ground_truth(cfg),
            "VDVAE from the true latents": lambda: stage1.reconstructions(cfg),
            "+ stage-1 regression": lambda: stage1.first_guesses_from_betas(cfg, *true_betas(cfg))["images"],
            "+ GLM (the pipeline, ridge)": lambda: stage1.first_guesses(cfg, regressor="ridge")}


def ledger_steps(reports: dict, steps: dict, metrics_shown=IMAGE_METRICS, *, n_resamples: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """Each row's change from the row above it, per metric, with a paired bootstrap interval.

    Parameters
    ----------
    reports : dict
        Row label -> MetricReport, in the ledger's order (all of the same test images).
    steps : dict
        Row label -> the name of the step it adds (None for the first row), e.g. :data:`LEDGER_STEPS`;
        rows not in it (the run's regressor) are compared with the row above them too.

    Returns
    -------
    pandas.DataFrame
        Indexed by (step, metric): ``from``, ``to`` (row means), ``change`` (to minus from) and its
        interval ``low``, ``high``; ``loss`` (the change turned so that a loss is positive, whatever
        the metric's direction) and ``share`` (of the total loss from the first row to the last row
        of ``steps``; the steps' shares add up to 1).
    """
    labels = list(reports)
    rows, index = [], []
    for above, below in zip(labels, labels[1:]):
        diffs = M.compare_reports(reports[below], reports[above], metrics_shown, n_resamples=n_resamples, seed=seed)
        step = steps.get(below) or below
        for m, d in diffs.items():
            sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
            rows.append({"from": reports[above].means[m], "to": reports[below].means[m], "change": d.estimate,
                         "low": d.low, "high": d.high, "real": d.real, "loss": -sign * d.estimate})
            index.append((step, m))
    out = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["step", "metric"]))
    chain = [steps[k] for k in labels[1:] if steps.get(k)]
    total = out.loc[chain, "loss"].groupby(level="metric").sum()
    out["share"] = [r["loss"] / total[m] if step in chain and total.get(m, 0) else np.nan
                    for (step, m), r in out.iterrows()]
    return out


def _score_rows(cfg: RunConfig, makers: dict, progress: bool) -> tuple[dict, dict]:
    images = {label: np.asarray(make()) for label, make in makers.items()}
    reports = {label: evaluation.score(cfg, im, progress=progress) for label, im in images.items()}
    return images, reports


def evaluate_ledger(cfg: RunConfig, *, write: bool = True, n_resamples: int = 2000, progress: bool = False) -> dict:
    """The ledger of final images: every row made and scored, every step's change with its interval.

    Parameters
    ----------
    write : bool
        Merge the rows 1-3 (those that are not the run's rows already) into the run's results file
        (``regressor`` ``"ledger: <row>"``, the run's ``n_layers``).

    Returns
    -------
    dict
        ``images`` and ``reports`` (row label -> uint8 images, MetricReport), ``steps`` (:func:`ledger_steps`),
        ``rows`` (the results rows written), ``scene`` (the scene score of each row, or None).
    """
    images, reports = _score_rows(cfg, _final_images(cfg, progress), progress)
    steps = ledger_steps(reports, LEDGER_STEPS, n_resamples=n_resamples, seed=cfg.seed)
    new = list(LEDGER_STEPS)[1:4]
    rows = [result_row(cfg, LEDGER_PREFIX + label, cfg.n_layers, "none", reports[label]) for label in new]
    if write:
        write_results(cfg, rows, *provenance(reports[lab] for lab in new))
    scene = None
    if evaluation.scene_probe_info(cfg)["available"]:
        scene = evaluation.scene_scores(cfg, stages=images)
    return {"images": images, "reports": reports, "steps": steps, "rows": pd.DataFrame(rows), "scene": scene}


def first_guess_ledger(cfg: RunConfig, *, n_resamples: int = 2000, progress: bool = False) -> dict:
    """The ledger of stage 1 alone (first guesses, scored at the stimulus size like the final images).

    Returns
    -------
    dict
        ``images``, ``reports``, ``steps`` as :func:`evaluate_ledger` (rows of :data:`FIRST_GUESS_STEPS`).
    """
    images, reports = _score_rows(cfg, _first_guess_images(cfg), progress)
    return {"images": images, "reports": reports,
            "steps": ledger_steps(reports, FIRST_GUESS_STEPS, n_resamples=n_resamples, seed=cfg.seed)}
