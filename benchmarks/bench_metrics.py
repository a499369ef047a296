"""Speed and memory of nsdlib.metrics against Brain-Diffuser's per-image evaluation.

Three measurements, each nsdlib's batched code against a named peer in this process, under the
benchmark protocol (``_protocol.py``: one thread, ``--repeats`` interleaved repeats, median ratio
and its range, load recorded):

1. Pixel metrics (PixCorr, SSIM in Brain-Diffuser's column mode and true 2-D SSIM) for
   ``--n-pixel`` image pairs at ``--size`` (default 64 at 425 x 425, NSD's image size; both
   sides cost the same per image at any count, so a fraction of NSD's 982 test images keeps
   the run short): :class:`nsdlib.metrics.ImageEvaluator` (one pass, scipy filters in float64,
   batches of 16) against the peer "per-image loop": Brain-Diffuser's loop, one image at a time
   with ``np.corrcoef`` and ``skimage.metrics.structural_similarity``. Results are checked
   equal (max abs difference recorded).
2. 2-way identification over ``--n`` images (default 982, NSD's test set) with ``--dims``
   features (default 43,264, AlexNet(5)): :func:`nsdlib.metrics.two_way_identification`
   (float32) and the streaming form the evaluator uses (ground truth kept, reconstructions in
   batches of 32), against the peer "Brain-Diffuser pairwise_corr_all": ``np.corrcoef`` on the
   stacked float64 features, then the strict comparison.
3. Feature extraction: AlexNet (random weights: timing only, never a metric) on ``--n-feat``
   images, batches of 32 against one image at a time.

Peak memory is the process's resident set size sampled every 5 ms by a thread (psutil),
minus its value just before the call, the largest over the repeats: it includes torch's
buffers, which ``tracemalloc`` does not see. The inputs (two uint8 image sets; the feature
arrays) exist before every call and are not counted.

Writes ``benchmarks/results/metrics.json``. Run: ``.venv/bin/python benchmarks/bench_metrics.py
[--n-pixel 64] [--size 425] [--n 982] [--dims 43264] [--n-feat 32]``.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import numpy as np
import psutil
import torch
from _protocol import Session

from nsdlib import features
from nsdlib import metrics as M

MB = 1 << 20


class PeakRSS:
    """Peak resident memory above the level at entry, sampled by a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.proc = psutil.Process()

    def __enter__(self):
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.extra_mb = (self.peak - self.base) / MB


def images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random images (blocks of 5 pixels), uint8, like low-frequency scenes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, -(-size // 5), -(-size // 5), 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 5, axis=1), 5, axis=2)[:, :size, :size]


def peer_pixel_loop(gt, rec):
    """Brain-Diffuser's evaluation loop (scripts/evaluate_reconstruction.py), one image at a time."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    pc, scol, s2d = [], [], []
    for g, r in zip(gt, rec):
        g = g / 255.0
        r = r / 255.0
        pc.append(np.corrcoef(g.reshape(1, -1), r.reshape(1, -1))[0, 1])
        gg, rg = rgb2gray(g), rgb2gray(r)
        kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        scol.append(structural_similarity(rg, gg, channel_axis=-1, **kw))
        s2d.append(structural_similarity(rg, gg, **kw))
    return np.array(pc), np.array(scol), np.array(s2d)


def ours_pixel(gt, rec):
    """What the pipeline runs: one pass, PixCorr and both SSIM modes, batches of 16."""
    rep = M.ImageEvaluator(gt, ssim_mode="columns", also_ssim_2d=True, progress=False).evaluate(
        rec, ("ssim", "pixcorr"))
    return rep.per_image["pixcorr"], rep.per_image["ssim"], rep.per_image["ssim_2d"]


def peer_identification(gt, rec):
    """Brain-Diffuser's pairwise_corr_all: np.corrcoef on the stacked features (float64)."""
    r = np.corrcoef(gt, rec)[: len(gt), len(gt):]
    return np.mean(np.sum(r < np.diag(r), 0)) / (len(gt) - 1)


def ours_streaming(gt, rec, batch=32):
    g = M._standardize(gt)
    counts = np.zeros(len(gt))
    for s in range(0, len(gt), batch):
        sl = slice(s, min(s + batch, len(gt)))
        counts[sl] = M._identification_counts(g, M._standardize(rec[sl]), np.arange(sl.start, sl.stop))
    return float(np.mean(counts / (len(gt) - 1)))


def measured(peaks: dict, label: str, fn):
    """``(label, fn)`` for :meth:`Session.compare`, recording each call's peak memory above its start (MB)."""
    def call():
        with PeakRSS() as m:
            out = fn()
        peaks.setdefault(label, []).append(m.extra_mb)
        return out
    return label, call


def _row(what, ours, peer, st, peaks, agreement) -> list:
    return [what, ours, st[ours]["seconds"], max(peaks[ours]), peer, st[peer]["seconds"], max(peaks[peer]),
            st[ours]["ratio"], max(peaks[peer]) / max(max(peaks[ours]), 1.0), agreement]


def bench_pixel(run: Session, n: int, size: int, repeats: int) -> list:
    gt = images(n, size, 0)
    rec = np.clip(0.6 * gt + 0.4 * images(n, size, 1), 0, 255).astype(np.uint8)  # correlated pairs
    peaks: dict = {}
    peer, ours = "Brain-Diffuser's per-image loop (`np.corrcoef`, `skimage` SSIM twice)", \
        "`ImageEvaluator`, one pass, batches of 16"
    st, out = run.compare(measured(peaks, peer, lambda: peer_pixel_loop(gt, rec)),
                          [measured(peaks, ours, lambda: ours_pixel(gt, rec))], repeats)
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(out[ours], out[peer]))
    return [_row(f"PixCorr + column SSIM + 2-D SSIM, {n} pairs at {size} × {size}", ours, peer, st, peaks,
                 f"max abs. difference {diff:.1e}")]


def bench_ident(run: Session, n: int, dims: int, repeats: int) -> list:
    rng = np.random.default_rng(0)
    gt = rng.standard_normal((n, dims), dtype=np.float32)
    # a weak shared signal, so that the score is well below 1 and the three must agree on it
    rec = (0.003 * gt + rng.standard_normal((n, dims), dtype=np.float32)).astype(np.float32)
    peaks: dict = {}
    peer = "Brain-Diffuser's `pairwise_corr_all` (`np.corrcoef` on stacked float64 features)"
    stream, full = ("streaming (ground truth kept, reconstructions in batches of 32)",
                    "`two_way_identification` on full arrays")
    st, out = run.compare(measured(peaks, peer, lambda: float(peer_identification(gt, rec))),
                          [measured(peaks, stream, lambda: ours_streaming(gt, rec)),
                           measured(peaks, full, lambda: float(M.two_way_identification(gt, rec).mean()))], repeats)
    what = f"2-way identification, {n} images × {dims:,} features"
    return [_row(what, label, peer, st, peaks, f"score {out[label]:.4f} (peer {out[peer]:.4f})")
            for label in (stream, full)]


def bench_features(run: Session, n: int, size: int, repeats: int) -> list:
    ims = images(n, size, 2)
    net = features.alexnet_network(pretrained=False)  # random weights: timing only
    net.features(ims[:2])  # warm-up
    peaks: dict = {}
    peer, ours = "one image at a time", "batches of 32"

    def batched():
        for s in range(0, len(ims), 32):
            net.features(ims[s:s + 32])

    def single():
        for i in range(len(ims)):
            net.features(ims[i:i + 1])

    st, _ = run.compare(measured(peaks, peer, single), [measured(peaks, ours, batched)], repeats)
    return [_row(f"AlexNet features, {n} images {size} → 224 (random weights: timing only)", ours, peer, st, peaks,
                 "—")]


def ident_note(n: int, dims: int, n_test: int = 982, dims_alexnet2: int = 139_968) -> str:
    """What identification keeps: the ground truth's standardised features, here and for AlexNet(2) at NSD's size."""
    return (f"Identification keeps the ground truth's standardised features ({n} × {dims:,} float32: "
            f"{4 * n * dims / MB:.0f} MiB here; {4 * n_test * dims_alexnet2 / MB:.0f} MiB for AlexNet(2)'s "
            f"{dims_alexnet2:,} features at {n_test} images) plus one {n} × 32 block of correlations at a time; the "
            "pixel metrics' memory is bounded by the batch (16 images in float64), not by the number of images.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-pixel", type=int, default=64, help="image pairs for the pixel metrics")
    ap.add_argument("--size", type=int, default=425)
    ap.add_argument("--n", type=int, default=982, help="images for identification")
    ap.add_argument("--dims", type=int, default=43264)
    ap.add_argument("--n-feat", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pixel", "ident", "features"])
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    run = Session("metrics", "benchmarks/bench_metrics.py", argv=argv, versions=("scikit-image",))
    torch.set_num_threads(1)
    rows = []
    if "pixel" not in args.skip:
        rows += bench_pixel(run, args.n_pixel, args.size, args.repeats)
    if "ident" not in args.skip:
        rows += bench_ident(run, args.n, args.dims, args.repeats)
    if "features" not in args.skip:
        rows += bench_features(run, args.n_feat, args.size, args.repeats)
    run.table("metrics", "nsdlib's metrics against Brain-Diffuser's evaluation (seconds: median and range over the "
              "repeats; peak resident memory above the call's start, largest over the repeats)",
              ["what (scale)", "nsdlib", "nsdlib s", "nsdlib peak MiB", "peer", "peer s", "peer peak MiB",
               "nsdlib speed-up", "peer / nsdlib memory", "agreement"], rows,
              ["{}", "{}", "{:.2f}", "{:.0f}", "{}", "{:.2f}", "{:.0f}", "{:.1f}×", "{:.1f}×", "{}"],
              note=ident_note(args.n, args.dims))
    run.write(args.out)


if __name__ == "__main__":
    main()
