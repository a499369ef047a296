"""Tests for nsdlib.ridge: known answers (closed form, scikit-learn, generating alphas),
shapes, normalisation, persistence and bad input. Small, seeded, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge as SkRidge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import KFold

from nsdlib.ridge import Ridge, _fold_kernels, _kernel_eig32, restandardize, ridge_predict

torch.set_num_threads(2)
F64 = torch.float64


def _data(n, p, t, seed=0, n_test=7, offset=3.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + offset
    W = rng.normal(size=(p, t)) / np.sqrt(p)
    Y = X @ W + 0.5 * rng.normal(size=(n, t)) - 2.0
    Z = rng.normal(size=(n_test, p)) + offset
    return X, Y, Z


def _closed_form(X, Y, alpha, fit_intercept=True):
    xm = X.mean(0) if fit_intercept else np.zeros(X.shape[1])
    ym = Y.mean(0) if fit_intercept else np.zeros(Y.shape[1:])
    Xc, Yc = X - xm, Y - ym
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    return W, ym - xm @ W


# ---------------------------------------------------------------- fixed alpha: known answers


@pytest.mark.parametrize("n,p", [(30, 50), (60, 12)], ids=["kernel(n<p)", "primal(n>p)"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_equals_closed_form(n, p, fit_intercept):
    X, Y, Z = _data(n, p, 5)
    W, b = _closed_form(X, Y, 7.5, fit_intercept)
    m = Ridge(7.5, fit_intercept=fit_intercept, dtype=F64).fit(X, Y)
    np.testing.assert_allclose(m.coef_, W.T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(m.intercept_, b, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(m.predict(Z), Z @ W + b, rtol=1e-9, atol=1e-10)
    pred = ridge_predict(X, Y, Z, 7.5, fit_intercept=fit_intercept, dtype=F64)
    np.testing.assert_allclose(pred, Z @ W + b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n,p", [(40, 90), (90, 25)])
def test_equals_sklearn_ridge_with_intercept(n, p):
    X, Y, Z = _data(n, p, 6, seed=1)
    sk = SkRidge(alpha=60.0, fit_intercept=True).fit(X, Y)
    ref = sk.predict(Z)
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-4)):
        m = Ridge(60.0, dtype=dtype).fit(X, Y)
        assert m.coef_.shape == sk.coef_.shape == (6, p)
        np.testing.assert_allclose(m.coef_, sk.coef_, rtol=tol, atol=tol * np.abs(sk.coef_).max())
        scale = np.abs(ref).max()
        assert np.abs(m.predict(Z) - ref).max() / scale < tol
        assert np.abs(ridge_predict(X, Y, Z, 60.0, dtype=dtype) - ref).max() / scale < tol


def test_single_target_and_1d_y_like_sklearn():
    X, Y, Z = _data(25, 40, 1, seed=2)
    y = Y[:, 0]
    sk = SkRidge(alpha=3.0).fit(X, y)
    m = Ridge(3.0, dtype=F64).fit(X, y)
    assert m.coef_.shape == (40,)
    assert isinstance(m.intercept_, float)
    np.testing.assert_allclose(m.coef_, sk.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.intercept_, sk.intercept_, rtol=1e-9)
    assert m.predict(Z).shape == (7,)
    np.testing.assert_allclose(ridge_predict(X, y, Z, 3.0, dtype=F64), sk.predict(Z), rtol=1e-9)


def test_token_shaped_targets_round_trip():
    rng = np.random.default_rng(3)
    X, Z = rng.normal(size=(30, 45)), rng.normal(size=(4, 45))
    Y = rng.normal(size=(30, 5, 8))
    flat = ridge_predict(X, Y.reshape(30, 40), Z, 11.0, dtype=F64)
    pred = ridge_predict(X, Y, Z, 11.0, dtype=F64)
    assert pred.shape == (4, 5, 8)
    np.testing.assert_array_equal(pred.reshape(4, 40), flat)
    m = Ridge(11.0, dtype=F64).fit(X, Y)
    assert m.coef_.shape == (5, 8, 45) and m.intercept_.shape == (5, 8)
    np.testing.assert_allclose(m.predict(Z), pred, rtol=1e-10, atol=1e-12)
    sk = SkRidge(alpha=11.0).fit(X, Y.reshape(30, 40))
    np.testing.assert_allclose(m.coef_.reshape(40, 45), sk.coef_, rtol=1e-8, atol=1e-12)


def test_batches_and_torch_inputs_give_the_same_answer():
    X, Y, Z = _data(35, 60, 13, seed=4)
    ref = ridge_predict(X, Y, Z, 5.0, dtype=F64)
    small = ridge_predict(X, Y, Z, 5.0, dtype=F64, batch_targets=3)
    np.testing.assert_allclose(small, ref, rtol=1e-12, atol=1e-12)
    as_torch = ridge_predict(torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(Z), 5.0, dtype=F64)
    np.testing.assert_allclose(as_torch, ref, rtol=1e-12, atol=1e-12)
    assert ridge_predict(X, Y, Z, 5.0).dtype == np.float32


# ---------------------------------------------------------------- cross-validated alphas

GRID = [1.0, 10.0, 100.0, 1000.0, 1e4]


@pytest.mark.parametrize("n,p", [(40, 60), (70, 15)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loo_errors_and_alphas_equal_sklearn_ridgecv(n, p, fit_intercept):
    X, Y, _ = _data(n, p, 6, seed=5)
    Y[:, 3:] = np.random.default_rng(6).normal(size=(n, 3)) * 3  # pure noise targets want large alphas
    alphas = np.logspace(-2, 4, 7)
    sk = SkRidgeCV(alphas=alphas, fit_intercept=fit_intercept, alpha_per_target=True, store_cv_results=True).fit(X, Y)
    m = Ridge(alphas=alphas, cv="loo", alpha_per="target", fit_intercept=fit_intercept, dtype=F64).fit(X, Y)
    np.testing.assert_allclose(m.cv_mse_, sk.cv_results_.mean(0).T, rtol=1e-8)
    np.testing.assert_array_equal(m.alpha_, sk.alpha_)
    np.testing.assert_allclose(m.coef_, sk.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(m.intercept_, sk.intercept_, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("n,p", [(40, 60), (70, 15)])
def test_kfold_errors_equal_a_loop_of_sklearn_fits(n, p):
    X, Y, _ = _data(n, p, 4, seed=7)
    alphas = [0.5, 5.0, 50.0, 500.0]
    ref = np.zeros((len(alphas), 4))
    for tr, va in KFold(5).split(X):
        for i, a in enumerate(alphas):
            ref[i] += ((SkRidge(alpha=a).fit(X[tr], Y[tr]).predict(X[va]) - Y[va]) ** 2).sum(0)
    ref /= n
    m = Ridge(alphas=alphas, cv=5, alpha_per="target", dtype=F64).fit(X, Y)
    np.testing.assert_allclose(m.cv_mse_, ref, rtol=1e-9)
    np.testing.assert_array_equal(m.alpha_, np.asarray(alphas)[ref.argmin(0)])
    pooled = Ridge(alphas=alphas, cv=5, alpha_per="regression", dtype=F64).fit(X, Y)
    np.testing.assert_allclose(pooled.cv_mse_[:], ref.mean(1), rtol=1e-9)
    assert pooled.alpha_ == alphas[int(ref.mean(1).argmin())]


@pytest.mark.parametrize("n,p", [(40, 60), (70, 15)])
def test_gcv_equals_the_textbook_formula(n, p):
    X, Y, _ = _data(n, p, 3, seed=8)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    alphas = [0.3, 3.0, 30.0, 300.0]
    ref = []
    for a in alphas:
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(p), Xc.T)
        rss = ((Yc - H @ Yc) ** 2).sum(0)
        ref.append(rss / (1 - (np.trace(H) + 1) / n) ** 2 / n)
    m = Ridge(alphas=alphas, cv="gcv", alpha_per="target", dtype=F64).fit(X, Y)
    np.testing.assert_allclose(m.cv_mse_, np.array(ref), rtol=1e-9)


def _bayes_tokens(n, p, token_alphas, dim, seed):
    """Targets whose weights are drawn N(0, 1/alpha) with unit noise: the posterior mean, the
    best predictor, is ridge with exactly that alpha, so CV should find it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = np.empty((n, len(token_alphas), dim))
    for k, a in enumerate(token_alphas):
        Y[:, k] = X @ (rng.normal(size=(p, dim)) / np.sqrt(a)) + rng.normal(size=(n, dim))
    return X, Y + 3.0


@pytest.mark.parametrize("cv", [5, "loo", "gcv"])
@pytest.mark.parametrize("n,p", [(300, 100), (150, 300)])
def test_selected_alpha_is_the_generating_alpha(cv, n, p):
    X, Y = _bayes_tokens(n, p, [10.0, 100.0, 1000.0], 32, seed=1)
    per_token = Ridge(alphas=GRID, cv=cv, alpha_per="token").fit(X, Y)
    np.testing.assert_array_equal(per_token.alpha_, [10.0, 100.0, 1000.0])
    assert per_token.cv_mse_.shape == (len(GRID), 3)
    one = Ridge(alphas=GRID, cv=cv, alpha_per="regression").fit(X, Y[:, 1:2])
    assert one.alpha_ == 100.0


def test_per_target_alphas_and_predictions():
    X, Y = _bayes_tokens(120, 200, [1.0, 1e4], 16, seed=2)
    Y = Y.reshape(120, 32)
    Z = np.random.default_rng(9).normal(size=(5, 200))
    m = Ridge(alphas=[1.0, 1e4], cv="loo", alpha_per="target", dtype=F64, batch_targets=5).fit(X, Y)
    assert (m.alpha_[:16] == 1.0).all() and (m.alpha_[16:] == 1e4).all()
    sk = SkRidge(alpha=m.alpha_).fit(X, Y)  # scikit-learn accepts one alpha per target
    np.testing.assert_allclose(m.predict(Z), sk.predict(Z), rtol=1e-8, atol=1e-9)
    pred, alpha = ridge_predict(X, Y, Z, alphas=[1.0, 1e4], cv="loo", alpha_per="target", dtype=F64,
                                batch_targets=5, return_alpha=True)
    np.testing.assert_array_equal(alpha, m.alpha_)
    np.testing.assert_allclose(pred, sk.predict(Z), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("n,p", [(30, 50), (60, 12)], ids=["kernel(n<p)", "primal(n>p)"])
def test_lazy_fit_predicts_the_closed_form_and_forms_weights_only_when_read(n, p):
    X, Y, Z = _data(n, p, 6, seed=21)
    Y[:, 3:] = np.random.default_rng(22).normal(size=(n, 3)) * 3  # noise targets: other alphas
    m = Ridge(alphas=[0.2, 20.0, 2000.0], cv="loo", alpha_per="target", dtype=F64).fit(X, Y)
    assert m._coef is None  # the lazy fit keeps the kernel form: no t x p weights yet
    alphas = m.alpha_
    assert len(set(alphas.tolist())) > 1
    ref = np.stack([Z @ w + b for w, b in (_closed_form(X, Y[:, [j]], a) for j, a in enumerate(alphas))], 1)[..., 0]
    np.testing.assert_allclose(m.predict(Z), ref, rtol=1e-9, atol=1e-10)
    eager = Ridge(alphas=[0.2, 20.0, 2000.0], cv="loo", alpha_per="target", dtype=F64, weights=True).fit(X, Y)
    assert eager._coef is not None and eager._engine is None
    np.testing.assert_array_equal(eager.alpha_, alphas)
    np.testing.assert_allclose(eager.predict(Z), ref, rtol=1e-9, atol=1e-10)
    W = np.stack([_closed_form(X, Y[:, [j]], a)[0][:, 0] for j, a in enumerate(alphas)])
    np.testing.assert_allclose(m.coef_, W, rtol=1e-9, atol=1e-11)  # formed on first read
    assert m._engine is None  # and the training data released
    np.testing.assert_allclose(m.predict(Z), ref, rtol=1e-9, atol=1e-10)


def test_fold_kernels_are_the_fold_centred_kernels():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 5)) + 2.0
    train, val = np.array([0, 1, 2, 5, 6, 7, 9, 10]), np.array([3, 4, 8, 11])
    G = torch.from_numpy(X @ X.T)
    mu = X[train].mean(0)
    Ktr, Kva = _fold_kernels(G, train, val, centre=True)
    np.testing.assert_allclose(Ktr.numpy(), (X[train] - mu) @ (X[train] - mu).T, atol=1e-12)
    np.testing.assert_allclose(Kva.numpy(), (X[val] - mu) @ (X[train] - mu).T, atol=1e-12)
    Ktr, Kva = _fold_kernels(G, train, val, centre=False)
    np.testing.assert_allclose(Kva.numpy(), X[val] @ X[train].T, atol=1e-12)


def test_float32_kfold_errors_match_float64():
    # in float32 the fold kernels are decomposed once in float32 (s_max / alpha is small here)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 120)).astype(np.float32)
    Y = (X @ rng.normal(size=(120, 8)) / 10.0 + rng.normal(size=(40, 8))).astype(np.float32)
    alphas = [30.0, 300.0, 3000.0]
    m32 = Ridge(alphas=alphas, cv=5, alpha_per="target").fit(X, Y)
    m64 = Ridge(alphas=alphas, cv=5, alpha_per="target", dtype=F64).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(m32.cv_mse_, m64.cv_mse_, rtol=1e-5)
    np.testing.assert_array_equal(m32.alpha_, m64.alpha_)


def test_kernel_eig32_decomposes_or_declines():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(20, 30))
    K = torch.from_numpy(A @ A.T)
    s_max = float(np.linalg.eigvalsh(A @ A.T).max())
    s, U = _kernel_eig32(K, min_alpha=s_max / 500)
    assert s.dtype == F64 and U.dtype == torch.float32
    np.testing.assert_allclose((U.double() * s) @ U.double().T, K, rtol=0, atol=1e-5 * s_max)
    assert _kernel_eig32(K, min_alpha=s_max / 2000) is None  # past s_max / alpha = 1e3: float64 instead


def test_compressed_groups_give_exact_pooled_errors():
    # a group wider than the number of samples is compressed to n columns; errors must not change
    X, Y, _ = _data(20, 30, 50, seed=10)
    alphas = [1.0, 10.0, 100.0]
    per_target = Ridge(alphas=alphas, cv=4, alpha_per="target", dtype=F64).fit(X, Y)
    pooled = Ridge(alphas=alphas, cv=4, alpha_per="regression", dtype=F64).fit(X, Y)
    # (the compression adds a jitter at the rounding level to the targets' Gram matrix)
    np.testing.assert_allclose(pooled.cv_mse_, per_target.cv_mse_.mean(1), rtol=1e-8)
    tok = Ridge(alphas=alphas, cv="loo", alpha_per="token", dtype=F64).fit(X, Y.reshape(20, 2, 25))
    ref = Ridge(alphas=alphas, cv="loo", alpha_per="target", dtype=F64).fit(X, Y)
    np.testing.assert_allclose(tok.cv_mse_, ref.cv_mse_.reshape(3, 2, 25).mean(2), rtol=1e-8)
    gcv = Ridge(alphas=alphas, cv="gcv", alpha_per="regression", dtype=F64).fit(X, Y)
    ref = Ridge(alphas=alphas, cv="gcv", alpha_per="target", dtype=F64).fit(X, Y)
    np.testing.assert_allclose(gcv.cv_mse_, ref.cv_mse_.mean(1), rtol=1e-8)


# ---------------------------------------------------------------- normalisation


def test_normalize_test_is_brain_diffusers_formula():
    X, Y, Z = _data(40, 60, 6, seed=11, n_test=9)
    raw = ridge_predict(X, Y, Z, 20.0, dtype=F64)
    bd = (raw - raw.mean(0)) / raw.std(0) * Y.std(0) + Y.mean(0)
    np.testing.assert_allclose(ridge_predict(X, Y, Z, 20.0, dtype=F64, normalize="test"), bd, rtol=1e-10)
    m = Ridge(20.0, dtype=F64, normalize="test").fit(X, Y)
    np.testing.assert_allclose(m.predict(Z), bd, rtol=1e-9)
    out = m.predict(Z)
    np.testing.assert_allclose(out.mean(0), Y.mean(0), atol=1e-9)
    np.testing.assert_allclose(out.std(0), Y.std(0), rtol=1e-9)


@pytest.mark.parametrize("n,p", [(40, 60), (50, 10)])
def test_normalize_train_uses_in_sample_prediction_statistics(n, p):
    X, Y, Z = _data(n, p, 6, seed=12)
    sk = SkRidge(alpha=20.0).fit(X, Y)
    fitted = sk.predict(X)
    expect = (sk.predict(Z) - fitted.mean(0)) / fitted.std(0) * Y.std(0) + Y.mean(0)
    m = Ridge(20.0, dtype=F64, normalize="train").fit(X, Y)
    np.testing.assert_allclose(m.pred_mean_, fitted.mean(0), rtol=1e-9)
    np.testing.assert_allclose(m.pred_std_, fitted.std(0), rtol=1e-9)
    np.testing.assert_allclose(m.predict(Z), expect, rtol=1e-8)
    np.testing.assert_allclose(ridge_predict(X, Y, Z, 20.0, dtype=F64, normalize="train"), expect, rtol=1e-8)
    # non-transductive: one test row alone gets the same answer as in a batch
    np.testing.assert_allclose(m.predict(Z[:1]), expect[:1], rtol=1e-8)


@pytest.mark.parametrize("n,p", [(15, 25), (20, 6)])
def test_normalize_loo_uses_leave_one_out_predictions(n, p):
    X, Y, Z = _data(n, p, 3, seed=13)
    loo = np.array([SkRidge(alpha=5.0).fit(np.delete(X, i, 0), np.delete(Y, i, 0)).predict(X[i:i + 1])[0]
                    for i in range(n)])
    m = Ridge(5.0, dtype=F64, normalize="loo").fit(X, Y)
    np.testing.assert_allclose(m.pred_mean_, loo.mean(0), rtol=1e-9)
    np.testing.assert_allclose(m.pred_std_, loo.std(0), rtol=1e-9)
    expect = (SkRidge(alpha=5.0).fit(X, Y).predict(Z) - loo.mean(0)) / loo.std(0) * Y.std(0) + Y.mean(0)
    np.testing.assert_allclose(ridge_predict(X, Y, Z, 5.0, dtype=F64, normalize="loo"), expect, rtol=1e-8)


def test_restandardize_handles_constant_predictions():
    pred = np.array([[1.0, 5.0], [3.0, 5.0]])
    out = restandardize(pred, np.array([10.0, 20.0]), np.array([2.0, 4.0]))
    np.testing.assert_allclose(out, [[8.0, 20.0], [12.0, 20.0]])
    with pytest.raises(ValueError, match="both pred_mean and pred_std"):
        restandardize(pred, np.zeros(2), np.ones(2), pred_mean=np.zeros(2))
    with pytest.raises(ValueError, match="target_std must have shape"):
        restandardize(pred, np.zeros(2), np.ones(3))


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("normalize", [None, "loo"])
def test_save_load_round_trip(tmp_path, normalize):
    X, Y, Z = _data(30, 40, 10, seed=14)
    Y = Y.reshape(30, 2, 5)
    m = Ridge(alphas=[1.0, 10.0, 100.0], cv=3, alpha_per="token", normalize=normalize).fit(X, Y)
    path = m.save(tmp_path / "sub" / "ridge.safetensors")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    back = Ridge.load(path)
    assert back.get_params() == {**m.get_params(), "dtype": "float32"}
    for name in ("coef_", "intercept_", "alpha_", "cv_mse_", "target_mean_", "target_std_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert back.target_shape_ == (2, 5) and back.n_features_in_ == 40
    np.testing.assert_array_equal(back.predict(Z), m.predict(Z))
    with open(path, "rb") as fh:
        assert b"pickle" not in fh.read(200)  # a safetensors header, not a pickle stream


def test_save_load_fixed_alpha_scalar_fields(tmp_path):
    X, Y, Z = _data(20, 8, 1, seed=15)
    m = Ridge(2.0).fit(X, Y[:, 0])
    back = Ridge.load(m.save(tmp_path / "r.safetensors"))
    assert back.alpha_ == 2.0 and isinstance(back.intercept_, float) and back.cv_mse_ is None
    np.testing.assert_array_equal(back.predict(Z), m.predict(Z))


def test_load_rejects_other_files(tmp_path):
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(other))
    with pytest.raises(ValueError, match="not a Ridge model saved by nsdlib"):
        Ridge.load(other)
    with pytest.raises(FileNotFoundError, match="no saved Ridge model"):
        Ridge.load(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- bad input


def test_nan_in_x_or_y_is_refused():
    X, Y, Z = _data(10, 6, 2)
    Xn = X.copy()
    Xn[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, but holds 1 NaN .* index \(3, 4\)"):
        Ridge(1.0).fit(Xn, Y)
    Yn = Y.copy()
    Yn[[2, 5], 1] = np.inf
    with pytest.raises(ValueError, match=r"Y must be finite, but holds 2 NaN .* index \(2, 1\)"):
        ridge_predict(X, Yn, Z, 1.0)
    Zn = Z.copy()
    Zn[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_test must be finite"):
        ridge_predict(X, Y, Zn, 1.0)


def test_mismatched_shapes_are_refused():
    X, Y, Z = _data(10, 6, 2)
    with pytest.raises(ValueError, match=r"same number of samples; found X with 10 .* Y with 9"):
        Ridge(1.0).fit(X, Y[:9])
    with pytest.raises(ValueError, match=r"X must be 2-D \(n_samples, n_features\); found shape \(10,\)"):
        Ridge(1.0).fit(X[:, 0], Y)
    with pytest.raises(ValueError, match=r"X_test must have shape \(n_samples, 6\) .* found shape \(7, 5\)"):
        ridge_predict(X, Y, Z[:, :5], 1.0)
    m = Ridge(1.0).fit(X, Y)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 6\)"):
        m.predict(Z[:, :4])


@pytest.mark.parametrize("alpha", [0.0, -5.0, float("nan"), "big"])
def test_non_positive_alpha_is_refused(alpha):
    X, Y, Z = _data(10, 6, 2)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        Ridge(alpha).fit(X, Y)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        ridge_predict(X, Y, Z, alpha)


def test_bad_options_are_refused():
    X, Y, Z = _data(10, 6, 2)
    with pytest.raises(ValueError, match=r"every alpha must be positive and finite; found \[1.0, 0.0\]"):
        Ridge(alphas=[1.0, 0.0]).fit(X, Y)
    with pytest.raises(ValueError, match="cv must be an integer number of folds"):
        Ridge(alphas=[1.0, 2.0], cv=1).fit(X, Y)
    with pytest.raises(ValueError, match="cv=20 folds need at least 20 samples; found 10"):
        Ridge(alphas=[1.0, 2.0], cv=20).fit(X, Y)
    with pytest.raises(ValueError, match="alpha_per='token' needs targets of shape"):
        Ridge(alphas=[1.0, 2.0], alpha_per="token").fit(X, Y)
    with pytest.raises(ValueError, match="alpha_per must be one of"):
        Ridge(alpha_per="voxel").fit(X, Y)
    with pytest.raises(ValueError, match="normalize must be one of"):
        Ridge(normalize="zscore").fit(X, Y)
    with pytest.raises(ValueError, match="normalize needs fit_intercept=True"):
        Ridge(normalize="test", fit_intercept=False).fit(X, Y)
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        Ridge(dtype=torch.float16).fit(X, Y)
    with pytest.raises(ValueError, match="batch_targets must be a positive integer"):
        Ridge(batch_targets=0).fit(X, Y)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        Ridge().predict(Z)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            Ridge(device="cuda").fit(X, Y)


def test_select_alpha_is_the_choice_of_ridge_and_ridge_predict():
    from nsdlib.ridge import select_alpha

    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 80)).astype(np.float32)
    Y = (X[:, :5] @ rng.standard_normal((5, 4)) + 2.0 * rng.standard_normal((60, 4))).astype(np.float32)
    grid = [1e-2, 1.0, 1e2, 1e4]
    alpha, mse = select_alpha(X, Y, grid, cv=5, device="cpu", verbose=False)
    fitted = Ridge(alphas=grid, cv=5, device="cpu", verbose=False).fit(X, Y)
    assert alpha == fitted.alpha_ and mse.shape == (4,)
    np.testing.assert_allclose(mse, fitted.cv_mse_)
    Z = rng.standard_normal((7, 80)).astype(np.float32)
    np.testing.assert_array_equal(ridge_predict(X, Y, Z, alpha, device="cpu", verbose=False),
                                  ridge_predict(X, Y, Z, alphas=grid, cv=5, device="cpu", verbose=False))
    with pytest.raises(ValueError, match="alphas must be a grid"):
        select_alpha(X, Y, None)
