"""``make check-book``: read the built book as a reader would, in a real browser, offline.

Every page of ``_build/html`` is checked twice:

- in its HTML file (:func:`check_html`): internal links and assets that lead nowhere, scripts or
  styles loaded from the network, a parameters cell shown twice (or papermill's injected
  cell shown at all), a progress bar left below 100 % (a tqdm counter ``n/total [`` with
  ``n < total``, a text bar, or a notebook widget that needs a kernel);
- in headless Chromium with every host name unresolvable (:func:`check_in_browser`): the page
  loads, no uncaught JavaScript error, every equation typeset by MathJax (``mjx-container``),
  and each static explorer changes its view and images when asked for another image.

Chromium is Debian's package (``apt-get install chromium``); no browser is downloaded. Its
``--dump-dom`` gives the document after the scripts ran, ``--enable-logging=stderr`` the
console. Screenshots of a few chapters and of the explorer (before and after stepping) are
written to ``_build/check/``.

Run ``python -m nsdlib.bookcheck [_build/html]``; it prints one line per problem and exits 1
when there is any.
"""

from __future__ import annotations

import argparse
import dataclasses
import html as _html
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["Problem", "check_book", "check_html", "check_in_browser", "find_chromium", "main"]

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"
SCREENSHOT_PAGES = ("00_mini_models", "05_stage1_reconstruction", "07_versatile_diffusion", "09_evaluation")
_TAG = re.compile(r"""<(a|img|script|link|source)\b([^>]*)>""", re.I)
_URL = re.compile(r"""\s(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
_IDS = re.compile(r"""\bid\s*=\s*["']([^"']+)["']""")
_COUNTER = re.compile(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)\s*\[")
_TEXT_BAR = re.compile(r"(?<![\d.])(\d{1,2})%\|")
_MATH = re.compile(r"""<(span|div)\b[^>]*class\s*=\s*["'][^"']*\bmath\b""", re.I)
_EXPLORER = re.compile(r"""<div id="([^"]+)" class="nsd-explorer\"""")


@dataclasses.dataclass(frozen=True)
class Problem:
    page: str
    what: str

    def __str__(self) -> str:
        return f"{self.page}: {self.what}"


def _text(page_html: str) -> str:
    """The page's visible text (scripts, styles and tags dropped, entities decoded)."""
    body = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", page_html)
    return _html.unescape(re.sub(r"(?s)<[^>]+>", " ", body))


def _parameter_names(cell_html: str) -> list[str]:
    """Names assigned at the start of a line in a rendered code cell."""
    code = _html.unescape(re.sub(r"(?s)<[^>]+>", "", cell_html))
    return re.findall(r"(?m)^([A-Za-z_]\w*)\s*=(?!=)", code)


def check_html(page: Path, root: Path) -> list[Problem]:
    """The checks that read one page's HTML file (no browser).

    Parameters
    ----------
    page : path
        An HTML file of the built book.
    root : path
        The built book's folder (``_build/html``); links may not leave it.
    """
    name = page.relative_to(root).as_posix()
    doc = page.read_text(encoding="utf-8", errors="replace")
    found: list[Problem] = []
    ids_cache: dict[Path, set] = {}
    for tag, attrs in _TAG.findall(doc):
        tag, url = tag.lower(), _URL.search(f" {attrs}")
        if url is None:
            continue
        url = _html.unescape(url.group(1))
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") or url.startswith("//"):
            if tag != "a" and not re.search(r"""rel\s*=\s*["'](canonical|alternate)""", attrs):
                found.append(Problem(name, f"loads {url} from the network (the book must read offline)"))
            continue
        if parts.scheme or not (parts.path or parts.fragment) or url.startswith("#") and len(url) == 1:
            continue  # mailto:, data:, javascript:, bare "#"
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
        if parts.path and target.is_dir():
            target = target / "index.html"
        if not target.exists():
            found.append(Problem(name, f"broken link {url!r}: {target} does not exist"))
            continue
        if parts.fragment and target.suffix == ".html" and tag == "a":
            ids = ids_cache.setdefault(target, set(_IDS.findall(target.read_text(encoding="utf-8", errors="replace"))))
            if unquote(parts.fragment) not in ids and not parts.fragment.startswith("nsd-explorer="):
                found.append(Problem(name, f"broken link {url!r}: no id {parts.fragment!r} in {target.name}"))
    injected = doc.count("tag_injected-parameters")
    if injected:
        found.append(Problem(name, "papermill's injected parameters cell is shown (parameters appear twice)"))
    cells = re.findall(r'(?s)<div class="cell [^"]*tag_parameters[^"]*".*?</pre>', doc)
    if len(cells) > 1:
        found.append(Problem(name, f"{len(cells)} parameters cells (one expected)"))
    for cell in cells:
        names = _parameter_names(cell)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            found.append(Problem(name, f"parameters shown twice in the parameters cell: {', '.join(twice)}"))
    if "application/vnd.jupyter.widget-view+json" in doc:
        found.append(Problem(name, "a notebook widget (it needs a kernel: a progress bar or a control frozen "
                                   "at its start)"))
    text = _text(doc)
    for n, total in _COUNTER.findall(text):
        if float(n) < float(total):
            found.append(Problem(name, f"a progress bar stuck at {n}/{total}"))
    for pct in _TEXT_BAR.findall(text):
        found.append(Problem(name, f"a progress bar stuck at {pct}%"))
    return found


def find_chromium() -> str | None:
    """Debian's Chromium (``chromium``), or another Chromium/Chrome on the PATH, or None."""
    for exe in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(exe)
        if path:
            return path
    return None


def _chromium(exe: str, url: str, *, budget_ms: int = 8000, screenshot: Path | None = None,
              timeout: float = 90) -> tuple[int, str, str]:
    """Run headless Chromium offline on ``url``: (exit code, DOM after scripts, console lines)."""
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--enable-logging=stderr", "--v=0", OFFLINE, f"--virtual-time-budget={budget_ms}"]
    if screenshot is not None:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        args += ["--window-size=1400,4000", f"--screenshot={screenshot}"]
    else:
        args += ["--dump-dom"]
    try:
        proc = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"Chromium did not finish within {timeout:.0f} s"
    console = "\n".join(line for line in proc.stderr.splitlines() if ":CONSOLE" in line)
    return proc.returncode, proc.stdout, console


def _explorer_view(dom: str, element_id: str) -> tuple[str, list[str]]:
    """The explorer's ``data-shown`` and its images' sources, read from a dumped DOM."""
    at = dom.find(f'id="{element_id}"')
    if at < 0:
        return "", []
    head = dom[max(0, dom.rfind("<", 0, at)):dom.find(">", at) + 1]
    shown = re.search(r'data-shown="([^"]*)"', head)
    table = dom[at:dom.find("</table>", at)]
    srcs = re.findall(r'<img data-col="[^"]*" alt="[^"]*" src="([^"]*)"', table)
    return (shown.group(1) if shown else ""), srcs


def check_in_browser(page: Path, root: Path, exe: str, *, shots: Path | None = None) -> list[Problem]:
    """The checks that need a browser, offline: load, JavaScript errors, maths, explorers."""
    name = page.relative_to(root).as_posix()
    url = page.resolve().as_uri()
    code, dom, console = _chromium(exe, url)
    found = []
    if code != 0 or "</html>" not in dom:
        return [Problem(name, f"did not load in Chromium (exit {code}): {console[-300:]}")]
    for line in console.splitlines():
        if "Uncaught" in line or "Failed to load resource" in line:
            found.append(Problem(name, f"JavaScript: {line.split(']', 1)[-1].strip()[:300]}"))
    source = page.read_text(encoding="utf-8", errors="replace")
    n_math = len(_MATH.findall(source))
    n_typeset = dom.count("<mjx-container")
    if n_math and n_typeset < n_math:
        found.append(Problem(name, f"{n_math - n_typeset} of {n_math} equations not typeset offline "
                                   f"(raw TeX shown; is MathJax served from _static/mathjax?)"))
    for element_id in _EXPLORER.findall(source):
        found += _check_explorer(name, url, exe, dom, element_id, shots)
    if shots is not None and page.stem in SCREENSHOT_PAGES:
        _chromium(exe, url, screenshot=shots / f"{page.stem}.png")
    return found


def _check_explorer(name: str, url: str, exe: str, dom: str, element_id: str, shots: Path | None) -> list[Problem]:
    """An explorer must draw a view on load and another one, with other images, when asked for it."""
    first, first_srcs = _explorer_view(dom, element_id)
    if first != "0,0" or not first_srcs or not all(s.startswith("data:image/") for s in first_srcs):
        return [Problem(name, f"explorer {element_id!r} drew nothing on load (shown={first!r}, "
                              f"{len(first_srcs)} images)")]
    _, other_dom, _ = _chromium(exe, f"{url}#nsd-explorer=3,1")
    other, other_srcs = _explorer_view(other_dom, element_id)
    if other != "3,1":
        return [Problem(name, f"explorer {element_id!r} did not step to image 4, level 2 (shown={other!r})")]
    if len(other_srcs) != len(first_srcs) or any(a == b for a, b in zip(first_srcs, other_srcs)):
        return [Problem(name, f"explorer {element_id!r} stepped but kept some of its images")]
    if shots is not None:
        _chromium(exe, url, screenshot=shots / "explorer_image1.png")
        _chromium(exe, f"{url}#nsd-explorer=3,1", screenshot=shots / "explorer_image4_level2.png")
    return []


def check_book(html_root: Path, *, chromium: str | None = None, shots: Path | None = None,
               browser: bool = True) -> list[Problem]:
    """Every check on every page of a built book; the problems found (none: the book reads finished).

    Parameters
    ----------
    html_root : path
        ``_build/html``.
    chromium : str, optional
        The browser (default: :func:`find_chromium`).
    shots : path, optional
        Where to write screenshots (chapters 00, 05, 07, 09 and the explorer).
    browser : bool
        False: only the checks that read the HTML files.
    """
    root = Path(html_root)
    if not (root / "index.html").exists():
        return [Problem(str(root), "no index.html: build the book first (`make book`)")]
    pages = sorted(p for p in root.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.parts))
    exe = (chromium or find_chromium()) if browser else None
    if browser and exe is None:
        return [Problem(str(root), "no Chromium found (Debian: apt-get install chromium)")]
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    found = []
    for page in pages:
        found += check_html(page, root)
        if exe:
            found += check_in_browser(page, root, exe, shots=shots)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsdlib.bookcheck", description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    parser.add_argument("--shots", default=None, help="screenshots folder (default: <html>/../check)")
    parser.add_argument("--no-browser", action="store_true", help="only the checks that read the HTML files")
    args = parser.parse_args(argv)
    root = Path(args.html)
    shots = Path(args.shots) if args.shots else root.parent / "check"
    problems = check_book(root, shots=None if args.no_browser else shots, browser=not args.no_browser)
    n_pages = len([p for p in root.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.parts)])
    for p in problems:
        print(p)
    print(f"check-book: {n_pages} pages, {len(problems)} problems" +
          ("" if args.no_browser else f"; screenshots in {shots}"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
