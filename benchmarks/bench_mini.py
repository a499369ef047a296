"""Time and peak memory of generating mini-NSD, against writing the same files with nibabel/h5py alone.

For each size ("small", then "default"):

- ``nsdlib``: :func:`nsdlib.mini.generate` into a fresh folder (draws and renders the scenes,
  captions, brains, noise and HRF-convolved time series, and writes every file);
- peer "write only": the arrays of every file it made, already in memory, written again with
  the plain libraries a user would reach for — ``nibabel.save`` (its default gzip) for each
  NIfTI, ``h5py`` for ``imgBrick`` (same chunks), ``scipy.io.savemat`` for the design,
  ``numpy.savez`` / ``json`` / file copy for the rest. Reading the arrays back is not timed.

The ratio says how much the simulation costs on top of the unavoidable I/O. Times are wall
clock and process CPU time (``time.process_time``: all threads of this process; the better
figure when other work shares the machine) in this one process; a second pass measures the
peak traced memory (``tracemalloc``: numpy and Python buffers; HDF5's and zlib's C buffers are
not traced) of both.

Run: ``.venv/bin/python benchmarks/bench_mini.py [--sizes small default] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import platform
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nsdlib import mini, names

MB = 1 << 20


def peer_write(src: Path, dst: Path, trace: bool = False) -> dict:
    """Write the arrays of every file under ``src`` again under ``dst``; time (and trace) the writes only."""
    import h5py
    import nibabel as nib
    import scipy.io

    seconds, cpu, peak, n_bytes = 0.0, 0.0, 0, 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        name = path.name
        if name.endswith(".nii.gz"):
            img = nib.load(path)
            data = np.asarray(img.dataobj)
            write = lambda out=out, img=img, data=data: nib.save(nib.Nifti1Image(data, img.affine, img.header), out)
        elif name.endswith(".hdf5"):
            with h5py.File(path, "r") as f:
                data = f["imgBrick"][()]

            def write(out=out, data=data):
                with h5py.File(out, "w") as f:
                    f.create_dataset("imgBrick", data=data, chunks=(1, *data.shape[1:]))
        elif name.endswith(".mat"):
            data = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
            write = lambda out=out, data=data: scipy.io.savemat(out, data)
        elif name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            write = lambda out=out, data=data: np.savez(out, **data)
        elif name.endswith(".json"):
            data = json.loads(path.read_text())
            write = lambda out=out, data=data: out.write_text(json.dumps(data))
        else:
            write = lambda out=out, path=path: shutil.copyfile(path, out)
        gc.collect()
        if trace:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        write()
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if trace:
            peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
        n_bytes += out.stat().st_size
        data = None
    return {"seconds": seconds, "cpu": cpu, "peak_mb": peak / MB, "bytes": n_bytes}


def bench(size: str, memory: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mini-") as tmp:
        tmp = Path(tmp)
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        root = mini.generate(tmp / "a", seed=0, size=size, progress=False)
        gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
        peer = peer_write(root, tmp / "peer")
        out = {"size": size, "generate_s": gen_s, "generate_cpu_s": gen_cpu, "write_only_s": peer["seconds"],
               "write_only_cpu_s": peer["cpu"], "ratio": gen_s / peer["seconds"],
               "disk_mb": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / MB}
        shutil.rmtree(tmp / "peer")
        if memory:
            gc.collect()
            tracemalloc.start()
            mini.generate(tmp / "b", seed=0, size=size, progress=False)
            out["generate_peak_mb"] = tracemalloc.get_traced_memory()[1] / MB
            tracemalloc.stop()
            shutil.rmtree(tmp / "b")
            tracemalloc.start()
            out["write_only_peak_mb"] = peer_write(root, tmp / "peer2", trace=True)["peak_mb"]
            tracemalloc.stop()
    spec = mini.spec_for(size)
    out.update(images=spec.n_images, trials_per_subject=spec.n_trials, sessions=spec.n_sessions, runs=spec.n_runs,
               volumes_per_run=spec.run_volumes, voxels={s: spec.voxels(s) for s in names.SUBJECTS})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "default"], choices=["small", "default"])
    ap.add_argument("--no-memory", action="store_true", help="skip the traced-memory pass")
    args = ap.parse_args(argv)
    import os

    print(f"# mini-NSD generate vs write-only peer ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {_dt.date.today()})")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| size | images | trials/subject | generate wall (CPU) s | write only wall (CPU) s | ratio wall (CPU) "
          "| generate peak (MB) | write-only peak (MB) | disk (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = bench(size, memory=not args.no_memory)
        print(f"| {size} | {r['images']} | {r['trials_per_subject']} | {r['generate_s']:.1f} "
              f"({r['generate_cpu_s']:.1f}) | {r['write_only_s']:.1f} ({r['write_only_cpu_s']:.1f}) | "
              f"{r['ratio']:.1f}x ({r['generate_cpu_s'] / r['write_only_cpu_s']:.1f}x) | "
              f"{r.get('generate_peak_mb', float('nan')):.0f} | {r.get('write_only_peak_mb', float('nan')):.0f} | "
              f"{r['disk_mb']:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
