"""Known-answer tests of nsdlib.glm on small seeded simulations built with nsdlib.hrf."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nsdlib.glm import (
    GLMSingle,
    TrialDesign,
    canonical_hrf,
    cross_validation_badness,
    find_tail_threshold,
    fractional_ridge,
    hrf_library,
    polynomial_basis,
    select_n_pcs,
    trial_regressors,
)


def simulate(n_runs=4, n_time=160, n_signal=30, n_noise=30, noise=0.0, shared=0.0, pool_noise=1.0, amp=2.0,
             seed=0, tr=1.0):
    """Runs of signal voxels (one library HRF each) and noise voxels, baseline 500-1000, linear drift.

    Each condition has one true response per signal voxel (percent signal change), shown three
    times across the session; ``noise`` is thermal noise and ``shared`` a 3-component noise
    shared by all voxels (both in percent of the baseline); noise voxels always get
    ``pool_noise`` percent of thermal noise so that the mixture threshold has two groups.
    Returns runs, designs, true raw betas (n_trials, n_signal), true HRF indices, baselines.
    """
    rng = np.random.default_rng(seed)
    lib = hrf_library(tr, 3.0)
    onsets = np.arange(6.0, n_time - 12, 4.0)
    n_per = onsets.size
    n_tot = n_per * n_runs
    n_cond = n_tot // 3
    conds = np.concatenate([np.repeat(np.arange(n_cond), 3), rng.integers(0, n_cond, n_tot - 3 * n_cond)])
    conds = rng.permutation(conds)
    designs = [TrialDesign(onsets, conds[r * n_per:(r + 1) * n_per]) for r in range(n_runs)]
    hidx = rng.integers(0, lib.shape[1], n_signal)
    cond_beta = amp * (1 + 0.5 * rng.standard_normal((n_cond, n_signal)))
    n_vox = n_signal + n_noise
    base = rng.uniform(500, 1000, n_vox)
    t = np.linspace(-1, 1, n_time)
    runs, truth = [], []
    for d in designs:
        x = trial_regressors(n_time, tr, d.onsets, lib)
        b = cond_beta[d.conditions] * base[:n_signal] / 100  # raw units
        y = np.tile(base, (n_time, 1))
        y[:, :n_signal] += np.stack([x[hidx[v]] @ b[:, v] for v in range(n_signal)], 1)
        y += np.polynomial.legendre.legvander(t, 1) @ (5 * rng.standard_normal((2, n_vox)))
        y += noise * rng.standard_normal(y.shape) * base / 100
        y[:, n_signal:] += pool_noise * rng.standard_normal((n_time, n_noise)) * base[n_signal:] / 100
        if shared:
            y += rng.standard_normal((n_time, 3)) @ rng.standard_normal((3, n_vox)) * shared * base / 100
        runs.append(y)
        truth.append(b)
    return runs, designs, np.concatenate(truth), hidx, base


def _raw(model, name, n):
    return model.results_[name].betas[:, :n] * model.meanvol_[:n] / 100


def _median_corr(a, b):
    return float(np.median([np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(a.shape[1])]))


# ------------------------------------------------------------------- building blocks
def test_library_is_reexported_and_regressors_shift_the_hrf():
    lib = hrf_library(1.0, 3.0)
    assert lib.shape[1] == 20 and canonical_hrf(1.0, 3.0).ndim == 1
    x = trial_regressors(50, 1.0, np.array([0.0, 7.0]), lib[:, 4])
    h = np.concatenate([lib[:, 4], np.zeros(50 - lib.shape[0])])  # the response ends after 32 s
    np.testing.assert_allclose(x[:, 0], h)
    np.testing.assert_allclose(x[7:, 1], h[:43])
    assert np.all(x[:7, 1] == 0)
    # off-grid onsets interpolate between the two neighbouring shifts
    half = trial_regressors(50, 1.0, np.array([7.5]), lib[:, 4])[:, 0]
    np.testing.assert_allclose(half, 0.5 * (x[:, 1] + trial_regressors(50, 1.0, np.array([8.0]), lib[:, 4])[:, 0]))


def test_polynomial_basis_is_orthonormal_and_spans_polynomials():
    p = polynomial_basis(100, 3)
    np.testing.assert_allclose(p.T @ p, np.eye(4), atol=1e-12)
    t = np.arange(100.0)
    cubic = 1 + 0.1 * t - 0.01 * t**2 + 1e-4 * t**3
    np.testing.assert_allclose(p @ (p.T @ cubic), cubic, rtol=1e-9)


def test_fraction_one_is_ols_and_lengths_match_fractions():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 12))
    y = rng.standard_normal((80, 5))
    fr = np.array([1.0, 0.7, 0.3, 0.05])
    coef, alphas = fractional_ridge(X, y, fr)
    np.testing.assert_allclose(coef[0], np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10, atol=1e-12)
    assert np.all(alphas[0] == 0)
    ratio = np.linalg.norm(coef, axis=1) / np.linalg.norm(coef[0], axis=0)
    np.testing.assert_allclose(ratio, np.repeat(fr[:, None], 5, 1), atol=0.02)
    # each solution is a true ridge solution for its alpha
    for i in range(1, fr.size):
        for v in range(5):
            ridge = np.linalg.solve(X.T @ X + alphas[i, v] * np.eye(12), X.T @ y[:, v])
            np.testing.assert_allclose(coef[i][:, v], ridge, rtol=1e-8, atol=1e-10)


def test_fractional_ridge_agrees_with_fracridge():
    fracridge = pytest.importorskip("fracridge")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 10))
    y = rng.standard_normal((60, 4))
    fr = np.array([0.1, 0.4, 0.8, 1.0])
    ref, ref_alpha = fracridge.fracridge(X, y, fr, jit=False)
    coef, alphas = fractional_ridge(X, y, fr)
    np.testing.assert_allclose(np.moveaxis(coef, 0, 1), ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(alphas, ref_alpha, rtol=1e-6, atol=1e-9)


def test_badness_equals_the_explicit_double_loop():
    rng = np.random.default_rng(2)
    runs = np.repeat(np.arange(4), 6)
    conds = rng.integers(0, 8, runs.size)
    ref = rng.standard_normal((runs.size, 3))
    cand = ref + 0.3 * rng.standard_normal(ref.shape)
    sessions = runs // 2
    for sess in (None, sessions):
        got = cross_validation_badness(cand, ref, conds, runs, sess)
        groups = [np.arange(runs.size)] if sess is None else [np.flatnonzero(sessions == s) for s in (0, 1)]
        rz, cz = np.empty_like(ref), np.empty_like(ref)
        for g in groups:  # z-scored per session with the reference's statistics
            mu, sd = ref[g].mean(0), ref[g].std(0)
            rz[g], cz[g] = (ref[g] - mu) / sd, (cand[g] - mu) / sd
        want = np.zeros(3)
        for i in range(runs.size):  # held-out trial i against same-condition training trials j
            for j in range(runs.size):
                if conds[i] == conds[j] and runs[i] != runs[j]:
                    want += (cz[j] - rz[i]) ** 2
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_select_n_pcs_takes_the_smallest_within_pcstop():
    assert select_n_pcs(np.array([0.0, 5.0, 9.0, 9.9, 10.0, 10.0])) == 3  # 9.9 * 1.05 >= 10
    assert select_n_pcs(np.array([0.0, -1.0, -2.0])) == 0
    assert select_n_pcs(np.array([-3.0, -3.0 + 1e-12]), tol=1e-9) == 0


def test_tail_threshold_separates_two_gaussians():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(0, 1, 2000), rng.normal(6, 1, 600)])
    f = find_tail_threshold(v)
    assert 2.0 < f < 4.5
    with pytest.raises(ValueError, match="at least 10"):
        find_tail_threshold(np.arange(5.0))


# ------------------------------------------------------------------------ the estimator
def test_noiseless_simulation_gives_exact_betas_and_hrfs():
    runs, designs, truth, hidx, base = simulate()
    m = GLMSingle(dtype=np.float64, verbose=False).fit(runs, designs)
    n = truth.shape[1]
    scale = np.abs(truth).max()
    for name in "BCD":
        np.testing.assert_allclose(_raw(m, name, n), truth, atol=1e-6 * scale, err_msg=f"model {name}")
    np.testing.assert_array_equal(m.hrf_index_[:n], hidx)
    assert np.all(m.results_["B"].r2[:n] > 1 - 1e-9)
    assert m.n_pcs_ == 0 and np.all(m.fraction_[:n] == 1)  # nothing to denoise, nothing to shrink
    # model A (canonical HRF) is not exact when the true HRF differs from it
    assert np.abs(_raw(m, "A", n) - truth).max() > 1e-3 * scale
    assert m.betas_.shape == (sum(d.n_trials for d in designs), len(base))


def test_a_trial_without_data_gets_a_zero_beta_and_spares_the_others():
    # a trial at the last volume: its regressor is 0 there (the HRF starts at 0), the design is
    # rank-deficient, and the minimum-norm solution gives it 0 while the other betas stay exact
    runs, designs, truth, hidx, base = simulate(n_signal=10, n_noise=30)
    d0 = designs[0]
    designs = [TrialDesign(np.append(d0.onsets, 159.0), np.append(d0.conditions, d0.conditions[0])), *designs[1:]]
    m = GLMSingle(dtype=np.float64, verbose=False, n_pcs=2).fit(runs, designs)
    last = d0.n_trials
    keep = np.arange(m.n_trials_) != last
    for name in "BCD":
        b = _raw(m, name, 10)
        assert np.all(np.isfinite(b)) and np.all(b[last] == 0)
        np.testing.assert_allclose(b[keep], truth, atol=1e-6 * np.abs(truth).max(), err_msg=name)


def test_percent_signal_change_is_relative_to_the_mean_volume():
    runs, designs, truth, _, _ = simulate(n_signal=5, n_noise=20)
    m = GLMSingle(dtype=np.float64, glmdenoise=False, fracridge=False, verbose=False).fit(runs, designs)
    meanvol = np.concatenate(runs).mean(0)
    np.testing.assert_allclose(m.meanvol_, meanvol)
    np.testing.assert_allclose(m.results_["B"].betas[:, :5], truth / meanvol[:5] * 100, rtol=1e-6)


def test_true_hrf_recovered_for_high_snr_voxels():
    runs, designs, truth, hidx, _ = simulate(noise=0.1, n_signal=40, seed=4)
    m = GLMSingle(verbose=False, glmdenoise=False, fracridge=False).fit(runs, designs)
    d = np.abs(m.hrf_index_[:40] - hidx)
    assert np.mean(d <= 1) >= 0.95
    assert np.mean(d == 0) >= 0.6


def test_signal_voxels_stay_out_of_the_noise_pool():
    runs, designs, truth, _, base = simulate(noise=0.5, n_signal=30, n_noise=60, seed=5)
    dim = np.zeros(len(runs[0][0]), bool)
    dim[-5:] = True  # five noise voxels far dimmer than the rest: not "brain"
    runs = [np.where(dim, y * 0.01, y) for y in runs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = GLMSingle(verbose=False).fit(runs, designs)
    assert not m.noise_pool_[:30].any()
    assert m.noise_pool_[30:-5].mean() > 0.8
    assert not m.noise_pool_[-5:].any()
    assert 0 < m.r2_threshold_ < m.onoff_r2_[:30].min()
    # the paper's criterion: cross-validated ON-OFF R² < 0
    p = GLMSingle(verbose=False, noise_pool="xval", fracridge=False).fit(runs, designs)
    assert not p.noise_pool_[:30].any() and p.noise_pool_[30:-5].mean() > 0.3
    assert np.array_equal(p.noise_pool_, (p.onoff_xval_r2_ < 0) & ~dim)


def test_glmdenoise_and_ridge_improve_noisy_betas():
    runs, designs, truth, hidx, _ = simulate(noise=1.0, shared=1.0, n_signal=30, n_noise=60, n_runs=5, seed=6)
    m = GLMSingle(verbose=False).fit(runs, designs)
    n = truth.shape[1]
    corr = {k: _median_corr(_raw(m, k, n), truth) for k in "ABCD"}
    assert m.n_pcs_ >= 2  # three shared components
    assert m.xval_curve_[m.n_pcs_] > m.xval_curve_[0]
    assert corr["C"] > corr["B"] + 0.1
    assert corr["D"] >= corr["C"] - 0.01
    assert np.all((m.fraction_ > 0) & (m.fraction_ <= 1)) and (m.fraction_[:n] < 1).any()
    # D is rescaled: its betas keep the unregularised betas' scale
    assert 0.5 < np.std(m.results_["D"].betas[:, :n]) / np.std(m.results_["C"].betas[:, :n]) < 1.5


def test_fraction_one_model_d_equals_model_c_and_chunks_change_nothing():
    runs, designs, *_ = simulate(noise=1.0, shared=0.5, seed=7, n_signal=12, n_noise=24, n_runs=3)
    a = GLMSingle(verbose=False, dtype=np.float64, chunk_size=7).fit(runs, designs)
    b = GLMSingle(verbose=False, dtype=np.float64, chunk_size=1000).fit(runs, designs)
    for k in "ABCD":
        np.testing.assert_allclose(a.results_[k].betas, b.results_[k].betas, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(a.noise_pool_, b.noise_pool_)
    assert a.n_pcs_ == b.n_pcs_
    one = GLMSingle(verbose=False, dtype=np.float64, fractions=[1.0]).fit(runs, designs)
    np.testing.assert_allclose(one.results_["D"].betas, one.results_["C"].betas)
    np.testing.assert_allclose(one.results_["C"].betas, a.results_["C"].betas, rtol=1e-9, atol=1e-9)


def test_float32_agrees_with_float64():
    # a baseline near 1000 with responses of a few percent: float32 must not lose the signal
    runs, designs, *_ = simulate(noise=1.0, shared=0.5, seed=8, n_signal=12, n_noise=24, n_runs=3)
    a = GLMSingle(verbose=False).fit([y.astype(np.float32) for y in runs], designs)
    b = GLMSingle(verbose=False, dtype=np.float64).fit(runs, designs)
    assert a.n_pcs_ == b.n_pcs_ and np.array_equal(a.hrf_index_, b.hrf_index_)
    for k in "ABCD":
        np.testing.assert_allclose(a.results_[k].r2, b.results_[k].r2, atol=1e-6)
        scale = np.abs(b.results_[k].betas).max()
        np.testing.assert_allclose(a.results_[k].betas, b.results_[k].betas, atol=1e-5 * scale)


def test_blas_thread_limit_changes_nothing_and_is_restored():
    from threadpoolctl import threadpool_info

    runs, designs, *_ = simulate(n_signal=4, n_noise=12, n_runs=2)
    before = [i["num_threads"] for i in threadpool_info()]
    kw = dict(verbose=False, dtype=np.float64, fracridge=False)
    a = GLMSingle(blas_threads=1, **kw).fit(runs, designs)
    assert [i["num_threads"] for i in threadpool_info()] == before
    b = GLMSingle(**kw).fit(runs, designs)
    np.testing.assert_allclose(a.results_["C"].betas, b.results_["C"].betas, rtol=1e-9, atol=1e-9)


def test_design_forms_are_equivalent():
    runs, designs, *_ = simulate(n_signal=4, n_noise=12, n_runs=2)
    kw = dict(verbose=False, glmdenoise=False, fracridge=False, dtype=np.float64)
    ref = GLMSingle(**kw).fit(runs, designs).results_["B"].betas
    vols = []
    for y, d in zip(runs, designs):
        v = np.zeros(y.shape[0], np.int64)
        v[d.onsets.astype(int)] = d.conditions + 1  # NSD design files: 0 means no trial
        vols.append(v)
    np.testing.assert_allclose(GLMSingle(**kw).fit(runs, vols).results_["B"].betas, ref)
    floats = [v.astype(float) for v in vols]  # as np.loadtxt reads NSD's design files
    np.testing.assert_allclose(GLMSingle(**kw).fit(runs, floats).results_["B"].betas, ref)
    dicts = [{"onset": d.onsets, "condition": d.conditions} for d in designs]
    np.testing.assert_allclose(GLMSingle(**kw).fit(runs, dicts).results_["B"].betas, ref)


# --------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small():
    runs, designs, *_ = simulate(n_signal=3, n_noise=5, n_runs=2)
    return runs, designs


def test_onsets_beyond_the_run_are_refused(small):
    runs, designs = small
    late = TrialDesign(np.append(designs[1].onsets, 160.0), np.append(designs[1].conditions, 0))
    with pytest.raises(ValueError, match=r"run 1: onsets must lie in \[0, 160\) s"):
        GLMSingle(verbose=False).fit(runs, [designs[0], late])
    with pytest.raises(ValueError, match="run 0: onsets"):
        GLMSingle(verbose=False).fit(runs, [TrialDesign([-1.0, 4.0], [0, 1]), designs[1]])


def test_nan_time_series_are_refused(small):
    runs, designs = small
    bad = runs[1].copy()
    bad[10, 2] = np.nan
    with pytest.raises(ValueError, match=r"run 1 has NaN or infinite values in 1 voxel\(s\) \(first at voxel 2\)"):
        GLMSingle(verbose=False).fit([runs[0], bad], designs)


def test_mismatched_runs_and_designs_are_refused(small):
    runs, designs = small
    with pytest.raises(ValueError, match="found 2 runs and 1 designs"):
        GLMSingle(verbose=False).fit(runs, designs[:1])
    with pytest.raises(ValueError, match="run 0 has 8, run 1 has 7"):
        GLMSingle(verbose=False).fit([runs[0], runs[1][:, :7]], designs)
    with pytest.raises(ValueError, match="needs 160 entries .* found 100"):
        GLMSingle(verbose=False).fit(runs, [np.zeros(100, np.int64), designs[1]])
    with pytest.raises(ValueError, match="one condition per onset; found 3 onsets and 2 conditions"):
        TrialDesign([1.0, 5.0, 9.0], [1, 2])
    with pytest.raises(ValueError, match="share an onset"):
        GLMSingle(verbose=False).fit(runs, [TrialDesign([4.0, 4.0], [1, 2]), designs[1]])
    with pytest.raises(ValueError, match=r"shape \(n_time, n_voxels\)"):
        GLMSingle(verbose=False).fit([runs[0][:, 0], runs[1]], designs)


def test_bad_parameters_are_refused(small):
    runs, designs = small
    with pytest.raises(ValueError, match="fractions must lie in"):
        GLMSingle(fractions=[1.0, 0.0], verbose=False).fit(runs, designs)
    with pytest.raises(ValueError, match="noise_pool must be"):
        GLMSingle(noise_pool="cv", verbose=False).fit(runs, designs)
    with pytest.raises(ValueError, match="keep_betas"):
        GLMSingle(keep_betas=("E",), verbose=False).fit(runs, designs)


def test_no_repeats_warns_and_skips_cross_validation(small):
    runs, designs = small
    unique = [TrialDesign(d.onsets, np.arange(d.n_trials) + 100 * i) for i, d in enumerate(designs)]
    with pytest.warns(UserWarning, match="no condition occurs in more than one run"):
        m = GLMSingle(verbose=False, dtype=np.float64).fit(runs, unique)
    assert m.n_pcs_ == 0 and np.all(m.fraction_ == 1)
    np.testing.assert_allclose(m.results_["D"].betas, m.results_["B"].betas, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------- pipeline: NSD-style betas
@pytest.fixture(scope="module")
def mini_betas(mini_small_root, tmp_path_factory):
    """write_betas on a private copy of the small mini-NSD (the shared root stays read-only)."""
    import shutil

    from nsdlib import RunConfig
    from nsdlib.pipeline.betas import write_betas

    tmp = tmp_path_factory.mktemp("glm-betas")
    root = tmp / "mini-nsd"
    shutil.copytree(mini_small_root, root)
    cfg = RunConfig(dataset="mini", subject=1, quick=True, workdir=tmp / "work", nsd_root=root)
    out = write_betas(cfg, progress=False)
    return cfg, out


def test_write_betas_writes_nsd_layout_int16(mini_betas):
    import nibabel as nib

    from nsdlib import mini
    from nsdlib.nsd import NSDLayout, read_beta_volume
    from nsdlib.pipeline.betas import glm_diagnostics

    cfg, out = mini_betas
    spec = mini.read_manifest(cfg.nsd_root)["spec"]
    assert out.name == "betas_fithrf_GLMdenoise_RR" and out.is_relative_to(cfg.nsd_root)
    layout = NSDLayout(cfg.nsd_root, dataset="mini")
    roi = np.asarray(nib.load(layout.local_path(layout.roi_file(1))).dataobj)
    diag = glm_diagnostics(cfg, progress=False)
    assert layout.sessions(1) == list(range(1, spec["n_sessions"] + 1))
    for s in diag["sessions"]:
        img = nib.load(out / f"betas_session{s:02d}.nii.gz")
        assert img.get_data_dtype() == np.int16
        vol = np.asarray(img.dataobj)
        n_trials = spec["n_trials"] // spec["n_sessions"]
        assert vol.shape == (*roi.shape, n_trials)
        assert np.all(vol[roi < 0] == 0)
        want = np.clip(np.rint(diag["per_session"][s]["betas_brain"].astype(float) * 300), -32768, 32767)
        np.testing.assert_array_equal(vol[roi >= 0].T, want)
        # the NSD reader gives back percent signal change (x 300 undone)
        v0 = read_beta_volume(layout, 1, s, 0)
        np.testing.assert_allclose(v0[roi >= 0], want[0] / 300, rtol=1e-6)
    # trials are in chronological order: the design's conditions are the truth's trial images
    truth = mini.truth(cfg.nsd_root, 1)
    conds = np.concatenate([diag["per_session"][s]["conditions"] for s in diag["sessions"]])
    np.testing.assert_array_equal(conds, truth.trial_image_index)


def test_write_betas_resumes_and_rewrites_changed_sessions(mini_betas):
    from nsdlib.pipeline.betas import write_betas
    from nsdlib.store import Store

    cfg, out = mini_betas
    files = sorted(out.glob("betas_session*.nii.gz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    store = Store.for_config(cfg)
    before = len(store.events())
    write_betas(cfg, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert all(e["event"] != "computed" for e in store.events()[before:])
    # a file written with other parameters (here: a foreign descrip) is replaced
    import nibabel as nib

    img = nib.load(files[0])
    data = np.asarray(img.dataobj)
    hdr = img.header.copy()
    hdr["descrip"] = b"other parameters"
    nib.save(nib.Nifti1Image(np.zeros_like(data), img.affine, hdr), files[0])
    write_betas(cfg, progress=False)
    np.testing.assert_array_equal(np.asarray(nib.load(files[0]).dataobj), data)
    assert [f.stat().st_mtime_ns for f in files[1:]] == stamps[1:]


def test_models_on_mini_nsd_improve_from_b_to_d(mini_betas):
    from nsdlib import mini
    from nsdlib.pipeline.betas import glm_diagnostics, hrf_recovery, model_accuracy

    cfg, _ = mini_betas
    diag = glm_diagnostics(cfg, progress=False)
    truth = mini.truth(cfg.nsd_root, 1)
    acc = model_accuracy(diag, truth)["median_r"]
    assert acc["D"] > acc["B"] + 0.03 and acc["B"] > acc["A"]
    assert hrf_recovery(diag, truth)["within1_high"] > 0.8


def test_write_betas_refuses_nsd(tmp_path):
    from nsdlib import ConfigError, RunConfig
    from nsdlib.pipeline.betas import write_betas

    with pytest.raises(ConfigError, match="NSD ships its single-trial betas"):
        write_betas(RunConfig(dataset="nsd", workdir=tmp_path))
