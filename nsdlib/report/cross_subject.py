"""The cross-subject report: the layout of the paper's Table 5 from per-subject results.

Chapter 09 of each run writes one results file per subject,
``<workdir>/<dataset>/subjNN/results.json`` (or ``.csv``), with one row per
(regressor, n_layers, noise) and the eight image metrics. This module reads those files,
averages each model over the subjects that have it (the paper's Table 5) and keeps the
per-subject rows beside the mean, with the paper's own numbers next to ours, labelled as
the paper's. :func:`write_report` writes the result as ``report.csv`` and ``report.md``
(atomically); ``nsdlib batch`` calls it after a batch.

The module is also a small Sphinx extension (:func:`setup`, listed in ``_config.yml`` as
``nsdlib.report.cross_subject``):
when the book is built, the page ``book/cross_subject.md`` receives the latest
``runs/<dataset>/report.md`` in place of its "no batch report yet" note, so the book builds
whether or not a batch has run, and never shows a table that no run produced.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .. import paper
from ..names import DATASET_LABELS as _DATASET_LABELS
from ..names import IMAGE_METRICS
from ..names import METRIC_SHORT_HEADERS as _HEADERS
from ..names import REGRESSOR_LABELS as _REGRESSOR_LABELS
from ..pipeline.results import read_results
from ..protocols import DEFAULT_PROTOCOL, PROTOCOLS
from ..store import atomic_write

__all__ = [
    "IDENTITY_COLUMNS",
    "REPORT_MARKERS",
    "collect_results",
    "collect_timings",
    "cross_subject_table",
    "fill_report_page",
    "mean_card",
    "mean_over_subjects",
    "render_markdown",
    "report_rows",
    "setup",
    "write_report",
]

#: The columns that name a result row.
IDENTITY_COLUMNS = ("dataset", "models", "quick", "ssim_mode", "protocol", "subject", "regressor", "n_layers",
                    "noise")

_SSIM_MODES = {"columns": "Brain-Diffuser's column SSIM (as in the paper)", "2d": "the true 2-D SSIM",
               "unknown": "of an unrecorded variant"}

#: The page the Sphinx hook fills, and the comments around its "no report yet" note.
REPORT_PAGE = "book/cross_subject"
REPORT_MARKERS = ("<!-- cross-subject-report: start -->", "<!-- cross-subject-report: end -->")


def _subject_from_path(path: Path) -> int | None:
    m = re.fullmatch(r"subj0*(\d+)", path.parent.name)
    return int(m.group(1)) if m else None


def report_rows(path: str | os.PathLike):
    """One per-subject results file's rows in the report's columns.

    The file is read by its one reader, :func:`nsdlib.pipeline.results.read_results`
    (``results.json`` or ``results.csv``, as chapter 09 writes them).

    Parameters
    ----------
    path : path
        ``<workdir>/<dataset>/subjNN/results.json`` or ``results.csv``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`IDENTITY_COLUMNS` then :data:`~nsdlib.names.IMAGE_METRICS`;
        identification scores are fractions in 0-1, distances are correlation distances. ``subject`` is an int,
        ``noise`` a label (``"none"``, ``"8"``...), ``quick`` a bool (False when absent),
        ``ssim_mode`` the SSIM variant behind ``ssim`` (``"columns"`` for Brain-Diffuser's,
        ``"2d"``; ``"unknown"`` when absent). A metric the file lacks is NaN.

    Raises
    ------
    nsdlib.pipeline.results.ResultsFormatError
        No rows, no metric column, a missing regressor or n_layers column, or an
        identification score outside 0-1 (a percentage, say).
    """
    return read_results(path)[1][list(IDENTITY_COLUMNS) + list(IMAGE_METRICS)]


def collect_results(workdir: str | os.PathLike, dataset: str):
    """All per-subject results of one dataset under a workdir.

    Reads ``<workdir>/<dataset>/subj*/results.json`` (or ``results.csv`` where there is no
    JSON). Returns an empty frame with the report's columns when there is none.
    """
    import pandas as pd

    base = Path(workdir) / dataset
    frames = []
    for subj in sorted(base.glob("subj[0-9]*")):
        for name in ("results.json", "results.csv"):
            if (subj / name).is_file():
                frames.append(report_rows(subj / name))
                break
    if not frames:
        return pd.DataFrame(columns=list(IDENTITY_COLUMNS) + list(IMAGE_METRICS))
    return pd.concat(frames, ignore_index=True)


def collect_timings(batch_dir: str | os.PathLike):
    """Seconds each notebook took per subject, from the runner's done markers.

    Reads ``<batch_dir>/subjNN/NN_name.done.json`` (``runs/<dataset>/...``): the wall-clock
    time of the notebook's last real execution (a skipped notebook keeps the time of the run
    that completed it), with the device asked for and, where the batch recorded it, the
    host and the GPUs the subject was given.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject``, ``notebook``, ``seconds``, ``device``, ``host``, ``gpus``.
    """
    import pandas as pd

    rows = []
    for subj in sorted(Path(batch_dir).glob("subj[0-9]*")):
        subject = _subject_from_path(subj / "x")
        try:
            chain = json.loads((subj / "chain.json").read_text())
        except (OSError, json.JSONDecodeError):
            chain = {}
        for marker in sorted(subj.glob("[0-9][0-9]_*.done.json")):
            try:
                done = json.loads(marker.read_text())
            except json.JSONDecodeError:
                continue
            if "seconds" not in done:
                continue
            rows.append({"subject": subject, "notebook": marker.name.removesuffix(".done.json"),
                         "seconds": float(done["seconds"]), "device": done.get("params", {}).get("device"),
                         "host": chain.get("host"), "gpus": chain.get("cuda_visible_devices")})
    return pd.DataFrame(rows, columns=["subject", "notebook", "seconds", "device", "host", "gpus"])


def _timings_markdown(timings) -> list[str]:
    wide = timings.pivot_table(index="notebook", columns="subject", values="seconds", aggfunc="last")
    subjects = list(wide.columns)
    lines = ["## Time per notebook", "",
             "Wall-clock seconds of each notebook's last execution, as the runner measured it (a notebook "
             "skipped on a rerun keeps the time of the run that completed it). Hosts: "
             + ", ".join(sorted({str(h) for h in timings["host"].dropna()}) or ["not recorded"])
             + "; devices asked for: " + ", ".join(sorted({str(d) for d in timings["device"].dropna()})) + ".", "",
             "| notebook | " + " | ".join(f"subject {s}" for s in subjects) + " |",
             "|" + "---|" * (len(subjects) + 1)]
    for nb, r in wide.iterrows():
        lines.append(f"| {nb} | " + " | ".join("–" if r[s] != r[s] else f"{r[s]:.0f}" for s in subjects) + " |")
    return lines + [""]


def _paper_rows(table: int):
    rows = []
    for r in {4: paper.TABLE4, 5: paper.TABLE5}[table]:
        subjects = r.get("subjects", "")
        rows.append({"source": f"paper (Table {table})", "dataset": "nsd", "models": "pretrained", "quick": False,
                     "ssim_mode": "columns",
                     "model": r["label"], "regressor": r.get("regressor"), "n_layers": r.get("n_layers"),
                     "noise": "none", "subject": "mean" if "," in subjects else subjects,
                     "subjects": subjects, "n_subjects": len([s for s in subjects.split(",") if s]),
                     **{m: r.get(m) for m in IMAGE_METRICS}})
    return rows


def cross_subject_table(results, *, with_paper: bool = True):
    """The report as one table: per-subject rows, their mean, and the paper's numbers.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows from :func:`report_rows` / :func:`collect_results`.
    with_paper : bool
        Append the paper's Table 5 (mean of subjects 1, 2, 5, 7, with the other systems
        it lists) and Table 4 (subject 1), labelled ``"paper (Table N)"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``source`` (``"ours"`` or ``"paper (Table N)"``), ``dataset``, ``models``,
        ``quick``, ``ssim_mode``, ``protocol`` (the evaluation chain, :mod:`nsdlib.protocols`;
        empty for the paper's rows), ``model`` (display name), ``regressor``, ``n_layers``, ``noise``, ``subject`` (a
        subject number, or ``"mean"``), ``subjects`` (those averaged), ``n_subjects`` and
        the eight metrics. A subject that has the same row twice counts once (the last).
    """
    import pandas as pd

    keys = ["dataset", "models", "quick", "ssim_mode", "protocol", "regressor", "n_layers", "noise"]
    rows = []
    if len(results):
        res = results.drop_duplicates(subset=keys + ["subject"], keep="last")
        res = res.sort_values(keys + ["subject"], kind="stable")
        for key, grp in res.groupby(keys, sort=False):
            ident = dict(zip(keys, key))
            model = _REGRESSOR_LABELS.get(ident["regressor"], ident["regressor"])
            subjects = ",".join(str(s) for s in grp["subject"])
            for _, r in grp.iterrows():
                rows.append({"source": "ours", **ident, "model": model, "subject": str(r["subject"]),
                             "subjects": str(r["subject"]), "n_subjects": 1, **{m: r[m] for m in IMAGE_METRICS}})
            rows.append({"source": "ours", **ident, "model": model, "subject": "mean", "subjects": subjects,
                         "n_subjects": len(grp), **{m: grp[m].mean() for m in IMAGE_METRICS}})
    if with_paper:
        rows += _paper_rows(5) + _paper_rows(4)
    cols = ["source", "dataset", "models", "quick", "ssim_mode", "protocol", "model", "regressor", "n_layers",
            "noise", "subject", "subjects", "n_subjects", *IMAGE_METRICS]
    table = pd.DataFrame(rows, columns=cols)
    table["n_layers"] = table["n_layers"].astype("Int64")  # None for the other systems
    return table


def mean_card(protocol: str = DEFAULT_PROTOCOL) -> str:
    """The protocol card of a mean over subjects, in words (a table's caption or the report's line).

    Each subject's own card, with the digest of its test images' ids, is in its results file.
    """
    known = PROTOCOLS[protocol].label if protocol in PROTOCOLS else "not known to nsdlib"
    return (f"Protocol card: protocol {protocol} ({known}); images: each subject's own test set (its ids' "
            "digest is in that subject's results file, under `cards`); repeats: betas averaged over each "
            "image's repeats; one sample per image, no selection. The paper's rows claim "
            f"{paper.PAPER_PROTOCOL.split(' ')[0]} (its metrics follow Brain-Diffuser's).")


def mean_over_subjects(results, *, models: str, noise: str = "none", protocol: str = DEFAULT_PROTOCOL):
    """Each model's scores averaged over the subjects that have a results row for it.

    What chapter 09 puts beside the paper's Table 5 (a mean of subjects 1, 2, 5 and 7).

    Parameters
    ----------
    results : pandas.DataFrame
        Rows from :func:`collect_results` (one dataset).
    models : {"mini", "pretrained"}
        Only the rows computed with these models.
    noise : str
        Only the rows at this noise level (default: none added).
    protocol : str
        Only the rows scored under this evaluation protocol (default ``"brain-diffuser"``):
        scores of different protocols are never averaged together.

    Returns
    -------
    mean : pandas.DataFrame
        One row per (regressor, n_layers): those columns, the eight metrics (the mean over
        subjects) and ``noise``.
    subjects : list of int
        The subjects that have at least one of the rows averaged.
    """
    sel = results[(results["models"] == models) & (results["noise"] == noise) & (results["protocol"] == protocol)]
    subjects = sorted(int(s) for s in sel["subject"].unique())
    mean = sel.groupby(["regressor", "n_layers"], as_index=False)[list(IMAGE_METRICS)].mean()
    mean["noise"] = noise
    return mean, subjects


def _fmt(v) -> str:
    try:
        if v is None or v != v:
            return "–"
    except TypeError:
        return str(v)
    return f"{float(v):.3f}"


def _md_table(df, first: list[tuple[str, str]]) -> list[str]:
    import pandas as pd

    head = [h for _, h in first] + [_HEADERS[m] for m in IMAGE_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = []
        for col, _ in first:
            v = r[col]
            cells.append("–" if v is None or pd.isna(v) else str(v).replace(",", ", "))
        lines.append("| " + " | ".join(cells + [_fmt(r[m]) for m in IMAGE_METRICS]) + " |")
    return lines


def render_markdown(table, *, title: str, note: str = "", timings=None) -> str:
    """The report as Markdown: Table 5's layout (mean over subjects), then per subject.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`cross_subject_table`.
    title : str
        The first-level heading.
    note : str
        A paragraph placed under the heading (provenance: when, which workdir).
    timings : pandas.DataFrame, optional
        From :func:`collect_timings`; adds a table of seconds per notebook and subject.
    """
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    ours = table[table["source"] == "ours"]
    papers = table[table["source"] != "ours"]
    noisy = ours[ours["noise"] != "none"]
    ours = ours[ours["noise"] == "none"]
    if ours.empty:
        out += ["No results file was found for this dataset: the runs have not reached chapter 09 "
                "(evaluation) yet, so there is nothing of ours to show.", ""]
    for (dataset, models, quick, ssim_mode, protocol), grp in ours.groupby(
            ["dataset", "models", "quick", "ssim_mode", "protocol"], sort=True):
        label = (f"{_DATASET_LABELS.get(dataset, dataset)}, models={models}" + (", quick=True" if quick else "")
                 + f", protocol={protocol}")
        out += [f"## Mean over subjects: {label}", ""]
        out += [f"SSIM in our rows: {_SSIM_MODES.get(ssim_mode, ssim_mode)}."
                + ("" if ssim_mode == "columns" else " The paper's rows use Brain-Diffuser's column SSIM.")
                + (" A quick run: a small, fast variant of every step, for smoke tests, "
                                  "not for comparison." if quick else ""), ""]
        out += [mean_card(protocol), ""]
        mean = grp[grp["subject"] == "mean"]
        # the paper's numbers are Brain-Diffuser's chain: they stand beside rows of that protocol only
        same = papers if protocol == DEFAULT_PROTOCOL else papers.iloc[:0]
        if protocol != DEFAULT_PROTOCOL:
            out += [f"The paper's rows are left out here: they were computed under the {DEFAULT_PROTOCOL} "
                    f"protocol, these under {protocol}.", ""]
        paper5 = same[same["source"] == "paper (Table 5)"]
        out += _md_table(mean, [("source", "source"), ("model", "model"), ("n_layers", "layers"),
                                ("subjects", "subjects")])
        out += _md_table(paper5, [("source", "source"), ("model", "model"), ("n_layers", "layers"),
                                  ("subjects", "subjects")])[2:]
        out += [""]
        out += [f"## Per subject: {label}", ""]
        per = grp[grp["subject"] != "mean"].sort_values(["subject", "regressor", "n_layers"], kind="stable")
        paper4 = same[same["source"] == "paper (Table 4)"]
        out += _md_table(per, [("source", "source"), ("subject", "subject"), ("model", "model"),
                               ("n_layers", "layers")])
        out += _md_table(paper4, [("source", "source"), ("subject", "subject"), ("model", "model"),
                                  ("n_layers", "layers")])[2:]
        out += [""]
    if not ours.empty:
        out += ["Rows marked *paper* are the published numbers (real NSD, pretrained models); rows marked "
                "*ours* were computed by the runs named above. On mini-NSD the two are not comparable in "
                "absolute value: the data and the models are small simulations. Identification scores "
                "(Alex, Incep, CLIP) are 2-way identification fractions; Eff and SwAV are correlation "
                "distances (lower is better); a dash means the source reports no value."]
    if timings is not None and len(timings):
        out += ["", *_timings_markdown(timings)]
    noisy = noisy[noisy["subject"] != "mean"]
    if len(noisy):
        out += ["", f"{len(noisy)} per-subject rows with noise added to the first guess (chapter 08) are in "
                "`report.csv`; the paper's Table 6 compares them."]
    return "\n".join(out) + "\n"


def write_report(results, out_dir: str | os.PathLike, *, dataset: str, sources: Iterable[str] = (),
                 timings=None) -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.md`` into ``out_dir`` atomically.

    Parameters
    ----------
    results : pandas.DataFrame
        Per-subject rows (:func:`collect_results`).
    out_dir : path
        Normally ``runs/<dataset>``.
    dataset : str
        The dataset the report is about (for its title).
    sources : iterable of str
        Where the results came from (workdirs), named in the report.
    timings : pandas.DataFrame, optional
        Seconds per notebook (:func:`collect_timings`), shown in ``report.md``.

    Returns
    -------
    (csv_path, md_path)
    """
    out_dir = Path(out_dir)
    table = cross_subject_table(results)
    when = _dt.datetime.now().isoformat(timespec="seconds")
    srcs = ", ".join(f"`{s}`" for s in sources)
    note = (f"Written by `nsdlib batch` on {when} from the per-subject results files"
            + (f" under {srcs}" if srcs else "") + ".")
    md = render_markdown(table, title=f"Cross-subject report: {_DATASET_LABELS.get(dataset, dataset)}", note=note,
                         timings=timings)
    csv_path, md_path = out_dir / "report.csv", out_dir / "report.md"
    with atomic_write(csv_path, "w") as fh:
        table.to_csv(fh, index=False)
    with atomic_write(md_path, "w") as fh:
        fh.write(md)
    return csv_path, md_path


# ---------------------------------------------------------------- the book page


def fill_report_page(source: str, reports: Iterable[str | os.PathLike]) -> str:
    """Put the reports' Markdown between the page's markers.

    Parameters
    ----------
    source : str
        The page's Markdown, holding :data:`REPORT_MARKERS` around a "no report yet" note.
    reports : iterable of path
        ``report.md`` files; those that exist replace the note (their headings one level
        deeper). When none exists the note stays.
    """
    start, end = REPORT_MARKERS
    i, j = source.find(start), source.find(end)
    if i < 0 or j < i:
        raise ValueError(f"the cross-subject page lacks the markers {start!r} ... {end!r}")
    bodies = []
    for rep in reports:
        rep = Path(rep)
        if rep.is_file():
            text = rep.read_text()
            bodies.append(re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE).strip())
    if not bodies:
        return source
    return source[: i + len(start)] + "\n\n" + "\n\n".join(bodies) + "\n\n" + source[j:]


def _report_files(app) -> list[Path]:
    roots = []
    configured = app.config.nsdlib_runs_dir or os.environ.get("NSDLIB_RUNS")
    if configured:
        roots.append(Path(configured))
    roots.append(Path(app.confdir) / "runs")
    for root in roots:
        found = [root / ds / "report.md" for ds in ("nsd", "mini") if (root / ds / "report.md").is_file()]
        if found:
            return found
    return []


def _on_source_read(app, docname, source) -> None:
    if docname == REPORT_PAGE:
        source[0] = fill_report_page(source[0], _report_files(app))


def _always_reread(app, env, added, changed, removed) -> list[str]:
    return [REPORT_PAGE] if REPORT_PAGE in env.found_docs else []


def setup(app) -> dict:
    """Sphinx hook: fill ``book/cross_subject.md`` with the latest reports at build time.

    Reports are looked for in ``nsdlib_runs_dir`` (a Sphinx setting), ``$NSDLIB_RUNS``
    (``nsdlib book`` sets it to the book root's ``runs/``) and ``<book>/runs``, first folder
    with a report wins.
    """
    app.add_config_value("nsdlib_runs_dir", "", "env")
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _always_reread)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
