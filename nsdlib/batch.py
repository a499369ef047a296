"""Batch runs: one papermill chain per subject, locally or on a Slurm cluster.

:func:`run_batch` runs :func:`nsdlib.runner.run_chain` once per subject.

- ``executor="local"`` runs the subjects in parallel worker processes on this machine, at
  most ``jobs`` at once. When GPUs are visible each worker gets its own GPU(s), pinned
  with ``CUDA_VISIBLE_DEVICES`` (:func:`gpu_slots`), so one subject runs per GPU.
- ``executor="slurm"`` submits one Slurm job per subject through submitit (partition,
  time, memory and GPUs as options) and either waits for them or detaches; a detached
  batch is checked later with :func:`batch_status` (``nsdlib batch --status``).
- ``executor="debug"`` is submitit's debug executor: the Slurm code path, run in this
  process, one subject after the other (for trying a batch out without a cluster).

Every subject's worker writes ``runs/<dataset>/subjNN/chain.json`` (what ran, the failing
notebook and its error) and its log beside it. A failing subject does not stop the others;
the batch reports it and is not ``ok``. A rerun resumes: the runner skips notebooks already
completed with unchanged parameters. The batch itself is recorded in
``runs/<dataset>/batch.json``, and when it ends the cross-subject report
(:mod:`nsdlib.report.cross_subject`) is written to ``runs/<dataset>/report.csv`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from .config import ConfigError, RunConfig, writable_folder
from .guard import reading
from .pipeline.results import ResultsFormatError
from .report.cross_subject import collect_results, collect_timings, write_report
from .runner import book_folders, check_timeouts, run_chain, runs_dir, select_notebooks
from .store import atomic_write

__all__ = [
    "EXECUTORS",
    "BatchResult",
    "SubjectOutcome",
    "batch_status",
    "gpu_slots",
    "run_batch",
    "run_subject",
    "visible_gpus",
]

EXECUTORS = ("local", "slurm", "debug")
STATE_FILE = "batch.json"
CHAIN_FILE = "chain.json"
LOG_FILE = "batch.log"
_NSDLIB_PARENT = str(Path(__file__).resolve().parent.parent)  # the folder to import this nsdlib from


@dataclasses.dataclass
class SubjectOutcome:
    """What happened to one subject of a batch.

    ``status`` is ``"ok"``, ``"failed"``, ``"pending"`` or ``"running"`` (the last two only
    for a detached Slurm batch). For a failure, ``notebook`` names the failing notebook
    (``None`` when the chain never started) and ``error`` says why.
    """

    subject: int
    status: str
    notebook: str | None = None
    error: str | None = None
    notebooks: list[dict] = dataclasses.field(default_factory=list)
    job_id: str | None = None
    log: str | None = None
    gpus: str | None = None

    def line(self) -> str:
        head = f"subject {self.subject}: {self.status}"
        if self.job_id:
            head += f" (job {self.job_id})"
        if self.notebooks:
            done = sum(n["status"] in ("done", "skipped") for n in self.notebooks)
            skipped = sum(n["status"] == "skipped" for n in self.notebooks)
            head += f", {done} notebooks complete ({skipped} skipped as already done)"
        if self.status == "failed":
            where = f"at {self.notebook}: " if self.notebook else ""
            head += f"\n    FAILED {where}{self.error}"
            if self.log:
                head += f"\n    log: {self.log}"
        return head


@dataclasses.dataclass
class BatchResult:
    """The outcome of :func:`run_batch` or :func:`batch_status`."""

    dataset: str
    executor: str
    outcomes: list[SubjectOutcome]
    state_file: Path
    report: tuple[Path, Path] | None = None
    report_error: str | None = None

    @property
    def ok(self) -> bool:
        """Every subject finished without a failure."""
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def failed(self) -> list[SubjectOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def finished(self) -> bool:
        return all(o.status in ("ok", "failed") for o in self.outcomes)

    def exit_code(self) -> int:
        """0 all subjects ok, 1 any failed (or the report could not be written), 3 some still pending or running."""
        if self.failed or self.report_error:
            return 1
        return 0 if self.finished else 3

    def summary(self) -> str:
        n_ok = sum(o.status == "ok" for o in self.outcomes)
        head = (f"batch dataset={self.dataset} executor={self.executor}: {n_ok} of {len(self.outcomes)} "
                f"subjects ok, {len(self.failed)} failed")
        lines = [head] + ["  " + o.line() for o in self.outcomes]
        if self.report:
            lines.append(f"report: {self.report[0]} and {self.report[1]}")
        if self.report_error:
            lines.append(f"report not written: {self.report_error}")
        lines.append(f"batch state: {self.state_file}")
        return "\n".join(lines)


# ------------------------------------------------------------------ GPUs


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``torch.cuda.device_count()`` GPUs; their ids come from ``$CUDA_VISIBLE_DEVICES`` when
    it is set (so a batch inside an allocation keeps to it), else ``0 .. n-1``.
    """
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # no torch, or a broken CUDA install: no GPU to hand out
        n = 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [s.strip() for s in env.split(",") if s.strip()][:n]
    return [str(i) for i in range(n)]


def gpu_slots(visible: Sequence[str], gpus_per_job: int, jobs: int) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each subject that may run at the same time.

    Parameters
    ----------
    visible : sequence of str
        GPU ids available (:func:`visible_gpus`).
    gpus_per_job : int
        GPUs each subject gets; 0 runs on the CPU.
    jobs : int
        Most subjects at once.

    Returns
    -------
    list
        One entry per concurrent worker: a comma-separated GPU list such as ``"0"`` or
        ``"2,3"``; ``""`` (GPUs hidden) when ``gpus_per_job`` is 0 on a GPU machine;
        ``None`` (environment left alone) on a machine without GPUs. Disjoint GPU sets:
        with more jobs than GPU groups, the list is shorter than ``jobs`` and that many
        subjects run at once.
    """
    if int(jobs) < 1:
        raise ConfigError(f"jobs must be at least 1; found {jobs!r}")
    if int(gpus_per_job) < 0:
        raise ConfigError(f"gpus_per_job must be 0 or more; found {gpus_per_job!r}")
    visible = [str(v) for v in visible]
    if gpus_per_job == 0:
        return [("" if visible else None)] * jobs
    if gpus_per_job > len(visible):
        raise ConfigError(f"{gpus_per_job} GPU(s) per subject were asked for, but {len(visible)} "
                          f"{'is' if len(visible) == 1 else 'are'} visible"
                          + (f" ({', '.join(visible)})" if visible else "")
                          + "; use --gpus-per-job 0 to run on the CPU")
    n_groups = len(visible) // gpus_per_job
    return [",".join(visible[i * gpus_per_job:(i + 1) * gpus_per_job]) for i in range(min(jobs, n_groups))]


# ------------------------------------------------------------------ one subject


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def run_subject(spec: dict) -> dict:
    """Run one subject's chain and write its ``chain.json``; never raises.

    This is what a worker process or a Slurm job executes. ``spec`` holds ``params`` (a
    :class:`RunConfig` dict), ``batch_id``, ``notebooks`` (a selection or ``None``),
    ``notebooks_dir``, ``runs_root``, ``resume`` and, optionally, ``cell_timeout`` and
    ``timeout_retries`` (:func:`nsdlib.runner.run_chain`'s).

    Returns
    -------
    dict
        What ``chain.json`` holds: ``ok``, ``subject``, ``notebooks`` (name, status,
        seconds of the last attempt, error, attempts, and ``lost_seconds``: those of earlier
        attempts whose cells timed out), ``failed_notebook``, ``error`` and provenance (host,
        GPUs, times).
    """
    started = _now()
    report: dict = {"batch_id": spec.get("batch_id"), "subject": spec["params"].get("subject"),
                    "params": spec["params"], "host": socket.gethostname(),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": started}
    out_dir = None
    try:
        cfg = RunConfig.from_params(spec["params"])
        out_dir = runs_dir(cfg, spec.get("runs_root"))
        result = run_chain(cfg, spec.get("notebooks"), notebooks_dir=Path(spec["notebooks_dir"]),
                           runs_root=spec.get("runs_root"), resume=spec.get("resume", True),
                           cell_timeout=spec.get("cell_timeout", 3600), timeout_retries=spec.get("timeout_retries", 0))
        failed = result.failed
        report.update(ok=result.ok, failed_notebook=failed.name if failed else None,
                      error=failed.error if failed else None,
                      notebooks=[{"name": r.name, "status": r.status, "seconds": round(r.seconds, 1),
                                  "error": r.error, "attempts": r.attempts,
                                  "lost_seconds": round(r.lost_seconds, 1), "output": str(r.output)}
                                 for r in result.results])
    except Exception as exc:  # a chain that could not start is this subject's failure, not the batch's
        report.update(ok=False, failed_notebook=None, error=f"{type(exc).__name__}: {exc}", notebooks=[],
                      traceback=traceback.format_exc())
    report["finished"] = _now()
    if out_dir is not None:
        with atomic_write(out_dir / CHAIN_FILE, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return report


def _outcome_from_report(subject: int, report: dict, **extra) -> SubjectOutcome:
    return SubjectOutcome(subject, "ok" if report.get("ok") else "failed", report.get("failed_notebook"),
                          report.get("error"), report.get("notebooks", []), **extra)


def _read_chain(subject_dir: Path, batch_id: str) -> dict | None:
    """The worker's report for this batch, or None (absent, unreadable, or another batch's)."""
    try:
        report = json.loads((subject_dir / CHAIN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if report.get("batch_id") == batch_id else None


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------ executors


def _local_worker_env(gpus: str | None, threads: int) -> dict:
    env = dict(os.environ)
    # the worker imports the nsdlib this process runs, installed or not
    env["PYTHONPATH"] = os.pathsep.join([_NSDLIB_PARENT, *filter(None, [env.get("PYTHONPATH")])])
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(threads))  # parallel subjects share the CPU instead of oversubscribing it
    return env


def _run_local(specs: dict[int, dict], slots: list[str | None], subject_dirs: dict[int, Path],
               progress: bool, cwd: Path | None = None) -> dict[int, SubjectOutcome]:
    free: queue.Queue = queue.Queue()
    for s in slots:
        free.put(s)
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()

    def one(subject: int) -> SubjectOutcome:
        gpus = free.get()
        log = subject_dirs[subject] / LOG_FILE
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            cmd = [sys.executable, "-m", "nsdlib.batch", "--worker", json.dumps(specs[subject])]
            with open(log, "w") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                        env=_local_worker_env(gpus, threads), cwd=cwd)
                with lock:
                    procs[subject] = proc
                code = proc.wait()
        finally:
            free.put(gpus)
        report = _read_chain(subject_dirs[subject], specs[subject]["batch_id"])
        if report is None:
            return SubjectOutcome(subject, "failed", None,
                                  f"the worker exited with code {code} before reporting; last lines of its log:\n"
                                  + _tail(log), log=str(log), gpus=gpus)
        return _outcome_from_report(subject, report, log=str(log), gpus=gpus)

    outcomes: dict[int, SubjectOutcome] = {}
    pool = ThreadPoolExecutor(max_workers=len(slots))
    try:
        futures = {pool.submit(one, s): s for s in specs}
        bar = tqdm(as_completed(futures), total=len(futures), desc="subjects", unit="subject", disable=not progress)
        for fut in bar:
            o = fut.result()
            outcomes[o.subject] = o
            bar.set_postfix_str(f"subject {o.subject} {o.status}")
    except KeyboardInterrupt:
        with lock:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True)
    return outcomes


def _submitit_executor(cluster: str, folder: Path, *, partition, time_min, mem_gb, gpus_per_job, cpus_per_job):
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params = {"timeout_min": int(time_min), "mem_gb": mem_gb, "gpus_per_node": int(gpus_per_job),
              "cpus_per_task": int(cpus_per_job), "tasks_per_node": 1, "nodes": 1}
    if partition:
        params["slurm_partition"] = partition
    ex.update_parameters(**params)
    return ex


def _job_state(cluster: str, folder: Path, job_id: str) -> str:
    """The scheduler's word on a job that has not reported: PENDING, RUNNING, FAILED, TIMEOUT..."""
    if cluster == "slurm":
        import submitit

        job = submitit.SlurmJob(folder=str(folder / "%j"), job_id=job_id)
        return job.watcher.get_state(job_id, mode="force")  # one sacct call
    import psutil

    try:  # submitit's local cluster: the job id is its controller's process id
        proc = psutil.Process(int(job_id))
        return "FINISHED" if proc.status() == psutil.STATUS_ZOMBIE else "RUNNING"
    except ValueError:  # the debug executor's ids are not process ids
        return "UNKNOWN"
    except psutil.NoSuchProcess:
        return "FINISHED"


_UNFINISHED = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", "READY",
               "PREEMPTED", "UNKNOWN", "QUEUED"}


def _outcome_of_job(subject: int, job_id: str, state: dict, subject_dir: Path) -> SubjectOutcome:
    cluster, folder = state["cluster"], Path(state["submitit_folder"])
    log = folder / job_id / f"{job_id}_0_log.out"
    report = _read_chain(subject_dir, state["batch_id"])
    if report is not None:
        return _outcome_from_report(subject, report, job_id=job_id, log=str(log))
    sched = _job_state(cluster, folder, job_id).split()[0].upper()
    if sched in _UNFINISHED:
        return SubjectOutcome(subject, "running" if sched == "RUNNING" else "pending", job_id=job_id, log=str(log))
    err_log = folder / job_id / f"{job_id}_0_log.err"
    return SubjectOutcome(subject, "failed", None,
                          f"the job ended ({sched}) without reporting; last lines of {err_log}:\n" + _tail(err_log),
                          job_id=job_id, log=str(log))


def _run_submitit(specs, cluster, folder, subject_dirs, *, detach, progress, on_submit=None, **resources):
    ex = _submitit_executor(cluster, folder, **resources)
    jobs = {}
    for subject, spec in specs.items():
        ex.update_parameters(name=f"nsd-{spec['params']['dataset']}-subj{subject:02d}")
        jobs[subject] = ex.submit(run_subject, spec)
        if on_submit is not None:  # recorded at once: a later failed submission loses no job
            on_submit(subject, str(jobs[subject].job_id))
    ids = {s: str(j.job_id) for s, j in jobs.items()}
    if detach:
        return ids, {s: SubjectOutcome(s, "pending", job_id=ids[s]) for s in specs}
    outcomes = {}
    for subject in tqdm(jobs, desc="subjects", unit="subject", disable=not progress):
        job = jobs[subject]
        try:
            report = job.result()
            outcomes[subject] = _outcome_from_report(subject, report, job_id=ids[subject], log=str(job.paths.stdout))
        except Exception as exc:  # the job died outside the chain: timeout, out of memory, preemption
            outcomes[subject] = SubjectOutcome(subject, "failed", None, f"{type(exc).__name__}: {exc}",
                                               job_id=ids[subject], log=str(job.paths.stdout))
    return ids, outcomes


# ------------------------------------------------------------------ the batch


def _subject_configs(base_params: dict | RunConfig, subjects: Sequence) -> dict[int, RunConfig]:
    base = base_params.params() if isinstance(base_params, RunConfig) else dict(base_params)
    if not subjects:
        raise ConfigError("a batch needs at least one subject (--subjects 1 2 5 7)")
    cfgs: dict[int, RunConfig] = {}
    for s in subjects:
        cfg = RunConfig.from_params({**base, "subject": s})  # validates every subject before anything runs
        cfgs[cfg.subject] = cfg
    datasets = {c.dataset for c in cfgs.values()}
    assert len(datasets) == 1
    return cfgs


def _write_state(path: Path, state: dict) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(state, fh, indent=1, default=str)


def _report_into(result: BatchResult, batch_dir: Path, cfgs: Sequence[RunConfig]) -> None:
    """Write the cross-subject report; a bad results file is reported, not allowed to lose the outcomes."""
    try:
        result.report = _write_report(batch_dir, cfgs)
    except ResultsFormatError as exc:
        result.report_error = str(exc)


def _write_report(batch_dir: Path, cfgs: Sequence[RunConfig]) -> tuple[Path, Path]:
    import pandas as pd  # deferred: a worker process never writes the report

    dataset = cfgs[0].dataset
    workdirs = list(dict.fromkeys(c.workdir for c in cfgs))
    subjects = {c.subject for c in cfgs}  # only this batch's subjects, not every results file found
    frames = [collect_results(w, dataset) for w in workdirs]
    frames = [f[f["subject"].isin(subjects)] for f in frames]
    frames = [f for f in frames if len(f)]
    results = pd.concat(frames, ignore_index=True) if frames else collect_results(workdirs[0], dataset)
    return write_report(results, batch_dir, dataset=dataset, sources=[str(Path(w) / dataset) for w in workdirs],
                        timings=collect_timings(batch_dir))


@dataclasses.dataclass
class _Batch:
    """A batch being started: the subjects' configurations, where everything goes, the worker specs."""

    cfgs: dict[int, RunConfig]
    batch_dir: Path
    subject_dirs: dict[int, Path]
    specs: dict[int, dict]
    state: dict
    cwd: Path | None

    @property
    def first(self) -> RunConfig:
        return next(iter(self.cfgs.values()))

    @property
    def state_file(self) -> Path:
        return self.batch_dir / STATE_FILE


def _prepare(base_params, subjects, executor, notebooks, notebooks_dir: Path, root: Path, resume: bool,
             cwd: Path | None, chain: dict | None = None) -> _Batch:
    """Validate every subject and the notebook selection; lay out the batch's folders, specs and state."""
    cfgs = _subject_configs(base_params, subjects)
    first = next(iter(cfgs.values()))
    select_notebooks(notebooks, notebooks_dir)  # a bad selection fails here, not in every worker
    batch_id = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    specs = {s: {"batch_id": batch_id, "params": c.params(), "notebooks": notebooks,
                 "notebooks_dir": str(notebooks_dir), "runs_root": str(root), "resume": resume, **(chain or {})}
             for s, c in cfgs.items()}
    state = {"batch_id": batch_id, "dataset": first.dataset, "executor": executor, "created": _now(),
             "notebooks": notebooks, "notebooks_dir": str(notebooks_dir), "runs_root": str(root),
             "subjects": {str(s): {"params": c.params()} for s, c in cfgs.items()}}
    batch = _Batch(cfgs, root / first.dataset, {s: runs_dir(c, root) for s, c in cfgs.items()}, specs, state, cwd)
    writable_folder(batch.batch_dir, "--runs")
    return batch


def _launch_local(batch: _Batch, jobs, gpus_per_job, gpus, progress) -> dict[int, SubjectOutcome]:
    """Run the subjects in worker processes here, one GPU group each when GPUs are visible."""
    first = batch.first
    cpu_only = first.device == "cpu"
    visible = [] if cpu_only else list(visible_gpus() if gpus is None else gpus)
    per_job = (1 if visible else 0) if gpus_per_job is None or cpu_only else int(gpus_per_job)
    if visible and per_job and first.device not in ("auto", "cuda"):
        raise ConfigError(f"with GPUs pinned per subject the device must be 'auto' or 'cuda'; "
                          f"found {first.device!r}")
    n_jobs = jobs if jobs is not None else (max(1, len(visible) // per_job) if per_job else 1)
    slots = gpu_slots(visible, per_job, min(int(n_jobs), len(batch.cfgs)))
    batch.state.update(gpus_per_job=per_job, slots=slots)
    _write_state(batch.state_file, {**batch.state, "status": "running"})
    return _run_local(batch.specs, slots, batch.subject_dirs, progress, cwd=batch.cwd)


def _launch_submitit(batch: _Batch, executor, cluster, gpus_per_job, detach, progress,
                     **resources) -> dict[int, SubjectOutcome]:
    """Submit one job per subject (Slurm, submitit's local cluster or its debug executor)."""
    cluster = "debug" if executor == "debug" else (cluster or "slurm")
    per_job = 1 if gpus_per_job is None else int(gpus_per_job)
    folder = batch.batch_dir / "submitit"
    state = batch.state
    state.update(cluster=cluster, submitit_folder=str(folder), gpus_per_job=per_job, **resources)

    def record(subject, job_id):
        state["subjects"][str(subject)]["job_id"] = job_id
        _write_state(batch.state_file, state)

    ids, outcomes = _run_submitit(batch.specs, cluster, folder, batch.subject_dirs, detach=detach,
                                  progress=progress, on_submit=record, gpus_per_job=per_job, **resources)
    for s, jid in ids.items():
        state["subjects"][str(s)]["job_id"] = jid
    return outcomes


def run_batch(
    base_params: dict | RunConfig,
    subjects: Sequence,
    *,
    book_root: str | os.PathLike | None = None,
    executor: str = "local",
    jobs: int | None = None,
    gpus_per_job: int | None = None,
    notebooks: str | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    runs_root: str | os.PathLike | None = None,
    resume: bool = True,
    cell_timeout: int = 3600,
    timeout_retries: int = 0,
    partition: str | None = None,
    time_min: int = 720,
    mem_gb: float = 64,
    cpus_per_job: int = 8,
    detach: bool = False,
    cluster: str | None = None,
    gpus: Sequence[str] | None = None,
    progress: bool = True,
) -> BatchResult:
    """Run the chapter chain once per subject, isolated, resumable, then write the report.

    Parameters
    ----------
    base_params : dict or RunConfig
        The run parameters shared by all subjects (``subject`` is replaced).
    subjects : sequence of int
        NSD subjects (1, 2, 5, 7); each is validated before anything runs.
    book_root : path, optional
        The book's root (the folder holding ``notebooks/`` and ``_toc.yml``): the default
        ``notebooks_dir`` is ``<book_root>/notebooks``, the default ``runs_root``
        ``<book_root>/runs``, and local workers start there. Needed unless both are given.
    executor : {"local", "slurm", "debug"}
        Worker processes here, one Slurm job per subject, or submitit's in-process debug executor.
    jobs : int, optional
        Local executor: most subjects at once (default: one per GPU group, or 1 without GPUs).
    gpus_per_job : int, optional
        GPUs per subject. Default: 1 where GPUs are visible (local) or on Slurm, else 0.
    notebooks, notebooks_dir, runs_root, resume, cell_timeout, timeout_retries
        As for :func:`nsdlib.runner.run_chain`.
    partition, time_min, mem_gb, cpus_per_job
        Slurm resources per subject (``time_min`` in minutes, ``mem_gb`` in GiB).
    detach : bool
        Slurm: return once the jobs are submitted; check later with :func:`batch_status`.
    cluster : str, optional
        The submitit cluster behind ``executor="slurm"`` (default ``"slurm"``; tests use
        ``"local"``, submitit's local-process stand-in).
    gpus : sequence of str, optional
        Local executor: the GPU ids to hand out (default :func:`visible_gpus`).
    progress : bool
        Show a progress bar over subjects.

    Returns
    -------
    BatchResult
        One :class:`SubjectOutcome` per subject; ``ok`` is False when any failed.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}; found {executor!r}")
    if detach and executor != "slurm":
        raise ConfigError(f"--detach needs --executor slurm; the {executor} executor runs in this session")
    nb_dir, root = (p.resolve() for p in book_folders(book_root, notebooks_dir, runs_root, who="a batch",
                                                       error=ConfigError))
    check_timeouts(cell_timeout, timeout_retries)  # a bad value fails here, not in every worker
    batch = _prepare(base_params, subjects, executor, notebooks, nb_dir, root, resume,
                     Path(book_root).resolve() if book_root is not None else None,
                     {"cell_timeout": int(cell_timeout), "timeout_retries": int(timeout_retries)})
    if executor == "local":
        outcomes = _launch_local(batch, jobs, gpus_per_job, gpus, progress)
    else:
        outcomes = _launch_submitit(batch, executor, cluster, gpus_per_job, detach, progress, partition=partition,
                                    time_min=time_min, mem_gb=mem_gb, cpus_per_job=cpus_per_job)
    ordered = [outcomes[s] for s in batch.cfgs]
    result = BatchResult(batch.first.dataset, executor, ordered, batch.state_file)
    if result.finished:
        _report_into(result, batch.batch_dir, list(batch.cfgs.values()))
    batch.state.update(status="finished" if result.finished else "submitted", updated=_now(),
                       outcomes={str(o.subject): dataclasses.asdict(o) for o in ordered})
    _write_state(batch.state_file, batch.state)
    return result


def batch_status(dataset: str = "mini", runs_root: str | os.PathLike | None = None, *,
                 book_root: str | os.PathLike | None = None) -> BatchResult:
    """States of the latest batch of a dataset; writes the report once every subject is done.

    Reads ``<runs_root>/<dataset>/batch.json`` (``runs_root`` default ``<book_root>/runs``).
    A subject whose worker has reported is ``ok`` or ``failed`` (with its notebook and
    error); otherwise the scheduler is asked (``sacct`` through submitit) whether its job is
    pending, running, or ended without reporting (a timeout, say), which counts as failed.
    """
    if runs_root is None and book_root is None:
        raise ConfigError("batch_status needs runs_root or book_root (the folder holding notebooks/ and _toc.yml)")
    root = Path(runs_root if runs_root is not None else Path(book_root) / "runs").resolve()
    state_file = root / dataset / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"no batch recorded for dataset {dataset!r}: {state_file} does not exist "
                                "(start one with `nsdlib batch --subjects ...`)")
    with reading(state_file, "the JSON state of a batch", "delete it and start the batch again with "
                 "`nsdlib batch --subjects ...` (completed notebooks are skipped)"):
        state = json.loads(state_file.read_text())
    cfgs = [RunConfig.from_params(v["params"]) for v in state["subjects"].values()]
    outcomes = []
    for cfg in cfgs:
        entry = state["subjects"][str(cfg.subject)]
        sdir = runs_dir(cfg, root)
        if "job_id" in entry:
            outcomes.append(_outcome_of_job(cfg.subject, entry["job_id"], state, sdir))
            continue
        report = _read_chain(sdir, state["batch_id"])
        recorded = state.get("outcomes", {}).get(str(cfg.subject))
        if report is not None:
            outcomes.append(_outcome_from_report(cfg.subject, report, log=str(sdir / LOG_FILE)))
        elif recorded:
            outcomes.append(SubjectOutcome(**recorded))
        else:  # a local batch that was interrupted before this subject reported
            outcomes.append(SubjectOutcome(cfg.subject, "failed", None,
                                           "no report: the batch was interrupted before this subject finished; "
                                           "run the batch again to resume it", log=str(sdir / LOG_FILE)))
    result = BatchResult(dataset, state["executor"], outcomes, state_file)
    if result.finished:
        _report_into(result, root / dataset, cfgs)
        state.update(status="finished", updated=_now(),
                     outcomes={str(o.subject): dataclasses.asdict(o) for o in outcomes})
        _write_state(state_file, state)
    return result


# ------------------------------------------------------------------ worker entry point


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--worker":
        print("usage: python -m nsdlib.batch --worker SPEC_JSON (started by nsdlib batch)", file=sys.stderr)
        return 2
    report = run_subject(json.loads(argv[1]))
    if report.get("traceback"):
        print(report["traceback"], file=sys.stderr)
    print(json.dumps({k: report.get(k) for k in ("subject", "ok", "failed_notebook", "error")}))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
