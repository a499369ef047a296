"""Speed, accuracy and memory of nsdlib.ridge against Brain-Diffuser's per-token scikit-learn loop.

All in one process, on the same synthetic data (``--n`` training rows, ``--p`` features,
``--tokens`` x 768 targets, ``--n-test`` test rows; defaults 2,000 x 4,000 -> 64 x 768, 500):

1. Fixed alpha (60,000, intercept on). Peer "scikit-learn per token": Brain-Diffuser's loop,
   ``sklearn.linear_model.Ridge(alpha, fit_intercept=True)`` fitted once per token on float64
   data (as Brain-Diffuser's betas are), then ``predict``. Against it:
   :func:`nsdlib.ridge.ridge_predict` (predictions only, float32 and float64) and
   :class:`nsdlib.ridge.Ridge` (``fit`` computes the weights, then ``predict``), with the max
   relative difference of the predictions, ``max|ours - sklearn| / max|sklearn|``. scikit-learn
   in float32 is timed on ``--sk32-tokens`` tokens and scaled to all of them.
2. Ten alphas chosen by cross-validation, as multiples of one fixed-alpha
   ``ridge_predict`` and of one ``Ridge.fit``: generalised CV with one alpha per token, and the
   default 5-fold CV with one alpha for the regression.
3. himalaya 0.4.11 as a second peer, on one token (768 targets), because it is slow on this
   workload: ``himalaya.kernel_ridge.KernelRidge`` (linear kernel, numpy and torch backends)
   and ``himalaya.ridge.Ridge`` (torch) at the fixed alpha, against scikit-learn and nsdlib on
   the same token; ``himalaya.kernel_ridge.KernelRidgeCV`` (torch, 5 folds, 10 alphas, one
   alpha per target) against ``nsdlib.ridge.Ridge(alphas=..., cv=5, alpha_per="target")``.
4. Peak memory of ``ridge_predict`` (float32, fixed alpha), ``Ridge.fit`` and ``ridge_predict``
   with 10 alphas by 5-fold CV (one alpha for the regression), measured in fresh child
   processes at reduced scales as peak resident memory (the kernel's counter reset just
   before the call) minus the resident memory just before the call, so the inputs are not
   counted; beside a model of what the code allocates, then evaluated at subject 1's
   CLIP-vision shape (8,859 x 15,724 -> 257 x 768, 982 test rows).

Run: ``.venv/bin/python benchmarks/bench_ridge.py [--n 2000 --p 4000 --tokens 64 --n-test 500]``
(``--quick`` for a small smoke run). torch uses 2 threads.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import psutil
import torch

from nsdlib.ridge import Ridge, ridge_predict

DIM = 768
ALPHA = 60_000.0
GiB = 1 << 30
MiB = 1 << 20
BATCH_BYTES = 1 << 28  # nsdlib.ridge's default batch of target columns on the device


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


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rel_diff(a, ref):
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def sklearn_per_token(X, Y, Z, alpha, dtype, tokens=None):
    from sklearn.linear_model import Ridge as SkRidge

    Xd, Zd = X.astype(dtype), Z.astype(dtype)
    tokens = range(Y.shape[1]) if tokens is None else tokens
    out = np.zeros((Z.shape[0], len(tokens), Y.shape[2]), dtype=dtype)
    for j, i in enumerate(tokens):
        reg = SkRidge(alpha=alpha, max_iter=50000, fit_intercept=True)
        reg.fit(Xd, Y[:, i].astype(dtype))
        out[:, j] = reg.predict(Zd)
    return out


# ------------------------------------------------------------------------------ memory model


def model_bytes(kind, n, p, t, n_test, n_alphas=10, k=5):
    """What nsdlib.ridge allocates beyond its inputs (float32 work, float64 factorisations), at the
    phase with the most memory alive. See the RESULTS.md section for the derivation."""
    tb = min(t, max(1, BATCH_BYTES // (4 * n)))
    batch = 4 * n * tb * (2 if tb < t else 1)  # a copied batch of target columns and its centred copy
    # factorise: centred X and X_test, test kernel (f64), Gram K, its shifted copy, its Cholesky factor (f64)
    factorise = 4 * n * p + 4 * n_test * p + 8 * n_test * n + 24 * n * n
    if kind == "predict":
        # stream (X and K released): M (f32), the output, the batch, M @ batch and the output block
        return max(factorise, 4 * n_test * n + 4 * n_test * t + batch + 8 * n_test * tb)
    if kind == "fit":
        # the smoother X'(K + aI)^-1 (p x n, f32) is built in blocks of 2,048 features while K and its
        # factor live; then the weights (t x p) fill while batches stream through it
        smoother = 4 * n * p + 16 * n * n + 4 * p * n + 20 * n * 2048
        return max(smoother, 4 * p * n + 4 * t * p + batch + 4 * p * tb)
    # k-fold, one alpha for the regression, t > n: the validation maps of every fold and alpha
    # (f32), then the targets' Gram matrix, its root and the compressed targets with their fold copies
    maps = 4 * n_alphas * n * (n - n // k)
    return max(maps + 4 * n * p + 36 * n * n, factorise)


def _peak_rss() -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_memory(kind, n, p, tokens, n_test):
    """Run in a fresh interpreter: peak resident memory of one call minus that just before it.

    The kernel's peak counter is reset just before the call (``/proc/self/clear_refs``), so
    the peak of building the data is not counted."""
    torch.set_num_threads(2)
    X, Y, Z = make_data(n, p, tokens, n_test)
    ridge_predict(X[:50, :60], Y[:50, :1, :4], Z[:2, :60], ALPHA, device="cpu", verbose=False)  # warm-up
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    base = psutil.Process().memory_info().rss
    if kind == "predict":
        ridge_predict(X, Y, Z, ALPHA, device="cpu", verbose=False)
    elif kind == "fit":
        Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y)
    else:
        ridge_predict(X, Y, Z, alphas=np.logspace(3.5, 5.5, 10), cv=5, device="cpu", verbose=False)
    print(json.dumps({"base": base, "peak": _peak_rss(), "reset": reset}))


def measure_memory(kind, n, p, tokens, n_test):
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(p), str(tokens), str(n_test)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    return m["peak"] - m["base"], model_bytes(kind, n, p, tokens * DIM, n_test), m["reset"]


# ------------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--p", type=int, default=4000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--sk32-tokens", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="a small smoke run (400 x 800 -> 4 x 768)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *dims = a.child
        child_memory(kind, *map(int, dims))
        return
    if a.quick:
        a.n, a.p, a.tokens, a.n_test, a.sk32_tokens = 400, 800, 4, 100, 1
    torch.set_num_threads(2)

    print(f"# bench_ridge  {_dt.datetime.now():%Y-%m-%d %H:%M}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cores={os.cpu_count()}  torch threads=2  "
          f"torch {torch.__version__}  load average at start {os.getloadavg()[0]:.1f}")
    n, p, T, nt = a.n, a.p, a.tokens, a.n_test
    print(f"scale: {n} x {p} -> {T} x {DIM} ({T * DIM:,} targets), {nt} test rows, alpha {ALPHA:g}")
    X, Y, Z = make_data(n, p, T, nt)

    # 1. fixed alpha ---------------------------------------------------------------
    ref, t_sk = timed(lambda: sklearn_per_token(X, Y.astype(np.float64), Z, ALPHA, np.float64))
    print(f"\n[fixed alpha] scikit-learn per token (float64): {t_sk:.2f} s ({t_sk / T:.3f} s per token)")
    k32 = min(a.sk32_tokens, T)
    ref32, t_sk32 = timed(lambda: sklearn_per_token(X, Y, Z, ALPHA, np.float32, tokens=range(k32)))
    t_sk32_all = t_sk32 * T / k32
    print(f"[fixed alpha] scikit-learn per token (float32), {k32} tokens: {t_sk32:.2f} s -> "
          f"{t_sk32_all:.2f} s for {T} (max rel diff to float64 {rel_diff(ref32, ref[:, :k32]):.1e})")
    rows = []
    for name, fn in [
        ("ridge_predict float32", lambda: ridge_predict(X, Y, Z, ALPHA, device="cpu", verbose=False)),
        ("ridge_predict float64", lambda: ridge_predict(X, Y, Z, ALPHA, device="cpu", dtype=torch.float64,
                                                        verbose=False)),
        ("Ridge.fit + predict float32", lambda: Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y).predict(Z)),
    ]:
        pred, secs = timed(fn)
        rows.append((name, secs, t_sk / secs, rel_diff(pred, ref)))
        print(f"[fixed alpha] {name}: {secs:.2f} s, {t_sk / secs:.1f}x faster than scikit-learn float64 "
              f"({t_sk32_all / secs:.1f}x vs float32), max rel diff {rows[-1][3]:.1e}")
    t_pred = rows[0][1]
    _, t_fit = timed(lambda: Ridge(ALPHA, device="cpu", verbose=False).fit(X, Y))
    print(f"[fixed alpha] Ridge.fit alone (weights, float32): {t_fit:.2f} s")

    # 2. cross-validated alphas --------------------------------------------------------
    alphas = np.logspace(3.5, 5.5, 10)
    cv_rows = []
    for label, kw in [("GCV, one alpha per token", dict(cv="gcv", alpha_per="token")),
                      ("5-fold, one alpha per regression", dict(cv=5, alpha_per="regression"))]:
        (_, chosen), secs = timed(lambda kw=kw: ridge_predict(X, Y, Z, alphas=alphas, device="cpu", verbose=False,
                                                              return_alpha=True, **kw))
        cv_rows.append((label, secs, secs / t_pred, secs / t_fit))
        print(f"[cv] {label}, 10 alphas: {secs:.2f} s = {secs / t_pred:.1f}x one fixed-alpha ridge_predict, "
              f"{secs / t_fit:.1f}x one Ridge.fit (chosen: {np.unique(np.round(chosen)).tolist()})")

    # 3. himalaya -------------------------------------------------------------------------
    try:
        import warnings

        import himalaya
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidge as HKernelRidge
        from himalaya.kernel_ridge import KernelRidgeCV as HKernelRidgeCV
        from himalaya.ridge import Ridge as HRidge
        from sklearn.linear_model import Ridge as SkRidge

        warnings.filterwarnings("ignore", message="Solving ridge is slower", category=UserWarning)
        X64, Z64, y0 = X.astype(np.float64), Z.astype(np.float64), Y[:, 0].astype(np.float64)
        _, t_sk1 = timed(lambda: SkRidge(alpha=ALPHA, fit_intercept=True).fit(X64, y0).predict(Z64))
        _, t_ours1 = timed(lambda: ridge_predict(X, Y[:, :1], Z, ALPHA, device="cpu", verbose=False))
        print(f"[himalaya {himalaya.__version__}] one token (768 targets): scikit-learn {t_sk1:.2f} s, "
              f"nsdlib ridge_predict {t_ours1:.2f} s")
        for backend, est in [("numpy", HKernelRidge), ("torch", HKernelRidge), ("torch", HRidge)]:
            set_backend(backend, on_error="raise")
            Xb, Zb, yb = (X, Z, Y[:, 0]) if backend == "torch" else (X64, Z64, y0)
            kw = dict(kernel="linear") if est is HKernelRidge else {}
            pred, secs = timed(lambda est=est, kw=kw, Xb=Xb, Zb=Zb, yb=yb: np.asarray(
                est(alpha=ALPHA, fit_intercept=True, **kw).fit(Xb, yb).predict(Zb), dtype=np.float64))
            print(f"[himalaya] {est.__name__} ({backend}), one token: {secs:.2f} s = {secs / t_sk1:.1f}x "
                  f"scikit-learn, {secs / t_ours1:.1f}x nsdlib; max rel diff to scikit-learn "
                  f"{rel_diff(pred, ref[:, 0]):.1e}")
        set_backend("torch", on_error="raise")
        (_, secs) = timed(lambda: HKernelRidgeCV(alphas=alphas, kernel="linear", cv=5, fit_intercept=True)
                          .fit(X, Y[:, 0]).predict(Z))
        (_, ours) = timed(lambda: Ridge(alphas=alphas, cv=5, alpha_per="target", device="cpu", verbose=False)
                          .fit(X, Y[:, 0]).predict(Z))
        print(f"[himalaya] KernelRidgeCV (torch, 5 folds, 10 alphas, one per target), one token: {secs:.2f} s; "
              f"nsdlib Ridge(alphas, cv=5, alpha_per='target').fit + predict: {ours:.2f} s ({secs / ours:.1f}x)")
        set_backend("numpy", on_error="raise")
    except ImportError as err:
        print(f"[himalaya] skipped: {err}")

    # 4. memory ---------------------------------------------------------------------------
    scales = [(1000, 2000, 8, 250), (1500, 3000, 16, 375), (2000, 4000, 16, 500)]
    if a.quick:
        scales = [(400, 800, 2, 100)]
    for kind in ("predict", "fit", "cv"):
        for (mn, mp, mt, mnt) in (scales if kind == "predict" else scales[-1:]):
            extra, model, reset = measure_memory(kind, mn, mp, mt, mnt)
            print(f"[memory] {kind:7s} {mn} x {mp} -> {mt} x {DIM}, {mnt} test: measured {extra / MiB:.0f} MiB "
                  f"above the inputs, model {model / MiB:.0f} MiB (measured/model {extra / model:.2f})"
                  + ("" if reset else " [peak counter not reset: includes building the data]"))
    N, P, TT, NT = 8859, 15724, 257 * DIM, 982
    inputs = 4 * (N * P + N * TT + NT * P)
    for kind in ("predict", "fit", "cv"):
        m = model_bytes(kind, N, P, TT, NT)
        print(f"[memory] model at subject 1 CLIP-vision ({N} x {P} -> {TT:,}), {kind}: {m / GiB:.1f} GiB above "
              f"the float32 inputs ({inputs / GiB:.1f} GiB), {(m + inputs) / GiB:.1f} GiB in all")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
