"""Tests of nsdlib.nsd on small NSD-layout trees written in NSD's real formats.

The trees hold int16 x300 NIfTI betas, an HDF5 imgBrick, a MATLAB expdesign, COCO caption
JSON and the stim-info CSV (``_synthetic_nsd.write_synthetic_nsd``, a test helper). Expected values are computed here
independently, with nibabel and scipy.io, never with the code under test.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import fsspec
import nibabel as nib
import numpy as np
import pytest
import scipy.io
from _synthetic_nsd import write_synthetic_labels, write_synthetic_nsd
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

from nsdlib import nsd
from nsdlib.cli import main as cli_main

L = nsd.NSDLayout


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    truth = write_synthetic_nsd(root, subjects=(1, 2), n_sessions=4, trials_per_session=30, seed=3)
    return root, truth


def _trials_by_nibabel(root: Path, subject: int, sessions: int):
    """All trials (n_trials, n_roi) in percent signal change, and the ROI mask, read with nibabel."""
    roi = np.asarray(nib.load(root / L.roi_file(subject)).dataobj)
    mask = roi > 0
    rows = []
    for s in range(1, sessions + 1):
        vol = nib.load(root / L.betas_file(subject, s)).get_fdata()
        rows.append(vol[mask].T)
    return np.concatenate(rows) / 300.0, mask


def _ids_by_scipy(root: Path, subject: int, n_trials: int):
    mat = scipy.io.loadmat(root / L.EXPDESIGN)
    mo = mat["masterordering"].ravel().astype(int)[:n_trials]
    si = mat["subjectim"].astype(int)
    n_shared = mat["sharedix"].size
    return si[subject - 1, mo - 1] - 1, mo <= n_shared


# ------------------------------------------------------------------- readers
def test_streamed_betas_equal_nibabel(tree):
    root, _ = tree
    layout = nsd.NSDLayout(root)
    ref = nib.load(root / L.betas_file(1, 2)).get_fdata()
    assert np.asarray(nib.load(root / L.betas_file(1, 2)).dataobj).dtype == np.int16
    mask = np.asarray(nib.load(root / L.roi_file(1)).dataobj) > 0
    # a chunk smaller than one trial volume forces one trial per chunk
    chunks = list(nsd.iter_session_betas(layout, 1, 2, nsd.fortran_index(mask), chunk_mb=1e-6))
    assert [t for t, _ in chunks] == list(range(30))
    got = np.concatenate([v for _, v in chunks])
    np.testing.assert_array_equal(got, ref[mask].T)
    vol = nsd.read_beta_volume(layout, 1, 2, trial=7)
    np.testing.assert_allclose(vol, ref[..., 7] / 300.0, rtol=1e-6)


def test_expdesign_is_one_based_and_checked(tree, tmp_path):
    root, truth = tree
    d = nsd.read_expdesign(nsd.NSDLayout(root))
    assert d.masterordering.min() == 1 and d.subjectim.min() == 1
    np.testing.assert_array_equal(d.masterordering, truth["masterordering"])
    bad = tmp_path / L.EXPDESIGN
    bad.parent.mkdir(parents=True)
    scipy.io.savemat(bad, {"masterordering": np.array([[0, 1]]), "subjectim": np.ones((8, 2)), "sharedix": [[1]]})
    with pytest.raises(nsd.NSDDataError, match="1-based"):
        nsd.read_expdesign(nsd.NSDLayout(tmp_path))


# --------------------------------------------------------------- preparation
def test_split_matches_independent_reading_of_the_mat(tree):
    root, _ = tree
    data = nsd.prepare_subject(nsd.NSDLayout(root), 2, sessions=4, progress=False)
    ids, shared = _ids_by_scipy(root, 2, 4 * 30)
    np.testing.assert_array_equal(data.test_ids, np.unique(ids[shared]))
    np.testing.assert_array_equal(data.train_ids, np.unique(ids[~shared]))
    assert not set(data.train_ids) & set(data.test_ids)
    assert data.info["n_trials_test"] == shared.sum() and data.info["n_trials_train"] == (~shared).sum()


def test_repeats_averaged_and_zscored_with_training_stats(tree):
    root, _ = tree
    data = nsd.prepare_subject(nsd.NSDLayout(root), 1, sessions=4, progress=False)
    trials, mask = _trials_by_nibabel(root, 1, 4)
    ids, _ = _ids_by_scipy(root, 1, 4 * 30)
    avg_train = np.stack([trials[ids == i].mean(0) for i in data.train_ids])
    avg_test = np.stack([trials[ids == i].mean(0) for i in data.test_ids])
    np.testing.assert_array_equal(data.train_repeats, [(ids == i).sum() for i in data.train_ids])
    mu, sd = avg_train.mean(0), avg_train.std(0, ddof=1)
    np.testing.assert_allclose(data.train_betas, (avg_train - mu) / sd, atol=2e-5)
    np.testing.assert_allclose(data.test_betas, (avg_test - mu) / sd, atol=2e-5)
    np.testing.assert_allclose(data.unscaled("test"), avg_test, atol=2e-5)
    assert data.train_betas.dtype == np.float32 and data.train_ids.dtype == np.int64
    assert data.n_voxels == mask.sum() == data.info["n_roi_voxels"]
    # columns are nibabel's volume[mask] order: to_volume puts them back in place
    vol = data.to_volume(data.mean)
    np.testing.assert_allclose(vol[mask], mu, atol=1e-5)
    assert np.isnan(vol[~mask]).all()


def test_known_answer_against_the_true_patterns(tree):
    root, truth = tree
    data = nsd.prepare_subject(nsd.NSDLayout(root), 1, sessions=4, progress=False)
    mask = np.asarray(nib.load(root / L.roi_file(1)).dataobj) > 0
    true = truth["patterns"][data.test_ids][:, mask]
    # noise 0.3 per trial, 3 repeats: the averaged betas sit close to the true patterns
    est = data.unscaled("test")
    assert np.abs(est - true).mean() < 0.3 / np.sqrt(3)
    assert np.corrcoef(est.ravel(), true.ravel())[0, 1] > 0.95


def test_zscore_uses_training_statistics_only(tree, tmp_path):
    root, _ = tree
    other = tmp_path / "changed"
    shutil.copytree(root, other)
    ids, shared = _ids_by_scipy(root, 1, 4 * 30)
    for s in range(1, 5):  # change only the test trials' betas
        p = other / L.betas_file(1, s)
        img = nib.load(p)
        vol = np.asarray(img.dataobj).copy()
        sel = shared[(s - 1) * 30: s * 30]
        vol[..., sel] = (vol[..., sel] // 2 + 500).astype(np.int16)
        nib.save(nib.Nifti1Image(vol, img.affine), p)
    a = nsd.prepare_subject(nsd.NSDLayout(root), 1, sessions=4, progress=False)
    b = nsd.prepare_subject(nsd.NSDLayout(other), 1, sessions=4, progress=False)
    np.testing.assert_array_equal(a.train_betas, b.train_betas)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    assert not np.allclose(a.test_betas, b.test_betas)


def test_single_trials_and_random_split(tree):
    root, _ = tree
    layout = nsd.NSDLayout(root)
    single = nsd.prepare_subject(layout, 1, sessions=4, average=False, progress=False)
    trials, _ = _trials_by_nibabel(root, 1, 4)
    ids, shared = _ids_by_scipy(root, 1, 4 * 30)
    np.testing.assert_array_equal(single.train_ids, ids[~shared])
    np.testing.assert_array_equal(single.test_ids, ids[shared])
    assert (single.train_repeats == 1).all()
    mu, sd = trials[~shared].mean(0), trials[~shared].std(0, ddof=1)
    np.testing.assert_allclose(single.test_betas, (trials[shared] - mu) / sd, atol=2e-5)

    r1 = nsd.prepare_subject(layout, 1, sessions=4, split="random", seed=5, progress=False)
    r2 = nsd.prepare_subject(layout, 1, sessions=4, split="random", seed=5, progress=False)
    r3 = nsd.prepare_subject(layout, 1, sessions=4, split="random", seed=6, progress=False)
    images = np.unique(ids)
    assert r1.test_ids.size == round(0.1 * images.size)
    np.testing.assert_array_equal(np.sort(np.r_[r1.train_ids, r1.test_ids]), images)
    np.testing.assert_array_equal(r1.test_ids, r2.test_ids)
    assert not np.array_equal(r1.test_ids, r3.test_ids)
    assert r1.info["split"] == "random" and r1.info["seed"] == 5


@pytest.fixture(scope="module")
def tree40(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd40")
    write_synthetic_nsd(root, n_sessions=40, trials_per_session=4, grid=(3, 3, 2), n_shared=8,
                            n_per_subject=60, n_images=100, with_stimuli=False, seed=1)
    return root


def test_37_sessions_by_default_and_40_on_request(tree40):
    layout = nsd.NSDLayout(tree40)
    d37 = nsd.prepare_subject(layout, 1, progress=False)
    d40 = nsd.prepare_subject(layout, 1, sessions=40, progress=False)
    assert d37.info["sessions"] == 37 and d37.info["n_trials"] == 37 * 4
    assert d40.info["sessions"] == 40 and d40.info["n_trials"] == 40 * 4
    ids, shared = _ids_by_scipy(tree40, 1, 37 * 4)
    np.testing.assert_array_equal(d37.train_ids, np.unique(ids[~shared]))
    with pytest.raises(nsd.NSDDataError, match="40 sessions.*asked for 41"):
        nsd.prepare_subject(layout, 1, sessions=41, progress=False)


def test_missing_session_names_path_and_fetch_command(tree40, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tree40, root)
    os.unlink(root / L.betas_file(1, 39))
    layout = nsd.NSDLayout(root)
    assert layout.sessions(1) == [s for s in range(1, 41) if s != 39]
    nsd.prepare_subject(layout, 1, sessions=37, progress=False)  # 37 are all there
    with pytest.raises(nsd.NSDFileError) as exc:
        nsd.prepare_subject(layout, 1, sessions=40, progress=False)
    msg = str(exc.value)
    assert str(root / L.betas_file(1, 39)) in msg
    assert f"nsdlib fetch nsd --subject 1 --root {root} --sessions 39" in msg


def test_bad_subjects_and_options_are_refused(tree):
    root, _ = tree
    layout = nsd.NSDLayout(root)
    with pytest.raises(nsd.NSDDataError, match="subject 3 did not complete all 40 NSD sessions; use 1, 2, 5 or 7"):
        nsd.prepare_subject(layout, 3, progress=False)
    with pytest.raises(nsd.NSDDataError, match="subject 9 is not an NSD subject"):
        nsd.check_subject(9)
    with pytest.raises(nsd.NSDFileError, match="subj05.*nsdlib fetch nsd --subject 5"):
        nsd.prepare_subject(layout, 5, sessions=4, progress=False)  # subject 5 was not written
    with pytest.raises(nsd.NSDDataError, match="nan_policy"):
        nsd.prepare_subject(layout, 1, sessions=4, nan_policy="drop", progress=False)
    with pytest.raises(nsd.NSDDataError, match="split"):
        nsd.prepare_subject(layout, 1, sessions=4, split="odd", progress=False)
    with pytest.raises(nsd.NSDDataError, match="holds 4 sessions"):
        nsd.prepare_subject(layout, 1, sessions=5, progress=False)


def test_roi_and_betas_grids_that_disagree_are_reported(tree, tmp_path):
    root, _ = tree
    other = tmp_path / "grid"
    shutil.copytree(root, other)
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.int16), np.eye(4)), other / L.roi_file(1))
    with pytest.raises(nsd.NSDDataError, match=r"grid \(6, 5, 3\).*grid \(6, 5, 4\)"):
        nsd.prepare_subject(nsd.NSDLayout(other), 1, sessions=4, progress=False)


@pytest.fixture(scope="module")
def nan_tree(tmp_path_factory):
    """float32 betas with one voxel NaN in one trial and one voxel constant (0) everywhere."""
    root = tmp_path_factory.mktemp("nan")
    write_synthetic_nsd(root, n_sessions=2, trials_per_session=30, dtype="float32", with_stimuli=False, seed=4)
    mask = np.asarray(nib.load(root / L.roi_file(1)).dataobj) > 0
    ijk = np.argwhere(mask)
    nan_v, const_v = 3, 10
    for s in (1, 2):
        p = root / L.betas_file(1, s)
        vol = np.asarray(nib.load(p).dataobj).copy()
        vol[tuple(ijk[const_v])] = 0.0
        if s == 2:
            vol[(*ijk[nan_v], 17)] = np.nan
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    return root, nan_v, const_v, int(mask.sum())


def test_nan_and_constant_voxels_are_counted_and_handled(nan_tree):
    root, nan_v, const_v, n_roi = nan_tree
    layout = nsd.NSDLayout(root)
    ex = nsd.prepare_subject(layout, 1, sessions=2, progress=False)
    assert ex.info["n_nonfinite_voxels"] == 1 and ex.info["nonfinite_voxels"] == [nan_v]
    assert ex.info["n_constant_voxels"] == 1 and ex.info["constant_voxels"] == [const_v]
    assert ex.info["nan_policy"] == "exclude"
    assert ex.n_voxels == n_roi - 2 and nan_v not in ex.voxel_index and const_v not in ex.voxel_index
    assert np.isfinite(ex.train_betas).all() and np.isfinite(ex.test_betas).all()

    zero = nsd.prepare_subject(layout, 1, sessions=2, nan_policy="zero", progress=False)
    assert zero.n_voxels == n_roi and zero.info["nan_policy"] == "zero"
    assert (zero.train_betas[:, [nan_v, const_v]] == 0).all() and (zero.test_betas[:, [nan_v, const_v]] == 0).all()
    keep = np.setdiff1d(np.arange(n_roi), [nan_v, const_v])
    np.testing.assert_allclose(zero.train_betas[:, keep], ex.train_betas, atol=1e-6)
    with pytest.raises(nsd.NSDDataError, match="1 ROI voxel\\(s\\) with non-finite betas and 1 constant"):
        nsd.prepare_subject(layout, 1, sessions=2, nan_policy="raise", progress=False)


# ------------------------------------------------------- stimuli and captions
def test_stimuli_image_by_image_in_id_order(tree):
    root, _ = tree
    import h5py
    from PIL import Image

    layout = nsd.NSDLayout(root)
    with h5py.File(root / L.STIMULI) as f:
        brick = f["imgBrick"][:]
    got = nsd.read_stimuli(layout, [5, 2, 5], progress=False)
    np.testing.assert_array_equal(got, brick[[5, 2, 5]])
    small = nsd.read_stimuli(layout, [5, 2], size=8, progress=False)
    assert small.shape == (2, 8, 8, 3) and small.dtype == np.uint8
    ref = np.asarray(Image.fromarray(brick[2]).resize((8, 8), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(small[1], ref)
    with pytest.raises(nsd.NSDDataError, match="0..199"):
        nsd.read_stimuli(layout, [200], progress=False)


def test_captions_five_per_image_from_both_coco_splits(tree):
    root, _ = tree
    caps = nsd.read_captions(nsd.NSDLayout(root), [0, 3, 7])  # 0 is in val2017, 3 carries six captions
    assert [len(c) for c in caps] == [5, 5, 5]
    assert caps[1] == [f"image 3 caption {c}" for c in range(5)]
    assert caps[0][0] == "image 0 caption 0"


def test_missing_files_in_mini_layout_name_the_generating_commands(tmp_path):
    layout = nsd.NSDLayout(tmp_path, dataset="mini")
    with pytest.raises(nsd.NSDFileError) as exc:
        nsd.read_expdesign(layout)
    assert str(tmp_path / L.EXPDESIGN) in str(exc.value)
    assert f"nsdlib mini generate --root {tmp_path}" in str(exc.value)
    with pytest.raises(nsd.NSDFileError, match=f"nsdlib betas --dataset mini --subject 2 --nsd-root {tmp_path}"):
        nsd.read_beta_header(layout, 2, 1)


# --------------------------------------------------------- fetch and remote
def test_fetch_subject_downloads_exactly_the_needed_files_and_resumes(tree, tmp_path):
    src, _ = tree
    dest = tmp_path / "dest"
    paths = nsd.fetch_subject(1, dest, sessions=2, source=str(src), progress=False)
    labels = [L.roi_file(1, f) for f in nsd.ROI_FILES if f != "nsdgeneral"]  # this source has none: skipped
    assert set(labels) < set(nsd.fetch_list(1, 2))
    rels = [r for r in nsd.fetch_list(1, 2) if r not in labels]
    assert paths == [dest / r for r in rels]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == sorted(rels)
    for r in rels:
        assert (dest / r).read_bytes() == (src / r).read_bytes()
    assert not (dest / L.betas_file(1, 3)).exists()

    # a rerun downloads nothing: files keep their modification times
    before = {r: (dest / r).stat().st_mtime_ns for r in rels}
    nsd.fetch_subject(1, dest, sessions=2, source=str(src), progress=False)
    assert {r: (dest / r).stat().st_mtime_ns for r in rels} == before

    # an interrupted download is continued from its .part file, not restarted
    rel = L.betas_file(1, 2)
    (dest / rel).unlink()
    n = (src / rel).stat().st_size // 2
    part = dest / (rel + ".part")
    part.write_bytes(b"\0" * n)
    nsd.fetch_subject(1, dest, sessions=2, source=str(src), progress=False)
    data = (dest / rel).read_bytes()
    assert not part.exists() and len(data) == (src / rel).stat().st_size
    assert data[:n] == b"\0" * n and data[n:] == (src / rel).read_bytes()[n:]


def test_fetch_brings_the_roi_label_files_the_source_holds(tree, tmp_path):
    src, _ = tree
    full = tmp_path / "full"
    shutil.copytree(src, full)
    write_synthetic_labels(full, 1, files=["prf-visualrois", "floc-faces"], grid=nib.load(
        str(full / L.roi_file(1))).shape)
    dest = tmp_path / "dest"
    paths = nsd.fetch_subject(1, dest, sessions=1, source=str(full), progress=False)
    for name in ("prf-visualrois", "floc-faces"):
        assert dest / L.roi_file(1, name) in paths
        assert (dest / L.roi_file(1, name)).read_bytes() == (full / L.roi_file(1, name)).read_bytes()
    assert not (dest / L.roi_file(1, "streams")).exists() and dest / L.roi_file(1, "streams") not in paths


def test_fetch_takes_captions_from_the_coco_zip_when_the_source_lacks_them(tree, tmp_path):
    src, _ = tree
    bare = tmp_path / "bare"
    shutil.copytree(src, bare)
    zpath = tmp_path / "annotations_trainval2017.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for split in ("train2017", "val2017"):
            z.write(bare / L.captions_file(split), f"annotations/captions_{split}.json")
    shutil.rmtree(bare / L.ANNOTATIONS)
    dest = tmp_path / "dest"
    nsd.fetch_subject(1, dest, sessions=1, source=str(bare), coco_url=str(zpath), progress=False)
    for split in ("train2017", "val2017"):
        assert (dest / L.captions_file(split)).read_bytes() == (src / L.captions_file(split)).read_bytes()
    assert not (dest / L.ANNOTATIONS / zpath.name).exists()


def test_download_that_stops_short_keeps_the_part_and_says_so(tree, tmp_path):
    src, _ = tree
    fs = fsspec.filesystem("file")
    real = src / L.EXPDESIGN

    class Liar(type(fs)):
        def info(self, path, **kw):
            out = dict(super().info(path, **kw))
            out["size"] += 10
            return out

    with pytest.raises(OSError, match="stopped at .* of .* bytes.*resume"):
        nsd.download_file(Liar(), str(real), tmp_path / "x.mat", progress=False)
    assert (tmp_path / "x.mat.part").stat().st_size == real.stat().st_size
    assert not (tmp_path / "x.mat").exists()


def test_fetch_refuses_bad_subject_and_sessions_from_the_cli(tmp_path, capsys):
    assert cli_main(["fetch", "nsd", "--subject", "4", "--root", str(tmp_path)]) == 2
    assert "subject 4 did not complete all 40 NSD sessions" in capsys.readouterr().err
    with pytest.raises(nsd.NSDDataError, match="asked for 41"):
        nsd.fetch_subject(1, tmp_path, sessions=41)


class _RangeFile(AbstractBufferedFile):
    def _fetch_range(self, start, end):
        return self.fs.store[self.path].getvalue()[start:end]


class _RangeMemoryFS(MemoryFileSystem):
    """An in-memory filesystem whose files are read by byte ranges, like s3fs's."""

    protocol = "rangemem"

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("rangemem://"))

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kw):
        path = self._strip_protocol(path)
        if mode != "rb":
            return super()._open(path, mode, block_size, autocommit, cache_options, **kw)
        return _RangeFile(self, path, mode, block_size=block_size or 1024, cache_options=cache_options,
                          size=self.info(path)["size"])


def test_remote_root_reads_through_the_local_cache(tree, tmp_path):
    src, _ = tree
    fsspec.register_implementation("rangemem", _RangeMemoryFS, clobber=True)
    mem = fsspec.filesystem("rangemem")
    base = "/nsd-test-remote"
    for p in src.rglob("*"):
        if p.is_file():
            mem.pipe(f"{base}/{p.relative_to(src)}", p.read_bytes())
    try:
        cache = tmp_path / "cache"
        remote = nsd.NSDLayout(f"rangemem://{base}", cache_dir=cache)
        assert not remote.is_local
        a = nsd.prepare_subject(remote, 1, sessions=2, progress=False)
        b = nsd.prepare_subject(nsd.NSDLayout(src), 1, sessions=2, progress=False)
        np.testing.assert_array_equal(a.train_betas, b.train_betas)
        assert (cache / L.betas_file(1, 2)).is_file() and not (cache / L.betas_file(1, 3)).exists()
        np.testing.assert_array_equal(nsd.read_stimuli(remote, [4, 1], progress=False),
                                      nsd.read_stimuli(nsd.NSDLayout(src), [4, 1], progress=False))
        assert any((cache / ".blockcache").iterdir())  # stimuli came through the block cache
        assert not (cache / L.STIMULI).exists()
        with pytest.raises(nsd.NSDFileError, match="rangemem://"):
            nsd.read_roi(remote, 7)
    finally:
        mem.rm(base, recursive=True)


def test_s3_root_is_anonymous_and_keeps_the_bucket_layout(tmp_path):
    s3fs = pytest.importorskip("s3fs")
    layout = nsd.NSDLayout("s3://natural-scenes-dataset", cache_dir=tmp_path)  # no request is made here
    assert isinstance(layout.fs, s3fs.S3FileSystem) and layout.fs.anon is True and not layout.is_local
    rel = L.betas_file(7, 37)
    assert rel == "nsddata_betas/ppdata/subj07/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session37.nii.gz"
    assert layout.url(rel) == f"natural-scenes-dataset/{rel}"
    assert layout.display(rel) == f"s3://natural-scenes-dataset/{rel}"
    assert L.roi_file(2) == "nsddata/ppdata/subj02/func1pt8mm/roi/nsdgeneral.nii.gz"
