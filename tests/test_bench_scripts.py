"""The benchmark scripts' own arithmetic, at tiny scale (nothing is timed, no peer is needed):
bench_ridge's memory model, bench_glmsingle's simulation and score, bench_book's profile summary,
bench_glm's table rows and notes, bench_regressors' epoch extrapolation, bench_metrics' rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import _protocol as their neighbour
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ridge = _load("bench_ridge")
glms = _load("bench_glmsingle")
book = _load("bench_book")
glm_bench = _load("bench_glm")
regs = _load("bench_regressors")
mets = _load("bench_metrics")


def test_ridge_memory_model_known_values():
    n, p, t, m = 1000, 2000, 8 * 768, 250  # one batch holds every target: no copy
    assert ridge.model_bytes("fit", n, p, t, m) == 4 * n * p
    stream = 4 * m * n + 4 * m * t + 4 * n * t + 8 * m * t
    factor = 4 * n * p + 4 * m * p + 24 * n * n + 24 * m * n
    assert ridge.model_bytes("predict", n, p, t, m) == max(4 * n * p + 20 * n * n, factor, stream)
    N, P, T, M = ridge.FULL
    full = ridge.model_bytes("fit", N, P, T * ridge.DIM, M)
    b = ridge.BATCH_BYTES // (4 * N)
    assert full == 4 * N * P + 4 * N * b  # the centred X and one copied batch of targets: no t x p weights
    assert full < 1 << 30


def test_glmsingle_simulation_has_single_trial_truth():
    runs, designs, onehot, truth, resp = glms.simulate(40, n_runs=3, seed=1)
    n_trials = sum(d.n_trials for d in designs)
    assert truth.shape == (n_trials, 40) and len(runs) == len(onehot) == 3
    assert np.all(truth[:, ~resp] == 0) and resp.any()
    for y, d, oh in zip(runs, designs, onehot):
        assert y.shape == (glms.N_TIME, 40) and y.dtype == np.float32
        rows, cols = np.nonzero(oh)  # GLMsingle's design: one onset per trial, in the same order
        np.testing.assert_array_equal(rows, (d.onsets / glms.TR).astype(int))
        np.testing.assert_array_equal(cols, d.conditions)
    assert np.bincount(np.concatenate([d.conditions for d in designs])).max() <= 3


def test_median_r_known_answer():
    truth = np.arange(12, dtype=float).reshape(6, 2)
    betas = np.c_[truth[:, 0] * 2 + 1, -truth[:, 1]]
    assert glms.median_r(betas, truth, np.array([True, False])) == pytest.approx(1.0)
    assert glms.median_r(betas, truth, np.array([False, True])) == pytest.approx(-1.0)


def test_book_profile_summary_and_records(tmp_path):
    raw = tmp_path / "x.raw.txt"
    raw.write_text("main (/a/runner.py:1);fit (/r/nsdlib/glm.py:10);dot (/np/linalg.py:5) 6\n"
                   "main (/a/runner.py:1);draw (/r/nsdlib/diffusion.py:3);conv (/t/conv.py:9) 3\n"
                   "idle (/a/loop.py:2) 1\n")
    s = book.summarise(raw, top=2)
    assert s["samples"] == 10
    assert s["nsdlib"] == [["nsdlib.glm.fit", 0.6], ["nsdlib.diffusion.draw", 0.3]]
    assert s["leaf"] == [["dot (linalg.py)", 0.6], ["conv (conv.py)", 0.3]]
    (tmp_path / "04_x.done.json").write_text(json.dumps({"seconds": 12.5}))
    assert book.chapter_times(tmp_path) == [["04_x", 12.5]]
    store = tmp_path / "mini" / "subj01" / "metrics"
    store.mkdir(parents=True)
    for f in ("k1.npz", "k1.meta.json", "k2.npz"):
        (store / f).write_text("")
    assert book.remove_artifacts(tmp_path, {("metrics", "k1")}) == 2
    assert sorted(p.name for p in store.iterdir()) == ["k2.npz"]


def test_glm_accuracy_row_and_note_known_values():
    acc = {"A": 0.7, "B": 0.8, "C": 0.85, "D": 0.9}
    rec = {"exact": 0.4, "within1": 0.75, "exact_high": 0.7, "within1_high": 0.99}
    row = glm_bench.accuracy_row(1, 10, acc, rec, [5, 4, 5], 26.0, 0.04)
    assert row == [1, 10, 0.7, 0.8, 0.85, 0.9, "0.40 / 0.75", "0.70 / 0.99", "4–5", 26.0, 0.04]
    other = glm_bench.accuracy_row(2, 10, {**acc, "D": 0.92}, {**rec, "within1_high": 0.91}, [4], 20.0, 0.02)
    note = glm_bench.accuracy_note([row, other])
    assert other[8] == "4"  # one number when every session chose the same
    assert note.startswith("D beats B by 0.10–0.12 over the subjects")
    assert "for 91–99 % of the high-signal voxels" in note


def test_glm_betas_note_arithmetic():
    note = glm_bench.betas_note(n_vox=2 ** 20 // 12000, n_trials=750, whole_brain=2 ** 30 // 12000)
    # 4 models x 750 trials x 4 B = 12,000 B per voxel: 87 voxels -> 1 MiB, 89,478 voxels -> 1.0 GiB
    assert "are 1 MiB of the peak" in note
    assert "the betas of all four models 1.0 GiB" in note and "keeps one: 0.2 GiB" in note
    assert f"the input is {12 * 226 * 4 * (2 ** 30 // 12000) / 2 ** 30:.1f} GiB" in note


def test_regressors_epoch_extrapolation_known_values():
    assert regs.split(8859) == (7973, 886, 125)  # NSD subject 1: 125 batches of 64 and 886 validation rows
    assert regs.split(100) == (90, 10, 2)
    assert regs.epoch_seconds(1.0, 0.01, 8859) == pytest.approx(125 + 8.86)
    note = regs.train_note(gru_epoch=72.0, gru_other_mib=170.4)
    assert "beyond its parameters, gradients and AdamW state is 170 MiB" in note
    assert "50 epochs of `stage1.regressor_options` for NSD take 1.0 hours" in note


def test_metrics_rows_and_identification_agree_with_the_peer():
    rng = np.random.default_rng(0)
    gt = rng.standard_normal((40, 30)).astype(np.float32)
    rec = (0.5 * gt + rng.standard_normal((40, 30))).astype(np.float32)
    assert mets.ours_streaming(gt, rec, batch=7) == pytest.approx(mets.peer_identification(gt, rec), abs=1e-12)
    assert mets.ours_streaming(gt, gt) == pytest.approx(1.0)  # each image is its own best match
    st = {"ours": {"seconds": 1.0, "ratio": 4.0}, "peer": {"seconds": 4.0}}
    row = mets._row("w", "ours", "peer", st, {"ours": [10.0, 20.0], "peer": [100.0, 80.0]}, "ok")
    assert row == ["w", "ours", 1.0, 20.0, "peer", 4.0, 100.0, 4.0, 5.0, "ok"]
    peaks = {}
    label, call = mets.measured(peaks, "x", lambda: 7)
    assert label == "x" and call() == 7 and len(peaks["x"]) == 1
    note = mets.ident_note(982, 43264, dims_alexnet2=139_968)
    assert f"{4 * 982 * 43264 / 2 ** 20:.0f} MiB here" in note and f"{4 * 982 * 139968 / 2 ** 20:.0f} MiB" in note
