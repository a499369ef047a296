"""Reaching NSD's files: local folders and fsspec roots (the public S3 bucket), downloads, caches.

Remote files are downloaded once into a local cache that mirrors the layout (so the cache
is itself a local NSD root), with :func:`download_file`: resumable from a ``.part`` file,
checked against the remote size, renamed into place only when complete. fsspec's own
``simplecache`` writes straight to its final cache name, so an interrupted download would be
trusted later; that is why whole files go through :func:`download_file`. The stimulus HDF5
(about 40 GB) is never downloaded whole on demand: it is read image by image through fsspec's
block cache (:func:`open_block_cached`) in the same cache folder.

This module knows filesystems, not NSD's paths; :class:`nsdlib.nsd.NSDLayout` names the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
from fsspec.implementations.cached import CachingFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile
from tqdm.auto import tqdm

__all__ = ["download_file", "open_block_cached", "open_root"]


def open_root(root: str, storage_options: dict | None = None):
    """The filesystem of ``root``, the root's path on it, and whether it is this machine's disk.

    Parameters
    ----------
    root : str
        A local folder, or an fsspec URL (``s3://natural-scenes-dataset``, ``memory://...``).
    storage_options : dict, optional
        fsspec options; for ``s3://`` roots ``anon=True`` is the default.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    base : str
        ``root`` on ``fs``, without a trailing slash.
    is_local : bool
    """
    opts = dict(storage_options or {})
    if root.startswith("s3://"):
        opts.setdefault("anon", True)
    fs, base = fsspec.core.url_to_fs(root, **opts)
    return fs, base.rstrip("/"), isinstance(fs, LocalFileSystem)


def open_block_cached(fs, remote_path: str, cache_dir: Path):
    """A binary file object for random reads of a remote file, through a block cache in ``cache_dir``."""
    f = fs.open(remote_path, "rb")
    if not isinstance(f, AbstractBufferedFile):  # e.g. an in-memory file: nothing to cache
        return f
    f.close()
    cfs = CachingFileSystem(fs=fs, cache_storage=str(Path(cache_dir) / ".blockcache"))
    return cfs.open(remote_path, "rb")


def download_file(fs, remote_path: str, local_path, *, chunk_size: int = 8 << 20,
                  progress: bool = True, desc: str | None = None) -> Path:
    """Download one file, resumably, checking its size against the remote size.

    Bytes go to ``<local_path>.part``; an existing ``.part`` is continued from its length;
    the file is renamed onto ``local_path`` only when its size equals the remote size. A
    ``local_path`` that already has the remote size is kept as it is.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The remote filesystem (s3fs, http, memory, local...).
    remote_path : str
        Path on ``fs``.
    local_path : path
        Destination on this machine.

    Returns
    -------
    Path
        ``local_path``.
    """
    local = Path(local_path)
    size = int(fs.info(remote_path)["size"])
    if local.is_file():
        if local.stat().st_size == size:
            return local
        local.unlink()  # an old or foreign file of the wrong size: fetch it again
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset > size:
        part.unlink()
        offset = 0
    if offset < size:
        with fs.open(remote_path, "rb") as src, open(part, "ab") as dst, \
                tqdm(total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=desc or local.name, disable=not progress, leave=False) as bar:
            src.seek(offset)
            while True:
                buf = src.read(chunk_size)
                if not buf:
                    break
                dst.write(buf)
                bar.update(len(buf))
            dst.flush()
            os.fsync(dst.fileno())
    got = part.stat().st_size if part.is_file() else 0
    if got != size:
        raise OSError(f"download of {remote_path} stopped at {got:,} of {size:,} bytes "
                      f"(kept in {part}); run the same command again to resume")
    os.replace(part, local)
    return local
