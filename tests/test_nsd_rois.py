"""nsdlib.nsd.rois: NSD's ROI label files, their codes, and voxel selection by region, on a synthetic
NSD tree in the real layout and on mini-NSD (whose truth says which voxel is in which area)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from _synthetic_nsd import write_synthetic_labels, write_synthetic_nsd

from nsdlib import mini
from nsdlib.nsd import (
    ROI_FILES,
    ROI_SETS,
    NSDDataError,
    NSDLayout,
    parse_roi,
    read_roi,
    roi_files_present,
    select_voxels,
)

GRID = (6, 5, 4)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "nsd"
    write_synthetic_nsd(root, grid=GRID, with_stimuli=False)
    layout = NSDLayout(root, dataset="nsd")
    general = read_roi(layout, 1)
    return root, layout, general, np.argwhere(general > 0)


def test_parse_roi_names_codes_and_whole_files():
    assert parse_roi("streams:ventral,lateral") == ("streams", (5, 6))
    assert parse_roi("floc-faces:2, FFA-2,ffa-1") == ("floc-faces", (2, 3))  # by code or name, any case, once each
    assert parse_roi("prf-visualrois") == ("prf-visualrois", tuple(range(1, 8)))
    assert parse_roi(ROI_SETS["early (V1–hV4)"]) == ("prf-visualrois", tuple(range(1, 8)))
    assert parse_roi(ROI_SETS["higher (ventral, lateral, parietal)"]) == ("streams", (5, 6, 7))


@pytest.mark.parametrize("spec, message", [
    ("floc-cars", "unknown ROI label file 'floc-cars'.*NSD's label files are nsdgeneral, prf-visualrois"),
    ("streams:FFA-1", r"streams has no label 'FFA-1' .*early \(1\), midventral \(2\)"),
    ("prf-visualrois:8", "prf-visualrois has no label '8'"),
    ("", "an ROI is named"),
])
def test_parse_roi_rejects_what_nsd_does_not_define(spec, message):
    with pytest.raises(NSDDataError, match=message):
        parse_roi(spec)


def test_select_voxels_reads_nsd_label_files_with_nsd_codes(tree):
    root, layout, general, ijk = tree
    vols = write_synthetic_labels(root, 1, grid=GRID)
    assert set(roi_files_present(layout, 1)) == set(ROI_FILES)
    for spec in ("floc-faces:FFA-1,FFA-2", "streams:ventral", "prf-visualrois", "floc-places:PPA"):
        file, codes = parse_roi(spec)
        mask = select_voxels(layout, 1, spec, ijk, GRID)
        want = np.isin(vols[file][ijk[:, 0], ijk[:, 1], ijk[:, 2]], codes)  # known answer: the volume's codes
        np.testing.assert_array_equal(mask, want)
        assert 0 < mask.sum() < len(ijk)
    np.testing.assert_array_equal(select_voxels(layout, 1, "nsdgeneral", ijk, GRID), np.ones(len(ijk), bool))


def test_select_voxels_names_a_file_the_subject_lacks(tree):
    root, layout, _, ijk = tree
    write_synthetic_labels(root, 1, files=["prf-visualrois", "streams"], grid=GRID)
    with pytest.raises(NSDDataError, match=r"subject 1 has no 'floc-faces' label file \(expected .*floc-faces\.nii\.gz"
                                           r"\).*holds nsdgeneral, prf-visualrois, streams"):
        select_voxels(layout, 1, "floc-faces:FFA-1", ijk, GRID)


def test_select_voxels_names_a_label_no_voxel_carries_and_a_grid_mismatch(tree):
    root, layout, _, ijk = tree
    vol = write_synthetic_labels(root, 1, files=["streams"], grid=GRID)["streams"]
    vol[vol == 2] = 0  # no voxel in the midventral stream
    nib.save(nib.Nifti1Image(vol, np.eye(4)), root / layout.roi_file(1, "streams"))
    with pytest.raises(NSDDataError, match="no voxel of subject 1's betas carries 'streams:midventral'.*present there "
                                           r"are early \(1\), midlateral \(3\)"):
        select_voxels(layout, 1, "streams:midventral", ijk, GRID)
    with pytest.raises(NSDDataError, match=r"has grid \(6, 5, 4\); the betas have \(6, 5, 5\)"):
        select_voxels(layout, 1, "streams", ijk, (6, 5, 5))


def test_select_voxels_on_mini_nsd_matches_the_simulation_truth(mini_small_root):
    layout = NSDLayout(mini_small_root, dataset="mini")
    t = mini.truth(mini_small_root, 1)
    ijk, grid = t.voxel_ijk, tuple(t.settings["volume_shape"])
    assert roi_files_present(layout, 1) == ["nsdgeneral", "prf-visualrois", "streams"]
    early = select_voxels(layout, 1, ROI_SETS["early (V1–hV4)"], ijk, grid)
    np.testing.assert_array_equal(early, t.population == "early")
    for area in ("ventral", "lateral", "parietal"):
        np.testing.assert_array_equal(select_voxels(layout, 1, f"streams:{area}", ijk, grid), t.area == area)
    np.testing.assert_array_equal(select_voxels(layout, 1, "prf-visualrois:hV4", ijk, grid), t.area == "hV4")
    np.testing.assert_array_equal(select_voxels(layout, 1, "streams:early", ijk, grid), early)
    # mini-NSD has no category-selective regions and no mid-streams: each a clear error
    with pytest.raises(NSDDataError, match="subject 1 has no 'floc-words' label file .* holds nsdgeneral, "
                                           "prf-visualrois, streams"):
        select_voxels(layout, 1, "floc-words", ijk, grid)
    with pytest.raises(NSDDataError, match=r"carries 'streams:midventral'.*early \(1\), ventral \(5\), lateral \(6\), "
                                           r"parietal \(7\)"):
        select_voxels(layout, 1, "streams:midventral", ijk, grid)


def test_mini_nsd_writes_nsd_codes():
    """mini-NSD's own label tables are NSD's (one spelling of the codes)."""
    assert mini.PRF_LABELS == ROI_FILES["prf-visualrois"]
    assert mini.STREAM_LABELS == ROI_FILES["streams"]
