"""The measurement protocol shared by every ``benchmarks/bench_*.py``.

One :class:`Session` per script run:

- every library runs on one thread (``threadpoolctl`` for BLAS/OpenMP, ``torch.set_num_threads``),
  so that a ratio compares the libraries and not how each copes with a shared machine;
- :meth:`Session.compare` times a peer and one or more of ours ``repeats`` times (at least 3),
  interleaved (peer first on even repeats, last on odd ones), and reports each side's median time
  and the median ratio ``peer / ours`` with its range over the repeats;
- the 1-minute load average is recorded at the start and at the end; a run whose load at the
  start exceeds :data:`LOAD_LIMIT` is flagged ``loaded`` (its seconds are upper bounds for a
  quiet machine; its ratios compare runs made under the same load, interleaved);
- memory is measured in a fresh child process per case: :func:`reset_peak_rss` and
  :func:`peak_rss` there, :func:`child_json` here;
- :meth:`Session.write` writes the results atomically as ``benchmarks/results/<name>.json``,
  with the date, the machine, the thread count and the versions of the libraries involved.

``benchmarks/report.py`` turns those JSON files into RESULTS.md's tables (``make bench-report``).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_LIMIT = 0.5  # 1-minute load average at the start above which a run is flagged "loaded"
MIN_REPEATS = 3
_VERSIONED = ("numpy", "scipy", "torch", "scikit-learn", "himalaya", "fracridge", "nibabel")


def spread(values) -> dict:
    """Median, min and max of a list of numbers (the protocol's summary of repeats)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread needs at least one value; found none")
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def single_thread() -> None:
    """One thread for BLAS, OpenMP and torch in this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _versions(extra=()) -> dict:
    out = {"python": platform.python_version()}
    for name in (*_VERSIONED, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Session:
    """One benchmark run: metadata, interleaved timings, tables, and the JSON it writes.

    Parameters
    ----------
    name : str
        The results file's stem (``benchmarks/results/<name>.json``) and the RESULTS.md marker.
    script : str
        The script that measured, as shown in the report.
    argv : list of str, optional
        The script's arguments (recorded).
    versions : sequence of str
        Distributions whose versions are recorded besides the usual ones.
    threads : int or str
        Threads every library may use (1 unless a script says why not; a sentence when the
        script does not set them, e.g. chapters run by the runner).
    """

    def __init__(self, name: str, script: str, argv=None, versions=(), threads: int | str = 1):
        if threads == 1:
            single_thread()
        self.name = name
        load = os.getloadavg()[0]
        self.meta = {
            "script": script, "argv": list(sys.argv[1:] if argv is None else argv),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()}, {_cpu_name()}, {os.cpu_count()} cores",
            "threads": threads, "versions": _versions(versions),
            "load_start": round(load, 2), "load_limit": LOAD_LIMIT, "loaded": load > LOAD_LIMIT,
        }
        self.tables: list = []
        self.values: dict = {}

    def compare(self, peer, ours, repeats: int = MIN_REPEATS, warmup: bool = False) -> tuple[dict, dict]:
        """Time ``peer`` and each of ``ours`` ``repeats`` times, interleaved.

        Parameters
        ----------
        peer : (label, callable)
        ours : list of (label, callable)
        repeats : int
            At least :data:`MIN_REPEATS`.
        warmup : bool
            Call each function once, untimed, first.

        Returns
        -------
        stats : dict
            ``{label: {"seconds": spread, "ratio": spread of peer/ours (ours only)}}``.
        outputs : dict
            ``{label: the return value of its first timed call}``.
        """
        if repeats < MIN_REPEATS:
            raise ValueError(f"the protocol needs at least {MIN_REPEATS} repeats; found {repeats}")
        entries = [peer, *ours]
        if warmup:
            for _, fn in entries:
                fn()
        times: dict = {label: [] for label, _ in entries}
        outputs: dict = {}
        for r in range(repeats):
            for label, fn in (entries if r % 2 == 0 else [*ours, peer]):
                t0 = time.perf_counter()
                out = fn()
                times[label].append(time.perf_counter() - t0)
                outputs.setdefault(label, out)
                del out
        stats = {peer[0]: {"seconds": spread(times[peer[0]]), "raw": times[peer[0]]}}
        for label, _ in ours:
            ratios = [p / o for p, o in zip(times[peer[0]], times[label])]
            stats[label] = {"seconds": spread(times[label]), "ratio": spread(ratios), "raw": times[label]}
        return stats, outputs

    def table(self, key: str, title: str, columns, rows, formats=None, note: str | None = None) -> None:
        """Add a table: ``rows`` of cells (numbers, strings, None or :func:`spread` dicts).

        ``formats`` gives one format per column for numbers (e.g. ``"{:.2f} s"``); a spread is
        shown as its median with its range in brackets, each in the column's format.
        """
        formats = list(formats) if formats is not None else ["{}"] * len(columns)
        if len(formats) != len(columns) or any(len(r) != len(columns) for r in rows):
            raise ValueError(f"table {key!r}: every row and the formats need {len(columns)} cells; found "
                             f"{len(formats)} formats and rows of {sorted({len(r) for r in rows})}")
        self.tables.append({"key": key, "title": title, "columns": list(columns), "formats": formats,
                            "rows": [list(r) for r in rows], "note": note})

    def write(self, directory: Path | None = None) -> Path:
        """Record the load at the end and write ``<directory>/<name>.json`` atomically."""
        self.meta["load_end"] = round(os.getloadavg()[0], 2)
        directory = Path(directory or RESULTS)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        doc = {"name": self.name, "meta": self.meta, "tables": self.tables, "values": self.values}
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.tmp-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1, default=float)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"wrote {path} (load average {self.meta['load_start']} at start, {self.meta['load_end']} at end"
              f"{', loaded' if self.meta['loaded'] else ''})")
        return path


def cpu_timed(entries, store: dict) -> list:
    """``(label, fn)`` entries whose calls also append their process CPU seconds to ``store[label]``.

    Hand the result to :meth:`Session.compare`; then :func:`cpu_stats` summarises ``store`` the
    way ``compare`` summarises wall-clock time. Process CPU time (``time.process_time``: every
    thread of this process) is the steadier figure when other work shares the machine.
    """
    def wrap(label, fn):
        def timed():
            c0 = time.process_time()
            out = fn()
            store.setdefault(label, []).append(time.process_time() - c0)
            return out
        return timed
    return [(label, wrap(label, fn)) for label, fn in entries]


def cpu_stats(store: dict, peer: str, warmup: bool = False) -> dict:
    """``{label: {"seconds": spread, "ratio": spread of peer/ours}}`` of CPU seconds gathered by
    :func:`cpu_timed` (the first call of each dropped when ``compare`` warmed up)."""
    times = {label: ts[1:] if warmup else ts for label, ts in store.items()}
    out = {peer: {"seconds": spread(times[peer])}}
    for label, ts in times.items():
        if label != peer:
            out[label] = {"seconds": spread(ts), "ratio": spread([p / o for p, o in zip(times[peer], ts)])}
    return out


# ----------------------------------------------------------------------------- memory
def reset_peak_rss() -> bool:
    """Reset the kernel's count of this process's peak resident memory (``/proc/self/clear_refs``).

    Returns False where it cannot be reset (no ``/proc``, no permission): a later
    :func:`peak_rss` then includes everything since the process started.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """This process's peak resident memory since the last :func:`reset_peak_rss` (``VmHWM``), bytes;
    without ``/proc``, the peak since the start (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_json(cmd, env=None) -> dict:
    """Run a memory child (a script's ``--child`` mode) and read the JSON object it prints last.

    A child that reports ``"reset": false`` could not reset the peak counter, so its peak would
    include building its data: that is refused rather than recorded.
    """
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out.get("reset") is False:
        raise RuntimeError("the kernel's peak-RSS counter could not be reset (/proc/self/clear_refs): "
                           "the measurement would include building the data")
    return out
