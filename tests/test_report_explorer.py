"""nsdlib.report.explorer: one test image's view and the widget, on what evaluation.explorer_data gathers."""

from __future__ import annotations

import base64
import io
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from nsdlib import RunConfig  # noqa: E402
from nsdlib.pipeline import evaluation as E  # noqa: E402
from nsdlib.report.explorer import explorer, explorer_view, static_explorer, thumbnail_uri  # noqa: E402


@pytest.fixture
def data(tmp_path, monkeypatch):
    """explorer_data of a quick mini run whose stimuli, first guesses and stage 2 are random stand-ins."""
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))  # no real weights here
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rng = np.random.default_rng(0)
    gt = np.repeat(np.repeat(rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), 4, axis=1), 4, axis=2)
    first = np.clip(gt.astype(int) + 30, 0, 255).astype(np.uint8)

    def stage2(c, first_guesses=None, noise=None, indices=None):
        out = first if first_guesses is None else first_guesses  # the identity as "stage 2"
        return out if indices is None else out[indices]

    monkeypatch.setattr(E, "ground_truth", lambda c: gt)
    monkeypatch.setattr(E, "first_guesses", lambda c: first)
    monkeypatch.setattr(E, "_stage2", stage2)
    monkeypatch.setattr(E, "_test_ids", lambda c: np.arange(100, 110))
    monkeypatch.setattr(E, "_default_clip", lambda c: "not available: no small CLIP in this test")
    yield E.explorer_data(RunConfig(workdir=str(tmp_path / "work"), quick=True), ["none", "64"])
    plt.close("all")


def test_explorer_view_shows_one_image_and_its_scores(data):
    fig, scores = explorer_view(data, 3, "64")
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == ["stimulus", "first guess + noise 64",
                                                                         "stage 2"]
    assert np.array_equal(fig.axes[0].images[0].get_array(), data["stimuli"][3])
    assert fig._suptitle.get_text() == "test image 4 of 4 (NSD id 103)"
    rep = data["64"]["report"]
    assert scores.loc["SSIM", "this image"] == pytest.approx(rep.per_image["ssim"][3])
    assert scores.loc["SSIM", "mean over images"] == pytest.approx(rep.means["ssim"])
    assert scores.loc["SSIM (2-D)", "this image"] == pytest.approx(rep.per_image["ssim_2d"][3])
    assert np.isnan(scores.loc["AlexNet(2)", "this image"])
    assert "not available" in scores.loc["AlexNet(2)", "computed with"]
    fig, _ = explorer_view(data, 0)  # no noise by default
    assert fig.axes[1].get_title() == "first guess"


def test_explorer_view_errors_name_what_is_there(data):
    with pytest.raises(ValueError, match="0..3; found 4"):
        explorer_view(data, 4)
    with pytest.raises(ValueError, match="'16' was not computed; have none, 64"):
        explorer_view(data, 0, "16")


def test_explorer_widget_redraws_the_view_asked_for(data, monkeypatch):
    from nsdlib.report import explorer as X

    calls = []

    def view(d, k, level="none"):
        calls.append((k, level))
        return explorer_view(d, k, level)

    monkeypatch.setattr(X, "explorer_view", view)
    box = explorer(data)
    slider, menu = box.children[0].children
    assert slider.max == 3 and list(menu.options) == ["none", "64"]
    slider.value = 2
    menu.value = "64"
    assert calls == [(0, "none"), (2, "none"), (2, "64")]


# ------------------------------------------------------------------ the explorer without a kernel
def _payload(page: str) -> dict:
    start = page.index('class="nsd-explorer-data">') + len('class="nsd-explorer-data">')
    return json.loads(page[start:page.index("</script>", start)])


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,"), f"expected a JPEG data URI; found {uri[:40]!r}"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_static_explorer_embeds_every_view_and_score(data):
    extra = {"first guess 15": data["stimuli"][:, ::2, ::2], "first guess 31": data["stimuli"]}
    page = static_explorer(data, extra, title="mini-NSD, subject 1", size=16)
    P = _payload(page)
    assert P["n"] == 4 and P["ids"] == [100, 101, 102, 103]
    assert list(P["fixed"]) == ["stimulus", "first guess 15", "first guess 31"]
    assert [L["key"] for L in P["levels"]] == ["none", "64"] and P["levels"][1]["label"] == "Added noise (64)"
    stim = _decode(P["fixed"]["stimulus"][2])
    assert stim.shape == (16, 16, 3), f"thumbnails are at most 16 px a side here; found {stim.shape}"
    err = [np.abs(stim.astype(float) - np.asarray(Image.fromarray(x).resize((16, 16), Image.LANCZOS))).mean()
           for x in data["stimuli"]]
    assert np.argmin(err) == 2 and err[2] < 0.5 * min(err[:2] + err[3:]), f"thumbnail 3 is not stimulus 3: {err}"
    rep, L = data["64"]["report"], P["levels"][1]
    j = L["metrics"].index("SSIM")
    assert L["scores"][3][j] == pytest.approx(rep.per_image["ssim"][3], abs=1e-4)
    assert L["means"][j] == pytest.approx(rep.means["ssim"], abs=1e-4)
    assert L["scores"][3][L["metrics"].index("AlexNet(2)")] is None  # unavailable: n/a, not a number
    for c in ["stimulus", "first guess 15", "first guess 31", "first guess", "stage 2"]:
        assert f'data-col="{c}"' in page, f"no image slot for column {c!r}"
    assert "mini-NSD, subject 1" in page and "http://" not in page and "https://" not in page


def test_static_explorer_rejects_misaligned_columns_and_bad_images(data):
    with pytest.raises(ValueError, match="'first guess 15' has 3 images; the explorer has 4"):
        static_explorer(data, {"first guess 15": data["stimuli"][:3]})
    with pytest.raises(ValueError, match=r"uint8 image of shape \(H, W, 3\); found float64 \(4, 4\)"):
        thumbnail_uri(np.zeros((4, 4)))
