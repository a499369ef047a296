"""Time and peak memory of generating mini-NSD, against writing the same files with nibabel/h5py alone.

For each size ("small", then "default"):

- ``nsdlib``: :func:`nsdlib.mini.generate` into a fresh folder (draws and renders the scenes,
  captions, brains, noise and HRF-convolved time series, and writes every file);
- peer "write only": the arrays of every file it made, already in memory, written again with
  the plain libraries a user would reach for — ``nibabel.save`` (its default gzip) for each
  NIfTI, ``h5py`` for ``imgBrick`` (same chunks), ``scipy.io.savemat`` for the design,
  ``numpy.savez`` / ``json`` / file copy for the rest. Reading the arrays back is not timed.

The ratio says how much the simulation costs on top of the unavoidable I/O. Under the benchmark
protocol (``_protocol.py``: one thread, ``--repeats`` repeats with generate and the peer
interleaved, median and range, load recorded): wall-clock and process CPU time
(``time.process_time``: the steadier figure when other work shares the machine). Each timed call
first removes its previous output (both sides alike; a fraction of a second against minutes), so
that the disk holds at most one copy of each. Memory: the first generation (which makes the files
the peer rewrites, untimed) runs under ``tracemalloc`` (numpy and Python buffers; HDF5's and zlib's
C buffers are not traced), and so does one untimed pass of the peer's writes (its largest write).
Writes ``benchmarks/results/mini.json``.

Run: ``.venv/bin/python benchmarks/bench_mini.py [--sizes small default] [--repeats 3] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from _protocol import Session, cpu_stats, cpu_timed

from nsdlib import mini, names

MB = 1 << 20


def peer_writes(src: Path, dst: Path) -> list:
    """The arrays of every file under ``src``, read into memory, each with the call that writes it
    again under ``dst`` with the plain libraries: ``[(relative path, write(), out path)]``."""
    import h5py
    import nibabel as nib
    import scipy.io

    writes = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        out = dst / rel
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
        writes.append((rel, write, out))
    return writes


def run_writes(writes: list, dst: Path) -> int:
    """Remove ``dst``, then run every write of :func:`peer_writes`; the bytes written."""
    shutil.rmtree(dst, ignore_errors=True)
    n_bytes = 0
    for _, write, out in writes:
        out.parent.mkdir(parents=True, exist_ok=True)
        write()
        n_bytes += out.stat().st_size
    return n_bytes


def traced_peak_writes(writes: list, dst: Path) -> float:
    """The largest traced allocation of any one write (MB), each measured above what was alive before it."""
    shutil.rmtree(dst, ignore_errors=True)
    peak = 0
    tracemalloc.start()
    for _, write, out in writes:
        out.parent.mkdir(parents=True, exist_ok=True)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        write()
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    tracemalloc.stop()
    shutil.rmtree(dst, ignore_errors=True)
    return peak / MB


def bench(run: Session, size: str, repeats: int, memory: bool = True) -> list:
    """One row of the table for ``size``: counts, generate and peer seconds (wall and CPU), ratios, memory."""
    with tempfile.TemporaryDirectory(prefix="bench-mini-") as tmp:
        tmp = Path(tmp)
        gc.collect()
        if memory:  # the first generation, traced, makes the files the peer rewrites
            tracemalloc.start()
        root = mini.generate(tmp / "first", seed=0, size=size, progress=False)
        gen_peak = tracemalloc.get_traced_memory()[1] / MB if memory else None
        tracemalloc.stop()
        disk_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / MB
        writes = peer_writes(root, tmp / "peer")
        peer_peak = traced_peak_writes(writes, tmp / "peer") if memory else None

        def generate():
            shutil.rmtree(tmp / "ours", ignore_errors=True)
            return mini.generate(tmp / "ours", seed=0, size=size, progress=False)

        cpu: dict = {}
        entries = cpu_timed([("write only", lambda: run_writes(writes, tmp / "peer")), ("generate", generate)], cpu)
        stats, _ = run.compare(entries[0], entries[1:], repeats=repeats)
        cstats = cpu_stats(cpu, "write only")
    spec = mini.spec_for(size)
    run.values[size] = dict(images=spec.n_images, trials_per_subject=spec.n_trials, sessions=spec.n_sessions,
                            runs=spec.n_runs, volumes_per_run=spec.run_volumes,
                            voxels={s: spec.voxels(s) for s in names.SUBJECTS})
    return [size, spec.n_images, spec.n_trials, stats["generate"]["seconds"], cstats["generate"]["seconds"],
            stats["write only"]["seconds"], cstats["write only"]["seconds"],
            _inverse(stats["generate"]["ratio"]), _inverse(cstats["generate"]["ratio"]), gen_peak, peer_peak, disk_mb]


def _inverse(ratio: dict) -> dict:
    """A spread of ``peer / ours`` as one of ``ours / peer`` (what generating costs in writes)."""
    return {"median": 1 / ratio["median"], "min": 1 / ratio["max"], "max": 1 / ratio["min"], "n": ratio["n"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "default"], choices=["small", "default"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the traced-memory pass")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    run = Session("mini", "benchmarks/bench_mini.py", argv=argv, versions=("h5py",))
    rows = []
    for size in args.sizes:
        rows.append(bench(run, size, args.repeats, memory=not args.no_memory))
        print(rows[-1], flush=True)
    run.table("generate", "`nsdlib.mini.generate` against writing the same arrays with the plain libraries "
              "(seconds: median and range over the repeats)",
              ["size", "images", "trials per subject", "`generate` wall s", "`generate` CPU s",
               "write-only peer wall s", "write-only peer CPU s", "generate / peer, wall", "generate / peer, CPU",
               "`generate` peak MB", "peer peak MB", "disk MB"], rows,
              ["{}", "{:,}", "{:,}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}×", "{:.1f}×", "{:.0f}", "{:.0f}",
               "{:.0f}"])
    run.write(args.out)
    return {"rows": rows}


if __name__ == "__main__":
    raise SystemExit(main() and 0)
