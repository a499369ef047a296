"""Training time per epoch and peak memory of the stage-1 GRU at subject 1's NSD shape.

Shape: betas X (8,859 x 15,724) and 15-block VDVAE latents Y (8,859 x 13,344), random float32
(only the shapes matter for speed); a 10 % validation split leaves 7,973 training rows,
i.e. 125 batches of 64 per epoch, and 886 validation rows.

Models, in one process, through the same training step (AdamW, learning rate 1e-3, MSE of
standardised targets, batch 64):

- ``gru``: :class:`nsdlib.regressors.GRUNet`, the paper's network (12,400,344 parameters);
- peer ``linear``: ``torch.nn.Linear(15724, 13344)`` (209,834,400 parameters), a linear map
  from betas to latents, the model ridge fits in closed form, trained by the same loop;
- optional ``ridge`` (``--ridge``): :class:`nsdlib.regressors.RidgeRegressor` (alpha 50,000),
  stage 1's ridge, in kernel form: fitted on the 7,973 training rows and predicting the 886
  validation rows without forming the weights (minutes of CPU, hence off by default).

Under the benchmark protocol (``_protocol.py``: one thread, ``--repeats`` interleaved repeats,
load recorded). A full epoch of the linear peer takes many minutes on one CPU thread, so each
repeat times ``--batches`` training batches of each model (after one warm-up batch) and a
validation pass over 256 rows, and the epoch is extrapolated: time per batch x 125 + time per
validation row x 886 (:func:`epoch_seconds`); the ratio is taken per repeat. The estimate is
checked against one real ``NeuralRegressor.fit`` epoch on ``--check-rows`` rows (checkpoint
written, as in a real run), scaled by rows.

Memory: in a fresh child process per model, peak resident memory from building the model to the
end of three training steps (parameters, gradients, AdamW state, activations) minus the resident
memory just before (the kernel's peak counter reset through ``/proc/self/clear_refs``), so the
data arrays (0.96 GiB) are not counted; on CUDA, ``torch.cuda.max_memory_allocated``.

Writes ``benchmarks/results/regressors.json``. Run: ``.venv/bin/python benchmarks/bench_regressors.py
[--device cpu|cuda] [--batches 3] [--ridge]`` (``--quick`` for a smoke run at a tenth of the shape).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

import numpy as np
import psutil
import torch
from _protocol import Session, child_json, peak_rss, reset_peak_rss, spread
from report import cell
from torch import nn

from nsdlib.regressors import GRUNet, NeuralRegressor, RidgeRegressor, count_parameters

N, P, T = 8_859, 15_724, 13_344
VAL_FRACTION = 0.1
BATCH = 64
PROBE = 256  # validation rows timed, scaled to the split's
MAX_EPOCHS = 50  # stage1.regressor_options for NSD
STATE_BYTES = 16  # per parameter: float32 weight, gradient and AdamW's two moments
GiB = 1 << 30
MiB = 1 << 20
MODELS = {"gru": lambda p, t: GRUNet(p, t), "linear": lambda p, t: nn.Linear(p, t)}


def split(n: int) -> tuple[int, int, int]:
    """Training rows, validation rows and training batches per epoch for ``n`` rows."""
    n_val = int(round(VAL_FRACTION * n))
    return n - n_val, n_val, int(np.ceil((n - n_val) / BATCH))


def epoch_seconds(per_batch: float, per_val_row: float, n: int) -> float:
    """One epoch extrapolated: every training batch plus the validation pass, for ``n`` rows."""
    _, n_val, n_batches = split(n)
    return per_batch * n_batches + per_val_row * n_val


def make_data(n: int, p: int, t: int):
    """Random float32 betas and latents (only the shapes matter) and the targets' mean and sd."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p), dtype=np.float32)
    Y = rng.standard_normal((n, t), dtype=np.float32)
    return X, Y, (Y.mean(0), Y.std(0) + 1e-6)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Trainer:
    """One model with its AdamW state and the stage-1 training step, on standardised targets."""

    def __init__(self, name, X, Y, stats, dev):
        torch.manual_seed(0)
        self.X, self.Y, self.dev = X, Y, dev
        self.model = MODELS[name](X.shape[1], Y.shape[1]).to(dev)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.mean, self.scale = (torch.from_numpy(a).to(dev) for a in stats)
        self.rng = np.random.default_rng(0)
        self.step()  # warm-up: allocates the optimizer state

    def step(self):
        self.model.train()
        rows = self.rng.choice(len(self.X), BATCH, replace=False)
        xb = torch.from_numpy(self.X[rows]).to(self.dev)
        yb = (torch.from_numpy(self.Y[rows]).to(self.dev) - self.mean) / self.scale
        loss = torch.mean((self.model(xb) - yb) ** 2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, n_batches: int) -> tuple[float, float]:
        """Seconds per training batch over ``n_batches`` and per validation row over PROBE rows."""
        _sync(self.dev)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            self.step()
        _sync(self.dev)
        per_batch = (time.perf_counter() - t0) / n_batches
        self.model.eval()
        n_probe = min(PROBE, len(self.X))
        with torch.no_grad():
            t0 = time.perf_counter()
            for s in range(0, n_probe, 128):
                self.model(torch.from_numpy(self.X[s:min(s + 128, n_probe)]).to(self.dev))
            _sync(self.dev)
        return per_batch, (time.perf_counter() - t0) / n_probe


def child_memory(name: str, n: int, p: int, t: int, device: str) -> None:
    """In a fresh interpreter: peak memory of building ``name`` and 3 training steps, above what was resident."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    X, Y, stats = make_data(n, p, t)
    gc.collect()
    reset = reset_peak_rss()
    base = psutil.Process().memory_info().rss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    tr = Trainer(name, X, Y, stats, dev)
    tr.timed(2)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else peak_rss() - base
    print(json.dumps({"peak": peak, "reset": reset or dev.type == "cuda", "params": count_parameters(tr.model)}))


def measure_memory(name: str, n: int, p: int, t: int, device: str) -> dict:
    return child_json([sys.executable, __file__, "--child", name, str(n), str(p), str(t), device],
                      env=os.environ.copy())


def _epochs(splits, n) -> list:
    return [epoch_seconds(b, v, n) for b, v in splits]


def train_table(run: Session, n, p, t, dev, n_batches, repeats) -> dict:
    """The GRU against nn.Linear: interleaved repeats of ``n_batches`` training batches + a validation probe."""
    X, Y, stats = make_data(n, p, t)
    mem = {name: measure_memory(name, n, p, t, str(dev)) for name in MODELS}
    trainers = {name: Trainer(name, X, Y, stats, dev) for name in MODELS}
    splits = {name: [] for name in MODELS}

    def timed(name):
        return lambda: splits[name].append(trainers[name].timed(n_batches))

    st, _ = run.compare(("linear", timed("linear")), [("gru", timed("gru"))], repeats)
    ep = {name: _epochs(splits[name], n) for name in MODELS}
    ms = {name: [1e3 * b for b, _ in splits[name]] for name in MODELS}
    peak = {name: mem[name]["peak"] / MiB for name in MODELS}
    state = {name: STATE_BYTES * mem[name]["params"] / MiB for name in MODELS}
    rows = [[label, mem[name]["params"], spread(ms[name]), spread(ep[name]), peak[name], state[name]]
            for name, label in (("gru", "GRU (`nsdlib.regressors.GRUNet`)"),
                                ("linear", "peer: `nn.Linear` trained the same way"))]
    rows.append(["**ratio GRU / peer**", f"{mem['gru']['params'] / mem['linear']['params']:.3f}", None,
                 cell(spread([g / lin for g, lin in zip(ep["gru"], ep["linear"])]), "{:.3f}"),
                 f"{peak['gru'] / peak['linear']:.3f}", None])
    n_train, n_val, n_b = split(n)
    run.table("train", f"Stage 1's GRU against a linear map trained the same way, {n:,} × {p:,} → {t:,} "
              f"(float32, random); {n_b} batches of {BATCH} + {n_val:,} validation rows per epoch",
              ["model", "parameters", "ms per batch", "epoch s (extrapolated)", "peak training memory MiB",
               f"of which parameters, gradients, AdamW state ({STATE_BYTES} B each) MiB"], rows,
              ["{}", "{:,}", "{:.0f}", "{:.0f}", "{:.0f}", "{:.0f}"],
              note=train_note(spread(ep["gru"])["median"], peak["gru"] - state["gru"]))
    return spread(ep["gru"])["median"]


def train_note(gru_epoch: float, gru_other_mib: float) -> str:
    """The sentence under the training table: the GRU's memory beyond its state and a whole NSD training."""
    return (f"The GRU's memory beyond its parameters, gradients and AdamW state is {gru_other_mib:.0f} MiB "
            f"(activations and the CPU GRU kernel's buffers). At the median epoch time, the at most {MAX_EPOCHS} "
            f"epochs of `stage1.regressor_options` for NSD take {MAX_EPOCHS * gru_epoch / 3600:.1f} hours on this "
            "machine with one thread (early stopping usually ends sooner).")


def check_table(run: Session, X, Y, dev, rows: int, estimate: float, ridge: bool) -> None:
    """One real ``NeuralRegressor('gru').fit`` epoch on ``rows`` rows, scaled by rows; optionally stage 1's ridge."""
    n = len(X)
    with tempfile.TemporaryDirectory() as tmp:
        reg = NeuralRegressor("gru", max_epochs=1, batch_size=BATCH, device=str(dev), checkpoint_dir=tmp,
                              progress=False)
        t0 = time.perf_counter()
        reg.fit(X[:rows], Y[:rows])
        real = time.perf_counter() - t0
    out = [[f"`NeuralRegressor('gru').fit`, one epoch on {rows:,} rows (checkpoint written), once", real,
            real * n / rows, estimate]]
    if ridge:
        n_train, _, _ = split(n)
        val = np.arange(n_train, n)
        t0 = time.perf_counter()
        RidgeRegressor(50_000.0, device=str(dev)).fit(X, Y, val_indices=val).predict(X[val])
        secs = time.perf_counter() - t0
        out.append([f"`RidgeRegressor(50000)` kernel-form fit on {n_train:,} rows + predict {n - n_train:,}, once",
                    secs, secs, estimate])
    run.table("check", "Cross-check of the extrapolated epoch", ["what", "seconds", f"scaled to {n:,} rows s",
                                                                   "GRU epoch extrapolated above s"],
              out, ["{}", "{:.1f}", "{:.0f}", "{:.0f}"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=3, help="timed batches per model and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-rows", type=int, default=256, help="rows of the real NeuralRegressor.fit epoch")
    ap.add_argument("--ridge", action="store_true", help="also time stage 1's RidgeRegressor at the full shape")
    ap.add_argument("--quick", action="store_true", help="a tenth of the shape (a smoke run)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        name, *dims, device = a.child
        child_memory(name, *map(int, dims), device)
        return
    run = Session("regressors", "benchmarks/bench_regressors.py", argv=argv)
    torch.set_num_threads(1)
    dev = torch.device(a.device)
    n, p, t = (N // 10, P // 10, T // 10) if a.quick else (N, P, T)
    estimate = train_table(run, n, p, t, dev, a.batches, a.repeats)
    X, Y, _ = make_data(n, p, t)
    check_table(run, X, Y, dev, min(a.check_rows, n), estimate, a.ridge)
    run.write(a.out)


if __name__ == "__main__":
    main()
