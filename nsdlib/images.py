"""Image batches: checking, resizing and converting them — the only home of these operations.

An image batch is an array of shape ``(n_images, height, width, 3)``, RGB, channels last
(NHWC): ``uint8`` in 0-255 wherever images are stored, shown or scored. Models take float
tensors of shape ``(n_images, 3, height, width)`` (NCHW) in 0-1 (or -1..1 for the diffusion
VAE); :func:`to_tensor` and :func:`to_uint8` convert between the two.

Filters
-------
Resizing changes the numbers that follow it, so :func:`resize` takes the filter as an
explicit argument, and each use keeps the filter of the implementation it reproduces:

``"pil-bicubic"``
    Pillow's bicubic filter on uint8 images, one image at a time, uint8 out. The comparison
    size of the low-level metrics (PixCorr, SSIM; :mod:`nsdlib.metrics`): Brain-Diffuser
    resizes reconstructions with Pillow before scoring them, and the paper's numbers come
    from its code.
``"torch-bicubic"``
    ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``, clamped to the input
    range (bicubic weights overshoot). The diffusion VAE's input
    (:func:`nsdlib.diffusion.vae_input`): the first guesses enter Versatile Diffusion at 512
    (mini: 64) pixels, resized in 0-1 floats with no rounding in between.
``"torch-bilinear"``
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``. The feature
    networks' 224 x 224 input (:mod:`nsdlib.features`), like torchvision's resize of a PIL
    image in Brain-Diffuser's evaluation; and the mini model zoo's training images
    (64 -> 32 pixels for the small VDVAE, :mod:`nsdlib.mini.zoo`), resized as 0-255 floats
    and rounded back to uint8.
``"torch-bilinear-plain"``
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=False)``: what
    ``torchvision.transforms.Resize`` did to a tensor before torchvision 0.17 (MindEye's
    evaluation, torchvision 0.16). Every resize of the ``"mindeye"`` metric protocol
    (:mod:`nsdlib.protocols`), on float tensors with no rounding in between.

All filters use ``align_corners=False`` semantics (pixel centres), and resizing to the size
an image already has returns it unchanged (no filter is applied).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FILTERS",
    "check_images",
    "resize",
    "to_tensor",
    "to_uint8",
    "to_unit_float",
]

FILTERS = ("pil-bicubic", "torch-bicubic", "torch-bilinear", "torch-bilinear-plain")
_TORCH_MODES = {"torch-bicubic": "bicubic", "torch-bilinear": "bilinear", "torch-bilinear-plain": "bilinear"}


def check_images(images, name: str = "images", *, uint8: bool = True, size: int | None = None):
    """Check that ``images`` is a batch of RGB images, and return it unchanged.

    Nothing is copied or converted, so an ``h5py`` dataset or a memmap stays one (an object
    without a ``shape`` is turned into a numpy array first). Torch tensors in NHWC pass too.

    Parameters
    ----------
    images : array-like of shape (n_images, height, width, 3)
    name : str
        What the images are, for the error message ("ground truth", "first guesses").
    uint8 : bool
        Require dtype uint8 (0-255). False accepts any dtype.
    size : int, optional
        Require square images of this side.

    Returns
    -------
    images : the same object (or its numpy array)

    Raises
    ------
    ValueError
        Naming the expected and the found dtype and shape.
    """
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    shape = tuple(images.shape)
    dtype = getattr(images, "dtype", None)
    side = "height, width" if size is None else f"{int(size)}, {int(size)}"
    ok_shape = len(shape) == 4 and shape[-1] == 3 and (size is None or shape[1:3] == (size, size))
    ok_dtype = not uint8 or dtype == np.uint8
    if not (ok_shape and ok_dtype):
        kind = "uint8 images" if uint8 else "images"
        scale = " in 0-255" if uint8 else ""
        raise ValueError(f"{name}: expected {kind} of shape (n, {side}, 3){scale}; "
                         f"found {dtype} array of shape {shape}")
    return images


def resize(images, size: int, *, filter: str, batch_size: int = 256):
    """Resize a batch of images to ``size x size`` with the named filter.

    Parameters
    ----------
    images : ndarray of uint8, shape (n_images, height, width, 3), or torch.Tensor of shape (n_images, 3, height, width)
        A uint8 batch comes back uint8 (any filter). A float tensor (NCHW, values in 0-1)
        comes back a tensor of the same dtype and device, unrounded (torch filters only).
    size : int
        Side of the output, in pixels.
    filter : {"pil-bicubic", "torch-bicubic", "torch-bilinear", "torch-bilinear-plain"}
        See the module docstring for which use takes which filter, and why.
    batch_size : int
        Images resized at once (uint8 input to the torch filters), to bound memory.

    Returns
    -------
    ndarray of uint8, shape (n_images, size, size, 3), or torch.Tensor of shape (n_images, 3, size, size)
        ``images`` itself when it already has that size.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; found {filter!r}")
    size = int(size)
    if not isinstance(images, np.ndarray) and hasattr(images, "permute"):  # a torch tensor, NCHW
        if filter == "pil-bicubic":
            raise ValueError("filter 'pil-bicubic' resizes uint8 arrays (n, height, width, 3), not tensors; "
                             "use a torch filter for a tensor")
        return images if tuple(images.shape[-2:]) == (size, size) else _interpolate(images, size, filter)
    images = np.asarray(check_images(images))
    if images.shape[1:3] == (size, size):
        return images
    if filter == "pil-bicubic":
        return _pil_bicubic(images, size)
    return _torch_uint8(images, size, filter, batch_size)


def _pil_bicubic(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC))
    return out


def _interpolate(x, size: int, filter: str):
    """A float NCHW tensor resized by torch (antialiased but for the plain filter); bicubic clamped to 0-1."""
    import torch.nn.functional as F

    x = F.interpolate(x, size=(size, size), mode=_TORCH_MODES[filter], antialias=filter != "torch-bilinear-plain",
                      align_corners=False)
    return x.clamp(0, 1) if filter == "torch-bicubic" else x


def _torch_uint8(images: np.ndarray, size: int, filter: str, batch_size: int) -> np.ndarray:
    """uint8 NHWC resized by torch as 0-255 floats, rounded back to uint8."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(images), int(batch_size)):
        x = torch.from_numpy(images[start:start + int(batch_size)]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode=_TORCH_MODES[filter],
                          antialias=filter != "torch-bilinear-plain", align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def to_tensor(images, *, device=None):
    """uint8 images (NHWC, 0-255) as a float32 tensor (NCHW, 0-1).

    Parameters
    ----------
    images : ndarray of uint8, shape (n_images, height, width, 3)
    device : torch device, optional
        The uint8 batch is moved there before it is converted (a quarter of the bytes).

    Returns
    -------
    torch.Tensor of float32, shape (n_images, 3, height, width)
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(check_images(images)))
    if device is not None:
        x = x.to(device)
    return x.permute(0, 3, 1, 2).float() / 255.0


def to_uint8(x, *, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A float tensor (NCHW) as uint8 images (NHWC, 0-255): clamped to the range, rounded.

    Parameters
    ----------
    x : torch.Tensor of shape (n_images, 3, height, width)
    value_range : (0, 1) or (-1, 1)
        The values that map to 0 and 255 (the diffusion VAE decodes to -1..1).

    Returns
    -------
    ndarray of uint8, shape (n_images, height, width, 3)
    """
    lo, hi = (float(v) for v in value_range)
    if (lo, hi) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"value_range must be (0, 1) or (-1, 1); found {value_range}")
    x = x.float()
    if lo == -1.0:
        x = x / 2 + 0.5
    x = (x.clamp(0, 1) * 255).round()
    return x.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


def to_unit_float(images) -> np.ndarray:
    """Images as float32 in 0-1: uint8 divided by 255; floats checked to be in 0-1 already.

    A float image is never divided by 255 a second time (which would feed a model an almost
    black image without an error).

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3)
        uint8 in 0-255, or floating point in 0-1.

    Returns
    -------
    ndarray of float32, shape (n_images, height, width, 3)
    """
    images = np.asarray(check_images(images, uint8=False))
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"floating-point images must be in 0-1; found values from {lo:g} to {hi:g} "
                             "(pass 0-255 images as uint8)")
        return np.clip(images, 0, 1).astype(np.float32)
    raise ValueError(f"images must be uint8 (0-255) or floating point (0-1); found dtype {images.dtype}")
