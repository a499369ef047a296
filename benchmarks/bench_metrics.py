"""Speed and memory of nsdlib.metrics against Brain-Diffuser's per-image evaluation.

Three measurements, each nsdlib's batched code against a named peer in this process:

1. Pixel metrics (PixCorr, SSIM in Brain-Diffuser's column mode and true 2-D SSIM) for
   ``--n`` image pairs at ``--size`` (default 982 at 425 x 425, NSD's test set):
   :class:`nsdlib.metrics.ImageEvaluator` (one pass, scipy filters in float64, batches
   of 16) against the peer "per-image loop": Brain-Diffuser's loop, one image at a time
   with ``np.corrcoef`` and ``skimage.metrics.structural_similarity``. Results are
   checked equal (max abs difference printed).
2. 2-way identification over ``--n`` images with ``--dims`` features (default 43,264,
   AlexNet(5)): :func:`nsdlib.metrics.two_way_identification` (float32) and the
   streaming form the evaluator uses (ground truth kept, reconstructions in batches of
   32), against the peer "Brain-Diffuser pairwise_corr_all": ``np.corrcoef`` on the
   stacked float64 features, then the strict comparison.
3. Feature extraction: AlexNet (random weights: timing only, never a metric) on ``--n-feat``
   images, batches of 32 against one image at a time.

Peak memory is the process's resident set size sampled every 5 ms by a thread (psutil),
minus its value just before the call: it includes torch's buffers, which ``tracemalloc``
does not see. The inputs (two uint8 image sets, 1.06 GB at the default scale) exist before
every call and are not counted.

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--n 982] [--size 425] [--dims 43264]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import platform
import threading
import time

import numpy as np
import psutil
import torch

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=982)
    ap.add_argument("--size", type=int, default=425)
    ap.add_argument("--dims", type=int, default=43264)
    ap.add_argument("--n-feat", type=int, default=64)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pixel", "ident", "features"])
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    print(f"# bench_metrics  {_dt.date.today()}  {platform.machine()} {psutil.cpu_count()} cores "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB  torch {torch.__version__}  load {psutil.getloadavg()}")

    if "pixel" not in args.skip:
        gt = images(args.n, args.size, 0)
        rec = images(args.n, args.size, 1)
        rec = np.clip(0.6 * gt + 0.4 * rec, 0, 255).astype(np.uint8)  # correlated pairs
        print(f"\n## pixel metrics: {args.n} pairs at {args.size}x{args.size} (PixCorr + column SSIM + 2-D SSIM)")
        with PeakRSS() as a:
            ours = ours_pixel(gt, rec)
        with PeakRSS() as b:
            peer = peer_pixel_loop(gt, rec)
        diff = max(float(np.max(np.abs(x - y))) for x, y in zip(ours, peer))
        print(f"nsdlib batched     {a.seconds:8.1f} s   peak +{a.extra_mb:7.0f} MB")
        print(f"per-image loop     {b.seconds:8.1f} s   peak +{b.extra_mb:7.0f} MB")
        print(f"speed ratio (loop / nsdlib): {b.seconds / a.seconds:.2f}x   max |difference| {diff:.1e}")
        print(f"means: PixCorr {ours[0].mean():.4f}  SSIM columns {ours[1].mean():.4f}  SSIM 2-D {ours[2].mean():.4f}")
        del gt, rec

    if "ident" not in args.skip:
        rng = np.random.default_rng(0)
        gt = rng.standard_normal((args.n, args.dims), dtype=np.float32)
        # a weak shared signal, so that the score is well below 1 and the three must agree on it
        rec = (0.003 * gt + rng.standard_normal((args.n, args.dims), dtype=np.float32)).astype(np.float32)
        print(f"\n## 2-way identification: {args.n} images x {args.dims} features")
        with PeakRSS() as a:
            one = float(M.two_way_identification(gt, rec).mean())
        with PeakRSS() as s:
            stream = ours_streaming(gt, rec)
        with PeakRSS() as b:
            peer = float(peer_identification(gt, rec))
        print(f"nsdlib one-shot    {a.seconds:8.2f} s   peak +{a.extra_mb:7.0f} MB   score {one:.4f}")
        print(f"nsdlib streaming   {s.seconds:8.2f} s   peak +{s.extra_mb:7.0f} MB   score {stream:.4f}")
        print(f"BD pairwise_corr   {b.seconds:8.2f} s   peak +{b.extra_mb:7.0f} MB   score {peer:.4f}")
        print(f"speed ratio (BD / nsdlib streaming): {b.seconds / s.seconds:.2f}x   "
              f"memory ratio: {b.extra_mb / max(s.extra_mb, 1):.1f}x")
        del gt, rec

    if "features" not in args.skip:
        ims = images(args.n_feat, args.size, 2)
        net = features.alexnet_network(pretrained=False)  # random weights: timing only
        print(f"\n## AlexNet feature extraction (random weights, timing only): {args.n_feat} images "
              f"{args.size} -> 224")
        net.features(ims[:2])  # warm-up
        with PeakRSS() as a:
            for s in range(0, len(ims), 32):
                net.features(ims[s:s + 32])
        with PeakRSS() as b:
            for i in range(len(ims)):
                net.features(ims[i:i + 1])
        print(f"batches of 32      {a.seconds:8.2f} s   peak +{a.extra_mb:7.0f} MB")
        print(f"one at a time      {b.seconds:8.2f} s   peak +{b.extra_mb:7.0f} MB")
        print(f"speed ratio (one at a time / batched): {b.seconds / a.seconds:.2f}x")


if __name__ == "__main__":
    main()
