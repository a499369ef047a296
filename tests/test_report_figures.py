"""nsdlib.report.figures: the expected panels, images, titles and limits (Agg backend, no display)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nsdlib import mini, names, nsd, paper  # noqa: E402
from nsdlib.hrf import hrf_library  # noqa: E402
from nsdlib.report import figures as F  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _n_images(fig):
    return sum(len(ax.images) for ax in fig.axes)


# -------------------------------------------------------------------- images
def test_image_grid_rows_columns_titles_and_labels():
    a, b = _images(5), _images(5, 16, seed=1)
    fig = F.image_grid({"stimulus": a, "stage 2": b}, [3, 1], row_labels=["image 4", "image 2"],
                       col_titles={(1, "stage 2"): "SSIM 0.50"})
    axes = np.array(fig.axes).reshape(2, 2)
    assert _n_images(fig) == 4
    assert [ax.get_title() for ax in axes[0]] == ["stimulus", "stage 2"] and axes[1, 0].get_title() == ""
    assert np.array_equal(axes[0, 1].images[0].get_array(), b[3]) and np.array_equal(axes[1, 0].images[0].get_array(),
                                                                                       a[1])
    assert axes[1, 1].get_xlabel() == "SSIM 0.50" and axes[0, 1].get_xlabel() == ""
    assert [axes[i, 0].get_ylabel() for i in range(2)] == ["image 4", "image 2"]
    assert fig.get_size_inches() == pytest.approx((2 * 1.9, 2 * 1.9 + 0.3))


def test_best_and_worst():
    best, worst = F.best_and_worst([0.1, np.nan, 0.9, 0.5], k=2)
    assert list(best) == [2, 3] and list(worst) == [0, 3]
    assert [list(x) for x in F.best_and_worst([0.3, 0.2], k=5)] == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="no finite"):
        F.best_and_worst([np.nan])


def test_stimuli_row_and_zoo_figure():
    fig = F.stimuli_row(_images(4), ["nsdId 1 (shared)", "b", "c", "d"])
    assert _n_images(fig) == 4 and fig.axes[0].get_title() == "nsdId 1 (shared)"
    samples = {"stimuli": _images(3), "vdvae": _images(3, 4), "diffusion": _images(3, 16),
               "captions": [["a red circle on a striped background in the top left corner"] * 5] * 3}
    fig = F.zoo_figure(samples)
    assert _n_images(fig) == 9 and len(fig.axes) == 9
    assert fig.axes[0].get_title() == "a red circle on a striped\nbackground in the top left\ncorner"
    assert [fig.axes[j].get_ylabel() for j in (0, 3, 6)] == ["stimulus", "VDVAE reconstruction", "diffusion sample"]
    assert fig._suptitle.get_text().startswith("Held-out mini-NSD images")


def test_strength_weight_grid_and_noise_examples():
    grid = {(w, s): _images(1, seed=int(10 * w + 100 * s))[0] for w in (0.0, 0.4, 1.0) for s in (0.0, 0.5, 1.0)}
    fig = F.strength_weight_grid(grid, _images(1)[0], _images(1, seed=2)[0], title="t")
    axes = np.array(fig.axes).reshape(3, 4)
    assert _n_images(fig) == 9 + 2 and not axes[2, 0].axison  # stimulus, first guess, then an empty corner
    assert [ax.get_title() for ax in axes[0, 1:]] == ["strength 0.0", "strength 0.5", "strength 1.0"]
    assert axes[1, 1].get_ylabel() == "text weight 0.4" and np.array_equal(axes[1, 2].images[0].get_array(),
                                                                            grid[(0.4, 0.5)])
    ns = {lab: {"first_guess": _images(2, 8), "final": _images(2, 16, seed=3)} for lab in ("none", "64")}
    fig = F.noise_examples(ns, _images(1)[0], 1, {"none": [0.1, 0.9], "64": [0.2, 0.3]}, title="Test image 2")
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["stimulus", "no noise", "noise 64"]
    assert axes[1, 1].get_xlabel() == "SSIM 0.90" and axes[1, 2].get_xlabel() == "SSIM 0.30"
    assert axes[1, 2].images[0].get_array().shape == (8, 8, 3)  # stage 2 resized to the first guess's size


def test_beta_slices_is_the_papers_fig_1():
    rng = np.random.default_rng(0)
    slices = [rng.normal(size=(10, 12)) for _ in range(3)]
    fig = F.beta_slices(slices, ["a", "b", "c"], suptitle="betas")
    assert len(fig.axes) == 3 and _n_images(fig) == 3 and fig._suptitle.get_text() == "betas"
    im = fig.axes[1].images[0]
    assert im.get_clim() == pytest.approx(tuple(np.percentile(slices[1], [40, 95])))
    assert im.get_array().shape == (12, 10) and fig.axes[1].get_title() == "b"  # transposed: x across
    roi = np.zeros((10, 12), bool)
    roi[3:7, 4:8] = True
    fig = F.beta_slices(slices, ["a", "b", "c"], suptitle="s", images=_images(3), image_titles=["1", "2", "3"], roi=roi)
    assert len(fig.axes) == 6 and _n_images(fig) == 6 and fig.axes[0].get_title() == "1"
    assert fig.axes[3].collections  # the ROI outline


# ------------------------------------------------------------------ chapter 01
def test_voxel_trace_is_the_truth_convolved(mini_small_root):
    spec = mini.spec_for(mini.read_manifest(mini_small_root)["size"])
    truth = mini.truth(mini_small_root, 1)
    tr = F.voxel_trace(nsd.NSDLayout(mini_small_root, dataset="mini"), 1, truth, spec)
    v = tr["voxel"]
    assert truth.population[v] == "early" and tr["psc"].size == tr["drive"].size == tr["t"].size == spec.run_volumes
    assert tr["psc"].mean() == pytest.approx(0, abs=1e-9)
    lib = hrf_library(tr=spec.tr, stim_dur=spec.stim_dur)
    assert np.array_equal(tr["hrf"], lib[:, truth.hrf_index[v]])
    first = tr["onsets"][0]  # before the first onset nothing is driven; at it, the first amplitude times the HRF
    assert np.all(tr["drive"][:first] == 0) and tr["drive"][first] == pytest.approx(
        truth.amplitudes[(truth.trial_session == 1) & (truth.trial_run == 1)][0, v] * lib[0, truth.hrf_index[v]])
    assert np.corrcoef(tr["psc"], tr["drive"])[0, 1] > 0.3  # the strongest voxel follows its drive
    fig = F.voxel_trace_figure(tr, 1)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3 and f"voxel {v}" in fig.axes[0].get_title()


def test_receptive_fields_and_hrf_figures():
    n = 60
    rng = np.random.default_rng(0)
    truth = SimpleNamespace(area=np.array(["V1", "V2", "V3", "hV4"] * (n // 4)), rf_x=rng.random(n),
                            rf_y=rng.random(n), rf_sigma=rng.random(n) / 10)
    fig = F.receptive_fields(_images(1, 32)[0], truth)
    assert len(fig.axes[0].patches) == 15 + 15  # up to 25 fields of V1 and of hV4: 15 each here
    assert len(fig.axes[1].collections) == 4 and fig.axes[1].get_legend() is not None
    fig = F.hrf_library_figure(1.0, 3.0)
    assert len(fig.axes[0].lines) == 21 and fig.axes[0].get_xlim() == (0, 25)  # 20 HRFs and the canonical
    true = rng.integers(0, 20, 200)
    fig = F.hrf_recovery_figure(true, true, true > 10, session=1)
    h = fig.axes[0].images[0].get_array()
    assert h.shape == (20, 20) and h.sum() == 200 and np.trace(h) == 200  # all on the diagonal
    assert fig.axes[1].images[0].get_array().sum() == (true > 10).sum()


def _per_session():
    rng = np.random.default_rng(0)
    n = 40
    s = {"xval_curve": np.array([1.0, 0.8, 0.7, 0.72]), "pc_candidates": np.arange(4), "n_pcs": 2,
         "fraction": rng.choice([0.5, 1.0], n), "r2_B": rng.random(n), "in_roi": np.arange(n) < 30,
         "onoff_r2": rng.random(n), "noise_pool": np.arange(n) >= 35, "r2_threshold": 0.4,
         "meanvol": rng.random(n)}
    return {1: s, 2: {**s, "n_pcs": 1}}


def test_glm_diagnostic_figures():
    per = _per_session()
    fig = F.pc_gain_figure(per, [1, 2], subject=1)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.lines[1].get_xydata().tolist() == [[2, -0.30000000000000004]]
    fig = F.ridge_fraction_figure(per, [1, 2])
    assert sum(p.get_height() for p in fig.axes[0].patches) == 60  # 30 ROI voxels x 2 sessions
    roi = -np.ones((5, 4, 3), int)
    roi.reshape(-1)[:40] = np.r_[np.ones(30), np.zeros(10)]
    fig = F.noise_pool_figure(per[1], roi)
    assert len(fig.axes[1].images) == 2 and "noise pool" in fig.axes[1].get_title()
    acc = {"voxel_r": {m: np.r_[np.random.default_rng(0).random(10), np.nan] for m in "ABCD"}}
    fig = F.glm_accuracy_figure(acc, {m: f"model {m}" for m in "ABCD"}, 1)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["model A", "model B", "model C", "model D"]


# ------------------------------------------------------------ data and models
def test_roi_zscore_latent_and_training_figures():
    roi = -np.ones((6, 5, 4), int)
    roi[1:5, 1:4, 1:3] = 1
    fig = F.roi_figure(roi, 1, np.random.default_rng(0).normal(size=(6, 5)), 24)
    assert len(fig.axes) == 4 and "24 in all" in fig.axes[1].get_title()  # three panels and a colour bar
    fig = F.zscore_figure(np.ones((3, 4)), np.zeros((3, 4)), np.zeros((2, 4)))
    assert sum(p.get_height() for p in fig.axes[0].patches) == 12
    lat = np.random.default_rng(0).normal(size=(5, 31 * 4))
    fig = F.latent_sd_figure(lat, [slice(4 * i, 4 * i + 4) for i in range(31)], [1] * 3 + [4] * 28, 32, title="t")
    assert len(fig.axes[0].patches) == 31 and fig.axes[0].patches[0].get_height() == pytest.approx(
        lat[:, :4].std(0).mean())
    fits = {r: {"train_loss": [3, 2, 1], "val_loss": [3, 2, 2], "metrics": {"best_epoch": 1}} for r in ("gru", "cnn")}
    fig = F.training_curves(fits, {"gru": "GRU"}, title="curves")
    assert [ax.get_title() for ax in fig.axes] == ["GRU", "cnn"] and len(fig.axes[0].lines) == 3


def test_clip_figures():
    text = np.ones((77, 8))
    fig = F.clip_tokens_figure(text, 5, np.ones((257, 8)))
    assert fig.axes[0].lines[1].get_xdata()[0] == 5 and len(fig.axes[1].lines[0].get_xdata()) == 257
    fig = F.token_r_figure(np.linspace(0, 1, 77), np.r_[0.9, np.arange(16) / 16], title="label")
    assert fig.axes[1].images[0].get_array().shape == (4, 4) and "0.90" in fig.axes[1].get_title()
    assert fig._suptitle.get_text() == "label"


# ------------------------------------------------------------------ results
def _report(n=12):
    rng = np.random.default_rng(0)
    per = {m: rng.random(n) for m in (*names.IMAGE_METRICS, "ssim_2d")}
    return SimpleNamespace(per_image=per, status=dict.fromkeys(per, "ok"))


def test_noise_curves_ours_beside_the_paper():
    levels = ["none", "64", "256"]
    t6 = paper.table(6).set_index("noise")[list(names.IMAGE_METRICS)]
    ours = t6.loc[levels] / 2
    ours["clip"] = np.nan
    fig = F.noise_curves(ours, t6, levels, title="noise")
    assert len(F.noise_curves(ours, t6, levels, title="x", metrics_shown=["ssim", "swav"]).axes) == 2
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes] == [names.METRIC_HEADERS[m] for m in names.IMAGE_METRICS]
    ssim = fig.axes[0]
    assert ssim.lines[0].get_ydata().tolist() == pytest.approx((t6.loc[levels, "ssim"] / 2).tolist())
    assert ssim.lines[1].get_ydata().tolist() == t6.loc[levels, "ssim"].tolist()
    assert [t.get_text() for t in fig.axes[5].texts] == ["ours: n/a"]  # clip: nothing of ours


def test_score_histograms_and_ssim_scatter():
    rep = _report()
    fig = F.score_histograms(rep, ["ssim", "clip"], title="scores")
    assert [ax.get_title() for ax in fig.axes] == ["SSIM ↑", "CLIP ↑"]
    assert fig.axes[1].lines[0].get_xdata()[0] == pytest.approx(rep.per_image["clip"].mean())
    fig = F.ssim_scatter(rep, title="run")
    assert fig.axes[0].collections[0].get_offsets().shape == (12, 2) and fig.axes[0].get_title() == "run"



def test_ledger_and_region_figures():
    idx = pd.MultiIndex.from_product([["ceiling", "GLM"], names.IMAGE_METRICS], names=["step", "metric"])
    steps = pd.DataFrame({"share": np.r_[np.full(8, 0.9), np.full(8, 0.1)]}, index=idx)
    fig = F.ledger_figure(steps, ["ceiling", "GLM"], title="t")
    bars = fig.axes[0].patches
    assert len(bars) == 16 and bars[8].get_x() == pytest.approx(0.9)  # the second step starts where the first ends
    rep = SimpleNamespace(means=dict.fromkeys(names.IMAGE_METRICS, 0.5))
    fig = F.region_figure({"early": rep, "higher": rep}, title="r")
    assert len(fig.axes) == 8 and len(fig.axes[0].patches) == 2
