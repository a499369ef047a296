"""A very deep hierarchical VAE (VDVAE, Child 2021): model, checkpoints, latents.

Stage 1 of the paper predicts the latent variables of the first 15 or 31 *decoder* blocks
of the ImageNet-64 VDVAE from fMRI betas, and lets the VDVAE decode them (with the finer
blocks sampled from the prior) into a blurry first guess. This module holds the model,
written from the VDVAE paper and its published hyper-parameters, and the array-level
operations stage 1 needs:

- :class:`VDVAEConfig` with two presets: :data:`IMAGENET64` (the public checkpoint's
  hyper-parameters; its ``state_dict`` has exactly the names and shapes of
  ``imagenet64-iter-1600000-model-ema.th``) and :data:`MINI` (a small model for mini-NSD);
- :class:`VDVAE`, an ``nn.Module``: an encoder of bottleneck residual blocks (bottom-up,
  average-pool downsampling) and a decoder of top-down blocks, each with a posterior
  ``q(z | x, above)``, a prior ``p(z | above)``, a 1x1 projection of ``z`` into the
  residual stream and a residual block; a discretized mixture of logistics as output;
- :func:`load_vdvae` / :func:`save_vdvae`: ``torch.load(weights_only=True)``, ``module.``
  prefixes stripped, strict key and shape checks with a readable error;
- :func:`encode_latents` (images -> the flattened posterior latents of the first N
  decoder blocks) and :func:`decode_latents` (flattened latents of the first N blocks ->
  uint8 images, the remaining blocks sampled from the prior at a temperature), both
  batched, with progress bars, and deterministic under a seed whatever the batch size.

Conventions
-----------
Images are ``uint8`` arrays of shape ``(n, image_size, image_size, 3)``, 0-255, RGB (NHWC),
as everywhere in nsdlib. The encoder sees ``(image - shift) * scale`` (ImageNet-64:
shift -115.92961967, scale 1/69.37404, i.e. ``(x - 115.93) / 69.37``). The output
likelihood works on pixels mapped to [-1, 1] (``x / 127.5 - 1``).

Latents: block ``i`` of the decoder (resolution ``r``) owns a latent tensor of shape
``(zdim, r, r)``. Flattening the first N blocks concatenates each block's tensor reshaped
in (channel, row, column) order, block after block, coarse to fine. For ImageNet-64 the
first 15 blocks give 13,344 values, the first 31 give 91,168 and all 75 give 1,451,040.
Variances are parameterised by their log standard deviation, as in the VDVAE paper.

Deterministic decoding. Sampling pixels from the mixture of logistics would make every
first guess noisy; :meth:`VDVAE.decode` instead takes, at each pixel, the most probable
mixture component (largest logit) and that component's location (the mean of a logistic),
applying the autoregressive colour coefficients to those means, and rounds
``(x + 1) * 127.5`` to the nearest integer. Prior samples for the blocks that are not
given come from one random generator per image, seeded from ``(seed, image index)``, so
a result does not depend on the batch size or the device.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .guard import TORCH_CHECKPOINT, reading
from .images import check_images
from .store import atomic_path

__all__ = [
    "IMAGENET64",
    "MINI",
    "CheckpointError",
    "VDVAE",
    "VDVAEConfig",
    "block_slices",
    "decode_latents",
    "encode_latents",
    "flatten_latents",
    "latent_shapes",
    "load_state_dict_checked",
    "load_vdvae",
    "n_latents",
    "parse_blocks",
    "reconstruct_images",
    "save_vdvae",
    "unflatten_latents",
]


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


# ------------------------------------------------------------------------------ config
_BLOCK_RE = re.compile(r"^(\d+)(?:([xmd])(\d+))?$")


def parse_blocks(spec: str) -> list[tuple[int, int | None, int | None]]:
    """Expand a VDVAE block string into one ``(resolution, down_rate, mixin)`` per block.

    ``"64x11"`` is eleven blocks at 64x64; ``"64d2"`` one block at 64x64 whose output is
    average-pooled by 2 (encoder); ``"4m1"`` one block at 4x4 that first adds the
    nearest-neighbour upsampled 1x1 state (decoder); ``"8"`` one block at 8x8.

    Parameters
    ----------
    spec : str
        Comma-separated items such as ``"1x2,4m1,4x3"``.

    Returns
    -------
    list of (int, int or None, int or None)
    """
    out: list[tuple[int, int | None, int | None]] = []
    for item in spec.split(","):
        m = _BLOCK_RE.match(item.strip())
        if not m:
            raise ValueError(f"block item {item!r} in {spec!r} is not of the form R, RxN, RdK or RmM")
        res, op, num = int(m.group(1)), m.group(2), m.group(3)
        if op == "x":
            out += [(res, None, None)] * int(num)
        elif op == "d":
            out.append((res, int(num), None))
        elif op == "m":
            out.append((res, None, int(num)))
        else:
            out.append((res, None, None))
    return out


@dataclasses.dataclass(frozen=True)
class VDVAEConfig:
    """Hyper-parameters of a VDVAE.

    Parameters
    ----------
    image_size : int
        Height and width of the (square) images, pixels.
    width : int
        Channels of the residual streams of encoder and decoder.
    zdim : int
        Latent channels per decoder block.
    bottleneck_multiple : float
        Bottleneck channels of every residual block, as a fraction of its input channels
        (of ``width``; the posterior's input has ``2 * width`` channels but the same bottleneck).
    enc_blocks, dec_blocks : str
        Block strings (see :func:`parse_blocks`); the decoder's blocks run coarse to fine.
    no_bias_above : int
        The decoder starts each resolution ``r <= no_bias_above`` from a learned tensor.
    n_mixtures : int
        Components of the discretized mixture of logistics of the output.
    shift, scale : float
        Encoder input normalisation: ``(pixels + shift) * scale``.
    """

    image_size: int = 64
    width: int = 512
    zdim: int = 16
    bottleneck_multiple: float = 0.25
    enc_blocks: str = "64x11,64d2,32x20,32d2,16x9,16d2,8x8,8d2,4x7,4d4,1x5"
    dec_blocks: str = "1x2,4m1,4x3,8m4,8x7,16m8,16x15,32m16,32x31,64m32,64x12"
    no_bias_above: int = 64
    n_mixtures: int = 10
    shift: float = -115.92961967
    scale: float = 1.0 / 69.37404

    def __post_init__(self):
        enc, dec = parse_blocks(self.enc_blocks), parse_blocks(self.dec_blocks)
        if enc[0][0] != self.image_size:
            raise ValueError(f"the encoder must start at image_size {self.image_size}; "
                             f"enc_blocks starts at {enc[0][0]}")
        if dec[-1][0] != self.image_size:
            raise ValueError(f"the decoder must end at image_size {self.image_size}; dec_blocks ends at {dec[-1][0]}")
        enc_res = {self.image_size}
        res = self.image_size
        for r, down, _ in enc:
            if r != res:
                raise ValueError(f"enc_blocks has a block at {r}x{r} where the stream is {res}x{res}")
            if down:
                if res % down:
                    raise ValueError(f"enc_blocks downsamples {res}x{res} by {down}, which does not divide it")
                res //= down
                enc_res.add(res)
        seen: set[int] = set()
        prev = 0
        for r, _, mixin in dec:
            if r < prev:
                raise ValueError(f"dec_blocks must run coarse to fine; found {r}x{r} after {prev}x{prev}")
            if r not in enc_res:
                raise ValueError(f"dec_blocks has a block at {r}x{r} but the encoder yields no {r}x{r} activations "
                                 f"(it yields {sorted(enc_res)})")
            if mixin is not None and (mixin not in seen or r % mixin):
                raise ValueError(f"dec_blocks item {r}m{mixin} mixes in a resolution not decoded before it")
            seen.add(r)
            prev = r
        if self.width < 1 or self.zdim < 1 or self.n_mixtures < 1:
            raise ValueError("width, zdim and n_mixtures must be positive")

    @property
    def bottleneck(self) -> int:
        """Bottleneck channels of every residual block."""
        return int(self.width * self.bottleneck_multiple)

    @property
    def n_dec_blocks(self) -> int:
        return len(parse_blocks(self.dec_blocks))

    @property
    def n_enc_blocks(self) -> int:
        return len(parse_blocks(self.enc_blocks))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VDVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VDVAE hyper-parameter(s) {', '.join(unknown)}")
        return cls(**d)


#: The hyper-parameters of the public ImageNet-64 checkpoint (125,005,860 parameters).
IMAGENET64 = VDVAEConfig()

#: A small VDVAE for mini-NSD's 32x32 stimuli. Its decoder follows ImageNet-64's block
#: schedule at half the resolution (1, 2, 4, 8, 16, 32 instead of 1, 4, 8, 16, 32, 64), so
#: the first 15 blocks end with the first block at a quarter of the image size and the
#: first 31 with the first block at half of it, as in ImageNet-64: n_layers 15 and 31 keep
#: their coarse-to-fine meaning. 37 decoder blocks; zdim 8, so 15 blocks give 1,680
#: latent values and 31 give 11,408.
MINI = VDVAEConfig(
    image_size=32, width=64, zdim=8, bottleneck_multiple=0.25,
    enc_blocks="32x2,32d2,16x2,16d2,8x3,8d2,4x3,4d2,2x2,2d2,1x2",
    dec_blocks="1x2,2m1,2x3,4m2,4x7,8m4,8x15,16m8,16x3,32m16,32x2",
    no_bias_above=32, n_mixtures=10,
)


def latent_shapes(config: VDVAEConfig, n_blocks: int | None = None) -> list[tuple[int, int, int]]:
    """``(zdim, r, r)`` of the latent tensor of each of the first ``n_blocks`` decoder blocks."""
    blocks = parse_blocks(config.dec_blocks)
    n_blocks = len(blocks) if n_blocks is None else _check_n_blocks(config, n_blocks)
    return [(config.zdim, r, r) for r, _, _ in blocks[:n_blocks]]


def n_latents(config: VDVAEConfig, n_blocks: int | None = None) -> int:
    """Number of latent values of the first ``n_blocks`` decoder blocks (ImageNet-64: 15 -> 13,344)."""
    return sum(int(np.prod(s)) for s in latent_shapes(config, n_blocks))


def block_slices(config: VDVAEConfig, n_blocks: int | None = None) -> list[slice]:
    """Where each block's values lie in a flattened latent vector."""
    out, start = [], 0
    for shape in latent_shapes(config, n_blocks):
        size = int(np.prod(shape))
        out.append(slice(start, start + size))
        start += size
    return out


def _check_n_blocks(config: VDVAEConfig, n_blocks: int) -> int:
    total = config.n_dec_blocks
    if not isinstance(n_blocks, (int, np.integer)) or not 0 <= n_blocks <= total:
        raise ValueError(f"n_blocks must be an integer from 0 to {total} (the decoder's blocks); found {n_blocks!r}")
    return int(n_blocks)


def flatten_latents(zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-block latents ``(n, zdim, r, r)`` into ``(n, n_values)``, block after block."""
    return torch.cat([z.reshape(z.shape[0], -1) for z in zs], dim=1)


def unflatten_latents(flat: torch.Tensor, config: VDVAEConfig, n_blocks: int) -> list[torch.Tensor]:
    """Split ``(n, n_values)`` back into the per-block tensors of the first ``n_blocks`` blocks."""
    want = n_latents(config, n_blocks)
    if flat.ndim != 2 or flat.shape[1] != want:
        raise ValueError(f"latents for the first {n_blocks} decoder blocks must have shape (n, {want}); "
                         f"found {tuple(flat.shape)}")
    return [flat[:, s].reshape(flat.shape[0], *shape)
            for s, shape in zip(block_slices(config, n_blocks), latent_shapes(config, n_blocks))]


# ------------------------------------------------------------------------------ modules
class _Bottleneck(nn.Module):
    """GELU -> 1x1 -> GELU -> kxk -> GELU -> kxk -> GELU -> 1x1, optionally residual and pooled.

    ``k`` is 3 above 2x2 resolution and 1 at 2x2 and below, where a 3x3 kernel would see
    mostly padding.
    """

    def __init__(self, c_in: int, c_mid: int, c_out: int, *, use_3x3: bool, residual: bool,
                 down_rate: int | None = None, zero_last: bool = False, last_scale: float = 1.0):
        super().__init__()
        k = 3 if use_3x3 else 1
        self.c1 = nn.Conv2d(c_in, c_mid, 1)
        self.c2 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c3 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c4 = nn.Conv2d(c_mid, c_out, 1)
        self.residual = residual
        self.down_rate = down_rate
        with torch.no_grad():
            if zero_last:
                self.c4.weight.zero_()
                self.c4.bias.zero_()
            elif last_scale != 1.0:
                self.c4.weight.mul_(last_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.gelu(x))
        h = self.c2(F.gelu(h))
        h = self.c3(F.gelu(h))
        h = self.c4(F.gelu(h))
        out = x + h if self.residual else h
        if self.down_rate:
            out = F.avg_pool2d(out, kernel_size=self.down_rate, stride=self.down_rate)
        return out


class _Encoder(nn.Module):
    """Bottom-up path: a 3x3 input convolution and residual blocks; keeps the last
    activation of every resolution for the decoder's posteriors."""

    def __init__(self, config: VDVAEConfig):
        super().__init__()
        w = config.width
        self.in_conv = nn.Conv2d(3, w, 3, padding=1)
        blocks = parse_blocks(config.enc_blocks)
        scale = math.sqrt(1.0 / len(blocks))
        self.enc_blocks = nn.ModuleList(
            _Bottleneck(w, config.bottleneck, w, use_3x3=res > 2, residual=True, down_rate=down, last_scale=scale)
            for res, down, _ in blocks
        )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.in_conv(x)
        acts = {x.shape[2]: x}
        for block in self.enc_blocks:
            x = block(x)
            acts[x.shape[2]] = x
        return acts


class _DecBlock(nn.Module):
    """One top-down block: posterior ``enc``, prior ``prior``, ``z_proj`` and ``resnet``."""

    def __init__(self, config: VDVAEConfig, res: int, mixin: int | None, n_blocks: int):
        super().__init__()
        w, z, mid = config.width, config.zdim, config.bottleneck
        self.res, self.mixin, self.zdim = res, mixin, z
        use_3x3 = res > 2
        scale = math.sqrt(1.0 / n_blocks)
        self.enc = _Bottleneck(2 * w, mid, 2 * z, use_3x3=use_3x3, residual=False)
        self.prior = _Bottleneck(w, mid, 2 * z + w, use_3x3=use_3x3, residual=False, zero_last=True)
        self.z_proj = nn.Conv2d(z, w, 1)
        with torch.no_grad():
            self.z_proj.weight.mul_(scale)
        self.resnet = _Bottleneck(w, mid, w, use_3x3=use_3x3, residual=True, last_scale=scale)

    def forward(self, x, *, acts=None, z=None, eps=None, temperature=1.0, posterior_mean=False):
        """Advance the decoder state ``x`` by one block.

        With ``acts`` (encoder activations) ``z`` comes from the posterior; with ``z`` given
        it is used as is; otherwise it is drawn from the prior with its standard deviation
        multiplied by ``temperature``. ``eps`` is the standard-normal noise to use.

        Returns
        -------
        x : Tensor (n, width, r, r)
        z : Tensor (n, zdim, r, r)
        kl : Tensor (n, zdim, r, r) or None
            KL(q || p) per latent value, nats (only with ``acts``).
        """
        feats = self.prior(x)
        pm, plogs, xpp = feats[:, :self.zdim], feats[:, self.zdim:2 * self.zdim], feats[:, 2 * self.zdim:]
        kl = None
        if acts is not None:
            qm, qlogs = self.enc(torch.cat([x, acts], dim=1)).chunk(2, dim=1)
            z = qm if posterior_mean else qm + torch.exp(qlogs) * eps
            kl = _gaussian_kl(qm, qlogs, pm, plogs)
        elif z is None:
            z = pm + torch.exp(plogs) * temperature * eps
        x = x + xpp
        x = x + self.z_proj(z)
        return self.resnet(x), z, kl


def _gaussian_kl(m1, logs1, m2, logs2):
    """KL(N(m1, e^{2 logs1}) || N(m2, e^{2 logs2})) elementwise, nats."""
    return -0.5 + logs2 - logs1 + 0.5 * (torch.exp(2 * logs1) + (m1 - m2) ** 2) * torch.exp(-2 * logs2)


class _DMoLHead(nn.Module):
    """Discretized mixture of logistics over 256 levels per colour channel (PixelCNN++).

    Per pixel the 1x1 convolution gives ``n_mixtures`` logits and, for each of the three
    channels, ``n_mixtures`` locations, log-scales and colour coefficients. Channel 1's
    location moves by ``a * x0``, channel 2's by ``b * x0 + c * x1`` (a, b, c in [-1, 1]).
    """

    def __init__(self, width: int, n_mixtures: int):
        super().__init__()
        self.n_mixtures = n_mixtures
        self.out_conv = nn.Conv2d(width, n_mixtures * 10, 1)

    def _params(self, h):
        m = self.n_mixtures
        out = self.out_conv(h).permute(0, 2, 3, 1)  # (n, H, W, 10m)
        logits = out[..., :m]
        rest = out[..., m:].reshape(*out.shape[:3], 3, 3 * m)
        loc = rest[..., :m]
        log_s = rest[..., m:2 * m].clamp(min=-7.0)
        coef = torch.tanh(rest[..., 2 * m:])
        return logits, loc, log_s, coef

    def log_probs(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component log-probabilities of the 256-level bins of ``x`` (n, H, W, 3) in [-1, 1].

        Returns
        -------
        channel_lp : Tensor of shape (n, H, W, 3, n_mixtures)
            ``log P(x_c | x_<c, component k)`` for each channel ``c``.
        log_weights : Tensor of shape (n, H, W, n_mixtures)
            Log mixture weights.
        """
        logits, loc, log_s, coef = self._params(h)
        x = x.unsqueeze(-1)  # (n, H, W, 3, 1)
        m0 = loc[..., 0, :]
        m1 = loc[..., 1, :] + coef[..., 0, :] * x[..., 0, :]
        m2 = loc[..., 2, :] + coef[..., 1, :] * x[..., 0, :] + coef[..., 2, :] * x[..., 1, :]
        mean = torch.stack([m0, m1, m2], dim=3)
        centered = x - mean
        inv_s = torch.exp(-log_s)
        plus = inv_s * (centered + 1.0 / 255.0)
        minus = inv_s * (centered - 1.0 / 255.0)
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for x = -1 (level 0)
        log_one_minus_cdf_minus = -F.softplus(minus)  # for x = 1 (level 255)
        mid = inv_s * centered
        log_pdf_mid = mid - log_s - 2.0 * F.softplus(mid)  # log density at the bin centre
        inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
        lp = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, inner))
        return lp, torch.log_softmax(logits, dim=-1)

    def nll(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``x`` (n, H, W, 3) in [-1, 1], nats per dimension, per image."""
        lp, log_w = self.log_probs(h, x)
        ll = torch.logsumexp(lp.sum(dim=3) + log_w, dim=-1)  # (n, H, W)
        return -ll.sum(dim=(1, 2)) / (x.shape[1] * x.shape[2] * 3)

    def mode(self, h: torch.Tensor) -> torch.Tensor:
        """Deterministic image (n, H, W, 3) in [-1, 1]: the most probable component's location."""
        logits, loc, _, coef = self._params(h)
        k = logits.argmax(dim=-1, keepdim=True).unsqueeze(-2).expand(*loc.shape[:4], 1)  # (n, H, W, 3, 1)
        loc = loc.gather(-1, k).squeeze(-1)
        coef = coef.gather(-1, k).squeeze(-1)
        x0 = loc[..., 0].clamp(-1, 1)
        x1 = (loc[..., 1] + coef[..., 0] * x0).clamp(-1, 1)
        x2 = (loc[..., 2] + coef[..., 1] * x0 + coef[..., 2] * x1).clamp(-1, 1)
        return torch.stack([x0, x1, x2], dim=-1)


class _Decoder(nn.Module):
    """Top-down path: the decoder blocks, per-resolution starting tensors, output head."""

    def __init__(self, config: VDVAEConfig):
        super().__init__()
        self.config = config
        w = config.width
        blocks = parse_blocks(config.dec_blocks)
        self.dec_blocks = nn.ModuleList(_DecBlock(config, res, mixin, len(blocks)) for res, _, mixin in blocks)
        resolutions = sorted({res for res, _, _ in blocks})
        self.bias_res = [r for r in resolutions if r <= config.no_bias_above]
        self.bias_xs = nn.ParameterList(nn.Parameter(torch.zeros(1, w, r, r)) for r in self.bias_res)
        self.gain = nn.Parameter(torch.ones(1, w, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, w, 1, 1))
        self.out_net = _DMoLHead(w, config.n_mixtures)

    def run(self, n: int, *, acts=None, latents=None, n_blocks=None, noise=None, temperature=1.0,
            posterior_mean=False):
        """Run the first ``n_blocks`` blocks (all by default).

        ``acts``: encoder activations (posterior mode, for every block run). Otherwise
        ``latents``: tensors for the first ``len(latents)`` blocks; the others sample the
        prior. ``noise(shape)`` returns standard-normal noise of shape ``(n, *shape)``.

        Returns the final state (n, width, S, S) if every block ran, else None, the list
        of latents used and the list of KL tensors (posterior mode only).
        """
        device = self.gain.device
        dtype = self.gain.dtype
        if noise is None:
            def noise(shape):
                return torch.randn(n, *shape, device=device, dtype=dtype)
        xs = {r: b.expand(n, -1, -1, -1) for r, b in zip(self.bias_res, self.bias_xs)}
        stop = len(self.dec_blocks) if n_blocks is None else n_blocks
        zs, kls = [], []
        for i, block in enumerate(self.dec_blocks[:stop]):
            r = block.res
            x = xs.get(r)
            if x is None:
                x = torch.zeros(n, self.config.width, r, r, device=device, dtype=dtype)
            if block.mixin is not None:
                x = x + F.interpolate(xs[block.mixin], scale_factor=r // block.mixin, mode="nearest")
            zshape = (self.config.zdim, r, r)
            if acts is not None:
                eps = None if posterior_mean else noise(zshape)
                x, z, kl = block(x, acts=acts[r], eps=eps, posterior_mean=posterior_mean)
                kls.append(kl)
            elif latents is not None and i < len(latents):
                x, z, _ = block(x, z=latents[i].to(device=device, dtype=dtype))
            else:
                x, z, _ = block(x, eps=noise(zshape), temperature=temperature)
            xs[r] = x
            zs.append(z)
        if stop < len(self.dec_blocks):
            return None, zs, kls
        out = xs[self.config.image_size] * self.gain + self.bias
        return out, zs, kls


class VDVAE(nn.Module):
    """A very deep VAE with the hyper-parameters of a :class:`VDVAEConfig`.

    Its ``state_dict`` holds ``encoder.*`` and ``decoder.*`` tensors; for :data:`IMAGENET64`
    these are exactly the 2,482 tensors (125,005,860 values) of the public checkpoint.

    Parameters
    ----------
    config : VDVAEConfig, default IMAGENET64
    """

    def __init__(self, config: VDVAEConfig = IMAGENET64):
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)

    # ------------------------------------------------------------------ tensors
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float images (n, S, S, 3), 0-255 -> normalised encoder input (n, 3, S, S)."""
        check_images(images, uint8=False, size=self.config.image_size)
        x = images.to(device=self.decoder.gain.device, dtype=self.decoder.gain.dtype)
        return ((x + self.config.shift) * self.config.scale).permute(0, 3, 1, 2).contiguous()

    def posterior(self, images: torch.Tensor, n_blocks: int | None = None, *, posterior_mean: bool = False,
                  noise: Callable | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Posterior latents (and their KL to the prior) of the first ``n_blocks`` decoder blocks.

        Parameters
        ----------
        images : Tensor of shape (n, S, S, 3), 0-255
        n_blocks : int, optional
            Only these first blocks are run (all by default).
        posterior_mean : bool
            Return the posterior means instead of samples.
        noise : callable, optional
            ``noise(shape) -> (n, *shape)`` standard-normal noise for the samples.

        Returns
        -------
        zs, kls : lists of Tensor of shape (n, zdim, r, r)
        """
        n_blocks = None if n_blocks is None else _check_n_blocks(self.config, n_blocks)
        acts = self.encoder(self.preprocess(images))
        _, zs, kls = self.decoder.run(images.shape[0], acts=acts, n_blocks=n_blocks, noise=noise,
                                      posterior_mean=posterior_mean)
        return zs, kls

    def decode(self, latents: Sequence[torch.Tensor] = (), n: int | None = None, *, temperature: float = 1.0,
               noise: Callable | None = None) -> torch.Tensor:
        """Images from the latents of the first ``len(latents)`` blocks, the rest from the prior.

        Parameters
        ----------
        latents : sequence of Tensor (n, zdim, r, r)
            Latents of the first blocks, in decoder order (may be empty).
        n : int, optional
            Number of images, needed only when ``latents`` is empty.
        temperature : float
            Multiplies the prior's standard deviation for the sampled blocks.
        noise : callable, optional
            As in :meth:`posterior`.

        Returns
        -------
        Tensor of shape (n, S, S, 3), uint8
            The deterministic image (see the module docstring).
        """
        shapes = latent_shapes(self.config, len(latents))
        for i, (z, shape) in enumerate(zip(latents, shapes)):
            if tuple(z.shape[1:]) != shape:
                raise ValueError(f"latent of decoder block {i} must have shape (n, {', '.join(map(str, shape))}); "
                                 f"found {tuple(z.shape)}")
        if n is None:
            if not latents:
                raise ValueError("decode() needs n when no latents are given")
            n = latents[0].shape[0]
        h, _, _ = self.decoder.run(n, latents=list(latents), noise=noise, temperature=temperature)
        x = self.decoder.out_net.mode(h)
        return torch.round((x + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses of a batch of images (n, S, S, 3), 0-255.

        Returns
        -------
        dict with Tensors of shape (n,):
            ``elbo`` (= ``distortion`` + ``rate``, the negative ELBO), ``distortion`` (the
            reconstruction NLL) and ``rate`` (the summed KL), all in nats per dimension;
            and ``block_rates`` of shape (n, n_dec_blocks), each decoder block's KL (nats
            per dimension), which sum to ``rate``.
        """
        acts = self.encoder(self.preprocess(images))
        h, _, kls = self.decoder.run(images.shape[0], acts=acts)
        target = images.to(h.dtype) / 127.5 - 1.0
        distortion = self.decoder.out_net.nll(h, target)
        ndims = images.shape[1] * images.shape[2] * images.shape[3]
        block_rates = torch.stack([kl.sum(dim=(1, 2, 3)) for kl in kls], dim=1) / ndims
        rate = block_rates.sum(dim=1)
        return {"elbo": distortion + rate, "distortion": distortion, "rate": rate, "block_rates": block_rates}


# ------------------------------------------------------------------------------ checkpoints
def load_state_dict_checked(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load ``state`` strictly after stripping ``module.`` prefixes, with a readable error.

    Raises
    ------
    CheckpointError
        Naming the source, the number of missing, unexpected and mis-shaped tensors and the
        first few of each.
    """
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(state[k].shape)}"
              for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise CheckpointError(f"{source} does not fit this model ({model.__class__.__name__}, "
                              f"{len(own)} tensors): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_vdvae(model: VDVAE, path: str | Path) -> Path:
    """Write ``{"config": ..., "state_dict": ...}`` atomically (loadable with ``weights_only=True``)."""
    path = Path(path)
    obj = {"config": model.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_vdvae(path: str | Path, config: VDVAEConfig | None = None, *, device="cpu") -> VDVAE:
    """Load a VDVAE checkpoint safely (``torch.load(weights_only=True)``), strictly.

    Parameters
    ----------
    path : path
        Either a bare ``state_dict`` (such as the public
        ``imagenet64-iter-1600000-model-ema.th``, keys possibly prefixed ``module.``) or a
        file written by :func:`save_vdvae`, which carries its own config.
    config : VDVAEConfig, optional
        Hyper-parameters for a bare state_dict (default :data:`IMAGENET64`); must match a
        config stored in the file, if any.
    device : str or torch.device

    Returns
    -------
    VDVAE in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VDVAE checkpoint {path} does not exist")
    with reading(path, TORCH_CHECKPOINT, "replace it: `nsdlib fetch vdvae` for the "
                 "pretrained weights, `nsdlib mini train-models` (or a fresh install) for the mini model"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and "config" in obj:
        stored = VDVAEConfig.from_dict(obj["config"])
        if config is not None and config != stored:
            raise CheckpointError(f"{path} holds a VDVAE with {stored}, not the requested {config}")
        config, state = stored, obj["state_dict"]
    elif isinstance(obj, dict):
        config, state = config or IMAGENET64, obj
    else:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    with torch.device("meta"):
        model = VDVAE(config)
    model = model.to_empty(device="cpu")
    load_state_dict_checked(model, state, source=str(path))
    return model.to(device).eval()


# ------------------------------------------------------------------------------ arrays
class _PerImageNoise:
    """Standard-normal noise from one CPU generator per image, seeded by (seed, purpose, index)."""

    def __init__(self, seed: int, purpose: int, indices: Sequence[int], device, dtype):
        self.gens = []
        for i in indices:
            state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, purpose, int(i)]).generate_state(2, np.uint32)
            g = torch.Generator()
            g.manual_seed(int(state[0]) << 32 | int(state[1]))
            self.gens.append(g)
        self.device, self.dtype = device, dtype

    def __call__(self, shape):
        return torch.stack([torch.randn(*shape, generator=g) for g in self.gens]).to(self.device, self.dtype)


def _model_device(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


def encode_latents(model: VDVAE, images: np.ndarray, n_blocks: int, *, posterior: str = "sample", seed: int = 0,
                   batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Flattened posterior latents of the first ``n_blocks`` decoder blocks.

    Parameters
    ----------
    model : VDVAE
        Used on its own device (move it first).
    images : ndarray of shape (n, S, S, 3), uint8, 0-255
    n_blocks : int
        ImageNet-64: 15 -> 13,344 values, 31 -> 91,168.
    posterior : {"sample", "mean"}
        Posterior samples (what Brain-Diffuser and the paper regress on) or means.
    seed : int
        Seed of the posterior samples; image ``i``'s noise depends only on ``(seed, i)``.
    batch_size : int
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ndarray of shape (n, n_latents(config, n_blocks)), float32
    """
    from tqdm.auto import tqdm

    if posterior not in ("sample", "mean"):
        raise ValueError(f"posterior must be 'sample' or 'mean'; found {posterior!r}")
    images = np.asarray(check_images(images, uint8=False, size=model.config.image_size))
    n_blocks = _check_n_blocks(model.config, n_blocks)
    device, dtype = _model_device(model)
    out = np.empty((len(images), n_latents(model.config, n_blocks)), np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(images), batch_size), desc=f"VDVAE encode ({n_blocks} blocks)",
                              disable=not progress):
                idx = range(start, min(start + batch_size, len(images)))
                batch = torch.from_numpy(images[idx.start:idx.stop])
                noise = _PerImageNoise(seed, 0, idx, device, dtype)
                zs, _ = model.posterior(batch, n_blocks, posterior_mean=posterior == "mean", noise=noise)
                out[idx.start:idx.stop] = flatten_latents(zs).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def decode_latents(model: VDVAE, latents: np.ndarray | None, n_blocks: int, *, n: int | None = None,
                   temperature: float = 1.0, seed: int = 0, batch_size: int = 32,
                   progress: bool = True) -> np.ndarray:
    """Images from the flattened latents of the first ``n_blocks`` blocks, the rest from the prior.

    Parameters
    ----------
    model : VDVAE
    latents : ndarray of shape (n, n_latents(config, n_blocks)), or None when n_blocks == 0
    n_blocks : int
        How many of the first decoder blocks the latents cover.
    n : int, optional
        Number of images when ``latents`` is None.
    temperature : float
        Prior standard-deviation multiplier of the sampled blocks (1 = the prior itself).
    seed : int
        Image ``i``'s prior samples depend only on ``(seed, i)``: deterministic, batch-size
        independent.
    batch_size : int
    progress : bool

    Returns
    -------
    ndarray of shape (n, S, S, 3), uint8
    """
    from tqdm.auto import tqdm

    n_blocks = _check_n_blocks(model.config, n_blocks)
    if latents is None:
        if n_blocks != 0 or n is None:
            raise ValueError("decode_latents needs latents, or n_blocks=0 and n")
        total = n
    else:
        latents = np.asarray(latents, dtype=np.float32)
        want = n_latents(model.config, n_blocks)
        if latents.ndim != 2 or latents.shape[1] != want:
            raise ValueError(f"latents of the first {n_blocks} blocks must have shape (n, {want}); "
                             f"found {latents.shape}")
        if not np.all(np.isfinite(latents)):
            raise ValueError("latents contain NaN or infinite values")
        total = len(latents)
    device, dtype = _model_device(model)
    s = model.config.image_size
    out = np.empty((total, s, s, 3), np.uint8)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, total, batch_size), desc=f"VDVAE decode ({n_blocks} blocks given)",
                              disable=not progress):
                idx = range(start, min(start + batch_size, total))
                zs = []
                if latents is not None and n_blocks:
                    zs = unflatten_latents(torch.from_numpy(latents[idx.start:idx.stop]), model.config, n_blocks)
                noise = _PerImageNoise(seed, 1, idx, device, dtype)
                out[idx.start:idx.stop] = model.decode(zs, n=len(idx), temperature=temperature,
                                                       noise=noise).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def reconstruct_images(model: VDVAE, images: np.ndarray, n_blocks: int | None = None, *,
                       posterior: str = "sample", temperature: float = 1.0, seed: int = 0, batch_size: int = 32,
                       progress: bool = True) -> np.ndarray:
    """Encode and decode in one pass: the first ``n_blocks`` from the posterior, the rest from the prior.

    Equal to ``decode_latents(model, encode_latents(model, images, n_blocks, ...), n_blocks, ...)``
    with the same ``seed``, but never holds the flattened latents (all 75 ImageNet-64 blocks
    are 1,451,040 values per image), so it suits full-depth reconstructions.

    Parameters
    ----------
    model : VDVAE
    images : ndarray of shape (n, S, S, 3), uint8
    n_blocks : int, optional
        Default: every decoder block (the VDVAE's own reconstruction).
    posterior, temperature, seed, batch_size, progress
        As in :func:`encode_latents` and :func:`decode_latents`.

    Returns
    -------
    ndarray of shape (n, S, S, 3), uint8
    """
    from tqdm.auto import tqdm

    if posterior not in ("sample", "mean"):
        raise ValueError(f"posterior must be 'sample' or 'mean'; found {posterior!r}")
    images = np.asarray(check_images(images, uint8=False, size=model.config.image_size))
    n_blocks = model.config.n_dec_blocks if n_blocks is None else _check_n_blocks(model.config, n_blocks)
    device, dtype = _model_device(model)
    out = np.empty_like(images, dtype=np.uint8)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(images), batch_size), desc=f"VDVAE reconstruct ({n_blocks} blocks)",
                              disable=not progress):
                idx = range(start, min(start + batch_size, len(images)))
                batch = torch.from_numpy(images[idx.start:idx.stop])
                zs, _ = model.posterior(batch, n_blocks, posterior_mean=posterior == "mean",
                                        noise=_PerImageNoise(seed, 0, idx, device, dtype))
                out[idx.start:idx.stop] = model.decode(zs, n=len(idx), temperature=temperature,
                                                       noise=_PerImageNoise(seed, 1, idx, device, dtype)).cpu().numpy()
    finally:
        model.train(was_training)
    return out
