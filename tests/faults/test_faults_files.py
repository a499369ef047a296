"""Truncated and garbled files of every kind the pipeline reads: one error naming the file and a
fix that works (mini-NSD files restored by `nsdlib mini generate`), or a recomputation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _table import record
from PIL import Image

from nsdlib import mini, nsd
from nsdlib.cli import main
from nsdlib.config import RunConfig
from nsdlib.guard import CorruptFileError
from nsdlib.nsd import NSDLayout
from nsdlib.pipeline import data
from nsdlib.reconstructions import read_reconstructions
from nsdlib.store import DamagedArtifactWarning, Store
from nsdlib.vdvae import VDVAE, VDVAEConfig, load_vdvae, save_vdvae


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


DAMAGES = {"truncated": truncate, "garbage": garble}

# fault id -> (file relative to the mini-NSD root, a call that reads it)
MINI_FILES = {
    "nifti-roi": (NSDLayout.roi_file(1), lambda root: nsd.read_roi(_layout(root), 1)),
    "nifti-betas": (NSDLayout.betas_file(1, 1), lambda root: list(nsd.iter_session_betas(_layout(root), 1, 1))),
    "hdf5-stimuli": (NSDLayout.STIMULI, lambda root: nsd.read_stimuli(_layout(root), [0, 1], progress=False)),
    "mat-design": (NSDLayout.EXPDESIGN, lambda root: nsd.read_expdesign(_layout(root))),
    "json-captions": (None, lambda root: nsd.read_captions(_layout(root), [0])),
    "npz-truth": ("ground_truth/subj01/truth.npz", lambda root: mini.truth(root, 1)),
    "json-scenes": ("ground_truth/scenes.json", lambda root: mini.read_scenes(root)),
}


def _layout(root):
    return NSDLayout(root, dataset="mini")


def _captions_file(root) -> str:
    split = nsd.read_stim_info(_layout(root)).loc[0, "cocoSplit"]
    return NSDLayout.captions_file(split)


def _one_line(capsys) -> str:
    """The one line on stderr (progress bars aside, which a terminal redraws in place)."""
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "it/s]" not in ln]
    assert len(err) == 1, f"expected one line on stderr; found {len(err)}: {err[:5]}"
    return err[0]


@pytest.mark.fault(*MINI_FILES)
@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("fault", list(MINI_FILES))
def test_a_damaged_dataset_file_is_named_with_a_fix_that_works(world, fault, damage, capsys):
    rel, read = MINI_FILES[fault]
    rel = rel or _captions_file(world)
    path = world / rel
    good = path.read_bytes()
    DAMAGES[damage](path)
    with pytest.raises(CorruptFileError) as err:
        read(world)
    msg = str(err.value)
    assert str(path) in msg and "Fix:" in msg and "\n" not in msg, msg
    if fault == "nifti-betas":  # the GLM's output: `nsdlib betas` writes it again
        assert f"nsdlib betas --dataset mini --subject 1 --nsd-root {world} --param quick=true" in msg
        path.unlink()
        assert main(["betas", "--subject", "1", "--nsd-root", str(world), "--workdir", str(world.parent / "w"),
                     "--param", "quick=true"]) == 0
        read(world)
    else:  # the generated world: the command named restores the very bytes
        assert f"nsdlib mini generate --root {world} --size small --seed 0" in msg
        assert main(["mini", "generate", "--root", str(world)]) == 0
        assert "restored 1 damaged or missing file(s)" in capsys.readouterr().out
        assert path.read_bytes() == good
        read(world)
    record(fault, msg)


@pytest.mark.fault("nifti-timeseries")
@pytest.mark.fault("mini-missing-file")
@pytest.mark.parametrize("damage", [*DAMAGES, "deleted"])
def test_a_damaged_time_series_gives_one_line_and_the_command_restores_it(world, tmp_path, damage, capsys):
    path = world / NSDLayout.timeseries_file(1, 1, 1)
    good = path.read_bytes()
    path.unlink() if damage == "deleted" else DAMAGES[damage](path)
    argv = ["betas", "--subject", "1", "--nsd-root", str(world), "--workdir", str(tmp_path / "w"), "--param",
            "quick=true"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert str(path) in line and f"nsdlib mini generate --root {world} --size small --seed 0" in line, line
    assert main(["mini", "generate", "--root", str(world)]) == 0  # the command the line gives
    assert path.read_bytes() == good
    assert main(argv) == 0
    record("mini-missing-file" if damage == "deleted" else "nifti-timeseries", line)


@pytest.mark.fault("nsd-missing-file")
def test_a_missing_nsd_file_names_the_fetch_command(tmp_path):
    cfg = RunConfig(dataset="nsd", subject=1, nsd_root=str(tmp_path / "nsd"), workdir=tmp_path / "w")
    (tmp_path / "nsd").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        data.subject_data(cfg, progress=False)
    assert "nsd_expdesign.mat" in str(err.value) and f"nsdlib fetch nsd --subject 1 --root {tmp_path / 'nsd'}" in \
        str(err.value), err.value
    record("nsd-missing-file", str(err.value))


@pytest.mark.fault("npz-cache")
@pytest.mark.fault("json-cache")
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, damage):
    store = Store(tmp_path)
    arrays = store.arrays("a", {"k": 1}, lambda: {"x": np.arange(50.0)})
    doc = store.json("j", {"k": 1}, lambda: {"y": [1, 2, 3]})
    for name, suffix in (("a", ".npz"), ("j", ".json")):
        DAMAGES[damage](store.path(name, {"k": 1}, suffix))
    with pytest.warns(DamagedArtifactWarning, match=r"a/.*\.npz is damaged.*computing it again"):
        again = store.arrays("a", {"k": 1}, lambda: {"x": np.arange(50.0)})
    with pytest.warns(DamagedArtifactWarning, match=r"j/.*\.json is damaged"):
        assert store.json("j", {"k": 1}, lambda: {"y": [1, 2, 3]}) == doc
    np.testing.assert_array_equal(again["x"], arrays["x"])
    assert [e["event"] for e in store.events()][-4:] == ["damaged", "computed", "damaged", "computed"]
    assert store.arrays("a", {"k": 1}, lambda: pytest.fail("recomputed a sound entry"))["x"].shape == (50,)
    record("npz-cache")
    record("json-cache")


@pytest.mark.fault("torch-checkpoint")
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_named(tmp_path, damage):
    cfg = VDVAEConfig(image_size=8, width=16, zdim=2, bottleneck_multiple=0.25, enc_blocks="8x1,8d2,4x1,4d4,1x1",
                      dec_blocks="1x2,4m1,4x1,8m4,8x2", no_bias_above=8, n_mixtures=3)
    path = save_vdvae(VDVAE(cfg), tmp_path / "vdvae.pt")
    DAMAGES[damage](path)
    with pytest.raises(CorruptFileError, match=rf"{path} is damaged: expected a torch checkpoint.*Fix: replace it"):
        load_vdvae(path)
    record("torch-checkpoint")


@pytest.mark.fault("image-folder")
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_image_in_a_folder_of_reconstructions_is_named(tmp_path, damage):
    folder = tmp_path / "recons"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"nsd{i + 1:05d}.png")
    DAMAGES[damage](folder / "nsd00002.png")
    with pytest.raises(CorruptFileError, match=rf"{folder / 'nsd00002.png'} is damaged: expected an image file"):
        read_reconstructions(folder)
    record("image-folder")


@pytest.mark.fault("batch-json")
def test_a_garbled_batch_state_gives_one_line(tmp_path, capsys):
    state = tmp_path / "runs" / "mini" / "batch.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"batch_id": "b"})[:7])
    assert main(["batch", "--status", "--runs", str(tmp_path / "runs")]) == 2
    line = _one_line(capsys)
    assert str(state) in line and "nsdlib batch --subjects" in line, line
    record("batch-json", line)
