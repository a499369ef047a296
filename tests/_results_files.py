"""Per-subject results files for the report's tests, written by the pipeline's own writer.

:func:`write_subject_results` builds each row with :func:`nsdlib.pipeline.results.result_row`
and writes the file with :func:`~nsdlib.pipeline.results.write_results`, so the tests read
what chapter 09 writes. Files that the writer would never produce (other versions, bad
values the reader must reject) are still written by hand where a test is about them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from nsdlib import RunConfig
from nsdlib.pipeline.results import result_row, results_path, write_results

#: Metric means of a row unless a variant says otherwise.
MEANS = {"ssim": 0.3, "pixcorr": 0.1, "alexnet2": 0.8, "alexnet5": 0.85, "inceptionv3": 0.7, "clip": 0.75,
         "efficientnet": 0.9, "swav": 0.6}


def variant(regressor: str = "gru", n_layers: int = 15, noise: str = "none", *, models: str = "mini",
            quick: bool = False, protocol: str = "brain-diffuser", **means) -> dict:
    """One row to write: the model variant, the run's ``models`` and ``quick``, the evaluation protocol
    and metric means."""
    return {"regressor": regressor, "n_layers": n_layers, "noise": noise, "models": models, "quick": quick,
            "protocol": protocol, "means": {**MEANS, **means}}


def write_subject_results(workdir, subject: int, variants: list[dict], *, csv_only: bool = False) -> Path:
    """Write ``<workdir>/mini/subjNN/results.json`` and ``.csv`` (only the CSV with ``csv_only``)."""
    cfg = RunConfig(dataset="mini", subject=subject, workdir=str(workdir))
    rows = []
    for v in variants:
        report = SimpleNamespace(means=v["means"], n_images=10, size=32, protocol=v["protocol"], card=None,
                                 ssim_mode="columns" if v["protocol"] == "brain-diffuser" else "2d")
        run = cfg.replace(models=v["models"], quick=v["quick"])
        rows.append(result_row(run, v["regressor"], v["n_layers"], v["noise"], report))
    path = write_results(cfg, rows)
    if csv_only:
        path.unlink()
        return results_path(cfg, ".csv")
    return path
