"""The ``nsdlib`` command: run chapters, build the book, make mini-NSD, fetch assets.

Each sub-command is a thin shell over a library function; errors that users can fix
(bad parameters, missing files or assets) are printed as one sentence with exit code 2,
and a failed chain or batch exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, RunConfig

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


def _cmd_run(args) -> int:
    from .runner import NOTEBOOKS_DIR, run_chain

    cfg = _config(args)

    result = run_chain(cfg, args.notebooks, resume=not args.no_resume,
                       notebooks_dir=Path(args.notebooks_dir) if args.notebooks_dir else NOTEBOOKS_DIR,
                       runs_root=Path(args.runs) if args.runs else None, log_output=args.verbose)
    print(result.summary())
    return 0 if result.ok else 1


def _cmd_book(args) -> int:
    from .runner import build_book

    index = build_book(Path(args.run))
    print(f"book written to {index}")
    return 0


def _cmd_mini_generate(args) -> int:
    from .mini import generate

    root = generate(args.root, seed=args.seed, size=args.size, overwrite=args.overwrite)
    print(f"mini-NSD written to {root}")
    return 0


def _cmd_mini_train(args) -> int:
    from .minimodels import train_models

    out = train_models(args.root, workdir=args.workdir, quick=args.quick, device=args.device)
    print(f"mini models ready in {out}")
    return 0


def _cmd_fetch(args) -> int:
    from . import assets

    if args.asset == "nsd":
        from .nsd import fetch_subject

        if args.subject is None or args.root is None:
            raise ConfigError("`nsdlib fetch nsd` needs --subject N and --root DIR")
        fetch_subject(int(args.subject), args.root, sessions=args.sessions)
        return 0
    names = {"metrics": ["torchvision-metrics", "swav"]}.get(args.asset, [args.asset])
    for name in names:
        print(f"{name}: {assets.fetch(name)}")
    return 0


def _cmd_betas(args) -> int:
    from .pipeline.betas import write_betas

    cfg = _config(args)
    out = write_betas(cfg)
    print(f"betas written to {out}")
    return 0


def _cmd_batch(args) -> int:
    from .batch import main_batch

    return main_batch(args)


def _run_args(p: argparse.ArgumentParser, dataset_default: str | None = None) -> None:
    p.add_argument("--dataset", default=dataset_default, help="mini or nsd")
    p.add_argument("--subject", help="1, 2, 5 or 7")
    p.add_argument("--workdir", help="artifact store root")
    p.add_argument("--nsd-root", dest="nsd_root", help="dataset root (folder or s3://natural-scenes-dataset)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other run parameter (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nsdlib", description="The NSD two-stage decoding book's command line.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute chapter notebooks with papermill for one subject")
    _run_args(p)
    p.add_argument("--notebooks", default=None, help="selection such as 01-10 or 1,4 (default: all)")
    p.add_argument("--runs", default=None, help="where executed notebooks go (default: runs/)")
    p.add_argument("--notebooks-dir", default=None, help="folder of NN_name.md chapters (default: notebooks/)")
    p.add_argument("--no-resume", action="store_true", help="re-execute notebooks completed earlier")
    p.add_argument("--verbose", action="store_true", help="stream notebook output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("book", help="build the HTML book from a run's executed notebooks")
    p.add_argument("--run", default="runs/mini/subj01", help="folder of executed notebooks")
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("mini", help="mini-NSD: the simulated dataset and its small models")
    msub = p.add_subparsers(dest="mini_command", required=True)
    g = msub.add_parser("generate", help="write mini-NSD in NSD's layout")
    g.add_argument("--root", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", choices=["small", "default"], default="default")
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

    p = sub.add_parser("batch", help="papermill chains for several subjects, locally or on Slurm")
    _run_args(p)
    p.add_argument("--subjects", nargs="+", help="e.g. 1 2 5 7 (one chain per subject)")
    p.add_argument("--status", action="store_true", help="report on the latest batch of --dataset (and write "
                   "the report once all subjects are done) instead of starting one")
    p.add_argument("--notebooks", default=None)
    p.add_argument("--notebooks-dir", default=None, help="folder of NN_name.md chapters (default: notebooks/)")
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
    p.add_argument("--runs", default=None)
    p.set_defaults(func=_cmd_batch)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
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
