"""Known-answer and mechanics tests of nsdlib.metrics (offline, small, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import correlation as scipy_correlation
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity as sk_ssim

from nsdlib import features as F
from nsdlib import metrics as M
from nsdlib.images import resize

torch.set_num_threads(1)  # 2 threads spin-wait on a shared 2-core machine


def _images(n=5, size=48, seed=0):
    rng = np.random.default_rng(seed)
    # smooth-ish random images so SSIM is far from both 0 and 1
    base = rng.integers(0, 256, (n, size // 4, size // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


def _noisy(images, amount=40, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(int) + rng.integers(-amount, amount + 1, images.shape), 0, 255).astype(np.uint8)


def _sk(gt, rec, **kw):
    a, b = rgb2gray(gt / 255.0), rgb2gray(rec / 255.0)
    return sk_ssim(b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, **kw)


# ---------------------------------------------------------------- low level
def test_identical_images_score_one():
    gt = _images()
    np.testing.assert_allclose(M.pixcorr(gt, gt), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(gt, gt), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(gt, gt, mode="columns"), 1.0, atol=1e-12)


def test_ssim_equals_scikit_image_2d_and_column_mode():
    gt = _images(4, 40)
    rec = _noisy(gt)
    ours2d = M.ssim(gt, rec, batch_size=3)
    ourscol = M.ssim(gt, rec, mode="columns", batch_size=3)
    ref2d = [_sk(g, r) for g, r in zip(gt, rec)]
    # Brain-Diffuser's call: a grayscale image with its columns as channels
    refcol = [_sk(g, r, channel_axis=-1) for g, r in zip(gt, rec)]
    np.testing.assert_allclose(ours2d, ref2d, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ourscol, refcol, rtol=0, atol=1e-12)
    # the column mode really is the mean of 1-D SSIMs of the columns
    a, b = rgb2gray(gt[0] / 255.0), rgb2gray(rec[0] / 255.0)
    cols = [sk_ssim(b[:, c], a[:, c], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                    data_range=1.0) for c in range(a.shape[1])]
    assert ourscol[0] == pytest.approx(np.mean(cols), abs=1e-12)
    assert not np.allclose(ours2d, ourscol)


def test_torch_path_equals_numpy_path():
    """The GPU code path (torch tensors) computes the same numbers as the CPU one (scipy)."""
    gt = _images(3, 40)
    rec = _noisy(gt)
    g = M.to_gray(gt)
    r = M.to_gray(rec)
    for mode in M.SSIM_MODES:
        np.testing.assert_allclose(M._ssim_batch(torch.from_numpy(g), torch.from_numpy(r), mode).numpy(),
                                   M._ssim_batch(g, r, mode), atol=1e-12)
    a = torch.from_numpy(gt / 255.0)
    b = torch.from_numpy(rec / 255.0)
    np.testing.assert_allclose(M._pixcorr_batch(a, b).numpy(), M._pixcorr_batch(gt / 255.0, rec / 255.0),
                               atol=1e-12)


def test_evaluator_reports_both_ssim_modes_in_one_pass():
    gt = _images(3, 32)
    rec = _noisy(gt)
    rep = M.ImageEvaluator(gt, ssim_mode="columns", also_ssim_2d=True, progress=False).evaluate(
        rec, ("ssim", "pixcorr"))
    np.testing.assert_allclose(rep.per_image["ssim"], M.ssim(gt, rec, mode="columns"), atol=1e-12)
    np.testing.assert_allclose(rep.per_image["ssim_2d"], M.ssim(gt, rec, mode="2d"), atol=1e-12)
    assert "column" in rep.sources["ssim"] and "2-D" in rep.sources["ssim_2d"]


def test_pixcorr_equals_numpy_corrcoef():
    gt = _images(3)
    rec = _noisy(gt, 90)
    ref = [np.corrcoef(g.ravel() / 255.0, r.ravel() / 255.0)[0, 1] for g, r in zip(gt, rec)]
    np.testing.assert_allclose(M.pixcorr(gt, rec, batch_size=2), ref, atol=1e-12)


def test_comparison_size_defaults_to_ground_truth_and_resizes_reconstructions():
    gt = _images(3, 48)
    big = resize(_noisy(gt), 64, filter="pil-bicubic")
    assert big.shape == (3, 64, 64, 3)
    back = resize(big, 48, filter="pil-bicubic")
    np.testing.assert_allclose(M.ssim(gt, big), M.ssim(gt, back), atol=1e-12)
    # an explicit size resizes both sides
    np.testing.assert_allclose(M.pixcorr(gt, big, size=32),
                               M.pixcorr(resize(gt, 32, filter="pil-bicubic"), resize(big, 32, filter="pil-bicubic")),
                               atol=1e-12)


def test_bad_inputs_are_named():
    gt = _images(3)
    with pytest.raises(ValueError, match="uint8"):
        M.ssim(gt.astype(np.float32), gt)
    with pytest.raises(ValueError, match="3 ground-truth images and 2 reconstructions"):
        M.pixcorr(gt, gt[:2])
    with pytest.raises(ValueError, match="ssim_mode"):
        M.ssim(gt, gt, mode="3d")
    with pytest.raises(ValueError, match="at least 11 pixels"):
        M.ssim(gt[:, :8, :8], gt[:, :8, :8])


# ---------------------------------------------------------- identification
def _brute_force_identification(gt, rec):
    n = len(gt)
    out = []
    for j in range(n):
        true = np.corrcoef(gt[j], rec[j])[0, 1]
        wins = sum(np.corrcoef(gt[i], rec[j])[0, 1] < true for i in range(n) if i != j)
        out.append(wins / (n - 1))
    return np.array(out)


def test_identification_equals_brute_force_with_ties_as_failures():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 3, (12, 6)).astype(np.float64)  # coarse values: many equal correlations
    gt[5] = gt[2]  # a duplicated ground truth: an exact tie for reconstructions 2 and 5
    rec = gt + rng.integers(0, 2, gt.shape)
    rec[2] = gt[2]
    ours = M.two_way_identification(gt, rec)
    np.testing.assert_array_equal(ours, _brute_force_identification(gt, rec))
    # reconstruction 2 equals its ground truth, but ground truth 5 ties with it: a failure
    assert ours[2] <= 10 / 11


def test_identification_identical_and_shuffled():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 40))
    assert M.two_way_identification(f, f).mean() == 1.0
    shuffled = M.two_way_identification(f, f[rng.permutation(300)]).mean()
    assert abs(shuffled - 0.5) < 0.05


def test_identification_of_embeddings_known_answers():
    # the rule chapter 06 applies to predicted CLIP embeddings (n_images, n_tokens, d)
    rng = np.random.default_rng(1)
    true = rng.normal(size=(30, 5, 6))
    assert M.two_way_identification(true, true).mean() == 1.0
    # anti-correlated predictions: the own pair is always the worst
    assert M.two_way_identification(true, -true).mean() == 0.0
    noisy = np.mean([M.two_way_identification(true, rng.normal(size=true.shape)).mean() for _ in range(20)])
    assert 0.4 < noisy < 0.6  # chance
    assert M.two_way_identification(true, true + 0.5 * rng.normal(size=true.shape)).mean() > 0.95
    # ties count as failures: identical ground truths cannot be told apart
    same = np.repeat(rng.normal(size=(1, 8)), 3, axis=0)
    np.testing.assert_array_equal(M.two_way_identification(same, same), 0.0)
    # a constant feature vector has no correlation: a failure, never a success
    with np.errstate(invalid="ignore"):
        const = true.reshape(30, -1).copy()
        const[3] = 1.0
        assert M.two_way_identification(const, const)[3] == 0.0
    with pytest.raises(ValueError, match="same for ground truth"):
        M.two_way_identification(true[:, :2], true)
    with pytest.raises(ValueError, match="at least 2 images; found 1"):
        M.two_way_identification(true[:1], true[:1])


def test_columnwise_r_equals_numpy_corrcoef():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 3, 4))
    b = a + rng.normal(size=a.shape)
    r = M.columnwise_r(a, b)
    assert r.shape == (3, 4)
    ref = [[np.corrcoef(a[:, i, j], b[:, i, j])[0, 1] for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(r, ref, atol=1e-12)
    a[:, 0, 0] = 2.0  # a constant column has no r
    r = M.columnwise_r(a, b)
    assert np.isnan(r[0, 0]) and np.isfinite(r[1:]).all()
    # nearly constant (rounding noise): NaN only with a tolerance
    a[:, 0, 1] = 1.0 + 1e-15 * rng.normal(size=40)
    assert np.isfinite(M.columnwise_r(a, b)[0, 1]) and np.isnan(M.columnwise_r(a, b, tol=1e-12)[0, 1])
    with pytest.raises(ValueError, match=r"same shape \(n, ...\); found \(40, 3, 4\) and \(40, 3\)"):
        M.columnwise_r(a, b[:, :, 0])


def test_per_token_correlation_known_answers():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 4, 8))
    np.testing.assert_allclose(M.per_token_correlation(true, true), 1.0)
    np.testing.assert_allclose(M.per_token_correlation(-true, true), -1.0)
    const = np.broadcast_to(true.mean(0), true.shape)
    np.testing.assert_allclose(M.per_token_correlation(const, true), 0.0)
    # signal + independent noise of equal variance: r = 1/sqrt(2) in expectation
    big = rng.normal(size=(4000, 2, 16))
    r = M.per_token_correlation(big + rng.normal(size=big.shape), big)
    np.testing.assert_allclose(r, 1 / np.sqrt(2), atol=0.02)
    # token 1 predicted, token 0 not
    pred = true.copy()
    pred[:, 0] = rng.normal(size=pred[:, 0].shape)
    r = M.per_token_correlation(pred, true)
    assert r[1] == pytest.approx(1.0) and abs(r[0]) < 0.3
    # one constant dimension is left out of its token's mean
    pred = true.copy()
    pred[:, 2, 0] = 0.0
    np.testing.assert_allclose(M.per_token_correlation(pred, true), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        M.per_token_correlation(true[:, :2], true)
    with pytest.raises(ValueError, match="at least 2"):
        M.per_token_correlation(true[:1], true[:1])


def test_correlation_distance_equals_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 7, 30))
    np.testing.assert_allclose(M.correlation_distance(a, b), [scipy_correlation(x, y) for x, y in zip(a, b)],
                               atol=1e-12)
    np.testing.assert_allclose(M.correlation_distance(a, a), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="same for ground truth"):
        M.correlation_distance(a, b[:, :5])


def test_latent_errors_known_answer():
    t = np.zeros((2, 3))
    p = np.array([[1.0, -1.0, 2.0], [0.0, 0.0, 2.0]])
    assert M.latent_errors(t, p) == {"mse": pytest.approx(10 / 6), "mae": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="same shape"):
        M.latent_errors(t, p[:, :2])


# ------------------------------------------------------------- the evaluator
def _pool(images):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _pooled_network(trained=False):
    """A tiny image->features callable (4x4 average pooling) as the CLIP metric: mechanics only."""
    return M.FeatureNetwork("clip", lambda x: {"clip": _pool(x).numpy()}, ("clip",), "4x4 pooling (test)",
                            trained=trained)


def _pooled_distance_network():
    """The same pooling serving a distance metric: mechanics only."""
    return M.FeatureNetwork("pool", lambda x: {"efficientnet": _pool(x).numpy()}, ("efficientnet",),
                            "4x4 pooling (test)", trained=False)


def test_evaluator_identical_images_and_batch_invariance():
    gt = _images(7, 32)
    rec = _noisy(gt, 60)
    nets = [F.alexnet_network(pretrained=False), _pooled_distance_network(), _pooled_network()]
    metrics = ("ssim", "pixcorr", "alexnet2", "alexnet5", "efficientnet", "clip")
    same = M.ImageEvaluator(gt, networks=nets, batch_size=3, progress=False).evaluate(gt, metrics)
    for m in ("alexnet2", "alexnet5", "clip", "ssim", "pixcorr"):
        np.testing.assert_allclose(same.per_image[m], 1.0, atol=1e-6)
    np.testing.assert_allclose(same.per_image["efficientnet"], 0.0, atol=1e-6)
    # random weights are mechanics only: flagged and never averaged into a metric
    assert same.status["alexnet2"] == "random-weights" and "RANDOM" in same.sources["alexnet2"]
    assert np.isnan(same.means["alexnet2"]) and same.means["ssim"] == pytest.approx(1.0)

    ev = M.ImageEvaluator(gt, networks=nets, batch_size=3, progress=False)
    a = ev.evaluate(rec, metrics)
    b = M.ImageEvaluator(gt, networks=nets, batch_size=7, progress=False).evaluate(rec, metrics)
    for m in metrics:
        np.testing.assert_allclose(a.per_image[m], b.per_image[m], atol=1e-6)
    # and the streaming identification equals the one-shot function on the full features
    full_gt = nets[0].features(gt)["alexnet5"]
    full_rec = nets[0].features(rec)["alexnet5"]
    np.testing.assert_allclose(a.per_image["alexnet5"], M.two_way_identification(full_gt, full_rec), atol=1e-12)
    np.testing.assert_allclose(a.per_image["ssim"], M.ssim(gt, rec), atol=1e-12)


def test_evaluator_shuffled_pairs_near_chance():
    gt = _images(120, 16, seed=4)
    rng = np.random.default_rng(0)
    report = M.ImageEvaluator(gt, networks=[_pooled_network(trained=True)], batch_size=50,
                              progress=False).evaluate(gt[rng.permutation(120)], ("clip",))
    assert report.status["clip"] == "ok"
    assert abs(report.means["clip"] - 0.5) < 0.08


def test_report_round_trip_and_frame():
    gt = _images(3, 24)
    rep = M.ImageEvaluator(gt, progress=False).evaluate(_noisy(gt), metrics=("ssim", "pixcorr", "clip"))
    back = M.MetricReport.from_dict(rep.to_dict())
    assert back.means["ssim"] == pytest.approx(rep.means["ssim"])
    assert np.isnan(back.means["clip"]) and back.status["clip"] == "unavailable"
    assert list(rep.frame().columns) == ["ssim", "pixcorr", "clip"]


# ------------------------------------------------------------------ bootstrap
def test_paired_bootstrap_known_answers():
    rng = np.random.default_rng(0)
    b = rng.normal(0.4, 0.1, 60)
    same = M.paired_bootstrap(b, b)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.real and same.sign == 0
    shift = M.paired_bootstrap(b + 0.03, b)  # every image gains 0.03: the interval is the shift itself
    assert shift.estimate == pytest.approx(0.03) and shift.low == pytest.approx(0.03)
    assert shift.high == pytest.approx(0.03) and shift.real and shift.sign == 1
    assert M.paired_bootstrap(b - 0.03, b).sign == -1
    half = M.paired_bootstrap(b * 0.5, b, relative=True)  # the mean halves: -50 % on every resample
    assert half.estimate == pytest.approx(-0.5) and (half.low, half.high) == pytest.approx((-0.5, -0.5))
    # pairing: a large image-to-image spread shared by both variants cancels
    base = rng.normal(0, 10, 60)
    paired = M.paired_bootstrap(base + 0.1 + rng.normal(0, 0.01, 60), base)
    assert paired.real and paired.high - paired.low < 0.02


def test_paired_bootstrap_equals_scipy_percentile_interval():
    """scipy.stats.bootstrap (paired, percentile) as the peer: with the same generator it draws the
    same resamples (integers(0, n, (n_resamples, n))), so the intervals agree to rounding."""
    rng = np.random.default_rng(1)
    b = rng.normal(0.5, 0.2, 150)
    a = b + rng.normal(0.02, 0.1, 150)
    ours = M.paired_bootstrap(a, b, n_resamples=4000, seed=3)
    peer = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
                           n_resamples=4000, method="percentile", rng=np.random.default_rng(3),
                           confidence_level=0.95)
    assert ours.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert (ours.low, ours.high) == pytest.approx((peer.confidence_interval.low, peer.confidence_interval.high),
                                                  rel=1e-9), (ours, peer.confidence_interval)
    assert M.paired_bootstrap(a, b, seed=3) == M.paired_bootstrap(a, b, seed=3)  # seeded
    assert M.paired_bootstrap(a, b, seed=4) != M.paired_bootstrap(a, b, seed=3)


def test_paired_bootstrap_nan_scores_and_bad_input():
    a = np.array([0.5, np.nan, 0.7, 0.6])
    b = np.array([0.4, 0.3, 0.5, 0.5])
    d = M.paired_bootstrap(a, b)
    assert d.estimate == pytest.approx(np.nanmean(a) - np.mean(b))  # the table's means, NaN left out
    with pytest.raises(ValueError, match="same length"):
        M.paired_bootstrap(a, b[:3])
    with pytest.raises(ValueError, match="at least 2 images"):
        M.paired_bootstrap([0.1], [0.2])
    with pytest.raises(ValueError, match="confidence"):
        M.paired_bootstrap(a, b, confidence=95)
    with pytest.raises(ValueError, match="finite"):
        M.paired_bootstrap([np.nan, np.nan], [0.1, 0.2])


def test_compare_reports_skips_metrics_not_computed():
    ok = {"ssim": "ok", "pixcorr": "ok", "alexnet2": "unavailable"}
    a = M.MetricReport({"ssim": np.array([0.5, 0.6, 0.7]), "pixcorr": np.array([0.1, 0.2, 0.3]),
                        "alexnet2": np.full(3, np.nan)}, dict.fromkeys(ok, ""), ok, 32, "columns")
    b = M.MetricReport({m: v - 0.1 for m, v in a.per_image.items()}, a.sources, a.status, 32, "columns")
    diffs = M.compare_reports(a, b)
    assert list(diffs) == ["ssim", "pixcorr"]
    assert diffs["ssim"].estimate == pytest.approx(0.1) and diffs["ssim"].low == pytest.approx(0.1)
    short = M.MetricReport({m: v[:2] for m, v in a.per_image.items()}, a.sources, a.status, 32, "columns")
    with pytest.raises(ValueError, match="different numbers of images: 3 and 2"):
        M.compare_reports(a, short)
