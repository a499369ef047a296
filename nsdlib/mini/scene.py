"""The ruler of mini-NSD: a ground-truth scene score and small feature networks for the metrics.

mini-NSD knows what every image shows (``ground_truth/scenes.json``,
:func:`~nsdlib.mini.experiment.read_scenes`), so a reconstruction can be scored for what it
gets right about the scene, beside the eight image metrics. Two small CNNs are trained here
on mini-NSD's training stimuli (the 100 shared test images held out, as for every model of
the zoo):

- the **scene probe** (:class:`SceneCNN` with three heads) reads the *main object*
  (:func:`~nsdlib.mini.world.main_object`, the largest) of an image: its colour (8 classes),
  shape (6) and position (9 cells of the 3 x 3 grid). It is trained on the clean stimuli
  and on degraded copies (Gaussian blur, down- then up-sampling, pixel noise, a small colour
  jitter: :func:`degrade`; 60 % of each batch) so that it can read blurry, noisy
  reconstructions; it is validated on the held-out test stimuli themselves
  (:func:`train_scene_networks` records the accuracies). Where a scene has two objects of
  nearly the same size, which of them is the main one cannot be seen, so the accuracy on the
  stimuli themselves is the probe's ceiling: every scene-score table shows it as its
  "stimulus" row;
- the **contrastive CNN** (:class:`SceneCNN` without heads, a projection head on top) is
  trained self-supervised, SimCLR-style (NT-Xent between two augmented views of each
  image), without labels — the mini counterpart of SwAV.

:func:`score_scenes` turns the probe's reading of a batch of reconstructions into accuracy
per attribute, beside its **chance** level and the ratio to chance. Chance is the
*permutation chance* ``sum_k p_pred(k) p_true(k)``: the expected accuracy of the same
predictions against the same truths shuffled across images (exactly, for a random
permutation with replacement). It credits a reconstruction method nothing for always
drawing the commonest colour: predictions that ignore the image score their chance.

The five metric columns whose real networks cannot be had offline are computed by these
networks for ``models="mini"`` (:data:`FEATURE_LAYERS`, :func:`feature_networks`), each
labelled with the mini network and layer that computed it, never with a real network's name
alone:

========== ======================================= ==============================================
column     real network (``models="pretrained"``)  mini network (``models="mini"``)
========== ======================================= ==============================================
AlexNet(2) AlexNet features[4]                     scene probe conv2 (32 x 16 x 16, early)
AlexNet(5) AlexNet features[11]                    scene probe conv4 (64 x 4 x 4, late)
Inception  InceptionV3 avgpool                     scene probe conv4, global average (64)
EffNet-B   EfficientNet-B1 avgpool                 scene probe hidden layer (128, before the heads)
SwAV       SwAV ResNet-50 avgpool                  contrastive CNN conv4, global average (128)
========== ======================================= ==============================================

Weights are stored as safetensors in ``<mini models folder>/scene/`` with a JSON config
(``scene.json``: architecture, classes, training seconds and validation accuracies) and are
loaded without pickle (:func:`load_scene_networks`). This module imports torch, like the
zoo: import it as ``from nsdlib.mini import scene``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..images import check_images, resize, to_tensor
from ..metrics import FeatureNetwork
from ..nsd import NSDLayout, read_expdesign, read_stim_info, read_stimuli
from ..store import atomic_path, atomic_write
from .experiment import read_scenes
from .world import COLOURS, POSITIONS, SHAPES, Scene, main_object

__all__ = [
    "ATTRIBUTES",
    "CLASSES",
    "FEATURE_LAYERS",
    "PROBE_SIZE",
    "SCENE_FOLDER",
    "SCENE_RECIPES",
    "SceneCNN",
    "SceneNetworks",
    "SceneNetworksMissing",
    "SceneRecipe",
    "degrade",
    "feature_networks",
    "load_scene_networks",
    "permutation_chance",
    "scene_labels",
    "scene_networks_present",
    "score_scenes",
    "train_scene_networks",
]

#: The attributes of the main object the probe reads, and their classes (index = label).
ATTRIBUTES = ("colour", "shape", "position")
CLASSES = {"colour": tuple(COLOURS), "shape": tuple(SHAPES), "position": tuple(POSITIONS)}
#: Side of the probe's input: images of any size are resized to it (antialiased bilinear).
PROBE_SIZE = 64
#: The subfolder of a mini models folder that holds these networks, and its files.
SCENE_FOLDER = "scene"
_FILES = {"probe": "probe.safetensors", "contrastive": "contrastive.safetensors"}
_CONFIG = "scene.json"
_VERSION = 1
#: Metric column -> (network, layer) of the mini feature networks (see the module docstring).
FEATURE_LAYERS = {"alexnet2": ("probe", "conv2"), "alexnet5": ("probe", "conv4"), "inceptionv3": ("probe", "pool"),
                  "efficientnet": ("probe", "hidden"), "swav": ("contrastive", "pool")}
_NAMES = {"probe": "mini scene-CNN (supervised on main-object colour/shape/position, trained on mini-NSD)",
          "contrastive": "mini contrastive CNN (self-supervised SimCLR, trained on mini-NSD)"}
_LAYER_WORDS = {"conv2": "conv2", "conv4": "conv4", "pool": "conv4 global average", "hidden": "hidden layer"}


class SceneNetworksMissing(FileNotFoundError):
    """The scene networks have not been trained into this mini models folder."""


# ----------------------------------------------------------------------------- labels
def scene_labels(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """The main object's class indices per attribute.

    Parameters
    ----------
    scenes : list of Scene

    Returns
    -------
    dict
        Attribute -> int64 array of shape (n_scenes,), indices into :data:`CLASSES`.
    """
    index = {a: {name: i for i, name in enumerate(CLASSES[a])} for a in ATTRIBUTES}
    mains = [main_object(s) for s in scenes]
    return {a: np.array([index[a][getattr(o, a)] for o in mains], dtype=np.int64) for a in ATTRIBUTES}


# ------------------------------------------------------------------------------ score
def permutation_chance(predicted, true, n_classes: int) -> float:
    """Expected accuracy of ``predicted`` against ``true`` shuffled: ``sum_k p_pred(k) p_true(k)``.

    Parameters
    ----------
    predicted, true : array-like of int, shape (n,)
    n_classes : int
    """
    p = np.bincount(np.asarray(predicted), minlength=n_classes) / len(predicted)
    q = np.bincount(np.asarray(true), minlength=n_classes) / len(true)
    return float(p @ q)


def score_scenes(predicted: dict, true: dict) -> dict[str, dict[str, float]]:
    """Accuracy per attribute of predicted main-object classes, beside chance.

    Parameters
    ----------
    predicted, true : dict
        Attribute -> int array of shape (n_images,) (class indices, :data:`CLASSES`).

    Returns
    -------
    dict
        Attribute -> ``{"accuracy", "chance", "ratio", "n"}``: the share of images whose
        class is right, the permutation chance (:func:`permutation_chance`) and their ratio.
    """
    out = {}
    for a in ATTRIBUTES:
        p, t = np.asarray(predicted[a]), np.asarray(true[a])
        if p.shape != t.shape or p.ndim != 1 or not len(p):
            raise ValueError(f"{a}: predicted and true labels must be two 1-D arrays of one length; "
                             f"found shapes {p.shape} and {t.shape}")
        acc = float(np.mean(p == t))
        chance = permutation_chance(p, t, len(CLASSES[a]))
        out[a] = {"accuracy": acc, "chance": chance, "ratio": acc / chance if chance > 0 else float("nan"),
                  "n": int(len(p))}
    return out


# ---------------------------------------------------------------------------- network
class SceneCNN(nn.Module):
    """Four 3 x 3 convolution blocks (batch norm, ReLU, 2 x 2 max-pool) on 64 x 64 images, a hidden layer, heads.

    Parameters
    ----------
    widths : tuple of 4 int
        Channels of conv1..conv4 (feature maps 32, 16, 8 and 4 pixels wide).
    hidden : int
        Width of the hidden layer on the flattened conv4 map.
    heads : dict, optional
        Attribute -> number of classes (the probe); empty for the contrastive trunk.
    """

    def __init__(self, widths=(16, 32, 64, 64), hidden: int = 128, heads: dict | None = None):
        super().__init__()
        self.widths, self.hidden_size, self.head_sizes = tuple(widths), int(hidden), dict(heads or {})
        chans = (3, *self.widths)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(4))
        self.norms = nn.ModuleList(nn.BatchNorm2d(chans[i + 1]) for i in range(4))
        self.hidden = nn.Linear(self.widths[-1] * 16, hidden)
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, k) for a, k in self.head_sizes.items()})

    def config(self) -> dict:
        return {"widths": list(self.widths), "hidden": self.hidden_size, "heads": self.head_sizes}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: normalised images (b, 3, 64, 64); returns every layer: conv1..conv4, pool, hidden, heads."""
        out = {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
            out[f"conv{i + 1}"] = x
        out["pool"] = x.mean(dim=(2, 3))
        h = F.relu(self.hidden(x.flatten(1)))
        out["hidden"] = h
        for a, head in self.heads.items():
            out[a] = head(h)
        return out


def _prepare(images) -> torch.Tensor:
    """uint8 images (n, h, w, 3), any size, as the networks' input: (n, 3, 64, 64), centred."""
    x = to_tensor(np.asarray(check_images(images, "images to score")))
    return (resize(x, PROBE_SIZE, filter="torch-bilinear") - 0.5) / 0.25


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of (b, c, h, w) with standard deviations ``sigma`` (b,), in pixels."""
    r = torch.arange(-4, 5, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / sigma[:, None].clamp(min=1e-3)) ** 2)
    k = k / k.sum(1, keepdim=True)  # (b, 9)
    b, c, h, w = x.shape
    y = x.reshape(1, b * c, h, w)
    kx = k.repeat_interleave(c, 0)[:, None, None, :]
    y = F.conv2d(F.pad(y, (4, 4, 0, 0), mode="replicate"), kx, groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, 4, 4), mode="replicate"), kx.transpose(2, 3), groups=b * c)
    return y.reshape(b, c, h, w)


def degrade(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random degradations of images in 0-1, (b, 3, 64, 64): what reconstructions look like.

    Each image independently gets, each with probability one half: a Gaussian blur (sigma
    0.3-2.5 px), a down-sampling to 12-40 px and back (antialiased bilinear), pixel noise
    (sigma up to 0.12) and a small colour jitter (brightness x0.85-1.15, contrast
    x0.8-1.2, channel gains x0.93-1.07); ``strength`` scales the probabilities.
    """
    b = x.shape[0]

    def coin():
        return (torch.rand(b, generator=gen) < 0.5 * strength).to(x.dtype)[:, None, None, None]

    def unif(lo, hi, shape=(b, 1, 1, 1)):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    m = coin()
    x = m * _gaussian_blur(x, unif(0.3, 2.5, (b,))) + (1 - m) * x
    size = int(torch.randint(12, 41, (1,), generator=gen))
    small = F.interpolate(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False),
                          size=x.shape[-2:], mode="bilinear", align_corners=False)
    m = coin()
    x = m * small + (1 - m) * x
    m = coin()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((x - mean) * unif(0.8, 1.2) + mean) * unif(0.85, 1.15) * unif(0.93, 1.07, (b, 3, 1, 1))
    x = m * jittered + (1 - m) * x
    m = coin()
    x = x + m * unif(0.0, 0.12) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def _random_crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random crop of 60-100 % of the side, resized back (the contrastive views)."""
    side = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(len(x)):
        s = int(side * (0.6 + 0.4 * float(torch.rand(1, generator=gen))))
        top, left = (int(torch.randint(0, side - s + 1, (1,), generator=gen)) for _ in range(2))
        out[i] = F.interpolate(x[i:i + 1, :, top:top + s, left:left + s], size=(side, side), mode="bilinear",
                               align_corners=False)[0]
    return out


# --------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class SceneRecipe:
    """Steps, batch size and learning rate of the probe and the contrastive CNN."""

    probe_steps: int
    contrastive_steps: int
    batch_size: int = 64
    lr: float = 3e-3
    temperature: float = 0.2
    max_images: int | None = None


#: "full": about 22 passes of the probe over 4,000 training images (about 3 CPU minutes on one thread, and as
#: much for the contrastive CNN); "quick": seconds, for tests.
SCENE_RECIPES = {"full": SceneRecipe(probe_steps=1400, contrastive_steps=400),
                 "quick": SceneRecipe(probe_steps=30, contrastive_steps=10, batch_size=16, max_images=64)}


def _lr(recipe: SceneRecipe, step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    return recipe.lr * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, steps - warm)))


def _fit(model: nn.Module, loss_fn, n: int, steps: int, recipe: SceneRecipe, seed: int, desc: str,
         progress: bool) -> None:
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(recipe, step, steps)
        loss = loss_fn(rng.choice(n, size=min(recipe.batch_size, n), replace=False), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    model.eval()


def _train_probe(images: torch.Tensor, labels: dict, recipe: SceneRecipe, seed: int, progress: bool) -> SceneCNN:
    torch.manual_seed(seed)
    model = SceneCNN(heads={a: len(CLASSES[a]) for a in ATTRIBUTES})
    y = {a: torch.from_numpy(labels[a]) for a in ATTRIBUTES}

    def loss_fn(idx, gen):
        x, target = images[idx], {a: y[a][idx] for a in ATTRIBUTES}
        keep = (torch.rand(len(idx), generator=gen) < 0.4)[:, None, None, None]  # 40 % clean, 60 % degraded
        x = torch.where(keep, x, degrade(x, gen))
        out = model((x - 0.5) / 0.25)
        return sum(F.cross_entropy(out[a], target[a]) for a in ATTRIBUTES)

    _fit(model, loss_fn, len(images), recipe.probe_steps, recipe, seed, "scene probe", progress)
    return model


def _train_contrastive(images: torch.Tensor, recipe: SceneRecipe, seed: int, progress: bool):
    torch.manual_seed(seed + 1)
    model = SceneCNN(widths=(16, 32, 64, 128))
    head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64))
    both = nn.ModuleDict({"trunk": model, "head": head})

    def loss_fn(idx, gen):
        views = [degrade(_random_crop(images[idx], gen), gen) for _ in range(2)]
        z = F.normalize(head(model((torch.cat(views) - 0.5) / 0.25)["pool"]), dim=1)
        sim = z @ z.T / recipe.temperature
        sim.fill_diagonal_(-1e9)
        b = len(idx)
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        return F.cross_entropy(sim, target)

    _fit(both, loss_fn, len(images), recipe.contrastive_steps, recipe, seed + 1, "contrastive CNN", progress)
    return model


def _split(root: Path, max_images: int | None, size: int = PROBE_SIZE):
    """(training ids, images, labels), (test ids, images, labels): non-shared vs shared stimuli."""
    layout = NSDLayout(root, dataset="mini")
    shared = np.sort(read_expdesign(layout).sharedix - 1).astype(np.int64)
    n_images = len(read_stim_info(layout))
    train = np.setdiff1d(np.arange(n_images), shared)
    if max_images is not None:
        train = train[:max_images]
    scenes = read_scenes(root)
    return [(ids, read_stimuli(layout, ids, size=size, progress=False), scene_labels([scenes[i] for i in ids]))
            for ids in (train, shared)]


def train_scene_networks(root, out_folder, *, seed: int = 0, progress: bool = True,
                         recipe: str | SceneRecipe = "full") -> dict:
    """Train the scene probe and the contrastive CNN on a mini-NSD and save them.

    Parameters
    ----------
    root : path
        A mini-NSD root; its shared (test) images are held out and validate the probe.
    out_folder : path
        A mini models folder: the networks go to ``<out_folder>/scene/``.
    seed : int
    progress : bool
    recipe : {"full", "quick"} or SceneRecipe
        :data:`SCENE_RECIPES`.

    Returns
    -------
    dict
        What ``scene.json`` records beside the architecture: ``"probe_s"`` and
        ``"contrastive_s"`` (training seconds, wall clock), ``"probe_cpu_s"`` and
        ``"contrastive_cpu_s"`` (CPU seconds of this process, all threads: the measure that
        holds on a shared machine), ``"validation"`` (attribute -> accuracy of the
        probe on the clean held-out stimuli, with chance), ``"validation_degraded"`` (the same
        on degraded copies), ``"n_train"``, ``"n_validation"``, ``"recipe"``, ``"seed"``,
        ``"torch_threads"``.
    """
    rec = SCENE_RECIPES[recipe] if isinstance(recipe, str) else recipe
    (_, train_images, train_labels), (_, test_images, test_labels) = _split(Path(root), rec.max_images)
    x = to_tensor(train_images)
    t0, c0 = time.perf_counter(), time.process_time()
    probe = _train_probe(x, train_labels, rec, seed, progress)
    probe_s, probe_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    contrastive = _train_contrastive(x, rec, seed, progress)
    contrastive_s, contrastive_cpu = time.perf_counter() - t0, time.process_time() - c0
    nets = SceneNetworks(probe, contrastive)
    gen = torch.Generator().manual_seed(seed + 2)
    degraded = (degrade(to_tensor(test_images), gen, strength=2.0) * 255).round().to(torch.uint8)
    info = {"probe_s": round(probe_s, 1), "contrastive_s": round(contrastive_s, 1),
            "probe_cpu_s": round(probe_cpu, 1), "contrastive_cpu_s": round(contrastive_cpu, 1),
            "validation": score_scenes(nets.predict(test_images), test_labels),
            "validation_degraded": score_scenes(nets.predict(degraded.permute(0, 2, 3, 1).numpy()), test_labels),
            "n_train": int(len(train_images)), "n_validation": int(len(test_images)),
            "recipe": recipe if isinstance(recipe, str) else dataclasses.asdict(rec), "seed": int(seed),
            "torch_threads": torch.get_num_threads()}
    save_scene_networks(nets, out_folder, info)
    return info


# ------------------------------------------------------------------------ save / load
@dataclasses.dataclass
class SceneNetworks:
    """The trained scene probe and contrastive CNN, in eval mode.

    Attributes
    ----------
    probe, contrastive : SceneCNN
    info : dict
        What :func:`train_scene_networks` recorded (seconds, validation accuracies).
    """

    probe: SceneCNN
    contrastive: SceneCNN
    info: dict = dataclasses.field(default_factory=dict)

    def layers(self, images, batch_size: int = 256) -> dict[str, dict[str, np.ndarray]]:
        """Every layer of both networks for uint8 images (n, h, w, 3): network -> layer -> (n, ...)."""
        out = {"probe": {}, "contrastive": {}}
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = _prepare(images[start:start + batch_size])
                for name, net in (("probe", self.probe), ("contrastive", self.contrastive)):
                    for layer, t in net(x).items():
                        out[name].setdefault(layer, []).append(t.numpy())
        return {n: {k: np.concatenate(v) for k, v in d.items()} for n, d in out.items()}

    def predict(self, images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """The probe's reading of uint8 images (n, h, w, 3): attribute -> class index (n,)."""
        out = {a: [] for a in ATTRIBUTES}
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                logits = self.probe(_prepare(images[start:start + batch_size]))
                for a in ATTRIBUTES:
                    out[a].append(logits[a].argmax(1).numpy())
        return {a: np.concatenate(v).astype(np.int64) for a, v in out.items()}

    def score(self, images, scenes: list[Scene]) -> dict[str, dict[str, float]]:
        """:func:`score_scenes` of the probe's reading of ``images`` against their ``scenes`` (same order)."""
        if len(images) != len(scenes):
            raise ValueError(f"one scene per image expected; found {len(images)} images and {len(scenes)} scenes")
        return score_scenes(self.predict(images), scene_labels(scenes))


def save_scene_networks(nets: SceneNetworks, out_folder, info: dict | None = None) -> Path:
    """Write ``<out_folder>/scene/``: two safetensors files and ``scene.json`` (written last)."""
    folder = Path(out_folder) / SCENE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        net = getattr(nets, name)
        with atomic_path(folder / _FILES[name]) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    config = {"version": _VERSION, "classes": {a: list(CLASSES[a]) for a in ATTRIBUTES},
              "probe": nets.probe.config(), "contrastive": nets.contrastive.config(),
              "feature_layers": {m: list(v) for m, v in FEATURE_LAYERS.items()}, **(info or nets.info)}
    with atomic_write(folder / _CONFIG, "w") as fh:
        fh.write(json.dumps(config, indent=1))
    return folder


def scene_networks_present(models_folder) -> bool:
    """Whether ``<models_folder>/scene/`` holds trained scene networks (its config is written last)."""
    return (Path(models_folder) / SCENE_FOLDER / _CONFIG).is_file()


_PICKLES = (".pt", ".pth", ".ckpt", ".pkl", ".bin", ".tar")


def load_scene_networks(models_folder) -> SceneNetworks:
    """The scene probe and contrastive CNN of a mini models folder, read from safetensors only.

    Raises
    ------
    SceneNetworksMissing
        The folder has no trained scene networks (names the file and the command).
    ValueError
        A weights file is not safetensors (a pickle is never loaded), or its tensors do not
        fit the architecture in ``scene.json``.
    """
    folder = Path(models_folder) / SCENE_FOLDER
    for name in _FILES:
        pickled = [p.name for p in folder.glob(f"{name}*") if p.suffix in _PICKLES]
        if pickled:
            raise ValueError(f"{folder} holds {', '.join(pickled)}: scene networks are read from safetensors "
                             f"({_FILES[name]}) only, never unpickled; retrain with `nsdlib mini train-models`")
    missing = [f for f in (_CONFIG, *_FILES.values()) if not (folder / f).is_file()]
    if missing:
        raise SceneNetworksMissing(
            f"the mini scene networks (scene probe and contrastive CNN) are missing: {folder / missing[0]} not "
            f"found; train them with `nsdlib mini train-models --root <mini-NSD root>`")
    config = json.loads((folder / _CONFIG).read_text())
    if config.get("version") != _VERSION or config.get("classes") != {a: list(CLASSES[a]) for a in ATTRIBUTES}:
        raise ValueError(f"{folder / _CONFIG} was written for other scene networks (version "
                         f"{config.get('version')}, expected {_VERSION}, or other classes); retrain with "
                         "`nsdlib mini train-models`")
    nets = {}
    for name in _FILES:
        net = SceneCNN(**config[name])
        try:
            state = load_file(str(folder / _FILES[name]))
        except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
            raise ValueError(f"{folder / _FILES[name]} is not a safetensors file ({err}); scene networks are "
                             "never unpickled") from err
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{folder / _FILES[name]} does not fit the architecture of {folder / _CONFIG}: "
                             f"{err}") from err
        nets[name] = net.eval()
    info = {k: v for k, v in config.items() if k not in ("probe", "contrastive", "classes", "feature_layers")}
    return SceneNetworks(nets["probe"], nets["contrastive"], info)


# --------------------------------------------------------------------- metric networks
def _description(metric: str) -> str:
    net, layer = FEATURE_LAYERS[metric]
    return f"{_NAMES[net]}, {_LAYER_WORDS[layer]}"


def feature_networks(nets: SceneNetworks, metrics) -> list[FeatureNetwork]:
    """The metric columns of :data:`FEATURE_LAYERS` in ``metrics``, computed by the mini networks.

    One :class:`~nsdlib.metrics.FeatureNetwork` per column, whose description names the mini
    network and layer that computes it ("mini scene-CNN (...), conv2").
    """
    out = []
    for metric in (m for m in FEATURE_LAYERS if m in set(metrics)):
        net, layer = FEATURE_LAYERS[metric]

        def extract(images, metric=metric, net=net, layer=layer):
            return {metric: nets.layers(images)[net][layer].reshape(len(images), -1)}

        out.append(FeatureNetwork(f"mini-{net}", extract, (metric,), _description(metric), True))
    return out
