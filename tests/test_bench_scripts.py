"""The benchmark scripts' own arithmetic, at tiny scale (nothing is timed, no peer is needed):
bench_ridge's memory model, bench_glmsingle's simulation and score, bench_book's profile summary."""

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
