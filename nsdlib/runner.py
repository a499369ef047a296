"""Execute the book's chapters as a papermill chain, and build the book from a run.

``run_chain`` converts each MyST notebook (``notebooks/NN_name.md``) with jupytext,
executes it with papermill with the run's parameters injected, and writes the executed
notebook to ``runs/<dataset>/subj0N/NN_name.ipynb``. It stops at the first notebook that
fails and reports which one and why. A notebook already completed with the same
parameters and the same source is skipped (``resume=True``), so an interrupted chain
resumes where it stopped; its ``.done.json`` record holds the SHA-256 of the executed
notebook, and a notebook whose file no longer matches it (truncated, edited, replaced) is
run again. One chain at a time holds a run directory (:func:`run_lock`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from .config import RunConfig, writable_folder
from .report import rendering
from .store import atomic_write, file_sha256, params_key, path_key

__all__ = [
    "ChainResult",
    "NotebookResult",
    "RunLockedError",
    "RunnerError",
    "build_book",
    "check_timeouts",
    "list_notebooks",
    "run_chain",
    "select_notebooks",
]



class RunnerError(ValueError):
    """The chain could not be set up (no such notebook, bad selection)."""


class RunLockedError(RunnerError):
    """Another process holds the run directory's lock (the message names it)."""


#: The lock of a run directory (``filelock``) and the record of who holds it.
RUN_LOCK, RUN_HOLDER = ".run.lock", ".run.holder.json"


def _holder_text(out_dir: Path, tries: int = 20) -> str:
    """Who holds the lock, from its record; the holder writes the record just after taking the
    lock, so a missing or half-written record is read again for up to ``tries`` x 0.1 s."""
    for attempt in range(tries):
        try:
            h = json.loads((out_dir / RUN_HOLDER).read_text())
            return f"process {h['pid']} on {h['host']} (started {h['started']}: {h['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            if attempt + 1 < tries:
                time.sleep(0.1)
    return "another process (its record is unreadable)"


@contextlib.contextmanager
def run_lock(out_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold ``out_dir``'s run lock while the body runs; one chain per run directory at a time.

    Parameters
    ----------
    out_dir : path
        The run directory (executed notebooks and their ``.done.json`` records).
    wait : float
        Seconds to wait for a holder to finish; 0 refuses at once, a negative value waits forever.

    Raises
    ------
    RunLockedError
        The lock stayed held for ``wait`` seconds; the message names the holder.
    """
    out_dir = Path(out_dir)
    lock = FileLock(str(out_dir / RUN_LOCK))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RunLockedError(f"run directory {out_dir} is in use by {_holder_text(out_dir)}; wait for it to "
                             "finish (or pass --wait SECONDS), or use another --runs folder") from None
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:8]),
                  "started": _dt.datetime.now().isoformat(timespec="seconds")}
        with atomic_write(out_dir / RUN_HOLDER, "w") as fh:
            json.dump(holder, fh)
        for stale in out_dir.glob(".*.running*.ipynb"):  # left by a killed run: the lock says none is live
            stale.unlink(missing_ok=True)
        yield
    finally:
        (out_dir / RUN_HOLDER).unlink(missing_ok=True)
        lock.release()


@dataclasses.dataclass
class NotebookResult:
    name: str
    status: str  # "done", "skipped" (completed earlier, same parameters) or "failed"
    output: Path
    seconds: float = 0.0
    error: str | None = None
    timed_out: bool = False  # a cell ran past the cell timeout
    attempts: int = 1  # executions of this chapter in this chain (more than one after a timed-out cell)
    lost_seconds: float = 0.0  # seconds of the earlier attempts, whose cells timed out (``seconds`` is the last one's)


@dataclasses.dataclass
class ChainResult:
    """What a chain did: one :class:`NotebookResult` per notebook attempted."""

    config: RunConfig
    results: list[NotebookResult]

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    @property
    def failed(self) -> NotebookResult | None:
        return next((r for r in self.results if r.status == "failed"), None)

    def summary(self) -> str:
        head = f"dataset={self.config.dataset} subject={self.config.subject}"
        lines = [f"{r.name}: {r.status}" + (f" ({r.seconds:.0f} s)" if r.status == "done" else "")
                 + (f", after {r.attempts} attempts ({r.lost_seconds:.0f} s lost to timed-out cells)"
                    if r.attempts > 1 else "") for r in self.results]
        if self.failed:
            lines.append(f"FAILED at {self.failed.name}: {self.failed.error}\n  see {self.failed.output}")
        return head + "\n" + "\n".join("  " + s for s in lines)


def list_notebooks(notebooks_dir: Path) -> list[Path]:
    """The chapter notebooks ``NN_name.md`` in order."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.md"))
    if not nbs:
        raise RunnerError(f"no chapter notebooks (NN_name.md) found in {notebooks_dir}")
    return nbs


def check_timeouts(cell_timeout: int, timeout_retries: int) -> None:
    """:class:`RunnerError` unless a chain's cell timeout is at least 1 s and its timeout retries at least 0."""
    if int(cell_timeout) < 1 or int(timeout_retries) < 0:
        raise RunnerError(f"--cell-timeout must be at least 1 (seconds) and --timeout-retries at least 0; found "
                          f"cell_timeout={cell_timeout}, timeout_retries={timeout_retries}")


def select_notebooks(spec: str | None, notebooks_dir: Path) -> list[Path]:
    """Pick notebooks by number: ``"01-10"``, ``"3"``, ``"01,04,09"`` or ``None`` for all."""
    nbs = list_notebooks(notebooks_dir)
    if spec in (None, "", "all"):
        return nbs
    by_num = {int(p.name[:2]): p for p in nbs}
    wanted: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            a, b = (int(x) for x in part.split("-", 1)) if "-" in part else (int(part), int(part))
        except ValueError:
            raise RunnerError(f"--notebooks takes numbers like 01-10 or 1,3,4; found {spec!r}") from None
        if a > b:
            raise RunnerError(f"--notebooks range {part!r} runs backwards; write it low-high, such as {b:02d}-{a:02d}")
        wanted.extend(range(a, b + 1))
    missing = [n for n in wanted if n not in by_num]
    if missing:
        raise RunnerError(f"no notebook numbered {', '.join(f'{n:02d}' for n in missing)} in {notebooks_dir}; "
                          f"have {', '.join(f'{n:02d}' for n in sorted(by_num))}")
    return [by_num[n] for n in dict.fromkeys(wanted)]


def runs_dir(cfg: RunConfig, runs_root: Path) -> Path:
    """``<runs_root>/<dataset>/subj0N``: where one run's executed notebooks go."""
    return Path(runs_root) / cfg.dataset / f"subj{cfg.subject:02d}"


def book_folders(book_root, notebooks_dir, runs_root, *, who: str = "a chain",
                 error: type[Exception] = RunnerError) -> tuple[Path, Path]:
    """The chapters' folder and the runs' folder: given, or ``notebooks/`` and ``runs/`` inside ``book_root``.

    ``who`` and ``error`` word the error raised when neither is given (a chain: RunnerError).
    """
    if book_root is None and (notebooks_dir is None or runs_root is None):
        raise error(f"{who} needs book_root (the folder holding notebooks/ and _toc.yml), or both "
                    f"notebooks_dir and runs_root; found book_root=None, notebooks_dir={notebooks_dir!r}, "
                    f"runs_root={runs_root!r}")
    nb = Path(notebooks_dir) if notebooks_dir is not None else Path(book_root) / "notebooks"
    return nb, Path(runs_root) if runs_root is not None else Path(book_root) / "runs"


def library_hash() -> str:
    """A hash of nsdlib's Python sources: a notebook completed by other code is not skipped."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.rglob("*.py")):
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _error_text(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def _completed_earlier(out: Path, done_marker: Path, stamp: dict) -> bool:
    """Whether ``out`` was executed to the end with the same parameters, source and library,
    and is still the very file the chain wrote (its digest matches the record's)."""
    if not (out.exists() and done_marker.exists()):
        return False
    try:
        prev = json.loads(done_marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return all(prev.get(k) == v for k, v in stamp.items()) and prev.get("notebook_sha256") == notebook_digest(out)


def notebook_digest(path: Path) -> str:
    """SHA-256 of an executed notebook's bytes: what a ``.done.json`` record vouches for."""
    return file_sha256(path)


def _execute(md: Path, out_dir: Path, params: dict, *, kernel_name: str, cwd: Path, log_output: bool,
             cell_timeout: int) -> NotebookResult:
    """Convert one MyST chapter and execute it with papermill into ``out_dir`` (a failure keeps its partial copy)."""
    import jupytext  # deferred: the notebook machinery is needed only to execute chapters
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    name = md.stem
    out = out_dir / f"{name}.ipynb"
    start = _dt.datetime.now()
    # this process's own names; a killed run's are removed by the next run that takes the lock
    src = out_dir / f".{name}.running-{os.getpid()}.source.ipynb"
    partial = out_dir / f".{name}.running-{os.getpid()}.ipynb"
    jupytext.write(jupytext.read(md), src)
    try:
        pm.execute_notebook(
            str(src), str(partial), parameters=params, kernel_name=kernel_name,
            cwd=str(cwd), progress_bar=False, log_output=log_output,
            execution_timeout=cell_timeout,
        )
    except Exception as exc:  # papermill raises PapermillExecutionError with ename/evalue
        failed = out_dir / f"{name}.failed.ipynb"
        if partial.exists():
            os.replace(partial, failed)
        return NotebookResult(name, "failed", failed, (_dt.datetime.now() - start).total_seconds(),
                              _error_text(exc), timed_out=isinstance(exc, CellTimeoutError))
    finally:
        src.unlink(missing_ok=True)
    os.replace(partial, out)
    (out_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
    return NotebookResult(name, "done", out, (_dt.datetime.now() - start).total_seconds())


def run_chain(
    cfg: RunConfig,
    notebooks: str | None = None,
    *,
    book_root: Path | None = None,
    notebooks_dir: Path | None = None,
    runs_root: Path | None = None,
    resume: bool = True,
    kernel_name: str = "python3",
    cwd: Path | None = None,
    log_output: bool = False,
    cell_timeout: int = 3600,
    timeout_retries: int = 0,
    wait: float = 0.0,
) -> ChainResult:
    """Execute the selected chapter notebooks for one run, in order.

    Parameters
    ----------
    cfg : RunConfig
        The run; its parameters are injected into each notebook's ``parameters`` cell.
    notebooks : str, optional
        Selection, e.g. ``"01-10"`` (default: all).
    book_root : path, optional
        The book's root, the folder holding ``notebooks/`` and ``_toc.yml`` (the command line
        finds it from the working directory): chapters are read from
        ``<book_root>/notebooks`` and executed copies go to ``<book_root>/runs``. Needed
        unless both ``notebooks_dir`` and ``runs_root`` are given.
    notebooks_dir, runs_root : path, optional
        Override those two folders.
    resume : bool
        Skip a notebook whose executed copy is marked complete for the same parameters,
        the same notebook source and the same nsdlib sources, unless an earlier notebook
        of this chain had to run.
    cell_timeout : int
        Seconds one cell may run before the notebook fails (sized for CPU runs).
    timeout_retries : int
        How many more times a chapter whose cell timed out is executed before the chain
        stops there (default 0). A kernel that sat idle while papermill waited for a reply
        that never came has been seen in CI; with a cell timeout sized to the chapters, one
        retry turns such a hang into minutes lost instead of a failed chain. A chapter that
        fails with an error is never run again.
    wait : float
        Seconds to wait for another chain holding this run directory's lock (:func:`run_lock`);
        0 (default) refuses at once with :class:`RunLockedError` naming the holder.
    """
    check_timeouts(cell_timeout, timeout_retries)
    notebooks_dir, runs_root = book_folders(book_root, notebooks_dir, runs_root)
    selected = select_notebooks(notebooks, notebooks_dir)
    out_dir = writable_folder(runs_dir(cfg, runs_root), "the run directory (under --runs)")
    params = cfg.params()
    results: list[NotebookResult] = []
    library = library_hash()
    with run_lock(out_dir, wait):
        ran_one = False  # once a notebook runs again, the ones after it run too (they may read its work)
        for md in selected:
            out = out_dir / f"{md.stem}.ipynb"
            done_marker = out_dir / f"{md.stem}.done.json"
            stamp = {"params_key": params_key(params), "source": path_key(md, content=True), "library": library}
            if resume and not ran_one and _completed_earlier(out, done_marker, stamp):
                results.append(NotebookResult(md.stem, "skipped", out))
                continue
            done_marker.unlink(missing_ok=True)
            ran_one = True
            lost = 0.0
            for attempt in range(1, int(timeout_retries) + 2):
                result = _execute(md, out_dir, params, kernel_name=kernel_name, cwd=cwd or md.parent,
                                  log_output=log_output, cell_timeout=int(cell_timeout))
                result.attempts, result.lost_seconds = attempt, lost
                if not result.timed_out:
                    break
                lost += result.seconds
            results.append(result)
            if result.status == "failed":
                break
            with atomic_write(done_marker, "w") as fh:
                json.dump({**stamp, "seconds": round(result.seconds, 1), "params": params,
                           "notebook_sha256": notebook_digest(result.output)}, fh, indent=1)
    return ChainResult(cfg, results)


def build_book(run_dir: Path, *, book_root: Path, output: Path | None = None) -> Path:
    """Build the HTML book from the executed notebooks of one run.

    ``book_root`` is the folder holding ``notebooks/``, ``_toc.yml``, ``_config.yml`` and
    ``book/``; ``output`` (default ``book_root``) receives ``_build/``. The book's sources
    are staged beside the executed notebooks of ``run_dir`` (which replace the MyST sources
    of ``notebooks/``), and Jupyter Book renders them without executing anything again: the
    book shows exactly what the run computed. Returns the path of ``index.html``.
    """
    run_dir, book_root = Path(run_dir), Path(book_root)
    output = Path(output) if output is not None else book_root
    chapters = list_notebooks(book_root / "notebooks")
    missing = [p.stem for p in chapters if not (run_dir / f"{p.stem}.ipynb").exists()]
    if missing:
        raise RunnerError(f"run {run_dir} lacks executed notebooks {', '.join(missing)}; "
                          "run `nsdlib run` for them first")
    stage = output / "_build" / "src"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "notebooks").mkdir(parents=True)
    config = yaml.safe_load((book_root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # show what the run computed
    _launch_settings(config)
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy2(book_root / "_toc.yml", stage / "_toc.yml")
    shutil.copytree(book_root / "book", stage / "book")
    for p in chapters:
        _stage_chapter(run_dir / f"{p.stem}.ipynb", stage / "notebooks" / f"{p.stem}.ipynb")
    for extra in sorted((book_root / "notebooks").glob("*.md")):
        if extra not in chapters:  # non-chapter pages kept as they are
            shutil.copy2(extra, stage / "notebooks" / extra.name)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(stage), "--path-output", str(output),
           "--builder", "html", "--warningiserror", "--keep-going"]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if jb:
        cmd = [jb, *cmd[3:]]
    # the cross-subject page (nsdlib.report.cross_subject's Sphinx hook) reads the reports of <book_root>/runs
    env = {**os.environ, "NSDLIB_RUNS": os.environ.get("NSDLIB_RUNS") or str(book_root / "runs")}
    subprocess.run(cmd, check=True, env=env)
    index = output / "_build" / "html" / "index.html"
    if not index.exists():
        raise RunnerError(f"jupyter-book finished without writing {index}")
    return index


def _chapter_seconds(executed: Path) -> float | None:
    """How long the run took for one chapter: its ``.done.json`` (the runner's timing), or None."""
    marker = executed.with_name(executed.stem + ".done.json")
    try:
        return float(json.loads(marker.read_text())["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _stage_chapter(executed: Path, dest: Path) -> dict:
    """Write the book's copy of one executed chapter (``rendering.prepare_for_book``); the run's stays as it is."""
    nb = json.loads(Path(executed).read_text())
    machine = f"{os.cpu_count()} CPU cores" if os.cpu_count() else ""
    counts = rendering.prepare_for_book(nb, seconds=_chapter_seconds(Path(executed)), machine=machine)
    Path(dest).write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return counts


def _launch_settings(config: dict) -> dict:
    """Switch on the repository button and the JupyterHub launch button only where their addresses are set.

    ``repository.url`` and ``launch_buttons.jupyterhub_url`` of ``_config.yml`` (empty by
    default) may also come from ``NSDLIB_REPOSITORY_URL`` and ``NSDLIB_HUB_URL``. With no
    address, no button is shown (an empty address would give a broken one).
    """
    repo = config.setdefault("repository", {})
    repo["url"] = os.environ.get("NSDLIB_REPOSITORY_URL") or repo.get("url") or ""
    launch = config.setdefault("launch_buttons", {})
    launch["jupyterhub_url"] = os.environ.get("NSDLIB_HUB_URL") or launch.get("jupyterhub_url") or ""
    html_cfg = config.setdefault("html", {})
    html_cfg["use_repository_button"] = bool(repo["url"])
    if not (repo["url"] and launch["jupyterhub_url"]):  # the hub button needs both: nbgitpuller pulls the repository
        launch["jupyterhub_url"] = ""
    return config
