"""nsdlib.report.rendering: an executed chapter prepared for the HTML book (parameters once, finished
progress bars, no kernel-only widgets, a cost note), MathJax served from the book, launch links."""

from __future__ import annotations

import copy

import pytest

from nsdlib.report import rendering as R

DECLARED = ('dataset = "mini"  # "mini" (simulated) or "nsd"\n'
            "subject = 1  # 1, 2, 5 or 7\n"
            "seed = 0\n"
            "extra = {\n"
            "    'a': 1,\n"
            "}  # a value over several lines\n"
            "quick = False  # a small variant # with a second hash")
INJECTED = '# Parameters\ndataset = "nsd"\nsubject = 7\nextra = {"a": 2}\nquick = False\nworkdir = "/w"\n'


def _code(source, tags=(), outputs=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": list(outputs),
            "execution_count": 1}


def _bar(mid: str, left: str, value: float, maximum: float, right: str, layout: dict | None = None) -> dict:
    """The widget state tqdm.notebook leaves: an HBox of HTML, FloatProgress, HTML (plus a layout)."""
    kids = {f"{mid}l": ("HTMLModel", {"value": left}),
            f"{mid}p": ("FloatProgressModel", {"value": value, "max": maximum, "bar_style": "success"}),
            f"{mid}r": ("HTMLModel", {"value": right})}
    state = {k: {"model_name": n, "state": s} for k, (n, s) in kids.items()}
    state[f"{mid}lay"] = {"model_name": "LayoutModel", "state": layout or {}}
    state[mid] = {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_{k}" for k in kids],
                                                        "layout": f"IPY_MODEL_{mid}lay"}}
    return state


def _view(mid: str, plain: str) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {R.WIDGET_VIEW: {"model_id": mid, "version_major": 2, "version_minor": 0}, "text/plain": plain}}


@pytest.fixture
def nb():
    state = {**_bar("aa", "stage 2:\u2007100%", 100.0, 100.0, "\u2007100/100\u2007[01:02&lt;00:00,\u20071.6img/s]"),
             **_bar("bb", "GLM:\u2007\u200740%", 2.0, 5.0, "\u20072/5\u2007[00:03&lt;00:04]"),
             # tqdm(leave=False) on closing: the value reaches the end, the throttled text does not,
             # and the box hides itself (as nbclient saved it from a real run)
             **_bar("hh", "pixel metrics:\u200786%", 7.0, 7.0, "\u20076/7\u2007[00:01&lt;00:00]",
                    {"visibility": "hidden"}),
             "ee": {"model_name": "IntSliderModel", "state": {"value": 0}}}
    return {"metadata": {"widgets": {R.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}},
                         "needs": "CPU; mini-NSD"},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Chapter\n\nWhat?"},
                      _code(DECLARED, ["parameters"]),
                      _code(INJECTED, ["injected-parameters"]),
                      _code("run()", outputs=[_view("aa", "stage 2:   0%|   | 0/100"), _view("hh", "pixel"),
                                              _view("bb", "GLM: 0%"),
                                              {"output_type": "stream", "name": "stdout",
                                               "text": "a  10%\r a  50%\r a 100%\nnext line\n"}]),
                      _code("explorer()", outputs=[_view("ee", "IntSlider(value=0)")])]}


def test_parameters_are_shown_once_with_the_run_values_and_their_meaning(nb):
    assert R.merge_parameters(nb) is True
    tags = [c["metadata"].get("tags") for c in nb["cells"]]
    assert ["injected-parameters"] not in tags and tags.count(["parameters"]) == 1
    lines = nb["cells"][1]["source"].splitlines()
    assert lines == [R.PARAMETERS_CAPTION,
                     'dataset = "nsd"  # "mini" (simulated) or "nsd"',
                     "subject = 7  # 1, 2, 5 or 7",
                     "seed = 0",
                     'extra = {"a": 2}  # a value over several lines',
                     "quick = False  # a small variant # with a second hash",
                     'workdir = "/w"  # set by the run']
    assert R.merge_parameters(nb) is False  # nothing injected any more: nothing to do


def test_an_injected_cell_without_a_declared_one_is_captioned():
    book = {"metadata": {}, "cells": [_code(INJECTED, ["injected-parameters"])]}
    assert R.merge_parameters(book)
    assert book["cells"][0]["source"].splitlines()[0] == R.PARAMETERS_CAPTION
    assert book["cells"][0]["metadata"]["tags"] == ["parameters"]


def test_progress_bars_read_their_final_state(nb):
    assert R.finish_progress(nb) == 3
    outs = nb["cells"][3]["outputs"]
    assert len(outs) == 3 and "pixel metrics" not in repr(outs), "a bar that hid itself when done is not shown"
    assert outs[0] == {"output_type": "stream", "name": "stdout",
                       "text": "stage 2: 100% 100/100 [01:02<00:00, 1.6img/s]\n"}
    assert outs[1]["text"] == "GLM:  40% 2/5 [00:03<00:04]\n", "a bar left short says how far it went"
    assert outs[2]["text"] == " a 100%\nnext line\n", "a text bar keeps its last update"
    state = nb["metadata"]["widgets"][R.WIDGET_STATE]["state"]
    assert set(state) == {"ee"}, f"only the slider's state should be left; found {sorted(state)}"
    assert R.WIDGET_VIEW in nb["cells"][4]["outputs"][0]["data"], "a widget that is not a bar is not a bar"


def test_kernel_only_widgets_become_a_note(nb):
    R.finish_progress(nb)
    assert R.kernel_only_outputs(nb, "needs a kernel") == 1
    out = nb["cells"][4]["outputs"][0]
    assert out["data"] == {"text/markdown": "needs a kernel", "text/plain": "needs a kernel"}
    assert "widgets" not in nb["metadata"]


def test_cost_header_follows_the_title():
    book = {"metadata": {}, "cells": [_code("x"), {"cell_type": "markdown", "metadata": {}, "source": "# T"},
                                      {"cell_type": "markdown", "metadata": {}, "source": "text"}]}
    text = R.cost_header(book, 190.4, "GPU; VD weights", machine="2 CPU cores")
    assert text.startswith("**Run time:** 3 min 10 s in the run shown here (2 CPU cores;")
    assert "**Needs:** GPU; VD weights" in text
    assert book["cells"][2]["metadata"]["tags"] == ["chapter-cost"] and text in book["cells"][2]["source"]
    assert "not recorded" in R.cost_header(copy.deepcopy(book), None, None)
    long = {"metadata": {}, "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# T\n\nIntro.\n\n| a |"}]}
    R.cost_header(long, 5, None)
    assert [c["source"] for c in long["cells"]][0::2] == ["# T", "Intro.\n\n| a |"], "the note follows the title line"
    assert long["cells"][1]["metadata"]["tags"] == ["chapter-cost"]


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59.6, "1 min 00 s"), (190, "3 min 10 s"),
                                            (3725, "1 h 02 min")])
def test_format_seconds(seconds, text):
    assert R.format_seconds(seconds) == text


def test_prepare_for_book_does_all_of_it(nb):
    counts = R.prepare_for_book(nb, seconds=12, machine="2 CPU cores")
    assert counts == {"parameters": 1, "progress": 3, "widgets": 1}
    assert "**Needs:** CPU; mini-NSD" in nb["cells"][1]["source"]
    assert not any(R.WIDGET_VIEW in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_mathjax_is_copied_from_the_installed_package(tmp_path, monkeypatch):
    src = tmp_path / "mj"
    (src / "output/chtml/fonts/woff-v2").mkdir(parents=True)
    (src / "input/tex/extensions").mkdir(parents=True)
    (src / "tex-chtml.js").write_text("// mathjax")
    (src / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").write_bytes(b"font")
    (src / "input/tex/extensions/color.js").write_text("// color")
    (src / "tex-svg-full.js").write_text("// not used by the book")
    monkeypatch.setattr(R, "mathjax_source", lambda: src)
    out = R.copy_mathjax(tmp_path / "_static")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "input/tex/extensions/color.js", "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff", "tex-chtml.js"]


def test_a_missing_mathjax_package_names_the_install(monkeypatch):
    monkeypatch.setattr(R, "MATHJAX_DIST", "no-such-mathjax-package")
    with pytest.raises(FileNotFoundError, match="'no-such-mathjax-package' package, which is not installed; "
                                                "run `make env`"):
        R.mathjax_source()


def test_launch_links_open_the_chapter_source():
    buttons = [{"type": "group", "buttons": [
        {"url": "https://hub/hub/user-redirect/git-pull?repo=r&urlpath=lab/tree/r/notebooks/05_x.ipynb"},
        {"url": "https://hub/other/notebooks/06_y.ipynb"}]}, {"label": "no url"},
               {"url": "../_sources/notebooks/05_x.ipynb"}]
    assert R.launch_to_source(buttons, "notebooks/05_x") == 1
    assert buttons[0]["buttons"][0]["url"].endswith("urlpath=lab/tree/r/notebooks/05_x.md")
    assert buttons[0]["buttons"][1]["url"].endswith("06_y.ipynb")
    assert buttons[2]["url"] == "../_sources/notebooks/05_x.ipynb", "the download link is the executed notebook"


def test_repeated_scripts_are_left_out():
    class JS:  # Sphinx's _JavaScript: a file name (None or "" for an inline script) and attributes
        def __init__(self, filename, **attributes):
            self.filename, self.attributes = filename, attributes

    scripts = [JS(None, body="const A = 1"), JS("a.js"), JS("", body="const A = 1"), JS(None, body="const B = 2"),
               JS("a.js", **{"async": "async"})]
    assert R.unique_scripts(scripts) == [scripts[0], scripts[1], scripts[3], scripts[4]]
