"""The book's own cost: build time and size, the runner's per-chapter times, what dominates the slowest chapters.

Three parts:

1. ``--make-book DIR``: clone this repository's HEAD into ``DIR`` (which must not exist), run
   ``make book`` there timed (install included; the 1-minute load average sampled every 30 s),
   then ``make check-book``; the timings go to ``DIR/book_timing.json`` and the check's report to
   ``DIR/check-book.log``. ``--check-book DIR`` runs only the check, on a build already made.
2. ``--build DIR``: read such a build: ``make book``'s wall time and load (``book_timing.json``),
   the built book's size (``du`` of ``_build/html``: in all, figures, MathJax and the largest
   page), ``make check-book``'s pages and problems, and the runner's seconds per chapter
   (``DIR/runs/mini/subj01/*.done.json``; ``--run`` names another run directory). Written to
   ``benchmarks/results/book.json``.
3. ``--profile 04 08 09 --build DIR`` (or ``--workdir WORK``): each named chapter run alone under
   py-spy (sampling, following the notebook kernel) on a copy of the build's artifact store
   ``DIR/work`` (or of ``WORK``), with the artifacts that chapter itself makes removed first, so
   it computes what it computes in a book build and reuses what earlier chapters made. Which
   artifacts a chapter makes: with a build, its store's log read against the runner's records
   (a chapter's events are those between the previous chapter's ``.done.json`` and its own);
   with ``--workdir`` alone, a first, fully cached pass of chapters 00 up to the last one
   profiled, logged the same way. A chapter's own artifacts are those no earlier chapter touched.
   ``--profile 04 08 09 --attach DIR`` profiles them in a build running in ``DIR`` instead (start
   it beside ``--make-book DIR``): py-spy attaches to each chapter's notebook kernel as the runner
   starts it and samples it, without pausing it, until it ends; nothing is recomputed.
   The profile names the nsdlib functions (innermost nsdlib frame of each sample) and the
   leaf frames that take the most samples. Written to ``benchmarks/results/book_profile.json``.

No timing here is a ratio against a peer: the book has none; the protocol's metadata (load,
threads, versions) is recorded all the same. The chapters run with the threads the runner gives them.

Run: ``.venv/bin/python benchmarks/bench_book.py --make-book /tmp/book`` (as long as ``make book``),
then ``benchmarks/bench_book.py --build /tmp/book`` (seconds), then ``benchmarks/bench_book.py --build
/tmp/book --profile 04 08 09 [--py-spy /tmp/spy/bin/py-spy]`` (about as long as those chapters in a
book build; ``--workdir`` alone adds a cached pass of the chapters before them).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _protocol import Session

ROOT = Path(__file__).resolve().parents[1]
_NSDLIB = re.compile(r"(^|/)nsdlib/")  # py-spy shortens paths: "nsdlib/x.py" or "/site/nsdlib/x.py"
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def chapter_times(run_dir: Path) -> list:
    """``[[chapter, seconds], ...]`` from the runner's ``.done.json`` records."""
    rows = []
    for rec in sorted(Path(run_dir).glob("*.done.json")):
        rows.append([rec.name.removesuffix(".done.json"), float(json.loads(rec.read_text())["seconds"])])
    return rows


TIMING = "book_timing.json"  # the record --make-book writes in the build folder
CHECK_LOG = "check-book.log"  # make check-book's output, beside it
RUN_DIR = Path("runs") / "mini" / "subj01"  # where make book's runner writes its records
_CHECK_LINE = re.compile(r"^check-book: (?P<pages>\d+) pages, (?P<problems>\d+) problems\b.*$", re.M)


def _load_sampler(samples: list, every: float = 30.0):
    """Start appending the 1-minute load average to ``samples`` every ``every`` s; returns the stop call."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            samples.append(round(os.getloadavg()[0], 2))
            stop.wait(every)

    threading.Thread(target=loop, daemon=True).start()
    return stop.set


def _timed_make(target: str, build: Path, log: Path) -> dict:
    samples: list = []
    stop = _load_sampler(samples)
    t0 = time.time()
    # the clone's own code, not whatever PYTHONPATH points this script at: the chapters import nsdlib
    # from the build's environment, as in a fresh clone
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with open(log, "w") as fh:
        rc = subprocess.run(["make", target], cwd=build, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    secs = time.time() - t0
    stop()
    return {"seconds": secs, "rc": rc, "load_start": samples[0], "load_end": round(os.getloadavg()[0], 2),
            "load_samples": samples}


def _write_record(build: Path, record: dict) -> None:
    (build / TIMING).write_text(json.dumps(record, indent=1) + "\n")


def make_book(build: Path, source: Path = ROOT) -> dict:
    """Clone ``source`` into ``build``, time ``make book`` there (install included), then check it."""
    if build.exists():
        raise SystemExit(f"--make-book needs a folder that does not exist yet (a fresh clone); found {build}")
    subprocess.run(["git", "clone", "-q", str(source), str(build)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=build, check=True, capture_output=True,
                            text=True).stdout.strip()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    record = {"commit": commit, "started": started, "timed_by": "bench_book.py --make-book",
              "make_book": _timed_make("book", build, build / "make-book.log")}
    _write_record(build, record)
    if record["make_book"]["rc"] != 0:
        raise SystemExit(f"make book failed in {build} (exit {record['make_book']['rc']}); see make-book.log")
    return check_book(build)


def check_book(build: Path) -> dict:
    """Time ``make check-book`` on a built book; its report goes to ``check-book.log``, its time to the record."""
    record = read_timing(build)
    record["check_book"] = _timed_make("check-book", build, build / CHECK_LOG)
    _write_record(build, record)
    return record


def read_timing(build: Path) -> dict:
    path = Path(build) / TIMING
    if not path.exists():
        raise SystemExit(f"{path} not found: time the build with --make-book (or write its record: "
                         "commit, started, make_book: seconds, load_start, load_end, load_samples)")
    return json.loads(path.read_text())


def check_report(text: str) -> dict:
    """``{"pages", "problems", "lines"}`` from ``make check-book``'s output (its last summary line)."""
    found = list(_CHECK_LINE.finditer(text))
    if not found:
        raise ValueError("no 'check-book: N pages, M problems' line in make check-book's output")
    last = found[-1]
    before = text[:last.start()].splitlines()
    problems = int(last["problems"])
    return {"pages": int(last["pages"]), "problems": problems, "lines": before[len(before) - problems:] if problems
            else []}


def _kib(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def book_size(html: Path) -> list:
    """``[[part, KiB], ...]`` by ``du -sk``: the whole built book, its figures, MathJax and its largest page."""
    html = Path(html)
    if not html.is_dir():
        raise SystemExit(f"{html} not found: build the book first")
    largest = max(html.rglob("*.html"), key=lambda p: p.stat().st_size)
    rows = [["the built book (_build/html)", _kib(html)]]
    for part, what in (("_images", "figures (_images)"), ("_static/mathjax", "MathJax (_static/mathjax)")):
        if (html / part).exists():
            rows.append([what, _kib(html / part)])
    rows.append([f"largest page ({largest.relative_to(html)})", _kib(largest)])
    return rows


def _minutes(secs: float) -> str:
    return f"{int(secs // 60)} min {round(secs % 60):02d} s"


def build_tables(run: Session, build: Path, run_dir: Path | None = None) -> None:
    """The "build", "size", "check" and "chapters" tables of one book build."""
    rec = read_timing(build)
    mb = rec["make_book"]
    load = mb.get("load_samples") or [mb["load_start"]]
    run.values["build"] = rec
    rows = [["make book", mb["seconds"], _minutes(mb["seconds"]), mb["load_start"], mb["load_end"],
             {"median": statistics.median(load), "min": min(load), "max": max(load), "n": len(load)}]]
    if "check_book" in rec:
        cb = rec["check_book"]
        rows.append(["make check-book", cb["seconds"], _minutes(cb["seconds"]), cb["load_start"], cb["load_end"], None])
    run.table("build", f"`make book` from a fresh clone at {rec['commit']}, install included ({rec['started']})",
              ["step", "seconds", "minutes", "load at the start", "load at the end", "load during it: median (range)"],
              rows, ["{}", "{:.0f}", "{}", "{:.1f}", "{:.1f}", "{:.1f}"])
    run.table("size", "The built book's size (`du -sk`)", ["part", "MB"],
              [[part, kib / 1024] for part, kib in book_size(build / "_build" / "html")], ["{}", "{:.1f}"])
    if (build / CHECK_LOG).exists():
        chk = check_report((build / CHECK_LOG).read_text())
        run.values["check_book"] = chk
        run.table("check", "`make check-book` (headless Chromium, offline) on that build",
                  ["pages", "problems", "problems found"],
                  [[chk["pages"], chk["problems"], "; ".join(chk["lines"]) or "none"]], ["{}", "{}", "{}"])
    rows = chapter_times(run_dir or build / RUN_DIR)
    rows.append(["all chapters", sum(r[1] for r in rows)])
    rest = "the rest of make book (install, the runner outside the chapters, nsdlib book)"
    rows.append([rest, mb["seconds"] - rows[-1][1]])
    run.table("chapters", "The runner's seconds per chapter in that build (`*.done.json`)", ["chapter", "seconds"],
              rows, ["{}", "{:.0f}"])


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


def touched_in_build(workdir: Path, run_dir: Path, chapters: list) -> dict:
    """``{chapter: {(name, key), ...}}`` from a book build's own store log, without running anything.

    The build's ``store.log`` stamps each event (to the second) and the runner writes a chapter's
    ``.done.json`` when it ends, so a chapter's events are those after the previous chapter's record
    and up to its own.
    """
    ends = {ch: (Path(run_dir) / f"{ch}.done.json").stat().st_mtime for ch in chapters}
    out, start = {ch: set() for ch in chapters}, float("-inf")
    bounds = []
    for ch in chapters:
        bounds.append((ch, start, ends[ch]))
        start = ends[ch]
    for rec in map(json.loads, _log_lines(workdir)):
        t = dt.datetime.fromisoformat(rec["time"]).timestamp()
        for ch, lo, hi in bounds:
            if lo < t <= hi + 1:  # the log's stamps are whole seconds
                out[ch].add((rec["name"], rec["key"]))
                break
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
        ours = [f for f in frames if _NSDLIB.search(f["file"])]
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


def _kernel_of(runner_pid: int) -> int | None:
    """The pid of the notebook kernel a runner process started (a child running ipykernel), or None."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == runner_pid and b"ipykernel" in cmd:
            return int(stat.parent.name)
    return None


def attach(run_dir: Path, chapter: str, spy: str, rate: int, scratch: Path, poll: float = 2.0) -> dict:
    """Profile ``chapter`` in a book build as it runs: wait for its kernel, sample it until it exits.

    The runner names a chapter's notebook ``.<chapter>.running-<runner pid>.ipynb`` while it runs;
    the chapter's kernel is that runner's child. py-spy samples it without pausing it
    (``--nonblocking``), so the build is not slowed beyond py-spy's own small share of a core.
    A profile already recorded in ``scratch`` (``<chapter>.raw.txt``) is summarised, not recorded
    again: stopping py-spy (SIGINT) while a chapter runs keeps the part sampled so far, whose
    ``seconds`` are then None (the chapter had not ended).
    """
    raw = scratch / f"{chapter}.raw.txt"
    done = run_dir / f"{chapter}.done.json"
    if not raw.exists():
        while True:
            if done.exists():
                raise SystemExit(f"{chapter} finished before it could be attached to; start --attach earlier")
            running = sorted(run_dir.glob(f".{chapter}.running-*.ipynb"))
            kernel = _kernel_of(int(running[0].name.split("running-")[1].split(".")[0])) if running else None
            if kernel is not None:
                break
            time.sleep(poll)
        subprocess.run([spy, "record", "--pid", str(kernel), "--nonblocking", "--rate", str(rate), "--format", "raw",
                        "--output", str(raw)], check=True, capture_output=True)
        for _ in range(60):  # the runner writes the record just after the kernel ends
            if done.exists():
                break
            time.sleep(1)
    seconds = float(json.loads(done.read_text())["seconds"]) if done.exists() else None
    return {"seconds": seconds, **summarise(raw)}


def _fmt(pairs) -> str:
    return "; ".join(f"`{k}` {v:.0%}" for k, v in pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-book", type=Path, default=None, help="clone into this new folder, time make book there")
    ap.add_argument("--check-book", type=Path, default=None, help="time make check-book on the build in this folder")
    ap.add_argument("--build", type=Path, default=None, help="a build made by --make-book: its time, size, chapters")
    ap.add_argument("--run", type=Path, default=None, help="run directory (*.done.json); default BUILD/" + str(RUN_DIR))
    ap.add_argument("--workdir", type=Path, default=None, help="a cached artifact store to copy")
    ap.add_argument("--attach", type=Path, default=None,
                    help="with --profile: sample these chapters in a book build running in this folder")
    ap.add_argument("--profile", nargs="*", default=[])
    ap.add_argument("--py-spy", default=os.environ.get("PY_SPY", shutil.which("py-spy") or "/tmp/spy/bin/py-spy"))
    ap.add_argument("--rate", type=int, default=20, help="py-spy samples per second")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/bench-book"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.make_book is not None:
        print(json.dumps(make_book(a.make_book), indent=1))
    if a.check_book is not None:
        print(json.dumps(check_book(a.check_book)["check_book"], indent=1))
    if a.profile and a.attach is not None:
        run = Session("book_profile", "benchmarks/bench_book.py", threads="threads as make book sets them")
        attach_tables(run, a.attach / RUN_DIR, a.profile, a.py_spy, a.rate, a.scratch)
        run.write(a.out)
    elif a.profile:
        workdir = a.workdir or (a.build / "work" if a.build is not None else None)
        if workdir is None:
            raise SystemExit("--profile needs --build (a book build) or --workdir (a cached artifact store); "
                             "it is copied, not changed")
        threads = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} for the runner and its kernel"
        run = Session("book_profile", "benchmarks/bench_book.py", threads=threads)
        run_dir = a.run or (a.build / RUN_DIR if a.build is not None else None)
        profile_tables(run, workdir, a.profile, a.py_spy, a.rate, a.scratch, run_dir)
        run.write(a.out)
    elif a.build is not None or a.run is not None:
        run = Session("book", "benchmarks/bench_book.py", threads="threads as the runner sets them")
        if a.build is not None:
            build_tables(run, a.build, a.run)
        else:
            rows = chapter_times(a.run)
            rows.append(["all chapters recorded", sum(r[1] for r in rows)])
            run.table("chapters", f"The runner's seconds per chapter ({a.run})", ["chapter", "seconds"], rows,
                      ["{}", "{:.0f}"])
        run.write(a.out)


def attach_tables(run: Session, run_dir: Path, chapters, spy: str, rate: int, scratch: Path) -> None:
    """Profile ``chapters`` of a running book build (:func:`attach`): the "profile" table."""
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for ch in _chapter_names(chapters):
        res = attach(run_dir, ch, spy, rate, scratch)
        run.values[ch] = res
        rows.append([ch, res["seconds"], res["samples"], _fmt(res["nsdlib"]), _fmt(res["leaf"])])
        print(f"{ch}: {res['seconds']} s in the build; {rows[-1][3]}", flush=True)
    run.table("profile", "The slowest chapters profiled in the book build itself (py-spy attached to each "
              "chapter's notebook kernel, sampling without pausing it; seconds '—': stopped before the chapter "
              "ended, the profile covers the part that ran)",
              ["chapter", "seconds (the runner's record)", "samples", "innermost nsdlib function: share of samples",
               "leaf frame: share of samples"], rows, ["{}", "{:.0f}", "{}", "{}", "{}"])


def profile_tables(run: Session, workdir: Path, chapters, spy: str, rate: int, scratch: Path,
                   run_dir: Path | None = None) -> None:
    """Profile ``chapters`` on a copy of ``workdir`` (see the module's docstring): the "profile" table.

    With ``run_dir`` (the build's run directory, whose store ``workdir`` is) the artifacts each
    chapter touched come from the build's own log (:func:`touched_in_build`), not from a cached pass.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    work, runs = scratch / "work", scratch / "runs"
    shutil.copytree(workdir, work)
    last = max(chapters)
    upto = _chapter_names([f"{i:02d}" for i in range(int(last) + 1)])
    touched = touched_in_build(work, run_dir, upto) if run_dir else touched_by_chapter(work, runs, upto)
    run.values["artifacts_found_by"] = "the build's store log" if run_dir else "a cached pass"
    rows = []
    for ch in _chapter_names(chapters):
        earlier = set().union(*(touched[c] for c in upto if c < ch))
        own = touched[ch] - earlier
        removed = remove_artifacts(work, own)
        res = profile(ch, work, runs, spy, rate, scratch)
        run.values[ch] = res
        rows.append([ch, res["seconds"], len(own), res["samples"], _fmt(res["nsdlib"]), _fmt(res["leaf"])])
        print(f"{ch}: {res['seconds']:.0f} s, {len(own)} own artifacts ({removed} files) recomputed; {rows[-1][4]}")
    run.table("profile", "The slowest chapters profiled (py-spy, sampling the runner and its notebook kernel; "
              "a chapter's own artifacts recomputed, earlier chapters' reused)",
              ["chapter", "seconds (under py-spy)", "own artifacts recomputed", "samples",
               "innermost nsdlib function: share of samples", "leaf frame: share of samples"],
              rows, ["{}", "{:.0f}", "{}", "{}", "{}", "{}"])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
