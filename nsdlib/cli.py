"""The ``nsdlib`` command: run chapters, build the book, make mini-NSD, fetch assets.

Each sub-command is a thin shell over a library function; errors that users can fix
(bad parameters, missing files or assets) are printed as one sentence with exit code 2,
and a failed chain or batch exits with 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import assets, teach
from .batch import batch_status, run_batch
from .config import ConfigError, RunConfig, find_book_root, writable_folder
from .names import IMAGE_METRICS, METRIC_HEADERS
from .nsd import fetch_subject
from .pipeline.betas import write_betas
from .protocols import get_protocol
from .runner import build_book, run_chain

__all__ = ["main"]


def _parse_params(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--param takes key=value; found {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _config(args) -> RunConfig:
    params = _parse_params(getattr(args, "param", None))
    for key in ("dataset", "subject", "workdir", "nsd_root"):
        val = getattr(args, key, None)
        if val is not None:
            params[key] = val
    return RunConfig.from_params(params)


def _book_root(args, needed: bool = True) -> Path | None:
    """``--book-root``, or the book found from the working directory (None if not ``needed``)."""
    given = getattr(args, "book_root", None)
    if given is not None:
        root = Path(given).expanduser().resolve()
        if not ((root / "notebooks").is_dir() and (root / "_toc.yml").is_file()):
            raise ConfigError(f"--book-root {given} is not a book: expected notebooks/ and _toc.yml in {root}")
        return root
    if not needed:
        return None
    root = find_book_root()
    if root is None:
        raise ConfigError(f"no book found from {Path.cwd()}: expected notebooks/ and _toc.yml; pass --book-root")
    return root


def _path(value) -> Path | None:
    return Path(value) if value else None


def _cmd_run(args) -> int:
    book = _book_root(args, needed=not (args.notebooks_dir and args.runs))
    cfg = _config(args)
    result = run_chain(cfg, args.notebooks, book_root=book, notebooks_dir=_path(args.notebooks_dir),
                       runs_root=_path(args.runs), resume=not args.no_resume, log_output=args.verbose,
                       cell_timeout=args.cell_timeout, timeout_retries=args.timeout_retries, wait=args.wait)
    print(result.summary())
    return 0 if result.ok else 1


def _cmd_book(args) -> int:
    book = _book_root(args)
    index = build_book(Path(args.run) if args.run else book / "runs" / "mini" / "subj01", book_root=book)
    print(f"book written to {index}")
    return 0


def _cmd_mini_generate(args) -> int:
    from .mini import generate, read_manifest, restore  # deferred: the simulation's imports take over a second

    writable_folder(Path(args.root).expanduser().absolute().parent, "--root's parent folder")
    man = read_manifest(args.root) if Path(args.root).is_dir() else None
    size = args.size or (man or {}).get("size", "default")  # by default, the root's own world
    seed = args.seed if args.seed is not None else int((man or {}).get("seed", 0))
    root = generate(args.root, seed=seed, size=size, overwrite=args.overwrite)
    restored = restore(root)  # files deleted or damaged since it was written
    if restored:
        print(f"restored {len(restored)} damaged or missing file(s) of {root}: {', '.join(restored[:5])}"
              + (" ..." if len(restored) > 5 else ""))
    print(f"mini-NSD written to {root} ({size}, seed {seed}; every file checked)")
    return 0


def _cmd_mini_train(args) -> int:
    from .mini.zoo import train_models  # deferred: imports torch and the model zoo

    out = train_models(args.root, workdir=args.workdir, quick=args.quick, device=args.device)
    print(f"mini models ready in {out}")
    return 0


def _cmd_fetch(args) -> int:
    if args.asset == "nsd":
        if args.subject is None or args.root is None:
            raise ConfigError("`nsdlib fetch nsd` needs --subject N and --root DIR")
        fetch_subject(int(args.subject), args.root, sessions=args.sessions)
        return 0
    names = {"metrics": ["torchvision-metrics", "torchvision-efficientnet-v2", "swav"]}.get(args.asset, [args.asset])
    for name in names:
        print(f"{name}: {assets.fetch(name)}")
    return 0


def _cmd_betas(args) -> int:
    cfg = _config(args)
    out = write_betas(cfg)
    print(f"betas written to {out}")
    return 0


def _cmd_score(args) -> int:
    """``nsdlib score``: a file or folder of reconstructions scored against the run's test stimuli."""
    from .pipeline import rescore, results  # deferred: imports torch and the metric networks

    get_protocol(args.protocol)  # an unknown name fails before torch is imported
    cfg = _config(args)
    rows, report = rescore.score_file(cfg, args.source, ids=args.ids, protocol=args.protocol, label=args.label,
                                      only_test_images=args.only_test_images, out=args.out,
                                      write=not args.no_write, progress=False)
    print(_scores_table(rows.iloc[0], report, cfg, args.protocol))
    if not args.no_write:
        print(f"row {rows.iloc[0]['regressor']!r} written to "
              f"{args.out or results.results_path(cfg)}")
    return 0


def _scores_table(row, report, cfg: RunConfig, protocol: str) -> str:
    """The eight scores of one results row, one line each, with what the scores are."""
    head = (f"{row['regressor']}: {row['n_images']} test images of {cfg.dataset} subject {cfg.subject} "
            f"({cfg.models} models), compared at {row['size']} px, protocol {protocol}")
    lines, notes = [head], {}
    for m in (*IMAGE_METRICS, "ssim_2d"):
        v = row[m]
        value = f"{v:.4f}" if v is not None and v == v else "n/a"
        if value == "n/a" and m in report.sources:  # each reason once, as a numbered note
            value += f" [{notes.setdefault(report.sources[m], len(notes) + 1)}]"
        lines.append(f"  {METRIC_HEADERS[m]:<24} {value}")
    lines += [f"  [{k}] {why}" for why, k in notes.items()]
    return "\n".join(lines)


def _cmd_teach_student_copy(args) -> int:
    book = _book_root(args)
    written = teach.student_copy(book, args.out)
    print(f"student copy of {len(written)} chapters (no solutions; .md and .ipynb) written to {args.out}")
    return 0


def _cmd_teach_grade(args) -> int:
    wrong = 0
    for path in args.notebooks:
        table = teach.read_feedback(path)
        for row in table.itertuples():
            print(f"{Path(path).name}  {row.exercise}: {row.feedback}")
        wrong += int((~table["right"]).sum())
    return 1 if wrong else 0


def _cmd_batch(args) -> int:
    """``nsdlib batch``: run a batch, or (``--status``) report on the latest one."""
    book = _book_root(args, needed=not (args.runs and (args.status or args.notebooks_dir)))
    if args.status:
        dataset = args.dataset or _parse_params(args.param).get("dataset", "mini")
        result = batch_status(dataset, args.runs, book_root=book)
        print(result.summary())
        return result.exit_code()
    if not args.subjects:
        raise ConfigError("nsdlib batch needs --subjects (e.g. --subjects 1 2 5 7), or --status")
    if args.subject is not None:
        raise ConfigError("nsdlib batch takes --subjects (several), not --subject")
    params = _parse_params(args.param)
    for key in ("dataset", "workdir", "nsd_root"):
        if getattr(args, key, None) is not None:
            params[key] = getattr(args, key)
    result = run_batch(params, args.subjects, book_root=book, executor=args.executor, jobs=args.jobs,
                       gpus_per_job=args.gpus_per_job, notebooks=args.notebooks, notebooks_dir=args.notebooks_dir,
                       runs_root=args.runs, resume=not args.no_resume, cell_timeout=args.cell_timeout,
                       timeout_retries=args.timeout_retries, partition=args.partition, time_min=args.time,
                       mem_gb=args.mem_gb, cpus_per_job=args.cpus_per_job, detach=args.detach)
    print(result.summary())
    if not result.finished:
        print(f"submitted; check with: nsdlib batch --status --dataset {result.dataset}"
              + (f" --runs {args.runs}" if args.runs else ""))
        return 0
    return result.exit_code()


def _timeout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cell-timeout", type=int, default=3600, metavar="SECONDS",
                   help="seconds one notebook cell may run before its chapter fails (default 3600)")
    p.add_argument("--timeout-retries", type=int, default=0, metavar="N",
                   help="run a chapter whose cell timed out up to N more times (default 0)")


def _book_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--book-root", dest="book_root", default=None,
                   help="the book's folder, holding notebooks/ and _toc.yml (default: found from the working "
                        "directory upwards)")


def _run_args(p: argparse.ArgumentParser, dataset_default: str | None = None) -> None:
    p.add_argument("--dataset", default=dataset_default, help="mini or nsd")
    p.add_argument("--subject", help="1, 2, 5 or 7")
    p.add_argument("--workdir", help="artifact store root")
    p.add_argument("--nsd-root", dest="nsd_root", help="dataset root (folder or s3://natural-scenes-dataset)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other run parameter (repeatable)")


def _teach_parser(sub) -> None:
    """``nsdlib teach student-copy`` and ``nsdlib teach grade``."""
    p = sub.add_parser("teach", help="teaching: the student copy of the book and the grading of its exercises")
    tsub = p.add_subparsers(dest="teach_command", required=True)
    t = tsub.add_parser("student-copy", help="write the book's sources with every solution replaced by an answer cell")
    t.add_argument("out", help="a new (or empty) folder")
    _book_arg(t)
    t.set_defaults(func=_cmd_teach_student_copy)
    t = tsub.add_parser("grade", help="print the check line of each exercise of executed student notebooks "
                        "(exit 1 if any is wrong or missing)")
    t.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    t.set_defaults(func=_cmd_teach_grade)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nsdlib", description="The NSD two-stage decoding book's command line.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute chapter notebooks with papermill for one subject")
    _run_args(p)
    p.add_argument("--notebooks", default=None, help="selection such as 01-10 or 1,4 (default: all)")
    p.add_argument("--runs", default=None, help="where executed notebooks go (default: <book root>/runs)")
    p.add_argument("--notebooks-dir", default=None,
                   help="folder of NN_name.md chapters (default: <book root>/notebooks)")
    p.add_argument("--no-resume", action="store_true", help="re-execute notebooks completed earlier")
    p.add_argument("--verbose", action="store_true", help="stream notebook output")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another run of the same run directory to finish (default 0: "
                        "refuse at once, naming it; -1 waits for ever)")
    _timeout_args(p)
    _book_arg(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("book", help="build the HTML book from a run's executed notebooks")
    p.add_argument("--run", default=None, help="folder of executed notebooks (default: <book root>/runs/mini/subj01)")
    _book_arg(p)
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("mini", help="mini-NSD: the simulated dataset and its small models")
    msub = p.add_subparsers(dest="mini_command", required=True)
    g = msub.add_parser("generate", help="write mini-NSD in NSD's layout")
    g.add_argument("--root", required=True)
    g.add_argument("--seed", type=int, default=None, help="default: the root's own seed, else 0")
    g.add_argument("--size", choices=["small", "default"], default=None,
                   help="default: the root's own size, else 'default'")
    g.add_argument("--overwrite", action="store_true", help="replace a mini-NSD made with another seed or size")
    g.set_defaults(func=_cmd_mini_generate)
    t = msub.add_parser("train-models", help="train the small VDVAE, CLIP and diffusion models on mini-NSD")
    t.add_argument("--root", required=True, help="mini-NSD root")
    t.add_argument("--workdir", default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--quick", action="store_true")
    t.set_defaults(func=_cmd_mini_train)

    p = sub.add_parser("fetch", help="download NSD files or pretrained weights (needs internet)")
    p.add_argument("asset", choices=["nsd", "vdvae", "clip", "vd", "metrics"])
    p.add_argument("--subject", help="with nsd: 1, 2, 5 or 7")
    p.add_argument("--root", help="with nsd: local folder to download into")
    p.add_argument("--sessions", type=int, default=37, help="with nsd: 37 (public release) or 40")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("betas", help="estimate single-trial betas with nsdlib.glm and write them in NSD's layout")
    _run_args(p, "mini")
    p.set_defaults(func=_cmd_betas)

    p = sub.add_parser("score", help="re-score reconstructions (a .pt/.npy tensor with its nsdIds, or a folder "
                       "of images named by nsdId) against the test stimuli; writes a results row")
    p.add_argument("source", metavar="FILE_OR_FOLDER")
    p.add_argument("--dataset", default="mini", help="mini or nsd (default mini)")
    p.add_argument("--subject", help="1, 2, 5 or 7")
    p.add_argument("--root", "--nsd-root", dest="nsd_root",
                   help="dataset root (folder or s3://natural-scenes-dataset; default: the run's)")
    p.add_argument("--workdir", help="artifact store root")
    p.add_argument("--ids", default=None, help="a tensor file's 0-based nsdIds in its order: a .txt/.json/.npy "
                   "file, or 'shared1000' (NSD's shared images, ascending); default <stem>.ids.txt/.json/.npy")
    p.add_argument("--protocol", default="brain-diffuser", help="evaluation protocol (default brain-diffuser)")
    p.add_argument("--label", default=None, help="the row's label (default file:<name>)")
    p.add_argument("--only-test-images", dest="only_test_images", action="store_true",
                   help="score the images that are test images of this run and leave out the others "
                        "(default: any other image is an error)")
    p.add_argument("--out", default=None, help="results .json to merge the row into (default the run's results.json)")
    p.add_argument("--no-write", dest="no_write", action="store_true", help="print the scores only")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other run parameter (repeatable)")
    p.set_defaults(func=_cmd_score)

    _teach_parser(sub)

    p = sub.add_parser("batch", help="papermill chains for several subjects, locally or on Slurm")
    _run_args(p)
    p.add_argument("--subjects", nargs="+", help="e.g. 1 2 5 7 (one chain per subject)")
    p.add_argument("--status", action="store_true", help="report on the latest batch of --dataset (and write "
                   "the report once all subjects are done) instead of starting one")
    p.add_argument("--notebooks", default=None)
    p.add_argument("--notebooks-dir", default=None,
                   help="folder of NN_name.md chapters (default: <book root>/notebooks)")
    p.add_argument("--no-resume", action="store_true", help="re-execute notebooks completed earlier")
    p.add_argument("--executor", choices=["local", "slurm", "debug"], default="local")
    p.add_argument("--jobs", type=int, default=None, help="local: subjects at once (default: one per GPU, else 1)")
    p.add_argument("--gpus-per-job", type=int, default=None, help="default: 1 when GPUs are present (local) "
                   "and on slurm, else 0")
    p.add_argument("--partition", default=None)
    p.add_argument("--time", type=int, default=720, help="minutes per job (slurm)")
    p.add_argument("--mem-gb", type=int, default=64)
    p.add_argument("--cpus-per-job", type=int, default=8, help="CPU cores per job (slurm)")
    p.add_argument("--detach", action="store_true", help="submit and return (slurm); check with --status")
    p.add_argument("--runs", default=None, help="where executed notebooks go (default: <book root>/runs)")
    _timeout_args(p)
    _book_arg(p)
    p.set_defaults(func=_cmd_batch)
    return ap


#: Errors of the user's file system (a folder that cannot be written, a file where a folder
#: should be): one line, exit 2, wherever they are raised.
_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


_INTERRUPTED = "nsdlib: interrupted (completed notebooks and artifacts are kept; the same command resumes)"


class _Interrupts:
    """Ctrl-C while a command runs: raise KeyboardInterrupt as Python's own handler does, and
    remember it, so that a command whose dependencies swallowed the KeyboardInterrupt (an
    event loop cancelling its task, a cleanup path) still ends with exit code 130. Installed
    only in the main thread; the previous handler comes back afterwards."""

    def __init__(self):
        self.seen = False
        self._previous = None

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and return 2, Ctrl-C returns 130."""
    args = build_parser().parse_args(argv)
    try:
        with _Interrupts() as interrupts:
            code = int(args.func(args) or 0)
        if interrupts.seen:  # interrupted, but something below went on to the end
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except _PATH_ERRORS as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"nsdlib: error: cannot use{where}: {exc.strerror or exc}; choose a folder you can write",
              file=sys.stderr)
        return 2
    except (ConfigError, FileNotFoundError, ValueError) as exc:  # includes RunnerError, MissingAssetError
        if not _raised_by_nsdlib(exc):
            raise  # a crash inside a dependency is a bug to see in full, not a user's mistake
        print(f"nsdlib: error: {exc}", file=sys.stderr)
        return 2


def _raised_by_nsdlib(exc: BaseException) -> bool:
    """Whether the innermost frame of the traceback belongs to nsdlib (its own checks)."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and str(last.tb_frame.f_globals.get("__name__", "")).startswith("nsdlib")


if __name__ == "__main__":
    sys.exit(main())
