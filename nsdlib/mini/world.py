"""mini-NSD's world: scenes of coloured objects on textured backgrounds, their images and captions.

Objects of six shapes, eight colours, three sizes and nine positions on six textured
backgrounds (:func:`draw_scene`), drawn with anti-aliased edges (:func:`render_scene`),
described by five captions from a small grammar (:func:`scene_captions`), and summarised by
the features the simulated voxels respond to: :func:`semantic_features` (what the scene
shows, for higher areas) and :func:`early_features` (local contrast and colour, for early
visual areas).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "FEATURE_GROUPS",
    "POSITIONS",
    "SEMANTIC_FEATURES",
    "SHAPES",
    "SIZES",
    "TEXTURES",
    "Scene",
    "SceneObject",
    "draw_scene",
    "early_features",
    "main_object",
    "render_scene",
    "scene_captions",
    "semantic_features",
]

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
SIZES = {"small": (0.11, ("small", "little")), "medium": (0.17, ("medium-sized", "mid-sized")),
         "large": (0.23, ("large", "big"))}
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
_GRID = (0.25, 0.5, 0.75)
_COUNT_P = (0.5, 0.35, 0.15)  # probability of 1, 2, 3 objects
_CONTRAST = (0.05, 0.15)  # range of a textured background's contrast
_MAIN_SIZES = ("medium", "large")  # the main object's size; the others' are smaller

#: Names of the semantic features higher voxels respond to (see :func:`semantic_features`).
SEMANTIC_FEATURES = tuple(
    [f"shape:{s}" for s in SHAPES] + [f"colour:{c}" for c in COLOURS] + [f"count:{n}" for n in (1, 2, 3)]
    + ["coverage"] + [f"size:{s}" for s in SIZES] + [f"texture:{t}" for t in TEXTURES]
    + [f"background:{b}" for b in BACKGROUNDS]
)
#: Groups of :data:`SEMANTIC_FEATURES` (the part of a name before the colon).
FEATURE_GROUPS = ("shape", "colour", "count", "coverage", "size", "texture", "background")


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


def main_object(scene: Scene) -> SceneObject:
    """The scene's main object: the largest (the first of equals), the one the scene score reads."""
    return max(scene.objects, key=lambda o: o.radius)


def draw_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene at random.

    One to three objects in distinct cells of the 3 x 3 grid. The first drawn is the main
    object: medium or large, and drawn last so that nothing covers it; the others are
    small or medium. Textured backgrounds have a low contrast (5-15 %), so that the objects,
    not the texture, hold most of an image's contrast (world version 3; version 2 had
    smaller objects on backgrounds of 15-35 % contrast, whose texture a small VDVAE spent
    its few coarse latents on).

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    Scene
        Its ``objects`` in drawing order: the main object (:func:`main_object`) last.
    """
    texture = list(TEXTURES)[rng.integers(len(TEXTURES))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    contrast = 0.0 if texture == "plain" else float(rng.uniform(*_CONTRAST))
    n = int(rng.choice(3, p=_COUNT_P)) + 1
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    colours = [c for c in COLOURS if not (background == "dark" and c == "black")]
    objects = []
    for k, cell in enumerate(cells):
        pos = list(POSITIONS)[int(cell)]
        (row, col), _ = POSITIONS[pos]
        sizes = _MAIN_SIZES if k == 0 else tuple(s for s in SIZES if s != "large")
        size = sizes[rng.integers(len(sizes))]
        radius = SIZES[size][0] * rng.uniform(0.92, 1.08)
        if k > 0:  # never as large as the main object
            radius = min(radius, 0.9 * objects[0].radius)
        objects.append(SceneObject(
            shape=list(SHAPES)[rng.integers(len(SHAPES))], colour=colours[rng.integers(len(colours))], size=size,
            position=pos, cx=float(_GRID[col] + rng.uniform(-0.03, 0.03)),
            cy=float(_GRID[row] + rng.uniform(-0.03, 0.03)),
            radius=float(radius), rotation=float(rng.uniform(-0.35, 0.35)),
        ))
    return Scene(texture=texture, background=background, contrast=contrast,
                 frequency=float(rng.uniform(4, 10)), orientation=float(rng.uniform(0, np.pi)),
                 phase=float(rng.uniform(0, 2 * np.pi)), objects=tuple(objects[1:] + objects[:1]))


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


def early_features(img: np.ndarray) -> np.ndarray:
    """Pixel features early voxels pool: (4, 64, 64) contrast energy, luminance, red-green, blue-yellow."""
    x = img.astype(np.float32) / 255
    h = x.shape[0] // 2
    x = x[: 2 * h, : 2 * h].reshape(h, 2, h, 2, 3).mean(axis=(1, 3))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    gy, gx = np.gradient(lum)
    return np.stack([np.hypot(gx, gy), lum, r - g, b - (r + g) / 2])
