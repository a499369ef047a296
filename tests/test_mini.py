"""Tests of nsdlib.mini: mini-NSD's files read by the real readers, its conventions, its truth.

Every file is opened with the library a user would use on the real NSD (scipy.io, h5py,
nibabel, csv/json), and the time series are checked to carry the simulated amplitudes by a
plain least-squares GLM with the true HRFs.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from nsdlib import mini, names
from nsdlib.cli import main
from nsdlib.hrf import hrf_library
from nsdlib.mini import writer
from nsdlib.nsd import NSDLayout

SPEC = mini.spec_for("small")
EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIMINFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
CAPTIONS = "nsddata_stimuli/stimuli/nsd/annotations/captions_{}.json"


@pytest.fixture(scope="module")
def root(mini_small_root):
    return Path(mini_small_root)


@pytest.fixture(scope="module")
def mat(root):
    return scipy.io.loadmat(root / EXPDESIGN)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- spec
def test_small_spec_counts():
    assert SPEC.n_trials == 240 and SPEC.n_images == 20 + 4 * 60 and SPEC.trials_per_run == 40
    assert SPEC.run_volumes == 4 + 12 + 4 * (40 + 4)
    d = mini.spec_for("default")
    assert (d.n_shared, d.n_train, d.n_trials, d.n_sessions, d.n_runs) == (100, 1000, 3300, 10, 6)
    assert [d.voxels(s) for s in names.SUBJECTS] == [1572, 1428, 1304, 1268]
    assert d.noise(7) == max(d.noise(s) for s in names.SUBJECTS)
    with pytest.raises(ValueError, match="size must be 'default' or 'small'; found 'huge'"):
        mini.spec_for("huge")


# ---------------------------------------------------------------- expdesign (.mat)
def test_expdesign_shapes_and_one_based_indices(mat):
    mo, sim, shared = mat["masterordering"], mat["subjectim"], mat["sharedix"]
    assert mo.shape == (1, SPEC.n_trials) and sim.shape == (8, SPEC.n_per_subject)
    assert shared.shape == (1, SPEC.n_shared)
    assert mo.min() == 1 and mo.max() == SPEC.n_per_subject  # 1-based into a subject's image list
    assert sim.min() >= 1 and sim.max() <= SPEC.n_images  # 1-based 73k-style ids
    assert shared.min() >= 1 and (np.diff(shared.ravel()) > 0).all()
    counts = np.bincount(mo.ravel())[1:]
    assert (counts == SPEC.n_repeats).all()  # every image shown three times
    assert (np.diff(mo.ravel()) != 0).all()  # never on two consecutive trials
    for row in sim:
        assert np.unique(row).size == row.size


def test_shared_rule_marks_test_trials(mat):
    mo = mat["masterordering"].ravel()
    sim, shared = mat["subjectim"], mat["sharedix"].ravel()
    for s in names.SUBJECTS:
        np.testing.assert_array_equal(sim[s - 1, : SPEC.n_shared], shared)
        ids = sim[s - 1, mo - 1]
        np.testing.assert_array_equal(mo <= SPEC.n_shared, np.isin(ids, shared))
    train = [set(mat["subjectim"][s - 1, SPEC.n_shared:]) for s in names.SUBJECTS]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not train[i] & train[j], "training images differ between subjects"


# ------------------------------------------------------------- stimuli, captions
def test_imgbrick_and_scenes(root):
    scenes = json.loads((root / "ground_truth/scenes.json").read_text())
    with h5py.File(root / STIMULI, "r") as f:
        brick = f["imgBrick"]
        assert brick.shape == (SPEC.n_images, 128, 128, 3) and brick.dtype == np.uint8
        assert brick.chunks == (1, 128, 128, 3)
        for i in (0, 7, SPEC.n_images - 1):
            np.testing.assert_array_equal(brick[i], mini.render_scene(mini.Scene.from_dict(scenes[i])))
        assert brick[:16].std(axis=(1, 2, 3)).min() > 5  # not blank


def test_render_known_answer():
    obj = mini.SceneObject("circle", "red", "large", "centre", 0.5, 0.5, 0.2, 0.0)
    scene = mini.Scene("plain", "grey", 0.0, 5.0, 0.0, 0.0, (obj,))
    img = mini.render_scene(scene, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    np.testing.assert_allclose(img[32, 32], mini.COLOURS["red"], atol=8)
    np.testing.assert_allclose(img[2, 32], mini.BACKGROUNDS["grey"], atol=8)
    assert (img[:, :, 0].astype(int) - img[:, :, 1] > 100).mean() == pytest.approx(np.pi * 0.2**2, abs=0.02)


def test_captions_name_what_the_scene_shows():
    rng = np.random.default_rng(3)
    for _ in range(50):
        scene = mini.draw_scene(rng)
        caps = mini.scene_captions(scene, rng)
        assert len(caps) == 5 and len(set(caps)) == 5
        full = caps[0]
        for o in scene.objects:
            assert o.colour in full and any(w in full for w in mini.SHAPES[o.shape])
            assert any(p in full for p in mini.POSITIONS[o.position][1])
        assert scene.background in full and any(w in full for w in mini.TEXTURES[scene.texture])
        n = len(scene.objects)
        assert caps[1].startswith({1: "A single object", 2: "Two objects", 3: "Three objects"}[n])
        feats = mini.semantic_features(scene)
        assert feats[mini.SEMANTIC_FEATURES.index(f"count:{n}")] == 1


def test_stim_info_and_coco_captions_link(root, mat):
    with open(root / STIMINFO, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == SPEC.n_images
    assert [int(r["nsdId"]) for r in rows] == list(range(SPEC.n_images))
    shared0 = set((mat["sharedix"].ravel() - 1).tolist())
    assert {int(r["nsdId"]) for r in rows if r["shared1000"] == "True"} == shared0
    mo = mat["masterordering"].ravel()
    for s in (1, 7):
        ids0 = mat["subjectim"][s - 1] - 1
        assert {int(r["nsdId"]) for r in rows if r[f"subject{s}"] == "1"} == set(ids0.tolist())
        r = rows[int(ids0[mo[5] - 1])]  # trial 6 (1-based) shows this image
        assert 6 in {int(r[f"subject{s}_rep{k}"]) for k in range(3)}
    caps = {}
    for split in ("train2017", "val2017"):
        d = json.loads((root / CAPTIONS.format(split)).read_text())
        assert {"images", "annotations"} <= set(d)
        for a in d["annotations"]:
            caps.setdefault((split, a["image_id"]), []).append(a["caption"])
    assert len({int(r["cocoId"]) for r in rows}) == SPEC.n_images
    for r in rows:
        assert len(caps[(r["cocoSplit"], int(r["cocoId"]))]) == 5


# --------------------------------------------------------- one layout, two users
def _nsd_files_of(spec) -> set[str]:
    """Every NSD file mini-NSD should hold, named by NSDLayout (the reader's one spelling)."""
    files = set(NSDLayout.experiment_files())
    for s in names.SUBJECTS:
        files |= {NSDLayout.roi_file(s, name) for name in mini.ROI_VOLUMES}
        for ses in range(1, spec.n_sessions + 1):
            for run in range(1, spec.n_runs + 1):
                files |= {NSDLayout.timeseries_file(s, ses, run), NSDLayout.design_file(s, ses, run)}
    return files


def test_writer_and_nsd_layout_agree_on_every_path(root):
    """Every file NSDLayout names for mini-NSD exists, and every file mini wrote is one NSDLayout names.

    Besides NSD's tree, mini-NSD writes only its manifest and its ground truth.
    """
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    written = {w for w in written if not w.startswith("nsddata_betas/")}  # the GLM's output, if a test wrote it
    own = {w for w in written if w == mini.MANIFEST or w.startswith(mini.GROUND_TRUTH + "/")}
    expected = _nsd_files_of(SPEC)
    assert sorted(expected - written) == [], "files NSDLayout names that mini did not write"
    assert sorted(written - own - expected) == [], "files mini wrote that NSDLayout does not name"
    assert {mini.truth_dir(s) + "/truth.npz" for s in names.SUBJECTS} <= own
    # the readers find everything through the same names
    layout = NSDLayout(root, dataset="mini")
    assert all(layout.exists(rel) for rel in expected)
    # and NSDLayout's names are NSD's real paths (spelled here independently)
    assert {EXPDESIGN, STIMINFO, STIMULI, CAPTIONS.format("train2017"), CAPTIONS.format("val2017")} <= written
    assert "nsddata_timeseries/ppdata/subj05/func1pt8mm/design/design_session02_run03.tsv" in written
    assert "nsddata/ppdata/subj07/func1pt8mm/roi/prf-visualrois.nii.gz" in written


def _code_strings(path: Path) -> list[str]:
    """The string literals of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docs.add(id(body[0].value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_mini_spells_no_nsd_path():
    """mini's code holds no piece of a path of NSD's tree: every one comes from NSDLayout."""
    fragments = ("nsddata", "func1pt8mm", "ppdata/", "nsd_expdesign", "nsd_stim", "annotations/", "captions_",
                 "timeseries_", "timeseries/", "design_", ".nii", ".tsv", ".mat", ".hdf5")
    for f in sorted(Path(writer.__file__).parent.glob("*.py")):
        for text in _code_strings(f):
            bad = [x for x in fragments if x in text]
            assert not bad, f"{f.name} spells {bad} in {text!r}; ask nsd.NSDLayout for the path"


# ------------------------------------------------------------------ brains, runs
@pytest.mark.parametrize("subject", names.SUBJECTS)
def test_rois(root, subject):
    shape = SPEC.volume_shape(subject)
    gen = nib.load(root / NSDLayout.roi_file(subject)).get_fdata()
    assert gen.shape == shape and set(np.unique(gen)) == {-1, 0, 1}
    assert (gen == 1).sum() == SPEC.voxels(subject)
    prf = nib.load(root / NSDLayout.roi_file(subject, "prf-visualrois")).get_fdata()
    streams = nib.load(root / NSDLayout.roi_file(subject, "streams")).get_fdata()
    assert ((prf > 0) <= (gen == 1)).all() and set(np.unique(prf[prf > 0])) == set(range(1, 8))
    np.testing.assert_array_equal(streams[gen == 1] == 1, prf[gen == 1] > 0)  # early = V1..hV4
    assert set(np.unique(streams[gen == 1])) == {1, 5, 6, 7}
    np.testing.assert_array_equal(prf == -1, gen == -1)


def test_timeseries_and_design_files(root, mat):
    mo = mat["masterordering"].ravel()
    t = mini.truth(root, 2)
    shape = SPEC.volume_shape(2)
    k = 0
    for ses in range(1, SPEC.n_sessions + 1):
        for run in range(1, SPEC.n_runs + 1):
            img = nib.load(root / NSDLayout.timeseries_file(2, ses, run))
            assert img.shape == (*shape, SPEC.run_volumes) and img.get_data_dtype() == np.int16
            assert img.header.get_zooms()[3] == 1.0
            design = np.loadtxt(root / NSDLayout.design_file(2, ses, run), dtype=int)
            assert design.shape == (SPEC.run_volumes,)
            onsets = np.flatnonzero(design)
            assert onsets.size == SPEC.trials_per_run and np.diff(onsets).min() >= 4
            np.testing.assert_array_equal(design[onsets], mo[k: k + onsets.size])  # 1-based image index
            np.testing.assert_array_equal(onsets, t.trial_onset_volume[k: k + onsets.size])
            k += onsets.size
    assert k == SPEC.n_trials
    data = np.asarray(img.dataobj)
    gen = nib.load(root / NSDLayout.roi_file(2)).get_fdata()
    assert 700 < data[gen >= 0].mean() < 1300 and data[gen == -1].mean() < 100  # brain vs background


def test_truth_is_consistent(root, mat):
    t = mini.truth(root, 1)
    n = SPEC.voxels(1)
    assert t.amplitudes.shape == (SPEC.n_trials, n) and t.amplitudes.dtype == np.float32
    assert t.image_response.shape == (SPEC.n_per_subject, n) and t.voxel_ijk.shape == (n, 3)
    gen = nib.load(root / NSDLayout.roi_file(1)).get_fdata()
    np.testing.assert_array_equal(t.voxel_ijk, np.argwhere(gen == 1))
    mo = mat["masterordering"].ravel()
    np.testing.assert_array_equal(t.trial_image_index, mo)
    np.testing.assert_array_equal(t.trial_nsd_id, mat["subjectim"][0, mo - 1] - 1)
    np.testing.assert_array_equal(t.image_nsd_id, mat["subjectim"][0] - 1)
    resid = t.amplitudes - t.image_response[mo - 1]  # trial-to-trial variability
    np.testing.assert_allclose(resid.std(0), t.trial_sd, rtol=0.3)
    assert t.hrf_index.min() >= 0 and t.hrf_index.max() < hrf_library().shape[1]
    early = t.population == "early"
    assert 0.4 < early.mean() < 0.75 and np.isfinite(t.rf_x[early]).all() and np.isnan(t.rf_x[~early]).all()
    assert set(np.unique(t.area)) == {"V1", "V2", "V3", "hV4", "ventral", "lateral", "parietal"}
    assert t.settings["volume_shape"] == list(SPEC.volume_shape(1)) and t.settings["subject"] == 1
    # retinotopy: each hemisphere sees the opposite half of the image
    centre = (SPEC.volume_shape(1)[0] - 1) / 2
    left = t.voxel_ijk[:, 0] < centre
    assert np.nanmean(t.rf_x[early & left]) > 0.5 > np.nanmean(t.rf_x[early & ~left])
    # V1's receptive fields are smaller than hV4's
    assert np.median(t.rf_sigma[t.area == "V1"]) < np.median(t.rf_sigma[t.area == "hV4"])


def test_noise_grows_to_subject_7(root):
    sd = {s: float(np.median(mini.truth(root, s).thermal_sd)) for s in names.SUBJECTS}
    assert sd[1] < sd[2] < sd[5] < sd[7]


def _plain_glm(root, subject: int, t: mini.Truth) -> np.ndarray:
    """Least squares per run: one regressor per trial with each voxel's true HRF, plus drift."""
    lib = hrf_library(tr=1.0, stim_dur=3.0)
    roi = nib.load(root / NSDLayout.roi_file(subject)).get_fdata() == 1
    est = np.zeros_like(t.amplitudes, dtype=float)
    k = 0
    for ses in range(1, SPEC.n_sessions + 1):
        for run in range(1, SPEC.n_runs + 1):
            y = np.asarray(nib.load(root / NSDLayout.timeseries_file(subject, ses, run)).dataobj)[roi].astype(float).T
            y = 100 * (y / y.mean(0) - 1)  # percent signal change
            onsets = np.flatnonzero(np.loadtxt(root / NSDLayout.design_file(subject, ses, run), dtype=int))
            n_t = y.shape[0]
            x = np.linspace(-1, 1, n_t)
            drift = np.stack([np.ones(n_t), x, x**2], 1)
            for h in np.unique(t.hrf_index):
                design = np.zeros((n_t, onsets.size))
                for j, o in enumerate(onsets):
                    m = min(lib.shape[0], n_t - o)
                    design[o: o + m, j] = lib[:m, h]
                v = t.hrf_index == h
                beta = np.linalg.lstsq(np.c_[design, drift], y[:, v], rcond=None)[0]
                est[k: k + onsets.size, v] = beta[: onsets.size]
            k += onsets.size
    return est


def test_plain_glm_with_true_hrfs_recovers_amplitudes(root):
    t = mini.truth(root, 1)
    est = _plain_glm(root, 1, t)
    high = t.gain >= np.quantile(t.gain, 0.75)
    r = np.array([np.corrcoef(est[:, v], t.amplitudes[:, v])[0, 1] for v in np.flatnonzero(high)])
    assert np.median(r) > 0.9
    # the estimates are in percent signal change, on the truth's scale
    assert np.median(est[:, high].std(0) / t.amplitudes[:, high].std(0)) == pytest.approx(1.0, abs=0.15)
    # control: the same estimates against the truth of shuffled trials carry nothing
    perm = np.random.default_rng(0).permutation(SPEC.n_trials)
    r0 = np.array([np.corrcoef(est[:, v], t.amplitudes[perm, v])[0, 1] for v in np.flatnonzero(high)])
    assert np.median(r0) < 0.3


# ------------------------------------------------------ determinism and the root
def test_same_seed_same_bytes_other_seed_refused_or_replaced(root, tmp_path):
    other = tmp_path / "mini-nsd"
    assert mini.generate(other, seed=0, size="small", progress=False) == other.absolute()
    assert _hashes(other) == _hashes(root)  # byte-identical files, arrays included
    stamp = (other / "mini_nsd.json").stat().st_mtime_ns
    mini.generate(other, seed=0, size="small", progress=False)  # same seed and size: reused
    assert (other / "mini_nsd.json").stat().st_mtime_ns == stamp
    with pytest.raises(mini.MiniRootError, match=r"seed=0, size='small'.*asked for seed=1, size='small'"):
        mini.generate(other, seed=1, size="small", progress=False)
    assert _hashes(other) == _hashes(root)  # untouched after refusing
    mini.generate(other, seed=1, size="small", overwrite=True, progress=False)
    assert mini.read_manifest(other)["seed"] == 1
    a0, a1 = mini.truth(root, 1).amplitudes, mini.truth(other, 1).amplitudes
    assert a0.shape == a1.shape and not np.array_equal(a0, a1)
    with h5py.File(root / STIMULI) as f0, h5py.File(other / STIMULI) as f1:
        assert not np.array_equal(f0["imgBrick"][0], f1["imgBrick"][0])
    # no temporary folders left (the lock beside the root stays, empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mini-nsd.lock", "mini-nsd"]


def test_a_world_made_with_another_hrf_library_is_not_reused(root, monkeypatch):
    monkeypatch.setattr(writer, "_hrf_digest", lambda: "0" * 16)
    with pytest.raises(mini.MiniRootError, match="HRF library 0000000000000000"):
        mini.generate(root, seed=0, size="small", progress=False)


def test_refuses_a_folder_that_is_not_mini_nsd(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(mini.MiniRootError, match="not a mini-NSD root"):
            mini.generate(target, size="small", overwrite=overwrite, progress=False)
    assert (target / "notes.txt").read_text() == "mine"


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    features = mini.early_features

    def boom(img):  # fail while the stimulus file is half written
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return features(img)

    monkeypatch.setattr(writer, "early_features", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        mini.generate(tmp_path / "mini-nsd", size="small", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".mini-nsd.lock"]  # the empty lock only: no partial world


def test_bad_input(root, tmp_path):
    with pytest.raises(ValueError, match="subject 3 did not complete all 40 NSD sessions; use 1, 2, 5 or 7"):
        mini.truth(root, 3)
    with pytest.raises(FileNotFoundError, match="not a mini-NSD root"):
        mini.truth(tmp_path, 1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        mini.generate(tmp_path / "x", seed=-1, size="small")
    with pytest.raises(ValueError, match="size must be"):
        mini.generate(tmp_path / "x", size="tiny")


def test_cli_generate_reuses(root, capsys):
    assert main(["mini", "generate", "--root", str(root), "--size", "small"]) == 0
    assert "mini-NSD written to" in capsys.readouterr().out
    assert main(["mini", "generate", "--root", str(root), "--size", "small", "--seed", "3"]) == 2
    assert "asked for seed=3" in capsys.readouterr().err


def test_main_object_is_the_largest_first_of_equals():
    small = mini.SceneObject("circle", "red", "small", "left", 0.2, 0.5, 0.08, 0.0)
    big = mini.SceneObject("star", "blue", "large", "right", 0.8, 0.5, 0.19, 0.0)
    twin = dataclasses_replace(big, colour="green")
    scene = mini.Scene("plain", "grey", 0.0, 5.0, 0.0, 0.0, (small, big, twin))
    assert mini.main_object(scene) is big
    assert mini.main_object(dataclasses_replace(scene, objects=(small,))) is small
