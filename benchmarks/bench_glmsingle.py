"""nsdlib.glm.GLMSingle against GLMsingle itself, on the same simulated session.

GLMsingle (https://github.com/cvnlab/GLMsingle) is not on PyPI. Get its Python package once,
outside this repository, and point the benchmark at it::

    git clone https://github.com/cvnlab/GLMsingle /tmp/glmsingle-peer
    .venv/bin/python benchmarks/bench_glmsingle.py --glmsingle /tmp/glmsingle-peer

(or set ``GLMSINGLE_PATH``; its requirements -- fracridge, scikit-learn, matplotlib, h5py,
nibabel, pandas -- are in this project's venv). Without it, the script says so and stops,
leaving the last results file as it is.

The simulation (:func:`simulate`): ``--runs`` runs of 200 volumes at TR 1 s, a 3-s trial every
4 s from 8 s (45 trials per run), conditions shown three times each in a random order; half the
voxels respond, each with an HRF drawn from a double-gamma family (peak time scaled by 0.8-1.25:
neither package's library), with single-trial amplitudes ``2 + condition effect + trial
noise`` (the truth); thermal noise, three components of noise shared across voxels, and a
linear-plus-quadratic drift per run and voxel; 1000 x (1 + signal/100) like a BOLD series.

Both packages fit models A-D with their defaults (GLMsingle: ``wantlibrary``, ``wantglmdenoise``,
``wantfracridge``, one job, outputs in memory only; nsdlib: ``GLMSingle(tr=1, stim_dur=3)``, one BLAS
thread). Accuracy: median over responsive voxels of the per-voxel correlation, over trials,
between each model's single-trial betas and the true amplitudes. GLMsingle's type A is an ON-OFF
model (one beta per voxel, no single-trial betas), so its A has no score. Time: the protocol's
interleaved repeats (``--repeats`` at each of ``--voxels``; at ``--peer-once`` voxel counts
GLMsingle runs once only and nsdlib ``--repeats`` times: three repeats of GLMsingle at 10,000
voxels do not fit a session here). Memory: peak resident memory of a whole fit in a fresh child
process, minus that before the fit, at several voxel counts (``--memory-voxels``, and fewer for
GLMsingle, ``--peer-memory-voxels``); a line through them gives the model at ``--whole-brain``
voxels (an upper bound for nsdlib, whose working set stops growing at ``chunk_size`` voxels).

Writes ``benchmarks/results/glmsingle.json``. Run: ``.venv/bin/python benchmarks/bench_glmsingle.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import psutil
from _protocol import Session, child_json, peak_rss, reset_peak_rss, single_thread, spread
from scipy.stats import gamma

from nsdlib.glm import GLMSingle, TrialDesign

TR, STIM, N_TIME, EVERY, FIRST = 1.0, 3.0, 200, 4.0, 8.0
MODELS = ("A", "B", "C", "D")
GiB = 1 << 30
MiB = 1 << 20


def _hrf(scale: float) -> np.ndarray:
    """A double-gamma HRF with its time axis stretched by ``scale``, for a 3-s stimulus at TR 1 s."""
    t = np.arange(0, 32, 0.1)
    h = gamma.pdf(t / scale, 6) - gamma.pdf(t / scale, 16) / 6
    h = np.convolve(h, np.ones(int(STIM / 0.1)))[: t.size]
    h = h[:: int(TR / 0.1)]
    return h / h.max()


def simulate(n_vox: int, n_runs: int = 8, seed: int = 0):
    """A session with single-trial truth.

    Returns
    -------
    runs : list of ndarray (N_TIME, n_vox) float32
    designs : list of TrialDesign
    onehot : list of ndarray (N_TIME, n_conditions) -- GLMsingle's design matrices
    truth : ndarray (n_trials, n_vox) -- true single-trial amplitudes (0 for silent voxels)
    responsive : ndarray (n_vox,) bool
    """
    rng = np.random.default_rng(seed)
    onsets = FIRST + EVERY * np.arange(int((N_TIME - FIRST - 16) // EVERY) + 1)
    n_per = onsets.size
    n_trials = n_runs * n_per
    n_cond = n_trials // 3
    conds = rng.permutation(np.repeat(np.arange(n_cond), 3))
    responsive = rng.random(n_vox) < 0.5
    effect = rng.standard_normal((n_cond, n_vox)).astype(np.float32)
    truth = (2.0 + effect[conds] + 0.5 * rng.standard_normal((n_trials, n_vox), dtype=np.float32)) * responsive
    hrfs = np.stack([_hrf(s) for s in np.linspace(0.8, 1.25, 8)])  # (8, len)
    which = rng.integers(0, len(hrfs), n_vox)
    loadings = rng.standard_normal((3, n_vox)).astype(np.float32)
    t01 = np.linspace(-1, 1, N_TIME, dtype=np.float32)[:, None]
    runs, designs, onehot = [], [], []
    for r in range(n_runs):
        c = conds[r * n_per:(r + 1) * n_per]
        amp = truth[r * n_per:(r + 1) * n_per]
        stick = np.zeros((N_TIME, n_per), np.float32)
        stick[(onsets / TR).astype(int), np.arange(n_per)] = 1.0
        y = np.zeros((N_TIME, n_vox), np.float32)
        for k, h in enumerate(hrfs):
            cols = np.flatnonzero(which == k)
            x = np.stack([np.convolve(stick[:, j], h)[:N_TIME] for j in range(n_per)], 1).astype(np.float32)
            y[:, cols] = x @ amp[:, cols]
        y += 1.5 * rng.standard_normal((N_TIME, n_vox), dtype=np.float32)
        y += rng.standard_normal((N_TIME, 3), dtype=np.float32) @ loadings
        y += t01 * rng.standard_normal(n_vox, dtype=np.float32) * 2 + t01**2 * rng.standard_normal(n_vox,
                                                                                                    dtype=np.float32)
        runs.append((1000.0 * (1.0 + y / 100.0)).astype(np.float32))
        designs.append(TrialDesign(onsets.copy(), c.copy()))
        oh = np.zeros((N_TIME, n_cond), np.float32)
        oh[(onsets / TR).astype(int), c] = 1.0
        onehot.append(oh)
    return runs, designs, onehot, truth, responsive


def median_r(betas: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Median over voxels in ``mask`` of the correlation over trials of betas and truth."""
    b, t = betas[:, mask].astype(np.float64), truth[:, mask].astype(np.float64)
    b = b - b.mean(0)
    t = t - t.mean(0)
    r = (b * t).sum(0) / np.sqrt((b * b).sum(0) * (t * t).sum(0))
    return float(np.median(r))


# ----------------------------------------------------------------------------- the two fits


def fit_ours(runs, designs, hrfs=None, chunk_size: int = 20000) -> dict:
    model = GLMSingle(tr=TR, stim_dur=STIM, hrfs=hrfs, chunk_size=chunk_size, verbose=False,
                      blas_threads=1).fit(runs, designs)
    return {m: model.results_[m].betas for m in MODELS}


def hrf_check(voxels, out) -> None:
    """nsdlib's accuracy with its own HRF library and with GLMsingle's (``glmsingle_hrf.json``)."""
    from glmsingle.hrf.gethrf import getcanonicalhrflibrary

    run = Session("glmsingle_hrf", "benchmarks/bench_glmsingle.py")
    theirs = getcanonicalhrflibrary(STIM, TR).T.astype(np.float64)  # (n_samples, 20)
    rows = []
    for n_vox in voxels:
        runs, designs, _, truth, resp = simulate(n_vox)
        own, lib = fit_ours(runs, designs), fit_ours(runs, designs, theirs)
        rows += [[f"{n_vox:,}", m, median_r(own[m], truth, resp), median_r(lib[m], truth, resp)] for m in MODELS]
    run.table("library", "nsdlib's accuracy with its own HRF library and with GLMsingle's (the same simulation)",
              ["voxels", "model", "nsdlib, its library (default)", "nsdlib, GLMsingle's library (`hrfs=`)"],
              rows, ["{}", "{}", "{:.3f}", "{:.3f}"])
    run.write(out)


def load_glmsingle(path):
    """The peer's ``GLM_single`` class, from ``path`` (or GLMSINGLE_PATH), or None with the reason."""
    path = path or os.environ.get("GLMSINGLE_PATH")
    if path:
        sys.path.insert(0, str(path))
    try:
        mod = importlib.import_module("glmsingle.glmsingle")
    except ImportError as err:
        return None, (f"glmsingle could not be imported ({err}); it is not on PyPI: clone "
                      "https://github.com/cvnlab/GLMsingle and pass --glmsingle PATH (or set GLMSINGLE_PATH)")
    return mod.GLM_single, None


def fit_peer(GLM_single, runs, onehot) -> dict:
    params = {"wantfileoutputs": [0, 0, 0, 0], "wantmemoryoutputs": [1, 1, 1, 1], "n_jobs": 1, "seed": 0}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="glmsingle-out-") as tmp:
        warnings.simplefilter("ignore")  # (it makes its output folder even when writing nothing there)
        out = GLM_single(params).fit(onehot, [y.T for y in runs], STIM, TR, outputdir=tmp, figuredir=None)
    betas = {"A": None}
    for m, key in zip("BCD", ("typeb", "typec", "typed")):
        b = np.asarray(out[key]["betasmd"])
        betas[m] = b.reshape(b.shape[0], -1).T  # (voxels, 1, 1, trials) -> (trials, voxels)
    return betas


# ----------------------------------------------------------------------------- memory


def child_memory(which: str, n_vox: int, path, chunk_size: int = 20000) -> None:
    """In a fresh interpreter: peak resident memory of one fit minus that before it."""
    single_thread()
    runs, designs, onehot, _, _ = simulate(n_vox)
    GLM_single = load_glmsingle(path)[0] if which == "glmsingle" else None
    reset = reset_peak_rss()
    base = psutil.Process().memory_info().rss
    if which == "glmsingle":
        fit_peer(GLM_single, runs, onehot)
    else:
        fit_ours(runs, designs, chunk_size=chunk_size)
    print(json.dumps({"extra": peak_rss() - base, "input": sum(y.nbytes for y in runs), "reset": reset}))


def measure_memory(which: str, n_vox: int, path, chunk_size: int = 20000) -> dict:
    cmd = [sys.executable, __file__, "--child", which, str(n_vox), str(chunk_size)]
    cmd += ["--glmsingle", str(path)] if path else []
    return child_json(cmd)


def chunked_memory(counts, chunk_size: int, whole_brain: int, out) -> None:
    """nsdlib's peak memory at voxel counts beyond one chunk, and the line through them."""
    run = Session("glmsingle_chunked", "benchmarks/bench_glmsingle.py")
    pts = [(v, measure_memory("nsdlib", v, None, chunk_size)) for v in counts]
    rows = [[f"{v:,}", m["input"] / MiB, m["extra"] / MiB] for v, m in pts]
    a0, b0 = _line([v for v, _ in pts], [m["extra"] for _, m in pts])
    inp = pts[-1][1]["input"] / pts[-1][0]
    rows.append([f"{whole_brain:,} (model: {a0 / MiB:.0f} MiB + {b0 / 1024:.1f} KiB per voxel)",
                 inp * whole_brain / MiB, (a0 + b0 * whole_brain) / MiB])
    run.table("chunked", f"nsdlib's peak memory above the input with `chunk_size={chunk_size:,}` (all four models' "
              "betas kept), measured in a fresh child process, and the line through the measured points (MiB)",
              ["voxels", "input MiB", "peak above the input MiB"], rows, ["{}", "{:,.0f}", "{:,.0f}"])
    run.write(out)


def _line(xs, ys):
    """Least-squares ``a + b x`` through the points."""
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glmsingle", default=None, help="folder holding GLMsingle's python package (or GLMSINGLE_PATH)")
    ap.add_argument("--voxels", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--peer-once", type=int, nargs="*", default=[10000],
                    help="voxel counts at which GLMsingle runs once (not repeated): too slow for repeats here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-voxels", type=int, nargs="+", default=[2000, 5000, 10000])
    ap.add_argument("--peer-memory-voxels", type=int, nargs="+", default=[500, 1000],
                    help="voxel counts of GLMsingle's memory measurements (a whole fit each: slow)")
    ap.add_argument("--whole-brain", type=int, default=1_000_000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--hrf-check", action="store_true",
                    help="only nsdlib's accuracy with its HRF library and GLMsingle's (glmsingle_hrf.json)")
    ap.add_argument("--chunked-memory", type=int, nargs="*", default=None, metavar="VOXELS",
                    help="only nsdlib's memory with --chunk-size voxels per chunk at these counts "
                         "(glmsingle_chunked.json): the whole-brain model beyond one chunk")
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child_memory(a.child[0], int(a.child[1]), a.glmsingle, int(a.child[2]))
        return
    if a.chunked_memory:
        chunked_memory(a.chunked_memory, a.chunk_size, a.whole_brain, a.out)
        return
    GLM_single, why = load_glmsingle(a.glmsingle)
    if GLM_single is None:
        print(f"bench_glmsingle: {why}; nothing measured")
        return
    if a.hrf_check:
        hrf_check(a.voxels, a.out)
        return
    run = Session("glmsingle", "benchmarks/bench_glmsingle.py", versions=("fracridge",))
    speed_rows, acc_rows = [], []
    for n_vox in a.voxels:
        runs, designs, onehot, truth, resp = simulate(n_vox)
        ours = ("nsdlib", lambda r=runs, d=designs: fit_ours(r, d))
        if n_vox in a.peer_once:  # the peer once, ours the protocol's repeats around it
            t0 = time.perf_counter()
            peer_out = fit_peer(GLM_single, runs, onehot)
            t_peer = time.perf_counter() - t0
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                out_ours = ours[1]()
                times.append(time.perf_counter() - t0)
            out = {"GLMsingle": peer_out, "nsdlib": out_ours}
            st = {"GLMsingle": {"seconds": t_peer},
                  "nsdlib": {"seconds": spread(times), "ratio": spread([t_peer / t for t in times])}}
        else:
            st, out = run.compare(("GLMsingle", lambda r=runs, o=onehot: fit_peer(GLM_single, r, o)), [ours],
                                  a.repeats)
        speed_rows.append([f"{n_vox:,}" + (" (GLMsingle run once)" if n_vox in a.peer_once else ""),
                           st["GLMsingle"]["seconds"], st["nsdlib"]["seconds"], st["nsdlib"]["ratio"]])
        for m in MODELS:
            peer_b = out["GLMsingle"][m]
            acc_rows.append([f"{n_vox:,}", m, None if peer_b is None else median_r(peer_b, truth, resp),
                             median_r(out["nsdlib"][m], truth, resp)])
        print(speed_rows[-1], acc_rows[-4:])
        del out, runs
    n_runs = 8
    label = (f"{n_runs} runs × {N_TIME} volumes at TR {TR:g} s, {n_runs * 45} trials (120 conditions × 3)")
    run.table("speed", f"Whole fit, models A–D, simulated session of {label} (seconds)",
              ["voxels", "GLMsingle s", "nsdlib `GLMSingle` s", "nsdlib speed-up"], speed_rows,
              ["{}", "{:.1f}", "{:.2f}", "{:.0f}×"])
    run.table("accuracy", "Accuracy: median over responsive voxels of r(betas, true single-trial amplitudes)",
              ["voxels", "model", "GLMsingle", "nsdlib"], acc_rows, ["{}", "{}", "{:.3f}", "{:.3f}"],
              note="GLMsingle's type A is its ON-OFF model (one beta per voxel), so it has no single-trial score.")
    # memory: ours (and the peer, where importable) at several voxel counts, a line through them
    mem_rows = []
    for which, counts in (("nsdlib", a.memory_voxels), ("glmsingle", a.peer_memory_voxels)):
        pts = [(v, measure_memory(which, v, a.glmsingle)) for v in counts]
        for v, m in pts:
            mem_rows.append([which, f"{v:,}", m["input"] / MiB, m["extra"] / MiB])
        a0, b0 = _line([v for v, _ in pts], [m["extra"] for _, m in pts])
        inp = pts[-1][1]["input"] / pts[-1][0]
        mem_rows.append([which, f"{a.whole_brain:,} (model: {a0 / MiB:.0f} MiB + {b0 / 1024:.1f} KiB per voxel)",
                         inp * a.whole_brain / MiB, (a0 + b0 * a.whole_brain) / MiB])
        print(mem_rows[-1])
    run.table("memory", "Peak resident memory of a whole fit above the input, measured in a fresh child process "
              "(MiB); the last row of each is the line through the measured points",
              ["package", "voxels", "input MiB", "peak above the input MiB"], mem_rows,
              ["{}", "{}", "{:,.0f}", "{:,.0f}"])
    run.write(a.out)


if __name__ == "__main__":
    main()
