"""Accuracy, speed and memory of nsdlib.glm (GLMsingle-style single-trial betas).

Three parts (``--part accuracy speed ridge``, default all):

1. **Accuracy on mini-NSD** (``--root``, default size, seed 0; generated into a temporary
   folder if not given). For each subject, :func:`nsdlib.pipeline.betas.write_betas` fits
   its first ``--sessions`` sessions (default 0: all) and the betas of models A-D are scored
   against the simulation's true single-trial amplitudes: median over nsdgeneral voxels of
   the per-voxel correlation over trials; model B's HRF against the true one (±1 library
   step) for all voxels and the quarter with the highest true-signal / thermal-noise ratio.
   The wall time of ``write_betas`` per subject (fit, int16 NIfTI written, cached) and of a
   rerun (every session cached) are recorded too (betas already written under ``--root`` are not
   written again). Writes ``benchmarks/results/glm_accuracy.json``.
2. **Speed and peak memory of a whole fit** on a synthetic session of NSD's size: 12 runs of
   226 volumes at TR 4/3 s, 750 trials (250 images x 3), ``--voxels`` voxels (half
   responsive, random library HRFs, thermal and shared noise). Peer in the same process:
   plain OLS of the single-trial design with every library HRF, as a dense least-squares
   problem over the whole session per HRF (``np.linalg.lstsq`` on the 2,712 x 750 design
   with the polynomials projected out): what model B costs without the per-run block
   structure. Peak memory is ``tracemalloc``'s (numpy allocations are traced); ``--chunk-size``
   shows how the working set follows the number of voxels processed at once (the fits are
   timed with ``tracemalloc`` on: its cost is small beside numpy's large allocations).
3. **The ridge step** for one HRF group of ``--ridge-voxels`` voxels, 20 fractions, NSD
   session size: nsdlib's per-run SVDs (what :class:`GLMSingle` runs) and
   :func:`nsdlib.glm.fractional_ridge` on the whole-session design, against the peers
   ``fracridge.fracridge`` (v2, one SVD, then a Python loop over voxels) called once with all
   fractions, and called once per fraction (GLMsingle's pattern: one decomposition per
   fraction). All four give the same betas (max difference recorded); each one's peak traced
   memory comes from one more, untimed call.

Every part runs under the benchmark protocol (``_protocol.py``: one thread, ``--repeats``
interleaved repeats, load recorded): part 1 writes ``benchmarks/results/glm_accuracy.json``,
parts 2 and 3 ``benchmarks/results/glm.json``; ``make bench-report`` puts their tables into
RESULTS.md. GLMsingle itself as a peer: ``bench_glmsingle.py``.

Run: ``.venv/bin/python benchmarks/bench_glm.py [--root DIR] [--subjects 1 2 5 7] [--sessions 0] [--voxels 15000]``
(about 10 minutes on one loaded core; ``--part`` chooses).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _protocol import Session, spread

from nsdlib import RunConfig, glm, mini
from nsdlib.glm import GLMSingle, TrialDesign, hrf_library, polynomial_basis, trial_regressors
from nsdlib.pipeline.betas import glm_diagnostics, hrf_recovery, model_accuracy, write_betas

MB = 1 << 20
GiB = 1 << 30
WHOLE_BRAIN = 81 * 104 * 83  # voxels of NSD subject 1's 1.8-mm functional grid
NSD_TR = 4.0 / 3.0
FRACS = np.round(np.arange(1.0, 0.0, -0.05), 2)


# ----------------------------------------------------------------------------- accuracy
def accuracy_row(subject: int, n_sessions: int, acc: dict, rec: dict, pcs, secs: float, rerun: float) -> list:
    """One row of the accuracy table: median r per model, model B's HRF recovery, PCs, seconds."""
    return [subject, n_sessions, acc["A"], acc["B"], acc["C"], acc["D"],
            f"{rec['exact']:.2f} / {rec['within1']:.2f}", f"{rec['exact_high']:.2f} / {rec['within1_high']:.2f}",
            f"{min(pcs)}–{max(pcs)}" if min(pcs) < max(pcs) else f"{min(pcs)}", secs, rerun]


def accuracy_note(rows) -> str:
    """The sentence under the accuracy table: D's gain over B and B's HRF recovery, over subjects."""
    gain = [r[5] - r[3] for r in rows]
    high = [float(r[7].split(" / ")[1]) for r in rows]
    return (f"D beats B by {min(gain):.2f}–{max(gain):.2f} over the subjects; B picks the true HRF within one "
            f"library step for {100 * min(high):.0f}–{100 * max(high):.0f} % of the high-signal voxels (the quarter "
            "with the largest true-amplitude sd / thermal-noise sd). `write_betas` s: fit, written as int16 NIfTI "
            "and cached; rerun s: the same call again, every session cached.")


def accuracy(run: Session, root: str | None, subjects, sessions):
    """Models A-D on mini-NSD against the simulation's truth, one row per subject."""
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-glm-")
        root = str(Path(tmp.name) / "mini-nsd")
        print(f"generating mini-NSD (default size, seed 0) in {root} ...")
        mini.generate(root, seed=0, size="default", progress=False)
    manifest = mini.read_manifest(root)
    work = tempfile.TemporaryDirectory(prefix="bench-glm-work-")
    rows = []
    for s in subjects:
        cfg = RunConfig(dataset="mini", subject=s, workdir=work.name, nsd_root=root)
        n_sess = int(manifest["spec"]["n_sessions"])
        todo = list(range(1, min(sessions or n_sess, n_sess) + 1))
        t0 = time.perf_counter()
        write_betas(cfg, sessions=todo, progress=False)
        secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_betas(cfg, sessions=todo, progress=False)
        rerun = time.perf_counter() - t0
        d = glm_diagnostics(cfg, sessions=todo, progress=False)
        tr = mini.truth(root, s)
        pcs = [int(d["per_session"][k]["n_pcs"]) for k in todo]
        rows.append(accuracy_row(s, len(todo), model_accuracy(d, tr)["median_r"], hrf_recovery(d, tr), pcs,
                                 secs, rerun))
        print(rows[-1])
    spec = manifest["spec"]
    run.table("accuracy", f"Accuracy on mini-NSD (size {manifest['size']}, seed {manifest['seed']}, world version "
              f"{manifest['version']}; {spec['n_runs']} runs × {spec['run_volumes']} volumes per session): median over "
              "nsdgeneral voxels of the per-voxel correlation over trials between betas and the true single-trial "
              "amplitudes",
              ["subject", "sessions", "A: canonical HRF", "B: library HRF", "C: + GLMdenoise", "D: + ridge",
               "B's HRF exact / ±1 step, all voxels", "… high-signal quarter", "PCs chosen", "`write_betas` s",
               "rerun s"], rows,
              ["{}", "{}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.3f}", "{}", "{}", "{}", "{:.0f}", "{:.2f}"],
              note=accuracy_note(rows))


# ------------------------------------------------------------------ synthetic NSD session
def nsd_session(n_vox: int, seed: int = 0):
    """A synthetic session of NSD's size; returns runs (float32) and designs."""
    rng = np.random.default_rng(seed)
    lib = hrf_library(NSD_TR, 3.0)
    n_time = 226
    conds = rng.permutation(np.repeat(np.arange(250), 3))
    runs, designs, k = [], [], 0
    hidx = rng.integers(0, lib.shape[1], n_vox)
    resp = rng.random(n_vox) < 0.5
    shared = rng.standard_normal((3, n_vox)).astype(np.float32)
    for r in range(12):
        n = 63 if r % 2 == 0 else 62
        on = 4.0 * np.arange(n) + 4.0  # NSD: a trial every 4 s (3 TRs of 4/3 s)
        designs.append(TrialDesign(on, conds[k:k + n]))
        k += n
        x = trial_regressors(n_time, NSD_TR, on, lib).astype(np.float32)
        y = np.zeros((n_time, n_vox), np.float32)
        for h in range(lib.shape[1]):
            idx = np.flatnonzero((hidx == h) & resp)
            if idx.size:
                y[:, idx] = x[h] @ (2.0 + rng.standard_normal((n, idx.size)).astype(np.float32))
        y += rng.standard_normal((n_time, 3)).astype(np.float32) @ shared
        y += rng.standard_normal((n_time, n_vox)).astype(np.float32)
        y = 1000.0 * (1.0 + y / 100.0)
        runs.append(y)
    return runs, designs


def _peak(fn):
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, secs, peak / MB


def _dense_ols_all_hrfs(runs, designs):
    """Peer: model B as dense least squares over the whole session, once per library HRF."""
    lib = hrf_library(NSD_TR, 3.0)
    n_time = [y.shape[0] for y in runs]
    starts = np.concatenate([[0], np.cumsum([d.n_trials for d in designs])])
    yp = []
    blocks = []
    for r, (y, d) in enumerate(zip(runs, designs)):
        p = polynomial_basis(n_time[r], int(np.floor(n_time[r] * NSD_TR / 120 + 0.5)))
        yp.append(y - p @ (p.T @ y))
        blocks.append((p, trial_regressors(n_time[r], NSD_TR, d.onsets, lib)))
    yall = np.concatenate(yp).astype(np.float32)
    best = np.full(yall.shape[1], -np.inf)
    tot = (yall.astype(np.float64) ** 2).sum(0)
    for h in range(lib.shape[1]):
        x = np.zeros((yall.shape[0], starts[-1]), np.float32)
        row = 0
        for r, (p, xl) in enumerate(blocks):
            xr = xl[h] - p @ (p.T @ xl[h])
            x[row:row + n_time[r], starts[r]:starts[r + 1]] = xr
            row += n_time[r]
        b, *_ = np.linalg.lstsq(x, yall, rcond=None)
        res = yall - x @ b
        best = np.maximum(best, 1 - (res.astype(np.float64) ** 2).sum(0) / tot)
    return best


def betas_note(n_vox: int, n_trials: int, whole_brain: int = WHOLE_BRAIN) -> str:
    """The whole fit's memory in words: the kept betas here, and input + betas at ``whole_brain`` voxels."""
    betas = 4 * n_trials * 4  # models A-D, float32, per voxel
    inp = 12 * 226 * 4  # the session's float32 series per voxel
    return (f"Timed with `tracemalloc` on. The four models' betas (4 × {n_trials} × 4 B per voxel) are "
            f"{betas * n_vox / MB:.0f} MiB of the peak; the rest is one chunk's working set. At {whole_brain:,} "
            f"voxels (a whole-brain grid) the input is {inp * whole_brain / GiB:.1f} GiB and the betas of all four "
            f"models {betas * whole_brain / GiB:.1f} GiB (`keep_betas=(\"D\",)` keeps one: "
            f"{betas / 4 * whole_brain / GiB:.1f} GiB), plus one chunk's working set.")


def speed(run, n_vox: int, n_peer: int, chunks, repeats: int):
    """Whole fits (seconds over repeats, traced peak) and models A+B against the dense-OLS peer."""
    runs, designs = nsd_session(n_vox)
    inp = sum(y.nbytes for y in runs) / MB
    rows = []
    for chunk in chunks:
        times, peaks = [], []
        for _ in range(repeats):
            _, secs, peak = _peak(lambda c=chunk: GLMSingle(tr=NSD_TR, verbose=False, chunk_size=c).fit(runs, designs))
            times.append(secs)
            peaks.append(peak)
            gc.collect()
        rows.append([f"models A–D, `chunk_size={chunk}`", spread(times), spread(times)["median"] / n_vox * 1000,
                     max(peaks)])
        print(rows[-1])
    run.table("whole_fit", f"Whole fit, synthetic NSD-size session (12 runs × 226 volumes at TR 4/3 s, 750 trials, "
              f"{n_vox:,} voxels, float32; the input is {inp:.0f} MiB)",
              ["run", "seconds", "s per 1,000 voxels (median)", "peak traced memory beyond the input MiB"],
              rows, ["{}", "{:.1f}", "{:.2f}", "{:.0f}"], note=betas_note(n_vox, sum(d.n_trials for d in designs)))
    sub = [y[:, :n_peer].copy() for y in runs]
    ours = lambda: GLMSingle(tr=NSD_TR, glmdenoise=False, fracridge=False, keep_betas=("B",),  # noqa: E731
                             verbose=False).fit(sub, designs)
    st, out = run.compare(("dense lstsq per HRF", lambda: _dense_ols_all_hrfs(sub, designs)),
                          [("nsdlib per-run blocks", ours)], repeats)
    diff = float(np.abs(out["dense lstsq per HRF"] - out["nsdlib per-run blocks"].results_["B"].r2).max())
    run.table("ols", f"Models A+B only, {n_peer:,} voxels: the same single-trial fits as one dense least-squares "
              "problem over the whole session per library HRF (`np.linalg.lstsq`, 2,712 × 750 design)",
              ["method", "seconds", "nsdlib speed-up", "max abs. R² difference"],
              [["peer: dense `lstsq` per HRF", st["dense lstsq per HRF"]["seconds"], None, None],
               ["nsdlib per-run blocks", st["nsdlib per-run blocks"]["seconds"], st["nsdlib per-run blocks"]["ratio"],
                diff]], ["{}", "{:.2f}", "{:.1f}×", "{:.1e}"])


# --------------------------------------------------------------------------- ridge step
def ridge(run, n_vox: int, repeats: int):
    import fracridge

    runs, designs = nsd_session(n_vox, seed=1)
    lib = hrf_library(NSD_TR, 3.0)
    h = 9
    n_time = [y.shape[0] for y in runs]
    xs, ys = [], []
    for y, d, t in zip(runs, designs, n_time):
        p = polynomial_basis(t, int(np.floor(t * NSD_TR / 120 + 0.5)))
        x = trial_regressors(t, NSD_TR, d.onsets, lib[:, h])
        xs.append(x - p @ (p.T @ x))
        ys.append((y - p @ (p.T @ y)).astype(np.float64))
    n_tr = [x.shape[1] for x in xs]
    starts = np.concatenate([[0], np.cumsum(n_tr)])
    xfull = np.zeros((sum(n_time), starts[-1]))
    row = 0
    for r, x in enumerate(xs):
        xfull[row:row + n_time[r], starts[r]:starts[r + 1]] = x
        row += n_time[r]
    yfull = np.concatenate(ys)
    fr_sorted = np.sort(FRACS)

    def blocks():  # what GLMSingle runs: per-run SVDs, all fractions, all voxels at once
        parts = [np.linalg.svd(x, full_matrices=False) for x in xs]
        s = np.concatenate([p[1] for p in parts])
        b0 = np.concatenate([p[0].T @ y for p, y in zip(parts, ys)]) / s[:, None]
        alphas = glm._fraction_alphas(s, b0, fr_sorted)
        out = np.empty((fr_sorted.size, starts[-1], n_vox))
        for i in range(fr_sorted.size):
            rot = b0 * (s[:, None] ** 2 / (s[:, None] ** 2 + alphas[i][None, :]))
            for r, p in enumerate(parts):
                out[i, starts[r]:starts[r + 1]] = p[2].T @ rot[starts[r]:starts[r + 1]]
        return out

    peer = ("peer fracridge, one call per fraction (GLMsingle)",
            lambda: np.stack([fracridge.fracridge(xfull, yfull, float(f), jit=False)[0] for f in fr_sorted]))
    ours = [("nsdlib per-run blocks (what GLMSingle runs)", blocks),
            ("nsdlib fractional_ridge (whole design)", lambda: glm.fractional_ridge(xfull, yfull, fr_sorted)[0]),
            ("peer fracridge, all fractions in one call",
             lambda: np.moveaxis(fracridge.fracridge(xfull, yfull, fr_sorted, jit=False)[0], 1, 0))]
    st, out = run.compare(peer, ours, repeats)
    ref = out[ours[0][0]]
    peaks = {name: _peak(fn)[2] for name, fn in [peer, *ours]}  # one more call each, traced, untimed
    rows = [[name, st[name]["seconds"], st[name].get("ratio"),
             float(np.abs(out[name] - ref).max() / np.abs(ref).max()), peaks[name]]
            for name in [peer[0]] + [o[0] for o in ours]]
    run.table("ridge_step", f"The ridge step for one HRF group of {n_vox:,} voxels, 20 fractions, NSD session size "
              "(2,712 × 750 design)", ["method", "seconds", "speed-up vs GLMsingle's pattern",
                                       "max rel. diff to nsdlib's blocks", "peak traced MiB"], rows,
              ["{}", "{:.2f}", "{:.1f}×", "{:.0e}", "{:.0f}"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", nargs="+", default=["accuracy", "speed", "ridge"], choices=["accuracy", "speed", "ridge"])
    ap.add_argument("--root", default=None, help="mini-NSD root (default size, seed 0); generated if absent")
    ap.add_argument("--subjects", nargs="+", type=int, default=[1, 2, 5, 7])
    ap.add_argument("--sessions", type=int, default=0, help="first N sessions per subject (default 0: all)")
    ap.add_argument("--voxels", type=int, default=15000, help="voxels of the synthetic NSD-size session")
    ap.add_argument("--peer-voxels", type=int, default=1000, help="voxels for the dense-OLS peer")
    ap.add_argument("--chunk-size", type=int, nargs="+", default=[20000, 5000], help="GLMSingle chunk sizes to time")
    ap.add_argument("--ridge-voxels", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    argv = list(argv) if argv is not None else None
    if "accuracy" in args.part:  # benchmarks/results/glm_accuracy.json
        run = Session("glm_accuracy", "benchmarks/bench_glm.py", argv=argv)
        accuracy(run, args.root, args.subjects, args.sessions)
        run.write(args.out)
    if {"speed", "ridge"} & set(args.part):  # benchmarks/results/glm.json
        run = Session("glm", "benchmarks/bench_glm.py", argv=argv, versions=("fracridge",))
        if "speed" in args.part:
            speed(run, args.voxels, args.peer_voxels, args.chunk_size, args.repeats)
        if "ridge" in args.part:
            ridge(run, args.ridge_voxels, args.repeats)
        run.write(args.out)


if __name__ == "__main__":
    main()
