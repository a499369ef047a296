"""The one reading guard: a file that cannot be decoded becomes one error that names it.

Every reader of a file the pipeline reads (NIfTI, HDF5, MAT, NPZ, torch checkpoints,
safetensors, JSON, images) decodes it inside :func:`reading`. Whatever the decoding library
raises for a truncated or garbled file (``EOFError``, ``OSError``, ``BadZipFile``,
``MatReadError``, ``UnpicklingError``, a ``RuntimeError`` from torch...) becomes one
:class:`CorruptFileError` whose message is one line: the file, what was expected, what the
library found, and the fix (fetch NSD again, ``nsdlib mini generate``, or delete a cache
entry and compute it again). A missing file is not this guard's business: its reader raises
``FileNotFoundError`` with its own hint, and the guard lets it through unchanged.

Nothing here reads pickles: the guard wraps readers that already refuse them
(``allow_pickle=False``, ``weights_only=True``); a pickle payload is reported as a file that
is not what was expected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["TORCH_CHECKPOINT", "CorruptFileError", "reading"]

#: What a torch checkpoint must be: loadable without unpickling objects.
TORCH_CHECKPOINT = "a torch checkpoint readable with torch.load(weights_only=True) (no pickled objects)"

#: Longest excerpt of the decoding library's own message kept in the one-line error.
_DETAIL_CHARS = 160


class CorruptFileError(ValueError):
    """A file exists but cannot be decoded as expected; the message names it and the fix.

    Attributes
    ----------
    path : str
        The file.
    expected : str
        What it should have held.
    fix : str
        What repairs it.
    """

    def __init__(self, path, expected: str, fix: str, detail: str):
        self.path, self.expected, self.fix = str(path), expected, fix
        super().__init__(f"{path} is damaged: expected {expected}; found {detail}. Fix: {fix}")


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    if len(text) > _DETAIL_CHARS:
        text = text[: _DETAIL_CHARS - 3] + "..."
    return f"{type(exc).__name__} ({text})"


@contextlib.contextmanager
def reading(path: str | os.PathLike, expected: str, fix: str) -> Iterator[None]:
    """Decode ``path`` inside this block; a decoding error becomes :class:`CorruptFileError`.

    Parameters
    ----------
    path : path
        The file being decoded (named in the error).
    expected : str
        What it should hold, e.g. ``"a gzipped NIfTI-1 time series"``.
    fix : str
        The command or action that repairs it.

    Raises
    ------
    CorruptFileError
        For an error raised inside a decoding library. Let through unchanged: a missing file
        (``FileNotFoundError``), an error raised by nsdlib's own checks (they name the file
        already), and interruptions (``KeyboardInterrupt`` is not an ``Exception``).
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:  # each library raises its own types for a damaged file
        if _raised_by_nsdlib(exc):
            raise
        raise CorruptFileError(path, expected, fix, _detail(exc)) from exc


def _raised_by_nsdlib(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is nsdlib's own code."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and str(last.tb_frame.f_globals.get("__name__", "")).startswith("nsdlib")
