"""How an executed chapter reads in the rendered book: finished, offline, without a kernel.

An executed notebook (papermill's output) is prepared for the HTML book by
:func:`prepare_for_book`, which the runner applies to a copy of each chapter before Jupyter
Book renders it:

- :func:`merge_parameters`: the chapter's ``parameters`` cell and the cell papermill injected
  after it become one cell, with the values the run used and the meaning of each;
- :func:`finish_progress`: tqdm's notebook widgets, saved without a live kernel, become the
  text of their final state ("stage 2: 100% | 100/100 [01:02<00:00]"), read from the widget
  state that the executor stored; carriage-return updates of text bars keep their last line;
- :func:`kernel_only_outputs`: any other widget (a live explorer) becomes a short note, since
  it needs a kernel;
- :func:`cost_header`: a line under the chapter's title saying how long it ran in this build
  and what it needs.

It is also a Sphinx extension (``setup``): MathJax is served from the built book
(``_static/mathjax``), copied from the MathJax 3 files that the ``sphinx-mathjax-offline``
package installs, so equations render with no network.
"""

from __future__ import annotations

import ast
import html
import re
import shutil
from importlib import metadata
from pathlib import Path

__all__ = [
    "cost_header",
    "finish_progress",
    "format_seconds",
    "kernel_only_outputs",
    "launch_to_source",
    "mathjax_source",
    "merge_parameters",
    "prepare_for_book",
    "setup",
    "unique_scripts",
]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PARAMETERS_CAPTION = "# The values this run used (the defaults where it set none)"
MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_SCRIPT = "mathjax/tex-chtml.js"
# what tex-chtml.js loads at run time: its fonts and the TeX extensions it may autoload
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _tagged(nb: dict, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb["cells"]) if tag in (c.get("metadata", {}).get("tags") or [])]


def _assignments(source: str) -> dict[str, tuple[int, int, str]]:
    """``name -> (first line, last line, value's source)`` for each top-level ``name = value``."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = ast.get_source_segment(source, node.value) or ast.unparse(node.value)
            out[node.targets[0].id] = (node.lineno - 1, node.end_lineno - 1, value)
    return out


def _comment(line: str, value_end: int) -> str:
    """The ``# ...`` comment after a value ending at column ``value_end`` of ``line``, or ""."""
    rest = line[value_end:]
    at = rest.find("#")
    return rest[at:].strip() if at >= 0 else ""


def merge_parameters(nb: dict) -> bool:
    """Merge the injected parameters cell into the chapter's ``parameters`` cell, in place.

    Each parameter appears once: its line of the chapter's cell, with the value the run used
    in place of the default and the default's comment (its meaning) kept; parameters the run
    injected that the chapter does not declare follow. The cell gets a caption comment, keeps
    its ``parameters`` tag and its outputs; the injected cell is removed.

    Parameters
    ----------
    nb : dict
        An executed notebook (nbformat 4, as JSON); cells tagged ``parameters`` and
        ``injected-parameters``.

    Returns
    -------
    bool
        Whether a merge was made (False when the notebook has no injected cell).
    """
    injected, declared = _tagged(nb, "injected-parameters"), _tagged(nb, "parameters")
    if not injected:
        return False
    run_values = {k: v[2] for k, v in _assignments(_text(nb["cells"][injected[0]]["source"])).items()}
    if not declared:  # no chapter cell: the injected one is the only one; caption it
        cell = nb["cells"][injected[0]]
        body = [f"{k} = {v}" for k, v in run_values.items()]
        cell["source"] = "\n".join([PARAMETERS_CAPTION, *body])
        cell["metadata"]["tags"] = ["parameters"]
        return True
    cell = nb["cells"][declared[0]]
    source = _text(cell["source"])
    lines = source.splitlines()
    tree = {n.targets[0].id: n for n in ast.parse(source).body
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
    merged, done, skip_to = [PARAMETERS_CAPTION], set(), -1
    for i, line in enumerate(lines):
        if i <= skip_to:
            continue
        node = next((n for n in tree.values() if n.lineno - 1 == i), None)
        if node is None or node.targets[0].id not in run_values:
            merged.append(line)
            continue
        name = node.targets[0].id
        comment = _comment(lines[node.end_lineno - 1], node.value.end_col_offset)
        merged.append(f"{name} = {run_values[name]}" + (f"  {comment}" if comment else ""))
        done.add(name)
        skip_to = node.end_lineno - 1
    merged += [f"{k} = {v}  # set by the run" for k, v in run_values.items() if k not in done]
    cell["source"] = "\n".join(merged)
    del nb["cells"][injected[0]]
    return True


def _plain(value: str) -> str:
    """tqdm's HTML text (escaped, figure spaces) as plain text."""
    return html.unescape(value).replace("\u2007", " ").replace("\xa0", " ").strip()


def _model(state: dict, ref) -> dict:
    """The model an ``IPY_MODEL_<id>`` reference names, or ``{}``."""
    return state.get(str(ref).removeprefix("IPY_MODEL_"), {})


def _bar_text(state: dict, model_id: str) -> str | None:
    """The final text of a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML), or None.

    ``""`` for a bar that hid itself when it finished (tqdm's ``leave=False``): its text
    fields keep the last *throttled* update (often below 100 %), and the live notebook shows
    nothing, so neither does the page.
    """
    box = state.get(model_id)
    if not box or box.get("model_name") != "HBoxModel":
        return None
    kids = [_model(state, k) for k in box["state"].get("children", [])]
    if len(kids) != 3 or kids[1].get("model_name") not in ("FloatProgressModel", "IntProgressModel"):
        return None
    if _model(state, box["state"].get("layout")).get("state", {}).get("visibility") == "hidden":
        return ""
    left = _plain(kids[0]["state"].get("value", ""))
    right = _plain(kids[2]["state"].get("value", ""))
    bar = kids[1]["state"]
    if not right:  # no counter text (a bar without total): say how far it went
        right = f"{bar.get('value', 0):g}/{bar.get('max', 0):g}"
    return f"{left} {right}".strip()


def _widget_children(state: dict, model_id: str) -> set[str]:
    """``model_id`` and every model it refers to (children, layout, style), transitively."""
    seen, todo = set(), [model_id]
    while todo:
        mid = todo.pop()
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        refs = re.findall(r"IPY_MODEL_([^'\"\s,\]]+)", repr(state[mid].get("state", {})))
        todo.extend(refs)
    return seen


def finish_progress(nb: dict) -> int:
    """Replace tqdm's notebook widgets by the text of their final state, in place.

    A text bar's stream output, updated with carriage returns, keeps each line's last update.
    The widget state of the replaced bars is dropped from the notebook's metadata (all of it
    when nothing else uses it), so the page loads no widget machinery for them.

    Returns
    -------
    int
        The number of widget bars replaced.
    """
    widgets = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {})
    state = widgets.get("state", {})
    replaced, dropped = 0, set()
    for cell in nb["cells"]:
        outputs = cell.get("outputs", [])
        hidden = []
        for j, out in enumerate(outputs):
            if out.get("output_type") == "stream" and "\r" in _text(out.get("text", "")):
                text = _text(out["text"])
                out["text"] = "\n".join(seg.rsplit("\r", 1)[-1] if seg.rstrip("\r") else ""
                                        for seg in (s.rstrip("\r") for s in text.split("\n")))
                continue
            view = out.get("data", {}).get(WIDGET_VIEW)
            if not view:
                continue
            text = _bar_text(state, view.get("model_id", ""))
            if text is None:
                continue
            if text:
                outputs[j] = {"output_type": "stream", "name": "stdout", "text": text + "\n"}
            else:
                hidden.append(j)
            dropped |= _widget_children(state, view["model_id"])
            replaced += 1
        for j in reversed(hidden):
            del outputs[j]
    for mid in dropped:
        state.pop(mid, None)
    if widgets and not state:
        del nb["metadata"]["widgets"]
    return replaced


def kernel_only_outputs(nb: dict, note: str) -> int:
    """Replace every widget still in the notebook (a live control) by ``note``, in place.

    Returns
    -------
    int
        The number of outputs replaced.
    """
    n = 0
    for cell in nb["cells"]:
        for j, out in enumerate(cell.get("outputs", [])):
            if WIDGET_VIEW in out.get("data", {}):
                cell["outputs"][j] = {"output_type": "display_data", "metadata": {},
                                      "data": {"text/markdown": note, "text/plain": note}}
                n += 1
    if n:
        nb.get("metadata", {}).pop("widgets", None)
    return n


def format_seconds(seconds: float) -> str:
    """``"3 min 10 s"``, ``"42 s"``, ``"1 h 02 min"``."""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def cost_header(nb: dict, seconds: float | None, needs: str | None, *, machine: str = "") -> str:
    """Insert, after the chapter's title, a note of what the chapter cost in this build and needs.

    Parameters
    ----------
    nb : dict
        The executed notebook; its first markdown cell holds the title.
    seconds : float or None
        Wall time of the chapter's execution in the run that rendered it (the runner's
        timing); None: not known.
    needs : str or None
        What it needs (device, memory, assets), from the chapter's ``needs`` metadata.
    machine : str
        Where it ran, e.g. ``"2 CPU cores"``.

    Returns
    -------
    str
        The note's text.
    """
    parts = []
    if seconds is not None:
        where = f"{machine}; " if machine else ""
        parts.append(f"**Run time:** {format_seconds(seconds)} in the run shown here ({where}artifacts cached "
                     "by earlier runs, if any, were reused)")
    if needs:
        parts.append(f"**Needs:** {needs}")
    text = "\n\n".join(parts) or "**Run time:** not recorded for the run shown here"
    note = {"cell_type": "markdown", "id": "chapter-cost", "metadata": {"tags": ["chapter-cost"]},
            "source": f":::{{note}}\n{text}\n:::"}
    first = next((i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"), -1)
    if first >= 0:  # the note goes right under the title line, before the rest of that cell
        title, _, rest = _text(nb["cells"][first]["source"]).partition("\n")
        if title.startswith("# ") and rest.strip():
            nb["cells"][first]["source"] = title
            nb["cells"].insert(first + 1, {"cell_type": "markdown", "id": "chapter-intro", "metadata": {},
                                           "source": rest.strip("\n")})
    nb["cells"].insert(first + 1, note)
    return text


KERNEL_NOTE = ("*This control needs a running Python kernel (open the notebook on a JupyterHub); "
               "the static explorer on this page works without one.*")


def prepare_for_book(nb: dict, *, seconds: float | None = None, machine: str = "") -> dict:
    """All of the above, in place: what the book shows of one executed chapter.

    ``nb["metadata"]["needs"]`` (the chapter's front matter) says what it needs.

    Returns
    -------
    dict
        Counts: ``{"parameters": 0 or 1, "progress": n, "widgets": n}``.
    """
    counts = {"parameters": int(merge_parameters(nb)), "progress": finish_progress(nb),
              "widgets": kernel_only_outputs(nb, KERNEL_NOTE)}
    cost_header(nb, seconds, nb.get("metadata", {}).get("needs"), machine=machine)
    return counts


# ----------------------------------------------------------------------- MathJax, as a Sphinx hook
def mathjax_source() -> Path:
    """The folder of MathJax 3 files installed by the ``sphinx-mathjax-offline`` package.

    Raises
    ------
    FileNotFoundError
        When the package is not installed (``make env`` installs it from requirements.txt).
    """
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the book serves MathJax from the {MATHJAX_DIST!r} package, which is not "
                                "installed; run `make env` (requirements.txt lists it)") from None
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (folder / "tex-chtml.js").exists():
        raise FileNotFoundError(f"{MATHJAX_DIST} is installed but {folder / 'tex-chtml.js'} is missing")
    return folder


def copy_mathjax(static_dir: Path) -> Path:
    """Copy the parts of MathJax the book uses into ``static_dir/mathjax``; returns that folder."""
    src, dst = mathjax_source(), Path(static_dir) / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)
    return dst


def _use_local_mathjax(app, config) -> None:
    mathjax_source()  # fail early, with the install command, when MathJax is not there
    config.mathjax_path = MATHJAX_SCRIPT


def _copy_mathjax(app, exc) -> None:
    if exc is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static")


def launch_to_source(buttons, pagename: str, suffix: str = ".md") -> int:
    """Point launch links at the chapter's source in the repository, in place.

    The book renders executed copies (``notebooks/NN_name.ipynb``) that the repository does not
    hold; the repository holds ``notebooks/NN_name.md`` (jupytext opens it as a notebook).

    Returns
    -------
    int
        The number of links changed.
    """
    n = 0
    items = buttons if isinstance(buttons, list) else [buttons]
    for item in items:
        if not isinstance(item, dict):
            continue
        url = item.get("url")
        launch = isinstance(url, str) and url.startswith(("http://", "https://"))  # not the download links
        if launch and f"{pagename}.ipynb" in url:
            item["url"] = url.replace(f"{pagename}.ipynb", f"{pagename}{suffix}")
            n += 1
        n += launch_to_source(item.get("buttons", []), pagename, suffix)
    return n


def unique_scripts(scripts: list) -> list:
    """The page's scripts with exact repeats left out (same file, same inline body), in order.

    sphinx-thebe, as Jupyter Book 1 loads it, registers its inline configuration twice
    (``const THEBE_JS_URL = ...``): the second copy throws a SyntaxError on every page.
    """
    seen, out = set(), []
    for js in scripts:
        name = getattr(js, "filename", js) or ""  # an inline script's filename may be None or ""
        key = (str(name), repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(context["script_files"])
    if pagename.startswith("notebooks/") and "header_buttons" in context:
        launch_to_source(context["header_buttons"], pagename)


def setup(app):
    """Sphinx extension: MathJax from the built book (no CDN); launch links to the chapters' sources."""
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _page_context, priority=510)  # after the theme's buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
