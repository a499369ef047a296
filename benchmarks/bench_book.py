"""The book's own cost: the runner's per-chapter times, and what dominates the slowest chapters.

Two parts, each written to ``benchmarks/results/book.json``:

1. ``--run DIR``: the runner's records of a ``make book`` run (``DIR/*.done.json``, e.g.
   ``runs/mini/subj01``): seconds per chapter, as the runner timed them.
2. ``--profile 04 08 09 --workdir WORK``: each named chapter run alone under py-spy (sampling,
   following the notebook kernel) on a copy of a cached artifact store ``WORK``, with the
   artifacts that chapter itself makes removed first, so it computes what it computes in a
   book build and reuses what earlier chapters made. Which artifacts a chapter makes: a first,
   fully cached pass of chapters 00 up to the last one profiled records, in the store's log,
   every artifact each chapter touches; a chapter's own are those no earlier chapter touched.
   The profile names the nsdlib functions (innermost nsdlib frame of each sample) and the
   leaf frames that take the most samples.

No timing here is a ratio against a peer: the book has none; the protocol's metadata (load,
threads, versions) is recorded all the same. The chapters run with the threads the runner gives them.

Run: ``.venv/bin/python benchmarks/bench_book.py --workdir /tmp/copy-of-work --profile 04 08 09
[--run runs/mini/subj01] [--py-spy /tmp/spy/bin/py-spy]``. Takes about as long as those chapters
in a book build, plus a cached pass of the chapters before them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _protocol import Session

ROOT = Path(__file__).resolve().parents[1]
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def chapter_times(run_dir: Path) -> list:
    """``[[chapter, seconds], ...]`` from the runner's ``.done.json`` records."""
    rows = []
    for rec in sorted(Path(run_dir).glob("*.done.json")):
        rows.append([rec.name.removesuffix(".done.json"), float(json.loads(rec.read_text())["seconds"])])
    return rows


def _chapter_names(numbers) -> list:
    names = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
    return [n for n in names if n[:2] in set(numbers)]


def _runner(workdir: Path, runs: Path, chapter: str) -> list:
    return [sys.executable, "-m", "nsdlib", "run", "--dataset", "mini", "--subject", "1", "--workdir", str(workdir),
            "--runs", str(runs), "--notebooks", chapter[:2], "--no-resume"]


def _log_lines(workdir: Path) -> list:
    log = workdir / "mini" / "subj01" / "store.log"
    return log.read_text().splitlines() if log.exists() else []


def touched_by_chapter(workdir: Path, runs: Path, chapters: list) -> dict:
    """Run each chapter once (fully cached) and return ``{chapter: {(name, key), ...}}``."""
    out = {}
    for ch in chapters:
        before = len(_log_lines(workdir))
        subprocess.run(_runner(workdir, runs, ch), check=True, capture_output=True, cwd=ROOT)
        out[ch] = {(d["name"], d["key"]) for d in map(json.loads, _log_lines(workdir)[before:])}
        print(f"cached pass: {ch} touched {len(out[ch])} artifacts")
    return out


def remove_artifacts(workdir: Path, keys) -> int:
    n = 0
    for name, key in keys:
        for f in (workdir / "mini" / "subj01" / name).glob(f"{key}.*"):
            f.unlink()
            n += 1
    return n


def summarise(raw: Path, top: int = 3) -> dict:
    """Shares of py-spy's samples by innermost nsdlib function and by leaf frame."""
    inner, leaf, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [m.groupdict() for m in map(_FRAME.match, stack.split(";")) if m]
        total += n
        if frames:
            leaf[f"{frames[-1]['func']} ({Path(frames[-1]['file']).name})"] += n
        ours = [f for f in frames if "/nsdlib/" in f["file"]]
        key = f"nsdlib.{Path(ours[-1]['file']).stem}.{ours[-1]['func']}" if ours else "(outside nsdlib)"
        inner[key] += n
    share = lambda c: [[k, v / max(total, 1)] for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "nsdlib": share(inner), "leaf": share(leaf)}


def profile(chapter: str, workdir: Path, runs: Path, spy: str, rate: int, scratch: Path) -> dict:
    raw = scratch / f"{chapter}.raw.txt"
    cmd = [spy, "record", "--subprocesses", "--rate", str(rate), "--format", "raw", "--output", str(raw), "--",
           *_runner(workdir, runs, chapter)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    return {"seconds": secs, **summarise(raw)}


def _fmt(pairs) -> str:
    return "; ".join(f"`{k}` {v:.0%}" for k, v in pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="run directory of a make book (its *.done.json)")
    ap.add_argument("--workdir", type=Path, default=None, help="a cached artifact store to copy")
    ap.add_argument("--profile", nargs="*", default=[])
    ap.add_argument("--py-spy", default=os.environ.get("PY_SPY", shutil.which("py-spy") or "/tmp/spy/bin/py-spy"))
    ap.add_argument("--rate", type=int, default=20, help="py-spy samples per second")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/bench-book"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    run = Session("book", "benchmarks/bench_book.py", threads="threads as the runner sets them")
    if a.run is not None:
        rows = chapter_times(a.run)
        rows.append(["all chapters", sum(r[1] for r in rows)])
        run.table("chapters", f"The runner's seconds per chapter ({a.run})", ["chapter", "seconds"], rows,
                  ["{}", "{:.0f}"])
    if a.profile:
        if a.workdir is None:
            raise SystemExit("--profile needs --workdir (a cached artifact store; it is copied, not changed)")
        shutil.rmtree(a.scratch, ignore_errors=True)
        a.scratch.mkdir(parents=True)
        work, runs = a.scratch / "work", a.scratch / "runs"
        shutil.copytree(a.workdir, work)
        last = max(a.profile)
        upto = _chapter_names([f"{i:02d}" for i in range(int(last) + 1)])
        touched = touched_by_chapter(work, runs, upto)
        rows = []
        for ch in _chapter_names(a.profile):
            earlier = set().union(*(touched[c] for c in upto if c < ch))
            own = touched[ch] - earlier
            removed = remove_artifacts(work, own)
            res = profile(ch, work, runs, a.py_spy, a.rate, a.scratch)
            rows.append([ch, res["seconds"], len(own), res["samples"], _fmt(res["nsdlib"]), _fmt(res["leaf"])])
            print(f"{ch}: {res['seconds']:.0f} s, {len(own)} own artifacts ({removed} files) recomputed; {rows[-1][4]}")
        run.table("profile", "The slowest chapters profiled (py-spy, sampling the runner and its notebook kernel; "
                  "a chapter's own artifacts recomputed, earlier chapters' reused)",
                  ["chapter", "seconds (under py-spy)", "own artifacts recomputed", "samples",
                   "innermost nsdlib function: share of samples", "leaf frame: share of samples"],
                  rows, ["{}", "{:.0f}", "{}", "{}", "{}", "{}"])
        shutil.rmtree(work, ignore_errors=True)
    run.write(a.out)


if __name__ == "__main__":
    main()
