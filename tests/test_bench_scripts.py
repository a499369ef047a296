"""The benchmark scripts' own arithmetic, at tiny scale (nothing is timed, no peer is needed):
bench_ridge's memory model, bench_glmsingle's simulation and score, bench_book's profile summary and
build records, bench_book_results' bars, bench_glm's table rows and notes, bench_regressors' epoch
extrapolation, bench_metrics' rows, bench_optimizer's shapes and the two optimisers' agreement."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _bench_scripts import load_bench

from nsdlib.mini.zoo import mini_vdvae_config
from nsdlib.vdvae import n_latents

ridge = load_bench("bench_ridge")
glms = load_bench("bench_glmsingle")
book = load_bench("bench_book")
glm_bench = load_bench("bench_glm")
regs = load_bench("bench_regressors")
mets = load_bench("bench_metrics")
book_results = load_bench("bench_book_results")
diffusion = load_bench("bench_diffusion")
nsd_bench = load_bench("bench_nsd")
mini_bench = load_bench("bench_mini")
minimodels = load_bench("bench_minimodels")
gpu = load_bench("bench_gpu_subject")
optim = load_bench("bench_optimizer")
protocol = load_bench("_protocol")


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


def _fake_build(root):
    """A book build folder as bench_book.py --make-book leaves it, at toy scale."""
    html = root / "_build" / "html"
    (html / "_images").mkdir(parents=True)
    (html / "_images" / "a.png").write_bytes(b"x" * 5000)
    (html / "10_explorer.html").write_bytes(b"x" * 9000)
    (html / "index.html").write_bytes(b"x" * 10)
    run_dir = root / book.RUN_DIR
    run_dir.mkdir(parents=True)
    for name, secs in (("00_a", 10.0), ("04_b", 30.0)):
        (run_dir / f"{name}.done.json").write_text(json.dumps({"seconds": secs}))
    timing = {"commit": "abc1234", "started": "2026-12-06 18:05 UTC", "timed_by": "test",
              "make_book": {"seconds": 100.0, "rc": 0, "load_start": 1.0, "load_end": 3.0,
                            "load_samples": [1.0, 5.0, 2.0]},
              "check_book": {"seconds": 50.0, "rc": 1, "load_start": 2.0, "load_end": 2.5, "load_samples": [2.0]}}
    (root / book.TIMING).write_text(json.dumps(timing))
    (root / book.CHECK_LOG).write_text("x.html: a bar below 100 %\ncheck-book: 27 pages, 1 problems\n")


def test_book_build_tables_from_records(tmp_path):
    _fake_build(tmp_path)
    run = book.Session("unit_book", "tests", argv=[], threads="runner")
    book.build_tables(run, tmp_path)
    tabs = {t["key"]: t for t in run.tables}
    assert tabs["chapters"]["rows"] == [["00_a", 10.0], ["04_b", 30.0], ["all chapters", 40.0],
                                        [tabs["chapters"]["rows"][3][0], 60.0]]
    build = tabs["build"]["rows"]
    assert build[0][:5] == ["make book", 100.0, "1 min 40 s", 1.0, 3.0]
    assert build[0][5] == {"median": 2.0, "min": 1.0, "max": 5.0, "n": 3}
    assert build[1][0] == "make check-book" and build[1][1] == 50.0
    assert tabs["check"]["rows"] == [[27, 1, "x.html: a bar below 100 %"]]
    size = dict(tabs["size"]["rows"])
    assert "largest page (10_explorer.html)" in size and "figures (_images)" in size
    assert size["the built book (_build/html)"] >= size["figures (_images)"] > 0


def test_book_check_report_reads_the_last_summary():
    assert book.check_report("check-book: 3 pages, 0 problems\n") == {"pages": 3, "problems": 0, "lines": []}
    with pytest.raises(ValueError, match="no 'check-book"):
        book.check_report("Traceback\n")


def _fake_book_numbers():
    latent = [["ridge 15", 0.5, 1.0, 0.5], ["gru 15", 0.3, 1.0, 0.3], ["ridge 31", 0.48, 1.0, 0.48],
              ["gru 31", 0.4, 1.0, 0.4]]
    def attrs(c, s, p):  # (accuracy, chance, ratio) with chance 0.1
        return {"colour": (c / 10, 0.1, c), "shape": (s / 10, 0.1, s), "position": (p / 10, 0.1, p)}

    scenes = [("VDVAE ceiling, 31 blocks", attrs(9.0, 2.0, 4.0)), ("first guess, gru 31", attrs(3.0, 1.0, 1.5)),
              ("stage 2, predicted CLIP", attrs(3.0, 1.0, 1.0)), ("stage 2, true CLIP (ceiling)", attrs(4.0, 3.0, 1.0))]
    own = {m: 0.5 for m in book_results.METRICS} | {"ssim": 0.8, "clip": 0.9, "swav": None}
    rows = {("gru", 15, "none"): own, ("gru", 15, "256"): {**own, "ssim": 0.6}}
    return latent, scenes, rows


def test_book_results_bars_are_computed_from_the_numbers():
    latent, scenes, rows = _fake_book_numbers()
    table, vals = book_results.bars_table(latent, scenes, rows)
    met = {r[0]: r[3] for r in table}
    assert len(table) == len(book_results.BARS)
    assert vals["latent ratio, gru 31"] == 0.4 and met["GRU-31 test latent MSE (z units) / training mean's"] == "yes"
    assert met["VDVAE ceiling, 31 blocks: main object's colour / position"] == "yes"
    assert met["GRU-31 first guesses: colour / position"] == "**no**"  # position 1.5x < 2x
    assert vals["ssim change at 256"] == pytest.approx(-0.25)
    assert met["SSIM at noise amplitude 256: change from no noise (GRU-15)"] == "yes"
    assert vals["columns computed"] == 7 and met["metric columns computed on the default run (of eight)"] == "**no**"
    assert table[0][1] == "0.400 / 1.000 = **0.40** (gru-15 0.30; ridge-31 0.48)"
    assert table[1][1] == "0.90 (**9.0×**) / 0.40 (**4.0×**)"
    assert book_results.bar_met([0.7], "<=", 0.7) and not book_results.bar_met([3.0, 2.9], ">=", 3.0)
    with pytest.raises(ValueError, match="'<=' or '>='"):
        book_results.bar_met([1.0], "<", 2.0)


def test_book_results_read_chapter_08s_printed_seconds(tmp_path):
    nb = {"cells": [{"cell_type": "code", "outputs": [{"name": "stdout", "text": ["x\n"]}]},
                    {"cell_type": "code", "outputs": [{"text": ["both placements scored in 118 s (the first"]}]}]}
    (tmp_path / "08.ipynb").write_text(json.dumps(nb))
    assert book_results.placements_seconds(tmp_path / "08.ipynb") == 118.0
    assert book_results.placements_seconds(tmp_path / "missing.ipynb") is None


def test_book_chapters_artifacts_from_the_build_log(tmp_path):
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    log = tmp_path / "mini" / "subj01" / "store.log"
    log.parent.mkdir(parents=True)
    t0 = 1_800_000_000  # a chapter's events lie after the previous chapter's record, up to its own
    for ch, end in (("00_a", t0 + 10), ("04_b", t0 + 20)):
        (run_dir / f"{ch}.done.json").write_text("{}")
        os.utime(run_dir / f"{ch}.done.json", (end, end))
    stamp = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    events = [(t0 + 2, "x", "k1"), (t0 + 10, "y", "k2"), (t0 + 15, "x", "k1"), (t0 + 19, "z", "k3")]
    log.write_text("".join(json.dumps({"time": stamp(t), "event": "reused", "name": n, "key": k}) + "\n"
                           for t, n, k in events))
    touched = book.touched_in_build(tmp_path, run_dir, ["00_a", "04_b"])
    assert touched == {"00_a": {("x", "k1"), ("y", "k2")}, "04_b": {("x", "k1"), ("z", "k3")}}


def test_book_attach_finds_the_runners_kernel():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(30)", "ipykernel_launcher"])
    try:
        assert book._kernel_of(os.getpid()) == child.pid
        assert book._kernel_of(child.pid) is None  # it started no kernel
    finally:
        child.kill()
        child.wait()


def test_book_attach_summarises_a_profile_already_recorded(tmp_path):
    (tmp_path / "04_x.raw.txt").write_text("run (nsdlib/regressors.py:5);gru (torch/rnn.py:1) 4\n")  # short paths
    res = book.attach(tmp_path, "04_x", "no-py-spy-needed", 20, tmp_path)
    assert res["seconds"] is None and res["samples"] == 4  # the chapter had not ended: no record
    assert res["nsdlib"] == [["nsdlib.regressors.run", 1.0]]
    (tmp_path / "04_x.done.json").write_text(json.dumps({"seconds": 99.0}))
    assert book.attach(tmp_path, "04_x", "no-py-spy-needed", 20, tmp_path)["seconds"] == 99.0


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


def test_optimizer_bench_shapes_and_the_two_optimisers_agree():
    assert optim.shape("nsd") == (15_724, 13_344)
    assert optim.shape("mini") == (1_572, n_latents(mini_vdvae_config(), 31))
    assert optim.max_difference(torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0], [-2.0, 0.0, 0.0]])) == 2.0
    diff, spread_ = optim.agreement(24, 12, steps=3)  # default and fused AdamW, same weights and batches
    assert 0 <= diff < 1e-3 * spread_
