"""nsdlib.pipeline.rescore on mini-NSD: a file of reconstructions scores exactly as the pipeline scored them.

The known answer is the pipeline's own row: ``evaluation.evaluate`` scores a set of
reconstructions of subject 1's test images (with a CLIP stand-in, so that an identification
metric is computed too); the same images, written in every format people publish (in a
shuffled order, with their ids), are re-scored by :func:`score_file` in a fresh store and must
give the same eight numbers, to the last bit, and the same per-image values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from _mini_worlds import truth_world
from _synthetic_nsd import write_synthetic_nsd
from PIL import Image

from nsdlib import RunConfig, nsd
from nsdlib import features as F
from nsdlib.names import IMAGE_METRICS
from nsdlib.pipeline import context, results
from nsdlib.pipeline import evaluation as E
from nsdlib.pipeline import rescore as RS
from nsdlib.reconstructions import ReconstructionFileError

SCORED = (*IMAGE_METRICS, "ssim_2d")


def _block_features(images):
    """A deterministic image feature (4 x 4 block means): a CLIP stand-in for the identification metric."""
    x = np.asarray(images, dtype=np.float64)
    n, h, w, _ = x.shape
    return x.reshape(n, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(n, -1)


CLIP = F.clip_network(_block_features, description="4x4 block means (a test stand-in for CLIP)")


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    return truth_world(request, tmp_path_factory)


def cfg_for(world, workdir) -> RunConfig:
    return RunConfig(dataset="mini", subject=1, quick=True, workdir=str(workdir), nsd_root=str(world))


@pytest.fixture(scope="module")
def scored(world, tmp_path_factory):
    """The pipeline's scores of a set of reconstructions (a darkened, blurred copy of the stimuli)."""
    cfg = cfg_for(world, tmp_path_factory.mktemp("pipeline"))
    gt = E.ground_truth(cfg)
    blur = (gt.astype(np.float64) + np.roll(gt, 2, axis=1) + np.roll(gt, 2, axis=2)) / 3
    recs = np.clip(blur * 0.8 + 20, 0, 255).round().astype(np.uint8)
    rows, reports = E.evaluate(cfg, reconstructions={("gru", 15, "none"): recs}, clip=CLIP, progress=False)
    ids = np.asarray(context.get(cfg).subject().test_ids)
    assert len(ids) == len(recs) >= 10 and not np.isnan(rows.iloc[0]["clip"])
    return {"rows": rows, "report": reports[("gru", 15, "none")], "recs": recs, "ids": ids}


def _nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, 3, 1))


def _write(folder, fmt, recs, ids):
    """``recs`` in format ``fmt``, in a shuffled order, with its ids; returns the path to score."""
    order = np.random.default_rng(1).permutation(len(ids))
    x, i = recs[order], ids[order]
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "folder of PNGs":
        for k, (im, nsd_id) in enumerate(zip(x, i)):
            Image.fromarray(im).save(folder / f"shared{k + 1:04d}_nsd{nsd_id + 1:05d}.png")
        return folder
    if fmt == "pt float32 NCHW":
        path = folder / "recons.pt"
        torch.save(torch.from_numpy(_nchw(x).astype(np.float32) / 255), path)
        (folder / "recons.ids.json").write_text(json.dumps(i.tolist()))
    elif fmt == "pt uint8 NHWC":
        path = folder / "recons.pt"
        torch.save(torch.from_numpy(x), path)
        np.save(folder / "recons.ids.npy", i)
    elif fmt == "npy float64 NHWC":
        path = folder / "recons.npy"
        np.save(path, x / 255.0)
        (folder / "recons.ids.txt").write_text("\n".join(map(str, i)))
    else:  # npy uint8 NCHW
        path = folder / "recons.npy"
        np.save(path, _nchw(x))
        (folder / "recons.ids.txt").write_text("\n".join(map(str, i)))
    return path


FORMATS = ("pt float32 NCHW", "pt uint8 NHWC", "npy float64 NHWC", "npy uint8 NCHW", "folder of PNGs")


@pytest.mark.parametrize("fmt", FORMATS)
def test_score_file_reproduces_the_pipelines_scores(world, scored, tmp_path, fmt):
    path = _write(tmp_path / "published", fmt, scored["recs"], scored["ids"])
    cfg = cfg_for(world, tmp_path / "fresh")  # a fresh store: every number is computed again
    rows, report = RS.score_file(cfg, path, clip=CLIP, progress=False)
    ours, theirs = rows.iloc[0], scored["rows"].iloc[0]
    for m in SCORED:
        np.testing.assert_array_equal(report.per_image[m], scored["report"].per_image[m], err_msg=m)
        assert (ours[m] is None and theirs[m] is None) or ours[m] == theirs[m], m
    assert ours["regressor"] == f"file:{path.name}" and ours["n_layers"] == RS.FILE_N_LAYERS
    assert ours["noise"] == "none" and ours["n_images"] == len(scored["ids"]) and ours["size"] == theirs["size"]
    assert ours["latent_mse"] is None and ours["latent_mae"] is None  # no stage-1 latents behind a file
    assert sum(e["event"] == "computed" and e["name"] == "metrics" for e in context.get(cfg).store.events()) == 1


def test_the_row_is_written_merged_and_read_back(world, scored, tmp_path):
    cfg = cfg_for(world, tmp_path / "work")
    E.evaluate(cfg, reconstructions={("gru", 15, "none"): scored["recs"]}, clip=CLIP, progress=False)
    path = _write(tmp_path / "a", "npy uint8 NCHW", scored["recs"], scored["ids"])
    RS.score_file(cfg, path, clip=CLIP, progress=False, label="MindEye2 (published)")
    doc, df = results.read_results(cfg)
    assert list(df["regressor"]) == ["gru", "MindEye2 (published)"]  # the pipeline's row kept, the file's beside it
    mine = df.set_index("regressor")
    for m in SCORED:
        assert mine.loc["MindEye2 (published)", m] == pytest.approx(mine.loc["gru", m], rel=1e-12, nan_ok=True)
    assert "4x4 block means" in doc["sources"]["clip"]
    # another results file, not the run's; a second scoring of the same file replaces its row
    out = tmp_path / "elsewhere" / "rescored.json"
    RS.score_file(cfg, path, clip=CLIP, progress=False, out=out)
    RS.score_file(cfg, path, clip=CLIP, progress=False, out=out)
    doc, df = results.read_results(out)
    assert list(df["regressor"]) == ["file:recons.npy"] and out.with_suffix(".csv").is_file()
    rows, _ = RS.score_file(cfg, path, clip=CLIP, progress=False, write=False, label="not written")
    assert "not written" not in set(results.read_results(out)[1]["regressor"])


def test_a_subset_of_the_test_images_is_scored_against_those_alone(world, scored, tmp_path):
    pick = np.array([1, 4, 5, 9])
    cfg = cfg_for(world, tmp_path / "work")
    path = _write(tmp_path / "a", "pt uint8 NHWC", scored["recs"][pick], scored["ids"][pick])
    rows, report = RS.score_file(cfg, path, clip=CLIP, progress=False, write=False)
    _, want = E.evaluate(cfg, reconstructions={("gru", 15, "none"): scored["recs"][pick]}, indices=pick, clip=CLIP,
                         progress=False)
    assert rows.iloc[0]["n_images"] == 4
    for m in ("ssim", "pixcorr", "clip", "ssim_2d"):
        np.testing.assert_array_equal(report.per_image[m], want[("gru", 15, "none")].per_image[m])


def test_shared1000_ids_are_the_sorted_sharedix(world, scored, tmp_path):
    cfg = cfg_for(world, tmp_path / "work")
    sharedix = scipy.io.loadmat(world / nsd.NSDLayout.EXPDESIGN)["sharedix"].ravel()
    shared = RS.shared1000_ids(cfg)
    np.testing.assert_array_equal(shared, np.sort(sharedix) - 1)
    # subject 1 of the small world saw every shared image: its test images are the shared ones
    np.testing.assert_array_equal(shared, scored["ids"])
    path = tmp_path / "recons.npy"
    np.save(path, scored["recs"])
    rows, _ = RS.score_file(cfg, path, ids=RS.SHARED1000, clip=CLIP, progress=False, write=False)
    assert rows.iloc[0]["ssim"] == scored["rows"].iloc[0]["ssim"]
    assert rows.iloc[0]["clip"] == scored["rows"].iloc[0]["clip"]


def test_ids_outside_the_test_set_and_unknown_protocols_are_refused(world, scored, tmp_path):
    cfg = cfg_for(world, tmp_path / "work")
    train_id = int(np.asarray(context.get(cfg).subject().train_ids)[0])
    ids = scored["ids"].copy()
    ids[3] = train_id
    path = _write(tmp_path / "a", "npy uint8 NCHW", scored["recs"], ids)
    with pytest.raises(ReconstructionFileError, match=rf"expected nsdIds of the {len(ids)} test images .*"
                                                      rf"found 1 of {len(ids)} that are not, such as nsdId {train_id}"):
        RS.score_file(cfg, path, progress=False)
    with pytest.raises(ValueError, match="protocol must be one of brain-diffuser, mindeye; found 'mindeye2'"):
        RS.score_file(cfg, path, protocol="mindeye2", progress=False)
    assert not results.results_path(cfg).exists()


def test_a_file_scored_under_mindeye_gets_its_own_row_and_card(world, scored, tmp_path):
    cfg = cfg_for(world, tmp_path / "work")
    path = _write(tmp_path / "a", "npy uint8 NCHW", scored["recs"], scored["ids"])
    rows_bd, _ = RS.score_file(cfg, path, progress=False)
    rows_me, report = RS.score_file(cfg, path, protocol="mindeye", progress=False)
    assert rows_bd.iloc[0]["protocol"] == "brain-diffuser" and rows_me.iloc[0]["protocol"] == "mindeye"
    assert report.card.protocol == "mindeye" and report.card.n_images == len(scored["ids"])
    doc = json.loads(results.results_path(cfg).read_text())
    assert {r["protocol"] for r in doc["rows"]} == {"brain-diffuser", "mindeye"}  # two rows, not one overwritten
    assert rows_me.iloc[0]["card"] in doc["cards"]


def test_only_test_images_leaves_the_others_out(world, scored, tmp_path):
    cfg = cfg_for(world, tmp_path / "work")
    train_ids = np.asarray(context.get(cfg).subject().train_ids)[:2]
    recs = np.concatenate([scored["recs"], scored["recs"][:2]])  # two more images, of training ids
    path = _write(tmp_path / "a", "pt uint8 NHWC", recs, np.concatenate([scored["ids"], train_ids]))
    with pytest.raises(ReconstructionFileError, match=r"found 2 of 22 that are not.*--only-test-images"):
        RS.score_file(cfg, path, clip=CLIP, progress=False)
    rows, report = RS.score_file(cfg, path, clip=CLIP, progress=False, only_test_images=True)
    assert rows.iloc[0]["n_images"] == len(scored["ids"])
    for m in SCORED:
        np.testing.assert_array_equal(report.per_image[m], scored["report"].per_image[m], err_msg=m)
    only_train = _write(tmp_path / "b", "pt uint8 NHWC", recs[-2:], train_ids)
    with pytest.raises(ReconstructionFileError, match="expected some of the run's 20 test images; found none among"):
        RS.score_file(cfg, only_train, progress=False, only_test_images=True)


def test_the_same_on_an_nsd_layout_tree(tmp_path):
    """``dataset="nsd"``: a local tree in NSD's layout (37 sessions), NSD's own image names (1-based ids)."""
    root = tmp_path / "nsd"
    write_synthetic_nsd(root, n_sessions=37, trials_per_session=8, seed=2)
    cfg = RunConfig(dataset="nsd", subject=1, workdir=str(tmp_path / "pipeline"), nsd_root=str(root))
    gt = E.ground_truth(cfg)
    recs = np.clip(gt.astype(int) + 25, 0, 255).astype(np.uint8)
    rows, _ = E.evaluate(cfg, reconstructions={("gru", 15, "none"): recs}, clip=CLIP, progress=False, write=False)
    ids = np.asarray(context.get(cfg).subject().test_ids)
    assert 0 in ids  # nsdId 0 is named nsd00001: the 1-based names are read as NSD writes them
    fresh = cfg.replace(workdir=str(tmp_path / "fresh"))
    for fmt in ("folder of PNGs", "npy uint8 NCHW"):
        got, _ = RS.score_file(fresh, _write(tmp_path / fmt, fmt, recs, ids), clip=CLIP, progress=False)
        for m in SCORED:
            assert got.iloc[0][m] == rows.iloc[0][m] or got.iloc[0][m] is rows.iloc[0][m] is None, (fmt, m)
    np.testing.assert_array_equal(RS.shared1000_ids(cfg), ids)  # every shared image is a test image here
    np.save(tmp_path / "sorted.npy", recs)
    got, _ = RS.score_file(fresh, tmp_path / "sorted.npy", ids=RS.SHARED1000, clip=CLIP, progress=False)
    assert got.iloc[0]["clip"] == rows.iloc[0]["clip"] and got.iloc[0]["dataset"] == "nsd"
