"""The table of faults the suite injects, and what each must give (the reliability page's rows).

Each test of ``tests/faults`` calls :func:`record` once its assertions hold, naming the row it
proved. When every row of :data:`FAULTS` was proved in one session, ``conftest.py`` writes
``book/reliability_faults.json`` and renders it as the book's appendix page
``book/reliability.md``: the page says what this suite last verified, and nothing else. The
rendering is deterministic, so a suite that still proves every row leaves both files unchanged.
Not library code.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FAULTS", "JSON_PATH", "PAGE_PATH", "record", "render", "write_if_complete"]

BOOK = Path(__file__).resolve().parents[2] / "book"
JSON_PATH = BOOK / "reliability_faults.json"
PAGE_PATH = BOOK / "reliability.md"

#: id -> (what is damaged or done, how, what nsdlib must give). The order is the page's.
FAULTS = {
    "nifti-timeseries": ("mini-NSD time series (NIfTI, `nsdlib betas`)", "truncated, garbage",
                         "one line, exit 2, naming the file and `nsdlib mini generate --size small`, "
                         "which restores it"),
    "nifti-roi": ("ROI volume (NIfTI)", "truncated, garbage",
                  "one error naming the file; `nsdlib mini generate` restores it"),
    "nifti-betas": ("betas (NIfTI, written by the GLM)", "truncated, garbage",
                    "one error naming the file and `nsdlib betas ... --param quick=true`, which rewrites it"),
    "hdf5-stimuli": ("stimuli (`nsd_stimuli.hdf5`)", "truncated, garbage",
                     "one error naming the file; `nsdlib mini generate` restores it"),
    "mat-design": ("design (`nsd_expdesign.mat`)", "truncated, garbage",
                   "one error naming the file; `nsdlib mini generate` restores it"),
    "json-captions": ("COCO captions (JSON)", "truncated, garbage",
                      "one error naming the file; `nsdlib mini generate` restores it"),
    "npz-truth": ("mini-NSD ground truth (`truth.npz`)", "truncated, garbage",
                  "one error naming the file; `nsdlib mini generate` restores it"),
    "json-scenes": ("mini-NSD scenes (JSON)", "truncated, garbage",
                    "one error naming the file; `nsdlib mini generate` restores it"),
    "mini-missing-file": ("a mini-NSD file deleted", "deleted",
                          "the error names the file and `nsdlib mini generate --size small`, which restores it"),
    "nsd-missing-file": ("a real-NSD file missing (`--dataset nsd`)", "absent",
                         "one error naming the file and `nsdlib fetch nsd`"),
    "npz-cache": ("a cached artifact (`.npz`, e.g. `subject_data`)", "truncated, garbage",
                  "a warning naming it; deleted and computed again (equal arrays)"),
    "json-cache": ("a cached artifact (JSON)", "truncated, garbage", "a warning naming it; computed again"),
    "torch-checkpoint": ("a VDVAE checkpoint (`vdvae.pt`)", "truncated, garbage",
                         "one error naming the file and how to replace it"),
    "image-folder": ("an image in a folder of reconstructions (`nsdlib score`)", "truncated, garbage",
                     "one error naming the image"),
    "batch-json": ("a batch's state (`batch.json`)", "garbage", "`nsdlib batch --status`: one line, exit 2"),
    "notebook": ("an executed notebook of a completed chapter", "truncated to invalid JSON",
                 "resume checks its digest and runs the chapter again"),
    "pickle-payload": ("a pickle payload in every loader (`.pt`, `.npz`, `.npy`, `.bin`, safetensors names)",
                       "a payload that writes a marker file when unpickled",
                       "refused by every loader; the marker never appears"),
    "kill-9": ("`nsdlib run` killed with SIGKILL", "while mini-NSD is generated, during the GLM chapter, "
               "during the next chapter", "the same command resumes; results equal an uninterrupted run, "
               "array by array; no temporary file left"),
    "concurrent-runs": ("two `nsdlib run` at once on one run directory", "started together",
                        "one runs, the other refuses with one line naming the holder (or waits with `--wait`)"),
    "batch-bad-subject": ("a batch with one subject's data damaged", "truth.npz truncated",
                          "the other subject finishes; the failure names the file; exit 1"),
    "ctrl-c": ("Ctrl-C during `nsdlib run`", "SIGINT", "one line, exit 130; the same command resumes"),
    "paths": ("`--runs`, `--workdir`, `mini generate --root` unwritable or under a file", "bad paths",
              "one line naming the path, exit 2"),
    "arguments": ("`--param seed=-1`, `--notebooks 5-3`", "bad values", "one line, exit 2, before anything runs"),
}

_PROVED: dict[str, str] = {}


def record(fault: str, detail: str = "") -> None:
    """Mark the row ``fault`` as proved in this session (``detail``: what the test saw)."""
    if fault not in FAULTS:
        raise KeyError(f"no fault row {fault!r}; add it to tests/faults/_table.py FAULTS")
    _PROVED[fault] = detail


_INTRO = """# Reliability: faults tried and what each gives

This page is written by the fault-injection suite (`pytest tests/faults`, part of `make test`)
from its own results: each row below is a fault the suite injected in its last complete run,
and what nsdlib did, checked by the test named in the last column. A row appears only when
its test passed; the table is rewritten only when every row was proved in one run
(`book/reliability_faults.json` holds the same rows as data).

The faults are injected into small worlds (the "small" mini-NSD, chapters of a few cells that
call the real steps), so the suite stays fast. What holds across all rows: a file that cannot
be decoded is named, with what was expected and the command that repairs it (`nsdlib mini
generate` rewrites damaged mini-NSD files, `nsdlib fetch nsd` fetches NSD again); a damaged
cache entry is computed again, never reused; no loader unpickles; one chain at a time holds a
run directory; an interrupted run resumes with the same command.

"""


def render(rows: list[dict]) -> str:
    """The page: its introduction and the table of rows (deterministic: same rows, same bytes)."""
    lines = ["| Fault | Injected | What nsdlib gives | Test |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['how']} | {r['gives']} | `{r['test']}` |")
    return _INTRO + "\n".join(lines) + "\n"


def write_if_complete(tests: dict[str, str]) -> bool:
    """Write the JSON and the rendered table when every row was proved; return whether it did."""
    if set(_PROVED) != set(FAULTS):
        return False
    rows = [{"id": k, "what": w, "how": h, "gives": g, "test": tests.get(k, ""), "status": "verified"}
            for k, (w, h, g) in FAULTS.items()]
    JSON_PATH.write_text(json.dumps({"generated_by": "pytest tests/faults", "rows": rows}, indent=1) + "\n")
    PAGE_PATH.write_text(render(rows))
    return True
