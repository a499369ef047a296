"""nsdlib.pipeline.regions and nsdlib.pipeline.decode: the decoder from one region's voxels.

On a small mini-NSD whose betas are the simulation's true amplitudes (``_mini_worlds.truth_world``),
so that the regions' voxels are known from the truth, and the run's own betas give the run's own
ridge pipeline (known answers for the decoder run from given betas).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _mini_worlds import fake_stage2, truth_world

from nsdlib import RunConfig, mini
from nsdlib.nsd import NSDDataError
from nsdlib.pipeline import context, decode, evaluation, regions, results, stage1, stage2

torch.set_num_threads(1)  # the test machine is shared


@pytest.fixture(scope="module")
def cfg(request, tmp_path_factory):
    root = truth_world(request, tmp_path_factory)
    context.forget()
    return RunConfig(quick=True, workdir=str(tmp_path_factory.mktemp("work")), nsd_root=str(root), device="cpu",
                     regressor="ridge")


def test_region_masks_are_the_simulation_areas(cfg):
    sd = context.get(cfg).subject()
    t = mini.truth(cfg.nsd_root, 1)
    pop, area = t.population[sd.voxel_index], t.area[sd.voxel_index]
    np.testing.assert_array_equal(regions.region_mask(cfg, "early (V1–hV4)"), pop == "early")
    np.testing.assert_array_equal(regions.region_mask(cfg, "higher (ventral, lateral, parietal)"), pop == "higher")
    np.testing.assert_array_equal(regions.region_mask(cfg, "streams:lateral"), area == "lateral")
    vox = regions.region_voxels(cfg)
    assert list(vox.index) == ["early (V1–hV4)", "higher (ventral, lateral, parietal)", "nsdgeneral"]
    assert "faces (floc)" in regions.default_regions(cfg.replace(dataset="nsd"))
    assert vox.loc["nsdgeneral", "voxels"] == sd.n_voxels == vox.attrs["n_voxels"]
    assert vox.loc["early (V1–hV4)", "voxels"] + vox.loc["higher (ventral, lateral, parietal)", "voxels"] == sd.n_voxels
    # the truth: early voxels carry image features only, higher voxels semantic features only
    assert tuple(vox.loc["early (V1–hV4)", ["image features", "semantic features", "early voxels"]]) == (1, 0, 1)
    assert tuple(regions.region_voxels(cfg, ["ventral"]).loc["ventral", ["image features", "semantic features"]]) \
        == (0, 1)
    with pytest.raises(NSDDataError, match="subject 1 has no 'floc-faces' label file"):
        regions.region_voxels(cfg, ["faces (floc)"])


def test_decode_from_the_runs_own_betas_is_the_runs_ridge_pipeline(cfg):
    sd = context.get(cfg).subject()
    own = decode.clip_from_betas(cfg, sd.train_betas, sd.test_betas)
    ref = stage2.clip_predictions(cfg, progress=False)
    for part in ("text", "vision"):
        np.testing.assert_array_equal(own[part], ref[part])
    fg = stage1.first_guesses(cfg, regressor="ridge")
    one = [1]
    np.testing.assert_array_equal(decode.stage2_from(cfg, fg, ref, indices=one, progress=False),
                                  stage2.stage2_images(cfg, fg, indices=one, progress=False))
    with pytest.raises(ValueError, match=r"one row per test image \(20\)"):
        decode.stage2_from(cfg, fg[1:], ref)
    with pytest.raises(ValueError, match=r"betas must be \(60, v\) and \(20, v\)"):
        decode.clip_from_betas(cfg, sd.train_betas[:5], sd.test_betas)


def test_evaluate_regions_scores_each_region_and_writes_its_row(cfg, monkeypatch):
    monkeypatch.setattr(stage2, "stage2_images", fake_stage2)
    monkeypatch.setattr(decode, "stage2_from", lambda cfg, first, cond, **kw: fake_stage2(cfg, first, **kw))
    res = regions.evaluate_regions(cfg, ["early (V1–hV4)", "nsdgeneral"])
    rows = res["rows"].set_index("region")
    assert list(rows.index) == ["early (V1–hV4)", "nsdgeneral"]
    assert rows.loc["early (V1–hV4)", "regressor"] == "roi: early (V1–hV4)"
    assert rows.loc["early (V1–hV4)", "voxels"] < rows.loc["nsdgeneral", "voxels"]
    # all of nsdgeneral is the run's own ridge pipeline, from its caches
    np.testing.assert_array_equal(res["images"]["nsdgeneral"]["images"],
                                  stage2.stage2_images(cfg, stage1.first_guesses(cfg, regressor="ridge")))
    assert not np.array_equal(res["images"]["early (V1–hV4)"]["images"], res["images"]["nsdgeneral"]["images"])
    assert rows["ssim"].notna().all() and (rows["n_images"] == 20).all()
    fg = res["first_guess_reports"]["nsdgeneral"]  # stage 1 alone, scored like the final images
    assert fg.n_images == 20 and fg.means["ssim"] != res["reports"]["nsdgeneral"].means["ssim"]
    _, written = results.read_results(cfg)
    assert {"roi: early (V1–hV4)", "roi: nsdgeneral"} <= set(written["regressor"])


def test_matched_first_guesses_draw_as_many_voxels_as_asked(cfg, monkeypatch):
    early = regions.region_mask(cfg, "early (V1–hV4)")
    sd = context.get(cfg).subject()
    whole = stage1.first_guesses_from_betas(cfg, sd.train_betas[:, early], sd.test_betas[:, early])["images"]
    np.testing.assert_array_equal(regions.matched_first_guesses(cfg, "early (V1–hV4)", int(early.sum())), whole)
    part = regions.matched_first_guesses(cfg, "early (V1–hV4)", 10)
    assert part.shape == whole.shape and not np.array_equal(part, whole)
    np.testing.assert_array_equal(regions.matched_first_guesses(cfg, "early (V1–hV4)", 10), part)  # seeded
    with pytest.raises(ValueError, match=f"has {int(early.sum())} voxels; asked for 100000"):
        regions.matched_first_guesses(cfg, "early (V1–hV4)", 100000)
    monkeypatch.setattr(stage2, "stage2_images", fake_stage2)
    monkeypatch.setattr(decode, "stage2_from", lambda cfg, first, cond, **kw: fake_stage2(cfg, first, **kw))
    res = regions.evaluate_regions(cfg, list(regions.CONTRAST), write=False)
    assert set(res["matched_reports"]) == set(regions.CONTRAST)
    n = min(res["images"][r]["voxels"] for r in regions.CONTRAST)
    big = max(regions.CONTRAST, key=lambda r: res["images"][r]["voxels"])
    want = evaluation.score(cfg, regions.matched_first_guesses(cfg, regions.region_voxels(cfg).loc[big, "spec"], n))
    got = res["matched_reports"][big]
    np.testing.assert_array_equal(got.per_image["ssim"], want.per_image["ssim"])  # (the quick run lacks feature nets)
