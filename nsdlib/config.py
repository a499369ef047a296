"""Run parameters: one validated object shared by notebooks, the CLI and the store.

A :class:`RunConfig` holds exactly the parameters of a notebook's ``parameters`` cell
(SPEC §3). It is validated when created, so a typo fails at once with a sentence that
names what was expected and what was found, instead of deep inside a pipeline step.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from .names import DATASETS, MODEL_SETS, N_LAYERS, REGRESSORS, SUBJECTS

__all__ = [
    "NSD_S3_ROOT",
    "ConfigError",
    "RunConfig",
    "default_workdir",
    "find_book_root",
    "resolve_device",
    "writable_folder",
]

NSD_S3_ROOT = "s3://natural-scenes-dataset"


class ConfigError(ValueError):
    """A run parameter has a value nsdlib cannot use."""


def find_book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The book's root: ``start`` or the nearest folder above it holding ``notebooks/`` and ``_toc.yml``.

    Parameters
    ----------
    start : path, optional
        Where to look from; default the working directory.

    Returns
    -------
    pathlib.Path or None
        The absolute root, or None when no folder from ``start`` up is a book.
    """
    here = (Path.cwd() if start is None else Path(start)).expanduser().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "_toc.yml").is_file():
            return folder
    return None


def default_workdir() -> Path:
    """Where artifacts go when ``workdir`` is not given.

    ``$NSDLIB_WORKDIR`` if set; otherwise ``work/`` at the root of the book the working
    directory is in (:func:`find_book_root`: ``<repo>/work`` from anywhere in a checkout,
    notebooks included); otherwise ``~/.cache/nsdlib``.
    """
    env = os.environ.get("NSDLIB_WORKDIR")
    if env:
        return Path(env).expanduser()
    book = find_book_root()
    if book is not None:
        return book / "work"
    return Path.home() / ".cache" / "nsdlib"


def resolve_device(device: str = "auto"):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when a GPU is visible and the CPU otherwise. Asking for CUDA
    on a machine without it is an error rather than a silent fall-back.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for, but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return dev


def _as_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return value.lower() in {"true", "1", "yes", "on"}
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{name} must be true or false; found {value!r}")


def _as_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer; found {value!r}")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer; found {value!r}") from None
    if isinstance(value, float) and value != out:
        raise ConfigError(f"{name} must be an integer; found {value!r}")
    return out


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The parameters of one run: one subject, one dataset, one model set.

    Parameters
    ----------
    dataset : {"mini", "nsd"}
        mini-NSD (simulated, generated locally) or the real Natural Scenes Dataset.
    subject : {1, 2, 5, 7}
        The NSD subjects that completed all 40 sessions; mini-NSD simulates the same four.
    models : {"mini", "pretrained"}
        Small models trained on mini-NSD, or the published pretrained weights.
    n_layers : {15, 31}
        Number of VDVAE decoder blocks whose latents stage 1 predicts.
    regressor : {"gru", "ridge", "cnn", "transformer"}
        Stage-1 regressor used by the chapters after chapter 04.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed : int
        Seed of every random step of the run.
    workdir : str or Path, optional
        Root of the artifact store; see :func:`default_workdir`.
    nsd_root : str, optional
        Dataset root. For ``dataset="nsd"`` a local folder or ``s3://natural-scenes-dataset``
        (the default); for ``dataset="mini"`` the folder mini-NSD is generated into
        (default ``<workdir>/mini-nsd``, or ``<workdir>/mini-nsd-small`` for quick runs, which
        use the small world).
    quick : bool
        A small, fast variant of every step, for smoke tests.
    """

    dataset: str = "mini"
    subject: int = 1
    models: str = "mini"
    n_layers: int = 15
    regressor: str = "gru"
    device: str = "auto"
    seed: int = 0
    workdir: str | None = None
    nsd_root: str | None = None
    quick: bool = False

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}; found {self.dataset!r}")
        subject = _as_int("subject", self.subject)
        if subject not in SUBJECTS:
            hint = " (subjects 3, 4, 6 and 8 did not complete all 40 NSD sessions)" if subject in (3, 4, 6, 8) else ""
            raise ConfigError(f"subject must be 1, 2, 5 or 7; found {self.subject!r}{hint}")
        set_("subject", subject)
        if self.models not in MODEL_SETS:
            raise ConfigError(f"models must be one of {', '.join(MODEL_SETS)}; found {self.models!r}")
        n_layers = _as_int("n_layers", self.n_layers)
        if n_layers not in N_LAYERS:
            raise ConfigError(f"n_layers must be 15 or 31; found {self.n_layers!r}")
        set_("n_layers", n_layers)
        if self.regressor not in REGRESSORS:
            raise ConfigError(f"regressor must be one of {', '.join(REGRESSORS)}; found {self.regressor!r}")
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; found {self.device!r}")
        set_("device", dev)
        seed = _as_int("seed", self.seed)
        if not 0 <= seed < 2**32:  # numpy and torch generators take seeds in this range
            raise ConfigError(f"seed must be an integer in 0..{2**32 - 1}; found {self.seed!r}")
        set_("seed", seed)
        set_("quick", _as_bool("quick", self.quick))
        workdir = Path(self.workdir).expanduser() if self.workdir not in (None, "") else default_workdir()
        writable_folder(workdir, "workdir")
        set_("workdir", str(workdir.resolve()))
        if self.nsd_root in (None, ""):
            set_("nsd_root", self._default_nsd_root())
        else:
            set_("nsd_root", str(self.nsd_root))

    def _default_nsd_root(self) -> str:
        mini = "mini-nsd-small" if self.quick else "mini-nsd"  # quick runs use the small world
        return NSD_S3_ROOT if self.dataset == "nsd" else str(Path(self.workdir) / mini)

    # ------------------------------------------------------------------ views
    def params(self) -> dict:
        """The parameters as a plain dict (what papermill injects)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> RunConfig:
        """A copy with some parameters changed, validated again.

        A dataset root that was the default stays the default: it follows a changed
        ``dataset``, ``quick`` or ``workdir``.
        """
        if "nsd_root" not in changes and self.nsd_root == self._default_nsd_root():
            changes["nsd_root"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, params: dict) -> RunConfig:
        """Build from a dict, ignoring nothing: an unknown key is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown run parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**params)

    @property
    def run_dir(self) -> Path:
        """``<workdir>/<dataset>/subj0N``: where this run's artifacts live."""
        return Path(self.workdir) / self.dataset / f"subj{self.subject:02d}"

    @property
    def is_s3(self) -> bool:
        return str(self.nsd_root).startswith("s3://")

    def torch_device(self):
        """The resolved ``torch.device`` (see :func:`resolve_device`)."""
        return resolve_device(self.device)


def writable_folder(path, what: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it; return it.

    Parameters
    ----------
    path : path
    what : str
        How the user named it in the error (``"workdir"``, ``"--runs"``...).

    Raises
    ------
    ConfigError
        One sentence naming ``what``, the path and why (not writable, under a file...).
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason += " (a file stands where a folder is needed)"
        raise ConfigError(f"{what} {str(path)!r} is not a writable folder: {reason}") from None
    return path
