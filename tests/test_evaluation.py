"""nsdlib.pipeline.evaluation on random images (the stages are replaced by stand-ins)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nsdlib import RunConfig
from nsdlib import diffusion as D
from nsdlib import noise as N
from nsdlib import protocols as P
from nsdlib.mini import Scene, SceneObject
from nsdlib.mini.scene import ATTRIBUTES, CLASSES, SceneNetworksMissing
from nsdlib.pipeline import context, results
from nsdlib.pipeline import evaluation as E
from nsdlib.store import Store


def _images(n, size, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 4, size // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A mini run whose stimuli, first guesses and stage 2 are stand-ins on random images."""
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))  # no real weights here
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = RunConfig(workdir=str(tmp_path / "work"), quick=True)
    gt = _images(10, 32, 0)
    first = np.clip(gt.astype(int) + 30, 0, 255).astype(np.uint8)  # a "blurry" guess: a brightened copy
    calls = []

    def stage2(c, first_guesses=None, noise=None, indices=None):
        calls.append(noise)
        out = first if first_guesses is None else first_guesses  # the identity as "stage 2"
        return out if indices is None else out[indices]

    monkeypatch.setattr(E, "ground_truth", lambda c: gt)
    monkeypatch.setattr(E, "first_guesses", lambda c: first)
    monkeypatch.setattr(E, "_stage2", stage2)
    monkeypatch.setattr(E, "_test_ids", lambda c: np.arange(100, 110))
    monkeypatch.setattr(E, "_default_clip", lambda c: "not available: no small CLIP in this test")
    monkeypatch.setattr(E, "_latents", lambda c: (np.zeros((10, 4)), np.full((10, 4), 0.5)))
    return cfg, gt, first, calls


def test_noise_sensitivity_uses_the_protocol(run):
    cfg, gt, first, calls = run
    out = E.noise_sensitivity(cfg, ["none", 16, 256])
    assert list(out) == ["none", "16", "256"] and calls == [None, "16", "256"]
    np.testing.assert_array_equal(out["none"]["first_guess"], first)
    np.testing.assert_array_equal(out["16"]["first_guess"], N.add_noise(first, 16, seed=cfg.seed,
                                                                         ids=np.arange(100, 110)))
    np.testing.assert_array_equal(out["256"]["final"], N.pure_noise(first.shape, seed=cfg.seed,
                                                                     ids=np.arange(100, 110)))
    # a subset of images gets exactly the noise (and stage-2 images) of the full run
    sub = E.noise_sensitivity(cfg, ["none", 16], indices=[2, 5])
    for lab in ("none", "16"):
        for what in ("first_guess", "final"):
            np.testing.assert_array_equal(sub[lab][what], out[lab][what][[2, 5]])


def test_evaluate_writes_and_merges_the_results_file(run):
    cfg, gt, first, _ = run
    rows, reports = E.evaluate(cfg, reconstructions={("gru", 15, "none"): gt, ("ridge", 15, "none"): first},
                               progress=False)
    assert list(rows.columns) == list(results.RESULT_COLUMNS)
    gru = rows[rows.regressor == "gru"].iloc[0]
    assert gru["ssim"] == pytest.approx(1.0) and gru["pixcorr"] == pytest.approx(1.0)
    assert gru["ssim_2d"] == pytest.approx(1.0)
    ridge = rows[rows.regressor == "ridge"].iloc[0]
    assert 0 < ridge["ssim"] < 1 and ridge["ssim"] != pytest.approx(ridge["ssim_2d"])
    # no real weights here: feature metrics are unavailable, null in the file, with the reason
    doc, df = results.read_results(cfg)
    assert doc["ssim_mode"] == "columns" and len(doc["rows"]) == 2
    assert doc["rows"][0]["alexnet2"] is None and "not available" in doc["sources"]["alexnet2"]
    assert {"dataset", "models", "subject"} <= set(doc["rows"][0]) and doc["rows"][0]["subject"] == 1
    assert results.results_path(cfg, ".csv").is_file()
    # the per-image values are cached; a second evaluation reuses them
    n_computed = sum(e["event"] == "computed" for e in Store.for_config(cfg).events())
    E.evaluate(cfg, reconstructions={("gru", 15, "none"): gt}, progress=False)
    events = Store.for_config(cfg).events()
    assert sum(e["event"] == "computed" for e in events) == n_computed and events[-1]["event"] == "reused"
    # a new row merges with the old ones; the same key replaces
    E.evaluate(cfg, reconstructions={("gru", 31, "none"): first, ("gru", 15, "none"): first}, progress=False)
    doc, df = results.read_results(cfg)
    assert len(df) == 3
    assert df.set_index(["regressor", "n_layers"]).loc[("gru", 15), "ssim"] == pytest.approx(ridge["ssim"])
    json.loads(results.results_path(cfg).read_text())  # strict JSON: no NaN tokens
    assert "NaN" not in results.results_path(cfg).read_text()


def test_rows_record_their_protocol_and_card(run):
    cfg, gt, first, _ = run
    bd, bd_reports = E.evaluate(cfg, reconstructions={("gru", 15, "none"): first}, progress=False)
    me, me_reports = E.evaluate(cfg, reconstructions={("gru", 15, "none"): first}, progress=False, protocol="mindeye")
    assert bd["protocol"].tolist() == ["brain-diffuser"] and me["protocol"].tolist() == ["mindeye"]
    assert bd["ssim_mode"].tolist() == ["columns"] and me["ssim_mode"].tolist() == ["2d"]
    assert me["size"].tolist() == [425] and me["ssim"].iloc[0] == pytest.approx(me["ssim_2d"].iloc[0])
    assert me["ssim"].iloc[0] != pytest.approx(bd["ssim"].iloc[0])
    card = me_reports[("gru", 15, "none")].card
    assert card.protocol == "mindeye" and card.ids_digest == P.ids_digest(np.arange(100, 110)) and card.seed == cfg.seed
    assert me["card"].iloc[0] == card.key != bd["card"].iloc[0]
    # one file holds both protocols' rows (the protocol is part of a row's key) and both cards
    doc, df = results.read_results(cfg)
    assert sorted(df["protocol"]) == ["brain-diffuser", "mindeye"] and set(doc["cards"]) == set(df["card"])
    assert doc["cards"][card.key]["chain"]["inceptionv3"] == "256 torch-bilinear-plain -> 342 torch-bilinear-plain"
    with pytest.raises(P.ProtocolMismatchError, match="'brain-diffuser' and 'mindeye'"):
        P.check_same_protocol(doc["rows"], "rows of one table")
    # a subset of the test images: its own ids on the card
    _, sub = E.evaluate(cfg, reconstructions={("gru", 15, "none"): first[[2, 5]]}, indices=[2, 5], progress=False)
    sub_card = sub[("gru", 15, "none")].card
    assert sub_card.ids_digest == P.ids_digest([102, 105]) and "(2 chosen)" in sub_card.image_set
    # score() alone attaches the run's card
    rep = E.score(cfg, first, progress=False)
    assert rep.protocol == "brain-diffuser" and rep.card.ids_digest == card.ids_digest
    with pytest.raises(ValueError, match="protocol must be one of brain-diffuser, mindeye; found 'mind-eye'"):
        E.score(cfg, first, protocol="mind-eye", progress=False)


def test_old_results_rows_read_as_brain_diffusers(run):
    cfg, gt, first, _ = run
    E.evaluate(cfg, reconstructions={("gru", 15, "none"): first}, progress=False)
    path = results.results_path(cfg)
    doc = json.loads(path.read_text())
    for row in doc["rows"]:  # a file written before protocols existed
        del row["protocol"], row["card"]
    path.write_text(json.dumps(doc))
    assert results.read_results(cfg)[1]["protocol"].tolist() == ["brain-diffuser"]
    E.evaluate(cfg, reconstructions={("gru", 15, "none"): gt}, progress=False)  # replaces the old row
    _, df = results.read_results(cfg)
    assert df["protocol"].tolist() == ["brain-diffuser"] and df["ssim"].iloc[0] == pytest.approx(1.0)


def test_results_file_is_read_by_the_cross_subject_report(run):
    cross = pytest.importorskip("nsdlib.report.cross_subject")
    cfg, gt, first, _ = run
    E.evaluate(cfg, reconstructions={("gru", 15, "none"): first, ("gru", 15, "64"): gt}, progress=False)
    df = cross.report_rows(results.results_path(cfg))
    assert set(df["noise"]) == {"none", "64"} and (df["subject"] == 1).all()


def test_evaluate_noise_levels_degrade_low_level_metrics(run):
    cfg, gt, first, _ = run
    rows, reports = E.evaluate(cfg, noise_levels=["8", "64", "256"], progress=False)
    assert list(rows["noise"]) == ["none", "8", "64", "256"] and (rows["n_images"] == 10).all()
    # stage 1's latent errors go with the noiseless row of each model
    assert rows["latent_mse"].iloc[0] == pytest.approx(0.25) and rows["latent_mae"].iloc[0] == pytest.approx(0.5)
    assert rows["latent_mse"].iloc[1:].isna().all()
    assert reports[("gru", 15, "8")].sources["clip"] == "not available: no small CLIP in this test"
    ssim = rows.set_index("noise")["ssim"]
    assert ssim["none"] > ssim["8"] > ssim["64"] > ssim["256"]


def test_evaluate_without_writing(run):
    cfg, gt, first, _ = run
    rows, reports = E.evaluate(cfg, reconstructions={("ridge", 15, "none"): first}, progress=False, write=False)
    assert list(rows["regressor"]) == ["ridge"] and ("ridge", 15, "none") in reports
    assert not results.results_path(cfg).exists()


def test_count_mismatch_is_an_error(run):
    cfg, gt, first, _ = run
    with pytest.raises(ValueError, match="10 ground-truth images and 3 reconstructions"):
        E.evaluate(cfg, reconstructions={("gru", 15, "none"): gt[:3]}, progress=False)


def test_explorer_data(run):
    cfg, gt, first, _ = run
    assert E.default_noise_levels(cfg) == ("none", "64", "256")  # quick run
    data = E.explorer_data(cfg, ["none", "64"])  # quick: the first four test images
    assert data["levels"] == ["none", "64"] and list(data["ids"]) == [100, 101, 102, 103]
    assert np.array_equal(data["stimuli"], gt[:4]) and data["64"]["final"].shape == (4, 32, 32, 3)
    assert data["64"]["report"].n_images == 4  # the view and the widget: tests/test_report_explorer.py


def test_default_clip_never_uses_a_random_stand_in(tmp_path, monkeypatch):
    from nsdlib import metrics as M
    from nsdlib.pipeline.context import ModelSource

    kind = {"value": "random"}
    monkeypatch.setattr(E.stage2, "model_sources", lambda c: {
        "clip": ModelSource("clip", kind["value"], None, "mini:abc", "a CLIP")})

    class Emb:
        def vision(self, images, progress=True):
            return np.ones((len(images), 5, 3)) * np.arange(len(images))[:, None, None]

    monkeypatch.setattr(E.stage2, "clip_embedder", lambda c: Emb())
    cfg = RunConfig(workdir=str(tmp_path))
    reason = E._default_clip(cfg)
    assert isinstance(reason, str) and "random stand-in is not a metric" in reason
    kind["value"] = "mini"
    net = E._default_clip(cfg)
    assert isinstance(net, M.FeatureNetwork) and net.trained and "small CLIP" in net.description
    assert net.features(np.zeros((3, 8, 8, 3), np.uint8))["clip"].shape == (3, 3)
    assert E._default_clip(cfg.replace(models="pretrained")) is None


def test_evaluate_a_subset_of_images(run):
    cfg, gt, first, _ = run
    rows, reports = E.evaluate(cfg, noise_levels=["64"], indices=[0, 1, 2], progress=False)
    assert (rows["n_images"] == 3).all()
    assert not results.results_path(cfg).exists()  # the results file holds whole-test-set scores only
    np.testing.assert_allclose(reports[("gru", 15, "none")].per_image["ssim"],
                               E.M.ssim(gt[:3], first[:3], mode="columns"), atol=1e-12)


def test_scene_scores_read_each_stage_against_the_scenes(run, monkeypatch):
    cfg, gt, first, _ = run
    rng = np.random.default_rng(3)
    labels = {a: rng.integers(0, len(CLASSES[a]), 10) for a in ATTRIBUTES}
    objects = [SceneObject(shape=CLASSES["shape"][labels["shape"][k]], colour=CLASSES["colour"][labels["colour"][k]],
                           size="large", position=CLASSES["position"][labels["position"][k]], cx=0.5, cy=0.5,
                           radius=0.2, rotation=0.0) for k in range(10)]
    scenes = {100 + k: Scene("plain", "grey", 0.0, 1.0, 0.0, 0.0, (o,)) for k, o in enumerate(objects)}
    monkeypatch.setattr(E, "read_scenes", lambda root: scenes)

    class Probe:  # reads the labels written into the first pixel of each image
        def predict(self, images):
            return {a: images[:, 0, 0, i].astype(np.int64) for i, a in enumerate(ATTRIBUTES)}

    ctx = context.get(cfg)
    ctx._sources["scene"] = context.ModelSource("scene", "mini", "/nowhere/scene", "mini:test", "a test probe")
    ctx._models["scene"] = Probe()
    right = np.zeros((10, 8, 8, 3), np.uint8)
    right[:, 0, 0] = np.stack([labels[a] for a in ATTRIBUTES], axis=1)
    constant = np.zeros_like(right)
    out = E.scene_scores(cfg, stages={"right": right, "constant": lambda: constant})
    assert list(out["stage"].unique()) == ["right", "constant"] and len(out) == 6
    r = out[out.stage == "right"].set_index("attribute")
    c = out[out.stage == "constant"].set_index("attribute")
    for a in ATTRIBUTES:
        assert r.loc[a, "accuracy"] == 1.0 and r.loc[a, "n"] == 10
        share = np.mean(labels[a] == 0)  # always class 0: accuracy is its share, which is also its chance
        assert c.loc[a, "accuracy"] == pytest.approx(share) and c.loc[a, "chance"] == pytest.approx(share)
    with pytest.raises(ValueError, match="one image per test id expected \\(10\\); found 3"):
        E.scene_scores(cfg, stages={"few": right[:3]})


def test_scene_scores_need_the_scene_networks(run):
    cfg = run[0].replace(dataset="nsd", nsd_root=str(run[0].workdir))
    with pytest.raises(SceneNetworksMissing, match="mini-NSD's ground truth"):
        E.scene_scores(cfg, stages={})


# ------------------------------------------------------ where the noise is added
def _neighbour_correlation(residual):
    """Correlation of horizontally adjacent pixels of a residual (n, h, w, 3)."""
    r = residual.astype(float)
    return np.corrcoef(r[:, :, :-1].ravel(), r[:, :, 1:].ravel())[0, 1]


@pytest.fixture
def upscaling_run(run, monkeypatch):
    """The run with a diffusion model of 64 px (its first guesses are 32 px) and mid-range first guesses."""
    cfg, gt, first, calls = run
    mid = (96 + gt // 4).astype(np.uint8)  # like the stimuli, in 96-159: amplitude 16 rarely clips

    def stage2(c, first_guesses=None, noise=None, indices=None):
        calls.append(noise)
        out = mid if first_guesses is None else first_guesses  # the identity as "stage 2"
        return out if indices is None else out[indices]

    monkeypatch.setattr(E, "_model_size", lambda c: 64)
    monkeypatch.setattr(E, "first_guesses", lambda c: mid)
    monkeypatch.setattr(E, "_stage2", stage2)
    return cfg, gt, mid, calls


def test_upscaled_placement_adds_independent_noise_at_the_models_size(upscaling_run):
    cfg, gt, first, _ = upscaling_run
    clean_up = D.resize_to_model(first, 64)
    up = E.noised_first_guesses(cfg, 16, placement="upscaled")
    assert up.shape == (10, 64, 64, 3)
    res_up = up.astype(int) - clean_up
    assert res_up.std() == pytest.approx(16, rel=0.05) and abs(_neighbour_correlation(res_up)) < 0.05
    # noise on the 32-px first guess, then stage 2's upscaling: neighbouring pixels share their noise
    small = E.noised_first_guesses(cfg, 16)
    assert small.shape == (10, 32, 32, 3)
    res_small = D.resize_to_model(small, 64).astype(int) - clean_up
    assert _neighbour_correlation(res_small) > 0.5
    # seeded per image: the same seed gives the same images, a subset the same noise
    np.testing.assert_array_equal(E.noised_first_guesses(cfg, 16, placement="upscaled"), up)
    sub = E.noised_first_guesses(cfg, 16, first[[2, 5]], ids=[102, 105], placement="upscaled")
    np.testing.assert_array_equal(sub, up[[2, 5]])
    other = E.noised_first_guesses(cfg.replace(seed=1), 16, placement="upscaled")
    assert np.abs(other.astype(int) - up).max() > 0
    with pytest.raises(ValueError, match="placement must be one of 'first-guess', 'upscaled'"):
        E.noised_first_guesses(cfg, 16, placement="512")


def test_noise_sensitivity_under_each_placement(upscaling_run):
    cfg, gt, first, calls = upscaling_run
    out = E.noise_sensitivity(cfg, ["none", 16], placement="upscaled")
    assert calls == [None, "16 upscaled"]  # a stage-2 label of its own for each noised level
    np.testing.assert_array_equal(out["16"]["final"], E.noised_first_guesses(cfg, 16, placement="upscaled"))
    np.testing.assert_array_equal(out["none"]["final"], first)  # the run's own stage 2 under both placements
    rows, reports = E.noise_placements(cfg, ["none", 16, 256], indices=[0, 1, 2])
    assert list(rows["placement"]) == ["first-guess"] * 3 + ["upscaled"] * 3
    assert list(rows["noise"]) == ["none", "16", "256"] * 2 and (rows["n_images"] == 3).all()
    assert list(rows["noise_size"]) == [32] * 3 + [64] * 3
    assert set(reports) == {(p, lab) for p in E.NOISE_PLACEMENTS for lab in ("none", "16", "256")}
    by = rows.set_index(["placement", "noise"])["pixcorr"]
    assert by["first-guess", "none"] == by["upscaled", "none"]
    assert by["first-guess", "none"] > by["first-guess", "16"] and by["upscaled", "none"] > by["upscaled", "16"]
    assert not results.results_path(cfg).exists()  # never written: the file's rows have no placement


def test_placement_indices(run, monkeypatch):
    cfg, *_ = run
    assert E.placement_indices(cfg).tolist() == [0, 1, 2, 3]  # quick: the chapter's few images
    full = cfg.replace(quick=False)
    assert E.placement_indices(full) is None  # 10 test images: all, sharing the chapter's stage-2 cache
    monkeypatch.setattr(E, "_test_ids", lambda c: np.arange(982))
    assert E.placement_indices(full).tolist() == list(range(E.PLACEMENT_IMAGES))


def test_other_subjects_are_shown_image_by_image_from_runs_that_shared_them(tmp_path):
    one = RunConfig(dataset="mini", subject=1, workdir=str(tmp_path))
    rng = np.random.default_rng(0)

    def view(ids):
        return {"ids": np.array(ids), "none": {"final": rng.integers(0, 256, (len(ids), 4, 4, 3), dtype=np.uint8)}}

    assert E.other_subjects(one, [9, 5]) == {}, "no other run: nothing to show"
    two, five, seven = view([5, 3, 9]), view([5, 3]), view([9, 5])
    E.share_view(one.replace(subject=2), two)
    E.share_view(one.replace(subject=5), five)  # lacks image 9: left out, not half shown
    E.share_view(one.replace(subject=7, n_layers=31), seven)  # other blocks: not the same decoder
    E.share_view(one, view([9, 5]))  # this run's own: not an "other" subject
    got = E.other_subjects(one, [9, 5])
    assert list(got) == ["subject 2, stage 2"]
    np.testing.assert_array_equal(got["subject 2, stage 2"], two["none"]["final"][[2, 0]])
    assert list(E.other_subjects(one.replace(n_layers=31), [9, 5])) == ["subject 7, stage 2"]
