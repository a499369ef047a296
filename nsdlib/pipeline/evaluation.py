"""Chapters 08-10: noise sensitivity, the eight metrics per run, and the run's results file.

- :func:`noised_first_guesses` / :func:`noise_sensitivity`: the paper's noise protocol
  (:mod:`nsdlib.noise`) applied to the run's first guesses, and the stage-2 images made
  from each noised version (``nsdlib.pipeline.stage2.stage2_images``); the noise is added
  to the first guess at stage 1's size (``placement="first-guess"``, the book's choice) or
  after upscaling it to the diffusion model's size (``"upscaled"``, as on Brain-Diffuser's
  512-px first-guess files); :func:`noise_placements` scores Table 6 under both.
- :func:`score`: one set of reconstructions against the run's test stimuli, every metric
  per image, cached in the run's store (keyed by a hash of both image sets, the metric
  settings and which networks could be used, so fetching weights later recomputes), under
  one evaluation protocol (:mod:`nsdlib.protocols`: ``"brain-diffuser"``, the default, or
  ``"mindeye"``) whose card (:func:`run_card`) goes on the report and on the results rows.
- :func:`scene_scores`: mini-NSD's ground-truth scene score (:mod:`nsdlib.mini.scene`: the
  main object's colour, shape and position read by the scene probe, beside chance) for each
  stage of a reconstruction (:func:`scene_stages`: chapter 05 stage 1, chapter 07 stage 2).
- :func:`explorer_data`: what chapter 10's explorer (``nsdlib.report.explorer``) shows.
- :func:`evaluate`: ridge vs GRU and 15 vs 31 layers (as the run allows) and, optionally,
  noise levels; each result becomes a row of ``<run_dir>/results.json`` and
  ``results.csv``, merged with the rows already there and written atomically by
  :mod:`nsdlib.pipeline.results` (the file's one writer and one reader; its format is
  described there). ``nsdlib.report.cross_subject`` aggregates those files across subjects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import diffusion as D
from .. import features as F
from .. import metrics as M
from .. import noise as N
from ..config import RunConfig
from ..images import check_images
from ..mini import read_scenes
from ..mini import scene as S
from ..names import DATASET_LABELS, MODEL_SET_LABELS, NOISE_LEVELS, SUBJECTS
from ..protocols import DEFAULT_PROTOCOL, ProtocolCard, get_protocol, protocol_card
from ..store import array_key, load_arrays, save_arrays
from . import context, data, stage1, stage2
from .results import RESULT_COLUMNS, provenance, result_row, write_results

__all__ = [
    "NOISE_PLACEMENTS",
    "PLACEMENT_IMAGES",
    "QUICK_NOISE_IMAGES",
    "default_indices",
    "default_noise_levels",
    "evaluate",
    "explorer_data",
    "final_images",
    "first_guesses",
    "ground_truth",
    "metric_plan",
    "noise_placements",
    "noise_sensitivity",
    "noised_first_guesses",
    "placement_indices",
    "run_card",
    "run_label",
    "scene_probe_info",
    "scene_scores",
    "scene_stages",
    "score",
]

_VERSION = 1

#: Where chapter 08's noise is added: to the first guess at stage 1's size (the book's
#: choice), or after upscaling it to the diffusion model's size as stage 2 resizes it.
NOISE_PLACEMENTS = ("first-guess", "upscaled")


# ------------------------------------------------------------------- inputs
def run_label(cfg: RunConfig) -> str:
    """A one-line description of the run for table captions."""
    ds = DATASET_LABELS[cfg.dataset]
    models = MODEL_SET_LABELS[cfg.models]
    return f"{ds}, subject {cfg.subject}, {models}" + (", quick" if cfg.quick else "")


def ground_truth(cfg: RunConfig) -> np.ndarray:
    """The run's test stimuli at their stored size (425 for NSD, 128 for mini-NSD), uint8."""
    return data.stimuli(cfg, "test")


def _test_ids(cfg: RunConfig) -> np.ndarray:
    return np.asarray(context.get(cfg).subject().test_ids)


def run_card(cfg: RunConfig, protocol: str | None = None, *, indices=None, n_images: int | None = None
             ) -> ProtocolCard:
    """The protocol card of scores of the run's test images (all, or the positions ``indices``).

    The image set is the run's test set (NSD: the shared images the subject saw; mini-NSD: its
    test images), in the order of its test ids, whose digest the card carries; each image's
    repeats averaged (the run's betas); one sample per image, no selection; the run's seed.
    Without subject data (or when ``n_images``, the number scored, differs from the number of
    test ids) the digest is of the positions, and the image set says so.
    """
    try:
        ids = _test_ids(cfg)
    except Exception:  # noqa: BLE001 (no subject data: positions stand in for the ids)
        ids = None
    known = ids is not None and (n_images is None or len(ids) == n_images)
    if not known:
        ids = np.arange(n_images if n_images is not None else len(ground_truth(cfg)))
    which = "all" if indices is None else f"{len(indices)} chosen"
    if indices is not None:
        ids = ids[np.asarray(indices, dtype=np.int64)]
    image_set = (f"{DATASET_LABELS[cfg.dataset]} test set of subject {cfg.subject} ({which})"
                 + ("" if known else "; ids unknown, positions digested"))
    return protocol_card(protocol, image_set=image_set, ids=ids, repeats="betas averaged over each image's repeats",
                         seed=cfg.seed)


def first_guesses(cfg: RunConfig) -> np.ndarray:
    """The run's stage-1 first guesses of the test images (``stage1.first_guesses``), uint8."""
    return stage1.first_guesses(cfg)


def final_images(cfg: RunConfig) -> np.ndarray:
    """The run's stage-2 reconstructions of the test images (``stage2.stage2_images``), uint8."""
    return _stage2(cfg)


def _stage2(cfg: RunConfig, first_guesses=None, noise: str | None = None, indices=None) -> np.ndarray:
    if first_guesses is None:
        return stage2.stage2_images(cfg)
    extra = {} if indices is None else {"indices": indices}
    return stage2.stage2_images(cfg, first_guesses=first_guesses, noise=noise, **extra)


# -------------------------------------------------------------------- noise
def _model_size(cfg: RunConfig) -> int:
    """The side of the images the run's diffusion model makes (512 for Versatile Diffusion)."""
    return int(stage2.diffusion_model(cfg).image_size)


def _check_placement(placement: str) -> str:
    if placement not in NOISE_PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(map(repr, NOISE_PLACEMENTS))}; found {placement!r}")
    return placement


def noised_first_guesses(cfg: RunConfig, level, guesses=None, ids=None, *,
                         placement: str = "first-guess") -> np.ndarray:
    """The run's first guesses with the paper's noise at ``level`` (seeded by ``cfg.seed``).

    Parameters
    ----------
    level : {"none", 8, 16, 32, 64, 256}
    guesses : ndarray of uint8, shape (n_images, h, w, 3), optional
        Default: ``nsdlib.pipeline.stage1.first_guesses(cfg)``.
    ids : array-like of int, optional
        One stable key per image (default the run's test ids when they match in number,
        else positions), so that an image gets the same noise in any subset.
    placement : {"first-guess", "upscaled"}
        ``"first-guess"``: noise added to the first guess at its own size (64 px for the
        real VDVAE, 32 for the mini one), then stage 2 upscales it. ``"upscaled"``: the
        first guess is first resized to the diffusion model's size with stage 2's own
        resize (:func:`nsdlib.diffusion.resize_to_model`) and the noise is added there,
        one value per pixel of the larger image.

    Returns
    -------
    ndarray of uint8, shape (n_images, s, s, 3)
        ``s`` is the first guesses' side, or the model's with ``"upscaled"``.
    """
    fg = first_guesses(cfg) if guesses is None else guesses
    if _check_placement(placement) == "upscaled":
        fg = D.resize_to_model(fg, _model_size(cfg))
    if ids is None:
        try:
            test_ids = _test_ids(cfg)
            ids = test_ids if len(test_ids) == len(fg) else None
        except Exception:  # noqa: BLE001 (no subject data: positions are the keys)
            ids = None
    return N.add_noise(fg, level, seed=cfg.seed, ids=ids)


def noise_sensitivity(cfg: RunConfig, levels: Sequence = NOISE_LEVELS, *, guesses=None, ids=None,
                      indices=None, stage2: Callable | None = None,
                      placement: str = "first-guess") -> dict[str, dict[str, np.ndarray]]:
    """Stage-2 images made from noised first guesses, one set per noise level.

    Parameters
    ----------
    cfg : RunConfig
        The run (the paper uses the 15-layer GRU first guess).
    levels : sequence
        Noise levels (labels or amplitudes), default all of Table 6.
    guesses : ndarray of uint8, optional
        First guesses of all test images; default ``nsdlib.pipeline.stage1.first_guesses(cfg)``.
    indices : sequence of int, optional
        Only these test images (positions) go through stage 2 (a quick run uses a few);
        the noise of each image is the same as in a full run.
    stage2 : callable, optional
        ``stage2(cfg, first_guesses=..., noise=label[, indices=...]) -> uint8 images`` for the
        noised levels and ``stage2(cfg)`` (the run's own images) for ``"none"``; default
        ``nsdlib.pipeline.stage2.stage2_images`` (cached per noise label and image hash).
    placement : {"first-guess", "upscaled"}
        Where the noise is added (:func:`noised_first_guesses`). The stage-2 label of an
        upscaled level is ``"<level> upscaled"``. ``"none"`` is the run's own stage-2 images
        under both placements (without noise there is nothing to place; the upscaled uint8
        first guess differs from stage 2's own resize only by rounding to whole grey levels).

    Returns
    -------
    dict
        Label -> ``{"first_guess": noised first guesses, "final": stage-2 images}`` (of
        ``indices`` only, when given).
    """
    fg = first_guesses(cfg) if guesses is None else guesses
    run = stage2 or _stage2
    idx = None if indices is None else np.asarray(indices, dtype=np.int64)
    suffix = "" if _check_placement(placement) == "first-guess" else f" {placement}"
    out = {}
    for level in levels:
        label = N.noise_label(level)
        noised = noised_first_guesses(cfg, label, fg, ids, placement=placement)
        if label == "none":  # the run's own stage-2 images (chapter 07), shared cache
            final = run(cfg)
            final = final if idx is None else final[idx]
        else:
            final = run(cfg, first_guesses=noised, noise=label + suffix, **({} if idx is None else {"indices": idx}))
        check_images(final, f"stage-2 images for noise {label}")
        out[label] = {"first_guess": noised if idx is None else noised[idx], "final": final}
    return out


def noise_placements(cfg: RunConfig, levels: Sequence = NOISE_LEVELS, *, indices=None,
                     placements: Sequence[str] = NOISE_PLACEMENTS, guesses=None, clip=None,
                     progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Table 6 under each noise placement: stage 2 from noised first guesses, scored.

    Parameters
    ----------
    levels : sequence
        Noise levels (default all of Table 6).
    indices : sequence of int, optional
        Only these test images (positions), as :func:`noise_sensitivity`.
    placements : sequence of {"first-guess", "upscaled"}
    guesses : ndarray of uint8, optional
        The run's first guesses (default ``stage1.first_guesses(cfg)``).
    clip : optional
        See :func:`score`.

    Returns
    -------
    rows : pandas.DataFrame
        One row per (placement, noise level): :data:`~nsdlib.pipeline.results.RESULT_COLUMNS`
        plus ``placement`` and ``noise_size`` (the side, in pixels, of the image the noise was
        added to). Never written to the results file (its rows are keyed by noise level only;
        :func:`evaluate` writes the book's placement there).
    reports : dict
        ``(placement, noise label) -> MetricReport``.
    """
    fg = first_guesses(cfg) if guesses is None else guesses
    parts, reports = [], {}
    for placement in placements:
        ns = noise_sensitivity(cfg, levels, guesses=fg, indices=indices, placement=placement)
        recs = {(cfg.regressor, cfg.n_layers, lab): ns[lab]["final"] for lab in ns}
        rows, reps = evaluate(cfg, reconstructions=recs, indices=indices, clip=clip, progress=progress, write=False)
        side = _model_size(cfg) if placement == "upscaled" else int(fg.shape[1])
        parts.append(rows.assign(placement=placement, noise_size=side))
        reports.update({(placement, lab): reps[(cfg.regressor, cfg.n_layers, lab)] for lab in ns})
    return pd.concat(parts, ignore_index=True), reports


# ------------------------------------------------------------------ scoring
def metric_plan(cfg: RunConfig, clip=None, protocol: str | None = None) -> dict[str, str]:
    """What each feature metric will be computed with in this run, without loading anything.

    Returns metric -> ``"real"``, ``"mini"`` (the mini scene networks of :mod:`nsdlib.mini.scene`,
    with their fingerprint), ``"small-clip"`` or ``"unavailable: <reason>"``. With
    ``models="pretrained"`` every metric is ``"real"`` (a missing asset raises when the
    networks are built). ``protocol``: whose weights (MindEye's EfficientNet-B1: IMAGENET1K_V2).
    """
    ctx = context.get(cfg)
    plan = {}
    for metric in F.METRIC_ASSETS:
        asset = F.metric_asset(metric, protocol)
        src = ctx.source(asset)
        plan[metric] = {"pretrained": "real", "mini": f"mini {src.fingerprint}"}.get(
            src.kind, f"unavailable: asset {asset!r} absent")
    if isinstance(clip, str):
        plan["clip"] = f"unavailable: {clip}"
    elif clip is None:
        plan["clip"] = "real" if cfg.models == "pretrained" else "unavailable: no small CLIP"
    else:
        plan["clip"] = "given" if cfg.models == "pretrained" else "small-clip"
    return plan


def _default_clip(cfg: RunConfig):
    """The CLIP of the run's identification metric.

    Returns None for ``models="pretrained"`` (CLIP ViT-L/14 from the "clip" asset), a
    :class:`~nsdlib.metrics.FeatureNetwork` on the projected class token of stage 2's small
    CLIP for ``models="mini"`` when the mini model zoo has trained one, and otherwise a
    sentence saying why the run has no CLIP metric (stage 2's randomly initialised stand-in
    is never used for a metric).
    """
    if cfg.models == "pretrained":
        return None
    src = stage2.model_sources(cfg)["clip"]
    if src.kind != "mini":
        return ("not available: the mini model zoo has not trained a small CLIP (`nsdlib mini train-models`); "
                "stage 2's random stand-in is not a metric")
    emb = stage2.clip_embedder(cfg)
    return F.clip_network(lambda images: emb.vision(images, progress=False)[:, 0],
                          description=f"small CLIP trained on mini-NSD (not ViT-L/14) [{src.fingerprint}]")


def _mini_models(cfg: RunConfig):
    """The mini model zoo folder whose scene networks stand in for the real feature networks, or None."""
    src = context.get(cfg).source("swav")
    return Path(src.path).parent if src.kind == "mini" else None


class _Scorer:
    """One ImageEvaluator per run and protocol, built on the first cache miss (loading networks is slow)."""

    def __init__(self, cfg: RunConfig, gt, clip, batch_size: int, progress: bool, protocol=None):
        self.cfg, self.gt, self.clip, self.batch_size, self.progress = cfg, gt, clip, batch_size, progress
        self.protocol = get_protocol(protocol)
        self._ev = None

    def evaluator(self) -> M.ImageEvaluator:
        if self._ev is None:
            reason = self.clip if isinstance(self.clip, str) else None
            nets, unavailable = F.feature_networks(self.cfg.models, clip=None if reason else self.clip,
                                                   device=self.cfg.torch_device(), mini_models=_mini_models(self.cfg),
                                                   protocol=self.protocol)
            if reason:
                unavailable["clip"] = reason
            self._ev = M.ImageEvaluator(self.gt, networks=nets, unavailable=unavailable,
                                        ssim_mode=self.protocol.ssim_mode, batch_size=self.batch_size,
                                        device=self.cfg.torch_device(), progress=self.progress,
                                        also_ssim_2d=True, protocol=self.protocol)
        return self._ev


def score(cfg: RunConfig, reconstructions, *, gt=None, clip=None, batch_size: int = 32, progress: bool = True,
          protocol: str | None = None, card: ProtocolCard | None = None,
          _scorer: _Scorer | None = None) -> M.MetricReport:
    """Every image metric of one set of reconstructions against the run's test stimuli, cached.

    Parameters
    ----------
    reconstructions : ndarray of uint8, shape (n_images, h, w, 3)
        In the order of the test ids.
    gt : ndarray of uint8, optional
        Ground truth (default :func:`ground_truth`).
    clip : callable or model, optional
        For the CLIP metric (default: ViT-L/14 for pretrained models, the run's small CLIP
        for mini models).
    protocol : {"brain-diffuser", "mindeye"}, optional
        The evaluation protocol (:mod:`nsdlib.protocols`); default ``"brain-diffuser"``.
    card : ProtocolCard, optional
        Attached to the report; default :func:`run_card` when ``gt`` is the run's own.

    Returns
    -------
    MetricReport
        With an extra per-image entry ``"ssim_2d"`` (the true 2-D SSIM) beside ``"ssim"``
        (Brain-Diffuser's column mode; under ``"mindeye"`` both are the 2-D SSIM), naming
        its protocol.
    """
    own_gt = gt is None
    gt = ground_truth(cfg) if gt is None else gt
    M._check_pair(gt, reconstructions)
    if clip is None and _scorer is None:
        clip = _default_clip(cfg)
    if _scorer is not None and protocol is not None and get_protocol(protocol) != _scorer.protocol:
        raise ValueError(f"score: protocol {protocol!r} differs from its scorer's {_scorer.protocol.name!r}")
    scorer = _scorer or _Scorer(cfg, gt, clip, batch_size, progress, protocol)
    proto = scorer.protocol
    params = {"v": _VERSION, "metrics_v": 1, "gt": array_key(gt), "rec": array_key(reconstructions),
              "models": cfg.models, "plan": metric_plan(cfg, scorer.clip, proto.name), "size": int(gt.shape[1]),
              "ssim_mode": proto.ssim_mode, "clip": _clip_fingerprint(scorer.clip, gt)}
    if proto.name != DEFAULT_PROTOCOL:  # the default's key stays as before protocols, so its cached scores still hit
        params["protocol"] = proto.name

    def compute():
        return scorer.evaluator().evaluate(reconstructions).to_dict()

    report = M.MetricReport.from_dict(context.get(cfg).store.json("metrics", params, compute))
    if card is None and own_gt:
        card = run_card(cfg, proto.name, n_images=len(gt))
    return report if card is None else report.with_card(card)


def _clip_fingerprint(clip, gt) -> str | None:
    """A key of the CLIP used: its description, or for a bare callable its features of two stimuli."""
    if isinstance(clip, M.FeatureNetwork):
        return clip.description
    if clip is None or isinstance(clip, str) or not callable(clip):
        return clip if isinstance(clip, str) else None
    feats = clip(np.asarray(gt[:2]))
    if hasattr(feats, "detach"):
        feats = feats.detach().float().cpu().numpy()
    return array_key(np.round(np.asarray(feats, dtype=np.float32), 4))


def _latents(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) test latents of stage 1 for the latent MSE/MAE."""
    out = stage1.test_latents(cfg)
    return out["true"], out["pred"]


# ------------------------------------------------------------------ evaluate
def _variants(cfg: RunConfig, variants) -> list[tuple[str, int]]:
    if variants is not None:
        return [(str(r), int(n)) for r, n in variants]
    if cfg.quick:
        return [(cfg.regressor, cfg.n_layers)]
    out = [("ridge", 15), ("ridge", 31), ("gru", 15), ("gru", 31)]
    if (cfg.regressor, cfg.n_layers) not in out:
        out.append((cfg.regressor, cfg.n_layers))
    return out


def evaluate(cfg: RunConfig, *, variants: Sequence[tuple[str, int]] | None = None,
             reconstructions: dict | None = None, noise_levels: Sequence = (), indices=None, clip=None,
             batch_size: int = 32, progress: bool = True, write: bool = True, protocol: str | None = None):
    """Score the run's stage-2 reconstructions and write the run's results file.

    Parameters
    ----------
    cfg : RunConfig
    variants : sequence of (regressor, n_layers), optional
        Default: ridge and GRU at 15 and 31 layers (``quick``: the run's own only).
    reconstructions : dict, optional
        ``{(regressor, n_layers, noise): uint8 images}`` to score instead of asking
        stage 2 (for tests, or images made elsewhere).
    noise_levels : sequence
        Also score :func:`noise_sensitivity` at these levels for the run's own
        regressor and n_layers (chapter 08).
    indices : sequence of int, optional
        Score only these test images (positions); ``reconstructions`` then hold just them.
        Such rows are returned but never written to the results file, which holds
        scores over the whole test set only.
    clip : optional
        See :func:`score`.
    write : bool
        Merge the rows into ``<run_dir>/results.json`` / ``.csv``.
    protocol : {"brain-diffuser", "mindeye"}, optional
        The evaluation protocol (:mod:`nsdlib.protocols`); default ``"brain-diffuser"``. Each
        row names it and its card's key; the cards go into the results file.

    Returns
    -------
    rows : pandas.DataFrame
        One row per (regressor, n_layers, noise) scored now (:data:`~nsdlib.pipeline.results.RESULT_COLUMNS`).
    reports : dict
        ``(regressor, n_layers, noise) -> MetricReport`` (per-image values for the chapters).
    """
    gt = ground_truth(cfg)
    n_test = len(gt)
    idx = None if indices is None else np.asarray(indices, dtype=np.int64)
    if idx is not None:
        gt = gt[idx]
    if clip is None:
        clip = _default_clip(cfg)
    scorer = _Scorer(cfg, gt, clip, batch_size, progress, protocol)
    card = run_card(cfg, scorer.protocol.name, indices=idx, n_images=n_test)
    todo: dict[tuple[str, int, str], Callable[[], np.ndarray]] = {}
    if reconstructions is not None:
        for (r, n, lab), ims in reconstructions.items():
            todo[(str(r), int(n), N.noise_label(lab))] = (lambda x=ims: x)
    else:
        def plain(c):
            return lambda: _stage2(c) if idx is None else _stage2(c)[idx]

        for r, n in _variants(cfg, variants):
            todo[(r, n, "none")] = plain(cfg.replace(regressor=r, n_layers=n))
        levels = [N.noise_label(x) for x in noise_levels if N.noise_label(x) != "none"]
        if levels:
            def noisy(label):
                return lambda: noise_sensitivity(cfg, [label], indices=idx)[label]["final"]

            for lab in levels:
                todo[(cfg.regressor, cfg.n_layers, lab)] = noisy(lab)
    rows, reports = [], {}
    for (r, n, lab), get in todo.items():
        rep = score(cfg, get(), gt=gt, batch_size=batch_size, progress=progress, card=card, _scorer=scorer)
        lat = None
        if reconstructions is None and lab == "none":
            lat = M.latent_errors(*_latents(cfg.replace(regressor=r, n_layers=n)))
        rows.append(result_row(cfg, r, n, lab, rep, lat))
        reports[(r, n, lab)] = rep
    if write and rows and idx is None:
        write_results(cfg, rows, *provenance(reports.values()))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), reports


# ----------------------------------------------------------------- explorer
def default_noise_levels(cfg: RunConfig) -> tuple[str, ...]:
    """The noise levels chapters 08 and 10 show: all of Table 6, or three with ``quick``."""
    return ("none", "64", "256") if cfg.quick else NOISE_LEVELS


#: Test images of the noise experiment in quick runs (positions in the test set).
QUICK_NOISE_IMAGES = 4


#: Test images of chapter 08's comparison of noise placements when the test set is larger (NSD's 982).
PLACEMENT_IMAGES = 100


def placement_indices(cfg: RunConfig):
    """The test images :func:`noise_placements` scores in chapter 08.

    ``quick``: :func:`default_indices`; a test set of at most :data:`PLACEMENT_IMAGES`
    images (mini-NSD's 100): all of them (None, which shares the stage-2 cache of the rest of
    the chapter); a larger one (NSD's 982): its first :data:`PLACEMENT_IMAGES`, so that the
    comparison adds about one stage-2 pass over the test set instead of five (both placements
    are scored on the same images).
    """
    if cfg.quick:
        return default_indices(cfg)
    n = len(_test_ids(cfg))
    return None if n <= PLACEMENT_IMAGES else np.arange(PLACEMENT_IMAGES)


def default_indices(cfg: RunConfig):
    """The test images chapters 08 and 10 send through stage 2 again: all, or the first
    :data:`QUICK_NOISE_IMAGES` with ``quick`` (stage 2 costs seconds per image on a CPU)."""
    return np.arange(QUICK_NOISE_IMAGES) if cfg.quick else None


def explorer_data(cfg: RunConfig, levels: Sequence | None = None, *, indices="default",
                  progress: bool = False) -> dict:
    """What the explorer shows, per noise level: first guesses, stage-2 images, per-image scores.

    ``indices`` (test-image positions; default :func:`default_indices`) limits it to a few
    images, as chapter 08 does in quick runs.

    Returns
    -------
    dict with ``"stimuli"`` (uint8 images), ``"ids"`` (test ids or positions),
    ``"levels"`` and, per level, ``"first_guess"``, ``"final"`` and ``"report"``
    (a MetricReport).
    """
    levels = [N.noise_label(x) for x in (levels or default_noise_levels(cfg))]
    idx = default_indices(cfg) if isinstance(indices, str) and indices == "default" else indices
    gt = ground_truth(cfg)
    try:
        ids = _test_ids(cfg)
        ids = ids if len(ids) == len(gt) else np.arange(len(gt))
    except Exception:  # noqa: BLE001 (no subject data: positions)
        ids = np.arange(len(gt))
    if idx is not None:
        idx = np.asarray(idx, dtype=np.int64)
        gt, ids = gt[idx], ids[idx]
    ns = noise_sensitivity(cfg, levels, indices=idx)
    clip = _default_clip(cfg)
    scorer = _Scorer(cfg, gt, clip, 32, progress)
    out = {"stimuli": gt, "ids": np.asarray(ids), "levels": levels}
    for lab in levels:
        out[lab] = {**ns[lab], "report": score(cfg, ns[lab]["final"], gt=gt, progress=progress, _scorer=scorer)}
    return out


def _shared_view_path(cfg: RunConfig) -> Path:
    """Where a run leaves its noiseless stage-2 images for the other subjects' explorers."""
    return cfg.run_dir / "shared" / (f"explorer_{cfg.models}_{cfg.regressor}{cfg.n_layers}_seed{cfg.seed}"
                                     + ("_quick" if cfg.quick else "") + ".npz")


def share_view(cfg: RunConfig, data: dict) -> Path:
    """Leave this run's noiseless stage-2 images (with their NSD ids) where other subjects look.

    The explorer of another subject's run, with the same models, regressor, number of blocks,
    seed and size, shows them beside its own (:func:`other_subjects`), aligned by NSD id.
    """
    path = _shared_view_path(cfg)
    save_arrays(path, {"ids": np.asarray(data["ids"], np.int64), "stage2": data["none"]["final"]})
    return path


def other_subjects(cfg: RunConfig, ids) -> dict[str, np.ndarray]:
    """The other subjects' stage-2 images of the test images ``ids``, from runs that shared them.

    Only runs of the same dataset, models, regressor, number of blocks, seed and size count
    (:func:`share_view`), and only those that reconstructed every one of ``ids`` (NSD's shared
    images: every subject saw them). Nothing is computed.

    Returns
    -------
    dict
        ``"subject N, stage 2"`` -> uint8 images aligned with ``ids``, in subject order.
    """
    ids = np.asarray(ids, np.int64)
    out = {}
    for s in SUBJECTS:
        path = _shared_view_path(cfg.replace(subject=s))
        if s == cfg.subject or not path.exists():
            continue
        shared = load_arrays(path)
        where = {int(i): k for k, i in enumerate(shared["ids"])}
        if all(int(i) in where for i in ids):
            out[f"subject {s}, stage 2"] = shared["stage2"][[where[int(i)] for i in ids]]
    return out


# --------------------------------------------------------------- scene score
def _scene_variants(cfg: RunConfig) -> list[tuple[str, int]]:
    """The first guesses chapter 05 scores: the run's regressor (``quick``) or ridge and GRU, at 15 and 31."""
    regs = [cfg.regressor] if cfg.quick else list(dict.fromkeys(["ridge", "gru", cfg.regressor]))
    return [(r, n) for r in regs for n in (15, 31)]


def scene_stages(cfg: RunConfig, part: str) -> dict[str, Callable[[], np.ndarray]]:
    """The image sets the scene score reads, per stage: row label -> a call that makes them (cached steps).

    Parameters
    ----------
    part : {"stage 1", "stage 2"}
        ``"stage 1"`` (chapter 05): the stimuli, the VDVAE ceilings (the test images' own posterior
        latents of the first 15 and 31 blocks, ``stage1.reconstructions``) and the first guesses
        (ridge and GRU at 15 and 31 blocks; ``quick``: the run's regressor). ``"stage 2"``
        (chapter 07): the stimuli, the run's first guess, stage 2 from the predicted CLIP
        embeddings and from the test images' true ones (the ceiling of stage 2).
    """
    out = {"stimulus": lambda: ground_truth(cfg)}
    if part == "stage 1":
        for n in (15, 31):
            out[f"VDVAE ceiling, {n} blocks"] = lambda n=n: stage1.reconstructions(cfg, n)
        for r, n in _scene_variants(cfg):
            out[f"first guess, {r} {n}"] = lambda r=r, n=n: stage1.first_guesses(cfg, regressor=r, n_layers=n)
    elif part == "stage 2":
        out[f"first guess, {cfg.regressor} {cfg.n_layers}"] = lambda: first_guesses(cfg)
        out["stage 2, predicted CLIP"] = lambda: final_images(cfg)
        out["stage 2, true CLIP (ceiling)"] = lambda: stage2.stage2_images(cfg, embeddings="true")
    else:
        raise ValueError(f"part must be 'stage 1' or 'stage 2'; found {part!r}")
    return out


def scene_probe_info(cfg: RunConfig) -> dict:
    """Whether the run has a scene score, and which probe reads it, in words.

    Returns
    -------
    dict
        ``"available"`` (bool), ``"why"`` (the reason when not: NSD has no scene truth, or the
        networks are not trained, naming the command) and ``"label"`` (the probe, its
        held-out accuracy on the clean test stimuli and its training seconds, for captions).
    """
    src = context.get(cfg).source("scene")
    if src.kind != "mini":
        return {"available": False, "why": src.description, "label": ""}
    info = context.get(cfg).model("scene").info
    val = ", ".join(f"{a} {v['accuracy']:.2f}" for a, v in info.get("validation", {}).items())
    label = (f"the scene probe of the mini model zoo (held-out test stimuli: {val}; trained in "
             f"{info.get('probe_s', float('nan')):.0f} s on {info.get('n_train', '?')} training stimuli)")
    return {"available": True, "why": "", "label": label}


def scene_scores(cfg: RunConfig, part: str = "stage 1", *, stages: dict | None = None) -> pd.DataFrame:
    """The scene score of each stage: the main object's colour, shape and position, beside chance.

    The scene probe of the mini model zoo (:mod:`nsdlib.mini.scene`) reads each test image's
    main object from each stage's images; accuracy is against the scene mini-NSD drew
    (``ground_truth/scenes.json``), chance is the permutation chance ``sum_k p_pred(k)
    p_true(k)`` (the expected accuracy against shuffled truth), and ratio is accuracy /
    chance. Cached in the run's store per image set and probe.

    Parameters
    ----------
    cfg : RunConfig
        A ``dataset="mini"`` run (NSD has no scene truth).
    part : {"stage 1", "stage 2"}
        Which stages (:func:`scene_stages`).
    stages : dict, optional
        Row label -> uint8 images (or a call making them) in the order of the test ids,
        instead of :func:`scene_stages`.

    Returns
    -------
    pandas.DataFrame
        One row per (stage, attribute): ``stage``, ``attribute``, ``accuracy``, ``chance``,
        ``ratio``, ``n``.

    Raises
    ------
    nsdlib.mini.scene.SceneNetworksMissing
        No scene networks have been trained (names ``nsdlib mini train-models``), or the run
        is not on mini-NSD.
    """
    ctx = context.get(cfg)
    src = ctx.source("scene")
    if src.kind != "mini":
        raise S.SceneNetworksMissing(f"no scene score for this run: {src.description}")
    probe = ctx.model("scene")
    ids = _test_ids(cfg)
    scenes = read_scenes(cfg.nsd_root)
    truth = S.scene_labels([scenes[i] for i in ids])
    rows = []
    for label, get in (stages if stages is not None else scene_stages(cfg, part)).items():
        images = check_images(np.asarray(get() if callable(get) else get), f"{label} images")
        if len(images) != len(ids):
            raise ValueError(f"{label}: one image per test id expected ({len(ids)}); found {len(images)}")
        params = {"v": 1, "probe": src.fingerprint, "images": array_key(images), "ids": array_key(np.asarray(ids))}
        res = ctx.store.json("scene_score", params, lambda im=images: S.score_scenes(probe.predict(im), truth))
        rows += [{"stage": label, "attribute": a, **res[a]} for a in S.ATTRIBUTES]
    return pd.DataFrame(rows, columns=["stage", "attribute", "accuracy", "chance", "ratio", "n"])
