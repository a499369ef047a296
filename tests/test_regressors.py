"""Tests of nsdlib.regressors: Table 1's network, training, resume, ridge."""

import numpy as np
import pytest
import torch
from torch import nn

from nsdlib import regressors
from nsdlib.regressors import (
    GRUNet,
    NeuralRegressor,
    RidgeRegressor,
    build_network,
    count_parameters,
    regression_metrics,
    validation_split,
)

torch.set_num_threads(1)  # the test machine is shared; one thread avoids oversubscription

SMALL = {"hidden": 8, "fc": 16, "dropout": 0.1}
SMALL_T = {**SMALL, "n_tokens": 4, "d_model": 8, "n_heads": 2, "ff": 16}


def _linear_problem(n=300, p=40, k=12, noise=0.3, seed=0):
    """Betas X and latents Y = X[:, :10] W + noise: a learnable map with a known floor."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = rng.standard_normal((10, k)) / np.sqrt(10)
    Y = (X[:, :10] @ W + noise * rng.standard_normal((n, k))).astype(np.float32) * 0.3 + 0.1
    return X, Y


def test_gru_has_exactly_the_papers_parameter_count():
    with torch.device("meta"):
        net = GRUNet(15_724, 13_344)
    assert count_parameters(net) == 12_400_344


def test_gru_layers_and_shapes_follow_table1():
    net = GRUNet(50, 7).eval()
    kinds = [type(m).__name__ for m in net.modules() if not isinstance(m, (GRUNet, regressors._Head))]
    assert kinds == ["GRU", "LayerNorm", "Dropout", "GRU", "LayerNorm", "Linear", "BatchNorm1d", "ReLU", "Dropout",
                     "Linear"]
    assert net.gru1.bidirectional and net.gru1.hidden_size == 100 and net.gru2.input_size == 200
    seen = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, o))
             for n in ("gru1", "norm1", "gru2", "norm2")]
    out = net(torch.randn(3, 50))
    for h in hooks:
        h.remove()
    assert seen["gru1"][0].shape == seen["norm1"].shape == seen["gru2"][0].shape == seen["norm2"].shape == (3, 1, 200)
    assert out.shape == (3, 7)
    assert net(torch.randn(3, 1, 50)).shape == (3, 7)  # (*, 1, n_voxels) as in Table 1


@pytest.mark.parametrize("arch", ["cnn", "transformer"])
def test_variants_keep_the_gru_shapes(arch):
    net = build_network(arch, 30, 5).eval()
    assert net.gru2.input_size == 200
    assert net(torch.randn(4, 30)).shape == (4, 5)
    kinds = {type(m) for m in net.middle.modules()}
    if arch == "cnn":
        assert {nn.Conv1d, nn.ReLU, nn.MaxPool1d} <= kinds
        assert sum(isinstance(m, nn.Conv1d) for m in net.middle.modules()) == 2
    else:
        assert {nn.MultiheadAttention, nn.LayerNorm} <= kinds
    with pytest.raises(ValueError, match="arch must be one of"):
        build_network("lstm", 3, 3)


def test_validation_split_is_seeded_disjoint_and_complete():
    tr, va = validation_split(100, 0.1, seed=3)
    assert len(va) == 10 and len(tr) == 90
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    tr2, va2 = validation_split(100, 0.1, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, validation_split(100, 0.1, seed=4)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(10, 1.0)


def test_regression_metrics_known_answer():
    y = np.array([[0.0, 1.0], [2.0, 3.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0]])
    assert regression_metrics(y, p, chunk=1) == {"mse": pytest.approx(5 / 4), "mae": pytest.approx(3 / 4)}
    with pytest.raises(ValueError, match="same shape"):
        regression_metrics(y, p[:1])


def test_gru_beats_predicting_the_mean():
    X, Y = _linear_problem()
    reg = NeuralRegressor("gru", network_options={"hidden": 32, "fc": 64, "dropout": 0.1}, max_epochs=40,
                          batch_size=32, lr=3e-3, patience=8, progress=False).fit(X[:250], Y[:250])
    pred = reg.predict(X[250:])
    mean_pred = np.broadcast_to(Y[:250].mean(0), pred.shape)
    gru = regression_metrics(Y[250:], pred)["mse"]
    base = regression_metrics(Y[250:], mean_pred)["mse"]
    assert gru < 0.6 * base, (gru, base)
    assert reg.best_epoch_ >= 0 and len(reg.history_) >= reg.best_epoch_ + 1
    assert len(reg.val_indices_) == 25 and set(reg.val_indices_).isdisjoint(reg.train_indices_)


def test_a_fit_that_stops_early_ends_its_progress_bar_full(capsys, tmp_path):
    """The rendered book flags a bar left below 100 %: early stopping must not read as a stalled run."""
    X, Y = _linear_problem(n=120)
    Y = np.random.default_rng(5).permutation(Y)  # nothing to learn: validation loss stops improving at once
    opts = dict(network_options=SMALL, max_epochs=50, batch_size=32, patience=2, progress=True,
                checkpoint_dir=tmp_path)
    reg = NeuralRegressor("gru", **opts).fit(X, Y)
    assert len(reg.history_) < 50, "the test needs a fit that stops early"
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    n = len(reg.history_)
    assert f"{n}/{n} " in last and "100%" in last and f"best epoch {reg.best_epoch_ + 1}" in last, last
    NeuralRegressor("gru", **opts).fit(X, Y)  # resumed from the checkpoint: already stopped, nothing to run
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{n}/{n} " in last and "100%" in last, last


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_interrupted_and_resumed_fit_equals_uninterrupted(tmp_path, monkeypatch, arch):
    X, Y = _linear_problem(n=120, p=20, k=6)
    opts = dict(network_options=SMALL_T if arch == "transformer" else SMALL, max_epochs=5, batch_size=16,
                patience=100, seed=1, progress=False)
    full = NeuralRegressor(arch, checkpoint_dir=tmp_path / "full", **opts).fit(X, Y)

    class Interrupt(Exception):
        pass

    def stop_after_two(self, epoch):
        if epoch == 1:
            raise Interrupt

    monkeypatch.setattr(NeuralRegressor, "_on_epoch_end", stop_after_two)
    with pytest.raises(Interrupt):
        NeuralRegressor(arch, checkpoint_dir=tmp_path / "cut", **opts).fit(X, Y)
    monkeypatch.undo()
    resumed = NeuralRegressor(arch, checkpoint_dir=tmp_path / "cut", **opts).fit(X, Y)
    assert resumed.resumed_from_epoch_ == 1
    assert full.resumed_from_epoch_ is None
    a, b = full.model_.state_dict(), resumed.model_.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [h["val_loss"] for h in full.history_] == pytest.approx([h["val_loss"] for h in resumed.history_],
                                                                   abs=1e-6)
    np.testing.assert_allclose(full.predict(X), resumed.predict(X), atol=1e-6)


def test_checkpoint_is_weights_only_and_guards_its_settings(tmp_path):
    X, Y = _linear_problem(n=60, p=10, k=3)
    opts = dict(network_options=SMALL, max_epochs=2, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    reg = NeuralRegressor("gru", **opts).fit(X, Y)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and len(saved["history"]) == 2
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no partial files
    # a finished fit is reused, not retrained; more epochs continue it
    again = NeuralRegressor("gru", **opts).fit(X, Y)
    assert again.resumed_from_epoch_ == 1 and len(again.history_) == 2
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    longer = NeuralRegressor("gru", **{**opts, "max_epochs": 3}).fit(X, Y)
    assert len(longer.history_) == 3
    with pytest.raises(ValueError, match=r"differs in: lr"):
        NeuralRegressor("gru", **{**opts, "lr": 0.5}).fit(X, Y)
    with pytest.raises(ValueError, match=r"differs in: data"):
        NeuralRegressor("gru", **opts).fit(X + 1, Y)


def test_bad_inputs_and_unfitted_use():
    X, Y = _linear_problem(n=40, p=10, k=3)
    reg = NeuralRegressor("gru", network_options=SMALL, max_epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        reg.predict(X)
    with pytest.raises(ValueError, match=r"Y \(latents\) must have shape \(40, n_targets\)"):
        reg.fit(X, Y[:30])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reg.fit(bad, Y)
    reg.fit(X, Y)
    with pytest.raises(ValueError, match="must have 10 columns"):
        reg.predict(X[:, :5])
    with pytest.raises(ValueError, match="regressor must be one of"):
        regressors.make_regressor("svm")
    assert isinstance(regressors.make_regressor("cnn"), NeuralRegressor)
    assert isinstance(regressors.make_regressor("ridge", alpha=1.0), RidgeRegressor)


def test_ridge_regressor_recovers_a_linear_map_and_restandardizes():
    pytest.importorskip("nsdlib.ridge")
    X, Y = _linear_problem(n=400, noise=0.0)
    reg = RidgeRegressor(alphas=[1e-3, 1e3, 1e5], device="cpu").fit(X[:300], Y[:300])
    assert reg.alpha_ == 1e-3 and len(reg.val_indices_) == 30
    np.testing.assert_allclose(reg.predict(X[300:]), Y[300:], atol=1e-3)
    # Brain-Diffuser's rule: each predicted dimension takes the training targets' mean and std
    re = RidgeRegressor(alpha=1e5, normalize="test", device="cpu").fit(X[:300], Y[:300])
    pred = re.predict(X[300:])
    Y_fit = Y[re.train_indices_]
    np.testing.assert_allclose(pred.std(0), Y_fit.std(0), rtol=1e-3)
    np.testing.assert_allclose(pred.mean(0), Y_fit.mean(0), atol=1e-4)


def test_ridge_regressor_is_kernel_form_ridge_without_weights():
    from nsdlib.ridge import Ridge, restandardize, ridge_predict

    X, Y = _linear_problem(n=120, p=200, k=6, noise=0.5)  # more voxels than rows: the kernel form
    reg = RidgeRegressor(alpha=30.0, device="cpu").fit(X[:100], Y[:100])
    assert not hasattr(reg, "coef_") and reg.n_params_ == 201 * 6
    tr = reg.train_indices_
    np.testing.assert_array_equal(reg.predict(X[100:]), ridge_predict(X[tr], Y[tr], X[100:], 30.0, device="cpu",
                                                                      verbose=False))
    weights = Ridge(30.0, device="cpu", verbose=False).fit(X[tr], Y[tr])
    np.testing.assert_allclose(reg.predict(X[100:]), weights.predict(X[100:]), atol=1e-4)
    # several sets: one solve, each set re-standardised by its own statistics (Brain-Diffuser's rule)
    bd = RidgeRegressor(alpha=30.0, normalize="test", device="cpu").fit(X[:100], Y[:100])
    (a, b), (ra, rb) = bd.predict_sets([X[100:110], X[110:]], return_raw=True)
    np.testing.assert_allclose(np.concatenate([ra, rb]), reg.predict(X[100:]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a, restandardize(ra, Y[tr].mean(0), Y[tr].std(0)))
    np.testing.assert_array_equal(b, restandardize(rb, Y[tr].mean(0), Y[tr].std(0)))
    with pytest.raises(ValueError, match="normalize must be None or 'test'"):
        RidgeRegressor(normalize="loo").fit(X, Y)
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeRegressor().predict(X)


def test_make_regressor_is_one_front_door(tmp_path):
    net = regressors.make_regressor("gru", checkpoint_dir=tmp_path, max_epochs=1)
    assert isinstance(net, NeuralRegressor) and net.checkpoint_dir == tmp_path and net.max_epochs == 1
    ridge = regressors.make_regressor("ridge", checkpoint_dir=tmp_path, alpha=2.0, device="cpu")
    assert isinstance(ridge, RidgeRegressor) and ridge.alpha == 2.0
    X, Y = _linear_problem(n=60, p=10, k=3)
    val = np.arange(0, 60, 6)
    for name, opts in (("ridge", {"alpha": 2.0, "device": "cpu"}),
                       ("gru", {"network_options": SMALL, "max_epochs": 1, "progress": False})):
        est = regressors.make_regressor(name, **opts).fit(X, Y, val_indices=val)
        np.testing.assert_array_equal(est.val_indices_, val)
        preds, raws = est.predict_sets([X[val], X[:3]], return_raw=True)
        assert [p.shape for p in preds] == [(10, 3), (3, 3)] and len(raws) == 2 and est.n_params_ > 0
