"""mini-NSD: a simulated Natural Scenes Dataset written in NSD's own file layout.

mini-NSD is a *world for teaching and testing*, not a brain. It draws colour scenes
(objects of six shapes, eight colours, three sizes and nine positions on six textured
backgrounds), describes each with five captions from a small grammar, and simulates four
subjects (1, 2, 5, 7) looking at them: early visual voxels (V1-hV4) with retinotopic
Gaussian receptive fields that respond to local contrast and colour, higher voxels
(ventral, lateral, parietal) that respond to semantic features of the scene (shape
category, colour, number of objects, ...). Each voxel's single-trial amplitudes (percent
signal change) are convolved with one HRF of :func:`nsdlib.hrf.hrf_library` (the same
library the GLM fits), and polynomial drift, low-rank "physiological" noise shared across
the brain and thermal noise are added on top of a mean signal level.

Everything is written where the real NSD keeps it, in the same formats, so that one loader
reads both (paths relative to the root)::

    nsddata/experiments/nsd/nsd_expdesign.mat           masterordering, subjectim, sharedix
    nsddata/experiments/nsd/nsd_stim_info_merged.csv    nsdId, cocoId, cocoSplit, shared1000, subjectN, ...
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5        imgBrick (n_images, 128, 128, 3) uint8
    nsddata_stimuli/stimuli/nsd/annotations/captions_{train,val}2017.json   COCO-style, 5 per image
    nsddata/ppdata/subjNN/func1pt8mm/roi/nsdgeneral.nii.gz        -1 outside brain, 0, 1 = ROI
    nsddata/ppdata/subjNN/func1pt8mm/roi/prf-visualrois.nii.gz    -1, 0, 1..7 = V1v V1d V2v V2d V3v V3d hV4
    nsddata/ppdata/subjNN/func1pt8mm/roi/streams.nii.gz           -1, 0, 1 early, 5 ventral, 6 lateral, 7 parietal
    nsddata_timeseries/ppdata/subjNN/func1pt8mm/timeseries/timeseries_sessionSS_runRR.nii.gz  (X, Y, Z, T) int16
    nsddata_timeseries/ppdata/subjNN/func1pt8mm/design/design_sessionSS_runRR.tsv            one value per volume
    ground_truth/subjNN/truth.npz, settings.json      what the simulation used (see :class:`Truth`)
    ground_truth/scenes.json, semantic_features.npz   what each image shows
    mini_nsd.json                                     seed, size, generator version, spec

Conventions, as in NSD:

- ``masterordering`` (1, n_trials) is shared by all subjects; trial ``i`` of subject ``s``
  shows the 1-based id ``subjectim[s-1, masterordering[i]-1]`` (0-based ``nsdId`` = that - 1,
  the row of ``imgBrick``). The first ``n_shared`` columns of every ``subjectim`` row are the
  shared images (equal to ``sharedix``, sorted), so ``masterordering <= n_shared`` marks a
  test trial. Rows for subjects 3, 4, 6 and 8 hold valid ids (the shared images, then
  images drawn from the other subjects' training sets) but those subjects have no data.
- The design file of a run holds one integer per volume: 0, or the 1-based index into the
  subject's image list (the ``masterordering`` value) at the volume where a 3-s trial starts.
  Trials are 3 s on and 1 s off (4 volumes at TR = 1 s); each run starts with 4 s of rest,
  has a few blank 4-s slots among the trials and ends with 12 s of rest.
- Time series are int16 raw scanner-like units: ``round(mean * (1 + psc / 100))`` with a
  brain mean near 1000, so one unit is about 0.1 % signal change (well below the noise);
  voxels outside the brain hold a dim (about 40) noisy background.
- Ground-truth voxel order is the C order of ``nsdgeneral == 1`` (``vol[mask]`` in numpy).

The same seed and size give byte-identical files on the same machine and library versions.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .hrf import hrf_library

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "POSITIONS",
    "PRF_LABELS",
    "SEMANTIC_FEATURES",
    "SHAPES",
    "SIZES",
    "STIM_DUR",
    "STREAM_LABELS",
    "SUBJECTS",
    "TEXTURES",
    "TR",
    "TRIAL_DUR",
    "MiniRootError",
    "MiniSpec",
    "Scene",
    "SceneObject",
    "Truth",
    "design_path",
    "draw_scene",
    "generate",
    "read_manifest",
    "render_scene",
    "roi_path",
    "scene_captions",
    "semantic_features",
    "spec_for",
    "timeseries_path",
    "truth",
]

#: Version of the simulation; a root written by another version is not reused.
GENERATOR_VERSION = 2
#: The simulated subjects (the four NSD subjects who completed all 40 sessions).
SUBJECTS = (1, 2, 5, 7)
#: Repetition time (s), stimulus duration (s) and trial duration (s: 3 on, 1 off).
TR, STIM_DUR, TRIAL_DUR = 1.0, 3.0, 4.0
_MANIFEST = "mini_nsd.json"

# --------------------------------------------------------------------------- the world
#: Object shapes, their caption words (first is the canonical one).
SHAPES = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "hoop"),
    "cross": ("cross", "plus sign"),
}
#: Object colours, RGB 0-255.
COLOURS = {
    "red": (215, 45, 40), "orange": (240, 140, 30), "yellow": (240, 215, 50), "green": (50, 165, 70),
    "blue": (45, 85, 210), "purple": (135, 65, 175), "white": (245, 245, 240), "black": (30, 30, 35),
}
#: Object sizes: radius as a fraction of the image width, and caption words.
SIZES = {"small": (0.085, ("small", "little")), "medium": (0.13, ("medium-sized", "mid-sized")),
         "large": (0.19, ("large", "big"))}
#: The 3 x 3 grid of positions: (row, column) of the cell and caption phrases.
POSITIONS = {
    "top left": ((0, 0), ("in the top left corner", "at the top left", "in the upper left")),
    "top": ((0, 1), ("at the top", "near the top", "in the upper middle")),
    "top right": ((0, 2), ("in the top right corner", "at the top right", "in the upper right")),
    "left": ((1, 0), ("on the left", "at the left side", "in the middle on the left")),
    "centre": ((1, 1), ("in the centre", "in the middle", "at the centre")),
    "right": ((1, 2), ("on the right", "at the right side", "in the middle on the right")),
    "bottom left": ((2, 0), ("in the bottom left corner", "at the bottom left", "in the lower left")),
    "bottom": ((2, 1), ("at the bottom", "near the bottom", "in the lower middle")),
    "bottom right": ((2, 2), ("in the bottom right corner", "at the bottom right", "in the lower right")),
}
#: Background textures and caption words.
TEXTURES = {"plain": ("plain",), "striped": ("striped",), "checkered": ("checkered", "chequered"),
            "dotted": ("dotted", "spotted"), "cloudy": ("cloudy", "mottled"), "gradient": ("fading", "shaded")}
#: Background colours, RGB 0-255.
BACKGROUNDS = {"grey": (128, 128, 128), "beige": (215, 200, 165), "light blue": (165, 200, 230),
               "pale green": (180, 215, 170), "pink": (230, 180, 195), "dark": (60, 60, 70)}
_GRID = (0.2, 0.5, 0.8)
_COUNT_P = (0.35, 0.4, 0.25)  # probability of 1, 2, 3 objects

#: Names of the semantic features higher voxels respond to (see :func:`semantic_features`).
SEMANTIC_FEATURES = tuple(
    [f"shape:{s}" for s in SHAPES] + [f"colour:{c}" for c in COLOURS] + [f"count:{n}" for n in (1, 2, 3)]
    + ["coverage"] + [f"size:{s}" for s in SIZES] + [f"texture:{t}" for t in TEXTURES]
    + [f"background:{b}" for b in BACKGROUNDS]
)
_FEATURE_GROUPS = ("shape", "colour", "count", "coverage", "size", "texture", "background")

#: Labels of ``prf-visualrois.nii.gz`` (as in NSD); -1 outside the brain, 0 unlabelled.
PRF_LABELS = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
#: Labels of ``streams.nii.gz`` (NSD's codes; mini-NSD uses 1, 5, 6, 7).
STREAM_LABELS = {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral",
                 7: "parietal"}


class MiniRootError(ValueError):
    """A mini-NSD root cannot be used as asked (other seed or size, not a mini-NSD folder...)."""


# ------------------------------------------------------------------------- the spec
@dataclasses.dataclass(frozen=True)
class MiniSpec:
    """The sizes and timing of one mini-NSD variant (see :func:`spec_for`).

    Attributes
    ----------
    size : {"default", "small"}
    n_shared : int
        Shared (test) images, seen by every subject.
    n_train : int
        Training images per subject (different for each subject).
    n_repeats : int
        Presentations of every image (NSD: up to 3).
    n_sessions, n_runs : int
        Sessions per subject and runs per session.
    n_blank : int
        Blank 4-s slots per run (no stimulus), placed among the trials.
    rest_start, rest_end : int
        Seconds of rest before the first and after the last slot of a run.
    image_size : int
        Height and width of the stimuli (pixels).
    n_voxels : tuple of (subject, count)
        nsdgeneral voxels per subject (about a tenth of NSD's 15,724 / 14,278 / 13,039 / 12,682
        by default).
    volume_shapes : tuple of (subject, (X, Y, Z))
        Grid of each subject's functional volume.
    noise_scale : tuple of (subject, factor)
        Multiplies the thermal and physiological noise (subject 7 the noisiest).
    """

    size: str
    n_shared: int
    n_train: int
    n_repeats: int
    n_sessions: int
    n_runs: int
    n_blank: int
    n_voxels: tuple
    volume_shapes: tuple
    noise_scale: tuple = ((1, 1.0), (2, 1.15), (5, 1.3), (7, 1.6))
    rest_start: int = 4
    rest_end: int = 12
    image_size: int = 128
    tr: float = TR
    stim_dur: float = STIM_DUR
    trial_dur: float = TRIAL_DUR

    def __post_init__(self):
        if self.n_trials % (self.n_sessions * self.n_runs):
            raise ValueError(f"{self.n_trials} trials do not split into {self.n_sessions} sessions x "
                             f"{self.n_runs} runs")

    @property
    def n_per_subject(self) -> int:
        """Images per subject (shared + training): the length of a ``subjectim`` row."""
        return self.n_shared + self.n_train

    @property
    def n_trials(self) -> int:
        """Trials per subject (= length of ``masterordering``)."""
        return self.n_per_subject * self.n_repeats

    @property
    def n_images(self) -> int:
        """Rows of ``imgBrick``: the shared images and every subject's training images."""
        return self.n_shared + len(SUBJECTS) * self.n_train

    @property
    def trials_per_session(self) -> int:
        return self.n_trials // self.n_sessions

    @property
    def trials_per_run(self) -> int:
        return self.trials_per_session // self.n_runs

    @property
    def run_volumes(self) -> int:
        """Volumes (TRs) per run."""
        slot = int(round(self.trial_dur / self.tr))
        return int(round((self.rest_start + self.rest_end) / self.tr)) + slot * (self.trials_per_run + self.n_blank)

    def voxels(self, subject: int) -> int:
        return dict(self.n_voxels)[_check_subject(subject)]

    def volume_shape(self, subject: int) -> tuple[int, int, int]:
        return tuple(dict(self.volume_shapes)[_check_subject(subject)])

    def noise(self, subject: int) -> float:
        return float(dict(self.noise_scale)[_check_subject(subject)])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("n_voxels", "volume_shapes", "noise_scale"):
            d[k] = {str(s): (list(v) if isinstance(v, tuple) else v) for s, v in d[k]}
        d.update(n_per_subject=self.n_per_subject, n_trials=self.n_trials, n_images=self.n_images,
                 trials_per_run=self.trials_per_run, run_volumes=self.run_volumes)
        return d


_SPECS = {
    "default": MiniSpec(
        size="default", n_shared=100, n_train=1000, n_repeats=3, n_sessions=10, n_runs=6, n_blank=5,
        n_voxels=((1, 1572), (2, 1428), (5, 1304), (7, 1268)),
        volume_shapes=((1, (18, 22, 17)), (2, (18, 21, 16)), (5, (17, 21, 16)), (7, (17, 20, 16))),
    ),
    "small": MiniSpec(
        size="small", n_shared=20, n_train=60, n_repeats=3, n_sessions=2, n_runs=3, n_blank=4,
        n_voxels=((1, 200), (2, 182), (5, 166), (7, 161)),
        volume_shapes=((1, (9, 11, 9)), (2, (9, 11, 8)), (5, (9, 10, 8)), (7, (8, 10, 8))),
    ),
}


def spec_for(size: str) -> MiniSpec:
    """The :class:`MiniSpec` of ``size`` ("default" or "small")."""
    if size not in _SPECS:
        raise ValueError(f"size must be 'default' or 'small'; found {size!r}")
    return _SPECS[size]


def _check_subject(subject) -> int:
    try:
        s = int(subject)
    except (TypeError, ValueError):
        s = None
    if s not in SUBJECTS:
        raise ValueError(f"subject must be 1, 2, 5 or 7 (mini-NSD simulates the subjects who completed all "
                         f"sessions); found {subject!r}")
    return s


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one component of the world (order of use does not matter)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys)))


# -------------------------------------------------------------------------- scenes
@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object of a scene: its category words and exact geometry (image-width units)."""

    shape: str
    colour: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    rotation: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """A procedurally drawn scene: a textured background and 1-3 objects (drawn in order)."""

    texture: str
    background: str
    contrast: float
    frequency: float
    orientation: float
    phase: float
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(**{**d, "objects": tuple(SceneObject(**o) for o in d["objects"])})


def draw_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene at random.

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    Scene
    """
    texture = list(TEXTURES)[rng.integers(len(TEXTURES))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    contrast = 0.0 if texture == "plain" else float(rng.uniform(0.15, 0.35))
    n = int(rng.choice(3, p=_COUNT_P)) + 1
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    colours = [c for c in COLOURS if not (background == "dark" and c == "black")]
    objects = []
    for cell in cells:
        pos = list(POSITIONS)[int(cell)]
        (row, col), _ = POSITIONS[pos]
        size = list(SIZES)[rng.integers(len(SIZES))]
        objects.append(SceneObject(
            shape=list(SHAPES)[rng.integers(len(SHAPES))], colour=colours[rng.integers(len(colours))], size=size,
            position=pos, cx=float(_GRID[col] + rng.uniform(-0.04, 0.04)),
            cy=float(_GRID[row] + rng.uniform(-0.04, 0.04)),
            radius=float(SIZES[size][0] * rng.uniform(0.92, 1.08)), rotation=float(rng.uniform(-0.35, 0.35)),
        ))
    return Scene(texture=texture, background=background, contrast=contrast,
                 frequency=float(rng.uniform(4, 10)), orientation=float(rng.uniform(0, np.pi)),
                 phase=float(rng.uniform(0, 2 * np.pi)), objects=tuple(objects))


def _box(px, py, bx, by):
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _sdf(obj: SceneObject, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Signed distance (image-width units, negative inside) of an object's outline."""
    c, s = np.cos(obj.rotation), np.sin(obj.rotation)
    dx, dy = xx - obj.cx, yy - obj.cy
    px, py = c * dx + s * dy, -s * dx + c * dy
    r = obj.radius
    if obj.shape == "circle":
        return np.hypot(px, py) - r
    if obj.shape == "square":
        return _box(px, py, 0.82 * r, 0.82 * r)
    if obj.shape == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * r) - 0.28 * r
    if obj.shape == "cross":
        return np.minimum(_box(px, py, r, 0.32 * r), _box(px, py, 0.32 * r, r))
    if obj.shape == "star":
        theta = np.arctan2(-py, px) - np.pi / 2
        edge = r * (0.5 + 0.5 * ((1 + np.cos(5 * theta)) / 2) ** 1.5)
        return 0.7 * (np.hypot(px, py) - edge)
    if obj.shape == "triangle":  # equilateral, pointing up (Inigo Quilez's exact SDF)
        k, h = np.sqrt(3.0), 0.95 * r
        x, y = np.abs(px) - h, -py + h / k
        flip = x + k * y > 0
        x, y = np.where(flip, (x - k * y) / 2, x), np.where(flip, (-k * x - y) / 2, y)
        x = x - np.clip(x, -2 * h, 0)
        return -np.hypot(x, y) * np.sign(y)
    raise ValueError(f"unknown shape {obj.shape!r}; expected one of {', '.join(SHAPES)}")


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int):
    if size not in _GRIDS:
        t = (np.arange(size) + 0.5) / size
        _GRIDS[size] = np.meshgrid(t, t)  # xx (columns), yy (rows, downwards)
    return _GRIDS[size]


def _texture(scene: Scene, size: int) -> np.ndarray:
    """Luminance modulation of the background, values around 0, shape (size, size)."""
    xx, yy = _grid(size)
    c, th, f, ph = scene.contrast, scene.orientation, scene.frequency, scene.phase
    u = xx * np.cos(th) + yy * np.sin(th)
    if scene.texture == "plain":
        return 0.04 * (0.5 - yy)
    if scene.texture == "striped":
        return c * np.sin(2 * np.pi * f * u + ph)
    if scene.texture == "checkered":
        v = -xx * np.sin(th) + yy * np.cos(th)
        return c * np.sign(np.sin(2 * np.pi * f * 0.6 * u + ph) * np.sin(2 * np.pi * f * 0.6 * v + ph) + 1e-9)
    if scene.texture == "dotted":
        period = 1.0 / f
        gx = (xx + ph / (2 * np.pi) * period) % period - period / 2
        gy = (yy + ph / (2 * np.pi) * period) % period - period / 2
        d = np.hypot(gx, gy) - 0.28 * period
        return -c * np.clip(0.5 - d * size, 0, 1)
    if scene.texture == "cloudy":
        rng = np.random.default_rng(int(ph * 1e6) + int(f * 1e3))
        noise = np.fft.rfft2(rng.standard_normal((size, size)))
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        noise *= np.exp(-(fx**2 + fy**2) / (2 * (f / 4 / size) ** 2))
        m = np.fft.irfft2(noise, s=(size, size))
        return c * m / (np.abs(m).max() + 1e-12)
    if scene.texture == "gradient":
        return c * 2 * (u - u.mean()) / (np.ptp(u) + 1e-12)
    raise ValueError(f"unknown texture {scene.texture!r}; expected one of {', '.join(TEXTURES)}")


def render_scene(scene: Scene, size: int = 128) -> np.ndarray:
    """Draw a scene.

    Parameters
    ----------
    scene : Scene
    size : int
        Height and width in pixels.

    Returns
    -------
    image : ndarray of shape (size, size, 3), uint8 (0-255)
    """
    xx, yy = _grid(size)
    bg = np.asarray(BACKGROUNDS[scene.background], float) / 255
    img = np.clip(bg[None, None, :] * (1 + _texture(scene, size))[..., None], 0, 1)
    for obj in scene.objects:  # each object only touches its bounding box
        lo = np.clip(np.floor([(obj.cy - 1.1 * obj.radius) * size, (obj.cx - 1.1 * obj.radius) * size]) - 2, 0, size)
        hi = np.clip(np.ceil([(obj.cy + 1.1 * obj.radius) * size, (obj.cx + 1.1 * obj.radius) * size]) + 2, 0, size)
        win = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])))
        wx, wy = xx[win], yy[win]
        alpha = np.clip(0.5 - _sdf(obj, wx, wy) * size, 0, 1)[..., None]  # 1-pixel anti-aliased edge
        shade = np.clip(1 - 0.12 * (wy - obj.cy) / max(obj.radius, 1e-6), 0.8, 1.15)  # light from above
        colour = np.clip(np.asarray(COLOURS[obj.colour], float)[None, None, :] / 255 * shade[..., None], 0, 1)
        img[win] = img[win] * (1 - alpha) + colour * alpha
    return np.round(img * 255).astype(np.uint8)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """Five (``n``) captions of a scene from a small grammar, each in a different style.

    The styles name, in turn: everything (size, colour, shape, position, background); the
    count first; colour, shape and position only; the background first, without colours;
    colours and shapes with the background colour. Words are drawn from synonyms and the
    objects are listed in random order, so the captions of one image differ as COCO's do.
    """

    def pick(words):
        return words[rng.integers(len(words))]

    def a(word):
        return f"{_article(word)} {word}"

    def objs():
        return [scene.objects[i] for i in rng.permutation(len(scene.objects))]

    def shape(o):
        return pick(SHAPES[o.shape])

    def pos(o):
        return pick(POSITIONS[o.position][1])

    def size(o):
        return pick(SIZES[o.size][1])

    def full():
        things = _join([f"{a(size(o))} {o.colour} {shape(o)} {pos(o)}" for o in objs()])
        return f"{things} on {a(pick(TEXTURES[scene.texture]))} {scene.background} background"

    def counted():
        count = {1: "a single object", 2: "two objects", 3: "three objects"}[len(scene.objects)]
        things = _join([f"{a(o.colour)} {shape(o)} {pos(o)}" for o in objs()])
        return f"{count} on {a(scene.background)} {pick(TEXTURES[scene.texture])} background: {things}"

    def there_is():
        return "there is " + _join([f"{a(o.colour)} {shape(o)} {pos(o)}" for o in objs()])

    def background_first():
        things = _join([f"{a(size(o))} {shape(o)} {pos(o)}" for o in objs()])
        return f"{a(pick(TEXTURES[scene.texture]))} {scene.background} background with {things}"

    def short():
        things = _join([f"{a(o.colour)} {shape(o)}" for o in objs()])
        return f"{things} against {a(scene.background)} backdrop"

    makers = (full, counted, there_is, background_first, short)
    out = []
    for i in range(n):
        text = makers[i % len(makers)]()
        out.append(text[0].upper() + text[1:] + ".")
    return out


def semantic_features(scene: Scene) -> np.ndarray:
    """The scene's semantic feature vector, in the order of :data:`SEMANTIC_FEATURES`.

    Presence (0/1) of each shape and colour, one-hot object count, the fraction of the image
    the objects cover (approximately, from their radii), presence of each size, one-hot
    texture and background colour. Shape (len(SEMANTIC_FEATURES),), float64.
    """
    f = dict.fromkeys(SEMANTIC_FEATURES, 0.0)
    for o in scene.objects:
        f[f"shape:{o.shape}"] = 1.0
        f[f"colour:{o.colour}"] = 1.0
        f[f"size:{o.size}"] = 1.0
        f["coverage"] += np.pi * o.radius**2
    f[f"count:{len(scene.objects)}"] = 1.0
    f[f"texture:{scene.texture}"] = 1.0
    f[f"background:{scene.background}"] = 1.0
    return np.array([f[k] for k in SEMANTIC_FEATURES])


def _early_features(img: np.ndarray) -> np.ndarray:
    """Pixel features early voxels pool: (4, 64, 64) contrast energy, luminance, red-green, blue-yellow."""
    x = img.astype(np.float32) / 255
    h = x.shape[0] // 2
    x = x[: 2 * h, : 2 * h].reshape(h, 2, h, 2, 3).mean(axis=(1, 3))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    gy, gx = np.gradient(lum)
    return np.stack([np.hypot(gx, gy), lum, r - g, b - (r + g) / 2])


# ------------------------------------------------------------------------- paths
def roi_path(root, subject: int, name: str = "nsdgeneral") -> Path:
    """``nsddata/ppdata/subjNN/func1pt8mm/roi/<name>.nii.gz`` under ``root``."""
    return Path(root) / f"nsddata/ppdata/subj{_check_subject(subject):02d}/func1pt8mm/roi/{name}.nii.gz"


def timeseries_path(root, subject: int, session: int, run: int) -> Path:
    """``.../timeseries/timeseries_sessionSS_runRR.nii.gz`` (sessions and runs 1-based)."""
    return (Path(root) / f"nsddata_timeseries/ppdata/subj{_check_subject(subject):02d}/func1pt8mm/timeseries"
            / f"timeseries_session{session:02d}_run{run:02d}.nii.gz")


def design_path(root, subject: int, session: int, run: int) -> Path:
    """``.../design/design_sessionSS_runRR.tsv`` (sessions and runs 1-based)."""
    return (Path(root) / f"nsddata_timeseries/ppdata/subj{_check_subject(subject):02d}/func1pt8mm/design"
            / f"design_session{session:02d}_run{run:02d}.tsv")


_EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
_STIMINFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
_STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
_CAPTIONS = "nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"


# ------------------------------------------------------------- deterministic writers
def _write_nifti(path: Path, data: np.ndarray, zooms: tuple) -> None:
    import nibabel as nib

    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = -0.9 * (np.asarray(data.shape[:3]) - 1)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # gzip with mtime 0: same bytes for the same data
        fh.write(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def _write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` without time stamps (fixed zip dates), so the file is reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k in sorted(arrays):
            a = np.asarray(arrays[k])
            if a.dtype == object:
                raise TypeError(f"array {k!r} has dtype object")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _write_mat(path: Path, arrays: dict, seed: int) -> None:
    """A MATLAB 5 file like NSD's; the header's date is replaced so the bytes are reproducible."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, arrays, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    text = f"MATLAB 5.0 MAT-file, written by nsdlib.mini (mini-NSD, seed {seed})".encode()
    data[:116] = text.ljust(116, b" ")[:116]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ experiment design
def _master_ordering(spec: MiniSpec, seed: int) -> np.ndarray:
    """1-based indices into a subject's image list, one per trial, the same for every subject.

    Each image is shown ``n_repeats`` times; repeats fall within about a quarter of the
    experiment of the first showing (so many repeat within a session, as the GLM's
    cross-validation needs) and never on consecutive trials.
    """
    rng = _rng(seed, 2)
    n = spec.n_per_subject
    span = 0.25
    first = rng.uniform(0, 1 - span, size=n)
    keys = np.concatenate([first] + [first + rng.uniform(0, span, size=n) for _ in range(spec.n_repeats - 1)])
    ids = np.tile(np.arange(1, n + 1), spec.n_repeats)
    order = ids[np.argsort(keys, kind="stable")]
    n_tr = order.size

    def clash(k):
        return 0 < k < n_tr and order[k] == order[k - 1]

    for i in range(1, n_tr):  # no image on two consecutive trials: swap with the nearest fitting trial
        if not clash(i):
            continue
        for j in [*range(i + 1, n_tr), *range(i - 2, -1, -1)]:
            order[i], order[j] = order[j], order[i]
            if not any(clash(k) for k in (i, i + 1, j, j + 1)):
                break
            order[i], order[j] = order[j], order[i]
    return order.astype(np.int64)


def _image_assignment(spec: MiniSpec, seed: int):
    """0-based ids: sorted shared ids, each data subject's training ids, and 8 subjectim rows."""
    rng = _rng(seed, 3)
    perm = rng.permutation(spec.n_images)
    shared = np.sort(perm[: spec.n_shared])
    train = {s: perm[spec.n_shared + k * spec.n_train: spec.n_shared + (k + 1) * spec.n_train]
             for k, s in enumerate(SUBJECTS)}
    pool = np.concatenate([train[s] for s in SUBJECTS])
    rows = []
    for s in range(1, 9):
        extra = train[s] if s in train else rng.choice(pool, size=spec.n_train, replace=False)
        rows.append(np.concatenate([shared, extra]))
    return shared, train, np.stack(rows)


def _run_layout(spec: MiniSpec, seed: int) -> list[np.ndarray]:
    """Per run (session-major), the onset volume of each of its trials (same for all subjects)."""
    slot = int(round(spec.trial_dur / spec.tr))
    start = int(round(spec.rest_start / spec.tr))
    out = []
    for r in range(spec.n_sessions * spec.n_runs):
        rng = _rng(seed, 4, r)
        n_slots = spec.trials_per_run + spec.n_blank
        blanks = 1 + rng.choice(n_slots - 1, size=spec.n_blank, replace=False)
        slots = np.setdiff1d(np.arange(n_slots), blanks)
        out.append(start + slot * slots)
    return out


# ------------------------------------------------------------------------- brains
def _smooth_field(rng, shape, sigma) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(x.size)
    r[np.argsort(x, kind="stable")] = np.arange(x.size)
    return r / max(x.size - 1, 1)


_EARLY_AREAS = (("V1", 0.22, 0.020, 0.10), ("V2", 0.16, 0.030, 0.14), ("V3", 0.12, 0.040, 0.20),
                ("hV4", 0.08, 0.060, 0.28))  # name, share of ROI, RF size at fovea, growth with eccentricity
_EARLY_WEIGHTS = {"V1": (1.0, 0.35, 0.30), "V2": (0.9, 0.3, 0.4), "V3": (0.8, 0.25, 0.5), "hV4": (0.5, 0.2, 0.9)}
_HIGHER_GROUP_WEIGHTS = {  # over _FEATURE_GROUPS
    "ventral": (1.0, 0.4, 0.2, 0.2, 0.3, 0.4, 0.2),
    "lateral": (0.6, 1.0, 0.5, 0.3, 0.3, 0.2, 0.4),
    "parietal": (0.2, 0.2, 1.0, 0.8, 0.6, 0.3, 0.2),
}
_NOISE = {"thermal_sd": 1.0, "physio_sd": 0.9, "n_physio": 5, "drift_sd": (0.5, 1.0, 0.5), "drift_degree": 2,
          "trial_sd_fraction": 0.3, "trial_sd_floor": 0.2, "brain_mean": 1000.0, "outside_mean": 40.0,
          "outside_sd": 8.0}


def _z(x: np.ndarray, axis=0) -> np.ndarray:
    return (x - x.mean(axis, keepdims=True)) / (x.std(axis, keepdims=True) + 1e-9)


def _make_brain(spec: MiniSpec, seed: int, subject: int, early_feats: np.ndarray, sem_feats: np.ndarray):
    """Anatomy, voxel populations and noise-free responses of one subject.

    ``early_feats`` (n_subject_images, 4, 64, 64) and ``sem_feats`` (n_subject_images, n_features)
    are those of the subject's images in ``subjectim`` order.
    """
    rng = _rng(seed, 10, subject)
    shape = spec.volume_shape(subject)
    n_roi = spec.voxels(subject)
    sm = max(1.0, min(shape) / 8)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    centre, radii = (np.asarray(shape) - 1) / 2, 0.47 * np.asarray(shape)
    norm = (grid - centre) / radii  # (X, Y, Z, 3) in [-1, 1] inside the ellipsoid
    brain = (norm**2).sum(-1) <= 1
    n_brain = int(brain.sum())
    if n_roi > 0.8 * n_brain:
        raise ValueError(f"volume {shape} holds {n_brain} brain voxels, too few for {n_roi} ROI voxels")
    # ROI: the posterior part of the brain (low y), with an irregular border
    score = -norm[..., 1] + 0.35 * _smooth_field(rng, shape, sm)
    score[~brain] = -np.inf
    flat = np.argsort(-score.ravel(), kind="stable")[:n_roi]
    roi = np.zeros(shape, bool)
    roi.ravel()[flat] = True
    ijk = np.argwhere(roi)  # C order = the order of vol[roi]
    xyz = norm[roi]

    # populations: early areas from the occipital pole forwards, higher areas by height
    post = _ranks(xyz[:, 1] + 0.05 * rng.standard_normal(n_roi))
    area = np.empty(n_roi, dtype="<U8")
    edges = np.cumsum([a[1] for a in _EARLY_AREAS])
    early = post < edges[-1]
    for (name, *_), lo, hi in zip(_EARLY_AREAS, np.r_[0, edges[:-1]], edges):
        area[(post >= lo) & (post < hi)] = name
    hz = _ranks(xyz[~early, 2] + 0.1 * rng.standard_normal(int((~early).sum())))
    area[~early] = np.where(hz < 0.4, "ventral", np.where(hz < 0.7, "lateral", "parietal"))

    # retinotopy: in each early area, hemisphere (x) -> contralateral column, height (z) -> row,
    # compressed towards the fovea (more voxels near the centre, as cortical magnification)
    rf_x = np.full(n_roi, np.nan)
    rf_y = np.full(n_roi, np.nan)
    rf_s = np.full(n_roi, np.nan)
    for name, _, s0, s1 in _EARLY_AREAS:
        m = area == name
        u = 2 * _ranks(xyz[m, 0]) - 1
        v = 2 * _ranks(xyz[m, 2]) - 1
        rf_x[m] = np.clip(0.5 - 0.46 * np.sign(u) * np.abs(u) ** 1.6 + 0.02 * rng.standard_normal(m.sum()), 0.02, 0.98)
        rf_y[m] = np.clip(0.5 + 0.46 * np.sign(v) * np.abs(v) ** 1.6 + 0.02 * rng.standard_normal(m.sum()), 0.02, 0.98)
        ecc = np.hypot(rf_x[m] - 0.5, rf_y[m] - 0.5)
        rf_s[m] = (s0 + s1 * ecc) * np.exp(0.1 * rng.standard_normal(m.sum()))

    n_img = sem_feats.shape[0]
    resp = np.zeros((n_img, n_roi))
    early_w = np.zeros((n_roi, 4))
    # early voxels: Gaussian RFs pooling contrast energy (compressive), luminance and colour
    ei = np.flatnonzero(early)
    npx = early_feats.shape[-1]
    t = (np.arange(npx) + 0.5) / npx
    gx, gy = np.meshgrid(t, t)
    g = np.exp(-((gx.ravel()[None] - rf_x[ei, None]) ** 2 + (gy.ravel()[None] - rf_y[ei, None]) ** 2)
               / (2 * rf_s[ei, None] ** 2))
    g = (g / g.sum(1, keepdims=True)).astype(np.float32)
    fe = early_feats.reshape(n_img, 4, -1)
    drives = [fe[:, k] @ g.T for k in range(4)]  # each (n_img, n_early)
    energy, lum, rg, by = (_z(d.astype(np.float64)) for d in (np.sqrt(np.maximum(drives[0], 0)), *drives[1:]))
    for name, *_ in _EARLY_AREAS:
        m = area[ei] == name
        we, wl, wc = _EARLY_WEIGHTS[name]
        sign_l = rng.choice([-1.0, 1.0], size=m.sum())
        ang = rng.uniform(0, 2 * np.pi, size=m.sum())
        early_w[ei[m]] = np.stack([np.full(m.sum(), we), wl * sign_l, wc * np.cos(ang), wc * np.sin(ang)], 1)
    w = early_w[ei]
    resp[:, ei] = energy * w[:, 0] + lum * w[:, 1] + rg * w[:, 2] + by * w[:, 3]

    # higher voxels: sparse, area-biased weights on the semantic features, then a soft rectification
    hi = np.flatnonzero(~early)
    group_of = np.array([_FEATURE_GROUPS.index(n.split(":")[0]) for n in SEMANTIC_FEATURES])
    sem_w = np.zeros((n_roi, len(SEMANTIC_FEATURES)))
    for v in hi:
        scale = np.asarray(_HIGHER_GROUP_WEIGHTS[area[v]])[group_of]
        keep = rng.random(len(SEMANTIC_FEATURES)) < 0.4 * scale / scale.max() + 0.05
        keep[np.argmax(scale * rng.random(len(scale)))] = True
        sem_w[v] = scale * rng.standard_normal(len(scale)) * keep
    fz = _z(sem_feats)
    drive = fz @ sem_w[hi].T
    drive = _z(drive)
    resp[:, hi] = np.logaddexp(0, 2 * drive)
    resp = _z(resp)

    # amplitudes: mean evoked response + gain x image-specific response (percent signal change)
    gain = np.clip(np.exp(np.log(1.6) + 0.45 * rng.standard_normal(n_roi)), 0.2, 4.0)
    weak = rng.random(n_roi) < 0.15
    gain[weak] *= 0.2
    base = rng.uniform(0.5, 2.5, n_roi) * np.where(weak, 0.3, 1.0)
    image_response = base + gain * resp
    trial_sd = _NOISE["trial_sd_fraction"] * gain + _NOISE["trial_sd_floor"]

    # HRFs: a smooth map of latencies over the brain (neighbours alike), indices 0..19
    hrf_field = 9.5 + 3.5 * _smooth_field(rng, shape, sm) + 1.0 * rng.standard_normal(shape)
    hrf_vol = np.where(brain, np.clip(np.round(hrf_field), 0, 19), -1).astype(np.int16)

    # mean signal: brain about 1000 with a smooth bias field; dim background outside
    mean_vol = np.where(brain, _NOISE["brain_mean"] * (1 + 0.12 * _smooth_field(rng, shape, 2 * sm)),
                        _NOISE["outside_mean"]).astype(np.float32)

    # physiological noise: K smooth spatial loadings over the brain, total sd physio_sd * noise
    k = _NOISE["n_physio"]
    load = np.stack([0.6 + _smooth_field(rng, shape, sm)[brain] for _ in range(k)])  # (K, n_brain)
    noise = spec.noise(subject)
    load *= _NOISE["physio_sd"] * noise / np.sqrt((load**2).sum(0, keepdims=True))
    thermal = _NOISE["thermal_sd"] * noise * np.sqrt(_NOISE["brain_mean"] / mean_vol[brain]) \
        * np.exp(0.15 * rng.standard_normal(n_brain))

    # labels in NSD's conventions
    nsdgeneral = np.where(brain, 0, -1).astype(np.int16)
    nsdgeneral[roi] = 1
    prf = np.where(brain, 0, -1).astype(np.int16)
    codes = {"V1": 1, "V2": 3, "V3": 5, "hV4": 7}
    prf_codes = np.zeros(n_roi, np.int16)
    for name, c in codes.items():
        m = area == name
        prf_codes[m] = c if name == "hV4" else c + (rf_y[m] >= 0.5)  # ventral = upper visual field
    prf[roi] = prf_codes
    streams = np.where(brain, 0, -1).astype(np.int16)
    streams[roi] = np.select([early, area == "ventral", area == "lateral"], [1, 5, 6], 7)

    return dict(
        brain=brain, roi=roi, ijk=ijk, area=area, early=early, rf_x=rf_x, rf_y=rf_y, rf_sigma=rf_s,
        early_weights=early_w, semantic_weights=sem_w, gain=gain, base=base, trial_sd=trial_sd,
        image_response=image_response, hrf_volume=hrf_vol, mean_volume=mean_vol, physio_loadings=load,
        thermal_sd=thermal, nsdgeneral=nsdgeneral, prf=prf, streams=streams,
    )


def _physio_timecourses(rng, n_t: int, k: int) -> np.ndarray:
    """K unit-variance shared noise time courses (T, K): breathing, aliased pulse, slow AR(1)s."""
    from scipy.signal import lfilter

    t = np.arange(n_t) * TR
    out = np.empty((n_t, k))
    slow = lfilter([1.0], [1, -0.95], rng.standard_normal(n_t))
    out[:, 0] = np.sin(2 * np.pi * rng.uniform(0.2, 0.33) * t + rng.uniform(0, 2 * np.pi)) * (1 + 0.3 * _z(slow))
    out[:, 1] = np.sin(2 * np.pi * rng.uniform(0.05, 0.15) * t + rng.uniform(0, 2 * np.pi))
    for j in range(2, k):
        out[:, j] = lfilter([1.0], [1, -0.9], rng.standard_normal(n_t))
    return _z(out)


def _legendre(n_t: int, degree: int) -> np.ndarray:
    x = np.linspace(-1, 1, n_t)
    return np.stack([np.polynomial.legendre.Legendre.basis(d)(x) for d in range(degree + 1)], 1)  # (T, D+1)


# ------------------------------------------------------------------------ generate
def read_manifest(root) -> dict | None:
    """The ``mini_nsd.json`` of a mini-NSD root (seed, size, version, spec), or None if absent."""
    p = Path(root) / _MANIFEST
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def _hrf_digest() -> str:
    """A short hash of the HRF library the time series are convolved with (it lives in nsdlib.hrf)."""
    import hashlib

    return hashlib.sha256(np.round(hrf_library(tr=TR, stim_dur=STIM_DUR), 8).tobytes()).hexdigest()[:16]


def _manifest(spec: MiniSpec, seed: int) -> dict:
    return {"generator": "nsdlib.mini", "version": GENERATOR_VERSION, "seed": int(seed), "size": spec.size,
            "spec": spec.to_dict(), "hrf_library": {"tr": TR, "stim_dur": STIM_DUR, "digest": _hrf_digest()},
            "note": "mini-NSD is a simulated world for teaching and testing, not a brain."}


def _same(man: dict | None, seed: int, size: str) -> bool:
    """Whether a manifest describes the world this code would write for ``seed`` and ``size``."""
    return (bool(man) and man.get("version") == GENERATOR_VERSION and man.get("seed") == seed
            and man.get("size") == size and man.get("hrf_library", {}).get("digest") == _hrf_digest())


def generate(root, seed: int = 0, size: str = "default", overwrite: bool = False, progress: bool = True) -> Path:
    """Write mini-NSD under ``root`` in NSD's layout (see the module docstring); return ``root``.

    The dataset is written into a temporary sibling folder and renamed into place, so
    ``root`` is either absent, or complete. If ``root`` already holds mini-NSD made with
    the same seed, size, generator version and HRF library, nothing is done. If it holds another one,
    this refuses (``MiniRootError``) unless ``overwrite=True``, which replaces it. A
    non-empty folder that is not a mini-NSD root is never touched.

    Parameters
    ----------
    root : str or Path
    seed : int
        Seed of everything random in the world (stimuli, brains, noise).
    size : {"default", "small"}
        "default": 100 shared + 1,000 training images per subject, 3 repeats, 10 sessions of
        6 runs (3,300 trials per subject), 1,572 / 1,428 / 1,304 / 1,268 nsdgeneral voxels.
        "small" (for tests): 20 + 60 images, 2 sessions of 3 runs, 200 / 182 / 166 / 161 voxels.
    overwrite : bool
        Replace a mini-NSD root made with another seed, size or version.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        ``root``.
    """
    spec = spec_for(size)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; found {seed!r}")
    seed = int(seed)
    root = Path(root).expanduser().absolute()
    if root.exists():
        if not root.is_dir():
            raise MiniRootError(f"{root} exists and is not a folder")
        man = read_manifest(root)
        if _same(man, seed, size):
            return root
        if man is None and any(root.iterdir()):
            raise MiniRootError(f"{root} is not empty and is not a mini-NSD root (no {_MANIFEST}); "
                                "choose a new or empty folder")
        if man is not None and not overwrite:
            raise MiniRootError(
                f"{root} already holds mini-NSD made with seed={man.get('seed')}, size={man.get('size')!r}, "
                f"version={man.get('version')}, HRF library {man.get('hrf_library', {}).get('digest')}; asked for "
                f"seed={seed}, size={size!r}, version={GENERATOR_VERSION}, HRF library {_hrf_digest()}. "
                "Use another root, or overwrite=True (`--overwrite`) to replace it.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        _write_all(tmp, spec, seed, progress)
        _write_json(tmp / _MANIFEST, _manifest(spec, seed))
        _move_into_place(tmp, root, seed, size, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path, seed: int, size: str, overwrite: bool) -> None:
    if root.exists() and not any(root.iterdir()):
        root.rmdir()
    if not root.exists():
        try:
            os.rename(tmp, root)
            return
        except OSError:
            if not root.exists():
                raise
    # root appeared meanwhile (another process) or is being replaced
    man = read_manifest(root)
    if _same(man, seed, size):
        return
    if man is None or not overwrite:
        raise MiniRootError(f"{root} was written by someone else while this mini-NSD was generated; "
                            "left it as it is")
    old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-"))
    os.rename(root, old / "data")
    os.rename(tmp, root)
    shutil.rmtree(old, ignore_errors=True)


def _tqdm(it: Iterable, progress: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(it, disable=not progress, **kw)


def _write_all(out: Path, spec: MiniSpec, seed: int, progress: bool) -> None:
    import h5py

    shared, train, subjectim = _image_assignment(spec, seed)
    master = _master_ordering(spec, seed)
    n_img, size = spec.n_images, spec.image_size

    # ---- stimuli, captions, features
    scenes, caps = [], []
    sem = np.empty((n_img, len(SEMANTIC_FEATURES)))
    feats = np.empty((n_img, 4, size // 2, size // 2), np.float32)
    path = out / _STIMULI
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver="earliest", track_order=False) as f:
        brick = f.create_dataset("imgBrick", shape=(n_img, size, size, 3), dtype=np.uint8,
                                 chunks=(1, size, size, 3), track_times=False)
        batch, start = [], 0
        for i in _tqdm(range(n_img), progress, desc="mini-NSD stimuli", unit="img"):
            scene = draw_scene(_rng(seed, 1, i))
            img = render_scene(scene, size)
            scenes.append(scene)
            caps.append(scene_captions(scene, _rng(seed, 5, i)))
            sem[i] = semantic_features(scene)
            feats[i] = _early_features(img)
            batch.append(img)
            if len(batch) == 256 or i == n_img - 1:
                brick[start: start + len(batch)] = np.stack(batch)
                start += len(batch)
                batch = []
    _write_json(out / "ground_truth/scenes.json", [s.to_dict() for s in scenes])
    _write_npz(out / "ground_truth/semantic_features.npz",
               {"features": sem, "names": np.array(SEMANTIC_FEATURES), "nsd_ids": np.arange(n_img)})

    # ---- experiment design (1-based, like NSD)
    _write_mat(out / _EXPDESIGN, {
        "masterordering": master[None, :].astype(np.int32),
        "subjectim": (subjectim + 1).astype(np.int32),
        "sharedix": (shared + 1)[None, :].astype(np.int32),
        "basiccnt": _basiccnt(spec, master),
    }, seed)
    _write_stim_info(out, spec, seed, shared, subjectim, master, caps)

    # ---- brains and time series
    layout = _run_layout(spec, seed)
    lib = hrf_library(tr=TR, stim_dur=STIM_DUR)  # (n_lags, 20)
    settings_common = {"seed": seed, "size": spec.size, "units": "percent signal change",
                       "hrf_library": {"tr": TR, "stim_dur": STIM_DUR, "n": int(lib.shape[1])},
                       "timing": {"tr": TR, "stim_dur": STIM_DUR, "trial_dur": TRIAL_DUR,
                                  "rest_start": spec.rest_start, "rest_end": spec.rest_end,
                                  "n_blank": spec.n_blank, "run_volumes": spec.run_volumes}}
    for s in SUBJECTS:
        ids = subjectim[s - 1]  # 0-based nsdIds in the subject's 10k-style order
        _write_subject(out, spec, seed, s, ids, master, layout, lib, feats[ids], sem[ids], settings_common, progress)


def _basiccnt(spec: MiniSpec, master: np.ndarray) -> np.ndarray:
    """Per session: trials of images shown for the first, second and third time (3 x n_sessions)."""
    seen = np.zeros(spec.n_per_subject + 1, int)
    cnt = np.zeros((spec.n_repeats, spec.n_sessions), np.int32)
    for i, m in enumerate(master):
        cnt[min(seen[m], spec.n_repeats - 1), i // spec.trials_per_session] += 1
        seen[m] += 1
    return cnt


def _write_stim_info(out, spec, seed, shared, subjectim, master, caps) -> None:
    rng = _rng(seed, 6)
    n_img = spec.n_images
    coco = np.sort(rng.choice(np.arange(9, 581930), size=n_img, replace=False))
    coco = coco[rng.permutation(n_img)]
    split = np.where(rng.random(n_img) < 0.2, "val2017", "train2017")
    shared_set = set(shared.tolist())
    reps = np.zeros((8, n_img, spec.n_repeats), np.int64)
    for s in range(8):
        trial_ids = subjectim[s][master - 1]
        count = np.zeros(n_img, int)
        for t, nid in enumerate(trial_ids):
            reps[s, nid, count[nid]] = t + 1  # 1-based trial number
            count[nid] += 1
    member = np.zeros((8, n_img), int)
    for s in range(8):
        member[s, subjectim[s]] = 1
    header = ["", "cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    header += [f"subject{s}" for s in range(1, 9)]
    header += [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(spec.n_repeats)]
    path = out / _STIMINFO
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for i in range(n_img):
            row = [i, int(coco[i]), split[i], "(0, 0, 0, 0)", 0.0, i, False, False, i in shared_set]
            row += [int(member[s, i]) for s in range(8)]
            row += [int(reps[s, i, r]) for s in range(8) for r in range(spec.n_repeats)]
            w.writerow(row)
    ann_id = 1
    for sp in ("train2017", "val2017"):
        idx = np.flatnonzero(split == sp)
        idx = idx[np.argsort(coco[idx])]
        images, anns = [], []
        for i in idx:
            cid = int(coco[i])
            images.append({"id": cid, "file_name": f"{cid:012d}.jpg", "height": spec.image_size,
                           "width": spec.image_size, "license": 0})
            for c in caps[i]:
                anns.append({"image_id": cid, "id": ann_id, "caption": c})
                ann_id += 1
        _write_json(out / _CAPTIONS.format(split=sp), {
            "info": {"description": f"mini-NSD captions ({sp}), simulated by nsdlib.mini, seed {seed}",
                     "version": str(GENERATOR_VERSION)},
            "licenses": [], "images": images, "annotations": anns})


def _write_subject(out, spec, seed, s, ids, master, layout, lib, early_feats, sem_feats, common, progress) -> None:
    b = _make_brain(spec, seed, s, early_feats, sem_feats)
    shape = spec.volume_shape(s)
    n_vox = int(b["roi"].sum())
    # true single-trial amplitudes, trial order (masterordering order)
    rng = _rng(seed, 11, s)
    img_idx = master - 1
    amps = (b["image_response"][img_idx] + b["trial_sd"] * rng.standard_normal((master.size, n_vox))).astype(np.float32)

    roi_dir = roi_path(out, s).parent
    _write_nifti(roi_dir / "nsdgeneral.nii.gz", b["nsdgeneral"], (1.8, 1.8, 1.8))
    _write_nifti(roi_dir / "prf-visualrois.nii.gz", b["prf"], (1.8, 1.8, 1.8))
    _write_nifti(roi_dir / "streams.nii.gz", b["streams"], (1.8, 1.8, 1.8))

    brain_flat = np.flatnonzero(b["brain"].ravel())
    roi_in_brain = b["roi"].ravel()[brain_flat]  # ROI rows among brain rows (both C order)
    roi_rows = np.flatnonzero(roi_in_brain)
    hrf_roi = b["hrf_volume"][b["roi"]].astype(np.int64)
    mean_b = b["mean_volume"].ravel()[brain_flat][:, None].astype(np.float32)
    n_t = spec.run_volumes
    n_all = int(np.prod(shape))
    outside = np.flatnonzero(~b["brain"].ravel())
    k_phys = _NOISE["n_physio"]
    leg = _legendre(n_t, _NOISE["drift_degree"])
    drift_sd = np.asarray(_NOISE["drift_sd"])
    lags = np.arange(lib.shape[0])
    physio_all = np.empty((len(layout), n_t, k_phys), np.float32)
    tpr = spec.trials_per_run
    runs = [(ses, run) for ses in range(1, spec.n_sessions + 1) for run in range(1, spec.n_runs + 1)]
    for r, (ses, run) in enumerate(_tqdm(runs, progress, desc=f"mini-NSD subj{s:02d} runs", unit="run")):
        onsets = layout[r]
        trials = np.arange(r * tpr, (r + 1) * tpr)
        rr = _rng(seed, 12, s, r)
        # signal: each voxel's amplitudes convolved with its own HRF
        sig = np.zeros((roi_rows.size, n_t), np.float32)
        rows = onsets[None, :] + lags[:, None]  # (n_lags, n_trials)
        valid = rows < n_t
        for h in np.unique(hrf_roi):
            x = np.zeros((n_t, tpr), np.float32)
            x[rows[valid], np.broadcast_to(np.arange(tpr), rows.shape)[valid]] = \
                np.broadcast_to(lib[:, h, None], rows.shape)[valid]
            vh = np.flatnonzero(hrf_roi == h)
            sig[vh] = (x @ amps[trials][:, vh]).T
        phys = _physio_timecourses(rr, n_t, k_phys)
        physio_all[r] = phys
        coef = rr.standard_normal((brain_flat.size, leg.shape[1])) * drift_sd
        psc = (coef @ leg.T).astype(np.float32)  # drift (n_brain, T)
        psc += (b["physio_loadings"].T @ phys.T).astype(np.float32)
        thermal = b["thermal_sd"][:, None].astype(np.float32)
        psc += rr.standard_normal((brain_flat.size, n_t), dtype=np.float32) * thermal
        psc[roi_rows] += sig
        vol = np.empty((n_all, n_t), np.float32)
        vol[brain_flat] = mean_b * (1 + psc / 100)
        vol[outside] = _NOISE["outside_mean"] + _NOISE["outside_sd"] * rr.standard_normal((outside.size, n_t),
                                                                                           dtype=np.float32)
        data = np.clip(np.rint(vol), -32768, 32767).astype(np.int16).reshape(*shape, n_t)
        _write_nifti(timeseries_path(out, s, ses, run), data, (1.8, 1.8, 1.8, TR))
        design = np.zeros(n_t, np.int64)
        design[onsets] = master[trials]
        p = design_path(out, s, ses, run)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"{v}\n" for v in design))

    gdir = out / f"ground_truth/subj{s:02d}"
    trial_session = np.repeat(np.arange(1, spec.n_sessions + 1), spec.trials_per_session)
    trial_run = np.tile(np.repeat(np.arange(1, spec.n_runs + 1), tpr), spec.n_sessions)
    onset_vol = np.concatenate(layout)
    _write_npz(gdir / "truth.npz", {
        "amplitudes": amps,
        "image_response": b["image_response"].astype(np.float32),
        "trial_image_index": master.astype(np.int64),
        "trial_nsd_id": ids[master - 1].astype(np.int64),
        "trial_session": trial_session.astype(np.int64),
        "trial_run": trial_run.astype(np.int64),
        "trial_onset_volume": onset_vol.astype(np.int64),
        "image_nsd_id": ids.astype(np.int64),
        "voxel_ijk": b["ijk"].astype(np.int64),
        "hrf_index": hrf_roi,
        "hrf_index_volume": b["hrf_volume"],
        "population": np.where(b["early"], "early", "higher"),
        "area": b["area"],
        "rf_x": b["rf_x"].astype(np.float32), "rf_y": b["rf_y"].astype(np.float32),
        "rf_sigma": b["rf_sigma"].astype(np.float32),
        "early_weights": b["early_weights"].astype(np.float32),
        "semantic_weights": b["semantic_weights"].astype(np.float32),
        "gain": b["gain"].astype(np.float32), "base": b["base"].astype(np.float32),
        "trial_sd": b["trial_sd"].astype(np.float32),
        "thermal_sd": b["thermal_sd"][roi_rows].astype(np.float32),
        "physio_sd": np.sqrt((b["physio_loadings"][:, roi_rows] ** 2).sum(0)).astype(np.float32),
        "mean_volume": b["mean_volume"],
        "brain_mask": b["brain"],
        "physio_loadings": b["physio_loadings"].astype(np.float32),
        "physio_timecourses": physio_all,
    })
    _write_json(gdir / "settings.json", {
        **common, "subject": s, "volume_shape": list(shape), "n_voxels": n_vox, "n_brain": int(brain_flat.size),
        "n_trials": int(master.size), "noise_scale": spec.noise(s),
        "noise": {**_NOISE, "physio_sd": _NOISE["physio_sd"] * spec.noise(s),
                  "thermal_sd": _NOISE["thermal_sd"] * spec.noise(s),
                  "thermal_note": "per-voxel sd = thermal_sd * sqrt(1000 / mean) * lognormal(0, 0.15)",
                  "drift": "Legendre polynomials of degree 0..2 per run and voxel, coefficient sd drift_sd",
                  "physio": "n_physio shared time courses (breathing, aliased pulse, AR(1)s) x smooth loadings"},
        "timeseries": {"dtype": "int16", "value": "round(mean_volume * (1 + psc / 100))",
                       "outside_brain": "outside_mean + outside_sd * N(0, 1), no signal"},
        "labels": {"prf-visualrois": PRF_LABELS, "streams": STREAM_LABELS,
                   "nsdgeneral": {"-1": "outside brain", "0": "brain, not ROI", "1": "ROI"}},
        "semantic_features": list(SEMANTIC_FEATURES), "early_features": ["energy", "luminance", "red-green",
                                                                         "blue-yellow"],
        "voxel_order": "C order of nsdgeneral == 1 (vol[mask] in numpy)",
        "rf_units": "image fraction: rf_x from the left, rf_y from the top, rf_sigma in image widths",
    })


# --------------------------------------------------------------------------- truth
@dataclasses.dataclass(frozen=True)
class Truth:
    """The ground truth of one simulated subject (from ``ground_truth/subjNN``).

    Attributes
    ----------
    amplitudes : ndarray of shape (n_trials, n_voxels), float32
        True single-trial response amplitudes (percent signal change, peak of the HRF
        response) of the nsdgeneral voxels, in trial (``masterordering``) order.
    image_response : ndarray of shape (n_per_subject, n_voxels), float32
        Noise-free response to each of the subject's images, in ``subjectim`` column order;
        amplitudes = image_response[masterordering - 1] + trial-to-trial variability.
    trial_nsd_id, trial_image_index : ndarray of shape (n_trials,), int64
        0-based nsdId of each trial, and its 1-based ``masterordering`` value.
    trial_session, trial_run, trial_onset_volume : ndarray of shape (n_trials,), int64
        1-based session and run, and the 0-based volume where the trial starts.
    image_nsd_id : ndarray of shape (n_per_subject,), int64
        0-based nsdIds of the subject's images (``subjectim[s-1] - 1``).
    voxel_ijk : ndarray of shape (n_voxels, 3), int64
        Voxel indices in the volume (C order of ``nsdgeneral == 1``).
    hrf_index : ndarray of shape (n_voxels,), int64
        Column of ``nsdlib.hrf.hrf_library(tr=1, stim_dur=3)`` used by each voxel.
    population, area : ndarray of shape (n_voxels,), str
        "early"/"higher"; "V1", "V2", "V3", "hV4", "ventral", "lateral", "parietal".
    rf_x, rf_y, rf_sigma : ndarray of shape (n_voxels,), float32
        Receptive-field centre and size in image widths (NaN for higher voxels).
    gain, base, trial_sd : ndarray of shape (n_voxels,), float32
        Image-driven sd, mean evoked response and trial-to-trial sd (percent signal change).
    thermal_sd, physio_sd : ndarray of shape (n_voxels,), float32
        Noise sd per volume (percent signal change).
    arrays : dict
        Every array of ``truth.npz`` (also the volumes: ``mean_volume``, ``brain_mask``,
        ``hrf_index_volume``, ``physio_loadings``, ``physio_timecourses``, weights).
    settings : dict
        ``settings.json``: noise settings, timing, label names, units.
    """

    amplitudes: np.ndarray
    image_response: np.ndarray
    trial_nsd_id: np.ndarray
    trial_image_index: np.ndarray
    trial_session: np.ndarray
    trial_run: np.ndarray
    trial_onset_volume: np.ndarray
    image_nsd_id: np.ndarray
    voxel_ijk: np.ndarray
    hrf_index: np.ndarray
    population: np.ndarray
    area: np.ndarray
    rf_x: np.ndarray
    rf_y: np.ndarray
    rf_sigma: np.ndarray
    gain: np.ndarray
    base: np.ndarray
    trial_sd: np.ndarray
    thermal_sd: np.ndarray
    physio_sd: np.ndarray
    arrays: dict
    settings: dict

    @property
    def n_voxels(self) -> int:
        return self.amplitudes.shape[1]


def truth(root, subject: int) -> Truth:
    """Read the ground truth of ``subject`` from a mini-NSD root.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a (complete) mini-NSD root.
    ValueError
        ``subject`` is not 1, 2, 5 or 7.
    """
    s = _check_subject(subject)
    root = Path(root)
    if read_manifest(root) is None:
        raise FileNotFoundError(f"{root} is not a mini-NSD root (no {_MANIFEST}); create it with "
                                f"`nsdlib mini generate --root {root}`")
    gdir = root / f"ground_truth/subj{s:02d}"
    with np.load(gdir / "truth.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    settings = json.loads((gdir / "settings.json").read_text())
    fields = {f.name for f in dataclasses.fields(Truth)} - {"arrays", "settings"}
    return Truth(**{k: arrays[k] for k in fields}, arrays=arrays, settings=settings)

