"""nsdlib.pipeline.results: the results file's one writer and one reader."""

import json
import types

import numpy as np
import pandas as pd
import pytest

from nsdlib import RunConfig
from nsdlib.names import IMAGE_METRICS
from nsdlib.pipeline.results import (
    RESULT_COLUMNS,
    ResultsFormatError,
    read_results,
    result_row,
    results_path,
    write_results,
)
from nsdlib.report import cross_subject


def _report(ssim, alexnet2=float("nan")):
    means = {"ssim": ssim, "pixcorr": 0.25, "alexnet2": alexnet2, "alexnet5": 0.9, "inceptionv3": 0.8,
             "clip": 0.75, "efficientnet": 0.85, "swav": 0.5, "ssim_2d": ssim / 2}
    return types.SimpleNamespace(means=means, n_images=10, size=32, ssim_mode="columns", protocol="brain-diffuser",
                                 card=None)


@pytest.fixture
def cfg(tmp_path):
    return RunConfig(workdir=str(tmp_path / "work"), quick=True)


def test_written_rows_read_back_unchanged(cfg):
    rows = [result_row(cfg, "gru", 15, "none", _report(0.3), {"mse": 1.5, "mae": 0.9}),
            result_row(cfg, "ridge", 31, "8", _report(0.4, alexnet2=0.95))]
    assert rows[0]["alexnet2"] is None  # not computed: null, never NaN
    path = write_results(cfg, rows, {"alexnet2": "not available: no weights"})
    assert path == results_path(cfg) and results_path(cfg, ".csv").is_file()
    doc, df = read_results(cfg)
    assert doc["schema"] == 1 and doc["sources"] == {"alexnet2": "not available: no weights"}
    assert doc["ssim_mode"] == "columns" and "NaN" not in path.read_text()
    assert list(df.columns) == list(RESULT_COLUMNS) and len(df) == 2
    by_reg = df.set_index("regressor")
    assert by_reg.loc["gru", "ssim"] == pytest.approx(0.3) and np.isnan(by_reg.loc["gru", "alexnet2"])
    assert by_reg.loc["ridge", "alexnet2"] == pytest.approx(0.95) and by_reg.loc["ridge", "noise"] == "8"
    assert by_reg.loc["gru", "latent_mse"] == pytest.approx(1.5) and bool(by_reg.loc["gru", "quick"]) is True
    for i, r in enumerate(rows):  # every value written is read back as written (rows sorted: none, then 8)
        got = df.iloc[i]
        for k, v in r.items():
            assert (pd.isna(got[k]) if v is None else got[k] == v), (k, v, got[k])
    # the CSV beside it reads back to the same rows
    _, from_csv = read_results(results_path(cfg, ".csv"))
    pd.testing.assert_frame_equal(from_csv, df, check_dtype=False)


def test_a_row_with_the_same_key_replaces_the_old_one(cfg):
    write_results(cfg, [result_row(cfg, "gru", 15, "none", _report(0.3))], {"clip": "small CLIP"})
    write_results(cfg, [result_row(cfg, "gru", 15, "none", _report(0.5)),
                        result_row(cfg, "gru", 15, "16", _report(0.2))])
    doc, df = read_results(cfg)
    assert list(df["noise"]) == ["none", "16"] and list(df["ssim"]) == pytest.approx([0.5, 0.2])
    assert doc["sources"] == {"clip": "small CLIP"}  # earlier sources are kept
    with pytest.raises(ValueError, match="a results row needs the columns dataset, .*; found it without seed"):
        write_results(cfg, [{k: v for k, v in result_row(cfg, "gru", 15, "none", _report(0.3)).items()
                             if k != "seed"}])


def test_rows_can_go_to_another_results_file(cfg, tmp_path):
    out = tmp_path / "elsewhere" / "rescored.json"
    assert write_results(cfg, [result_row(cfg, "file:recons.pt", 0, "none", _report(0.3))], path=out) == out
    _, df = read_results(out)
    assert list(df["regressor"]) == ["file:recons.pt"] and list(df["n_layers"]) == [0]
    assert out.with_suffix(".csv").is_file() and not results_path(cfg).exists()
    with pytest.raises(ValueError, match="a results file is written as .json .*; found rescored.csv"):
        write_results(cfg, [result_row(cfg, "gru", 15, "none", _report(0.3))], path=out.with_suffix(".csv"))


def test_the_cross_subject_report_reads_through_the_same_reader(cfg):
    write_results(cfg, [result_row(cfg, "gru", 15, "none", _report(0.3)),
                        result_row(cfg, "gru", 15, "64", _report(0.1))])
    df = cross_subject.report_rows(results_path(cfg))
    assert list(df.columns) == [*cross_subject.IDENTITY_COLUMNS, *IMAGE_METRICS]
    _, rows = read_results(cfg)
    pd.testing.assert_frame_equal(df, rows[df.columns])


@pytest.mark.parametrize("content, message", [
    ('{"schema": 1, "results": []}',
     r"expected a JSON list of result rows \(or \{'rows': \[...\]\}\); found an object with keys schema, results"),
    ('"rows"', r"expected a JSON list of result rows .*; found str"),
    ("{not json", "expected JSON; found a file that does not parse"),
    ('{"rows": []}', "expected result rows; found a results file with no rows"),
    ('[{"regressor": "gru", "n_layers": 15, "accuracy": 1}]',
     "no metric columns; expected some of ssim, pixcorr, .*; found regressor, n_layers, accuracy"),
    ('[{"n_layers": 15, "ssim": 0.3}]', "a results row needs a 'regressor' column; found n_layers, ssim"),
    ('[{"regressor": "gru", "n_layers": 15, "clip": 94.2}]', "fraction in 0-1; found 94.2"),
    ('[{"regressor": "gru", "n_layers": 15, "ssim": 0.3, "noise": 7}]',
     "expected noise levels none, 8, 16, 32, 64, 256; found 7"),
])
def test_a_malformed_file_says_what_was_expected_and_found(tmp_path, content, message):
    path = tmp_path / "mini" / "subj01" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ResultsFormatError, match=message):
        read_results(path)


def test_other_files_and_missing_files(tmp_path):
    (tmp_path / "results.txt").write_text("ssim 0.3")
    with pytest.raises(ResultsFormatError, match=r"expected a results \.json or \.csv file; found \.txt"):
        read_results(tmp_path / "results.txt")
    (tmp_path / "results.json").write_text(json.dumps([{"regressor": "gru", "n_layers": 15, "SSIM": 0.3}]))
    with pytest.raises(ResultsFormatError, match="expected a 'subject' column or a folder named subjNN"):
        read_results(tmp_path / "results.json")
    with pytest.raises(FileNotFoundError, match="no results file at .*run chapter 09"):
        read_results(tmp_path / "absent.json")
