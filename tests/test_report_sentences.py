"""nsdlib.report.sentences: the prose says what the tables hold, and changes when they change."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsdlib import names, paper
from nsdlib.metrics import MetricReport
from nsdlib.report import sentences as S
from nsdlib.report import tables as T


def _report(per_image: dict):
    return MetricReport({m: np.asarray(v, float) for m, v in per_image.items()}, dict.fromkeys(per_image, "test"),
                        dict.fromkeys(per_image, "ok"), 32, "columns")


def _base(metrics=("ssim", "pixcorr", "swav"), n=30):
    rng = np.random.default_rng(0)
    return {m: rng.uniform(0.3, 0.7, n) for m in metrics}


def test_comparison_sentences_read_the_table():
    base = _base()
    gru = {"ssim": base["ssim"] + 0.04, "pixcorr": base["pixcorr"] - 0.02, "swav": base["swav"]}
    table = T.comparison_differences({("gru", 31, "final"): _report(gru), ("ridge", 31, "final"): _report(base)},
                                     n_resamples=200)
    text = S.comparison_sentences(table)
    assert "30 test images (200 resamples, seed 0" in text and "95 % percentile intervals" in text
    assert "GRU-31 stage 2 is better on SSIM (+0.040, interval +0.040 to +0.040)" in text
    assert "Ridge-31 stage 2 is better on PixCorr (-0.020, interval -0.020 to -0.020)" in text
    assert "no difference this run can see on SwAV-ResNet50" in text
    assert "SwAV-ResNet50 is a distance (lower is better)" in text
    # the paper's Table 4 has GRU-31 ahead on SSIM and behind on PixCorr: both the same way as here
    assert "points the same way on 2 of the 2 real differences" in text
    # the other way round, the sentence turns round with it
    flipped = T.comparison_differences({("gru", 31, "final"): _report(base), ("ridge", 31, "final"): _report(gru)},
                                       n_resamples=200)
    text = S.comparison_sentences(flipped)
    assert "Ridge-31 stage 2 is better on SSIM" in text and "the opposite way on SSIM and PixCorr" in text
    assert S.verdict_summary(table, "test run") == ("In this run (test run), the differences whose interval "
                                                    "excludes 0, of those compared (pairs × metrics): "
                                                    "GRU vs ridge: 2 of 3.")
    assert S.comparison_sentences(pd.DataFrame()) == "No pair of the paper's comparisons was scored in this run."


def test_comparison_sentences_say_when_the_paper_has_no_such_pair():
    base = _base(("ssim",))
    table = T.comparison_differences({("gru", 15, "final"): _report(base),
                                      ("gru", 15, "first guess"): _report({"ssim": base["ssim"]})}, n_resamples=100)
    text = S.comparison_sentences(table)
    assert "**GRU-15 stage 2 − GRU-15 first guess**: no difference this run can see on SSIM" in text
    assert "The paper does not report this pair." in text


def test_noise_sentences_read_the_table():
    base = _base(("ssim", "pixcorr"))
    reports = {"none": _report(base), "8": _report(base),
               "256": _report({"ssim": base["ssim"] * 0.7, "pixcorr": base["pixcorr"] * 1.1})}
    table = T.noise_directions(reports, n_resamples=200)
    text = S.noise_sentences(table)
    t6 = {r["noise"]: r for r in paper.TABLE6}
    paper_ssim = (t6["256"]["ssim"] / t6["none"]["ssim"] - 1) * 100
    assert (f"- **SSIM**: ours no change seen at 8; down at 256 (pure noise); the paper down at 8 and 256 "
            f"(pure noise). At pure noise (256): ours -30.0 % (interval -30.0 to -30.0 %), the paper's "
            f"{paper_ssim:+.1f} % (the same way).") in text
    assert "- **PixCorr**: ours no change seen at 8; up at 256 (pure noise)" in text and "(the opposite way)" in text
    assert ("Over all 4 (level, metric) cells: ours moves the same way as the paper's Table 6 in 1, the opposite "
            "way in 1, and shows no change in 2.") in text
    assert names.METRIC_LABELS["ssim"] in text


def test_overlap_sentences_read_the_numbers():
    ov = {"cosine": np.array([0.8, 0.9, 1.0]), "train_cosine": np.array([0.5, 0.6, 0.7, 0.99])}
    dep = pd.DataFrame({"rho": [0.9, 0.8, 0.1, np.nan], "p": [0.001, 0.01, 0.6, np.nan], "n": 3},
                       index=pd.Index(["clip", "swav", "ssim", "pixcorr"], name="metric"))
    text = S.overlap_sentences(ov, dep)
    assert "cosine 0.900" in text and "0.650" in text and "closer to the training set" in text
    assert "1 of 3 test images have a training image at cosine 0.99 or more" in text
    assert "better it scores on CLIP (rho +0.90, p 0.001)" in text
    assert "the closer, the worse on SwAV-ResNet50 (rho +0.80" in text  # a distance: rising is worse
    assert "no dependence this run can see (p ≥ 0.05 or a constant score) on SSIM and PixCorr" in text
    same = S.overlap_sentences({"cosine": np.array([0.9999]), "train_cosine": np.array([0.99992, 0.5])}, dep)
    assert "as close to the training set as" not in same  # medians 1.000 and 0.750
    same = S.overlap_sentences({"cosine": np.array([0.9999]), "train_cosine": np.array([0.99992])}, dep)
    assert "as close to the training set as the training images" in same  # equal as printed: 1.000


# ------------------------------------------------------------- regions and the ledger
def _regions(early_low: float, higher_high: float, n=60):
    """Two regions' reports: early better by ``early_low`` on the low-level metrics, higher better by
    ``higher_high`` on the high-level ones (distances: lower)."""
    base = _base(names.IMAGE_METRICS, n)
    early, higher = {}, {}
    for m in names.IMAGE_METRICS:
        up = early_low if m in names.METRIC_LEVELS["low"] else -higher_high
        d = up if names.HIGHER_IS_BETTER[m] else -up
        early[m], higher[m] = base[m] + d / 2, base[m] - d / 2
    return {"early": _report(early), "higher": _report(higher)}


def _encoding(early_image=1.0, higher_semantic=1.0):
    return pd.DataFrame({"image features": [early_image, 1 - higher_semantic],
                         "semantic features": [1 - early_image, higher_semantic]}, index=["early", "higher"])


def test_region_sentences_read_the_split_and_set_it_beside_the_truth():
    contrast = T.region_contrast(_regions(0.05, 0.05), "early", "higher", n_resamples=200)
    flipped = T.region_contrast(_regions(-0.05, -0.05), "early", "higher", n_resamples=200)
    text = S.region_sentences({"stage-2 images": contrast, "first guesses": flipped}, _encoding(), "early", "higher")
    assert "- **stage-2 images**:\n  - low-level metrics (4): early decodes better on 4 (PixCorr, SSIM, " \
           "AlexNet(2) and AlexNet(5)), higher on 0 (none);" in text
    assert "high-level metrics (4): higher decodes better on 4" in text and "so the split holds." in text
    assert "so the split does not hold." in text  # the first guesses', reversed
    assert "100 % of the early voxels respond to local image features" in text and "It predicts the split." in text
    assert "agrees with the truth for the stage-2 images and disagrees for the first guesses." in text
    both = S.region_sentences({"stage-2 images": flipped, "first guesses": flipped}, _encoding(), "early", "higher")
    assert "disagrees with the truth in every contrast (the stage-2 images and the first guesses)." in both
    assert "agrees with the truth in every contrast." in S.region_sentences({"stage 2": contrast}, _encoding(),
                                                                           "early", "higher")
    # no truth (NSD)
    nan = _encoding(np.nan, np.nan)
    assert "No simulation's truth" in S.region_sentences({"stage 2": contrast}, nan, "early", "higher")


def test_ledger_sentences_name_the_largest_loss():
    idx = pd.MultiIndex.from_product([["ceiling", "GLM"], ["ssim", "clip"]], names=["step", "metric"])
    steps = pd.DataFrame({"share": [0.8, 0.3, 0.2, 0.7], "real": [True, True, False, True]}, index=idx)
    text = S.ledger_sentences(steps, ["ceiling", "GLM"])
    assert "**ceiling**: 55 % of the loss on average over the metrics; a change the interval can see on 2 of 2; " \
           "the largest step on SSIM" in text
    assert "**GLM**: 45 %" in text and "the largest step on CLIP" in text
    assert text.endswith("The largest loss is **ceiling** (55 % of the way from the stimulus to the pipeline, "
                         "averaged over the metrics).")
