"""nsdlib.bookcheck: the checks of `make check-book`, each on a small page made to fail it (and one
made to pass); the browser checks run where Debian's Chromium is installed."""

from __future__ import annotations

import types

import numpy as np
import pytest

from nsdlib import bookcheck as B
from nsdlib.report import rendering
from nsdlib.report.explorer import static_explorer

HEAD = "<!DOCTYPE html><html><head><title>t</title></head><body>"
FOOT = "</body></html>"


def _book(tmp_path, pages: dict) -> tuple:
    root = tmp_path / "html"
    (root / "notebooks").mkdir(parents=True)
    (root / "index.html").write_text(HEAD + '<a href="notebooks/a.html#sec">a</a>' + FOOT)
    for name, body in pages.items():
        (root / name).write_text(HEAD + body + FOOT)
    return root


def _problems(root, name):
    return [p.what for p in B.check_html(root / name, root)]


def test_a_clean_page_passes(tmp_path):
    root = _book(tmp_path, {"notebooks/a.html": '<section id="sec"><a href="../index.html">home</a>'
                                                '<div class="cell tag_parameters"><pre>x = 1  # one\ny = 2</pre>'
                                                '<pre>stage 2: 100% 100/100 [01:02&lt;00:00]</pre></div>'})
    assert _problems(root, "notebooks/a.html") == [] and _problems(root, "index.html") == []


def test_broken_links_and_network_assets_are_found(tmp_path):
    root = _book(tmp_path, {"notebooks/a.html": '<a href="missing.html">x</a><a href="../index.html#nowhere">y</a>'
                                                '<img src="../_images/gone.png">'
                                                '<script src="https://cdn.example.org/mathjax.js"></script>'
                                                '<a href="https://example.org/">an outside link is fine</a>'})
    found = _problems(root, "notebooks/a.html")
    assert len(found) == 4, found
    assert "broken link 'missing.html'" in found[0] and "no id 'nowhere' in index.html" in found[1]
    assert "gone.png" in found[2] and "loads https://cdn.example.org/mathjax.js from the network" in found[3]


def test_parameters_shown_twice_are_found(tmp_path):
    cell = '<div class="cell tag_parameters"><pre>seed = 0\nseed = 1</pre></div>'
    root = _book(tmp_path, {"notebooks/a.html": cell + '<div class="cell tag_injected-parameters"><pre>'
                                                       'seed = 1</pre></div>' + cell})
    found = _problems(root, "notebooks/a.html")
    assert found[0].startswith("papermill's injected parameters cell is shown")
    assert found[1] == "2 parameters cells (one expected)"
    assert found[2] == "parameters shown twice in the parameters cell: seed"


@pytest.mark.parametrize("output, what", [
    ("<pre>GLM:  40%|####      | 2/5 [00:03&lt;00:04]</pre>", "a progress bar stuck at 2/5"),
    ("<pre>Loading weights:   0%|          |</pre>", "a progress bar stuck at 0%"),
    ('<script type="application/vnd.jupyter.widget-view+json">{"model_id": "x"}</script>', "a notebook widget"),
])
def test_frozen_progress_bars_are_found(tmp_path, output, what):
    root = _book(tmp_path, {"notebooks/a.html": output})
    found = _problems(root, "notebooks/a.html")
    assert found and found[0].startswith(what), found


def test_check_book_needs_a_built_book(tmp_path):
    found = B.check_book(tmp_path, browser=False)
    assert [p.what for p in found] == ["no index.html: build the book first (`make book`)"]


def test_main_exits_1_on_a_problem_and_0_on_a_clean_book(tmp_path, capsys):
    root = _book(tmp_path, {"notebooks/a.html": '<span id="sec"></span>'})
    assert B.main([str(root), "--no-browser"]) == 0
    assert "check-book: 2 pages, 0 problems" in capsys.readouterr().out
    (root / "notebooks" / "b.html").write_text(HEAD + '<a href="c.html">x</a>' + FOOT)
    assert B.main([str(root), "--no-browser"]) == 1
    assert "notebooks/b.html: broken link 'c.html'" in capsys.readouterr().out


# ------------------------------------------------------------------ in Chromium, offline
chromium = pytest.mark.skipif(B.find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


def _explorer_data(n=5):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    rep = types.SimpleNamespace(per_image={"ssim": rng.random(n)}, means={"ssim": 0.5}, status={"ssim": "ok"},
                                sources={"ssim": "test"})
    level = {"first_guess": imgs[::-1].copy(), "final": np.roll(imgs, 1, axis=0), "report": rep}
    return {"stimuli": imgs, "ids": np.arange(n), "levels": ["none", "64"], "none": level, "64": level}


@chromium
def test_the_static_explorer_steps_in_a_browser_offline(tmp_path):
    root = _book(tmp_path, {"notebooks/a.html": '<span id="sec"></span>' + static_explorer(_explorer_data())})
    shots = tmp_path / "shots"
    assert B.check_in_browser(root / "notebooks" / "a.html", root, B.find_chromium(), shots=shots) == []
    assert (shots / "explorer_image1.png").stat().st_size > 1000
    assert (shots / "explorer_image4_level2.png").stat().st_size > 1000


@chromium
def test_a_dead_explorer_and_a_javascript_error_are_found(tmp_path):
    page = static_explorer(_explorer_data())
    page = page[:page.rindex("<script>")] + "</div>"  # the explorer without its script
    root = _book(tmp_path, {"notebooks/a.html": page + "<script>undefinedFunction();</script>"})
    found = [p.what for p in B.check_in_browser(root / "notebooks" / "a.html", root, B.find_chromium())]
    assert any("undefinedFunction is not defined" in f for f in found), found
    assert any("drew nothing on load" in f for f in found), found


@chromium
def test_maths_without_local_mathjax_is_found(tmp_path):
    root = _book(tmp_path, {"notebooks/a.html": '<span class="math notranslate nohighlight">\\(x^2\\)</span>'})
    found = [p.what for p in B.check_in_browser(root / "notebooks" / "a.html", root, B.find_chromium())]
    assert found == ["1 of 1 equations not typeset offline (raw TeX shown; is MathJax served from _static/mathjax?)"]


@chromium
def test_maths_with_the_book_mathjax_renders_offline(tmp_path):
    try:
        rendering.mathjax_source()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    root = _book(tmp_path, {"notebooks/a.html": '<span class="math notranslate nohighlight">\\(x^2\\)</span>'
                                                '<div class="math notranslate nohighlight">\\[\\beta = 1\\]</div>'
                                                '<script src="../_static/mathjax/tex-chtml.js"></script>'})
    rendering.copy_mathjax(root / "_static")
    assert B.check_in_browser(root / "notebooks" / "a.html", root, B.find_chromium()) == []
