"""The run's results file: its one writer (:func:`write_results`) and its one reader (:func:`read_results`).

Chapter 09 (:func:`nsdlib.pipeline.evaluation.evaluate`) writes ``<run_dir>/results.json``,
and ``results.csv`` beside it with the same rows; the cross-subject report
(:mod:`nsdlib.report.cross_subject`) reads them back for every subject. The JSON document::

    {"schema": 1, "dataset": ..., "models": ..., "subject": ..., "updated": <UTC time>,
     "ssim_mode": "columns", "sources": {metric: what computed it, or why it could not be},
     "cards": {card key: protocol card}, "rows": [row, ...]}

with one row per (regressor, n_layers, noise, protocol), its keys :data:`RESULT_COLUMNS`::

    dataset, models, subject, regressor, n_layers, noise, n_images, size, ssim_mode,
    protocol, card, ssim, pixcorr, alexnet2, alexnet5, inceptionv3, clip, efficientnet, swav,
    ssim_2d, latent_mse, latent_mae, seed, quick

``protocol`` names the evaluation chain (:mod:`nsdlib.protocols`: ``"brain-diffuser"``, the
default, or ``"mindeye"``); ``card`` is the key of the row's protocol card
(:class:`~nsdlib.protocols.ProtocolCard`: image set and ids digest, repeats, chain, seed,
samples, selection), written out under ``"cards"``. Rows written before protocols existed
read as ``"brain-diffuser"``, the only chain nsdlib had; rows of other origin as ``"unknown"``.

A file of reconstructions scored by ``nsdlib score`` (:mod:`nsdlib.pipeline.rescore`) has a
row of its own: ``regressor`` ``"file:<name>"`` (or the label given), ``n_layers`` 0, ``noise``
"none", no latent errors.

``ssim`` is Brain-Diffuser's column SSIM (the mode behind the paper's numbers, so that
the column compares with theirs); ``ssim_2d`` is the true 2-D SSIM. Identification scores
are fractions in 0-1; ``efficientnet`` and ``swav`` are mean correlation distances. A
metric that could not be computed is null (JSON) / empty (CSV), with the reason under
``"sources"`` in the JSON file.

Chapter 09's controls (:mod:`nsdlib.pipeline.controls`) add two rows whose ``regressor`` says
what they are, ``"control: retrieval"`` (``n_layers`` 0: no VDVAE blocks predicted) and
``"control: shuffled betas"`` (the run's ``n_layers``); they sort after the models' rows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..metrics import MetricReport
from ..names import IDENTIFICATION_METRICS, IMAGE_METRICS, NOISE_LEVELS, REGRESSORS
from ..noise import noise_label
from ..protocols import DEFAULT_PROTOCOL
from ..store import atomic_write

__all__ = [
    "KEY_COLUMNS",
    "RESULTS_SSIM_MODE",
    "RESULT_COLUMNS",
    "ResultsFormatError",
    "provenance",
    "read_results",
    "result_row",
    "results_path",
    "write_results",
]

SCHEMA = 1
#: The columns that tell the rows of one run apart (a new row with the same replaces the old).
KEY_COLUMNS = ("regressor", "n_layers", "noise", "protocol")
#: Every column of a results row, in the file's order.
RESULT_COLUMNS = ("dataset", "models", "subject", "regressor", "n_layers", "noise", "n_images", "size", "ssim_mode",
                  "protocol", "card", *IMAGE_METRICS, "ssim_2d", "latent_mse", "latent_mae", "seed", "quick")
#: The SSIM mode of the ``ssim`` column under the default protocol: Brain-Diffuser's, as behind the paper's numbers
#: (``"mindeye"`` rows: the 2-D SSIM, their ``ssim_mode`` column says so).
RESULTS_SSIM_MODE = "columns"
#: The order of a file's rows: by noise level, then regressor (ridge first, as the paper's tables), then n_layers.
_REGRESSOR_ORDER = {r: i for i, r in enumerate(("ridge", *(r for r in REGRESSORS if r != "ridge")))}


class ResultsFormatError(ValueError):
    """A results file does not have the columns or values a results file has."""


def results_path(cfg: RunConfig, suffix: str = ".json") -> Path:
    """``<run_dir>/results.json`` (or ``.csv``)."""
    return cfg.run_dir / f"results{suffix}"


def _clean(v):
    """A JSON-ready value: numpy scalars to Python, non-finite floats to None."""
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def result_row(cfg: RunConfig, regressor: str, n_layers: int, noise: str, report: MetricReport,
               latents: dict | None = None) -> dict:
    """One results row: the run, the model variant, and the means of one :class:`~nsdlib.metrics.MetricReport`.

    Parameters
    ----------
    regressor, n_layers, noise
        The variant scored (``noise``: a label of :func:`nsdlib.noise.noise_label`).
    report : MetricReport
        Per-image scores of its reconstructions (with ``ssim_2d``); its protocol and card
        (when attached) go on the row.
    latents : dict, optional
        ``mse`` and ``mae`` of stage 1's predicted test latents (:func:`nsdlib.metrics.latent_errors`).

    Returns
    -------
    dict
        :data:`RESULT_COLUMNS`; a metric that could not be computed is None.
    """
    means = report.means
    row = {"dataset": cfg.dataset, "models": cfg.models, "subject": cfg.subject, "regressor": regressor,
           "n_layers": int(n_layers), "noise": noise, "n_images": report.n_images, "size": report.size,
           "ssim_mode": report.ssim_mode, "protocol": report.protocol,
           "card": report.card.key if report.card is not None else None,
           **{m: means.get(m, float("nan")) for m in IMAGE_METRICS},
           "ssim_2d": means.get("ssim_2d", float("nan")),
           "latent_mse": latents["mse"] if latents else float("nan"),
           "latent_mae": latents["mae"] if latents else float("nan"), "seed": cfg.seed, "quick": cfg.quick}
    return {k: _clean(row[k]) for k in RESULT_COLUMNS}


def provenance(reports) -> tuple[dict, dict]:
    """The ``sources`` and ``cards`` of :func:`write_results` for the MetricReports behind some rows.

    Parameters
    ----------
    reports : iterable of MetricReport

    Returns
    -------
    tuple of dict
        ``(sources, cards)``: every metric's source (later reports win, all name the same
        networks in one run) and every report's protocol card by key.
    """
    reports = list(reports)
    sources = {k: v for rep in reports for k, v in rep.sources.items()}
    cards = {rep.card.key: rep.card.to_dict() for rep in reports if rep.card is not None}
    return sources, cards


def write_results(cfg: RunConfig, rows: Sequence[dict], sources: dict | None = None,
                  cards: dict | None = None, *, path: str | os.PathLike | None = None) -> Path:
    """Merge ``rows`` into the run's results file and write it (JSON and CSV) atomically.

    A row replaces an earlier one with the same :data:`KEY_COLUMNS`; rows are sorted by
    noise level, regressor and n_layers.

    Parameters
    ----------
    rows : sequence of dict
        Each with every column of :data:`RESULT_COLUMNS` (see :func:`result_row`).
    sources : dict, optional
        Metric -> what computed it or why it could not be, merged into the file's ``sources``.
    cards : dict, optional
        Card key -> :meth:`~nsdlib.protocols.ProtocolCard.to_dict`, merged into the file's ``cards``.
    path : str or Path, optional
        The ``.json`` file to merge into and write (default :func:`results_path`); the
        ``.csv`` goes beside it.

    Returns
    -------
    Path of the ``.json`` file.
    """
    path = results_path(cfg) if path is None else Path(path)
    if path.suffix != ".json":
        raise ValueError(f"a results file is written as .json (with .csv beside it); found {path.name}")
    old = _read_document(path) if path.is_file() else {}
    # rows written before protocols existed were Brain-Diffuser's chain, the only one then
    olds = [{"protocol": DEFAULT_PROTOCOL, "card": None, **r} for r in old.get("rows", [])]
    keep = {tuple(r[k] for k in KEY_COLUMNS): r for r in olds}
    for r in rows:
        missing = [c for c in RESULT_COLUMNS if c not in r]
        if missing:
            raise ValueError(f"a results row needs the columns {', '.join(RESULT_COLUMNS)}; "
                             f"found it without {', '.join(missing)}")
        keep[tuple(r[k] for k in KEY_COLUMNS)] = {k: _clean(r[k]) for k in RESULT_COLUMNS}
    noise_order = {lab: i for i, lab in enumerate(NOISE_LEVELS)}
    merged = sorted(keep.values(), key=lambda r: (noise_order.get(r["noise"], 99),
                                                  _REGRESSOR_ORDER.get(r["regressor"], 9), r["n_layers"]))
    doc = {"schema": SCHEMA, "dataset": cfg.dataset, "models": cfg.models, "subject": cfg.subject,
           "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "ssim_mode": RESULTS_SSIM_MODE, "sources": {**old.get("sources", {}), **(sources or {})},
           "cards": {**old.get("cards", {}), **(cards or {})}, "rows": merged}
    with atomic_write(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    with atomic_write(path.with_suffix(".csv"), "w") as fh:
        pd.DataFrame(merged, columns=list(RESULT_COLUMNS)).to_csv(fh, index=False)
    return path


def read_results(source: RunConfig | str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """Read a results file: the run's (a RunConfig) or one at a path (``.json`` or ``.csv``).

    Besides what :func:`write_results` writes, it reads a JSON list of rows and rows that
    lack the run's columns (files written by hand or by earlier versions): column names are
    matched case-insensitively; a missing ``subject`` comes from a ``subjNN`` folder,
    ``dataset`` from the folder above it; ``models``, ``ssim_mode`` and ``protocol`` become "unknown"
    (``protocol``: "brain-diffuser" in a file nsdlib wrote before protocols existed),
    ``noise`` "none", ``quick`` False, and every other missing column NaN.

    Returns
    -------
    doc : dict
        The JSON document as written (for a CSV file or a JSON list: ``{"rows": [...]}``).
    rows : pandas.DataFrame
        Columns :data:`RESULT_COLUMNS`: ``subject`` and ``n_layers`` int, ``regressor``,
        ``ssim_mode`` and ``noise`` str (noise labels "none", "8", ...), ``quick`` bool,
        metrics float (NaN where not computed).

    Raises
    ------
    FileNotFoundError
        No file there.
    ResultsFormatError
        Not a results file: another suffix or JSON shape, no rows, no metric column, no
        ``regressor`` or ``n_layers`` column, a noise level that is not one, or an
        identification score outside 0-1 (a percentage, say). The message names what was
        expected and what was found.
    """
    path = results_path(source) if isinstance(source, RunConfig) else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}; run chapter 09 (or evaluation.evaluate) for this run")
    doc = _read_document(path)
    df = pd.DataFrame(doc["rows"])
    if "schema" in doc and "protocol" not in df.columns:  # written by nsdlib before protocols: Brain-Diffuser's chain
        df["protocol"] = DEFAULT_PROTOCOL
    if df.empty:
        raise ResultsFormatError(f"{path}: expected result rows; found a results file with no rows")
    lower = {c: c.lower() for c in df.columns if isinstance(c, str) and c.lower() in RESULT_COLUMNS}
    df = df.rename(columns=lower)
    if not any(m in df.columns for m in IMAGE_METRICS):
        raise ResultsFormatError(f"{path}: no metric columns; expected some of {', '.join(IMAGE_METRICS)}; "
                                 f"found {', '.join(map(str, df.columns))}")
    for col in ("regressor", "n_layers"):
        if col not in df.columns:
            raise ResultsFormatError(f"{path}: a results row needs a {col!r} column; found "
                                     f"{', '.join(map(str, df.columns))}")
    return doc, _normalise(df, path)


def _read_document(path: Path) -> dict:
    if path.suffix == ".csv":
        return {"rows": pd.read_csv(path).to_dict("records")}
    if path.suffix != ".json":
        raise ResultsFormatError(f"{path}: expected a results .json or .csv file; found {path.suffix or 'no suffix'}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(f"{path}: expected JSON; found a file that does not parse ({exc})") from None
    if isinstance(doc, list):
        doc = {"rows": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        found = f"an object with keys {', '.join(doc)}" if isinstance(doc, dict) else type(doc).__name__
        raise ResultsFormatError(f"{path}: expected a JSON list of result rows (or {{'rows': [...]}}); found {found}")
    return doc


def _normalise(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The rows in :data:`RESULT_COLUMNS` with their types; what a row lacks filled in."""
    if "subject" not in df.columns:
        m = re.fullmatch(r"subj0*(\d+)", path.parent.name)
        if m is None:
            raise ResultsFormatError(f"{path}: expected a 'subject' column or a folder named subjNN; found neither")
        df["subject"] = int(m.group(1))
    defaults = {"dataset": path.parent.parent.name, "models": "unknown", "ssim_mode": "unknown", "noise": "none",
                "quick": False, "protocol": "unknown", "card": None}
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            df[col] = defaults.get(col, float("nan"))
    df["ssim_mode"] = df["ssim_mode"].fillna("unknown").astype(str)
    df["protocol"] = df["protocol"].fillna("unknown").astype(str)
    df["card"] = pd.Series([None if pd.isna(v) else str(v) for v in df["card"]], index=df.index, dtype=object)
    df["quick"] = [str(v).strip().lower() in ("true", "1", "1.0") for v in df["quick"]]
    df["noise"] = [_noise(v, path) for v in df["noise"]]
    df["subject"] = df["subject"].astype(int)
    df["n_layers"] = df["n_layers"].astype(int)
    df["regressor"] = df["regressor"].astype(str)
    for m in IMAGE_METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    for m in IDENTIFICATION_METRICS:  # fractions in 0-1: the paper prints .942, not 94.2
        bad = df[m][(df[m] < 0) | (df[m] > 1)]
        if len(bad):
            raise ResultsFormatError(f"{path}: {m} is a 2-way identification score, a fraction in 0-1; "
                                     f"found {float(bad.iloc[0]):g} (a percentage?)")
    return df[list(RESULT_COLUMNS)].reset_index(drop=True)


def _noise(value, path: Path) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "none"
    try:
        return noise_label(value)
    except ValueError:
        raise ResultsFormatError(f"{path}: expected noise levels {', '.join(NOISE_LEVELS)}; "
                                 f"found {value!r}") from None
