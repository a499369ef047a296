"""Tiny MyST chapters for tests of the runner and of batches: the real chapters' front matter
and `parameters` cell, followed by code cells of the test's choosing; and the notebook tests'
chain runner, which runs a chapter whose cell timed out once more."""

from nsdlib.runner import ChainResult, run_chain

FRONT = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

```{{code-cell}} ipython3
:tags: [parameters]

dataset = "mini"
subject = 1
models = "mini"
n_layers = 15
regressor = "gru"
device = "auto"
seed = 0
workdir = None
nsd_root = None
quick = False
```
"""


def cell(code: str) -> str:
    """One MyST code cell."""
    return f"\n```{{code-cell}} ipython3\n{code.strip()}\n```\n"


def chapter(title: str, setup: str, *cells: str) -> str:
    """A chapter: front matter, the parameters cell, a cell building ``cfg`` after ``setup``
    (imports), then ``cells`` (already formatted with :func:`cell` or as MyST text)."""
    build = (f"{setup.strip()}\nfrom nsdlib import RunConfig\n"
             "cfg = RunConfig(dataset=dataset, subject=subject, models=models, n_layers=n_layers, "
             "regressor=regressor,\n                device=device, seed=seed, workdir=workdir, nsd_root=nsd_root, "
             "quick=quick)")
    return FRONT.format(title=title) + cell(build) + "".join(cells)


def run_chain_once_more_after_a_timeout(cfg, *, cell_timeout: int, **kwargs) -> ChainResult:
    """:func:`nsdlib.runner.run_chain`; if a cell timed out, the chain again from that chapter, once.

    Twice in full CI runs a kernel sat idle while papermill waited for a reply that never came
    (chapter 10's widget cell): with the runner's default timeout of an hour that cost an hour,
    then a failure. With a short ``cell_timeout`` such a hang fails in minutes, and the second
    chain resumes from that chapter (the ones before it are complete, so they are not run
    again). The result lists every chapter as it ended: the first chain's done ones, then the
    second's.
    """
    first = run_chain(cfg, cell_timeout=cell_timeout, **kwargs)
    if first.failed is None or "timed out" not in (first.failed.error or ""):
        return first
    again = run_chain(cfg, cell_timeout=cell_timeout, **kwargs)
    done = [r for r in first.results if r.status == "done"]
    return ChainResult(cfg, done + [r for r in again.results if r.status != "skipped"])
