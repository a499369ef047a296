"""One run's context: its store, subject data, model sources and loaded models.

:func:`get` builds a :class:`RunContext` from a :class:`~nsdlib.config.RunConfig` once and
keeps it for the process: this is the only per-process cache of nsdlib. Every step of
:mod:`nsdlib.pipeline` asks it for the subject (NSD's betas are about 600 MB: read once) and
for its models (the pretrained VDVAE alone is 500 MB: loaded once), so the chapters keep
calling ``stage1.latents(cfg)`` and the like with a plain config.

- An equal config gets the same context back.
- Another config gets a new context, and the old one is dropped with its heavy data, except
  what the new run would load again identically: a run that differs only in ``regressor``
  or ``n_layers`` keeps the subject data and the loaded models; one that differs only in
  ``models`` or ``device`` keeps the subject data.
- :func:`forget` drops the context (after training the mini model zoo, say, so that the
  next run finds the new models).

Where a model comes from is one :class:`ModelSource`, the same shape for stage 1's VDVAE,
stage 2's CLIP and Versatile Diffusion and the feature networks of the metrics. With
``models="pretrained"`` each model is an asset (:mod:`nsdlib.assets`); with ``models="mini"``
it is the mini model zoo's model trained on mini-NSD (:func:`nsdlib.mini.zoo.locate`, for
``dataset="nsd"`` the mini-NSD of the same work folder) when it has been trained, otherwise a
randomly initialised stand-in of the same class, which the source says in words.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from .. import assets, clip, diffusion
from ..config import RunConfig
from ..features import network_usable
from ..mini import scene, zoo
from ..nsd import SubjectData
from ..store import Store, params_key, path_key
from ..vdvae import IMAGENET64, VDVAE, load_vdvae
from . import data, dataset

__all__ = ["MODEL_NAMES", "RANDOM_CLIP", "RANDOM_VD", "ModelSource", "RunContext", "forget", "get"]

#: The models a run may use: stage 1's VDVAE, stage 2's CLIP and Versatile Diffusion ("vd"),
#: the two assets of the metrics' feature networks, and mini-NSD's scene networks ("scene":
#: the scene score's probe, and the stand-ins of those assets for ``models="mini"``).
MODEL_NAMES = ("vdvae", "clip", "vd", "torchvision-metrics", "torchvision-efficientnet-v2", "swav", "scene")
#: Settings of stage 2's randomly initialised CLIP stand-in (:func:`nsdlib.clip.random_clip`).
RANDOM_CLIP = dict(projection_dim=64, hidden_size=64, n_layers=2, n_heads=2, image_size=64, patch_size=4, seed=0)
#: Settings of stage 2's randomly initialised diffusion stand-in (:func:`nsdlib.diffusion.random_components`).
RANDOM_VD = dict(image_size=64, seed=0)
_RANDOM_VERSION = 1  # in the stand-ins' fingerprints: raise it when their construction changes
#: Where each model of the mini model zoo lies in its folder, and the file that says it is complete.
_ZOO = {"vdvae": ("vdvae.pt", "vdvae.pt"), "clip": ("clip", "clip/config.json"),
        "vd": ("diffusion", "diffusion/image_unet/config.json"),
        "scene": (scene.SCENE_FOLDER, f"{scene.SCENE_FOLDER}/scene.json")}
_LABELS = {"pretrained": "pretrained", "mini": "mini-trained", "random": "mini-random", "missing": "missing"}
#: The config fields that shape the subject data, and those that shape the loaded models.
_SUBJECT_FIELDS = ("dataset", "subject", "seed", "workdir", "nsd_root", "quick")
_MODEL_FIELDS = (*_SUBJECT_FIELDS, "models", "device")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where one of the run's models comes from (nothing is loaded).

    Attributes
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    kind : {"pretrained", "mini", "random", "missing"}
        A pretrained asset; the mini model zoo's model, trained on mini-NSD; a randomly
        initialised stand-in of the same class (``models="mini"`` before the zoo is trained);
        an asset that is not on this machine (feature networks only: their metrics are then
        unavailable).
    path : str or None
        The checkpoint file or model folder; None for a random stand-in or a missing asset.
    fingerprint : str
        The model's identity in cache keys: ``"pretrained:..."`` (the asset), ``"mini:<hash>"``
        (of the trained files, :func:`nsdlib.store.path_key`), ``"random:..."`` (the stand-in's
        settings) or ``"missing"``.
    description : str
        One sentence for the chapters.
    config : object, optional
        The architecture: a :class:`~nsdlib.vdvae.VDVAEConfig` for the VDVAE, the settings of
        a random stand-in; None otherwise.
    """

    name: str
    kind: str
    path: str | None
    fingerprint: str
    description: str
    config: object = None

    @property
    def label(self) -> str:
        """The kind as captions print it: "pretrained", "mini-trained", "mini-random" or "missing"."""
        return _LABELS[self.kind]


class RunContext:
    """Everything one run computes from only once: built by :func:`get`, not directly.

    Parameters
    ----------
    cfg : RunConfig
    previous : RunContext, optional
        The context this one replaces; its subject data and loaded models are taken over
        where this run would load the same (see the module docstring).
    """

    def __init__(self, cfg: RunConfig, previous: RunContext | None = None):
        self.cfg = cfg
        self._subject: SubjectData | None = None
        self._sources: dict[str, ModelSource] = {}
        self._models: dict[str, object] = {}
        if previous is not None:
            if _same(previous.cfg, cfg, _SUBJECT_FIELDS):
                self._subject = previous._subject
            if _same(previous.cfg, cfg, _MODEL_FIELDS):
                self._sources, self._models = previous._sources, previous._models

    @functools.cached_property
    def store(self) -> Store:
        """The run's artifact store, ``Store(cfg.run_dir)``: where every pipeline step above the
        context caches its results (the steps below it, ``data`` and ``betas``, build the same
        store with :meth:`~nsdlib.store.Store.for_config`)."""
        return Store.for_config(self.cfg)

    def subject(self) -> SubjectData:
        """The run's subject (:func:`nsdlib.pipeline.data.subject_data` with its defaults), read once."""
        if self._subject is None:
            self._subject = data.subject_data(self.cfg)
        return self._subject

    def source(self, name: str) -> ModelSource:
        """Where the run's model ``name`` (one of :data:`MODEL_NAMES`) comes from, found once.

        Raises
        ------
        nsdlib.assets.MissingAssetError
            ``models="pretrained"`` and the VDVAE, CLIP or Versatile Diffusion is not on
            this machine.
        """
        if name not in self._sources:
            if name == "vdvae":
                self._sources[name] = _vdvae_source(self.cfg)
            elif name in ("clip", "vd"):
                self._sources[name] = _stage2_source(self.cfg, name)
            elif name == "scene":
                self._sources[name] = _scene_source(self.cfg)
            elif name in MODEL_NAMES:
                self._sources[name] = _asset_source(self.cfg, name)
            else:
                raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; found {name!r}")
        return self._sources[name]

    def model(self, name: str):
        """The run's model ``name`` ("vdvae", "clip", "vd" or "scene"), loaded once on the run's device.

        Returns
        -------
        nsdlib.vdvae.VDVAE (eval mode), nsdlib.clip.ClipEmbedder, nsdlib.diffusion.DualGuidedDiffusion
        or nsdlib.mini.scene.SceneNetworks (on the CPU)

        Raises
        ------
        nsdlib.mini.scene.SceneNetworksMissing
            "scene" when the mini model zoo has no scene networks (names the command).
        """
        if name not in ("vdvae", "clip", "vd", "scene"):
            raise ValueError(f"the context loads 'vdvae', 'clip', 'vd' or 'scene' (the metrics load their own "
                             f"feature networks); found {name!r}")
        if name not in self._models:
            self._models[name] = self._load(self.source(name), self.cfg.torch_device())
        return self._models[name]

    def _load(self, src: ModelSource, device):
        if src.name == "scene":
            if src.path is None:
                raise scene.SceneNetworksMissing(f"no scene networks for this run: {src.description}")
            return scene.load_scene_networks(Path(src.path).parent)
        if src.name == "vdvae":
            if src.path is not None:
                return load_vdvae(src.path, None if src.kind == "mini" else src.config, device=device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                model = VDVAE(src.config)
            return model.to(device).eval()
        if src.name == "clip":
            if src.kind == "random":
                return clip.random_clip(**RANDOM_CLIP, device=device)
            return clip.ClipEmbedder.from_pretrained(src.path, device=device)
        if src.kind == "random":
            comps = diffusion.random_components(cross_attention_dim=self.model("clip").dim, **RANDOM_VD)
            return diffusion.DualGuidedDiffusion(**comps, device=device)
        return diffusion.DualGuidedDiffusion.from_pretrained(src.path, device=device)


_CURRENT: RunContext | None = None


def get(cfg: RunConfig) -> RunContext:
    """The run's context: the one kept for an equal config, or a new one that replaces it.

    Parameters
    ----------
    cfg : RunConfig

    Returns
    -------
    RunContext
    """
    global _CURRENT
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"a run context is built from a RunConfig; found {type(cfg).__name__}")
    if _CURRENT is None or _CURRENT.cfg != cfg:
        _CURRENT = RunContext(cfg, previous=_CURRENT)
    return _CURRENT


def forget() -> None:
    """Drop the kept context with its data and models; the next :func:`get` builds anew."""
    global _CURRENT
    _CURRENT = None


def _same(a: RunConfig, b: RunConfig, fields: tuple[str, ...]) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in fields)


# ------------------------------------------------------------------ model sources
def _zoo(cfg: RunConfig) -> Path | None:
    """The mini model zoo's folder for the run's mini-NSD, or None where none has been trained."""
    world = dataset.mini_world_config(cfg)  # dataset="nsd": the mini-NSD of the same workdir
    try:
        if cfg.dataset == "mini":
            dataset.ensure_mini_world(world, progress=False)
        return zoo.locate(world.nsd_root, world.workdir, quick=world.quick)
    except FileNotFoundError:  # no mini-NSD there, or no models trained for it
        return None


def _trained(cfg: RunConfig, name: str) -> Path | None:
    """The zoo's trained ``name`` (file or folder), or None."""
    folder = None if cfg.models == "pretrained" else _zoo(cfg)
    if folder is None or not (folder / _ZOO[name][1]).is_file():
        return None
    return folder / _ZOO[name][0]


_UNTRAINED = ("the mini model zoo has not been trained here (`nsdlib mini train-models --root <mini-NSD root>`)")


def _vdvae_source(cfg: RunConfig) -> ModelSource:
    if cfg.models == "pretrained":
        path = assets.require("vdvae")
        return ModelSource("vdvae", "pretrained", str(path), f"pretrained:{path_key(path)}",
                           "the pretrained ImageNet-64 VDVAE (Child 2021, EMA weights, 75 decoder blocks, "
                           "64 x 64 images)", IMAGENET64)
    path = _trained(cfg, "vdvae")
    if path is not None:
        config = load_vdvae(path).config
        return ModelSource("vdvae", "mini", str(path), f"mini:{path_key(path, content=True)}",
                           f"the small VDVAE of the mini model zoo, trained on mini-NSD's training stimuli "
                           f"({config.n_dec_blocks} decoder blocks, {config.image_size} x {config.image_size} "
                           f"images; {path})", config)
    config = zoo.mini_vdvae_config()  # the zoo's architecture: the stand-in differs only in its weights
    return ModelSource("vdvae", "random", None, f"random:{cfg.seed}:{config.width}:{config.bottleneck_multiple}",
                       f"a RANDOMLY INITIALISED small VDVAE (seed {cfg.seed}; {config.n_dec_blocks} decoder "
                       f"blocks, {config.image_size} x {config.image_size} images): {_UNTRAINED}, so its latents "
                       "and images carry no learned structure; the numbers below test the code path, not "
                       "the method", config)


def _stage2_source(cfg: RunConfig, name: str) -> ModelSource:
    if cfg.models == "pretrained":
        path = assets.require(name)
        src = assets.ASSETS[name].source
        return ModelSource(name, "pretrained", str(path), f"pretrained:{src}", f"pretrained {src}")
    folder = _trained(cfg, name)
    if folder is not None:
        return ModelSource(name, "mini", str(folder), f"mini:{path_key(folder)}",
                           f"the mini model zoo's model, trained on mini-NSD's training stimuli ({folder})")
    spec = RANDOM_CLIP if name == "clip" else RANDOM_VD
    return ModelSource(name, "random", None, f"random:v{_RANDOM_VERSION}:{params_key(spec)}",
                       f"a small RANDOMLY INITIALISED stand-in of the same classes: {_UNTRAINED}", dict(spec))


def _scene_source(cfg: RunConfig) -> ModelSource:
    """mini-NSD's scene networks (:mod:`nsdlib.mini.scene`) in the mini model zoo of the run's mini-NSD,
    whatever the run's model set (they measure the world, not the decoder); "missing" otherwise."""
    folder = _zoo(cfg) if cfg.dataset == "mini" else None
    path = None if folder is None else folder / _ZOO["scene"][0]
    if path is not None and (folder / _ZOO["scene"][1]).is_file():
        return ModelSource("scene", "mini", str(path), f"mini:{path_key(path)}",
                           f"the scene probe and contrastive CNN of the mini model zoo, trained on mini-NSD's "
                           f"training stimuli ({path})")
    why = ("the scene score needs mini-NSD's ground truth (dataset='mini')" if cfg.dataset != "mini" else
           "the mini model zoo has no scene networks here (`nsdlib mini train-models --root <mini-NSD root>`)")
    return ModelSource("scene", "missing", None, "missing", why)


def _asset_source(cfg: RunConfig, name: str) -> ModelSource:
    """A feature network's asset: "pretrained" when present (or asked for: a missing one raises when
    the networks are built); for ``models="mini"``, "mini" when the zoo's scene networks stand in for it
    (:mod:`nsdlib.mini.scene`, preferred to real weights that happen to be cached, so that a mini run
    scores alike on every machine); "missing" otherwise."""
    asset = assets.ASSETS[name]
    present = assets.available(name)
    stand_in = _trained(cfg, "scene") if cfg.models == "mini" else None
    if stand_in is not None:
        return ModelSource(name, "mini", str(stand_in), f"mini:{path_key(stand_in)}",
                           f"small networks trained on mini-NSD standing in for {asset.description} "
                           f"(:mod:`nsdlib.mini.scene`; {stand_in})")
    if network_usable(cfg.models, name):
        return ModelSource(name, "pretrained", str(assets.local_path(name)) if present else None,
                           f"pretrained:{asset.source}", asset.description)
    return ModelSource(name, "missing", None, "missing", f"asset {name!r} absent ({asset.fetch_command})")
