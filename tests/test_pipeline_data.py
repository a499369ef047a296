"""Tests of nsdlib.pipeline.data: the subject-data contract on mini-NSD and on an NSD-layout tree.

The known answers come from mini-NSD's ground truth: betas written from the true single-trial
amplitudes (int16 x 300, NSD's format) must come back averaged per image exactly, split by
the shared rule read independently from the .mat, and z-scored with training statistics.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.io
from _mini_worlds import truth_world, write_truth_betas
from _synthetic_nsd import write_synthetic_nsd

from nsdlib import RunConfig, mini, nsd
from nsdlib.pipeline import data, dataset

L = nsd.NSDLayout


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """A private copy of the small mini-NSD world (seed 0) with truth betas for subject 1."""
    return truth_world(request, tmp_path_factory)


def _cfg(world, tmp_path, **kw):
    return RunConfig(dataset="mini", subject=1, quick=True, workdir=str(tmp_path / "work"), nsd_root=str(world), **kw)


def _truth_means(world, ids):
    t = mini.truth(world, 1)
    amps = np.rint(t.amplitudes * 300) / 300  # what int16 x 300 stores
    return np.stack([amps[t.trial_nsd_id == i].mean(0) for i in ids])


def test_split_equals_independent_reading_of_the_mat(world, tmp_path):
    d = data.subject_data(_cfg(world, tmp_path), progress=False)
    mat = scipy.io.loadmat(world / L.EXPDESIGN)
    mo = mat["masterordering"].ravel().astype(int)
    ids = mat["subjectim"].astype(int)[0, mo - 1] - 1
    test = mo <= mat["sharedix"].size  # NSD's rule: the first columns of subjectim are shared
    np.testing.assert_array_equal(d.test_ids, np.unique(ids[test]))
    np.testing.assert_array_equal(d.train_ids, np.unique(ids[~test]))
    spec = mini.spec_for("small")
    assert d.test_ids.size == spec.n_shared and d.train_ids.size == spec.n_train
    assert d.info["sessions"] == spec.n_sessions and d.info["dataset"] == "mini"


def test_repeats_averaged_to_the_simulation_truth(world, tmp_path):
    d = data.subject_data(_cfg(world, tmp_path), progress=False)
    t = mini.truth(world, 1)
    assert d.n_voxels == t.n_voxels
    np.testing.assert_array_equal(d.roi_ijk[d.voxel_index], t.voxel_ijk)
    np.testing.assert_allclose(d.unscaled("train"), _truth_means(world, d.train_ids), atol=1e-5)
    np.testing.assert_allclose(d.unscaled("test"), _truth_means(world, d.test_ids), atol=1e-5)
    assert (d.train_repeats == 3).all() and (d.test_repeats == 3).all()
    # averages of three noisy trials sit near the noise-free image responses
    column = {int(n): k for k, n in enumerate(t.image_nsd_id)}
    resp = t.image_response[[column[int(i)] for i in d.test_ids]]
    assert np.corrcoef(d.unscaled("test").ravel(), resp.ravel())[0, 1] > 0.8


def test_zscore_with_training_statistics(world, tmp_path):
    d = data.subject_data(_cfg(world, tmp_path), progress=False)
    np.testing.assert_allclose(d.train_betas.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.train_betas.std(0, ddof=1), 1, atol=1e-4)
    train_avg = _truth_means(world, d.train_ids)
    np.testing.assert_allclose(d.mean, train_avg.mean(0), atol=1e-5)
    np.testing.assert_allclose(d.std, train_avg.std(0, ddof=1), rtol=1e-4)
    expected_test = (_truth_means(world, d.test_ids) - train_avg.mean(0)) / train_avg.std(0, ddof=1)
    np.testing.assert_allclose(d.test_betas, expected_test, atol=1e-4)
    assert d.train_betas.dtype == np.float32 and d.test_ids.dtype == np.int64


def test_cached_in_the_store_and_world_seed_is_not_the_run_seed(world, tmp_path):
    from nsdlib.store import Store

    cfg = _cfg(world, tmp_path)
    a = data.subject_data(cfg, progress=False)
    b = data.subject_data(cfg.replace(seed=7), progress=False)  # same world, same split: reused
    np.testing.assert_array_equal(a.train_betas, b.train_betas)
    assert mini.read_manifest(world)["seed"] == dataset.MINI_WORLD_SEED
    events = [e["event"] for e in Store.for_config(cfg).events() if e["name"] == "subject_data"]
    assert events == ["computed", "reused"]
    r7 = data.subject_data(cfg.replace(seed=7), split="random", progress=False)
    r8 = data.subject_data(cfg.replace(seed=8), split="random", progress=False)
    assert not np.array_equal(r7.test_ids, r8.test_ids)
    assert r7.info["split"] == "random" and r7.test_ids.size == round(0.1 * (a.train_ids.size + a.test_ids.size))


def test_stimuli_and_captions_follow_the_ids(world, tmp_path):
    import h5py
    from PIL import Image

    cfg = _cfg(world, tmp_path)
    d = data.subject_data(cfg, progress=False)
    imgs = data.stimuli(cfg, "test", 32, progress=False)
    assert imgs.shape == (d.test_ids.size, 32, 32, 3) and imgs.dtype == np.uint8
    with h5py.File(world / L.STIMULI) as f:
        raw = f["imgBrick"][int(d.test_ids[3])]
    np.testing.assert_array_equal(imgs[3], np.asarray(Image.fromarray(raw).resize((32, 32), Image.Resampling.BICUBIC)))
    assert data.stimuli(cfg, "train", progress=False).shape == (d.train_ids.size, 128, 128, 3)

    caps = data.captions(cfg, "test", progress=False)
    assert len(caps) == d.test_ids.size and all(len(c) == 5 for c in caps)
    info = nsd.read_stim_info(nsd.NSDLayout(world)).loc[int(d.test_ids[0])]
    anns = json.loads((world / L.captions_file(info["cocoSplit"])).read_text())["annotations"]
    assert caps[0] == [a["caption"] for a in sorted(anns, key=lambda a: a["id"]) if a["image_id"] == info["cocoId"]]
    with pytest.raises(nsd.NSDDataError, match="'train' or 'test'"):
        data.stimuli(cfg, "val")


def test_mini_refuses_more_sessions_than_it_has(world, tmp_path):
    with pytest.raises(nsd.NSDDataError, match="has 2 sessions per subject.*asked for 3"):
        data.subject_data(_cfg(world, tmp_path), sessions=3, progress=False)


def test_missing_betas_are_written_by_the_glm_step(world, tmp_path, monkeypatch):
    root = tmp_path / "mini-nsd"
    shutil.copytree(world, root)
    shutil.rmtree(root / "nsddata_betas")
    calls = []

    def write_betas(cfg):
        calls.append(cfg.subject)
        write_truth_betas(root, cfg.subject)
        return root / L.betas_dir(cfg.subject)

    monkeypatch.setattr(data, "write_betas", write_betas)
    cfg = _cfg(root, tmp_path)
    d = data.subject_data(cfg, progress=False)
    assert calls == [1] and d.info["sessions"] == 2
    data.subject_data(cfg, progress=False)
    assert calls == [1]  # betas present now: not written again

    def no_betas(cfg):
        calls.append(cfg.subject)

    monkeypatch.setattr(data, "write_betas", no_betas)
    with pytest.raises(nsd.NSDFileError, match="subj02.*nsdlib betas --dataset mini --subject 2"):
        data.subject_data(cfg.replace(subject=2), progress=False)


def test_nsd_dataset_reads_a_local_nsd_tree(tmp_path):
    root = tmp_path / "nsd"
    write_synthetic_nsd(root, n_sessions=3, trials_per_session=20, seed=2)
    cfg = RunConfig(dataset="nsd", subject=1, workdir=str(tmp_path / "work"), nsd_root=str(root))
    d = data.subject_data(cfg, sessions=3, progress=False)
    assert d.info["dataset"] == "nsd" and d.info["sessions"] == 3
    assert data.stimuli(cfg, "test", sessions=3, progress=False).shape[0] == d.test_ids.size
    with pytest.raises(nsd.NSDDataError, match="holds 3 sessions of 20 trials; asked for 37"):
        data.subject_data(cfg, progress=False)  # the default is 37 sessions
    (root / L.betas_file(1, 2)).unlink()
    with pytest.raises(nsd.NSDFileError, match=f"betas_session02.nii.gz; fetch it with `nsdlib fetch nsd --subject 1 "
                                               f"--root {root}`"):
        data.subject_data(cfg, sessions=3, progress=False)


@pytest.mark.slow
def test_glm_betas_of_mini_nsd_average_close_to_the_truth(world, tmp_path):
    """The real chain: mini-NSD time series -> pipeline.betas (GLM) -> the same reader as NSD."""
    root = tmp_path / "mini-nsd"
    shutil.copytree(world, root)
    shutil.rmtree(root / "nsddata_betas")  # drop the truth betas: the GLM must write its own
    d = data.subject_data(_cfg(root, tmp_path), progress=False)
    assert len(nsd.NSDLayout(root).sessions(1)) == mini.spec_for("small").n_sessions
    t = mini.truth(root, 1)
    for split, ids in (("train", d.train_ids), ("test", d.test_ids)):
        truth = np.stack([t.amplitudes[t.trial_nsd_id == i].mean(0) for i in ids])
        est = d.unscaled(split)
        r = [np.corrcoef(est[:, v], truth[:, v])[0, 1] for v in range(truth.shape[1])]
        assert np.median(r) > 0.8, (split, np.median(r))
