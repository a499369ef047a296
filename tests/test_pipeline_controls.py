"""nsdlib.pipeline.controls: retrieval, shuffled betas and train-test overlap, with known answers.

The run's subject data, embeddings, stage 1 and stage 2 are stand-ins whose answers are known.
"""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from nsdlib import RunConfig
from nsdlib import metrics as M
from nsdlib.pipeline import context, controls, data, dataset, results, stage1, stage2
from nsdlib.pipeline import evaluation as E
from nsdlib.regressors import make_regressor
from nsdlib.report import cross_subject, tables
from nsdlib.ridge import ridge_predict
from nsdlib.store import Store

torch.set_num_threads(1)  # the test machine is shared

#: The real stage-2 step (the stand-in run below replaces the module's attribute).
STAGE2_IMAGES = stage2.stage2_images
N_TRAIN, N_TEST = 12, 6
#: Test image k duplicates training image 2k; the prediction for test image i sits next to training image 3i+1.
DUPLICATE_OF = 2 * np.arange(N_TEST)
RETRIEVED = (3 * np.arange(N_TEST) + 1) % N_TRAIN


def _images(n, size, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 4, size // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


# ------------------------------------------------------------------ arrays
def test_embedding_vectors_class_token_or_flat():
    emb = np.random.default_rng(0).standard_normal((4, 3, 5))
    cls = controls.embedding_vectors(emb, "class")
    flat = controls.embedding_vectors(emb, "flat")
    assert cls.shape == (4, 5) and flat.shape == (4, 15)
    np.testing.assert_allclose(np.linalg.norm(cls, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(cls * np.linalg.norm(emb[:, 0], axis=1, keepdims=True), emb[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, n_tokens, d\)"):
        controls.embedding_vectors(emb[:, 0])
    with pytest.raises(ValueError, match="vector must be one of class, flat; found 'pooled'"):
        controls.embedding_vectors(emb, "pooled")
    emb[2, 0] = 0
    with pytest.raises(ValueError, match="embedding 2 has norm 0"):
        controls.embedding_vectors(emb)


def test_nearest_neighbours_known_answer():
    rng = np.random.default_rng(1)
    ref = controls.embedding_vectors(rng.standard_normal((20, 1, 16)))
    want = rng.permutation(20)[:7]
    query = controls.embedding_vectors((ref[want] + 0.01 * rng.standard_normal((7, 16)))[:, None])
    for block in (1024, 3):  # the blocks do not change the answer
        idx, cos = controls.nearest_neighbours(query, ref, block=block)
        np.testing.assert_array_equal(idx, want)
        assert (cos > 0.99).all() and (cos <= 1 + 1e-6).all()
    # a duplicate has similarity 1; excluding itself, a set's nearest other member
    idx, cos = controls.nearest_neighbours(ref[want], ref)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(cos, 1, atol=1e-6)
    twin = np.concatenate([ref, ref[:1]])  # row 20 duplicates row 0
    idx, cos = controls.nearest_neighbours(twin, twin, exclude_self=True, block=4)
    assert idx[0] == 20 and idx[20] == 0 and cos[0] == pytest.approx(1, abs=1e-6)
    assert (idx != np.arange(21)).all()
    with pytest.raises(ValueError, match=r"same d expected; found \(7, 16\) and \(20, 15\)"):
        controls.nearest_neighbours(query, ref[:, :15])


def test_shuffle_is_a_seeded_derangement():
    for n in (2, 3, 10, 100):
        perm = controls.shuffle_permutation(n, seed=5)
        assert sorted(perm) == list(range(n)), f"not a permutation of {n}: {perm}"
        assert not (perm == np.arange(n)).any(), f"an image keeps its own betas: {perm}"
        np.testing.assert_array_equal(controls.shuffle_permutation(n, seed=5), perm)
    assert list(controls.shuffle_permutation(2, seed=0)) == [1, 0]
    assert not np.array_equal(controls.shuffle_permutation(100, 5), controls.shuffle_permutation(100, 6))
    with pytest.raises(ValueError, match="at least 2 test images; found 1"):
        controls.shuffle_permutation(1, 0)


def test_predictions_of_permuted_betas_are_permuted_predictions():
    """Why the null permutes the fitted models' predictions instead of refitting: they predict row by row."""
    rng = np.random.default_rng(2)
    X, Y, Xt = rng.standard_normal((40, 30)), rng.standard_normal((40, 9)), rng.standard_normal((8, 30))
    perm = controls.shuffle_permutation(8, 0)
    for normalize in (None, "test"):  # Brain-Diffuser's re-standardisation uses the set's statistics only
        a = ridge_predict(X, Y, Xt, 10.0, normalize=normalize, device="cpu", verbose=False)
        b = ridge_predict(X, Y, Xt[perm], 10.0, normalize=normalize, device="cpu", verbose=False)
        np.testing.assert_allclose(b, a[perm], rtol=1e-4, atol=1e-5)
    gru = make_regressor("gru", max_epochs=1, batch_size=16, seed=0, device="cpu").fit(
        X.astype(np.float32), Y.astype(np.float32))
    a, b = gru.predict(Xt.astype(np.float32)), gru.predict(Xt[perm].astype(np.float32))
    np.testing.assert_allclose(b, a[perm], rtol=1e-5, atol=1e-6)


def test_overlap_dependence_spearman():
    sim = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    report = M.MetricReport(per_image={"ssim": sim * 2 + 1, "pixcorr": -sim, "clip": np.ones(5)},
                            status={"ssim": "ok", "pixcorr": "ok", "clip": "ok"}, sources={}, size=32,
                            ssim_mode="columns")
    dep = controls.overlap_dependence(sim, report, ["ssim", "pixcorr", "clip"])
    assert dep.loc["ssim", "rho"] == pytest.approx(1) and dep.loc["pixcorr", "rho"] == pytest.approx(-1)
    assert np.isnan(dep.loc["clip", "rho"]) and (dep["n"] == 5).all()
    with pytest.raises(ValueError, match=r"ssim: one score per image expected \(4\)"):
        controls.overlap_dependence(sim[:4], report, ["ssim"])


# ------------------------------------------------------------- a stand-in run
@pytest.fixture
def run(tmp_path, monkeypatch):
    """A quick mini run whose subject data, embeddings, stages and images are stand-ins."""
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rng = np.random.default_rng(0)
    sd = types.SimpleNamespace(train_betas=rng.standard_normal((N_TRAIN, 10)).astype(np.float32),
                               test_betas=rng.standard_normal((N_TEST, 10)).astype(np.float32),
                               train_ids=np.arange(N_TRAIN, dtype=np.int64) + 1000,
                               test_ids=np.arange(N_TEST, dtype=np.int64), n_voxels=10)
    train_emb = rng.standard_normal((N_TRAIN, 5, 8)).astype(np.float32)
    test_emb = train_emb[DUPLICATE_OF].copy()
    test_emb[:, 1:] += rng.standard_normal((N_TEST, 4, 8)).astype(np.float32)  # only the class token duplicates
    pred = train_emb[RETRIEVED] + 0.01 * rng.standard_normal((N_TEST, 5, 8)).astype(np.float32)
    train_images, gt = _images(N_TRAIN, 32, 1), _images(N_TEST, 32, 2)
    final = np.clip(gt.astype(int) + 30, 0, 255).astype(np.uint8)
    calls = []

    def first_guesses(cfg, permutation=None):
        calls.append(("stage 1", None if permutation is None else list(permutation)))
        return final if permutation is None else final[permutation]

    def stage2_images(cfg, fg, permutation=None, progress=True):
        calls.append(("stage 2", None if permutation is None else list(permutation)))
        return fg  # the identity as "stage 2"

    monkeypatch.setattr(data, "subject_data", lambda cfg, **kw: sd)
    monkeypatch.setattr(data, "ensure_dataset", lambda cfg, progress=True: None)
    monkeypatch.setattr(dataset, "ensure_mini_world", lambda cfg, progress=True: None)
    monkeypatch.setattr(stage2, "clip_embeddings", lambda cfg, split="test", progress=True:
                        {"vision": train_emb if split == "train" else test_emb})
    monkeypatch.setattr(stage2, "clip_predictions", lambda cfg, progress=True, **kw: {"vision": pred})
    monkeypatch.setattr(stage1, "first_guesses", first_guesses)
    monkeypatch.setattr(stage2, "stage2_images", stage2_images)
    monkeypatch.setattr(stage1, "test_latents", lambda cfg: {"true": np.zeros((N_TEST, 4)),
                                                             "pred": np.arange(N_TEST * 4.0).reshape(N_TEST, 4)})
    monkeypatch.setattr(controls, "_training_images", lambda cfg, ids: train_images[np.asarray(ids) - 1000])
    monkeypatch.setattr(E, "ground_truth", lambda cfg: gt)
    monkeypatch.setattr(E, "final_images", lambda cfg: final)
    monkeypatch.setattr(E, "_test_ids", lambda cfg: sd.test_ids)
    monkeypatch.setattr(E, "_default_clip", lambda cfg: "not available: no small CLIP in this test")
    context.forget()
    cfg = RunConfig(workdir=str(tmp_path / "work"), nsd_root=str(tmp_path / "no-mini"), quick=True)
    yield types.SimpleNamespace(cfg=cfg, sd=sd, gt=gt, final=final, train_images=train_images, calls=calls)
    context.forget()


def test_retrieval_returns_the_training_image_nearest_the_prediction(run):
    r = controls.retrieval(run.cfg, progress=False)
    np.testing.assert_array_equal(r["positions"], RETRIEVED)
    np.testing.assert_array_equal(r["train_ids"], RETRIEVED + 1000)
    np.testing.assert_array_equal(r["images"], run.train_images[RETRIEVED])
    assert (r["cosine"] > 0.99).all()
    again = controls.retrieval(run.cfg, progress=False)  # cached in the run's store
    np.testing.assert_array_equal(again["images"], r["images"])
    assert [e["event"] for e in Store.for_config(run.cfg).events() if e["name"] == "control_retrieval"] == \
        ["computed", "reused"]
    flat = controls.retrieval(run.cfg, vector="flat", progress=False)  # all tokens: the same neighbours here
    np.testing.assert_array_equal(flat["positions"], RETRIEVED)


def test_overlap_of_a_duplicated_training_image_is_one(run):
    ov = controls.overlap(run.cfg, progress=False)
    np.testing.assert_array_equal(ov["nearest_train_ids"], DUPLICATE_OF + 1000)
    np.testing.assert_allclose(ov["cosine"], 1, atol=1e-6)
    assert ov["train_cosine"].shape == (N_TRAIN,) and (ov["train_cosine"] < 1 - 1e-3).all()
    flat = controls.overlap(run.cfg, vector="flat", progress=False)  # the other tokens differ: below 1
    assert (flat["cosine"] < 0.9).all()


def test_shuffled_images_run_stage_1_and_2_on_the_permuted_betas(run):
    s = controls.shuffled_images(run.cfg, progress=False)
    perm = controls.shuffle_permutation(N_TEST, run.cfg.seed)
    np.testing.assert_array_equal(s["permutation"], perm)
    assert run.calls == [("stage 1", list(perm)), ("stage 2", list(perm))]
    np.testing.assert_array_equal(s["images"], run.final[perm])
    other = controls.shuffled_images(run.cfg, seed=3, progress=False)["permutation"]
    np.testing.assert_array_equal(other, controls.shuffle_permutation(N_TEST, 3))


def test_control_rows_land_in_the_results_file_beside_the_pipelines(run):
    E.evaluate(run.cfg, reconstructions={("gru", 15, "none"): run.final}, progress=False)
    out = controls.evaluate_controls(run.cfg, progress=False)
    rows = out["rows"]
    assert list(rows.columns) == list(results.RESULT_COLUMNS)
    assert list(zip(rows["regressor"], rows["n_layers"])) == [(controls.RETRIEVAL, 0), (controls.SHUFFLED, 15)]
    # each row scores exactly its images
    ret, shuf = out["reports"][controls.RETRIEVAL], out["reports"][controls.SHUFFLED]
    np.testing.assert_allclose(ret.per_image["pixcorr"], M.pixcorr(run.gt, run.train_images[RETRIEVED]), atol=1e-12)
    perm = out["shuffled"]["permutation"]
    np.testing.assert_allclose(shuf.per_image["pixcorr"], M.pixcorr(run.gt, run.final[perm]), atol=1e-12)
    # the shuffled row's latent errors are those of the permuted predictions
    lat = M.latent_errors(np.zeros((N_TEST, 4)), np.arange(N_TEST * 4.0).reshape(N_TEST, 4)[perm])
    assert rows["latent_mse"].iloc[1] == pytest.approx(lat["mse"]) and np.isnan(rows["latent_mse"].iloc[0])
    assert set(out["seconds"]) == {controls.RETRIEVAL, controls.SHUFFLED, "overlap"}
    assert all(s >= 0 for s in out["seconds"].values())
    # the file holds the pipeline's row and the two controls, the controls last
    doc, df = results.read_results(run.cfg)
    assert list(df["regressor"]) == ["gru", controls.RETRIEVAL, controls.SHUFFLED]
    assert df["card"].notna().all() and set(df["card"]) <= set(doc["cards"])  # each row's protocol card is there
    assert (df["protocol"] == "brain-diffuser").all()
    # a rerun reuses everything, the recorded seconds included
    n_events = len(Store.for_config(run.cfg).events())
    again = controls.evaluate_controls(run.cfg, progress=False)
    assert again["seconds"] == out["seconds"]
    assert {e["event"] for e in Store.for_config(run.cfg).events()[n_events:]} == {"reused"}
    assert len(results.read_results(run.cfg)[1]) == 3


def test_control_rows_read_by_the_tables_and_the_cross_subject_report(run):
    E.evaluate(run.cfg, reconstructions={("gru", 15, "none"): run.final}, progress=False)
    controls.evaluate_controls(run.cfg, progress=False)
    df = cross_subject.report_rows(results.results_path(run.cfg))
    mean, subjects = cross_subject.mean_over_subjects(df, models="mini")
    assert subjects == [1] and set(mean["regressor"]) == {"gru", *controls.CONTROLS}
    table = tables.comparison_table(df, table=4, ours_label="ours")
    ours = table[table["source"] == "ours"]
    assert list(ours["model"]) == ["GRU", controls.RETRIEVAL, controls.SHUFFLED]
    assert isinstance(cross_subject.cross_subject_table(df), pd.DataFrame)


def test_stage2_guides_each_position_by_the_permuted_predictions(run, monkeypatch):
    """stage2_images(permutation=...): position i is guided by image perm[i]'s predictions, with its own seed."""
    perm = controls.shuffle_permutation(N_TEST, 0)
    pred = np.arange(N_TEST, dtype=np.float32)[:, None, None] * np.ones((1, 3, 2), np.float32)
    vd = types.SimpleNamespace(device=torch.device("cpu"))

    def reconstruct(fg, text, vision, u_text, u_vision, *, seed, indices, **kw):
        value = 10 * vision[:, 0, 0] + np.asarray(indices)  # the guide and the position (its noise seed)
        return np.broadcast_to(value[:, None, None, None], (len(fg), 4, 4, 3)).astype(np.uint8)

    vd.reconstruct = reconstruct
    monkeypatch.setattr(stage2, "clip_predictions", lambda cfg, **kw: {"text": pred, "vision": pred})
    monkeypatch.setattr(stage2, "clip_embedder", lambda cfg: types.SimpleNamespace(unconditional=lambda: (0, 0)))
    monkeypatch.setattr(stage2, "diffusion_model", lambda cfg: vd)
    fg = np.zeros((N_TEST, 8, 8, 3), np.uint8)
    plain = STAGE2_IMAGES(run.cfg, fg, progress=False)
    shuffled = STAGE2_IMAGES(run.cfg, fg, permutation=perm, progress=False)
    np.testing.assert_array_equal(plain[:, 0, 0, 0], 11 * np.arange(N_TEST))
    np.testing.assert_array_equal(shuffled[:, 0, 0, 0], 10 * perm + np.arange(N_TEST))
    with pytest.raises(ValueError, match="needs embeddings='predicted'; found embeddings='true'"):
        STAGE2_IMAGES(run.cfg, fg, permutation=perm, embeddings="true", progress=False)
    with pytest.raises(ValueError, match="permutation must reorder the 6 test images"):
        STAGE2_IMAGES(run.cfg, fg, permutation=perm[:3], progress=False)
