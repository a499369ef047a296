"""The widget explorer of chapter 10: one test image at a time, at each noise level, with its scores.

:func:`explorer_view` draws one view (a figure and a table); :func:`explorer` wraps it in
ipywidgets (a slider over test images, a noise-level menu). What they show is gathered by
``nsdlib.pipeline.evaluation.explorer_data``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import noise as N
from ..names import METRIC_LABELS
from .figures import image_grid
from .tables import styled

__all__ = ["explorer", "explorer_view"]


def explorer_view(data: dict, k: int, level: str = "none"):
    """One test image in the explorer: a figure (stimulus, first guess, stage 2) and its scores.

    Parameters
    ----------
    data : dict
        ``nsdlib.pipeline.evaluation.explorer_data``.
    k : int
        Position of the test image in ``data["stimuli"]``.
    level : str
        A noise level of ``data["levels"]``.

    Returns
    -------
    fig : matplotlib.figure.Figure
    scores : pandas.DataFrame
        One row per metric: this image's value, the run's mean, and what computed it.
    """
    level = N.noise_label(level)
    if level not in data["levels"]:
        raise ValueError(f"noise level {level!r} was not computed; have {', '.join(data['levels'])}")
    n = len(data["stimuli"])
    if not 0 <= k < n:
        raise ValueError(f"test image index must be in 0..{n - 1}; found {k}")
    d = data[level]
    name = "first guess" if level == "none" else f"first guess + noise {level}"
    fig = image_grid({"stimulus": data["stimuli"], name: d["first_guess"], "stage 2": d["final"]}, [k], size=2.6)
    fig.suptitle(f"test image {k + 1} of {n} (NSD id {int(data['ids'][k])})", fontsize=9, y=1.02)
    rep = d["report"]
    labels = METRIC_LABELS
    scores = pd.DataFrame({
        "this image": [rep.per_image[m][k] if rep.status[m] == "ok" else np.nan for m in rep.per_image],
        "mean over images": [rep.means[m] for m in rep.per_image],
        "computed with": [rep.sources[m] for m in rep.per_image]},
        index=[labels.get(m, m) for m in rep.per_image])
    return fig, scores


def explorer(data: dict):
    """An ipywidgets browser: a slider over test images and a noise-level menu.

    Returns
    -------
    ipywidgets.VBox
        Needs a live Python kernel; in a static page the last view stays as drawn.
    """
    import ipywidgets as widgets  # the notebook's widgets: only needed where the explorer is shown
    import matplotlib.pyplot as plt
    from IPython.display import display

    slider = widgets.IntSlider(value=0, min=0, max=len(data["stimuli"]) - 1, description="test image",
                               continuous_update=False)
    menu = widgets.Dropdown(options=data["levels"], value=data["levels"][0], description="noise")
    out = widgets.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            fig, scores = explorer_view(data, slider.value, menu.value)
            display(fig)
            plt.close(fig)
            display(styled(scores))

    slider.observe(draw, names="value")
    menu.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([slider, menu]), out])
