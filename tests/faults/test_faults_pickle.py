"""A pickle payload offered to every loader of nsdlib: refused, and its marker file never appears."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from _table import record

import nsdlib
from nsdlib import clip, diffusion, mini
from nsdlib.features import load_swav_state_dict
from nsdlib.mini.scene import load_scene_networks
from nsdlib.reconstructions import read_reconstructions
from nsdlib.regressors import NeuralRegressor
from nsdlib.ridge import Ridge
from nsdlib.store import load_arrays
from nsdlib.vdvae import load_vdvae

MINIMODELS = Path(nsdlib.__file__).parent / "data" / "minimodels"


class _Payload:
    """Unpickling this object creates ``marker``: proof that a loader executed a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pt(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "config": _Payload(marker)}, path)
    return path


def _npz(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.array([_Payload(marker)], dtype=object))
    return path


def _swap_for_bins(folder: Path, marker: Path) -> None:
    """Replace every safetensors file of a model folder by a pickle ``.bin`` payload."""
    for st in folder.rglob("*.safetensors"):
        name = "pytorch_model.bin" if st.name == "model.safetensors" else "diffusion_pytorch_model.bin"
        _pt(st.with_name(name), marker)
        st.unlink()


def _world_truth(tmp, marker):
    root = tmp / "world"
    (root / "ground_truth" / "subj01").mkdir(parents=True)
    (root / mini.MANIFEST).write_text(json.dumps({"seed": 0, "size": "small"}))
    (root / "ground_truth" / "subj01" / "settings.json").write_text("{}")
    _npz(root / "ground_truth" / "subj01" / "truth.npz", marker)
    return lambda: mini.truth(root, 1)


def _clip(tmp, marker):
    folder = tmp / "clip"
    shutil.copytree(MINIMODELS / "clip", folder)
    _swap_for_bins(folder, marker)
    return lambda: clip.ClipEmbedder.from_pretrained(folder)


def _diffusion(tmp, marker):
    folder = tmp / "diffusion"
    shutil.copytree(MINIMODELS / "diffusion", folder)
    _swap_for_bins(folder, marker)
    return lambda: diffusion.DualGuidedDiffusion.from_pretrained(folder)


def _scene(tmp, marker):
    folder = tmp / "models"
    shutil.copytree(MINIMODELS / "scene", folder / "scene")
    for st in (folder / "scene").glob("*.safetensors"):
        _pt(st, marker)  # a pickle under the safetensors name
    return lambda: load_scene_networks(folder / "scene")


def _regressor(tmp, marker):
    _pt(tmp / "ckpt" / "checkpoint.pt", marker)
    X, Y = np.ones((20, 4), np.float32), np.ones((20, 2), np.float32)
    return lambda: NeuralRegressor("gru", max_epochs=1, checkpoint_dir=tmp / "ckpt", progress=False).fit(X, Y)


LOADERS = {
    "store .npz": lambda tmp, m: partial(load_arrays, _npz(tmp / "a.npz", m)),
    "mini truth .npz": _world_truth,
    "VDVAE .pt": lambda tmp, m: partial(load_vdvae, _pt(tmp / "vdvae.pt", m)),
    "SwAV .pth": lambda tmp, m: partial(load_swav_state_dict, _pt(tmp / "swav.pth", m)),
    "regressor checkpoint .pt": _regressor,
    "reconstructions .pt": lambda tmp, m: partial(read_reconstructions, _pt(tmp / "r.pt", m), ids=[0]),
    "reconstructions .npy": lambda tmp, m: partial(read_reconstructions, _npy(tmp / "r.npy", m), ids=[0]),
    "Ridge safetensors name": lambda tmp, m: partial(Ridge.load, _pt(tmp / "ridge.safetensors", m)),
    "CLIP pytorch_model.bin": _clip,
    "diffusers .bin": _diffusion,
    "scene networks": _scene,
}


def _npy(path: Path, marker: Path) -> Path:
    np.save(path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return path


@pytest.mark.fault("pickle-payload")
@pytest.mark.parametrize("loader", LOADERS)
def test_no_loader_executes_a_pickle(tmp_path, loader):
    marker = tmp_path / "PWNED"
    call = LOADERS[loader](tmp_path, marker)
    with pytest.raises(Exception) as err:  # noqa: PT011 (each loader refuses in its own words)
        call()
    assert not marker.exists(), f"{loader} executed a pickle payload ({err.value})"
    assert not isinstance(err.value, AssertionError)
    record("pickle-payload")
