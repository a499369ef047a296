"""Feature networks for the high-level image metrics: building them and their input.

:class:`~nsdlib.metrics.ImageEvaluator` scores reconstructions with
:class:`~nsdlib.metrics.FeatureNetwork` objects; this module builds them:

- :func:`alexnet_network`: AlexNet ``features[4]`` (``alexnet2``) and ``features[11]``
  (``alexnet5``); :func:`inception_network`: InceptionV3 ``avgpool`` (``inceptionv3``);
  :func:`efficientnet_network`: EfficientNet-B1 ``avgpool`` (``efficientnet``) — torchvision's
  ImageNet (IMAGENET1K_V1) weights;
- :func:`swav_network`: SwAV ResNet-50 ``avgpool`` (``swav``, the 800-epoch checkpoint);
- :func:`clip_network`: the projected class token of CLIP ViT-L/14 (``clip``), or any
  image-feature callable (the small CLIP of mini-NSD);
- :func:`feature_networks`: all those a model set can have, and the reasons for the others.

Images are resized to 224 x 224 with :func:`nsdlib.images.resize`'s ``"torch-bilinear"``
filter (antialiased, like torchvision's resize of a PIL image in Brain-Diffuser's code; also
for InceptionV3, whose ImageNet weights expect 299 but which Brain-Diffuser fed 224) and
normalised with ImageNet statistics (CLIP: its own, at its own input size). Features come from
``torchvision.models.feature_extraction.create_feature_extractor``. That is the
``"brain-diffuser"`` evaluation protocol (:mod:`nsdlib.protocols`), the default; every builder
takes ``protocol="mindeye"`` for MindEye2's inputs instead (each image resized to 256, then to
the network's size — AlexNet 256, InceptionV3 342, EfficientNet-B1 255 with its IMAGENET1K_V2
weights, SwAV and CLIP 224 — bilinear without antialiasing, unrounded; CLIP in float16 on a
GPU). The protocol applies to the published networks; a callable CLIP and the mini scene
networks take their own input under either (their description says so).

Weights are read from the local cache only (:mod:`nsdlib.assets`: "torchvision-metrics",
"swav", "clip"; ``nsdlib fetch metrics`` downloads them). With ``models="mini"`` the AlexNet,
Inception, EfficientNet and SwAV columns are computed by small networks trained on mini-NSD
(:mod:`nsdlib.mini.scene`: the scene probe and a contrastive CNN, each column described by
the mini network and layer that computed it) when the mini model zoo has them; otherwise by
the real networks if their weights happen to be cached; otherwise the metric is reported as
not available (NaN, with the reason), never computed with random weights under a real
network's name. Random weights
(``pretrained=False``) exist for tests of the mechanics and are flagged as such.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import assets
from .guard import TORCH_CHECKPOINT, reading
from .images import resize, to_tensor
from .metrics import FeatureNetwork, ImageEvaluator, MetricReport
from .names import DISTANCE_METRICS, IDENTIFICATION_METRICS, IMAGE_METRICS, METRIC_LABELS
from .protocols import DEFAULT_PROTOCOL, Protocol, Resize, get_protocol

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "FEATURE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METRIC_ASSETS",
    "alexnet_network",
    "clip_network",
    "efficientnet_network",
    "evaluate_images",
    "feature_networks",
    "inception_network",
    "load_swav_state_dict",
    "metric_asset",
    "network_usable",
    "swav_network",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FEATURE_SIZE = 224
#: The asset holding the weights of each feature metric's network (CLIP's comes with the run's
#: model set: see :func:`feature_networks`).
METRIC_ASSETS = {"alexnet2": "torchvision-metrics", "alexnet5": "torchvision-metrics",
                 "inceptionv3": "torchvision-metrics", "efficientnet": "torchvision-metrics", "swav": "swav"}
#: Where a protocol's network needs other weights than :data:`METRIC_ASSETS` names.
_PROTOCOL_ASSETS = {("mindeye", "efficientnet"): "torchvision-efficientnet-v2"}

# torchvision weight files (IMAGENET1K_V1) inside torch's hub cache, as nsdlib.assets fetches them
_TV_FILES = {
    "alexnet": "alexnet.AlexNet_Weights.IMAGENET1K_V1",
    "inceptionv3": "inception.Inception_V3_Weights.IMAGENET1K_V1",
    "efficientnet": "efficientnet.EfficientNet_B1_Weights.IMAGENET1K_V1",
    "efficientnet-v2": "efficientnet.EfficientNet_B1_Weights.IMAGENET1K_V2",
}


def metric_asset(metric: str, protocol: str | Protocol | None = None) -> str:
    """The asset holding the weights of ``metric``'s network under ``protocol`` (MindEye's EfficientNet: V2 weights)."""
    return _PROTOCOL_ASSETS.get((get_protocol(protocol).name, metric), METRIC_ASSETS[metric])


def _note(protocol: Protocol) -> str:
    """What a network's description adds under a protocol other than the default (nothing under the default)."""
    return "" if protocol.name == DEFAULT_PROTOCOL else f"; {protocol.name} protocol input"


def _to_input(images, size, mean, std, device, steps: tuple[Resize, ...] | None = None):
    """uint8 images as a normalised NCHW float tensor: resized by ``steps`` (a step of size None
    goes to ``size``; default one antialiased bilinear resize to ``size``), unrounded."""
    import torch

    x = to_tensor(images, device=device)
    for step in steps or (Resize(size, "torch-bilinear"),):
        x = resize(x, step.size or size, filter=step.filter)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def _torch_network(name, model, nodes: dict[str, str], description, trained, device,
                   size=FEATURE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, protocol=None) -> FeatureNetwork:
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = model.eval()
    with warnings.catch_warnings():  # train- and eval-mode graphs differ (Inception's aux head); eval is used
        warnings.filterwarnings("ignore", message=".*obtained by tracing the model in eval mode.*")
        extractor = create_feature_extractor(model, return_nodes=dict(nodes)).to(dev).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    protocol = get_protocol(protocol)
    steps = protocol.feature_input(name)

    def extract(images):
        with torch.inference_mode():
            out = extractor(_to_input(images, size, mean, std, dev, steps))
        return {metric: t.flatten(1).float().cpu().numpy() for metric, t in out.items()}

    return FeatureNetwork(name, extract, tuple(nodes.values()), description + _note(protocol), trained, protocol.name)


def _tv_state_dict(key: str, asset: str = "torchvision-metrics"):
    """A torchvision ImageNet state dict from the local cache (never downloaded here)."""
    import torch

    cache = assets.require(asset)
    module, enum, member = _TV_FILES[key].split(".")
    weights = getattr(getattr(importlib.import_module(f"torchvision.models.{module}"), enum), member)
    path = Path(cache) / Path(weights.url).name
    with reading(path, TORCH_CHECKPOINT, f"delete it and run `nsdlib fetch {asset}`"):
        return torch.load(path, map_location="cpu", weights_only=True)


def _weights_label(pretrained: bool) -> str:
    return "ImageNet weights" if pretrained else "RANDOM weights (mechanics only, not the metric)"


def alexnet_network(*, pretrained: bool = True, device=None, protocol=None) -> FeatureNetwork:
    """AlexNet ``features[4]`` (AlexNet(2)) and ``features[11]`` (AlexNet(5)).

    ``pretrained=True`` loads torchvision's IMAGENET1K_V1 weights from the local cache
    (:class:`~nsdlib.assets.MissingAssetError` when absent); ``False`` keeps random
    weights, for tests of the mechanics only. ``protocol``: whose input (:mod:`nsdlib.protocols`).
    """
    from torchvision.models import alexnet

    model = alexnet(weights=None)
    if pretrained:
        model.load_state_dict(_tv_state_dict("alexnet"))
    return _torch_network("alexnet", model, {"features.4": "alexnet2", "features.11": "alexnet5"},
                          f"AlexNet features[4] / features[11], {_weights_label(pretrained)}", pretrained, device,
                          protocol=protocol)


def inception_network(*, pretrained: bool = True, device=None, protocol=None) -> FeatureNetwork:
    """InceptionV3 ``avgpool`` (2048 features), fed 224 x 224 images as Brain-Diffuser did (MindEye: 342)."""
    from torchvision.models import inception_v3

    # the ImageNet weights were trained with transform_input=True (torchvision sets it when loading them)
    model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    if pretrained:
        model.load_state_dict(_tv_state_dict("inceptionv3"))
    return _torch_network("inceptionv3", model, {"avgpool": "inceptionv3"},
                          f"InceptionV3 avgpool, {_weights_label(pretrained)}", pretrained, device, protocol=protocol)


def efficientnet_network(*, pretrained: bool = True, device=None, protocol=None) -> FeatureNetwork:
    """EfficientNet-B1 ``avgpool`` (1280 features): IMAGENET1K_V1 weights (``"mindeye"``: IMAGENET1K_V2)."""
    from torchvision.models import efficientnet_b1

    proto = get_protocol(protocol)
    v2 = proto.efficientnet_weights == "IMAGENET1K_V2"
    model = efficientnet_b1(weights=None)
    if pretrained:
        model.load_state_dict(_tv_state_dict("efficientnet-v2", metric_asset("efficientnet", proto)) if v2
                              else _tv_state_dict("efficientnet"))
    label = f"{proto.efficientnet_weights} {_weights_label(pretrained)}" if v2 and pretrained else _weights_label(
        pretrained)
    return _torch_network("efficientnet", model, {"avgpool": "efficientnet"},
                          f"EfficientNet-B1 avgpool, {label}", pretrained, device, protocol=proto)


def load_swav_state_dict(path) -> dict:
    """SwAV's ResNet-50 checkpoint as a torchvision ``resnet50`` state dict.

    Reads the file with ``torch.load(weights_only=True)``, unwraps a ``"state_dict"``
    entry if present, strips the ``module.`` prefix of data-parallel training and drops
    SwAV's ``projection_head`` and ``prototypes``. The result holds every ``resnet50``
    tensor except the classifier ``fc`` (SwAV has none; the metric reads ``avgpool``).
    A checkpoint with other names or shapes raises ``ValueError`` naming them.
    """
    import torch
    from torchvision.models import resnet50

    with reading(path, TORCH_CHECKPOINT, "delete it and run `nsdlib fetch swav`"):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    state = {}
    for k, v in raw.items():
        k = k.removeprefix("module.")
        if k.startswith(("projection_head.", "prototypes.")):
            continue
        state[k] = v
    want = {k: v.shape for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(state[k].shape) != tuple(want[k]))
    if missing or unexpected or bad:
        raise ValueError(
            f"{path} is not a SwAV ResNet-50 checkpoint: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, wrong shapes {bad[:5]}")
    return state


def swav_network(path=None, *, device=None, protocol=None) -> FeatureNetwork:
    """SwAV ResNet-50 ``avgpool`` (2048 features).

    Parameters
    ----------
    path : path, optional
        The checkpoint (``swav_800ep_pretrain.pth.tar``); default
        ``nsdlib.assets.require("swav")``. ``False`` keeps random weights (mechanics only).
    protocol : str, optional
        Whose input (:mod:`nsdlib.protocols`).
    """
    import torch
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    trained = path is not False
    if trained:
        state = load_swav_state_dict(assets.require("swav") if path is None else path)
        result = model.load_state_dict(state, strict=False)
        if sorted(result.missing_keys) != ["fc.bias", "fc.weight"] or result.unexpected_keys:
            raise ValueError(f"SwAV checkpoint did not fill resnet50: {result}")
        model.fc = torch.nn.Identity()
    desc = "SwAV ResNet-50 avgpool, " + ("800-epoch SwAV weights" if trained else _weights_label(False))
    return _torch_network("swav", model, {"avgpool": "swav"}, desc, trained, device, protocol=protocol)


def clip_network(model, *, description: str, trained: bool = True, device=None, mean=CLIP_MEAN, std=CLIP_STD,
                 size: int | None = None, protocol=None) -> FeatureNetwork:
    """The CLIP identification metric from a CLIP vision model or any image-feature callable.

    Parameters
    ----------
    model : transformers ``CLIPModel`` or ``CLIPVisionModelWithProjection``, a folder, or callable
        A transformers model (or a ``CLIPModel`` folder saved with ``save_pretrained``)
        gives the projected class-token embedding (768 values for ViT-L/14),
        the output of OpenAI CLIP's ``model.visual``, from images resized to the model's
        ``image_size`` and normalised with ``mean``/``std``. A callable taking uint8
        images (b, h, w, 3) and returning (b, n_features) is used as it is (for example
        the small CLIP of mini-NSD from ``nsdlib.clip``).
    description : str
        Which CLIP this is; tables print it ("small CLIP trained on mini-NSD, not ViT-L/14").
    trained : bool
        False only for a randomly initialised model (tests of the mechanics).
    protocol : str, optional
        Whose input (:mod:`nsdlib.protocols`): ``"mindeye"`` resizes to 256 then 224 without
        antialiasing and runs the model in float16 on a GPU, as OpenAI's ``clip.load`` does.
        A callable takes its own input under any protocol.
    """
    import torch

    proto = get_protocol(protocol)
    if callable(model) and not isinstance(model, torch.nn.Module):
        fn = model
        if proto.name != DEFAULT_PROTOCOL:
            description += f" (its own input, not the {proto.name} protocol's)"

        def extract(images):
            out = fn(images)
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            return {"clip": np.asarray(out)}

        return FeatureNetwork("clip", extract, ("clip",), description, trained)

    if not isinstance(model, torch.nn.Module):
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(str(model), local_files_only=True)
        model.text_model = None  # only the vision tower is needed
    for attr in ("vision_model", "visual_projection"):
        if not hasattr(model, attr):
            raise TypeError(f"a CLIP model needs a {attr!r} (CLIPModel or CLIPVisionModelWithProjection); "
                            f"found {type(model).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dtype = torch.float16 if proto.clip_half_on_gpu and dev.type == "cuda" else torch.float32
    model = model.to(dev, dtype).eval()
    cfg = getattr(model.config, "vision_config", model.config)
    size = int(size or cfg.image_size)
    steps = proto.feature_input("clip")

    def extract(images):
        with torch.inference_mode():
            x = _to_input(images, size, mean, std, dev, steps).to(dtype)
            pooled = model.vision_model(pixel_values=x).pooler_output
            return {"clip": model.visual_projection(pooled).float().cpu().numpy()}

    half = ", float16" if dtype == torch.float16 else ""
    return FeatureNetwork("clip", extract, ("clip",), description + _note(proto) + half, trained, proto.name)


def network_usable(models: str, asset: str) -> bool:
    """Whether a feature network whose weights are ``asset`` is used by a run of model set ``models``.

    Always for ``"pretrained"`` (a missing asset raises when the network is built); for
    ``"mini"`` only when the real weights happen to be on this machine (otherwise the metric
    is unavailable). The one place this is decided: :func:`feature_networks` and the run's
    context (:mod:`nsdlib.pipeline.context`) both ask it.
    """
    return models == "pretrained" or assets.available(asset)


def feature_networks(models: str = "pretrained", *, clip=None, clip_description: str | None = None,
                     metrics: Sequence[str] = IMAGE_METRICS, device=None, mini_models=None, protocol=None):
    """The networks of the high-level metrics for a model set, and the metrics left out.

    Parameters
    ----------
    models : {"pretrained", "mini"}
        ``"pretrained"``: every network with its published weights; a missing asset
        raises :class:`~nsdlib.assets.MissingAssetError` (fetch with
        ``nsdlib fetch metrics`` and ``nsdlib fetch clip``). ``"mini"``: the small
        networks trained on mini-NSD (:mod:`nsdlib.mini.scene`: the scene probe and the
        contrastive CNN, labelled as such) for the AlexNet, Inception, EfficientNet and
        SwAV columns when ``mini_models`` holds them; otherwise the real networks when
        their weights happen to be cached, otherwise the metric is reported unavailable
        (the reason names the command that trains them); CLIP from ``clip`` only.
    clip : model, path, callable or FeatureNetwork, optional
        What :func:`clip_network` should use (a FeatureNetwork is used as it is). Default: CLIP ViT-L/14 from the "clip"
        asset for ``"pretrained"``; nothing (CLIP unavailable) for ``"mini"``.
    clip_description : str, optional
        Label of ``clip`` (default says whether it is ViT-L/14 or the small CLIP).
    metrics : sequence of str
        The metrics wanted; networks for the others are not loaded.
    mini_models : path, optional
        A mini model zoo folder (:func:`nsdlib.mini.zoo.locate`); used with ``models="mini"``
        when it holds the scene networks (``<folder>/scene/``).
    protocol : {"brain-diffuser", "mindeye"}, optional
        Whose inputs and weights (:mod:`nsdlib.protocols`); default ``"brain-diffuser"``.

    Returns
    -------
    networks : list of FeatureNetwork
    unavailable : dict
        Metric -> the reason it cannot be computed here.
    """
    proto = get_protocol(protocol)
    if models not in ("pretrained", "mini"):
        raise ValueError(f"models must be 'pretrained' or 'mini'; found {models!r}")
    wanted = set(metrics) & (set(IDENTIFICATION_METRICS) | set(DISTANCE_METRICS))
    networks, unavailable = [], {}
    if models == "mini" and mini_models is not None and wanted & set(METRIC_ASSETS):
        from .mini import scene  # deferred: imports torch

        if scene.scene_networks_present(mini_models):
            networks = scene.feature_networks(scene.load_scene_networks(mini_models), sorted(wanted))
            if proto.name != DEFAULT_PROTOCOL:
                note = f" (its own input, not the {proto.name} protocol's)"
                networks = [dataclasses.replace(n, description=n.description + note) for n in networks]
            wanted -= {m for net in networks for m in net.metrics}
    builders = [(("alexnet2", "alexnet5"), alexnet_network), (("inceptionv3",), inception_network),
                (("efficientnet",), efficientnet_network), (("swav",), swav_network)]
    for served, build in builders:
        if not wanted & set(served):
            continue
        asset = metric_asset(served[-1], proto)
        if not network_usable(models, asset):
            for m in served:
                if m in wanted:
                    unavailable[m] = (f"not available: the real {METRIC_LABELS[m]} weights (asset {asset!r}) are not "
                                      f"on this machine (`{assets.ASSETS[asset].fetch_command}` brings them), nor "
                                      "the mini scene networks that stand in for them (`nsdlib mini train-models` "
                                      "trains them)")
            continue
        networks.append(build(device=device, protocol=proto))  # "pretrained": MissingAssetError when absent
    if "clip" in wanted:
        if clip is None and models == "pretrained":
            networks.append(clip_network(assets.require("clip"), description="CLIP ViT-L/14 image embedding",
                                         device=device, protocol=proto))
        elif clip is None:
            unavailable["clip"] = "not available: no small CLIP was given for models='mini'"
        elif isinstance(clip, FeatureNetwork):
            networks.append(clip)
        else:
            desc = clip_description or ("CLIP ViT-L/14 image embedding" if models == "pretrained"
                                        else "small CLIP trained on mini-NSD (not ViT-L/14)")
            networks.append(clip_network(clip, description=desc, device=device, protocol=proto))
    return networks, unavailable



def evaluate_images(ground_truth, reconstructions, *, models: str | None = None, networks=None, clip=None,
                    metrics: Sequence[str] = IMAGE_METRICS, **kwargs) -> MetricReport:
    """One-call scoring: build the networks for ``models`` (if given) and evaluate.

    Parameters
    ----------
    ground_truth, reconstructions : ndarray of uint8, shape (n_images, height, width, 3)
    models : {"pretrained", "mini"}, optional
        Passed to :func:`feature_networks`; omitted: only ``networks`` (or none).
    networks : list of FeatureNetwork, optional
    clip : optional
        See :func:`feature_networks`.
    **kwargs
        Passed to :class:`ImageEvaluator` (size, ssim_mode, batch_size, device, progress).
    """
    unavailable = {}
    if networks is None:
        networks = []
        if models is not None:
            networks, unavailable = feature_networks(models, clip=clip, metrics=metrics, device=kwargs.get("device"),
                                                     protocol=kwargs.get("protocol"))
    ev = ImageEvaluator(ground_truth, networks=networks, unavailable=unavailable, **kwargs)
    return ev.evaluate(reconstructions, metrics=metrics)
