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
call, in this one process, once per method and session count (memory does not depend on the
load). The output (train + test averages) grows with the number of images seen;
``peak - output`` is the loader's working set, the number that must stay flat. Every method
must return the same matrices (the largest difference is recorded).

Time, under the benchmark protocol (``_protocol.py``: one thread, ``--repeats`` interleaved
repeats, median and range, load recorded), untraced, at ``--time-sessions`` sessions: each peer's
seconds over nsdlib's, per repeat. A last table applies the measured working set to subject 1's
full shapes (arithmetic, not measured). Writes ``benchmarks/results/nsd.json``.

Run: ``.venv/bin/python benchmarks/bench_nsd.py [--scale 0.125] [--sessions 1 2 4] [--time-sessions 2]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _protocol import Session, spread

from nsdlib import nsd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _synthetic_nsd import write_synthetic_nsd  # noqa: E402  (the tests' tree writer, not library code)

NSD_GRID = (81, 104, 83)  # subject 1, 1.8 mm
NSD_FULL = dict(sessions=37, trials=750, voxels=15_724, images=9_841)  # subject 1: 8,859 train + 982 test images
MB = 1 << 20
GB = 1e9
PEERS = ("nibabel, all sessions at once", "nibabel, session by session")


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


def ratio_spread(peer_raw, ours_raw) -> dict:
    """The protocol's spread of per-repeat ratios ``peer / ours`` (interleaved repeats, same order)."""
    if len(peer_raw) != len(ours_raw):
        raise ValueError(f"ratios need as many peer as own timings; found {len(peer_raw)} and {len(ours_raw)}")
    return spread([p / o for p, o in zip(peer_raw, ours_raw)])


def full_scale_rows(working_mb: float) -> list:
    """Subject 1's full shapes (1.8 mm grid, 37 sessions of 750 trials, 15,724 voxels, 9,841 images):
    what each method holds at its peak, in GB, nsdlib's working set being ``working_mb`` (measured)."""
    session = np.prod(NSD_GRID) * NSD_FULL["trials"] * 2  # int16
    trials = NSD_FULL["sessions"] * NSD_FULL["trials"] * NSD_FULL["voxels"] * 4  # masked float32 trials
    output = NSD_FULL["images"] * NSD_FULL["voxels"] * 4
    return [[PEERS[0], "every session in one int16 array", NSD_FULL["sessions"] * session / GB],
            [PEERS[1], "one whole session + every masked float32 trial", (session + trials) / GB],
            ["nsdlib `prepare_subject`", "its float32 output + the measured working set",
             (output + working_mb * MB) / GB]]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.125, help="fraction of NSD's voxel grid (default 1/8)")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4], help="session counts of the memory table")
    ap.add_argument("--time-sessions", type=int, default=2, help="session count of the timed comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=750, help="trials per session (NSD: 750)")
    ap.add_argument("--chunk-mb", type=float, default=32.0, help="nsdlib's read buffer")
    ap.add_argument("--root", default=None,
                    help="where to write the synthetic tree, kept and reused by later runs (default: a temp folder)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    run = Session("nsd", "benchmarks/bench_nsd.py", argv=argv)

    f = args.scale ** (1 / 3)
    grid = tuple(max(4, int(round(g * f))) for g in NSD_GRID)
    n_max = max(*args.sessions, args.time_sessions)
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
    session_mb = np.prod(grid) * args.trials * 2 / MB
    gz_mb = (root / layout.betas_file(1, 1)).stat().st_size / MB
    print(f"synthetic NSD tree: grid {grid}, one session = {session_mb:.0f} MB int16 ({gz_mb:.0f} MB .nii.gz); "
          f"written in {time.perf_counter() - t0:.0f} s")
    run.values.update(grid=list(grid), voxels_in_grid=int(np.prod(grid)), session_mb=float(session_mb),
                      session_gz_mb=float(gz_mb), trials_per_session=args.trials)

    def ours(n):
        return nsd.prepare_subject(layout, 1, n, chunk_mb=args.chunk_mb, progress=False)

    # warm-up, untraced: imports and one-time allocations are not charged to the first row
    ours(1)
    peer_all_at_once(root, 1, 1)
    peer_session_by_session(root, 1, 1)
    rows, worst_diff, working = [], 0.0, []
    for n in args.sessions:
        peak, _, d = measure(ours, n)
        out_mb = (d.train_betas.nbytes + d.test_betas.nbytes) / MB
        p1, _, r1 = measure(peer_all_at_once, root, 1, n)
        p2, _, r2 = measure(peer_session_by_session, root, 1, n)
        for r in (r1, r2):
            worst_diff = max(worst_diff, *(float(np.abs(r[k] - getattr(d, f"{k}_betas")).max()) for k in r))
        working.append(peak - out_mb)
        rows.append([n, d.info["n_trials"], d.n_voxels, out_mb, peak, peak - out_mb, p1, p1 / peak, p2, p2 / peak])
        print("memory", rows[-1], flush=True)
        del d, r1, r2
    if worst_diff > 1e-4:
        raise AssertionError(f"the peers' matrices should equal nsdlib's to 1e-4; found a difference of {worst_diff}")
    run.values["max_abs_difference"] = worst_diff
    run.table("memory", f"Peak traced memory of preparing subject 1 (grid {' × '.join(map(str, grid))}, "
              f"{session_mb:.0f} MB of int16 per session)",
              ["sessions", "trials", "voxels", "output MB", "nsdlib peak MB", "nsdlib peak − output MB",
               f"{PEERS[0]}: peak MB", "× nsdlib", f"{PEERS[1]}: peak MB", "× nsdlib"], rows,
              ["{}", "{:,}", "{:,}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.0f}", "{:.1f}×", "{:.0f}", "{:.1f}×"])

    n = args.time_sessions
    stats, _ = run.compare((PEERS[0], lambda: peer_all_at_once(root, 1, n)),
                           [("nsdlib", lambda: ours(n)), (PEERS[1], lambda: peer_session_by_session(root, 1, n))],
                           repeats=args.repeats)
    ours_raw = stats["nsdlib"]["raw"]
    run.table("speed", f"Seconds to prepare {n} sessions (untraced; median and range over the repeats)",
              ["method", "seconds", "this / nsdlib"],
              [["nsdlib `prepare_subject`", stats["nsdlib"]["seconds"], None]]
              + [[p, stats[p]["seconds"], ratio_spread(stats[p]["raw"], ours_raw)] for p in PEERS],
              ["{}", "{:.1f}", "{:.2f}×"])
    run.table("full_scale", "At subject 1's full shapes (arithmetic from the shapes, not measured; nsdlib's working "
              f"set: the largest measured above, {max(working):.0f} MB)", ["method", "what it holds", "GB"],
              full_scale_rows(max(working)), ["{}", "{}", "{:.2f}"])
    run.write(args.out)
    if tmp is not None:
        tmp.cleanup()
    return {"rows": rows, "stats": stats}


if __name__ == "__main__":
    main()
