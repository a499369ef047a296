"""Peak memory of preparing one subject: nsdlib's streaming loader vs loading sessions with nibabel.

A synthetic tree in NSD's layout and formats (int16 x 300 NIfTI betas, 750 trials per
session, NSD's design conventions) is written at a reduced grid (1/8 of NSD's 81 x 104 x 83
voxels by default, with an nsdgeneral-like ROI of about 2.2 % of the grid, NSD's proportion).
Subject preparation (ROI, trial -> image, averaging, z-score) is then run with 2, 4 and 8
sessions by

- ``nsdlib``: :func:`nsdlib.nsd.prepare_subject` (streams volumes, per-image sums);
- peer "nibabel, all sessions at once": every session loaded with ``nibabel`` into one
  (X, Y, Z, n_trials) int16 array, then masked, averaged and z-scored;
- peer "nibabel, session by session": each session loaded whole with ``nibabel``, its masked
  trials kept (n_trials, n_voxels) float32 until all sessions are read (the common recipe).

Peak memory is Python's ``tracemalloc`` peak (numpy and gzip buffers are traced) during each
call, in this one process. The output (train + test averages) grows with the number of images
seen; ``peak - output`` is the loader's working set, the number that must stay flat.

Run: ``.venv/bin/python benchmarks/bench_nsd.py [--scale 0.125] [--sessions 2 4 8]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nsdlib import nsd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _synthetic_nsd import write_synthetic_nsd  # noqa: E402  (the tests' tree writer, not library code)

NSD_GRID = (81, 104, 83)  # subject 1, 1.8 mm
MB = 1 << 20


def peer_all_at_once(root: Path, subject: int, sessions: int) -> dict:
    """Load every session with nibabel into one array, then prepare as Brain-Diffuser does."""
    import nibabel as nib
    import scipy.io

    layout = nsd.NSDLayout(root)
    roi = np.asarray(nib.load(root / layout.roi_file(subject)).dataobj)
    mask = roi > 0
    first = nib.load(root / layout.betas_file(subject, 1))
    T = first.shape[3]
    allb = np.empty((*first.shape[:3], sessions * T), np.int16)
    for s in range(1, sessions + 1):
        allb[..., (s - 1) * T: s * T] = np.asarray(nib.load(root / layout.betas_file(subject, s)).dataobj)
    trials = allb[mask].T.astype(np.float32) / 300  # (n_trials, n_voxels)
    del allb
    return _average_and_zscore(scipy.io.loadmat(root / layout.EXPDESIGN), subject, trials)


def peer_session_by_session(root: Path, subject: int, sessions: int) -> dict:
    """Load each session whole with nibabel; keep all masked trials, then average."""
    import nibabel as nib
    import scipy.io

    layout = nsd.NSDLayout(root)
    mask = np.asarray(nib.load(root / layout.roi_file(subject)).dataobj) > 0
    rows = []
    for s in range(1, sessions + 1):
        vol = np.asarray(nib.load(root / layout.betas_file(subject, s)).dataobj)
        rows.append(vol[mask].T.astype(np.float32) / 300)
        del vol
    trials = np.concatenate(rows)
    del rows
    return _average_and_zscore(scipy.io.loadmat(root / layout.EXPDESIGN), subject, trials)


def _average_and_zscore(mat: dict, subject: int, trials: np.ndarray) -> dict:
    mo = mat["masterordering"].ravel().astype(int)[: trials.shape[0]]
    ids = mat["subjectim"].astype(int)[subject - 1, mo - 1] - 1
    shared = mo <= mat["sharedix"].size
    out = {}
    for name, sel in (("train", ~shared), ("test", shared)):
        u, inv = np.unique(ids[sel], return_inverse=True)
        sums = np.zeros((u.size, trials.shape[1]), np.float32)
        np.add.at(sums, inv, trials[sel])
        out[name] = sums / np.bincount(inv)[:, None].astype(np.float32)
    mu, sd = out["train"].mean(0), out["train"].std(0, ddof=1)
    return {k: (v - mu) / sd for k, v in out.items()}


def nib_version() -> str:
    import nibabel

    return nibabel.__version__


def measure(fn, *args, **kw) -> tuple[float, float, object]:
    """(peak traced MB, seconds, result) of one call."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    sec = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MB, sec, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.125, help="fraction of NSD's voxel grid (default 1/8)")
    ap.add_argument("--sessions", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--trials", type=int, default=750, help="trials per session (NSD: 750)")
    ap.add_argument("--chunk-mb", type=float, default=32.0, help="nsdlib's read buffer")
    ap.add_argument("--root", default=None,
                    help="where to write the synthetic tree, kept and reused by later runs (default: a temp folder)")
    args = ap.parse_args(argv)

    f = args.scale ** (1 / 3)
    grid = tuple(max(4, int(round(g * f))) for g in NSD_GRID)
    n_max = max(args.sessions)
    tmp = tempfile.TemporaryDirectory(prefix="bench-nsd-") if args.root is None else None
    root = Path(args.root or tmp.name)
    t0 = time.perf_counter()
    layout = nsd.NSDLayout(root)
    stamp = root / "bench_nsd.json"
    wanted = json.dumps({"grid": grid, "sessions": n_max, "trials": args.trials})
    if not (stamp.is_file() and stamp.read_text() == wanted):  # a tree kept with --root is reused
        write_synthetic_nsd(root, n_sessions=n_max, trials_per_session=args.trials, grid=grid, n_shared=1000,
                            n_per_subject=10000, n_images=73000, roi_fraction=15724 / np.prod(NSD_GRID),
                            with_stimuli=False, seed=0)
        stamp.write_text(wanted)
    write_s = time.perf_counter() - t0
    session_mb = np.prod(grid) * args.trials * 2 / MB
    gz_mb = (root / layout.betas_file(1, 1)).stat().st_size / MB
    print(f"synthetic NSD tree: grid {grid} ({np.prod(grid):,} voxels, {args.scale:g} of NSD's), "
          f"{args.trials} trials/session, one session = {session_mb:.0f} MB int16 ({gz_mb:.0f} MB .nii.gz); "
          f"written in {write_s:.0f} s")

    # warm-up, untraced: imports and one-time allocations are not charged to the first row
    nsd.prepare_subject(layout, 1, 1, chunk_mb=args.chunk_mb, progress=False)
    peer_all_at_once(root, 1, 1)
    peer_session_by_session(root, 1, 1)
    rows = []
    for n in args.sessions:
        peak, sec, d = measure(nsd.prepare_subject, layout, 1, n, chunk_mb=args.chunk_mb, progress=False)
        out_mb = (d.train_betas.nbytes + d.test_betas.nbytes) / MB
        p1, s1, r1 = measure(peer_all_at_once, root, 1, n)
        p2, s2, r2 = measure(peer_session_by_session, root, 1, n)
        np.testing.assert_allclose(r1["train"], d.train_betas, atol=1e-4)  # same answer
        np.testing.assert_allclose(r2["test"], d.test_betas, atol=1e-4)
        rows.append((n, d.info["n_trials"], d.n_voxels, out_mb, peak, sec, p1, s1, p2, s2))
        del d, r1, r2

    head = ("| sessions | trials | voxels | output MB | nsdlib peak MB | nsdlib peak - output MB | nsdlib s "
            "| nibabel all-at-once peak MB | ratio | s | nibabel per-session peak MB | ratio | s |")
    print(head)
    print("|" + "---|" * 13)
    for n, tr, nv, out_mb, peak, sec, p1, s1, p2, s2 in rows:
        print(f"| {n} | {tr:,} | {nv:,} | {out_mb:.1f} | {peak:.1f} | {peak - out_mb:.1f} | {sec:.1f} "
              f"| {p1:.0f} | {p1 / peak:.1f}x | {s1:.1f} | {p2:.0f} | {p2 / peak:.1f}x | {s2:.1f} |")
    import psutil

    ram = psutil.virtual_memory().total / 2**30
    print(f"\nmachine: {platform.machine()}, {psutil.cpu_count()} CPUs, {ram:.0f} GiB RAM, "
          f"python {platform.python_version()}, numpy {np.__version__}, nibabel {nib_version()}; "
          f"{_dt.date.today().isoformat()}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
