"""Speed, accuracy and memory of nsdlib.ridge against himalaya and Brain-Diffuser's scikit-learn loop.

Under the benchmark protocol (``_protocol.py``: one thread per library, every timing repeated
``--repeats`` times with peer and ours interleaved, median ratio and its range, load recorded),
on synthetic float32 data (low rank plus noise, offsets per target dimension):

1. **himalaya's strongest workload**: ``himalaya.kernel_ridge.KernelRidgeCV`` (torch backend,
   float32, linear kernel, 5 contiguous folds, 10 alphas, one alpha per target, its default
   ``fit_intercept=False``) fitted and used for prediction, against
   ``nsdlib.ridge.Ridge(alphas, cv=5, alpha_per="target", fit_intercept=False)`` fit + predict,
   at two scales (``SCALES``); the max relative difference of the predictions and the share of
   targets given the same alpha.
2. **Brain-Diffuser's workload**: ``sklearn.linear_model.Ridge(alpha=60000, fit_intercept=True)``
   fitted and used for prediction once per token on float64 data (Brain-Diffuser's loop), against
   :func:`nsdlib.ridge.ridge_predict` (float32 and float64) and :class:`nsdlib.ridge.Ridge`
   fit + predict, at two scales.
3. **Cross-validation's cost**: 10 alphas by GCV (one per token) and by 5-fold CV (one for the
   regression) as multiples of one fixed-alpha ``ridge_predict``; and the fixed-alpha
   variants of himalaya on one token against scikit-learn.
4. **Memory**: peak resident memory of ``ridge_predict``, ``Ridge.fit``, ``Ridge.fit`` +
   ``predict`` and 5-fold CV, each in a fresh child process (peak counter reset just before
   the call, resident memory before it subtracted), at three reduced scales, beside a model of
   what the code allocates (:func:`model_bytes`), then the model at subject 1's CLIP-vision
   shape (8,859 x 15,724 -> 257 x 768, 982 test rows).

Writes ``benchmarks/results/ridge.json`` (speed) and ``ridge_memory.json`` (memory; ``--parts``
chooses); ``make bench-report`` puts their tables into RESULTS.md.
Run: ``.venv/bin/python benchmarks/bench_ridge.py [--repeats 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import warnings

import numpy as np
import psutil
import torch
from _protocol import Session, child_json, peak_rss, reset_peak_rss, single_thread
from sklearn.linear_model import Ridge as SkRidge

from nsdlib.ridge import Ridge, ridge_predict

DIM = 768
ALPHA = 60_000.0
ALPHAS = np.logspace(3.5, 5.5, 10)
GiB = 1 << 30
MiB = 1 << 20
BATCH_BYTES = 1 << 28  # nsdlib.ridge's default batch of target columns on the device
# (n, p, tokens, n_test): himalaya's workload, Brain-Diffuser's workload, memory
HIMALAYA_SCALES = [(1000, 2000, 1, 250), (2000, 4000, 2, 500)]
TOKEN_SCALES = [(1000, 2000, 16, 250), (2000, 4000, 64, 500)]
MEMORY_SCALES = [(1000, 2000, 8, 250), (1500, 3000, 16, 375), (2000, 4000, 16, 500)]
FULL = (8859, 15724, 257, 982)  # subject 1's CLIP-vision regression
# glibc returns every block of 1 MiB or more to the system when freed (its default threshold
# adapts up to 32 MiB, so freed blocks of the reduced scales stay resident; at full scale every
# large block is above it): the resident memory then follows what is alive
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
KINDS = ("predict", "fit", "fit_predict", "cv")


def make_data(n, p, tokens, n_test, seed=0):
    """float32 betas-like inputs and low-rank-plus-noise token targets, built in row blocks."""
    rng = np.random.default_rng(seed)
    t = tokens * DIM
    X = rng.standard_normal((n, p), dtype=np.float32)
    Z = rng.standard_normal((n_test, p), dtype=np.float32)
    W = rng.standard_normal((p, 32), dtype=np.float32) / np.sqrt(p)
    mix = rng.standard_normal((32, t), dtype=np.float32)
    Y = np.empty((n, t), dtype=np.float32)
    for s in range(0, n, 256):
        Y[s:s + 256] = 3.0 * (X[s:s + 256] @ W) @ mix + rng.standard_normal((min(256, n - s), t), dtype=np.float32)
    Y += rng.standard_normal(t, dtype=np.float32)  # per-dimension offsets, so the intercept matters
    return X, Y.reshape(n, tokens, DIM), Z


def rel_diff(a, ref) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def sklearn_per_token(X, Y, Z, alpha, dtype=np.float64):
    """Brain-Diffuser's loop: one scikit-learn Ridge per token."""
    Xd, Zd = X.astype(dtype), Z.astype(dtype)
    out = np.zeros((Z.shape[0], Y.shape[1], Y.shape[2]), dtype=dtype)
    for i in range(Y.shape[1]):
        out[:, i] = SkRidge(alpha=alpha, max_iter=50000, fit_intercept=True).fit(Xd, Y[:, i].astype(dtype)).predict(Zd)
    return out


def _scale(n, p, tokens, m) -> str:
    return f"{n:,} × {p:,} → {tokens} × {DIM}, {m} test"


# ------------------------------------------------------------------------------ speed


def bench_himalaya(run: Session, scales, repeats):
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    set_backend("torch", on_error="raise")
    rows = [_himalaya_scale(run, KernelRidgeCV, *make_data(n, p, T, m), repeats) for n, p, T, m in scales]
    run.table("himalaya_cv", "himalaya's KernelRidgeCV against nsdlib's Ridge: 5-fold CV, 10 alphas, one alpha per "
              "target, fit + predict (seconds: median and range over the repeats)",
              ["scale", "himalaya `KernelRidgeCV` (torch) s", "nsdlib `Ridge(alphas, cv=5, alpha_per=\"target\")` s",
               "nsdlib speed-up", "max rel. diff of predictions", "same alpha (share of targets)"],
              rows, ["{}", "{:.2f}", "{:.2f}", "{:.2f}×", "{:.1e}", "{:.3f}"])
    set_backend("numpy", on_error="raise")


def _himalaya_scale(run: Session, KernelRidgeCV, X, Y, Z, repeats) -> list:
    n, T, m = X.shape[0], Y.shape[1], Z.shape[0]
    Y2 = Y.reshape(n, T * DIM)
    himalaya = KernelRidgeCV(alphas=ALPHAS, kernel="linear", cv=5)
    ours = Ridge(alphas=ALPHAS, cv=5, alpha_per="target", fit_intercept=False, device="cpu", verbose=False)
    stats, out = run.compare(
        ("himalaya", lambda: (np.asarray(himalaya.fit(X, Y2).predict(Z)), np.asarray(himalaya.best_alphas_))),
        [("nsdlib", lambda: (ours.fit(X, Y2).predict(Z), ours.alpha_))], repeats)
    (ph, ah), (po, ao) = out["himalaya"], out["nsdlib"]
    same = float(np.mean(np.isclose(ah, ao, rtol=1e-5)))
    row = [_scale(n, X.shape[1], T, m), stats["himalaya"]["seconds"], stats["nsdlib"]["seconds"],
           stats["nsdlib"]["ratio"], rel_diff(po, ph), same]
    print("himalaya", row)
    return row


def bench_tokens(run: Session, scales, repeats):
    rows = []
    for n, p, T, m in scales:
        rows += _tokens_scale(run, *make_data(n, p, T, m), repeats)
    run.table("tokens", "Brain-Diffuser's per-token scikit-learn loop against nsdlib, alpha 60,000, intercept on",
              ["scale", "what", "seconds", "speed-up vs scikit-learn", "max rel. diff to scikit-learn"],
              rows, ["{}", "{}", "{:.2f}", "{:.1f}×", "{:.1e}"])


def _tokens_scale(run: Session, X, Y, Z, repeats) -> list:
    n, p, T, m = X.shape[0], X.shape[1], Y.shape[1], Z.shape[0]
    Y64 = Y.astype(np.float64)
    stats, out = run.compare(
        ("scikit-learn", lambda: sklearn_per_token(X, Y64, Z, ALPHA)),
        [("ridge_predict float32", lambda: ridge_predict(X, Y, Z, ALPHA, device="cpu", verbose=False)),
         ("ridge_predict float64", lambda: ridge_predict(X, Y, Z, ALPHA, device="cpu", dtype=torch.float64,
                                                         verbose=False)),
         ("Ridge fit + predict float32", lambda: Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y).predict(Z))],
        repeats)
    ref = out["scikit-learn"]
    rows = [[_scale(n, p, T, m), "scikit-learn `Ridge` per token, float64 (peer)",
             stats["scikit-learn"]["seconds"], None, None]]
    for label in ("ridge_predict float32", "ridge_predict float64", "Ridge fit + predict float32"):
        rows.append(["", f"nsdlib {label}", stats[label]["seconds"], stats[label]["ratio"], rel_diff(out[label], ref)])
    print("tokens", rows)
    return rows


def bench_cv_cost(run: Session, scale, repeats):
    n, p, T, m = scale
    X, Y, Z = make_data(n, p, T, m)
    stats, _ = run.compare(
        ("fixed alpha", lambda: ridge_predict(X, Y, Z, ALPHA, device="cpu", verbose=False)),
        [("GCV, one alpha per token", lambda: ridge_predict(X, Y, Z, alphas=ALPHAS, cv="gcv", alpha_per="token",
                                                             device="cpu", verbose=False)),
         ("5-fold, one alpha for the regression", lambda: ridge_predict(X, Y, Z, alphas=ALPHAS, cv=5, device="cpu",
                                                                        verbose=False))], repeats)
    rows = [[label, stats[label]["seconds"], {k: 1 / v if k != "n" else v for k, v in stats[label]["ratio"].items()}]
            for label in ("GCV, one alpha per token", "5-fold, one alpha for the regression")]
    for r in rows:  # 1/ratio swaps min and max
        r[2]["min"], r[2]["max"] = r[2]["max"], r[2]["min"]
    rows.insert(0, ["one alpha (60,000)", stats["fixed alpha"]["seconds"], None])
    run.table("cv_cost", f"`ridge_predict` with 10 alphas chosen by cross-validation, {_scale(n, p, T, m)}",
              ["alphas", "seconds", "× one fixed-alpha `ridge_predict`"], rows, ["{}", "{:.2f}", "{:.1f}×"])


def bench_himalaya_fixed(run: Session, scale, repeats):
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidge as HKernelRidge
    from himalaya.ridge import Ridge as HRidge

    warnings.filterwarnings("ignore", message="Solving ridge is slower", category=UserWarning)
    n, p, _, m = scale
    X, Y, Z = make_data(n, p, 1, m)
    X64, Z64, y64, y32 = X.astype(np.float64), Z.astype(np.float64), Y[:, 0].astype(np.float64), Y[:, 0]

    def hima(backend, est, **kw):
        def fn():
            set_backend(backend, on_error="raise")
            Xb, Zb, yb = (X, Z, y32) if backend == "torch" else (X64, Z64, y64)
            return np.asarray(est(alpha=ALPHA, fit_intercept=True, **kw).fit(Xb, yb).predict(Zb), np.float64)
        return fn

    entries = [("nsdlib `ridge_predict` (float32)", lambda: ridge_predict(X, Y[:, :1], Z, ALPHA, device="cpu",
                                                                          verbose=False)[:, 0]),
               ("himalaya `KernelRidge` linear, numpy (float64)", hima("numpy", HKernelRidge, kernel="linear")),
               ("himalaya `KernelRidge` linear, torch (float32)", hima("torch", HKernelRidge, kernel="linear")),
               ("himalaya `Ridge`, torch (float32)", hima("torch", HRidge))]
    stats, out = run.compare(("scikit-learn", lambda: SkRidge(alpha=ALPHA).fit(X64, y64).predict(Z64)), entries,
                             repeats)
    set_backend("numpy", on_error="raise")
    rows = [["scikit-learn `Ridge` (float64, peer)", stats["scikit-learn"]["seconds"], None, None]]
    rows += [[label, stats[label]["seconds"], stats[label]["ratio"], rel_diff(out[label], out["scikit-learn"])]
             for label, _ in entries]
    run.table("himalaya_fixed", f"One token (768 targets), alpha 60,000, {_scale(n, p, 1, m)}",
              ["what", "seconds", "speed vs scikit-learn (> 1: faster)", "max rel. diff to scikit-learn"],
              rows, ["{}", "{:.2f}", "{:.2f}×", "{:.1e}"])


# ------------------------------------------------------------------------------ memory


def model_bytes(kind, n, p, t, m, n_alphas=10, k=5):
    """What nsdlib.ridge allocates beyond its inputs at the phase with the most memory alive.

    float32 work, float64 Gram matrices and factors; ``m`` test rows, ``b`` target columns per
    batch (``B`` bytes, doubled when a batch is a copy). See RESULTS.md for the derivation.
    """
    b = min(t, max(1, BATCH_BYTES // (4 * n)))
    B = 4 * n * b * (2 if b < t else 1)
    gram = 4 * n * p + 20 * n * n  # centred X; the Gram matrix (f64) with a block product and its f64 copy
    factor = 4 * n * p + 4 * m * p + 24 * n * n + 24 * m * n  # + X_test; Gram, shifted copy, Cholesky; test kernel
    stream = 4 * m * n + 4 * m * t + B + 8 * m * b  # the map M, the output, one batch and its product
    if kind == "predict":  # ridge_predict: X and the Gram matrix are released before streaming
        return max(gram, factor, stream)
    if kind == "fit":  # fixed alpha: the centred X kept (the Gram matrix waits for predict); the target
        return 4 * n * p + (4 * n * b if b < t else 0)  # statistics read batches in place, copied when partial
    if kind == "fit_predict":  # as predict, but X and the Gram matrix stay alive while the targets stream
        return max(gram, factor, 4 * n * p + 8 * n * n + stream)
    # 5-fold CV, one alpha for the regression (t > n): per fold U and Kva U (f32) kept; the fold's
    # kernel slices and their float32 copy while it is decomposed; a batch of the targets, their
    # Gram matrix, its root and the compressed targets with their fold products; then the fixed-alpha solve
    n_tr = n - n // k
    folds = k * (4 * n_tr * n_tr + 4 * (n - n_tr) * n_tr)
    return max(4 * n * p + 8 * n * n + folds + max(36 * n_tr * n_tr, 40 * n * n + B), factor, stream)


def child_memory(kind, n, p, tokens, n_test):
    """In a fresh interpreter: peak resident memory of one call minus that just before it
    (the kernel's peak counter is reset just before the call, ``/proc/self/clear_refs``)."""
    single_thread()
    torch.set_num_threads(1)
    X, Y, Z = make_data(n, p, tokens, n_test)
    ridge_predict(X[:50, :60], Y[:50, :1, :4], Z[:2, :60], ALPHA, device="cpu", verbose=False)  # warm-up
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what building the data freed goes back to the system
    reset = reset_peak_rss()
    base = psutil.Process().memory_info().rss
    if kind == "predict":
        ridge_predict(X, Y, Z, ALPHA, device="cpu", verbose=False)
    elif kind == "fit":
        Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y)
    elif kind == "fit_predict":
        Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y).predict(Z)
    else:
        ridge_predict(X, Y, Z, alphas=ALPHAS, cv=5, device="cpu", verbose=False)
    print(json.dumps({"base": base, "peak": peak_rss(), "reset": reset}))


def measure_memory(kind, n, p, tokens, n_test):
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(p), str(tokens), str(n_test)]
    m = child_json(cmd, env={**os.environ, **CHILD_ENV})
    return m["peak"] - m["base"], model_bytes(kind, n, p, tokens * DIM, n_test)


def bench_memory(run: Session, scales):
    rows, ratios = [], {}
    for kind in KINDS:
        for (n, p, T, m) in scales:
            extra, model = measure_memory(kind, n, p, T, m)
            ratios.setdefault(kind, []).append(extra / model)
            rows.append([kind, _scale(n, p, T, m), extra / MiB, model / MiB, extra / model])
            print("memory", rows[-1])
    run.table("memory_measured", "Peak memory above the inputs, measured in a fresh child process, against the model",
              ["call", "scale", "measured MiB", "model MiB", "measured / model"], rows,
              ["{}", "{}", "{:.0f}", "{:.0f}", "{:.2f}"])
    n, p, T, m = FULL
    inputs = 4 * (n * p + n * T * DIM + m * p)
    full = []
    for kind in KINDS:
        mod = model_bytes(kind, n, p, T * DIM, m)
        worst = max(ratios[kind])
        full.append([kind, mod / GiB, (mod + inputs) / GiB, worst, (mod * worst + inputs) / GiB])
    run.values["full_inputs_gib"] = inputs / GiB
    run.table("memory_full", f"The model at subject 1's CLIP-vision shape ({_scale(n, p, T, m)}); float32 inputs "
              f"{inputs / GiB:.1f} GiB", ["call", "model above the inputs GiB", "model in all GiB",
                                          "worst measured / model", "in all, model × worst ratio GiB"],
              full, ["{}", "{:.1f}", "{:.1f}", "{:.2f}", "{:.1f}"])


# ------------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["himalaya", "tokens", "cv", "fixed", "memory"])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (every part at tiny scales)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *dims = a.child
        child_memory(kind, *map(int, dims))
        return
    hs, ts, ms = HIMALAYA_SCALES, TOKEN_SCALES, MEMORY_SCALES
    if a.quick:
        hs, ts, ms = [(200, 400, 1, 50)], [(200, 400, 2, 50)], [(300, 600, 2, 60)]
    if set(a.parts) & {"himalaya", "tokens", "cv", "fixed"}:  # speed: benchmarks/results/ridge.json
        run = Session("ridge", "benchmarks/bench_ridge.py", versions=("himalaya",))
        torch.set_num_threads(1)
        if "himalaya" in a.parts:
            bench_himalaya(run, hs, a.repeats)
        if "tokens" in a.parts:
            bench_tokens(run, ts, a.repeats)
        if "cv" in a.parts:
            bench_cv_cost(run, ts[-1], a.repeats)
        if "fixed" in a.parts:
            bench_himalaya_fixed(run, hs[-1], a.repeats)
        run.write(a.out)
    if "memory" in a.parts:  # memory: benchmarks/results/ridge_memory.json
        run = Session("ridge_memory", "benchmarks/bench_ridge.py", argv=[*sys.argv[1:]])
        bench_memory(run, ms)
        run.write(a.out)


if __name__ == "__main__":
    main()
