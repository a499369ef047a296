"""Artifacts of a run: atomic writes, keys from parameters, reuse and resume.

Every expensive step of the pipeline stores its result under
``<workdir>/<dataset>/subj0N/<name>/<key>.<ext>``, where ``key`` is a hash of the parameters
that produced it. A rerun with the same parameters finds the file and reuses it; a changed
parameter gives another key and recomputes. Files are written to a temporary name in the
same folder (a unique name per writer) and renamed into place, so an interrupted write never
leaves a partial artifact and never damages the previous one. Computing an artifact holds its
own lock (``filelock``): two processes sharing a store never compute the same artifact at
once; the second waits, then reuses what the first wrote. Each store keeps a log (``store.log``, JSON lines) of
what it computed and what it reused, which is how tests prove a rerun computed nothing.
An artifact that no longer decodes (a truncated ``.npz``) is never reused: the store warns
(:class:`DamagedArtifactWarning`), deletes it and computes it again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock

from .guard import CorruptFileError, reading

__all__ = ["DamagedArtifactWarning", "Store", "array_key", "atomic_write", "file_sha256", "load_arrays",
           "package_versions", "params_key", "path_key", "save_arrays"]

KEY_PACKAGES = (
    "nsdlib", "numpy", "scipy", "torch", "torchvision", "transformers", "diffusers",
    "nibabel", "h5py", "fracridge", "scikit-image", "scikit-learn", "papermill", "jupytext",
)


#: What :func:`load_arrays` says repairs a damaged cache entry.
CACHE_FIX = "delete it; the step that wrote it computes it again (the store does so by itself)"
_MISSING = object()


class DamagedArtifactWarning(UserWarning):
    """A cached artifact could not be read; it was deleted and is computed again."""


def package_versions() -> dict[str, str | None]:
    """Versions of the packages whose behaviour shapes the results (None if absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))


def array_key(*arrays) -> str:
    """A short hash of arrays' shapes, dtypes and every byte of their content.

    For cache keys of artifacts computed from arrays (betas, first guesses): any change of a
    value changes the key. Hashing reads each array once (about 1 s per GB).
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def path_key(path: str | os.PathLike, *, content: bool = False) -> str:
    """A short key of a file or folder on disk, for cache keys of what is computed from it.

    Parameters
    ----------
    path : path
        A file (a checkpoint) or a folder (a saved model).
    content : bool
        Hash every byte (a file's content, or each file of a folder with its relative
        name): any change of a value changes the key. Otherwise the key is cheap: a file's
        name and size (``"name:size"``), or a hash of a folder's relative file names, sizes
        and modification times.

    Returns
    -------
    str
        16 hex digits, or ``"name:size"`` for a file without ``content``.

    Raises
    ------
    FileNotFoundError
        ``path`` is neither a file nor a folder.
    """
    path = Path(path)
    if path.is_file():
        if not content:
            return f"{path.name}:{path.stat().st_size}"
        h = hashlib.sha256()
        _hash_file(h, path)
        return h.hexdigest()[:16]
    if not path.is_dir():
        raise FileNotFoundError(f"expected a file or a folder to fingerprint; found nothing at {path}")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        if content:
            h.update(f"{f.relative_to(path)}\n".encode())
            _hash_file(h, f)
        else:
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """The full SHA-256 (64 hex digits) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    _hash_file(h, Path(path))
    return h.hexdigest()


def params_key(params: dict) -> str:
    """A short, stable hash of a parameter dict (order of keys does not matter)."""
    return hashlib.sha256(_canonical(params).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    If the body raises (or the process dies), ``path`` keeps its previous content, or
    stays absent, and the temporary file is removed (or left with a ``.tmp-`` name that
    no reader looks for).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that want a file name rather than a handle.

    Yields a temporary path with the same suffix as ``path`` (some writers, such as
    nibabel's, pick the format from it); it is renamed onto ``path`` on success.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name.removesuffix(suffix)}.tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write a dict of arrays as ``.npz`` atomically (no pickled objects allowed)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise TypeError(f"array {k!r} has dtype object; the store keeps numeric and string arrays only")
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_arrays` (pickles refused).

    Raises
    ------
    nsdlib.guard.CorruptFileError
        The file does not decode (truncated, garbled, or holding pickled objects).
    """
    with reading(path, "an .npz of numeric arrays written by nsdlib's store (no pickles)", CACHE_FIX), \
            np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Store:
    """The artifact folder of one run.

    Parameters
    ----------
    root : path
        Folder holding the artifacts, normally ``RunConfig.run_dir``.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_config(cls, cfg) -> Store:
        """The store of a :class:`~nsdlib.config.RunConfig`."""
        return cls(cfg.run_dir)

    # ----------------------------------------------------------------- paths
    def path(self, name: str, params: dict, suffix: str = ".npz") -> Path:
        """Where the artifact ``name`` made with ``params`` lives (whether or not it exists)."""
        return self.root / name / f"{params_key(params)}{suffix}"

    def has(self, name: str, params: dict, suffix: str = ".npz") -> bool:
        return self.path(name, params, suffix).exists()

    # ------------------------------------------------------------------- log
    def _log(self, event: str, name: str, params: dict) -> None:
        rec = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "event": event, "name": name, "key": params_key(params)}
        with open(self.root / "store.log", "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def events(self) -> list[dict]:
        """Every ``computed`` / ``reused`` / ``damaged`` event logged so far, oldest first."""
        log = self.root / "store.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def _write_meta(self, name: str, params: dict) -> None:
        meta = {"name": name, "params": json.loads(_canonical(params)),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": package_versions()}
        with atomic_write(self.path(name, params, ".meta.json"), "w") as fh:
            json.dump(meta, fh, indent=1)

    # -------------------------------------------------------------- caching
    @contextlib.contextmanager
    def _computing(self, path: Path) -> Iterator[None]:
        """Hold the lock of the artifact at ``path`` (one computing process at a time)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.parent / f".{path.name}.lock")):
            yield

    def _reuse(self, path: Path, load: Callable[[Path], object], name: str, params: dict):
        """The stored artifact, or ``_MISSING`` when absent or damaged (a damaged one is deleted)."""
        if not path.exists():
            return _MISSING
        try:
            value = load(path)
        except CorruptFileError as exc:
            warnings.warn(f"{exc}; computing it again", DamagedArtifactWarning, stacklevel=3)
            path.unlink(missing_ok=True)
            self._log("damaged", name, params)
            return _MISSING
        self._log("reused", name, params)
        return value

    def file(self, name: str, params: dict, write: Callable[[Path], None], suffix: str) -> Path:
        """Return the artifact's path, calling ``write(tmp_path)`` first if it is missing.

        ``write`` must create the file it is given; the store renames it into place.
        """
        path = self.path(name, params, suffix)
        if path.exists():
            self._log("reused", name, params)
            return path
        with self._computing(path):
            if path.exists():  # another process wrote it while this one waited
                self._log("reused", name, params)
                return path
            self._write_meta(name, params)
            with atomic_path(path) as tmp:
                write(tmp)
                if not tmp.exists():
                    raise RuntimeError(f"the writer of artifact {name!r} did not create its file")
        self._log("computed", name, params)
        return path

    def arrays(self, name: str, params: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A dict of arrays, computed once per parameter set and reused after."""
        path = self.path(name, params, ".npz")
        if (hit := self._reuse(path, load_arrays, name, params)) is not _MISSING:
            return hit
        with self._computing(path):
            if (hit := self._reuse(path, load_arrays, name, params)) is not _MISSING:
                return hit  # another process wrote it while this one waited
            result = {k: np.asarray(v) for k, v in compute().items()}
            self._write_meta(name, params)
            save_arrays(path, result)
        self._log("computed", name, params)
        return result

    def json(self, name: str, params: dict, compute: Callable[[], dict | list]) -> dict | list:
        """A JSON-serialisable result, computed once per parameter set and reused after."""
        path = self.path(name, params, ".json")
        if (hit := self._reuse(path, _load_json, name, params)) is not _MISSING:
            return hit
        with self._computing(path):
            if (hit := self._reuse(path, _load_json, name, params)) is not _MISSING:
                return hit  # another process wrote it while this one waited
            result = compute()
            self._write_meta(name, params)
            with atomic_write(path, "w") as fh:
                json.dump(result, fh, indent=1, default=_json_default)
        self._log("computed", name, params)
        return json.loads(path.read_text())

    def record_run(self, cfg, **extra) -> Path:
        """Write ``run.json``: the run's parameters, package versions and ``extra``."""
        rec = {"params": cfg.params(), "versions": package_versions(),
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}
        path = self.root / "run.json"
        with atomic_write(path, "w") as fh:
            json.dump(rec, fh, indent=1, default=str)
        return path


def _load_json(path: Path):
    with reading(path, "a JSON artifact written by nsdlib's store", CACHE_FIX):
        return json.loads(path.read_text())


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")
