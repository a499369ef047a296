"""The explorers of chapter 10: one test image at a time, at each noise level, with its scores.

:func:`explorer_view` draws one view (a figure and a table); :func:`explorer` wraps it in
ipywidgets (a slider over test images, a noise-level menu), for readers with a kernel.
:func:`static_explorer` writes the same browsing as one self-contained piece of HTML and
JavaScript (thumbnails embedded, no kernel, no network), which the rendered book shows. What
they show is gathered by ``nsdlib.pipeline.evaluation.explorer_data``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math

import numpy as np
import pandas as pd
from PIL import Image

from .. import noise as N
from ..names import METRIC_LABELS, NOISE_LABELS
from .figures import image_grid
from .tables import styled

__all__ = ["explorer", "explorer_view", "static_explorer", "thumbnail_uri"]


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


# ------------------------------------------------------------------ the explorer without a kernel
def thumbnail_uri(image: np.ndarray, size: int = 96, quality: int = 85) -> str:
    """A ``data:image/jpeg`` URI of one uint8 image, shrunk to at most ``size`` pixels a side.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 (0-255)
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"a thumbnail needs a uint8 image of shape (H, W, 3); found {img.dtype} {img.shape}")
    pil = Image.fromarray(img)
    if max(pil.size) > size:
        pil = pil.resize((size, size * pil.size[1] // pil.size[0]), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _number(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 4)


def _explorer_payload(data: dict, extra: dict | None, size: int) -> dict:
    """The JSON the static explorer reads: images as thumbnails, scores per level."""
    n = len(data["stimuli"])
    extra = extra or {}
    for name, imgs in extra.items():
        if len(imgs) != n:
            raise ValueError(f"extra column {name!r} has {len(imgs)} images; the explorer has {n} test images")
    fixed = {"stimulus": data["stimuli"], **extra}
    levels = []
    for lab in data["levels"]:
        d, rep = data[lab], data[lab]["report"]
        keys = list(rep.per_image)
        levels.append({
            "key": lab, "label": NOISE_LABELS.get(lab, lab),
            "first_guess": [thumbnail_uri(x, size) for x in d["first_guess"]],
            "final": [thumbnail_uri(x, size) for x in d["final"]],
            "metrics": [METRIC_LABELS.get(m, m) for m in keys],
            "sources": [rep.sources[m] for m in keys],
            "means": [_number(rep.means[m]) for m in keys],
            "scores": [[_number(rep.per_image[m][k]) if rep.status[m] == "ok" else None for m in keys]
                       for k in range(n)]})
    return {"n": n, "ids": [int(i) for i in data["ids"]],
            "fixed": {k: [thumbnail_uri(x, size) for x in v] for k, v in fixed.items()}, "levels": levels}


_EXPLORER_JS = r"""
(function () {
  var root = document.getElementById("%(id)s");
  var P = JSON.parse(root.querySelector("script.nsd-explorer-data").textContent);
  var slider = root.querySelector("input.nsd-image"), menu = root.querySelector("select.nsd-level");
  var state = {k: 0, level: 0};
  var m = /nsd-explorer=(\d+)(?:,(\d+))?/.exec(window.location.hash);
  if (m) { state.k = Math.min(P.n - 1, +m[1]); state.level = Math.min(P.levels.length - 1, +(m[2] || 0)); }
  function set(name, src) { root.querySelector("img[data-col='" + name + "']").src = src; }
  function fmt(x) { return x === null ? "n/a" : x.toFixed(3); }
  function draw() {
    var k = state.k, L = P.levels[state.level];
    slider.value = k; menu.value = state.level;
    Object.keys(P.fixed).forEach(function (c) { set(c, P.fixed[c][k]); });
    set("first guess", L.first_guess[k]); set("stage 2", L.final[k]);
    root.querySelector(".nsd-caption").textContent = "test image " + (k + 1) + " of " + P.n +
      " (NSD id " + P.ids[k] + "), " + L.label;
    root.querySelector("th.nsd-fg").textContent = state.level ? "first guess + noise " + L.key : "first guess";
    var rows = L.metrics.map(function (name, j) {
      return "<tr><td>" + name + "</td><td>" + fmt(L.scores[k][j]) + "</td><td>" + fmt(L.means[j]) +
        "</td><td class='nsd-src'>" + L.sources[j] + "</td></tr>"; });
    root.querySelector("tbody.nsd-scores").innerHTML = rows.join("");
    root.querySelectorAll(".nsd-strip img").forEach(function (im, i) { im.classList.toggle("nsd-on", i === k); });
    root.dataset.shown = k + "," + state.level;
  }
  function go(k) { state.k = (k + P.n) %% P.n; draw(); }
  slider.addEventListener("input", function () { go(+slider.value); });
  menu.addEventListener("change", function () { state.level = +menu.value; draw(); });
  root.querySelector("button.nsd-prev").addEventListener("click", function () { go(state.k - 1); });
  root.querySelector("button.nsd-next").addEventListener("click", function () { go(state.k + 1); });
  var strip = root.querySelector(".nsd-strip");
  P.fixed.stimulus.forEach(function (src, i) {
    var im = document.createElement("img"); im.src = src; im.alt = "test image " + (i + 1);
    im.title = "test image " + (i + 1); im.addEventListener("click", function () { go(i); });
    strip.appendChild(im); });
  draw();
})();
"""

_EXPLORER_CSS = """
#%(id)s .nsd-row { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin: 4px 0; }
#%(id)s table.nsd-images td { text-align: center; padding: 2px 6px; }
#%(id)s table.nsd-images img { width: 128px; height: 128px; image-rendering: pixelated; }
#%(id)s .nsd-strip { display: flex; flex-wrap: wrap; gap: 2px; max-height: 110px; overflow-y: auto; }
#%(id)s .nsd-strip img { width: 32px; height: 32px; cursor: pointer; opacity: 0.6; }
#%(id)s .nsd-strip img.nsd-on { opacity: 1; outline: 2px solid #d33; }
#%(id)s table.nsd-table { font-size: 0.85em; }
#%(id)s td.nsd-src { color: #666; font-size: 0.85em; }
"""


def static_explorer(data: dict, extra: dict | None = None, *, title: str = "", size: int = 96,
                    element_id: str = "nsd-explorer") -> str:
    """The explorer as self-contained HTML and JavaScript: no kernel, no network.

    A slider, previous/next buttons and a strip of thumbnails step through the test images; a
    menu picks the noise level added to the first guess. Each view shows the stimulus, the
    ``extra`` columns (e.g. the first guesses from 15 and 31 blocks), the first guess at that
    noise level and stage 2, with the image's scores beside the run's means. Every image is an
    embedded JPEG thumbnail (at most ``size`` pixels a side); a page may open on image ``k`` at
    level ``j`` with the address fragment ``#nsd-explorer=k,j``. The root element's
    ``data-shown`` attribute says which view is drawn (``"k,j"``), for the book's checks.

    Parameters
    ----------
    data : dict
        ``nsdlib.pipeline.evaluation.explorer_data``.
    extra : dict, optional
        Column name -> uint8 images of shape (n_images, H, W, 3), aligned with ``data["stimuli"]``.
    title : str
        Where the numbers come from (dataset, subject, models).

    Returns
    -------
    str
        HTML, to be displayed with ``IPython.display.HTML``.
    """
    payload = _explorer_payload(data, extra, size)
    fixed_cols = list(payload["fixed"])
    cols = [*fixed_cols, "first guess", "stage 2"]
    fg_class = ' class="nsd-fg"'
    heads = "".join(f"<th{fg_class if c == 'first guess' else ''}>{html.escape(c)}</th>" for c in cols)
    cells = "".join(f"<td><img data-col=\"{html.escape(c)}\" alt=\"{html.escape(c)}\"></td>" for c in cols)
    options = "".join(f"<option value=\"{j}\">{html.escape(L['label'])}</option>"
                      for j, L in enumerate(payload["levels"]))
    blob = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    ids = {"id": element_id}
    return (
        f"<style>{_EXPLORER_CSS % ids}</style>"
        f"<div id=\"{element_id}\" class=\"nsd-explorer\" data-shown=\"\">"
        f"<p><b>{html.escape(title)}</b></p>"
        f"<div class=\"nsd-row\"><button class=\"nsd-prev\" type=\"button\">&larr; previous</button>"
        f"<input class=\"nsd-image\" type=\"range\" min=\"0\" max=\"{payload['n'] - 1}\" value=\"0\" "
        f"aria-label=\"test image\"><button class=\"nsd-next\" type=\"button\">next &rarr;</button>"
        f"<select class=\"nsd-level\" aria-label=\"noise level\">{options}</select>"
        f"<span class=\"nsd-caption\"></span></div>"
        f"<table class=\"nsd-images\"><thead><tr>{heads}</tr></thead><tbody><tr>{cells}</tr></tbody></table>"
        f"<table class=\"nsd-table\"><thead><tr><th>metric</th><th>this image</th><th>mean over images</th>"
        f"<th>computed with</th></tr></thead><tbody class=\"nsd-scores\"></tbody></table>"
        f"<div class=\"nsd-strip\"></div>"
        f"<script type=\"application/json\" class=\"nsd-explorer-data\">{blob}</script>"
        f"<script>{_EXPLORER_JS % ids}</script></div>")
