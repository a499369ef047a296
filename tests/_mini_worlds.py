"""mini-NSD worlds with perfect betas, for tests that need a subject's data without the GLM, and a
stand-in for stage 2 (:func:`fake_stage2`) where a test is about what calls it.

:func:`truth_world` copies the session's small mini-NSD (``mini_small_root``, or a new one
when that fixture is absent or has another seed) and writes subject 1's betas from the
simulation's true amplitudes (:func:`write_truth_betas`), so reading the subject is fast and
its betas have a known answer. Not library code.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from nsdlib import mini, nsd
from nsdlib.pipeline import dataset, stage1

__all__ = ["fake_stage2", "truth_world", "write_truth_betas"]


def write_truth_betas(root, subject: int) -> None:
    """Betas files in NSD's format holding the simulation's true amplitudes (a perfect GLM)."""
    t = mini.truth(root, subject)
    shape = tuple(t.settings["volume_shape"])
    ijk = t.voxel_ijk
    for s in np.unique(t.trial_session):
        sel = t.trial_session == s
        vol = np.zeros((*shape, int(sel.sum())), np.int16)
        vol[ijk[:, 0], ijk[:, 1], ijk[:, 2], :] = np.rint(t.amplitudes[sel] * 300).astype(np.int16).T
        path = root / nsd.NSDLayout.betas_file(subject, int(s))
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, np.diag([1.8, 1.8, 1.8, 1])), path)


def truth_world(request, tmp_path_factory):
    """A private copy of the small mini-NSD world (seed 0) with truth betas for subject 1."""
    try:
        src = request.getfixturevalue("mini_small_root")
        if (mini.read_manifest(src) or {}).get("seed") != dataset.MINI_WORLD_SEED:
            raise LookupError
    except (pytest.FixtureLookupError, LookupError):
        src = mini.generate(tmp_path_factory.mktemp("gen") / "mini-nsd", seed=dataset.MINI_WORLD_SEED,
                            size="small", progress=False)
    root = tmp_path_factory.mktemp("world") / "mini-nsd"
    shutil.copytree(src, root)
    write_truth_betas(root, 1)
    return root


def fake_stage2(cfg, first_guesses=None, *args, indices=None, embeddings="predicted", **kw):
    """Stage 2's stand-in for tests of what calls it (``stage2.stage2_images``' signature): the first guess,
    twice the size, inverted when guided by true embeddings, so that rows differ where their inputs do."""
    fg = stage1.first_guesses(cfg) if first_guesses is None else np.asarray(first_guesses)
    out = np.repeat(np.repeat(fg, 2, axis=1), 2, axis=2)
    out = 255 - out if embeddings == "true" else out
    return out if indices is None else out[np.asarray(indices)]
