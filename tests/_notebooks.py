"""Tiny MyST chapters for tests of the runner and of batches: the real chapters' front matter
and `parameters` cell, followed by code cells of the test's choosing.
"""

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
