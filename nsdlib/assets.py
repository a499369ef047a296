"""Pretrained assets: where each one comes from, where it is kept, and how it is fetched.

Nothing here downloads on import or on a lookup. :func:`require` returns the local path of
an asset or raises :class:`MissingAssetError` naming the asset, its source and the
``nsdlib fetch`` command that brings it; only :func:`fetch` touches the network.
Assets live in ``$NSDLIB_ASSETS`` (default ``<default workdir>/assets``).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.error
import urllib.request
from pathlib import Path

from .config import default_workdir
from .store import atomic_write

__all__ = ["ASSETS", "Asset", "MissingAssetError", "assets_dir", "download", "fetch", "require"]


class MissingAssetError(FileNotFoundError):
    """A pretrained asset is not on this machine."""


@dataclasses.dataclass(frozen=True)
class Asset:
    """One pretrained asset.

    ``kind`` is ``"url"`` (one file, ``source`` a URL), ``"hf"`` (a Hugging Face
    repository snapshot, ``source`` its id) or ``"torchvision"`` (weights enums, fetched
    into torch's hub cache, ``source`` a comma-separated list of ``module.Enum.MEMBER``).
    """

    name: str
    kind: str
    source: str
    filename: str
    fetch_command: str
    description: str
    size_bytes: int | None = None
    allow_patterns: tuple[str, ...] | None = None


ASSETS: dict[str, Asset] = {}


def register(asset: Asset) -> Asset:
    ASSETS[asset.name] = asset
    return asset


register(Asset(
    "vdvae", "url",
    "https://openaipublic.blob.core.windows.net/very-deep-vaes-assets/vdvae-assets-2/imagenet64-iter-1600000-model-ema.th",
    "vdvae/imagenet64-iter-1600000-model-ema.th", "nsdlib fetch vdvae",
    "VDVAE ImageNet-64 EMA checkpoint (Child 2021), 125,005,860 parameters",
))
register(Asset(
    "clip", "hf", "openai/clip-vit-large-patch14", "clip-vit-large-patch14", "nsdlib fetch clip",
    "CLIP ViT-L/14 (OpenAI), text and vision towers",
    allow_patterns=("*.json", "*.txt", "model.safetensors"),
))
register(Asset(
    "vd", "hf", "shi-labs/versatile-diffusion", "versatile-diffusion", "nsdlib fetch vd",
    "Versatile Diffusion v1.0 (Xu et al. 2023): VAE, image and text UNets, CLIP encoders",
    allow_patterns=("*.json", "*.txt", "image_unet/*", "text_unet/*", "vae/*", "scheduler/*",
                    "tokenizer/*", "text_encoder/*", "image_encoder/*", "image_feature_extractor/*"),
))
register(Asset(
    "swav", "url", "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
    "metrics/swav_800ep_pretrain.pth.tar", "nsdlib fetch metrics",
    "SwAV ResNet-50 (Caron et al. 2020), 800-epoch pretraining",
))
register(Asset(
    "torchvision-metrics", "torchvision",
    "alexnet.AlexNet_Weights.IMAGENET1K_V1,inception.Inception_V3_Weights.IMAGENET1K_V1,"
    "efficientnet.EfficientNet_B1_Weights.IMAGENET1K_V1",
    "torch-hub", "nsdlib fetch metrics",
    "torchvision AlexNet, InceptionV3 and EfficientNet-B1 ImageNet weights",
))
register(Asset(
    "torchvision-efficientnet-v2", "torchvision", "efficientnet.EfficientNet_B1_Weights.IMAGENET1K_V2",
    "torch-hub", "nsdlib fetch metrics",
    "torchvision EfficientNet-B1 IMAGENET1K_V2 weights (MindEye's evaluation protocol)",
))


def assets_dir() -> Path:
    """Folder holding pretrained assets (``$NSDLIB_ASSETS`` or ``<workdir>/assets``)."""
    env = os.environ.get("NSDLIB_ASSETS")
    return Path(env).expanduser() if env else default_workdir() / "assets"


def _get(name: str) -> Asset:
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def local_path(name: str) -> Path:
    asset = _get(name)
    if asset.kind == "torchvision":
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    return assets_dir() / asset.filename


def _present(asset: Asset, path: Path) -> bool:
    if asset.kind == "url":
        return path.is_file()
    if asset.kind == "hf":
        return (path / ".complete").is_file()
    if asset.kind == "torchvision":
        return all((path / Path(_tv_weights(s).url).name).is_file() for s in asset.source.split(","))
    raise ValueError(asset.kind)


def available(name: str) -> bool:
    """Whether the asset is on this machine (no network access)."""
    return _present(_get(name), local_path(name))


def require(name: str) -> Path:
    """The local path of an asset, or one clear error saying how to fetch it."""
    asset = _get(name)
    path = local_path(name)
    if not _present(asset, path):
        raise MissingAssetError(
            f"pretrained asset {name!r} ({asset.description}) is not at {path}; it comes from "
            f"{asset.source}. Fetch it with `{asset.fetch_command}` on a machine with internet "
            f"(set NSDLIB_ASSETS to keep assets elsewhere), or use models='mini'."
        )
    return path


def _tv_weights(spec: str):
    import importlib

    module, enum, member = spec.split(".")
    return getattr(getattr(importlib.import_module(f"torchvision.models.{module}"), enum), member)


def download(url: str, dest: Path, *, expected_size: int | None = None, desc: str | None = None) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, resuming a partial download.

    The partial file is kept as ``dest.part``; the finished file is renamed into place
    only once its size matches the server's (or ``expected_size``).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        # 416: nothing after byte `have`, so the partial file is already whole (a run died before renaming)
        if expected_size is not None and have != expected_size:
            raise OSError(f"{part} has {have} bytes but {url} should have {expected_size}; delete it and "
                          "run the command again") from None
        os.replace(part, dest)
        return dest
    with resp:
        if have and resp.status != 206:  # server ignored the range: start again
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total is not None else expected_size
        with open(part, "ab" if have else "wb") as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=desc or dest.name
        ) as bar:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    want = expected_size or total
    if want is not None and size != want:
        raise OSError(f"download of {url} stopped at {size} of {want} bytes; run the command again to resume")
    os.replace(part, dest)
    return dest


def fetch(name: str) -> Path:
    """Download an asset where there is internet (idempotent: a present asset is kept)."""
    asset = _get(name)
    path = local_path(name)
    if _present(asset, path):
        return path
    if asset.kind == "url":
        return download(asset.source, path, expected_size=asset.size_bytes, desc=name)
    if asset.kind == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(asset.source, local_dir=path, allow_patterns=list(asset.allow_patterns or ["*"]))
        with atomic_write(path / ".complete", "w") as fh:
            fh.write(asset.source + "\n")
        return path
    if asset.kind == "torchvision":
        for spec in asset.source.split(","):
            _tv_weights(spec).get_state_dict(progress=True)
        return path
    raise ValueError(asset.kind)
