"""The book's exercises: one function computing each answer, one ``check_<exercise>`` judging it.

Each exercise of a chapter (a ``sphinx-exercise`` block in ``notebooks/NN_*.md``) has a
solution function here, named for what it computes, that calls nsdlib on the run ``cfg``
(cached steps only, so a solution costs seconds in the book), and a check,
``check_<name>(answer, cfg)``, that judges an answer against mini-NSD's truth (the scenes,
the true amplitudes, HRFs and voxel tuning) or, where the quantity is a model's, against
that model recomputed, and returns one line of feedback: ``"✓ ..."`` when right, ``"✗ ..."``
with what was expected otherwise. :data:`EXERCISES` lists them in book order, each with the
common mistake it is told from (``mistake``: the right answer made wrong as a student would).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from scipy import stats

from .. import metrics, mini, ridge, vdvae
from ..config import RunConfig
from ..mini import scene as mini_scene
from ..noise import add_noise
from ..pipeline import betas, controls, data, regions, stage1, stage2
from ..pipeline import evaluation as ev
from ..pipeline import ledger as ledger_steps

__all__ = ["EXERCISES", "Exercise", "exercise"]

RIGHT, WRONG = "✓", "✗"
EARLY_AREAS = ("V1", "V2", "V3", "hV4")
#: The prf-visualrois labels of each early area (nsdlib.nsd.ROI_SETS' spelling).
AREA_SPECS = {a: f"prf-visualrois:{a}" if a == "hV4" else f"prf-visualrois:{a}v,{a}d" for a in EARLY_AREAS}
NOISE_STEPS = ("8", "16", "32", "64")
DECODING_ALPHAS = (1e1, 1e2, 1e3, 1e4, 1e5)


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise of the book.

    Attributes
    ----------
    name : str
        The solution function's name; the check is ``check_<name>``.
    chapter : str
        The chapter's file stem (``"01_glmsingle_betas"``).
    question : str
        One line: what the answer is.
    solve, check : callable
        ``solve(cfg) -> answer`` and ``check(answer, cfg) -> str``.
    mistake : callable
        ``mistake(answer) -> answer``: the right answer turned into a typical wrong one.
    """

    name: str
    chapter: str
    question: str
    solve: Callable
    check: Callable
    mistake: Callable


# ------------------------------------------------------------------------- feedback
def _as_number(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _close(found, expected, tol: float) -> bool:
    """``found`` equals ``expected`` within ``tol`` (numbers, or dicts of numbers with the same keys)."""
    if isinstance(expected, dict):
        if not isinstance(found, dict) or {str(k) for k in found} != {str(k) for k in expected}:
            return False
        f = {str(k): v for k, v in found.items()}
        return all(_close(f[str(k)], v, tol) for k, v in expected.items())
    x = _as_number(found)
    return x is not None and np.isfinite(x) and abs(x - float(expected)) <= tol


def _fmt(x) -> str:
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    v = _as_number(x)
    return repr(x) if v is None else f"{v:.3g}"


def verdict(found, expected, tol: float, right: str, hint: str = "") -> str:
    """One line of feedback: ``"✓ <right>"`` when ``found`` matches ``expected`` within ``tol``,
    else ``"✗ expected ..., found ..."`` (and ``hint``)."""
    if _close(found, expected, tol):
        return f"{RIGHT} {right}"
    return (f"{WRONG} not yet: expected {_fmt(expected)} (within {tol:g}), found {_fmt(found)}"
            + (f"; {hint}" if hint else ""))


def _checked(check: Callable) -> Callable:
    """A check that answers in one line where it cannot judge: no answer yet, or a run off mini-NSD."""
    @functools.wraps(check)
    def wrapper(answer, cfg: RunConfig) -> str:
        if cfg.dataset != "mini":
            return f"{WRONG} this exercise is checked against mini-NSD's truth: run the chapter with dataset='mini'"
        if answer is None:
            return f"{WRONG} no answer yet: set `answer` to your result and run the check again"
        return check(answer, cfg)
    return wrapper


def _labels(cfg: RunConfig, split: str = "test") -> dict[str, np.ndarray]:
    """The true main-object classes (colour, shape, position) of the run's train or test images."""
    sd = data.subject_data(cfg, progress=False)
    scenes = mini.read_scenes(cfg.nsd_root)
    ids = sd.test_ids if split == "test" else sd.train_ids
    return mini_scene.scene_labels([scenes[int(i)] for i in ids])


def _mean_r(gt, images) -> float:
    return float(np.nanmean(metrics.pixcorr(gt, images)))


def _own_and_shuffled(cfg: RunConfig, images) -> dict:
    """Mean PixCorr of the test ``images`` with their own stimuli and with the run's shuffled ones
    (controls.shuffle_permutation, a derangement)."""
    gt = ev.ground_truth(cfg)
    perm = controls.shuffle_permutation(len(gt), cfg.seed)
    return {"own": _mean_r(gt, images), "shuffled": _mean_r(gt[perm], images)}


def _truth(cfg: RunConfig):
    return mini.truth(cfg.nsd_root, cfg.subject)


# ------------------------------------------------------------- 00 the mini models
def colour_chance(cfg: RunConfig) -> float:
    """The accuracy of a reader that always answers the most common main-object colour of the test scenes."""
    colours = _labels(cfg)["colour"]
    return float(np.bincount(colours).max() / len(colours))


@_checked
def check_colour_chance(answer, cfg: RunConfig) -> str:
    colours = _labels(cfg)["colour"]
    exp = float(np.bincount(colours).max() / len(colours))
    return verdict(answer, exp, 0.005, f"always answering the commonest colour scores {exp:.2f}, not 1/8: "
                   "the scene score's chance is set by how often each class occurs",
                   "count the main objects' colours in the test scenes (nsdlib.mini.scene.scene_labels)")


def vdvae_blocks(cfg: RunConfig) -> dict:
    """The mini VDVAE's decoder blocks and the resolution the 15th of them works at."""
    conf = stage1.vdvae_info(cfg).config
    return {"blocks": int(conf.n_dec_blocks), "resolution_15": int(vdvae.parse_blocks(conf.dec_blocks)[14][0])}


@_checked
def check_vdvae_blocks(answer, cfg: RunConfig) -> str:
    exp = vdvae_blocks(cfg)
    return verdict(answer, exp, 0, f"{exp['blocks']} blocks; block 15 works at {exp['resolution_15']} x "
                   f"{exp['resolution_15']}, so 15 blocks give a coarse layout, not details",
                   "read stage1.vdvae_info(cfg).config and vdvae.parse_blocks(config.dec_blocks)")


# ---------------------------------------------------------------------- 01 the GLM
def trials_per_session(cfg: RunConfig) -> int:
    """Trials in each of the subject's sessions, read from the experimental design."""
    counts = np.unique(data.trials(cfg).session, return_counts=True)[1]
    return int(counts[0]) if len(set(counts.tolist())) == 1 else -1


@_checked
def check_trials_per_session(answer, cfg: RunConfig) -> str:
    counts = np.bincount(_truth(cfg).trial_session)[1:]
    return verdict(answer, int(counts[0]), 0, f"{int(counts[0])} trials in every session "
                   f"({len(counts)} sessions)", "count trials per session, not per run")


def hrf_within_one(cfg: RunConfig) -> float:
    """The share of nsdgeneral voxels whose HRF (model B, session 1) is within one library step of the truth."""
    diag = betas.glm_diagnostics(cfg, sessions=[1], progress=False)["per_session"][1]
    return float(np.mean(np.abs(diag["hrf_index"][diag["in_roi"]] - _truth(cfg).hrf_index) <= 1))


@_checked
def check_hrf_within_one(answer, cfg: RunConfig) -> str:
    diag = betas.glm_diagnostics(cfg, sessions=[1], progress=False)["per_session"][1]
    d = np.abs(diag["hrf_index"][diag["in_roi"]] - _truth(cfg).hrf_index)
    exp = float(np.mean(d <= 1))
    return verdict(answer, exp, 0.005, f"{exp:.0%} of voxels within one step of their true HRF "
                   f"({np.mean(d == 0):.0%} exactly; picking at random: about 14%)",
                   "compare hrf_index over the nsdgeneral voxels (in_roi) with the truth's, allowing ±1")


def _trial_betas(cfg: RunConfig) -> np.ndarray:
    """Model D's betas of every trial (n_trials, n_roi) in trial order."""
    diag = betas.glm_diagnostics(cfg, progress=False)
    return np.concatenate([diag["per_session"][s]["betas_D"] for s in diag["sessions"]]).astype(np.float64)


def repeat_gain(cfg: RunConfig) -> dict:
    """Median over voxels of the correlation of the betas with the noise-free response: single trials
    against the mean of each image's repeats."""
    t, b = _truth(cfg), _trial_betas(cfg)
    image = np.asarray(t.trial_image_index) - 1
    clean = np.asarray(t.image_response, np.float64)
    mean = np.stack([b[image == k].mean(0) for k in range(len(clean))])
    return {"one": float(np.nanmedian(metrics.columnwise_r(b, clean[image]))),
            "three": float(np.nanmedian(metrics.columnwise_r(mean, clean)))}


@_checked
def check_repeat_gain(answer, cfg: RunConfig) -> str:
    exp = repeat_gain(cfg)
    return verdict(answer, exp, 0.01, f"averaging the repeats raises r from {exp['one']:.2f} to {exp['three']:.2f}: "
                   "trial-to-trial variability and noise average out, the image's response does not",
                   "correlate with truth.image_response, per voxel over trials (one) and over images (three)")


# ------------------------------------------------------------- 02 the subject data
def split_sizes(cfg: RunConfig) -> dict:
    """Training and test images of the subject's data (each image's repeats averaged)."""
    sd = data.subject_data(cfg, progress=False)
    return {"train": int(len(sd.train_ids)), "test": int(len(sd.test_ids))}


@_checked
def check_split_sizes(answer, cfg: RunConfig) -> str:
    spec = mini.spec_for(mini.read_manifest(cfg.nsd_root)["size"])
    exp = {"train": spec.n_train, "test": spec.n_shared}
    return verdict(answer, exp, 0, f"{exp['train']} training and {exp['test']} test (shared) images; each image's "
                   f"{spec.n_repeats} trials become one row", "count images, not trials")


def early_voxels(cfg: RunConfig) -> dict:
    """The subject's betas' voxels in V1, V2, V3 and hV4, read from the prf-visualrois label file."""
    return {a: int(regions.region_mask(cfg, spec).sum()) for a, spec in AREA_SPECS.items()}


@_checked
def check_early_voxels(answer, cfg: RunConfig) -> str:
    area = _truth(cfg).area[data.subject_data(cfg, progress=False).voxel_index]
    exp = {a: int((area == a).sum()) for a in EARLY_AREAS}
    return verdict(answer, exp, 0, f"the label file agrees with the simulation's areas: {_fmt(exp)}",
                   "V1 is V1v and V1d together (and so for V2, V3)")


# -------------------------------------------------------------- 03 VDVAE latents
def latent_numbers(cfg: RunConfig) -> dict:
    """Numbers per image in the latents of the first 15 and 31 blocks (stage 1's targets)."""
    return {n: int(stage1.latents(cfg, n)["test"].shape[1]) for n in (15, 31)}


@_checked
def check_latent_numbers(answer, cfg: RunConfig) -> str:
    conf = stage1.vdvae_info(cfg).config
    exp = {n: int(vdvae.block_slices(conf, n)[-1].stop) for n in (15, 31)}
    return verdict(answer, exp, 0, f"{exp[15]:,} and {exp[31]:,} numbers per image: the finer blocks hold most of them",
                   "count latent values (channels x height x width per block), not blocks")


def ceiling_pixcorr(cfg: RunConfig) -> dict:
    """Mean PixCorr of the VDVAE ceilings (the stimuli's own latents, first 15 or 31 blocks) with the stimuli."""
    size = stage1.vdvae_info(cfg).config.image_size
    stim = data.stimuli(cfg, "test", size)
    return {n: _mean_r(stim, stage1.reconstructions(cfg, n)) for n in (15, 31)}


@_checked
def check_ceiling_pixcorr(answer, cfg: RunConfig) -> str:
    exp = ceiling_pixcorr(cfg)
    better = "more" if exp[31] > exp[15] else "no more"
    return verdict(answer, exp, 0.01, f"PixCorr {exp[15]:.2f} (15 blocks) and {exp[31]:.2f} (31): 31 blocks know "
                   f"{better} about the image", "score at the VDVAE's size, against data.stimuli(cfg, 'test', size)")


# --------------------------------------------------------- 04 stage-1 regression
def _decode(cfg: RunConfig, attribute: str, columns=None) -> np.ndarray:
    """Ridge from training betas to a one-hot of the main object's ``attribute``; the test images' argmax."""
    sd = data.subject_data(cfg, progress=False)
    cols = slice(None) if columns is None else np.asarray(columns)
    y = _labels(cfg, "train")[attribute]
    onehot = np.eye(len(mini_scene.CLASSES[attribute]))[y]
    pred = ridge.ridge_predict(sd.train_betas[:, cols], onehot, sd.test_betas[:, cols], alphas=DECODING_ALPHAS,
                               cv="gcv", verbose=False)
    return np.asarray(pred).argmax(1)


def colour_from_betas(cfg: RunConfig) -> np.ndarray:
    """The main object's colour (class index, nsdlib.mini.scene.CLASSES) of each test image, decoded from
    its betas by ridge regression."""
    return _decode(cfg, "colour")


@_checked
def check_colour_from_betas(answer, cfg: RunConfig) -> str:
    true = _labels(cfg)["colour"]
    if np.shape(answer) != true.shape:
        return f"{WRONG} expected one colour index per test image ({len(true)}); found {np.shape(answer)}"
    acc = float(np.mean(np.asarray(answer) == true))
    chance = mini_scene.permutation_chance(np.asarray(answer, np.int64), true, len(mini_scene.CLASSES["colour"]))
    if acc >= 2 * chance and acc > 0.25:
        return f"{RIGHT} {acc:.0%} of the test images' colours decoded right (chance {chance:.0%})"
    return f"{WRONG} {acc:.0%} right, chance {chance:.0%}: expected at least twice chance"


def position_by_population(cfg: RunConfig) -> dict:
    """Accuracy of the main object's position decoded from the early voxels alone and from the higher ones."""
    t = _truth(cfg)
    pop = t.population[data.subject_data(cfg, progress=False).voxel_index]
    true = _labels(cfg)["position"]
    return {p: float(np.mean(_decode(cfg, "position", np.flatnonzero(pop == p)) == true)) for p in ("early", "higher")}


@_checked
def check_position_by_population(answer, cfg: RunConfig) -> str:
    exp = position_by_population(cfg)
    return verdict(answer, exp, 0.01, f"early {exp['early']:.0%}, higher {exp['higher']:.0%} (chance about 11%): in "
                   "mini-NSD only the early voxels have receptive fields, the higher ones know what, not where",
                   "split the columns by the truth's population (truth.population[sd.voxel_index])")


# ------------------------------------------------------------ 05 the first guesses
def first_guess_identity(cfg: RunConfig) -> dict:
    """Mean PixCorr of the first guesses with their own stimuli, and with shuffled ones (a derangement)."""
    return _own_and_shuffled(cfg, ev.first_guesses(cfg))


@_checked
def check_first_guess_identity(answer, cfg: RunConfig) -> str:
    exp = first_guess_identity(cfg)
    return verdict(answer, exp, 0.01, f"{exp['own']:.2f} with their own stimuli against {exp['shuffled']:.2f} "
                   "shuffled: the difference is what the brain told stage 1 about each image",
                   "shuffle with controls.shuffle_permutation(n, cfg.seed)")


def mean_image_baseline(cfg: RunConfig) -> dict:
    """Mean PixCorr with the test stimuli of the mean training stimulus (a decoder that ignores the brain)
    and of the first guesses."""
    gt = ev.ground_truth(cfg)
    mean = data.stimuli(cfg, "train").astype(np.float64).mean(0)
    same = np.repeat(np.rint(mean).astype(np.uint8)[None], len(gt), axis=0)
    return {"mean image": _mean_r(gt, same), "first guess": _mean_r(gt, ev.first_guesses(cfg))}


@_checked
def check_mean_image_baseline(answer, cfg: RunConfig) -> str:
    exp = mean_image_baseline(cfg)
    beat = "beat" if exp["first guess"] > exp["mean image"] else "do not beat"
    return verdict(answer, exp, 0.01, f"mean image {exp['mean image']:.2f}, first guesses {exp['first guess']:.2f}: "
                   f"the first guesses {beat} a decoder that ignores the brain",
                   "average the training stimuli (data.stimuli(cfg, 'train')), repeat it per test image")


# ------------------------------------------------------------- 06 CLIP regression
def vision_identification(cfg: RunConfig) -> float:
    """2-way identification of the predicted CLIP image embeddings among the test images (chance 0.5)."""
    return float(stage2.clip_predictions(cfg, progress=False)["vision_identification"])


@_checked
def check_vision_identification(answer, cfg: RunConfig) -> str:
    pred = stage2.clip_predictions(cfg, progress=False)["vision"]
    true = stage2.clip_embeddings(cfg, "test", progress=False)["vision"]
    exp = float(metrics.two_way_identification(np.asarray(true, np.float64), np.asarray(pred, np.float64)).mean())
    return verdict(answer, exp, 0.005, f"{exp:.2f} against a chance of 0.5",
                   "metrics.two_way_identification(true, predicted), both flattened per image")


def caption_colour_mentions(cfg: RunConfig) -> float:
    """The share of the test images' captions (five per image) that name the main object's colour."""
    names = mini_scene.CLASSES["colour"]
    caps = data.captions(cfg, "test")
    colour = _labels(cfg)["colour"]
    return float(np.mean([names[c] in s.lower() for cs, c in zip(caps, colour) for s in cs]))


@_checked
def check_caption_colour_mentions(answer, cfg: RunConfig) -> str:
    sd = data.subject_data(cfg, progress=False)
    scenes = mini.read_scenes(cfg.nsd_root)
    caps = data.captions(cfg, "test")
    exp = float(np.mean([mini.main_object(scenes[int(i)]).colour in s.lower() for i, cs in zip(sd.test_ids, caps)
                         for s in cs]))
    return verdict(answer, exp, 0.005, f"{exp:.0%} of the captions name it: a text embedding of one caption "
                   "sometimes lacks the colour that the image embedding always sees",
                   "count captions (five per image), not images")


# -------------------------------------------------------- 07 Versatile Diffusion
def steps_run(cfg: RunConfig) -> int:
    """The DDIM steps stage 2 runs: strength 0.75 of a 50-step schedule."""
    return int(50 * 0.75)


@_checked
def check_steps_run(answer, cfg: RunConfig) -> str:
    return verdict(answer, 37, 0, "int(50 x 0.75) = 37 steps: the first guess is noised to step 37 and denoised "
                   "from there", "strength is the share of the schedule re-run, rounded down")


def follows_first_guess(cfg: RunConfig) -> dict:
    """Mean PixCorr of the stage-2 images with the first guesses and with the stimuli (each at its own size)."""
    final = ev.final_images(cfg)
    return {"first guess": _mean_r(ev.first_guesses(cfg), final), "stimulus": _mean_r(ev.ground_truth(cfg), final)}


@_checked
def check_follows_first_guess(answer, cfg: RunConfig) -> str:
    exp = follows_first_guess(cfg)
    closer = "first guess" if exp["first guess"] > exp["stimulus"] else "stimulus"
    return verdict(answer, exp, 0.01, f"{exp['first guess']:.2f} with the first guess, {exp['stimulus']:.2f} with "
                   f"the stimulus: stage 2 is closer to its {closer}",
                   "compare ev.final_images(cfg) with ev.first_guesses(cfg) and ev.ground_truth(cfg)")


# ------------------------------------------------------------- 08 noise sensitivity
def noise_sd(cfg: RunConfig, level: str = "32") -> float:
    """The standard deviation, in grey levels, of what the noise protocol adds to the first guesses at ``level``."""
    fg = ev.first_guesses(cfg)
    return float((add_noise(fg, level, seed=cfg.seed).astype(np.float64) - fg).std())


@_checked
def check_noise_sd(answer, cfg: RunConfig) -> str:
    fg = ev.first_guesses(cfg).astype(np.float64)
    inside = (fg > 3 * 32) & (fg < 255 - 3 * 32)  # pixels the clipping to 0-255 barely touches
    diff = add_noise(ev.first_guesses(cfg), "32", seed=cfg.seed).astype(np.float64) - fg
    exp = float(diff.std())
    return verdict(answer, exp, 0.5, f"{exp:.1f} grey levels ({diff[inside].std():.1f} away from black and white): "
                   "amplitude 32 is the noise's sd, shrunk where clipping at 0 and 255 cuts it",
                   "the level is in grey levels (0-255), not a fraction")


def noise_pixcorr(cfg: RunConfig) -> dict:
    """Mean PixCorr of the noised first guesses with the clean ones, per noise level (8 to 64)."""
    fg = ev.first_guesses(cfg)
    return {lv: _mean_r(fg, add_noise(fg, lv, seed=cfg.seed)) for lv in NOISE_STEPS}


@_checked
def check_noise_pixcorr(answer, cfg: RunConfig) -> str:
    exp = noise_pixcorr(cfg)
    below = next((lv for lv in NOISE_STEPS if exp[lv] < 0.5), "none")
    return verdict(answer, exp, 0.01, f"PixCorr falls with the level, {_fmt(exp)}; below 0.5 from level {below}",
                   "compare each noised first guess with its clean first guess (not with the stimulus)")


# ---------------------------------------------------------------- 09 evaluation
def shuffled_pixcorr(cfg: RunConfig) -> dict:
    """Mean PixCorr of the stage-2 images with their stimuli and with shuffled stimuli (the control's chance)."""
    return _own_and_shuffled(cfg, ev.final_images(cfg))


@_checked
def check_shuffled_pixcorr(answer, cfg: RunConfig) -> str:
    exp = shuffled_pixcorr(cfg)
    return verdict(answer, exp, 0.01, f"{exp['own']:.2f} against {exp['shuffled']:.2f} shuffled: a metric means "
                   "something only beside its chance", "shuffle with controls.shuffle_permutation(n, cfg.seed)")


def stage2_gain(cfg: RunConfig) -> dict:
    """Paired-bootstrap 95% interval of stage 2's PixCorr minus the first guesses' (same test images)."""
    gt = ev.ground_truth(cfg)
    d = metrics.paired_bootstrap(metrics.pixcorr(gt, ev.final_images(cfg)), metrics.pixcorr(gt, ev.first_guesses(cfg)),
                                 seed=cfg.seed)
    return {"low": float(d.low), "high": float(d.high)}


@_checked
def check_stage2_gain(answer, cfg: RunConfig) -> str:
    exp = stage2_gain(cfg)
    says = ("stage 2 is better" if exp["low"] > 0 else "stage 2 is worse" if exp["high"] < 0
            else "no difference shown")
    return verdict(answer, exp, 0.005, f"[{exp['low']:+.3f}, {exp['high']:+.3f}]: {says} in PixCorr",
                   "metrics.paired_bootstrap(stage 2's per-image PixCorr, the first guesses', seed=cfg.seed)")


# ------------------------------------------------------------------ 10 explorer
def best_image(cfg: RunConfig) -> int:
    """The position (0-based) of the test image whose stage-2 reconstruction has the highest PixCorr."""
    return int(np.nanargmax(metrics.pixcorr(ev.ground_truth(cfg), ev.final_images(cfg))))


@_checked
def check_best_image(answer, cfg: RunConfig) -> str:
    exp = best_image(cfg)
    return verdict(answer, exp, 0, f"test image {exp + 1} (position {exp}) is stage 2's best by PixCorr",
                   "positions count from 0; the explorer's numbers from 1")


def metric_agreement(cfg: RunConfig) -> float:
    """Spearman correlation over the test images of the stage-2 images' PixCorr and SSIM."""
    gt, final = ev.ground_truth(cfg), ev.final_images(cfg)
    return float(stats.spearmanr(metrics.pixcorr(gt, final), metrics.ssim(gt, final), nan_policy="omit")[0])


@_checked
def check_metric_agreement(answer, cfg: RunConfig) -> str:
    exp = metric_agreement(cfg)
    return verdict(answer, exp, 0.01, f"rank correlation {exp:.2f}: the two low-level metrics "
                   f"{'mostly agree' if exp > 0.5 else 'often disagree'} on which images are good",
                   "Spearman (ranks) over images, PixCorr against SSIM")


# --------------------------------------------------------------------- 11 regions
def rf_size_by_area(cfg: RunConfig) -> dict:
    """Mean true receptive-field size (in image widths) of each early area's voxels (label files + truth)."""
    sigma = _truth(cfg).rf_sigma[data.subject_data(cfg, progress=False).voxel_index]
    return {a: float(np.nanmean(sigma[regions.region_mask(cfg, spec)])) for a, spec in AREA_SPECS.items()}


@_checked
def check_rf_size_by_area(answer, cfg: RunConfig) -> str:
    t = _truth(cfg)
    exp = {a: float(np.nanmean(t.rf_sigma[t.area == a])) for a in EARLY_AREAS}
    return verdict(answer, exp, 0.01, f"receptive fields grow along the hierarchy: {_fmt(exp)}",
                   "average truth.rf_sigma over each area's voxels")


def image_feature_share(cfg: RunConfig) -> dict:
    """The share of voxels driven by image (pixel-level) features in the early and the higher regions."""
    spec = {"early": regions.ROI_SETS["early (V1–hV4)"],
            "higher": regions.ROI_SETS["higher (ventral, lateral, parietal)"]}
    return {k: regions.population_encoding(cfg, regions.region_mask(cfg, s))["image features"] for k, s in spec.items()}


@_checked
def check_image_feature_share(answer, cfg: RunConfig) -> str:
    t = _truth(cfg)
    driven = np.abs(t.arrays["early_weights"]).sum(1) > 0
    exp = {p: float(driven[t.population == p].mean()) for p in ("early", "higher")}
    return verdict(answer, exp, 0.01, f"early {exp['early']:.0%}, higher {exp['higher']:.0%}: pixel-level detail "
                   "can only come from the early regions", "nonzero early_weights in the truth")


# ---------------------------------------------------------------------- 12 ledger
def glm_loss(cfg: RunConfig) -> float:
    """Median over voxels of the correlation, over the test images, of the GLM's betas with the true betas."""
    sd = data.subject_data(cfg, progress=False)
    return float(np.nanmedian(metrics.columnwise_r(sd.test_betas, ledger_steps.true_betas(cfg)[1])))


@_checked
def check_glm_loss(answer, cfg: RunConfig) -> str:
    exp = glm_loss(cfg)
    return verdict(answer, exp, 0.01, f"median r {exp:.2f}: what the GLM keeps of the true amplitudes before any "
                   "decoding", "ledger.true_betas(cfg)[1] against the subject's test betas, per voxel over images")


def _image_rows(cfg: RunConfig, ids) -> np.ndarray:
    """Rows of the truth's per-image arrays (``image_response``) for 0-based nsd ``ids``."""
    where = {int(i): k for k, i in enumerate(_truth(cfg).image_nsd_id)}
    return np.array([where[int(i)] for i in ids])


def truth_ceiling(cfg: RunConfig) -> float:
    """Median over voxels of the correlation, over the test images, of the true betas (the ledger's truth:
    amplitudes averaged over each image's repeats) with the noise-free response to each image."""
    sd = data.subject_data(cfg, progress=False)
    clean = _truth(cfg).image_response[_image_rows(cfg, sd.test_ids)][:, sd.voxel_index]
    return float(np.nanmedian(metrics.columnwise_r(ledger_steps.true_betas(cfg)[1], clean)))


@_checked
def check_truth_ceiling(answer, cfg: RunConfig) -> str:
    exp = truth_ceiling(cfg)
    return verdict(answer, exp, 0.01, f"median r {exp:.2f}, below 1: the ledger's 'truth' keeps the trial-to-trial "
                   "variability of the three repeats, which no GLM could remove",
                   "truth.image_response's rows of the test ids (truth.image_nsd_id), columns sd.voxel_index")


def _shuffled(a) -> np.ndarray:
    """A decoded label vector made wrong: every label moved to another class."""
    a = np.asarray(a)
    return (a + 1 + np.arange(len(a)) % 3) % 8


def _shift(d: dict, by: float) -> dict:
    return {k: v + by for k, v in d.items()}


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("colour_chance", "00_mini_models", "chance accuracy for the main object's colour",
             colour_chance, check_colour_chance, lambda a: 1 / 8),
    Exercise("vdvae_blocks", "00_mini_models", "decoder blocks and block 15's resolution",
             vdvae_blocks, check_vdvae_blocks, lambda a: {**a, "blocks": 15}),
    Exercise("trials_per_session", "01_glmsingle_betas", "trials per session",
             trials_per_session, check_trials_per_session, lambda a: a // 3),
    Exercise("hrf_within_one", "01_glmsingle_betas", "share of HRFs within one step of the truth",
             hrf_within_one, check_hrf_within_one, lambda a: a / 2),
    Exercise("repeat_gain", "01_glmsingle_betas", "r with the truth, one trial and three repeats",
             repeat_gain, check_repeat_gain, lambda a: {"one": a["three"], "three": a["one"]}),
    Exercise("split_sizes", "02_subject_data", "training and test images",
             split_sizes, check_split_sizes, lambda a: {k: 3 * v for k, v in a.items()}),
    Exercise("early_voxels", "02_subject_data", "voxels per early area",
             early_voxels, check_early_voxels, lambda a: {**a, "V1": a["V1"] // 2}),
    Exercise("latent_numbers", "03_vdvae_latents", "latent values per image, 15 and 31 blocks",
             latent_numbers, check_latent_numbers, lambda a: {15: 15, 31: 31}),
    Exercise("ceiling_pixcorr", "03_vdvae_latents", "PixCorr of the VDVAE ceilings",
             ceiling_pixcorr, check_ceiling_pixcorr, lambda a: _shift(a, 0.1)),
    Exercise("colour_from_betas", "04_stage1_regression", "decoded main-object colours",
             colour_from_betas, check_colour_from_betas, _shuffled),
    Exercise("position_by_population", "04_stage1_regression", "position accuracy, early and higher voxels",
             position_by_population, check_position_by_population,
             lambda a: {"early": a["higher"], "higher": a["early"]}),
    Exercise("first_guess_identity", "05_stage1_reconstruction", "PixCorr with own and shuffled stimuli",
             first_guess_identity, check_first_guess_identity, lambda a: _shift(a, -0.1)),
    Exercise("mean_image_baseline", "05_stage1_reconstruction", "PixCorr of the mean image and the first guesses",
             mean_image_baseline, check_mean_image_baseline, lambda a: {**a, "mean image": 0.0}),
    Exercise("vision_identification", "06_clip_regression", "2-way identification of predicted image embeddings",
             vision_identification, check_vision_identification, lambda a: a - 0.1),
    Exercise("caption_colour_mentions", "06_clip_regression", "share of the test captions naming the colour",
             caption_colour_mentions, check_caption_colour_mentions, lambda a: a / 5),
    Exercise("steps_run", "07_versatile_diffusion", "DDIM steps stage 2 runs",
             steps_run, check_steps_run, lambda a: 50),
    Exercise("follows_first_guess", "07_versatile_diffusion", "PixCorr of stage 2 with first guess and stimulus",
             follows_first_guess, check_follows_first_guess,
             lambda a: {"first guess": a["stimulus"] - 0.05, "stimulus": a["first guess"] + 0.05}),
    Exercise("noise_sd", "08_noise_sensitivity", "sd of the added noise at level 32",
             noise_sd, check_noise_sd, lambda a: 32 / 255),
    Exercise("noise_pixcorr", "08_noise_sensitivity", "PixCorr with the clean first guess per level",
             noise_pixcorr, check_noise_pixcorr, lambda a: _shift(a, -0.05)),
    Exercise("shuffled_pixcorr", "09_evaluation", "PixCorr with own and shuffled stimuli (stage 2)",
             shuffled_pixcorr, check_shuffled_pixcorr, lambda a: {**a, "shuffled": 0.0}),
    Exercise("stage2_gain", "09_evaluation", "bootstrap interval of stage 2 minus stage 1",
             stage2_gain, check_stage2_gain, lambda a: {"low": -a["high"], "high": -a["low"]}),
    Exercise("best_image", "10_explorer", "the best test image by PixCorr",
             best_image, check_best_image, lambda a: a + 1),
    Exercise("metric_agreement", "10_explorer", "rank correlation of PixCorr and SSIM",
             metric_agreement, check_metric_agreement, lambda a: 1.0 if a < 0.9 else 0.0),
    Exercise("rf_size_by_area", "11_regions", "mean receptive-field size per early area",
             rf_size_by_area, check_rf_size_by_area, lambda a: dict(zip(a, reversed(list(a.values()))))),
    Exercise("image_feature_share", "11_regions", "share of image-driven voxels, early and higher",
             image_feature_share, check_image_feature_share, lambda a: {"early": 1.0, "higher": 1.0}),
    Exercise("glm_loss", "12_ledger", "median r of the GLM's betas with the true betas",
             glm_loss, check_glm_loss, lambda a: 1.0),
    Exercise("truth_ceiling", "12_ledger", "median r of the true betas with the noise-free responses",
             truth_ceiling, check_truth_ceiling, lambda a: 1.0),
]}


def exercise(name: str) -> Exercise:
    """The exercise called ``name`` (its solution function's name)."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the book's exercises: {', '.join(EXERCISES)}")
    return EXERCISES[name]


__all__ += ["verdict", *[n for e in EXERCISES.values() for n in (e.name, f"check_{e.name}")]]
