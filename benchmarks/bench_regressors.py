"""Training time per epoch and peak memory of the stage-1 GRU at subject 1's NSD shape.

Shape: betas X (8,859 x 15,724) and 15-block VDVAE latents Y (8,859 x 13,344), random float32
(only the shapes matter for speed); a 10 % validation split leaves 7,973 training rows,
i.e. 125 batches of 64 per epoch, and 886 validation rows.

Models, in one process, through the same training step (AdamW, learning rate 1e-3, MSE of
standardised targets, batch 64):

- ``gru``: :class:`nsdlib.regressors.GRUNet`, the paper's network (12,400,344 parameters);
- peer ``linear``: ``torch.nn.Linear(15724, 13344)`` (209,834,400 parameters), a linear map
  from betas to latents, the model ridge fits in closed form, trained by the same loop;
- optional peer ``ridge`` (``--ridge``): :class:`nsdlib.regressors.RidgeRegressor` (alpha
  50,000), stage 1's ridge, in kernel form: fitted on the 7,973 training rows and predicting
  the 886 validation rows without forming the weights (minutes of CPU, hence off by default).

A full epoch of the linear peer takes many minutes on 2 CPU cores, so each model is timed on
``--batches`` batches after one warm-up batch, and the epoch time is extrapolated: time per
batch x 125 + the validation pass, itself timed on 256 rows and scaled to 886. The GRU's
estimate is checked against one real ``NeuralRegressor.fit`` epoch on ``--check-rows`` rows
(checkpoint written, as in a real run), scaled by rows.

Memory: peak resident memory from building the model to the end of the timed steps (so
parameters, gradients, AdamW state and activations) minus the resident memory just before
the model was built (the kernel's peak counter reset through ``/proc/self/clear_refs``), so
the data arrays (0.96 GiB) are not counted; on CUDA, ``torch.cuda.max_memory_allocated``.

Run: ``.venv/bin/python benchmarks/bench_regressors.py [--device cpu|cuda] [--batches 6]
[--threads 2] [--ridge]`` (``--quick`` for a smoke run at a tenth of the shape).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import tempfile
import time

import numpy as np
import psutil
import torch
from torch import nn

from nsdlib.regressors import GRUNet, NeuralRegressor, RidgeRegressor, count_parameters

N, P, T = 8_859, 15_724, 13_344
VAL_FRACTION = 0.1
BATCH = 64
GiB = 1 << 30
MiB = 1 << 20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_model(name, build, X, Y, stats, dev, n_batches, n_train, n_val):
    """Seconds per training batch, per validation row, and peak training memory of ``build()``."""
    import gc

    gc.collect()
    base = psutil.Process().memory_info().rss
    reset = _reset_peak()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    model = build().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mean, scale = (torch.from_numpy(a).to(dev) for a in stats)
    rng = np.random.default_rng(0)

    def step():
        rows = rng.choice(len(X), BATCH, replace=False)
        xb = torch.from_numpy(X[rows]).to(dev)
        yb = (torch.from_numpy(Y[rows]).to(dev) - mean) / scale
        loss = torch.mean((model(xb) - yb) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()  # warm-up: allocates the optimizer state
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        step()
    _sync(dev)
    per_batch = (time.perf_counter() - t0) / n_batches
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _peak_rss() - base)
    model.eval()
    n_probe = min(256, n_val)
    with torch.no_grad():
        t0 = time.perf_counter()
        for s in range(0, n_probe, 128):
            model(torch.from_numpy(X[s:min(s + 128, n_probe)]).to(dev))
        _sync(dev)
    per_val_row = (time.perf_counter() - t0) / n_probe
    n_batches_epoch = int(np.ceil(n_train / BATCH))
    epoch = per_batch * n_batches_epoch + per_val_row * n_val
    print(f"  {name:7s} {count_parameters(model):>12,} parameters   {per_batch * 1e3:8.1f} ms/batch   "
          f"epoch ~ {epoch:7.1f} s   peak training memory {peak / MiB:8.0f} MiB"
          + ("" if reset or dev.type == "cuda" else " (peak counter not reset: upper bound)"))
    return {"per_batch": per_batch, "epoch": epoch, "peak": peak}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=6, help="timed batches per model (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-rows", type=int, default=448, help="rows of the real NeuralRegressor.fit epoch")
    ap.add_argument("--ridge", action="store_true", help="also time stage 1's RidgeRegressor at the full shape")
    ap.add_argument("--quick", action="store_true", help="a tenth of the shape, two batches")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    n, p, t = (N // 10, P // 10, T // 10) if args.quick else (N, P, T)
    n_batches = 2 if args.quick else args.batches
    n_val = int(round(VAL_FRACTION * n))
    n_train = n - n_val

    print(f"bench_regressors  {_dt.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}  "
          f"torch {torch.__version__}  device {dev}  threads {torch.get_num_threads()}  "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"shape: X {n:,} x {p:,} -> Y {n:,} x {t:,} (float32, random), {n_train:,} training rows "
          f"({int(np.ceil(n_train / BATCH))} batches of {BATCH}), {n_val} validation rows; "
          f"{n_batches} timed batches per model")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p), dtype=np.float32)
    Y = rng.standard_normal((n, t), dtype=np.float32)
    print(f"data arrays: {(X.nbytes + Y.nbytes) / GiB:.2f} GiB (not counted below)")
    stats = (Y.mean(0), Y.std(0) + 1e-6)  # target standardisation, computed before any measurement

    # one-time library and allocator set-up, so that neither measured model pays for it
    for build in (lambda: GRUNet(p, 64), lambda: nn.Linear(p, 64)):
        m = build().to(dev)
        torch.mean(m(torch.from_numpy(X[:BATCH]).to(dev)) ** 2).backward()
    del m
    res = {"gru": time_model("gru", lambda: GRUNet(p, t), X, Y, stats, dev, n_batches, n_train, n_val)}
    res["linear"] = time_model("linear", lambda: nn.Linear(p, t), X, Y, stats, dev, n_batches, n_train, n_val)
    g, lin = res["gru"], res["linear"]
    print(f"ratio gru / linear: epoch time {g['epoch'] / lin['epoch']:.3f}, peak memory {g['peak'] / lin['peak']:.3f}")

    rows = min(args.check_rows, n)
    with tempfile.TemporaryDirectory() as tmp:
        reg = NeuralRegressor("gru", max_epochs=1, batch_size=BATCH, device=str(dev), checkpoint_dir=tmp,
                              progress=False)
        t0 = time.perf_counter()
        reg.fit(X[:rows], Y[:rows])
        real = time.perf_counter() - t0
    scaled = real * n / rows
    print(f"check: NeuralRegressor('gru').fit, 1 epoch on {rows} rows (checkpoint included): {real:.1f} s, "
          f"scaled to {n:,} rows ~ {scaled:.0f} s (estimate above: {g['epoch']:.0f} s)")

    if args.ridge:
        t0 = time.perf_counter()
        val = np.arange(n_train, n)
        RidgeRegressor(50_000.0, device=str(dev)).fit(X, Y, val_indices=val).predict(X[val])
        ridge_s = time.perf_counter() - t0
        print(f"  ridge   kernel-form fit on {n_train:,} rows + predict {n - n_train:,}: {ridge_s:.1f} s   "
              f"ratio gru epoch / ridge fit: {g['epoch'] / ridge_s:.3f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
