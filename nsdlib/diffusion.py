"""Versatile Diffusion, dual-guided image-to-image, driven by predicted CLIP embeddings.

Stage 2 of the decoder refines the blurry first guess of stage 1 with Versatile Diffusion
(Xu et al. 2023) guided by two predicted embeddings at once: CLIP-text (77 tokens) and
CLIP-vision (257 tokens). diffusers ships the components (``AutoencoderKL``, the image
UNet, the text UNet ``UNetFlatConditionModel``, ``DualTransformer2DModel``) but its pipelines
start from prompts and images, not from embeddings, and have no image-to-image strength,
so this module drives the components itself:

1. the first guess is resized to the model's image size (512 px for Versatile Diffusion;
   :func:`resize_to_model`) and encoded by the VAE: the posterior *mean* times the VAE's
   ``scaling_factor`` (Brain-Diffuser draws a sample of the posterior; the sample's spread is
   drowned by the diffusion noise added next, and the mean keeps stage 2 deterministic);
2. every cross-attention transformer of the image UNet is paired with the text UNet's
   transformer at the same place (a :class:`DualTransformer`): the text context goes
   through the text transformer, the vision context through the image transformer, and
   their residuals are mixed ``text_weight : 1 - text_weight`` (0.4 : 0.6 by default);
3. the latent is noised to ``strength`` of the DDIM schedule (0.75 of 50 steps: 37 steps
   are run, eta 0) with noise from one ``torch.Generator`` per image, seeded
   ``seed + index`` where ``index`` is the image's place in the dataset, so an image gets
   the same noise whatever batch or subset it is computed in. Where the latent is noised is
   the ``noise_at`` setting (:func:`noising_schedule`): ``"first-step"`` at the timestep of
   the first DDIM step run (t = 721 for 37 of 50 steps with Versatile Diffusion's schedule:
   the level that step assumes, as diffusers' image-to-image pipelines do), or
   ``"brain-diffuser"`` one DDIM step earlier (t = 741, Brain-Diffuser's index 37), while
   denoising still starts at 721, as Brain-Diffuser's (and latent diffusion's) img2img
   script does;
4. classifier-free guidance (scale 7.5) against the unconditional contexts: the CLIP
   embeddings of the empty caption and of a uniform grey image;
5. the VAE decodes the result.

On CUDA the UNet runs in float16 by default, on the CPU in float32; the VAE stays float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import assets
from .clip import N_TEXT_TOKENS, N_VISION_TOKENS
from .images import check_images, resize, to_tensor, to_uint8

__all__ = [
    "DualGuidedDiffusion",
    "DualTransformer",  # noqa: F822 (built on first access, see __getattr__)
    "NOISE_AT",
    "load_components",
    "make_dual_guided",
    "noising_schedule",
    "random_components",
    "resize_to_model",
    "save_components",
    "set_mixing",
    "vae_input",
]

# DDIM as Versatile Diffusion (and latent diffusion) sample it: betas of the training
# schedule, uniform ("leading") time steps offset by one, and the last step going to
# alpha_cumprod[0] rather than to 1. The training schedule, the prediction target and the
# time-step spacing come from a model's scheduler config (the defaults are Versatile
# Diffusion's); the mini model zoo trains its small UNet for a cosine schedule with
# v-prediction and "trailing" steps (nsdlib.mini.zoo.MINI_SCHEDULE).
_DDIM_FIXED = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
_DDIM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", rescale_betas_zero_snr=False, timestep_spacing="leading")

#: Where stage 2 noises the first guess's latent (see :func:`noising_schedule`).
NOISE_AT = ("first-step", "brain-diffuser")
#: The filter that resizes first guesses to the model's size (:func:`nsdlib.images.resize`).
RESIZE_FILTER = "torch-bicubic"


def _dual_transformer_class():
    from diffusers.models import DualTransformer2DModel

    class DualTransformer(DualTransformer2DModel):
        """diffusers' ``DualTransformer2DModel``, callable from today's UNet blocks.

        The UNet blocks of diffusers 0.42 pass ``encoder_attention_mask`` to their
        transformers, which ``DualTransformer2DModel.forward`` does not accept
        (huggingface/diffusers#13651). Masks are not used by Versatile Diffusion; one that
        is given is refused rather than silently dropped.
        """

        def forward(self, hidden_states, encoder_hidden_states, timestep=None, attention_mask=None,
                    cross_attention_kwargs=None, encoder_attention_mask=None, return_dict: bool = True):
            if attention_mask is not None or encoder_attention_mask is not None:
                raise ValueError("DualTransformer does not support attention masks")
            return super().forward(hidden_states, encoder_hidden_states, timestep=timestep,
                                   cross_attention_kwargs=cross_attention_kwargs, return_dict=return_dict)

    return DualTransformer


_DUAL_CLASS = None


def _dual_class():
    global _DUAL_CLASS
    if _DUAL_CLASS is None:
        _DUAL_CLASS = _dual_transformer_class()
    return _DUAL_CLASS


def __getattr__(name):  # the class is built lazily so that importing nsdlib.diffusion stays light
    if name == "DualTransformer":
        return _dual_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_dual_guided(image_unet, text_unet):
    """Pair every cross-attention transformer of ``image_unet`` with ``text_unet``'s.

    Each ``Transformer2DModel`` of the image UNet is replaced, in place, by a
    :class:`DualTransformer` holding ``[image transformer, text transformer]`` (the text
    UNet's module at the same name). Only the transformers of the text UNet are used; the
    rest of it can be discarded afterwards.

    Parameters
    ----------
    image_unet : diffusers.UNet2DConditionModel
    text_unet : UNetFlatConditionModel
        Versatile Diffusion's text UNet, with transformers at the same places and of the
        same widths.

    Returns
    -------
    image_unet
        The same object, now dual-guided (``config.dual_cross_attention`` is True).
    """
    import torch
    from diffusers.models import Transformer2DModel

    dual_cls = _dual_class()
    names = [n for n, m in image_unet.named_modules() if type(m) is Transformer2DModel]
    if not names:
        raise ValueError("the image UNet has no Transformer2DModel blocks to pair (already dual-guided?)")
    for name in names:
        image_tf = image_unet.get_submodule(name)
        try:
            text_tf = text_unet.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the text UNet has no transformer at {name!r}; the two UNets do not match") from None
        ci, ct = image_tf.config, text_tf.config
        for key in ("in_channels", "cross_attention_dim", "num_attention_heads", "attention_head_dim"):
            if getattr(ci, key) != getattr(ct, key):
                raise ValueError(f"transformer {name!r}: {key} is {getattr(ci, key)} in the image UNet but "
                                 f"{getattr(ct, key)} in the text UNet")
        with torch.device("meta"):  # the two placeholder transformers are replaced at once
            dual = dual_cls(num_attention_heads=ci.num_attention_heads, attention_head_dim=ci.attention_head_dim,
                            in_channels=ci.in_channels, num_layers=ci.num_layers, norm_num_groups=ci.norm_num_groups,
                            cross_attention_dim=ci.cross_attention_dim)
        dual.transformers = torch.nn.ModuleList([image_tf, text_tf])
        parent, index = name.rsplit(".", 1)
        image_unet.get_submodule(parent)[int(index)] = dual
    image_unet.register_to_config(dual_cross_attention=True)
    return image_unet


def set_mixing(unet, text_weight: float, n_text: int = N_TEXT_TOKENS, n_vision: int = N_VISION_TOKENS) -> None:
    """Set how every :class:`DualTransformer` of ``unet`` reads its context.

    The context is ``[text tokens (n_text), vision tokens (n_vision)]`` along the token
    axis; the text part goes to the text transformer (index 1), the vision part to the
    image transformer (index 0), and the output is
    ``x + text_weight * (text_out - x) + (1 - text_weight) * (vision_out - x)``.
    """
    if not 0.0 <= float(text_weight) <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1]; found {text_weight}")
    dual_cls = _dual_class()
    found = 0
    for module in unet.modules():
        if isinstance(module, dual_cls):
            module.mix_ratio = float(text_weight)
            module.condition_lengths = [int(n_text), int(n_vision)]
            module.transformer_index_for_condition = [1, 0]
            found += 1
    if not found:
        raise ValueError("the UNet has no DualTransformer blocks; call make_dual_guided first")


def vae_input(images: np.ndarray, size: int):
    """The VAE's input: uint8 (n, H, W, 3) -> float32 tensor (n, 3, size, size) in [-1, 1].

    Resized in 0-1 floats with :func:`nsdlib.images.resize`'s ``"torch-bicubic"`` filter
    (antialiased, clamped), as the first guesses enter Versatile Diffusion.
    """
    x = to_tensor(check_images(images, "first guesses"))
    return resize(x, size, filter=RESIZE_FILTER) * 2 - 1


def resize_to_model(images: np.ndarray, size: int) -> np.ndarray:
    """First guesses resized as stage 2 resizes them, kept as uint8 images.

    The filter of :func:`vae_input` (``"torch-bicubic"``), rounded to whole grey levels: the
    image a noise experiment can distort at the model's size (Brain-Diffuser's first guesses
    are 512-px files: VDVAE's 64-px output upscaled by PIL's bicubic filter).

    Parameters
    ----------
    images : uint8 ndarray of shape (n, H, W, 3)
    size : int
        The model's image side (:attr:`DualGuidedDiffusion.image_size`).

    Returns
    -------
    uint8 ndarray of shape (n, size, size, 3)
        ``images`` itself when it already has that size.
    """
    return resize(check_images(images, "first guesses"), int(size), filter=RESIZE_FILTER)


def noising_schedule(scheduler, num_steps: int, strength: float, noise_at: str = "first-step", *, device=None):
    """The DDIM steps stage 2 runs and the timestep at which it noises the first guess's latent.

    Parameters
    ----------
    scheduler : diffusers.DDIMScheduler
        Its ``set_timesteps(num_steps)`` is called here.
    num_steps : int
        DDIM steps of the full schedule.
    strength : float in [0, 1]
        Share of the schedule that is re-run: ``int(num_steps * strength)`` steps.
    noise_at : {"first-step", "brain-diffuser"}
        ``"first-step"``: at the timestep of the first step run (the noise level that step
        assumes). ``"brain-diffuser"``: at the timestep of the DDIM step before it, as
        Brain-Diffuser's script does (``stochastic_encode`` at DDIM index ``t_enc =
        int(strength * num_steps)``, then ``decode_dc`` from index ``t_enc - 1``); with
        Versatile Diffusion's schedule and 37 of 50 steps: noised at t = 741, denoised from
        t = 721.
    device : torch.device, optional
        Where the scheduler's timesteps live.

    Returns
    -------
    noise_t : int or None
        The timestep whose ``sqrt(alpha_bar)`` scales the latent (None when no step is run).
    timesteps : torch.Tensor of shape (n_run,)
        The timesteps denoised, in order.

    Raises
    ------
    ValueError
        An unknown ``noise_at``, or ``"brain-diffuser"`` with every step run (strength 1):
        there is no DDIM step before the first one (Brain-Diffuser's index would be out of its
        schedule).
    """
    if noise_at not in NOISE_AT:
        raise ValueError(f"noise_at must be one of {', '.join(map(repr, NOISE_AT))}; found {noise_at!r}")
    num_steps = int(num_steps)
    scheduler.set_timesteps(num_steps, device=device)
    n_run = min(int(num_steps * float(strength)), num_steps)
    start = num_steps - n_run
    timesteps = scheduler.timesteps[start:]
    if not n_run:
        return None, timesteps
    if noise_at == "first-step":
        return int(timesteps[0]), timesteps
    if start == 0:
        raise ValueError(f"noise_at='brain-diffuser' noises one DDIM step before the first step run; with strength "
                         f"{strength} all {num_steps} steps are run and there is none before (use a strength "
                         "below 1, or noise_at='first-step')")
    return int(scheduler.timesteps[start - 1]), timesteps


# ------------------------------------------------------------ components
def random_components(*, cross_attention_dim: int = 64, image_size: int = 64, seed: int = 0,
                      vae_channels: tuple = (16, 32, 32), vae_groups: int = 8) -> dict:
    """Small randomly initialised Versatile Diffusion components (same classes as the real ones).

    A VAE downsampling by ``2 ** (len(vae_channels) - 1)`` (default 4; the real one: 8), an
    image UNet and a text UNet with two resolution levels and cross-attention transformers
    at the same places, and the DDIM settings of the real model. With the defaults they
    stand in for the mini model zoo's trained model when it does not exist (their images
    carry no meaning); the zoo trains components made here too (:mod:`nsdlib.mini.zoo`).

    Parameters
    ----------
    cross_attention_dim : int
        ``d`` of the CLIP embeddings that condition the UNets.
    image_size : int
        Output side in pixels (a multiple of twice the VAE's downsampling factor).
    seed : int
        Seed of the weight initialisation.
    vae_channels : tuple of int
        Channels of the VAE's resolution levels (one level per factor of 2, plus one).
    vae_groups : int
        Group-norm groups of the VAE.

    Returns
    -------
    dict with keys ``vae``, ``image_unet``, ``text_unet``, ``scheduler_config``
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel

    factor = 2 ** (len(vae_channels) - 1)
    if image_size % (2 * factor):
        raise ValueError(f"image_size must be a multiple of {2 * factor}; found {image_size}")
    unet_common = dict(sample_size=image_size // factor, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                       layers_per_block=1, cross_attention_dim=cross_attention_dim, attention_head_dim=8,
                       norm_num_groups=8)
    n = len(vae_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(block_out_channels=tuple(vae_channels), down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, latent_channels=4, norm_num_groups=vae_groups,
                            layers_per_block=1, sample_size=image_size)
        image_unet = UNet2DConditionModel(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **unet_common)
        text_unet = UNetFlatConditionModel(down_block_types=("CrossAttnDownBlockFlat", "DownBlockFlat"),
                                           up_block_types=("UpBlockFlat", "CrossAttnUpBlockFlat"), **unet_common)
    return dict(vae=vae, image_unet=image_unet, text_unet=text_unet, scheduler_config=dict(_DDIM_DEFAULTS))


def save_components(components: dict, path: str | os.PathLike) -> Path:
    """Write components in Versatile Diffusion's folder layout (image_unet, text_unet, vae, scheduler)."""
    from diffusers import DDIMScheduler

    path = Path(path)
    for name in ("image_unet", "text_unet", "vae"):
        components[name].save_pretrained(path / name)
    DDIMScheduler(**{**components["scheduler_config"], **_DDIM_FIXED}).save_pretrained(path / "scheduler")
    return path


def load_components(path: str | os.PathLike | None = None, *, dtype=None) -> dict:
    """Read Versatile Diffusion's components from a folder (no network access).

    Parameters
    ----------
    path : path, optional
        A folder with ``image_unet/``, ``text_unet/``, ``vae/`` and ``scheduler/``. Default:
        the ``"vd"`` asset (``shi-labs/versatile-diffusion``), or
        :class:`~nsdlib.assets.MissingAssetError` naming ``nsdlib fetch vd``.
    dtype : torch.dtype, optional
        Precision the UNets are loaded in.

    Weights are read from safetensors files where present, otherwise by diffusers'
    ``torch.load(..., weights_only=True)``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel

    if path is None:
        path = assets.require("vd")
    path = Path(path)
    missing = [s for s in ("image_unet", "text_unet", "vae", "scheduler") if not (path / s).is_dir()]
    if missing:
        raise FileNotFoundError(f"Versatile Diffusion folder {path} lacks {', '.join(missing)}/ (expected "
                                "image_unet/, text_unet/, vae/ and scheduler/)")
    kw = dict(local_files_only=True, use_safetensors=None)
    unet_kw = dict(kw, torch_dtype=dtype) if dtype is not None else kw
    image_unet = UNet2DConditionModel.from_pretrained(path, subfolder="image_unet", **unet_kw)
    text_unet = UNetFlatConditionModel.from_pretrained(path, subfolder="text_unet", **unet_kw)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kw)
    raw = DDIMScheduler.load_config(path, subfolder="scheduler", local_files_only=True)
    sched = {k: raw[k] for k in _DDIM_DEFAULTS if k in raw}
    return dict(vae=vae, image_unet=image_unet, text_unet=text_unet, scheduler_config={**_DDIM_DEFAULTS, **sched})


# -------------------------------------------------------------- sampler
def _to(module, device, dtype):
    """Move a diffusers model, casting only when its precision differs (casts log a warning)."""
    module = module.to(device)
    return module if module.dtype == dtype else module.to(dtype=dtype)


class DualGuidedDiffusion:
    """Dual-guided image-to-image with Versatile Diffusion's components.

    Parameters
    ----------
    vae : diffusers.AutoencoderKL
    image_unet : diffusers.UNet2DConditionModel
        Modified in place: its transformers are paired with the text UNet's.
    text_unet : UNetFlatConditionModel
        Only its transformers are kept.
    scheduler_config : dict, optional
        Training schedule of the UNet (``num_train_timesteps``, ``beta_start``,
        ``beta_end``, ``beta_schedule``, ``prediction_type``, ``rescale_betas_zero_snr``)
        and the DDIM ``timestep_spacing``; sampling is DDIM. Missing keys take Versatile
        Diffusion's values.
    device : str or torch.device
    unet_dtype : torch.dtype, optional
        Default float16 on CUDA, float32 on the CPU.

    Attributes
    ----------
    image_size : int
        Side of the images the model makes, in pixels (512 for Versatile Diffusion).
    """

    def __init__(self, vae, image_unet, text_unet, scheduler_config: dict | None = None, *, device="cpu",
                 unet_dtype=None):
        import torch

        self.device = torch.device(device)
        self.unet_dtype = unet_dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.vae = _to(vae, self.device, torch.float32).eval()
        if not getattr(image_unet.config, "dual_cross_attention", False):
            make_dual_guided(image_unet, text_unet)
        self.unet = _to(image_unet, self.device, self.unet_dtype).eval()
        self.scheduler_config = {**_DDIM_DEFAULTS, **(scheduler_config or {})}
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.cross_attention_dim = int(self.unet.config.cross_attention_dim)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, device="cpu", unet_dtype=None):
        """Load from a folder in Versatile Diffusion's layout (default: the ``"vd"`` asset)."""
        import torch

        dev = torch.device(device)
        dtype = unet_dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
        comps = load_components(path, dtype=dtype)
        return cls(**comps, device=dev, unet_dtype=dtype)

    def scheduler(self):
        """A fresh DDIM scheduler (schedulers hold state; one per sampling run)."""
        from diffusers import DDIMScheduler

        return DDIMScheduler(**{**self.scheduler_config, **_DDIM_FIXED})

    # ------------------------------------------------------------- VAE
    def encode(self, images: np.ndarray):
        """uint8 (n, H, W, 3) → latents (n, 4, h, w): the VAE posterior mean times ``scaling_factor``."""
        import torch

        x = vae_input(images, self.image_size).to(self.device)
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latents) -> np.ndarray:
        """Latents (n, 4, h, w) → uint8 images (n, image_size, image_size, 3)."""
        import torch

        with torch.no_grad():
            x = self.vae.decode(latents.to(self.device, torch.float32) / self.vae.config.scaling_factor).sample
        return to_uint8(x, value_range=(-1, 1))

    def vae_round_trip(self, images: np.ndarray) -> np.ndarray:
        """Resize, encode and decode: what stage 2 returns at strength 0."""
        return self.decode(self.encode(images))

    def initial_noise(self, indices, seed: int):
        """The noise of each image: ``torch.Generator().manual_seed(seed + index)``, drawn on the CPU.

        Returns a float32 tensor (len(indices), 4, h, w) on the CPU.
        """
        import torch

        h = self.image_size // self.vae_scale_factor
        shape = (1, int(self.vae.config.latent_channels), h, h)
        out = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed) + int(i))) for i in indices]
        return torch.cat(out) if out else torch.empty((0, *shape[1:]))

    # ------------------------------------------------------- sampling
    def reconstruct(self, first_guesses: np.ndarray, text_embeds: np.ndarray, vision_embeds: np.ndarray,
                    uncond_text: np.ndarray, uncond_vision: np.ndarray, *, strength: float = 0.75,
                    num_steps: int = 50, guidance_scale: float = 7.5, text_weight: float = 0.4,
                    noise_at: str = "first-step", seed: int = 0, indices=None, batch_size: int = 4,
                    progress: bool = True) -> np.ndarray:
        """Refine first guesses, guided by (predicted) CLIP embeddings.

        Parameters
        ----------
        first_guesses : uint8 ndarray of shape (n, H, W, 3)
            0–255 images, resized to :attr:`image_size`.
        text_embeds : ndarray of shape (n, 77, d)
        vision_embeds : ndarray of shape (n, 257, d)
        uncond_text : ndarray of shape (77, d)
            Unconditional text context (the empty caption's embedding).
        uncond_vision : ndarray of shape (257, d)
            Unconditional vision context (a uniform grey image's embedding).
        strength : float in [0, 1]
            Share of the DDIM schedule that is re-run: ``int(num_steps * strength)`` steps
            (0.75 of 50: 37). 0 returns the VAE round trip of the first guesses.
        num_steps : int
            DDIM steps of the full schedule (eta 0).
        guidance_scale : float
            Classifier-free guidance scale (1: no guidance, the unconditional pass is skipped).
        text_weight : float in [0, 1]
            Weight of the text transformers' residual; the vision ones get ``1 - text_weight``.
        noise_at : {"first-step", "brain-diffuser"}
            The timestep at which the first guess's latent is noised (:func:`noising_schedule`):
            that of the first step run (t = 721 for 37 of 50 Versatile Diffusion steps) or,
            as Brain-Diffuser, of the step before (t = 741).
        seed : int
            Image ``k`` is noised by a generator seeded ``seed + indices[k]``.
        indices : sequence of int, optional
            Each image's place in its dataset (default ``0 .. n-1``).
        batch_size : int
            Images per UNet call (the guided pass doubles it).
        progress : bool
            Show a progress bar over images.

        Returns
        -------
        uint8 ndarray of shape (n, image_size, image_size, 3)
        """
        import torch
        from tqdm.auto import tqdm

        first_guesses = np.asarray(first_guesses)
        n = len(first_guesses)
        text_embeds = self._check_context("text_embeds", text_embeds, (n, N_TEXT_TOKENS))
        vision_embeds = self._check_context("vision_embeds", vision_embeds, (n, N_VISION_TOKENS))
        uncond_text = self._check_context("uncond_text", uncond_text, (N_TEXT_TOKENS,))
        uncond_vision = self._check_context("uncond_vision", uncond_vision, (N_VISION_TOKENS,))
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1]; found {strength}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be at least 1; found {num_steps}")
        if float(guidance_scale) < 1.0:
            raise ValueError(f"guidance_scale must be at least 1; found {guidance_scale}")
        indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if indices.shape != (n,):
            raise ValueError(f"indices must hold one index per image ({n}); found shape {indices.shape}")
        set_mixing(self.unet, text_weight, N_TEXT_TOKENS, N_VISION_TOKENS)

        sched = self.scheduler()
        noise_t, timesteps = noising_schedule(sched, num_steps, strength, noise_at, device=self.device)
        n_run = len(timesteps)
        guided = float(guidance_scale) > 1.0
        uncond = torch.cat([uncond_text, uncond_vision], dim=0)[None]

        out = np.empty((n, self.image_size, self.image_size, 3), np.uint8)
        with tqdm(total=n, desc="stage 2", unit="img", disable=not progress) as bar:
            for s in range(0, n, int(batch_size)):
                sl = slice(s, min(s + int(batch_size), n))
                b = sl.stop - sl.start
                latents = self.encode(first_guesses[sl])
                if n_run:
                    noise = self.initial_noise(indices[sl], seed).to(self.device)
                    t_noise = torch.full((b,), noise_t, dtype=timesteps.dtype, device=timesteps.device)
                    latents = sched.add_noise(latents, noise, t_noise)
                    cond = torch.cat([text_embeds[sl], vision_embeds[sl]], dim=1)
                    context = torch.cat([uncond.expand(b, -1, -1), cond]) if guided else cond
                    context = context.to(self.device, self.unet_dtype)
                    for t in timesteps:
                        inp = torch.cat([latents, latents]) if guided else latents
                        inp = sched.scale_model_input(inp, t).to(self.unet_dtype)
                        with torch.no_grad():
                            eps = self.unet(inp, t, encoder_hidden_states=context).sample.float()
                        if guided:
                            eps_u, eps_c = eps.chunk(2)
                            eps = eps_u + float(guidance_scale) * (eps_c - eps_u)
                        latents = sched.step(eps, t, latents, eta=0.0).prev_sample
                out[sl] = self.decode(latents)
                bar.update(b)
        return out

    def _check_context(self, name, arr, lead):
        import torch

        arr = np.asarray(arr)
        want = (*lead, self.cross_attention_dim)
        if arr.shape != want:
            raise ValueError(f"{name} must have shape {want} (tokens x the UNet's cross-attention width); "
                             f"found {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)
