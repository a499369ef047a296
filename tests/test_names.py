"""The paper's vocabulary: one spelling of every key, each with its labels."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nsdlib import config, names, noise, paper
from nsdlib.protocols import PROTOCOLS
from nsdlib.report import cross_subject


def test_names_imports_nothing():
    tree = ast.parse(Path(names.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == []


def test_every_metric_key_has_labels_and_a_direction():
    for table in (names.METRIC_LABELS, names.METRIC_SHORT_LABELS, names.HIGHER_IS_BETTER, names.METRIC_ARROWS,
                  names.METRIC_HEADERS, names.METRIC_SHORT_HEADERS):
        assert set(table) == set(names.METRICS)
    assert set(names.IMAGE_METRICS) <= set(names.METRICS)
    assert set(names.PIXEL_METRICS) | set(names.IDENTIFICATION_METRICS) | set(names.DISTANCE_METRICS) \
        == set(names.IMAGE_METRICS)
    assert not set(names.IDENTIFICATION_METRICS) & set(names.DISTANCE_METRICS)


def test_headers_carry_the_direction():
    assert names.METRIC_HEADERS["ssim"] == "SSIM ↑"
    assert names.METRIC_HEADERS["efficientnet"] == "EfficientNet-B1 ↓"
    assert names.METRIC_SHORT_HEADERS["swav"] == "SwAV ↓"
    assert names.METRIC_HEADERS["mse"] == "MSE ↓"
    for m in names.DISTANCE_METRICS + names.LATENT_METRICS:
        assert not names.HIGHER_IS_BETTER[m]
    for m in names.PIXEL_METRICS + names.IDENTIFICATION_METRICS + ("ssim_2d",):
        assert names.HIGHER_IS_BETTER[m]


def test_run_vocabulary_has_labels():
    assert set(names.DATASET_LABELS) == set(names.DATASETS)
    assert set(names.MODEL_SET_LABELS) == set(names.MODEL_SETS)
    assert set(names.REGRESSOR_LABELS) == set(names.REGRESSORS) == set(names.REGRESSOR_PAPER_LABELS)
    assert set(names.NOISE_LABELS) == set(names.NOISE_LEVELS)
    assert names.SUBJECTS == (1, 2, 5, 7) and names.N_LAYERS == (15, 31)


def test_config_validates_against_names(tmp_path):
    for subject in names.SUBJECTS:
        assert config.RunConfig(subject=subject, workdir=str(tmp_path)).subject == subject
    with pytest.raises(config.ConfigError, match="subject must be"):
        config.RunConfig(subject=3)


def test_noise_levels_agree_with_add_noise():
    assert names.NOISE_LEVELS == ("none", "8", "16", "32", "64", "256")
    assert [noise.noise_label(level) for level in names.NOISE_LEVELS] == list(names.NOISE_LEVELS)
    assert [noise.noise_amplitude(a) for a in names.NOISE_AMPLITUDES] == list(names.NOISE_AMPLITUDES)
    assert noise.noise_amplitude(str(names.PURE_NOISE_AMPLITUDE)) == names.PURE_NOISE_AMPLITUDE
    for bad in ("4", "128"):
        with pytest.raises(ValueError, match="noise level must be one of"):
            noise.noise_label(bad)


def test_paper_tables_use_only_names_keys():
    for name in ("2", "3", "4", "5", "6", "other"):
        df = paper.table(name)
        if "regressor" in df:
            assert set(df["regressor"].dropna()) <= set(names.REGRESSORS)
        if "n_layers" in df:
            assert set(df["n_layers"].dropna().astype(int)) <= set(names.N_LAYERS)
        metric_columns = [c for c in df.columns if c in names.METRICS or c.endswith(("_mse", "_mae"))]
        assert metric_columns, name
        known = {"source", "label", "regressor", "n_layers", "subject", "subjects", "noise", "protocol"}
        assert set(df.columns) - known - set(metric_columns) == set(), name
        if "protocol" in df:  # each published row names the protocol it claims, one of nsdlib's or "own"
            assert all(p == paper.OWN_PROTOCOL or p.split(" ")[0] in PROTOCOLS for p in df["protocol"]), name
    t6 = paper.table(6)
    assert list(t6["noise"]) == list(names.NOISE_LEVELS)
    assert list(t6["label"]) == [names.NOISE_LABELS[k] for k in names.NOISE_LEVELS]
    for row in paper.TABLE2 + paper.TABLE3:
        assert row["label"] == names.REGRESSOR_PAPER_LABELS[row["regressor"]]


def test_cross_subject_report_uses_names(tmp_path):
    empty = cross_subject.collect_results(tmp_path, "mini")
    assert list(empty.columns) == [*cross_subject.IDENTITY_COLUMNS, *names.IMAGE_METRICS]
