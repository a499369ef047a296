"""``nsdlib score``: reconstructions published elsewhere, scored like the run's own.

:func:`score_file` reads a file or folder of reconstructions (:mod:`nsdlib.reconstructions`:
``.pt`` / ``.npy`` tensors with their nsdIds, or a folder of images named by nsdId), puts
them in the order of the run's test images, and scores them against those test stimuli
(mini-NSD's or NSD's, read by the run's own readers) with
:func:`nsdlib.pipeline.evaluation.score` — the path that scores the pipeline's own images,
so the same images get the same eight numbers. The result is one row of the run's results
file (:mod:`nsdlib.pipeline.results`), labelled by the file's name, merged and written
atomically like chapter 09's rows.

A file may hold a subset of the test images: they are scored against those test images
alone (``n_images`` says how many; 2-way identification then compares among them only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..metrics import MetricReport
from ..nsd import read_expdesign
from ..protocols import get_protocol, protocol_card
from ..reconstructions import ReconstructionFileError, check_test_ids, read_reconstructions
from . import context, data
from .evaluation import ground_truth, score
from .results import RESULT_COLUMNS, provenance, result_row, write_results

__all__ = [
    "FILE_N_LAYERS",
    "SHARED1000",
    "file_label",
    "score_file",
    "shared1000_ids",
]

#: ``ids=`` value meaning NSD's shared images in ascending 73k id (``sorted(sharedix) - 1``).
SHARED1000 = "shared1000"
#: The ``n_layers`` of a file's results row (no stage-1 model of this run made it).
FILE_N_LAYERS = 0


def file_label(source) -> str:
    """The ``regressor`` of a file's results row: ``"file:<name>"`` (never a regressor's name)."""
    return f"file:{Path(source).name}"


def shared1000_ids(cfg: RunConfig) -> np.ndarray:
    """NSD's shared images as 0-based nsdIds, ascending: ``sorted(sharedix) - 1`` of the run's
    ``nsd_expdesign.mat`` (mini-NSD writes one too).

    Returns
    -------
    ndarray of int64, shape (n_shared,)
    """
    return np.sort(read_expdesign(data.ensure_dataset(cfg, progress=False)).sharedix) - 1


def score_file(cfg: RunConfig, source, *, ids=None, protocol: str = "brain-diffuser", label: str | None = None,
               only_test_images: bool = False, out=None, write: bool = True, clip=None, batch_size: int = 32,
               progress: bool = True) -> tuple[pd.DataFrame, MetricReport]:
    """Score a file (or folder) of reconstructions against the run's test stimuli.

    Parameters
    ----------
    cfg : RunConfig
        The run whose test stimuli, metric networks and results file are used (its dataset,
        subject and models).
    source : str or Path
        A ``.pt`` / ``.npy`` file or a folder of images (:func:`nsdlib.reconstructions.read_reconstructions`).
    ids : str, Path or array-like of int, optional
        A tensor file's 0-based nsdIds in its order (default its sidecar ids file), or
        ``"shared1000"``: NSD's shared images in ascending id (:func:`shared1000_ids`).
    protocol : str
        One of :data:`nsdlib.protocols.PROTOCOLS` ("brain-diffuser" or "mindeye").
    label : str, optional
        The row's ``regressor`` (default :func:`file_label`).
    only_test_images : bool
        Score the file's images that are test images of this run and leave out the others
        (a file of NSD's 1000 shared images against a subject whose test set has fewer);
        by default an image that is not a test image is an error.
    out : str or Path, optional
        The results file to merge the row into (default the run's ``results.json``);
        ``.csv`` is written beside it.
    write : bool
        Write the row.
    clip, batch_size, progress
        As in :func:`nsdlib.pipeline.evaluation.score`.

    Returns
    -------
    rows : pandas.DataFrame
        One row (:data:`~nsdlib.pipeline.results.RESULT_COLUMNS`): ``regressor`` the label,
        ``n_layers`` :data:`FILE_N_LAYERS`, ``noise`` "none", latent errors NaN.
    report : MetricReport
        Per-image scores, in the order of the run's test ids (``report.n_images`` of them:
        fewer than the file's images with ``only_test_images``).

    Raises
    ------
    nsdlib.reconstructions.ReconstructionFileError
        A bad file, or ids that are not the run's test images.
    ValueError
        An unknown protocol.
    """
    get_protocol(protocol)  # an unknown name fails before any file is read
    if isinstance(ids, str) and ids == SHARED1000:
        ids = shared1000_ids(cfg)
    images, got = read_reconstructions(source, ids)  # a bad file fails before the dataset is read
    test_ids = np.asarray(context.get(cfg).subject().test_ids, dtype=np.int64)
    if only_test_images:
        keep = np.isin(got, test_ids)
        if not keep.any():
            raise ReconstructionFileError(f"{source}: expected some of the run's {len(test_ids)} test images; "
                                          f"found none among its {len(got)} images")
        images, got = images[keep], got[keep]
    check_test_ids(got, test_ids, str(source), one_based=Path(source).is_dir())
    sorter = np.argsort(test_ids, kind="stable")
    pos = sorter[np.searchsorted(test_ids, got, sorter=sorter)]  # each image's place among the test images
    order = np.argsort(pos, kind="stable")  # the images in the order of the test ids
    card = protocol_card(protocol, image_set=f"{Path(source).name}: {len(got)} of the run's test images",
                         ids=test_ids[pos[order]], repeats="as published (not known to nsdlib)",
                         selection="as published (not known to nsdlib)")
    report = score(cfg, images[order], gt=ground_truth(cfg)[pos[order]], clip=clip, batch_size=batch_size,
                   progress=progress, protocol=protocol, card=card)
    row = result_row(cfg, label or file_label(source), FILE_N_LAYERS, "none", report)
    if write:
        write_results(cfg, [row], *provenance([report]), path=out)
    return pd.DataFrame([row], columns=list(RESULT_COLUMNS)), report
