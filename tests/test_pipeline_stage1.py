"""Tests of nsdlib.pipeline.stage1 on random subject data (no mini-NSD needed)."""

import types

import numpy as np
import pytest
import torch
from _mini_worlds import write_truth_betas

from nsdlib import RunConfig, assets, vdvae
from nsdlib.pipeline import context, data, dataset, stage1
from nsdlib.ridge import restandardize, ridge_predict

torch.set_num_threads(1)  # the test machine is shared; one thread avoids oversubscription


def _fake_subject(n_train=48, n_test=6, n_vox=30, seed=0):
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(
        train_betas=rng.standard_normal((n_train, n_vox)).astype(np.float32),
        test_betas=rng.standard_normal((n_test, n_vox)).astype(np.float32),
        train_ids=np.arange(n_train, dtype=np.int64) + 1000, test_ids=np.arange(n_test, dtype=np.int64),
        n_voxels=n_vox)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A quick mini run whose data module serves random betas and images."""
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))
    sd = _fake_subject()
    rng = np.random.default_rng(1)
    images = {"train": rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
              "test": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)}
    calls = {"stimuli": 0}

    def stimuli(cfg, split, size=None, **kw):
        calls["stimuli"] += 1
        assert size == 32
        return images[split]

    monkeypatch.setattr(data, "subject_data", lambda cfg, **kw: sd)
    monkeypatch.setattr(data, "stimuli", stimuli)
    monkeypatch.setattr(data, "ensure_dataset", lambda cfg, progress=True: None)
    monkeypatch.setattr(dataset, "ensure_mini_world", lambda cfg, progress=True: None)
    context.forget()
    cfg = RunConfig(workdir=str(tmp_path / "work"), nsd_root=str(tmp_path / "no-mini"), quick=True)
    return types.SimpleNamespace(cfg=cfg, sd=sd, images=images, calls=calls)


def test_random_mini_vdvae_is_labelled_as_such(run):
    info = stage1.vdvae_info(run.cfg)
    from nsdlib.mini.zoo import mini_vdvae_config

    assert info.kind == "random" and info.label == "mini-random" and info.config == mini_vdvae_config()
    assert vdvae.n_latents(info.config, 15) == 1680 and vdvae.n_latents(info.config, 31) == 11_408
    assert "RANDOMLY INITIALISED" in info.description
    m1 = stage1.vdvae_model(run.cfg)
    context.forget()
    m2 = stage1.vdvae_model(run.cfg)
    for a, b in zip(m1.parameters(), m2.parameters()):  # seeded: the same random model every time
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_trained_mini_vdvae_is_used_when_the_zoo_has_one(run, tmp_path, monkeypatch):
    from nsdlib.mini import zoo

    folder = tmp_path / "zoo"
    torch.manual_seed(3)
    vdvae.save_vdvae(vdvae.VDVAE(vdvae.MINI), folder / "vdvae.pt")
    monkeypatch.setattr(zoo, "locate", lambda root, workdir=None, quick=False: folder)
    info = stage1.vdvae_info(run.cfg)
    assert info.kind == "mini" and info.label == "mini-trained" and str(folder) in info.description
    assert info.fingerprint.startswith("mini:")  # a hash of the checkpoint's content
    torch.testing.assert_close(stage1.vdvae_model(run.cfg).decoder.gain, torch.ones(1, 64, 1, 1))


def test_pretrained_without_checkpoint_names_the_fetch_command(run):
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch vdvae"):
        stage1.latents(run.cfg.replace(models="pretrained"))


def test_latents_shapes_cache_and_ceiling(run):
    lat15 = stage1.latents(run.cfg, 15)
    assert lat15["train"].shape == (48, vdvae.n_latents(vdvae.MINI, 15)) == (48, 1680)
    assert lat15["test"].shape == (6, 1680)
    lat31 = stage1.latents(run.cfg, 31)
    assert lat31["train"].shape == (48, 11_408)
    np.testing.assert_array_equal(lat31["test"][:, :1680], lat15["test"])  # coarse blocks first
    n_calls = run.calls["stimuli"]
    again = stage1.latents(run.cfg, 15)
    assert run.calls["stimuli"] == n_calls  # reused from the store, not recomputed
    np.testing.assert_array_equal(again["train"], lat15["train"])
    # the ceiling decodes the true latents with the same seeds as the first guesses
    rec = stage1.reconstructions(run.cfg, 15)
    assert rec.shape == (6, 32, 32, 3) and rec.dtype == np.uint8
    model = stage1.vdvae_model(run.cfg)
    want = vdvae.decode_latents(model, lat15["test"], 15, seed=stage1._split_seed(run.cfg.seed, "test"),
                                progress=False)
    np.testing.assert_array_equal(rec, want)
    assert stage1.reconstructions(run.cfg, "all").shape == (6, 32, 32, 3)
    with pytest.raises(ValueError, match="n_layers must be 15 or 31"):
        stage1.latents(run.cfg, 20)


@pytest.mark.parametrize("regressor", ["gru", "ridge"])
def test_fit_regressor_and_first_guesses(run, regressor):
    fit = stage1.fit_regressor(run.cfg, regressor, 15)
    m = fit["metrics"]
    assert fit["test_pred"].shape == (6, 1680) and fit["val_pred"].shape == (5, 1680)
    assert m["n_val"] == 5 and m["n_train"] == 43 and m["n_test"] == 6 and m["n_latents"] == 1680
    for k in ("val_mse", "val_mae", "test_mse", "test_mae", "val_mse_z", "test_mae_z"):
        assert np.isfinite(m[k]) and m[k] > 0
    true = stage1.latents(run.cfg, 15)["test"]
    assert m["test_mse"] == pytest.approx(float(np.mean((true - fit["test_pred"]) ** 2)), rel=1e-5)
    if regressor == "gru":
        assert m["epochs"] == 2 and m["n_params"] > 0 and len(fit["train_loss"]) == 2
    else:
        assert m["alpha"] > 0 and "test_mse_raw" in m
        # Brain-Diffuser's re-standardisation: each predicted set takes the training latents' mean and sd
        Y = stage1.latents(run.cfg, 15)["train"]
        tr = np.setdiff1d(np.arange(len(Y)), fit["val_indices"])
        sd = Y[tr].std(0)
        keep = sd > 1e-6
        np.testing.assert_allclose(fit["test_pred"].std(0)[keep], sd[keep], rtol=1e-3)
        np.testing.assert_allclose(fit["val_pred"].mean(0), Y[tr].mean(0), atol=1e-4)
        # known answer: kernel-form ridge_predict on the validation and test rows in one solve,
        # with the alpha stage 1 chose, then re-standardised per set
        va = fit["val_indices"]
        X = run.sd.train_betas[: len(Y)]
        raw = ridge_predict(X[tr], Y[tr], np.concatenate([X[va], run.sd.test_betas]), m["alpha"], device="cpu",
                            verbose=False)
        np.testing.assert_array_equal(fit["val_pred"], restandardize(raw[: len(va)], Y[tr].mean(0), sd))
        np.testing.assert_array_equal(fit["test_pred"], restandardize(raw[len(va):], Y[tr].mean(0), sd))
    # cached: a second call reuses the stored fit and its checkpoint folder is gone
    again = stage1.fit_regressor(run.cfg, regressor, 15)
    np.testing.assert_array_equal(again["test_pred"], fit["test_pred"])
    assert not list((run.cfg.run_dir / "stage1_checkpoints").glob("*/checkpoint.pt"))
    fg = stage1.first_guesses(run.cfg, regressor, 15)
    assert fg.shape == (6, 32, 32, 3) and fg.dtype == np.uint8
    np.testing.assert_array_equal(stage1.first_guesses(run.cfg, regressor, 15), fg)
    out = stage1.test_latents(run.cfg.replace(regressor=regressor))
    assert out["true"].shape == out["pred"].shape == (6, 1680)


def test_baseline_metrics_predict_the_training_mean(run):
    b = stage1.baseline_metrics(run.cfg, 15)
    assert b["val_mse_z"] == pytest.approx(1.0, abs=0.5)  # z-units: the training variance is 1
    assert set(b) >= {"val_mse", "val_mae", "test_mse", "test_mae"}


def test_gru_beats_predicting_the_mean_on_mini_nsd(mini_small_root, tmp_path):
    """On mini-NSD's betas the GRU learns image content: its test error is well below the mean's.

    The targets are the stimuli at 4x4 pixels (48 values), a stand-in for the latents of a
    trained VDVAE that the test cannot afford to train; the betas are the simulation's true
    single-trial amplitudes written in NSD's format (a perfect GLM).
    """
    import shutil

    from nsdlib.regressors import NeuralRegressor, regression_metrics

    root = tmp_path / "mini-nsd"
    shutil.copytree(mini_small_root, root)
    write_truth_betas(root, 1)
    cfg = RunConfig(quick=True, workdir=str(tmp_path / "work"), nsd_root=str(root), device="cpu")
    sd = data.subject_data(cfg, progress=False)
    y_train = data.stimuli(cfg, "train", 4, progress=False).reshape(len(sd.train_ids), -1) / 255.0
    y_test = data.stimuli(cfg, "test", 4, progress=False).reshape(len(sd.test_ids), -1) / 255.0
    opts = stage1.regressor_options(cfg.replace(quick=False), "gru")
    reg = NeuralRegressor("gru", **opts, progress=False).fit(sd.train_betas, y_train)
    gru = regression_metrics(y_test, reg.predict(sd.test_betas))["mse"]
    mean = regression_metrics(y_test, np.broadcast_to(y_train.mean(0), y_test.shape))["mse"]
    assert gru < 0.75 * mean, (gru, mean)


def test_mini_runs_regress_on_posterior_means_and_measure_the_noise_of_samples(run):
    assert stage1.LATENT_POSTERIOR == {"pretrained": "sample", "mini": "mean"}
    model = stage1.vdvae_model(run.cfg)
    stim = run.images["test"]
    means = vdvae.encode_latents(model, stim, 15, posterior="mean", progress=False)
    np.testing.assert_array_equal(stage1.latents(run.cfg, 15)["test"], means)
    samples = vdvae.encode_latents(model, stim, 15, seed=stage1._split_seed(run.cfg.seed, "test"), progress=False)
    want = (((samples - means) ** 2).mean(0) / samples.var(0)).mean()
    share = stage1.posterior_noise_share(run.cfg, 15)
    assert share == pytest.approx(float(want), rel=1e-5)
    assert 0.0 < share < 1.5  # a random VDVAE: its posteriors are wide, the share near 1


def test_first_guesses_of_permuted_betas_decode_the_permuted_predictions(run, monkeypatch):
    """The shuffled-betas control (nsdlib.pipeline.controls): position i decodes image perm[i]'s prediction."""
    perm = np.array([1, 2, 3, 4, 5, 0])
    decoded = []

    def decode(model, latents, n_blocks, **kw):
        decoded.append((latents.copy(), kw["seed"]))
        return np.repeat(latents[:, :1, None, None], 3, axis=3).astype(np.uint8)  # one "image" per row

    monkeypatch.setattr(stage1, "decode_latents", decode)
    pred = stage1.fit_regressor(run.cfg, "ridge", 15)["test_pred"]
    plain = stage1.first_guesses(run.cfg, "ridge", 15)
    shuffled = stage1.first_guesses(run.cfg, "ridge", 15, permutation=perm)
    np.testing.assert_array_equal(decoded[0][0], pred)
    np.testing.assert_array_equal(decoded[1][0], pred[perm])
    assert decoded[0][1] == decoded[1][1]  # each position keeps its own prior streams
    np.testing.assert_array_equal(shuffled, plain[perm])  # here: the stand-in decoder has no prior samples
    np.testing.assert_array_equal(stage1.first_guesses(run.cfg, "ridge", 15), plain)  # the unpermuted key is intact
    assert len(decoded) == 2
    with pytest.raises(ValueError, match="permutation must reorder the 6 test images"):
        stage1.first_guesses(run.cfg, "ridge", 15, permutation=[0, 0, 1, 2, 3, 4])


def test_first_guesses_from_betas_are_the_ridge_pipeline_on_its_own_betas(run):
    """Stage 1 from betas given explicitly: the run's own betas give the run's ridge fit and first guesses
    exactly; a subset of the voxels gives other predictions, cached under their own key."""
    own = stage1.first_guesses_from_betas(run.cfg, run.sd.train_betas, run.sd.test_betas, 15)
    np.testing.assert_array_equal(own["test_pred"], stage1.fit_regressor(run.cfg, "ridge", 15)["test_pred"])
    np.testing.assert_array_equal(own["images"], stage1.first_guesses(run.cfg, "ridge", 15))
    assert float(own["alpha"]) == stage1.fit_regressor(run.cfg, "ridge", 15)["metrics"]["alpha"]
    half = stage1.first_guesses_from_betas(run.cfg, run.sd.train_betas[:, ::2], run.sd.test_betas[:, ::2], 15)
    assert half["images"].shape == own["images"].shape and not np.array_equal(half["test_pred"], own["test_pred"])
    with pytest.raises(ValueError, match=r"betas must be \(48, v\) and \(6, v\).*found \(47, \d+\)"):
        stage1.first_guesses_from_betas(run.cfg, run.sd.train_betas[1:], run.sd.test_betas, 15)
