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


# ------------------------------------------------------------- engineer B's scripts (issue #27)
diffusion = _load("bench_diffusion")
nsd_bench = _load("bench_nsd")
mini_bench = _load("bench_mini")
minimodels = _load("bench_minimodels")
gpu = _load("bench_gpu_subject")
protocol = _load("_protocol")


def test_cpu_timed_records_each_call_and_cpu_stats_pairs_repeats():
    store = {}
    entries = protocol.cpu_timed([("peer", lambda: 1), ("ours", lambda: 2)], store)
    assert [label for label, _ in entries] == ["peer", "ours"]
    assert [fn() for _, fn in entries] == [1, 2]
    assert set(store) == {"peer", "ours"} and all(len(v) == 1 and v[0] >= 0 for v in store.values())
    store = {"peer": [9.0, 4.0, 6.0, 3.0], "ours": [9.0, 2.0, 2.0, 1.0]}  # the first of each: a warm-up
    s = protocol.cpu_stats(store, "peer", warmup=True)
    assert s["peer"]["seconds"] == {"median": 4.0, "min": 3.0, "max": 6.0, "n": 3}
    assert s["ours"]["ratio"] == {"median": 3.0, "min": 2.0, "max": 3.0, "n": 3}  # 4/2, 6/2, 3/1
    assert "ratio" not in s["peer"]


def test_diffusion_seconds_per_image():
    assert diffusion.per_image({"median": 8.0, "min": 4.0, "max": 12.0, "n": 3}, 4) == \
        {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_nsd_ratios_and_full_scale_arithmetic():
    assert nsd_bench.ratio_spread([10.0, 6.0, 9.0], [5.0, 3.0, 1.0]) == {"median": 2.0, "min": 2.0, "max": 9.0, "n": 3}
    with pytest.raises(ValueError, match="as many peer as own"):
        nsd_bench.ratio_spread([1.0], [1.0, 2.0])
    rows = {r[0]: r[2] for r in nsd_bench.full_scale_rows(working_mb=0.0)}
    session = 81 * 104 * 83 * 750 * 2  # subject 1's 1.8 mm grid, 750 trials, int16
    assert rows[nsd_bench.PEERS[0]] == pytest.approx(37 * session / 1e9)
    assert rows[nsd_bench.PEERS[0]] == pytest.approx(38.8, abs=0.05)
    assert rows[nsd_bench.PEERS[1]] == pytest.approx((session + 37 * 750 * 15724 * 4) / 1e9)
    assert rows["nsdlib `prepare_subject`"] == pytest.approx(9841 * 15724 * 4 / 1e9)
    assert nsd_bench.full_scale_rows(working_mb=1000)[2][2] - rows["nsdlib `prepare_subject`"] == \
        pytest.approx(1000 * 2**20 / 1e9)


def test_mini_inverse_swaps_the_range():
    assert mini_bench._inverse({"median": 0.25, "min": 0.2, "max": 0.5, "n": 3}) == \
        {"median": 4.0, "min": 2.0, "max": 5.0, "n": 3}


def test_mini_peer_rewrites_every_file(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    np.savez(src / "a" / "x.npz", v=np.arange(3))
    (src / "m.json").write_text(json.dumps({"k": 1}))
    (src / "raw.tsv").write_text("1\t2\n")
    writes = mini_bench.peer_writes(src, tmp_path / "dst")
    assert [str(rel) for rel, _, _ in writes] == ["a/x.npz", "m.json", "raw.tsv"]
    assert mini_bench.run_writes(writes, tmp_path / "dst") > 0
    with np.load(tmp_path / "dst" / "a" / "x.npz") as z:
        np.testing.assert_array_equal(z["v"], np.arange(3))
    assert json.loads((tmp_path / "dst" / "m.json").read_text()) == {"k": 1}
    assert (tmp_path / "dst" / "raw.tsv").read_text() == "1\t2\n"


def test_minimodels_step_cost_and_the_modelled_recipe():
    assert minimodels.step_cost([3.0, 5.0, 4.0], [5.0, 9.0, 10.0], k=2) == \
        {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    costs = {m: {"median": c, "min": c, "max": c, "n": 3}
             for m, c in dict(vdvae=0.5, clip=1.0, vae=0.25, unet=1.0, probe=0.1, contrastive=0.2).items()}
    shipped = {"seconds": {"vdvae_s": 2250.0, "clip_s": 600.0, "diffusion_s": 2000.0},
               "scene": {"probe_s": 140.0, "contrastive_s": 80.0}}
    recipe = minimodels.zoo.RECIPES["full"]  # 4,500 / 300 / 1,200 / 2,500 steps
    srec = minimodels.scene.SCENE_RECIPES["full"]  # 1,400 and 400 steps
    rows = {r[0]: r for r in minimodels.modelled_rows(costs, recipe, srec, shipped)}
    assert rows["small VDVAE"][1:] == ["4,500 × 8", costs["vdvae"], 2250.0, 2250.0, 1.0]
    assert rows["small CLIP"][3] == 300.0 and rows["small CLIP"][5] == 0.5
    assert rows["diffusion (autoencoder + UNet)"][3] == 1200 * 0.25 + 2500 * 1.0
    assert rows["scene probe"][3] == pytest.approx(140.0) and rows["contrastive CNN"][3] == pytest.approx(80.0)
    whole = [r for r in rows.values() if r[0].startswith("**whole")][0]
    assert whole[3] == pytest.approx(max(2250.0, 300.0 + 300.0 + 2500.0) + 140.0 + 80.0)


def test_minimodels_quality_rows_come_from_the_manifest():
    ev = {"vdvae_ssim": 0.7, "vdvae_ssim_shuffled": 0.3, "vdvae_ssim_15": 0.4, "vdvae_ssim_15_shuffled": 0.25,
          "clip_top1_of_10": 0.9, "clip_chance": 0.1, "diffusion_identification": 0.8, "diffusion_steps": 25,
          "diffusion_guidance_scale": 3.0}
    val = {a: {"accuracy": acc, "chance": 0.125, "n": 100} for a, acc in zip(("colour", "shape", "position"),
                                                                           (0.9, 0.8, 0.7))}
    rows = minimodels.quality_rows(ev, {"validation": val})
    assert [r[2] for r in rows[:4]] == [0.7, 0.4, 0.9, 0.8]
    assert rows[0][3] == "0.300 (shuffled pairs)" and rows[2][3] == "0.100 (chance)"
    assert rows[4][2] == "0.90 / 0.80 / 0.70" and rows[4][3].startswith("0.12 / 0.12 / 0.12")


def test_gpu_subject_tables_from_a_record(tmp_path):
    st = lambda name, pass_s, cpu, passes: {"stage": name, "count": f"{name} count", "default": {},  # noqa: E731
                                            "pass_s": pass_s, "pass_cpu_s": cpu, "passes": passes,
                                            "subject_s": pass_s * passes, "peak_cuda_gib": None,
                                            "peak_rss_rise_gib": 0.5}
    out = {"card": "CPU (x86_64)", "device": "cpu", "scale": 0.005, "direct": False, "dims": {}, "script_wall_s": 9.0,
           "stages": [st("glm", 2.0, 1.0, 1), st("vd", 3.0, 2.0, 6), {"stage": "metrics", "count": "m",
                                                                       "default": {"error": "OOM"}}],
           "check_direct": [st("glm", 4.0, 2.0, 1), st("vd", 3.0, 1.0, 6)]}
    out["subject_s"] = 2.0 + 18.0
    rows = gpu.stage_rows(out)
    assert rows[0] == ["glm", "glm count", 2.0, 2.0, None, 0.5]
    assert rows[2][2] == "error: OOM" and rows[-1] == ["**whole subject**", "", None, 20.0, None, None]
    d = gpu.direct_rows(out)
    assert d[0] == ["glm", 2.0, 4.0, 0.5, 1.0, 2.0, 0.5] and d[1][6] == 2.0
    assert d[-1][1:4] == [20.0, 22.0, pytest.approx(20.0 / 22.0)]
    run = protocol.Session("gpu_subject_test", "x", argv=[], threads="not set")
    gpu.record(run, out)
    assert [t["key"] for t in run.tables] == ["stages", "direct"] and run.values["subject_h"] == 20.0 / 3600
    assert json.loads(run.write(tmp_path).read_text())["tables"][1]["rows"][0][3] == 0.5
