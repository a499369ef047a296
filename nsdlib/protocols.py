"""Evaluation protocols: the named chains that turn images into the eight metrics, and the card
that says under which one a table's numbers were computed.

The same reconstructions score differently under different evaluation code (on identical test
pairs MindEye's chain moves SSIM from 0.41 to 0.60), so every number nsdlib reports carries the
name of the chain that made it, and numbers of different chains are never compared
(:func:`check_same_protocol`). Two chains are defined, each reproducing one project's
evaluation code:

``"brain-diffuser"`` (the default; Brain-Diffuser, ``scripts/eval_extract_features.py`` and
    ``scripts/evaluate_reconstruction.py``)
    PixCorr and SSIM at the ground truth's size (425 for NSD, 128 for mini-NSD), the
    reconstructions resized to it with Pillow's bicubic filter (uint8), in float64; SSIM in
    its column mode (a grayscale image passed with ``multichannel=True`` to scikit-image
    < 0.20). Every feature network fed 224 x 224 images resized with torchvision's
    antialiased bilinear filter (PIL images), EfficientNet-B1 with its IMAGENET1K_V1
    weights, CLIP in float32; identification on float32 correlations.
``"mindeye"`` (MindEye2, ``src/final_evaluations.ipynb`` at commit c184718, with the
    versions its ``src/setup.sh`` pins: torchvision 0.16, scikit-image 0.22)
    Every image first resized to 256 x 256 with torchvision's tensor ``Resize`` (bilinear,
    *no* antialiasing: the tensor default before torchvision 0.17), kept as unrounded floats.
    PixCorr and SSIM after a second resize to 425 (same filter): PixCorr ``np.corrcoef`` of
    the flattened RGB values; SSIM on ``rgb2gray`` images in float32 (scikit-image keeps
    float32), with the call's ``multichannel=True`` silently ignored by scikit-image 0.22, so
    the true 2-D SSIM. AlexNet at 256 (the resize is a no-op), InceptionV3 at 342,
    EfficientNet-B1 with its IMAGENET1K_V2 weights (``EfficientNet_B1_Weights.DEFAULT``) at
    255, SwAV at 224, CLIP ViT-L/14 at 224 (OpenAI's ``clip.load``: float16 on a GPU,
    float32 on the CPU), all with the same non-antialiased bilinear resize from 256.
    Identification counts as Brain-Diffuser's does (for each reconstruction, the other
    ground truths correlating less with it than its own, strictly), on float64 correlations
    (``np.corrcoef``). What the chain does not include: MindEye2's own ground-truth file
    (the stimuli stored at 224 in float16) and its blending of reconstructions with the
    blurry ones; both are inputs, not scoring.

A :class:`ProtocolCard` names, besides the chain, the image set (with a digest of its image
ids), how repeats were combined, the seed, samples per image and the selection rule, so that
a table can print what its rows are.

This module holds definitions only (floor 1); :mod:`nsdlib.metrics` and
:mod:`nsdlib.features` compute with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable

import numpy as np

__all__ = [
    "BRAIN_DIFFUSER",
    "DEFAULT_PROTOCOL",
    "MINDEYE",
    "PROTOCOLS",
    "Protocol",
    "ProtocolCard",
    "ProtocolMismatchError",
    "Resize",
    "check_same_protocol",
    "get_protocol",
    "ids_digest",
    "protocol_card",
]

#: The networks whose input a protocol sets (CLIP included).
FEATURE_NETWORKS = ("alexnet", "inceptionv3", "efficientnet", "swav", "clip")


@dataclasses.dataclass(frozen=True)
class Resize:
    """One resize step: to ``size x size`` with an :func:`nsdlib.images.resize` filter.

    ``size`` None: the ground truth's own size (and for CLIP: the model's input size).
    """

    size: int | None
    filter: str

    def describe(self) -> str:
        return f"{self.size or 'own size'} {self.filter}"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named evaluation chain (see the module docstring for the two there are).

    Attributes
    ----------
    name, label, source : str
        Short name, the project whose code it reproduces, where that code is.
    common : tuple of Resize
        Applied to every image (ground truth and reconstruction) before anything else, as
        unrounded floats in 0-1.
    pixel : Resize
        What PixCorr and SSIM compare (after ``common``).
    pixel_dtype : {"float64", "float32"}
        The precision of the pixels and of SSIM's filters.
    ssim_mode : {"columns", "2d"}
        :func:`nsdlib.metrics.ssim`'s mode.
    feature_inputs : tuple of (network, Resize)
        Each network's input (after ``common``), one of :data:`FEATURE_NETWORKS`.
    efficientnet_weights : str
        torchvision's weights of EfficientNet-B1 (``"IMAGENET1K_V1"`` or ``"IMAGENET1K_V2"``).
    clip_half_on_gpu : bool
        CLIP runs in float16 on a GPU (OpenAI's ``clip.load``).
    identification_dtype : {"float32", "float64"}
        The precision of the correlations behind 2-way identification and the distances.
    """

    name: str
    label: str
    source: str
    common: tuple[Resize, ...]
    pixel: Resize
    pixel_dtype: str
    ssim_mode: str
    feature_inputs: tuple[tuple[str, Resize], ...]
    efficientnet_weights: str
    clip_half_on_gpu: bool
    identification_dtype: str

    def feature_input(self, network: str) -> tuple[Resize, ...]:
        """The resize steps before ``network`` (one of :data:`FEATURE_NETWORKS`): ``common`` then its own."""
        own = dict(self.feature_inputs)
        if network not in own:
            raise ValueError(f"protocol {self.name!r} has no input for network {network!r}; "
                             f"known: {', '.join(own)}")
        return (*self.common, own[network])

    def chain(self, pixel_size: int | None = None) -> dict[str, str]:
        """Per metric family, the preprocessing in words (for the card and for captions).

        ``pixel_size`` overrides the pixel metrics' size (the evaluator's ``size``).
        """
        first = " -> ".join(r.describe() for r in self.common)
        first = f"{first} -> " if first else ""
        size = pixel_size or self.pixel.size or "ground-truth size"
        ssim = "2-D SSIM" if self.ssim_mode == "2d" else "column SSIM (mean of 1-D SSIMs)"
        out = {"pixcorr, ssim": f"{first}{size} {self.pixel.filter}; {self.pixel_dtype}; {ssim}"}
        for net, step in self.feature_inputs:
            extra = {"efficientnet": f", {self.efficientnet_weights} weights",
                     "clip": ", float16 on GPU" if self.clip_half_on_gpu else ", float32"}.get(net, "")
            out[net] = f"{first}{step.describe()}{extra}"
        out["identification"] = f"Pearson r in {self.identification_dtype}, ties fail"
        return out


_BD_FEATURE = Resize(224, "torch-bilinear")
_ME = "torch-bilinear-plain"

BRAIN_DIFFUSER = Protocol(
    name="brain-diffuser", label="Brain-Diffuser's evaluation code",
    source="ozcelikfu/brain-diffuser scripts/eval_extract_features.py and evaluate_reconstruction.py",
    common=(), pixel=Resize(None, "pil-bicubic"), pixel_dtype="float64", ssim_mode="columns",
    feature_inputs=(("alexnet", _BD_FEATURE), ("inceptionv3", _BD_FEATURE), ("efficientnet", _BD_FEATURE),
                    ("swav", _BD_FEATURE), ("clip", Resize(None, "torch-bilinear"))),
    efficientnet_weights="IMAGENET1K_V1", clip_half_on_gpu=False, identification_dtype="float32",
)

MINDEYE = Protocol(
    name="mindeye", label="MindEye2's evaluation code",
    source="MedARC-AI/MindEyeV2 src/final_evaluations.ipynb @ c184718 (torchvision 0.16, scikit-image 0.22)",
    common=(Resize(256, _ME),), pixel=Resize(425, _ME), pixel_dtype="float32", ssim_mode="2d",
    feature_inputs=(("alexnet", Resize(256, _ME)), ("inceptionv3", Resize(342, _ME)),
                    ("efficientnet", Resize(255, _ME)), ("swav", Resize(224, _ME)), ("clip", Resize(224, _ME))),
    efficientnet_weights="IMAGENET1K_V2", clip_half_on_gpu=True, identification_dtype="float64",
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (BRAIN_DIFFUSER, MINDEYE)}
DEFAULT_PROTOCOL = BRAIN_DIFFUSER.name


def get_protocol(protocol: str | Protocol | None = None) -> Protocol:
    """The :class:`Protocol` of a name (None: the default, ``"brain-diffuser"``)."""
    if isinstance(protocol, Protocol):
        return protocol
    name = DEFAULT_PROTOCOL if protocol is None else protocol
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; found {name!r}")
    return PROTOCOLS[name]


# ---------------------------------------------------------------------- card
def ids_digest(ids) -> str:
    """A 16-hex digest of an ordered list of image ids (integers): the same ids in the same order, the same digest."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"image ids must be a 1-D sequence of integers; found shape {arr.shape}, dtype {arr.dtype}")
    return hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ProtocolCard:
    """What a table's numbers are: the protocol and everything else that moves them.

    Attributes
    ----------
    protocol : str
        A name of :data:`PROTOCOLS`, or for rows copied from a paper the protocol it claims.
    image_set : str
        "982 shared images, repeats averaged", "1000 shared images", "the run's test set", ...
    n_images : int
    ids_digest : str
        :func:`ids_digest` of the image ids in scoring order ("" when unknown).
    repeats : str
        How an image's repeated trials were combined ("betas averaged over repeats").
    chain : tuple of (str, str)
        :meth:`Protocol.chain`: per metric family, the preprocessing.
    seed : int or None
    samples_per_image : int
    selection : str
        How one of several samples was chosen ("none").
    """

    protocol: str
    image_set: str
    n_images: int
    ids_digest: str
    repeats: str
    chain: tuple[tuple[str, str], ...]
    seed: int | None = None
    samples_per_image: int = 1
    selection: str = "none"

    @property
    def key(self) -> str:
        """A 12-hex digest of the whole card: two rows with the same key were computed the same way."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["chain"] = {k: v for k, v in self.chain}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ProtocolCard:
        return cls(**{**d, "chain": tuple(dict(d["chain"]).items())})

    def lines(self) -> list[str]:
        """The card in words, one line per entry (a table's caption or footnote)."""
        label = PROTOCOLS[self.protocol].label if self.protocol in PROTOCOLS else "as claimed by its source"
        out = [f"protocol: {self.protocol} ({label})",
               f"images: {self.image_set}, n = {self.n_images}, ids {self.ids_digest or 'unknown'}",
               f"repeats: {self.repeats}",
               f"samples per image: {self.samples_per_image}; selection: {self.selection}; seed: {self.seed}"]
        return out + [f"{k}: {v}" for k, v in self.chain]


def protocol_card(protocol: str | Protocol | None, *, image_set: str, ids, repeats: str, seed: int | None = None,
                  samples_per_image: int = 1, selection: str = "none", pixel_size: int | None = None) -> ProtocolCard:
    """The card of one scoring.

    Parameters
    ----------
    protocol : str or Protocol
    image_set : str
        What the images are, in words.
    ids : sequence of int
        The image ids in scoring order (their digest goes on the card).
    repeats : str
        How repeats were combined.
    seed : int, optional
    samples_per_image : int
    selection : str
        "none" unless one of several samples per image was picked (then: by what).
    pixel_size : int, optional
        The pixel metrics' size when the evaluator overrode the protocol's.

    Returns
    -------
    ProtocolCard
    """
    p = get_protocol(protocol)
    ids = np.asarray(ids)
    if samples_per_image < 1:
        raise ValueError(f"samples_per_image must be at least 1; found {samples_per_image}")
    if samples_per_image > 1 and selection == "none":
        raise ValueError(f"{samples_per_image} samples per image need a selection rule (how one was chosen); "
                         "found 'none'")
    return ProtocolCard(p.name, image_set, len(ids), ids_digest(ids), repeats, tuple(p.chain(pixel_size).items()),
                        None if seed is None else int(seed), int(samples_per_image), selection)


# ------------------------------------------------------------------ checking
class ProtocolMismatchError(ValueError):
    """Numbers of different evaluation protocols were to be compared."""


def _protocol_of(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Protocol):
        return item.name
    if isinstance(item, dict):
        if "protocol" not in item:
            raise ProtocolMismatchError(f"expected a protocol name in {sorted(item)}; found none")
        return str(item["protocol"])
    name = getattr(item, "protocol", None)
    if name is None:
        raise ProtocolMismatchError(f"expected a report, card, row or protocol name; found {type(item).__name__} "
                                    "without a protocol")
    return name if isinstance(name, str) else _protocol_of(name)


def check_same_protocol(items: Iterable, what: str = "numbers") -> str:
    """The protocol all ``items`` share, or :class:`ProtocolMismatchError` naming the first two that differ.

    Parameters
    ----------
    items : iterable
        MetricReports, ProtocolCards, results rows (dicts with a ``"protocol"`` key), Protocols or names.
    what : str
        What is being compared, for the message ("rows of this table").

    Returns
    -------
    str
    """
    names = [_protocol_of(item) for item in items]
    if not names:
        raise ValueError(f"no {what} to compare")
    for name in names[1:]:
        if name != names[0]:
            raise ProtocolMismatchError(
                f"{what} come from different evaluation protocols: {names[0]!r} and {name!r}; scores of "
                "different protocols are not comparable (rescore both under one, or show the protocol beside each)")
    return names[0]
